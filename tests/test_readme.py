"""The README contract: its two commands are what CI and a user run, and every command it shows
is one the programs accept.

Every ``python ...`` command in the README and in ``docs/RESULTS.md`` (code blocks and inline;
every measured figure there names the command that made it) is parsed with the parser of the
program it runs (``build_parser()`` where the program has one), so a renamed or removed flag, a
bad value or a moved module fails here. Programs without a ``build_parser`` must at least define
every flag the documents pass them.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
RESULTS = (ROOT / "docs" / "RESULTS.md").read_text(encoding="utf-8")


def _block_lines(text: str = README) -> list[str]:
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", text, flags=re.S)
    joined = [b.replace("\\\n", " ") for b in blocks]  # a command continued with a backslash
    return [line.strip() for b in joined for line in b.splitlines() if line.strip()]


def _commands(text: str = README) -> list[list[str]]:
    """Every python command of ``text`` as argv lists (``&&`` chains split, comments cut)."""
    texts = [*_block_lines(text), *re.findall(r"`((?:\.venv/bin/)?python [^`]+)`", text)]
    out = []
    for text in texts:
        for part in text.split("&&"):
            argv = shlex.split(part, comments=True)
            if argv and Path(argv[0]).name == "python":
                out.append(argv[1:])
    return out


def _program(argv: list[str]) -> tuple[str, list[str]]:
    """``(module name, its arguments)`` for ``python -m mod ...`` or ``python script.py ...``."""
    if argv[0] == "-m":
        return argv[1], argv[2:]
    return Path(argv[0]).stem, argv[1:]


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()
    command = ci[-1].strip()
    assert "pytest" in command
    assert command in _block_lines(), f"README does not contain the CI command {command!r}"


def test_readme_main_command_runs_the_stream_on_the_demo_with_the_shipped_model():
    import run_stream
    from models.checkpoint import DEFAULT_CHECKPOINT

    main = [c for c in _block_lines() if "run_stream.py" in c and "setup.sh" in c]
    assert len(main) == 1, "README needs exactly one one-line main command (setup + run_stream)"
    setup, run = (shlex.split(p) for p in main[0].split("&&"))
    assert setup == ["bash", "scripts/setup.sh"] and (ROOT / "scripts" / "setup.sh").is_file()
    assert run[:2] == [".venv/bin/python", "run_stream.py"]
    args = run_stream.build_parser().parse_args(run[2:])
    assert args.source == ["demo"] and args.no_display and args.max_frames
    assert (
        args.checkpoint == DEFAULT_CHECKPOINT and (args.checkpoint / "model.safetensors").is_file()
    )


COMMANDS = _commands()
DOC_COMMANDS = _commands(README) + _commands(RESULTS)


def test_the_readme_shows_commands():
    programs = {_program(c)[0] for c in COMMANDS}
    assert {"run_stream", "pytest", "app", "export", "training.evaluate"} <= programs


def test_the_readme_is_short():
    assert len(README.splitlines()) <= 200, "the README is for a newcomer; details go to docs/"


@pytest.mark.parametrize("argv", DOC_COMMANDS, ids=[" ".join(c)[:60] for c in DOC_COMMANDS])
def test_every_readme_command_is_accepted(argv):
    name, args = _program(argv)
    if name == "pytest":
        assert not args or all(
            not a.startswith("-") or a in ("-s", "-q", "-m", "-k", "-n") for a in args
        )
        return
    args = [a for a in args if a != "<model>"]  # placeholders in prose
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.origin, f"README runs {name!r}, which does not exist"
    module = importlib.import_module(name)
    main = importlib.import_module(f"{name}.__main__") if spec.submodule_search_locations else None
    build = getattr(main or module, "build_parser", None)
    if build is not None:
        build().parse_args(args)  # exits (fails the test) on an unknown flag or a bad value
        return
    source = Path(spec.origin).read_text(encoding="utf-8")
    for flag in (a.split("=")[0] for a in args if a.startswith("--")):
        assert f'"{flag}"' in source, f"{name} has no {flag} flag (README: {' '.join(argv)})"
