"""A real RTSP stream (GStreamer's RTSP server on loopback) through the real pipeline."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from engine.capture import open_source
from engine.live import RTSP_CAPTURE_OPTIONS, LiveSource
from engine.outputs import CallbackOutput
from engine.pipeline import Pipeline
from engine.session import Segmenter

pytestmark = pytest.mark.rtsp


@pytest.mark.timeout(120)
def test_rtsp_source_frames(rtsp_server) -> None:
    import os

    before = os.environ.get("OPENCV_FFMPEG_CAPTURE_OPTIONS")
    with open_source(rtsp_server.url) as src:
        assert isinstance(src, LiveSource) and src.live
        # the RTSP options were set only while opening: they must not leak into file captures
        assert os.environ.get("OPENCV_FFMPEG_CAPTURE_OPTIONS") == before != RTSP_CAPTURE_OPTIONS
        frames = []
        deadline = time.monotonic() + 30
        while len(frames) < 10 and time.monotonic() < deadline:
            f = src.read(timeout=1.0)
            if f is not None:
                frames.append(f)
    assert len(frames) == 10
    assert frames[0].image.shape == (240, 320, 3)
    idx = [f.index for f in frames]
    assert idx == sorted(set(idx))
    assert all(b.timestamp > a.timestamp for a, b in zip(frames, frames[1:]))
    assert not np.array_equal(frames[0].image, frames[-1].image)  # the ball moves


@pytest.mark.timeout(180)
def test_pipeline_recovers_after_server_restart(onnx_engine, rtsp_server) -> None:
    """ONNX Runtime, the product's default CPU engine, on a stream that dies and comes back."""
    seg = Segmenter(onnx_engine)
    seg.set_phrase("the red circle")
    done: list[tuple[float, int, tuple[int, int]]] = []
    lock = threading.Lock()

    def output(image, result, frame) -> None:
        with lock:
            done.append((time.monotonic(), frame.index, result.mask.shape))

    def count() -> int:
        with lock:
            return len(done)

    def wait_for(n: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while count() < n:
            assert time.monotonic() < deadline, f"only {count()} of {n} frames"
            pipe.wait(timeout=0.1)  # re-raises worker errors

    src = open_source(rtsp_server.url, backoff=0.2, max_backoff=1.0)
    with Pipeline(src, seg, outputs=[CallbackOutput(output)]).start() as pipe:
        wait_for(10, 30)
        assert all(shape == (240, 320) for _, _, shape in done)  # masks at the stream's size
        rtsp_server.stop()  # the camera dies
        killed = time.monotonic()
        time.sleep(1.5)
        before = count()
        assert pipe.running  # the pipeline keeps running without a stream
        rtsp_server.start()  # ... and comes back on the same URL
        restarted = time.monotonic()
        wait_for(before + 10, 60)
        summary = pipe.summary()
    after = [t for t, _, _ in done if t > restarted]
    last_before = max(t for t, _, _ in done if t <= killed)
    gap = after[0] - last_before
    print(
        f"\nRTSP recovery: server down {restarted - killed:.2f} s, frame gap {gap:.2f} s, "
        f"first frame {after[0] - restarted:.2f} s after restart, "
        f"reconnects {summary['reconnects']}, dropped {summary['dropped']}"
    )
    assert src.reconnects >= 1
    idx = [i for _, i, _ in done]
    assert idx == sorted(set(idx))  # sequence numbers continue across the reconnect
    assert not pipe.running
