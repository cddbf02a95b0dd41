"""Helpers of the page's tests: real clips with known targets, mask comparison and the real
app server (``python -m app``) in a subprocess on a free loopback port, stopped by PID.

A module of its own (not ``conftest``, whose name other test folders share).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
NET_SIZE = (64, 64)  # the smallest network input: keeps CPU tests fast
MAX_FRAMES = 50  # the test server's --max-frames (the too-long test clip exceeds it)


@dataclass(frozen=True)
class TargetClip:
    """A synthetic clip written as mp4 (OpenCV mp4v, not the app's writer) with its truth."""

    path: Path
    phrase: str
    masks: np.ndarray  # (T, H, W) bool, the referred object
    frames: int
    size: tuple[int, int]  # (W, H)


def write_target_clip(
    path: Path, *, seed: int = 3, frames: int = 10, size: tuple[int, int] = (96, 128)
) -> TargetClip:
    """Synthetic clip ``seed`` at ``size`` (H, W); the phrase refers to its first target."""
    from training.synthetic.generator import generate_clip
    from training.synthetic.spec import SyntheticSpec

    clip = generate_clip(seed, split="appearance", spec=SyntheticSpec(size=size, frames=frames))
    target = clip.targets[0]
    h, w = clip.frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (w, h))
    assert writer.isOpened()
    for f in clip.frames:
        writer.write(np.ascontiguousarray(f))
    writer.release()
    return TargetClip(path, target.expression, target.masks.astype(bool), len(clip.frames), (w, h))


def write_plain_clip(path: Path, *, frames: int, size: tuple[int, int] = (64, 48)) -> Path:
    """A moving square over a gradient (mp4v)."""
    w, h = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (w, h))
    assert writer.isOpened()
    grad = np.tile(np.linspace(40, 200, w, dtype=np.uint8), (h, 1))
    for i in range(frames):
        img = cv2.merge([grad, grad[:, ::-1], np.full_like(grad, 90)])
        cv2.rectangle(img, (2 + i % (w - 12), 10), (12 + i % (w - 12), 20), (0, 0, 255), -1)
        writer.write(img)
    writer.release()
    return path


def count_frames(path: Path) -> int:
    """Decode every frame with OpenCV and count them."""
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def read_masks_zip(path: Path) -> list[np.ndarray]:
    """The PNG masks of a masks zip, in name order, as (H, W) bool."""
    with zipfile.ZipFile(path) as zf:
        names = sorted(zf.namelist())
        out = []
        for name in names:
            png = cv2.imdecode(np.frombuffer(zf.read(name), np.uint8), cv2.IMREAD_UNCHANGED)
            assert png is not None and png.ndim == 2, name
            assert set(np.unique(png)) <= {0, 255}, name
            out.append(png > 0)
    return out


def reference_masks(
    engine, video: Path, phrase: str, *, threshold: float = 0.5
) -> list[np.ndarray]:
    """The masks the app must return, computed in-process by the stream's session code."""
    import torch

    from engine.instances import DEFAULT_EVERY, InstanceEvidence
    from engine.session import Segmenter

    # the app's clip processing: instance evidence on every 6th frame, in line (so it repeats)
    seg = Segmenter(engine, threshold=threshold, instances=InstanceEvidence(every=DEFAULT_EVERY))
    seg.set_phrase(phrase)
    cap = cv2.VideoCapture(str(video), cv2.CAP_FFMPEG)
    masks = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the app servers run one thread too: the same reduction order
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            masks.append(seg.step(frame).mask)
    finally:
        torch.set_num_threads(threads)
        cap.release()
    return masks


def assert_masks_match(got: list[np.ndarray], want: list[np.ndarray], *, agree: float = 0.995):
    """Same count and shapes; pixel agreement >= ``agree`` per frame (float noise near the
    threshold may flip a few pixels between two processes)."""
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.shape == w.shape, i
        assert (g == w).mean() >= agree, f"frame {i}: {(g == w).mean():.4f} agreement"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AppServer:
    """``python -m app`` in a subprocess on a free 127.0.0.1 port; stopped by PID."""

    def __init__(self, args: list[str], *, log: Path, cache: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.args = args
        self.log = log
        self.cache = cache
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 180.0) -> AppServer:
        env = dict(
            os.environ,
            HINET_STREAM_CACHE=str(self.cache),
            GRADIO_ANALYTICS_ENABLED="False",
            OMP_NUM_THREADS="1",  # one engine thread, as the in-process reference masks
        )
        cmd = [
            sys.executable,
            "-m",
            "app",
            *self.args,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"app exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url, timeout=5) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"app did not answer within {timeout} s:\n{self.log_tail()}")

    def log_tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""

    def stop(self) -> None:
        """SIGTERM by PID, then SIGKILL."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=15)
        self.proc = None
