"""``scripts/setup.sh`` refuses to pull PyPI's CUDA build of torch on its own, with advice.

The real script runs in a scratch copy of the repository, against a local package index that
holds only a stand-in ``torch-2.13.0`` wheel declaring the ``nvidia-*`` requirements PyPI's Linux
wheels declare (no network, nothing big downloaded).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _fake_torch_wheel(folder: Path, requires: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "torch-2.13.0-py3-none-any.whl"
    info = "torch-2.13.0.dist-info"
    meta = "Metadata-Version: 2.1\nName: torch\nVersion: 2.13.0\n" + "".join(
        f"Requires-Dist: {r}\n" for r in requires
    )
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("torch/__init__.py", "__version__ = '2.13.0'\n")
        zf.writestr(f"{info}/METADATA", meta)
        zf.writestr(
            f"{info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        zf.writestr(f"{info}/RECORD", "")
    return path


@pytest.mark.timeout(300)
@pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="needs a Debian/Ubuntu host")
def test_setup_stops_before_the_cuda_build_of_torch(tmp_path):
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "setup.sh", repo / "scripts" / "setup.sh")
    (repo / "pyproject.toml").write_text("[project]\nname = 'x'\nversion = '0'\n")
    index = tmp_path / "index"
    _fake_torch_wheel(
        index, ["filelock", 'nvidia-cublas-cu12==12.8.4.1; platform_system == "Linux"']
    )
    env = {
        **os.environ,
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(index),
        "PIP_CONSTRAINT": "",
        "PIP_EXTRA_INDEX_URL": "",
        "PYTHON": "python3",
    }
    env.pop("HINET_ALLOW_CUDA_TORCH", None)
    env.pop("HINET_TORCH_INDEX_URL", None)
    run = subprocess.run(["bash", "scripts/setup.sh"], cwd=repo, env=env, capture_output=True,
                         text=True, timeout=280)  # fmt: skip
    assert run.returncode != 0
    assert "pip would install the CUDA build of torch" in run.stderr
    assert "HINET_TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in run.stderr
    assert "HINET_ALLOW_CUDA_TORCH=1" in run.stderr
    # nothing was installed: the venv has no torch and the project was not installed
    check = subprocess.run([str(repo / ".venv/bin/python"), "-c", "import torch"],
                           capture_output=True, timeout=60)  # fmt: skip
    assert check.returncode != 0
    assert not (repo / ".venv" / ".hinet-installed").exists()
