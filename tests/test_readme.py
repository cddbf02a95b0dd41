"""The README contract: its test command is what CI runs, and its main command names real files."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", text, flags=re.S)
    return [line.strip() for b in blocks for line in b.splitlines() if line.strip()]


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()
    command = ci[-1].strip()
    assert "pytest" in command
    assert command in _readme_commands(), f"README does not contain the CI command {command!r}"


def test_readme_main_command_uses_shipped_files():
    main = [c for c in _readme_commands() if "run_stream.py" in c and "setup.sh" in c]
    assert main, "README has no one-line main command (setup + run_stream.py)"
    assert (ROOT / "run_stream.py").is_file()
    assert (ROOT / "scripts" / "setup.sh").is_file()
