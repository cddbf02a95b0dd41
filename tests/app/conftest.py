"""Fixtures for the page's tests: a clip with known targets, the torch engine and the real app
server, all on the session's tiny checkpoint (``tests/conftest.py``)."""

from __future__ import annotations

import pytest
from app_helpers import MAX_FRAMES, NET_SIZE, AppServer, TargetClip, write_target_clip


@pytest.fixture(scope="session")
def target_clip(tmp_path_factory) -> TargetClip:
    return write_target_clip(tmp_path_factory.mktemp("clips") / "target.mp4")


@pytest.fixture(scope="session")
def tiny_engine(tiny_checkpoint):
    """The torch engine the test server runs, in this process (for reference masks)."""
    from export.engines import create_engine

    engine = create_engine("torch", tiny_checkpoint, device="cpu", input_size=NET_SIZE)
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def app_server(tiny_checkpoint, tmp_path_factory):
    """The app on the tiny checkpoint, torch engine, 64x64 input, --max-frames MAX_FRAMES."""
    pytest.importorskip("gradio")
    root = tmp_path_factory.mktemp("app_server")
    server = AppServer(
        [
            "--checkpoint", str(tiny_checkpoint), "--backend", "torch", "--backends", "torch",
            "--size", f"{NET_SIZE[0]}x{NET_SIZE[1]}", "--max-frames", str(MAX_FRAMES),
            "--max-seconds", "30",
        ],
        log=root / "server.log",
        cache=root / "cache",
    ).start()  # fmt: skip
    yield server
    server.stop()
