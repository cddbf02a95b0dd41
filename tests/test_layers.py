"""The import graph runs one way: models <- engine <- export / training <- app, benchmarks.

``engine`` (the runtime) never imports ``export`` or ``training``, even lazily inside a
function, and ``models`` imports none of the other packages. Checked on the source (every
``import`` statement at any depth), so a lazy import cannot hide an arrow back up.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: package -> project packages it must never import.
FORBIDDEN = {
    "models": {"engine", "export", "training", "app", "benchmarks"},
    "engine": {"export", "training", "app", "benchmarks"},
    "export": {"training", "app", "benchmarks"},
    "training": {"export", "app", "benchmarks"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_arrow_back_up(package):
    bad = {
        str(path.relative_to(ROOT)): sorted(_imports(path) & FORBIDDEN[package])
        for path in (ROOT / package).rglob("*.py")
    }
    bad = {k: v for k, v in bad.items() if v}
    assert not bad, f"{package} imports packages above it: {bad}"


def test_the_checker_sees_lazy_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from export.onnx_export import x\n    import training.train\n")
    assert _imports(f) == {"export", "training"}
