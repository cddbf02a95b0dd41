"""The H.264 writer, the latency plot, the example clips and the CLI (no server)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from app_helpers import ROOT, count_frames, free_port

from app.examples import default_examples
from app.plot import latency_plot
from app.validation import UploadLimits, check_video
from engine.demo import demo_clips
from engine.outputs import FFmpegError, H264Writer


def _fourcc(path: Path) -> str:
    cap = cv2.VideoCapture(str(path))
    code = int(cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode()
    cap.release()
    return code.lower()


@pytest.mark.parametrize("size", [(64, 48), (33, 21)])  # odd sizes are padded for yuv420p
def test_h264_round_trip(tmp_path, size):
    w, h = size
    levels = [30 * i + 20 for i in range(7)]
    frames = [np.full((h, w, 3), v, np.uint8) for v in levels]
    with H264Writer(tmp_path / "out.mp4", size=size, fps=10) as writer:
        for f in frames:
            writer.write(f)
    assert _fourcc(tmp_path / "out.mp4") in ("avc1", "h264")
    assert count_frames(tmp_path / "out.mp4") == 7
    cap = cv2.VideoCapture(str(tmp_path / "out.mp4"))
    for i in range(len(frames)):
        ok, got = cap.read()
        assert ok and got.shape[:2] == (h + h % 2, w + w % 2)
        mean = float(got[: h - 2, : w - 2].mean())  # away from the padded edge
        assert int(np.argmin([abs(mean - v) for v in levels])) == i  # every frame, in order
    cap.release()


def test_h264_errors(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="fps"):
        H264Writer(tmp_path / "x.mp4", size=(8, 8), fps=0)
    writer = H264Writer(tmp_path / "x.mp4", size=(8, 8), fps=5)
    with pytest.raises(ValueError, match=r"\(8, 8, 3\) uint8"):
        writer.write(np.zeros((8, 9, 3), np.uint8))
    with pytest.raises(FFmpegError, match="no frames"):
        writer.close()
    monkeypatch.setenv("PATH", str(tmp_path))  # no ffmpeg here
    with pytest.raises(FFmpegError, match="apt-get install ffmpeg"):
        H264Writer(tmp_path / "y.mp4", size=(8, 8), fps=5)


def test_latency_plot():
    img = latency_plot({"flow": [1.0, 2.0, 1.5], "network": [10.0, 12.0, 11.0]}, title="t")
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    assert img.shape[0] > 200 and img.shape[1] > 400
    assert img.std() > 5  # something was drawn
    with pytest.raises(ValueError, match="no stages"):
        latency_plot({})
    with pytest.raises(ValueError, match="one value per frame"):
        latency_plot({"a": [1.0], "b": [1.0, 2.0]})


def test_demo_examples_are_the_shipped_clips(tmp_path):
    examples = default_examples()
    clips = demo_clips()
    assert [(e.video, e.phrase) for e in examples] == [
        (c.path, c.phrase) for c in clips
    ]  # the same files and phrases as run_stream.py --source demo
    sizes = {"people": (768, 576), "street": (640, 272), "moving": (320, 240), "shapes": (320, 240)}
    for example, clip in zip(examples, clips, strict=True):
        assert _fourcc(example.video) in ("avc1", "h264")  # plays in the browser
        info = check_video(example.video, limits=UploadLimits(), workdir=tmp_path / clip.name)
        assert (info.width, info.height) == sizes[clip.name] and count_frames(example.video) >= 20
    assert clips[0].name == "people"  # the page opens on real footage with several people


def _run_app(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "app", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_cli_defaults_are_local():
    from app.__main__ import build_parser

    args = build_parser().parse_args([])
    assert args.host == "127.0.0.1" and args.port == 7860 and args.share is False
    assert args.backend == "onnx"


def test_cli_bad_checkpoint(tmp_path):
    result = _run_app("--checkpoint", str(tmp_path / "nope"), "--no-examples")
    assert result.returncode == 2
    assert "error:" in result.stderr and "nope" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_bad_engine_list(tiny_checkpoint):
    result = _run_app("--checkpoint", str(tiny_checkpoint), "--backend", "torch", "--backends",
                      "torch,tensorrt", "--no-examples")  # fmt: skip
    assert result.returncode == 2
    assert "--backends: tensorrt cannot run here; valid:" in result.stderr


def test_cli_port_in_use_fails_fast(tiny_checkpoint):
    import socket

    port = free_port()
    with socket.socket() as holder:  # a real listener on the port the page wants
        holder.bind(("127.0.0.1", port))
        holder.listen()
        result = _run_app("--checkpoint", str(tiny_checkpoint), "--backend", "torch",
                          "--port", str(port), "--no-examples")  # fmt: skip
    assert result.returncode == 3
    assert f"port {port} is in use on 127.0.0.1" in result.stderr and "--port" in result.stderr
    assert "Traceback" not in result.stderr


def test_banner_speaks_of_the_flag_not_the_python_call():
    from app.__main__ import _banner, build_parser

    local = _banner(build_parser().parse_args([]), None)
    assert local.splitlines()[0] == "HINet-stream page: http://127.0.0.1:7860/"
    assert "--share" in local and "share=True" not in local
    shared = _banner(build_parser().parse_args(["--share"]), "https://x.gradio.live")
    assert "https://x.gradio.live" in shared and "anyone who has it" in shared
