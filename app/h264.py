"""Browser-playable H.264 mp4 files written through the ``ffmpeg`` binary.

OpenCV's ``VideoWriter`` cannot write H.264 and browsers do not play ``mp4v``, so frames are piped
as raw BGR to ``ffmpeg`` (Debian package ``ffmpeg``), which encodes them with libx264 in
``yuv420p`` (odd sizes padded by one pixel) with the index at the front (``+faststart``). Every
frame written is one frame in the file: the input is raw video at a constant rate.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["FFmpegError", "H264Writer", "find_ffmpeg"]

logger = logging.getLogger(__name__)


class FFmpegError(RuntimeError):
    """``ffmpeg`` is missing or failed to encode."""


def find_ffmpeg() -> str:
    """Path of the ``ffmpeg`` binary.

    Raises:
        FFmpegError: not on ``PATH``.
    """
    path = shutil.which("ffmpeg")
    if path is None:
        raise FFmpegError("ffmpeg not found on PATH: install it (apt-get install ffmpeg)")
    return path


class H264Writer:
    """Write (H, W, 3) uint8 BGR frames to an H.264 mp4.

    Args:
        path: Output ``.mp4`` file (overwritten).
        size: ``(width, height)`` of every frame.
        fps: Frame rate written into the file.
        crf: x264 quality (0 lossless .. 51 worst; 23 is x264's default).
        preset: x264 speed preset.

    Raises:
        ValueError: bad size, fps or crf.
        FFmpegError: ffmpeg is missing, exits early or fails.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        size: tuple[int, int],
        fps: float,
        crf: int = 23,
        preset: str = "veryfast",
    ) -> None:
        w, h = size
        if w < 2 or h < 2:
            raise ValueError(f"size must be at least 2x2, got {w}x{h}")
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        if not 0 <= crf <= 51:
            raise ValueError(f"crf must be in 0..51, got {crf}")
        self.path = Path(path)
        self.size = (int(w), int(h))
        self.frames = 0
        # ffmpeg's stderr goes to a file: unlike a pipe it cannot fill up and block ffmpeg.
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()/abort()
        cmd = [
            find_ffmpeg(),
            "-hide_banner", "-loglevel", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{w}x{h}", "-r", f"{fps:.6g}",
            "-i", "pipe:0",
            "-an", "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2",
            "-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-pix_fmt", "yuv420p",
            "-movflags", "+faststart",
            str(self.path),
        ]  # fmt: skip
        self._proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._log
        )

    def _error(self, what: str) -> FFmpegError:
        self._log.seek(0)
        tail = self._log.read().decode(errors="replace").strip()[-800:]
        return FFmpegError(f"ffmpeg {what}: {tail or 'no message'}")

    def write(self, frame: np.ndarray) -> None:
        """Append one (H, W, 3) uint8 BGR frame of the writer's size."""
        w, h = self.size
        if frame.shape != (h, w, 3) or frame.dtype != np.uint8:
            raise ValueError(f"frame must be ({h}, {w}, 3) uint8, got {frame.shape} {frame.dtype}")
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(np.ascontiguousarray(frame).tobytes())
        except (BrokenPipeError, ValueError) as exc:
            self._proc.wait(timeout=10)
            raise self._error("stopped accepting frames") from exc
        self.frames += 1

    def close(self) -> Path:
        """Finish the file and return its path.

        Raises:
            FFmpegError: ffmpeg failed or nothing was written.
        """
        proc = self._proc
        if proc.stdin is not None and not proc.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()
        try:
            code = proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise self._error("timed out finishing the file") from None
        try:
            if code != 0:
                raise self._error(f"exited with code {code}")
            if self.frames == 0:
                raise FFmpegError("no frames were written")
        finally:
            self._log.close()
        logger.debug("wrote %s (%d frames)", self.path, self.frames)
        return self.path

    def abort(self) -> None:
        """Stop ffmpeg without finishing the file (after an error)."""
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        if not self._log.closed:
            self._log.close()

    def __enter__(self) -> H264Writer:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
