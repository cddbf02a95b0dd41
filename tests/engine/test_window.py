"""The stream's real OpenCV window under a real X server (Xvfb), driven by real key presses
(xdotool): type a new phrase in the window, then quit with ``q``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.display


def _free_display() -> int:
    for n in range(90, 140):
        if not Path(f"/tmp/.X{n}-lock").exists() and not Path(f"/tmp/.X11-unix/X{n}").exists():
            return n
    raise RuntimeError("no free X display number")


@pytest.fixture
def xserver():
    """A real X server (Xvfb) on a free display, stopped by PID in teardown."""
    missing = [b for b in ("Xvfb", "xdotool") if shutil.which(b) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (apt-get install xvfb xdotool)")
    n = _free_display()
    proc = subprocess.Popen(
        ["Xvfb", f":{n}", "-screen", "0", "800x600x24", "-nolisten", "tcp"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    display = f":{n}"
    deadline = time.monotonic() + 20
    while not Path(f"/tmp/.X11-unix/X{n}").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "Xvfb did not start"
        time.sleep(0.05)
    yield display
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def _xdotool(display: str, *args: str, timeout: float = 30) -> str:
    out = subprocess.run(["xdotool", *args], env={**os.environ, "DISPLAY": display},
                         capture_output=True, text=True, timeout=timeout)  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.timeout(180)
def test_window_types_a_phrase_then_quits(xserver, tiny_checkpoint, video_file, tmp_path):
    stats = tmp_path / "stats.json"
    cmd = [
        sys.executable, str(ROOT / "run_stream.py"), "--source", str(video_file), "--loop",
        "--phrase", "the red circle", "--backend", "torch", "--checkpoint", str(tiny_checkpoint),
        "--size", "64x64", "--threads", "1", "--pace", "25", "--stats-json", str(stats),
    ]  # fmt: skip
    env = {**os.environ, "DISPLAY": xserver, "QT_QPA_PLATFORM": "xcb"}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        window = _xdotool(xserver, "search", "--sync", "--name", "HINet-stream", timeout=90)
        window = window.splitlines()[0]
        _xdotool(xserver, "windowfocus", "--sync", window)
        _xdotool(xserver, "key", "--delay", "50", "p")
        time.sleep(0.5)
        # HighGUI keeps one key per waitKey call: keys typed faster than the loop polls merge
        # (a loaded 2-core machine polls every ~100 ms), so type at a human pace
        _xdotool(xserver, "type", "--delay", "150", "the square moving left")
        _xdotool(xserver, "key", "Return")
        time.sleep(1.5)  # frames with the new phrase
        _xdotool(xserver, "key", "q")
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-2000:]
    assert "display=window" in err
    summary = json.loads(stats.read_text())
    assert summary["phrase"] == "the square moving left"
    assert summary["frames"] > 5 and "interrupted" not in summary
