"""Sinks of the pipeline's overlay stage: video files, mask PNGs (a folder or a zip), callbacks.

Every sink has ``write(image, result, frame)``, called once per finished frame from the overlay
stage with the composed (H, W, 3) uint8 BGR image, the frame's :class:`engine.session.Result`
(its ``timings`` complete) and the source :class:`engine.sources.Frame`, and an idempotent
``close()``.

H.264: OpenCV's ``VideoWriter`` cannot write it and browsers do not play ``mp4v``, so
:class:`H264Writer` pipes raw BGR frames to ``ffmpeg`` (Debian package ``ffmpeg``), which encodes
them with libx264 in ``yuv420p`` (odd sizes padded by one pixel) with the index at the front
(``+faststart``). Every frame written is one frame in the file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from engine.overlay import mask_to_png_bytes
from engine.rle import rle_encode
from engine.session import Result
from engine.sources import Frame

__all__ = [
    "VIDEO_SUFFIXES",
    "CallbackOutput",
    "FFmpegError",
    "H264FileOutput",
    "H264Writer",
    "MaskFolderOutput",
    "MaskZipOutput",
    "Output",
    "OutputPathError",
    "ResultsFileOutput",
    "VideoFileOutput",
    "check_output_dir",
    "check_output_file",
    "find_ffmpeg",
    "video_output",
]

#: Video containers the writers make (H.264 through ffmpeg; mp4v through OpenCV: .mp4, .avi).
VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi")


class OutputPathError(ValueError):
    """An output path cannot be written (checked before any model or frame work)."""


def _writable_folder(folder: Path, what: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputPathError(f"{what}: cannot create folder {folder} ({exc.strerror})") from None
    probe = folder / f".hinet-write-probe-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputPathError(f"{what}: cannot write in {folder} ({exc.strerror})") from None


def check_output_file(
    path: str | Path, *, what: str, suffixes: tuple[str, ...] | None = None
) -> Path:
    """Check that a file can be written at ``path`` before anything is computed for it.

    Its folder is created; the file itself is not.

    Args:
        path: The file.
        what: The option it came from (named in the message).
        suffixes: Accepted file name endings (``None``: any).

    Raises:
        OutputPathError: a folder at ``path``, a wrong ending, or a folder that cannot be
            created or written.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputPathError(f"{what}: {path} is a folder; give a file name")
    if suffixes and path.suffix.lower() not in suffixes:
        raise OutputPathError(
            f"{what}: {path} must end in {', '.join(suffixes)} (the file type is read from it)"
        )
    _writable_folder(path.parent if str(path.parent) else Path("."), what)
    return path


def check_output_dir(path: str | Path, *, what: str) -> Path:
    """Create ``path`` as a writable folder, or raise :class:`OutputPathError`."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"{what}: {path} is a file; give a folder")
    _writable_folder(path, what)
    return path


def video_output(path: str | Path, *, fps: float, crf: int = 23) -> Output:
    """An H.264 writer (browser-playable), or, without ffmpeg, OpenCV's mp4v with a warning.

    ``crf`` is the x264 quality of the H.264 writer.
    """
    try:
        find_ffmpeg()
    except FFmpegError as exc:
        logger.warning("%s; writing %s as mp4v instead (most browsers will not play it)", exc, path)
        return VideoFileOutput(path, fps=fps)
    return H264FileOutput(path, fps=fps, crf=crf)


logger = logging.getLogger(__name__)


class Output(Protocol):
    """A sink for finished frames, called from the overlay stage."""

    def write(self, image: np.ndarray, result: Result, frame: Frame) -> None:
        """Consume one composed (H, W, 3) uint8 BGR image and its result."""

    def close(self) -> None:
        """Flush and release (idempotent)."""


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


class H264FileOutput:
    """Write composed frames to a browser-playable H.264 mp4 (:class:`H264Writer`).

    The writer opens on the first frame (its size is the frame's).

    Args:
        path: Output ``.mp4`` file; its folder is created.
        fps: Frame rate stored in the file.
        crf: x264 quality.
    """

    def __init__(self, path: str | Path, *, fps: float = 25.0, crf: int = 23) -> None:
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        find_ffmpeg()  # fail before any frame is processed
        self.path = Path(path)
        self.fps = float(fps)
        self.crf = crf
        self._writer: H264Writer | None = None
        self.frames = 0

    def write(self, image: np.ndarray, result: Result, frame: Frame) -> None:
        """Consume one finished frame (see :class:`Output`)."""
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            h, w = image.shape[:2]
            self._writer = H264Writer(self.path, size=(w, h), fps=self.fps, crf=self.crf)
        self._writer.write(image)
        self.frames += 1

    def close(self) -> None:
        """Finish the file (idempotent).

        Raises:
            FFmpegError: ffmpeg failed.
        """
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()

    def abort(self) -> None:
        """Stop without finishing the file (after an error)."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.abort()


class VideoFileOutput:
    """Write composed frames with OpenCV's ``VideoWriter`` (``mp4v`` fourcc, not H.264).

    Args:
        path: Output file; its folder is created.
        fps: Frame rate stored in the file.
    """

    def __init__(self, path: str | Path, *, fps: float = 25.0) -> None:
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.path = Path(path)
        self.fps = float(fps)
        self._writer: cv2.VideoWriter | None = None
        self.frames = 0

    def write(self, image: np.ndarray, result: Result, frame: Frame) -> None:
        """Consume one finished frame (see :class:`Output`)."""
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            h, w = image.shape[:2]
            self._writer = cv2.VideoWriter(
                str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h)
            )
            if not self._writer.isOpened():
                raise OSError(f"cannot open video writer for {self.path}")
        self._writer.write(image)
        self.frames += 1

    def close(self) -> None:
        """Release resources. Idempotent."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None


class MaskFolderOutput:
    """Write each mask as ``<folder>/<frame index:06d>.png`` (0 background, 255 object)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.frames = 0

    def write(self, image: np.ndarray, result: Result, frame: Frame) -> None:
        """Consume one finished frame (see :class:`Output`)."""
        path = self.folder / f"{result.frame_index:06d}.png"
        if not cv2.imwrite(str(path), result.mask.astype(np.uint8) * 255):
            raise OSError(f"cannot write {path}")
        self.frames += 1

    def close(self) -> None:
        """Nothing to release."""


class MaskZipOutput:
    """Write each mask as ``mask_<frame index:05d>.png`` into one zip file (stored, lossless)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._zip: zipfile.ZipFile | None = zipfile.ZipFile(
            self.path, "w", compression=zipfile.ZIP_STORED
        )
        self.frames = 0

    def write(self, image: np.ndarray, result: Result, frame: Frame) -> None:
        """Consume one finished frame (see :class:`Output`)."""
        if self._zip is None:
            raise ValueError(f"{self.path} is closed")
        self._zip.writestr(f"mask_{result.frame_index:05d}.png", mask_to_png_bytes(result.mask))
        self.frames += 1

    def close(self) -> None:
        """Finish the zip (idempotent)."""
        if self._zip is not None:
            self._zip.close()
            self._zip = None


class CallbackOutput:
    """Call ``fn(image, result, frame)`` for every finished frame (tests, apps)."""

    def __init__(self, fn: Callable[[np.ndarray, Result, Frame], None]) -> None:
        self.fn = fn

    def write(self, image: np.ndarray, result: Result, frame: Frame) -> None:
        """Consume one finished frame (see :class:`Output`)."""
        self.fn(image, result, frame)

    def close(self) -> None:
        """Nothing to release."""


class ResultsFileOutput:
    """Per-frame results as JSON lines, one object per frame.

    Each line: frame index, capture time, phrase, score, peak, area, found, prior_conf (the
    grounding prior's confidence, ``null`` without one), inferred (the network ran on it, not a
    keyframe warp), instances (with instance evidence: the best instances of the phrase's class,
    each with its box, score, the score's parts and whether it was chosen), steered (the chosen
    instance steered the mask), absent (why the evidence says it is not in view, or ``null``),
    the stage timings, and the mask as COCO RLE. Read back with ``json.loads`` per line and
    :func:`engine.rle.rle_decode` (or ``pycocotools.mask.decode``).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("w", encoding="utf-8")
        self.frames = 0

    def write(self, image: np.ndarray, result: Result, frame: Frame) -> None:
        """Consume one finished frame (see :class:`Output`)."""
        row = {
            "frame": result.frame_index,
            "capture_time": round(result.capture_time, 6),
            "phrase": result.phrase,
            "score": round(result.score, 4),
            "peak": round(result.peak, 4),
            "area": round(result.area, 6),
            "found": result.found,
            "prior_conf": None if result.prior_conf is None else round(result.prior_conf, 4),
            "inferred": result.inferred,
            "instances": list(result.instances),
            "steered": result.steered,
            "absent": result.absent,
            "timings_ms": {k: round(v, 3) for k, v in result.timings.items()},
            "mask": rle_encode(result.mask),
        }
        self._file.write(json.dumps(row) + "\n")
        self.frames += 1

    def close(self) -> None:
        """Finish the file (idempotent)."""
        if not self._file.closed:
            self._file.close()
