"""Frame sources: the :class:`Frame` type, the :class:`Source` interface, files and folders.

Every source yields :class:`Frame` objects carrying a sequence number and a monotonic capture
timestamp. Two behaviours:

* **Live** sources (cameras, network streams; :mod:`engine.live`) run a reader thread that keeps
  only the NEWEST decoded frame, and reconnect when a stream dies.
* **File** sources (video files, image folders; here) decode on demand in the caller's thread and
  never drop a frame. :class:`PacedSource` plays any of them at a fixed rate like a camera:
  without dropping (the default), or, with ``drop=True``, skipping the frames a slow consumer
  missed.

:func:`engine.capture.open_source` opens any of them, and the shipped demo clips, from a spec
string.
"""

from __future__ import annotations

import abc
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from engine.preprocess import sanitize_frame

__all__ = [
    "IMAGE_EXTENSIONS",
    "CameraUnavailableError",
    "EndOfStream",
    "FileSource",
    "Frame",
    "ImageFolderSource",
    "PacedSource",
    "Source",
    "SourceError",
    "SourceNotFoundError",
    "StreamUnavailableError",
    "UnknownSourceError",
    "open_ffmpeg_capture",
]

logger = logging.getLogger(__name__)

#: File name endings read by :class:`ImageFolderSource`.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

#: Serialises captures that open while ``OPENCV_FFMPEG_CAPTURE_OPTIONS`` is temporarily set:
#: the variable is process-wide and FFmpeg reads it at open time, so RTSP-only options
#: (``low_delay`` drops reordered frames) must never leak into a file capture.
_OPEN_LOCK = threading.Lock()
_FFMPEG_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"


def open_ffmpeg_capture(
    target: str, params: list[int] | None = None, *, ffmpeg_options: str | None = None
) -> cv2.VideoCapture:
    """Open an FFmpeg capture; ``ffmpeg_options`` is in the environment only while it opens."""
    with _OPEN_LOCK:
        previous = os.environ.get(_FFMPEG_ENV)
        if ffmpeg_options is not None:
            os.environ[_FFMPEG_ENV] = ffmpeg_options
        try:
            if params:
                return cv2.VideoCapture(target, cv2.CAP_FFMPEG, params)
            return cv2.VideoCapture(target, cv2.CAP_FFMPEG)
        finally:
            if ffmpeg_options is not None:
                if previous is None:
                    os.environ.pop(_FFMPEG_ENV, None)
                else:
                    os.environ[_FFMPEG_ENV] = previous


# -- errors ------------------------------------------------------------------------------------
class SourceError(RuntimeError):
    """A source cannot be opened or read."""


class UnknownSourceError(SourceError, ValueError):
    """The source spec matches none of the accepted forms."""


class SourceNotFoundError(SourceError, FileNotFoundError):
    """A file or folder source does not exist (or holds nothing readable)."""


class CameraUnavailableError(SourceError):
    """A webcam is absent, busy or unreadable."""


class StreamUnavailableError(SourceError):
    """A network stream could not be opened at start."""


class EndOfStream(Exception):  # noqa: N818 - a signal like StopIteration, not an error
    """Raised by :meth:`Source.read` when a finite source has no more frames."""


# -- the frame type ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Frame:
    """One captured frame.

    Attributes:
        image: (H, W, 3) uint8 BGR, contiguous.
        index: Sequence number assigned by the source, 0-based, strictly increasing. Gaps mean
            frames were dropped (live sources only).
        timestamp: ``time.monotonic()`` seconds when the frame was decoded.
        cut: The frame does not follow the one before it (a looped file starting again): no
            flow across it, and what was carried (instances, smoothing) is forgotten.
    """

    image: np.ndarray
    index: int
    timestamp: float
    cut: bool = False

    def __post_init__(self) -> None:
        img = self.image
        if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(
                f"frame image must be (H, W, 3), got {getattr(img, 'shape', type(img))}"
            )
        if img.dtype != np.uint8:
            raise ValueError(f"frame image must be uint8, got {img.dtype}")
        if self.index < 0:
            raise ValueError(f"frame index must be >= 0, got {self.index}")


# -- the source interface ----------------------------------------------------------------------
class Source(abc.ABC):
    """A stream of :class:`Frame` objects.

    Attributes:
        name: Human-readable description (the spec it was opened from).
        live: ``True`` for sources that keep only the newest frame and may drop frames.
        phrase: A referring expression that comes with the source (the demo clips), or
            ``None``.
    """

    name: str = "source"
    live: bool = False
    phrase: str | None = None

    @abc.abstractmethod
    def read(self, timeout: float = 1.0) -> Frame | None:
        """Return the next frame.

        Args:
            timeout: Seconds to wait for a frame (live sources).

        Returns:
            The next frame, or ``None`` if none arrived within ``timeout`` (live sources only).

        Raises:
            EndOfStream: a finite source is exhausted or the source was closed.
        """

    @property
    def dropped(self) -> int:
        """Frames decoded but never returned by :meth:`read` (always 0 for files)."""
        return 0

    @property
    def reconnects(self) -> int:
        """How many times the source re-opened after its stream died."""
        return 0

    @property
    def fps(self) -> float | None:
        """Nominal frame rate if known."""
        return None

    def close(self) -> None:
        """Release the device/file/connection. Idempotent."""

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self):
        """Iterate frames until the source ends (``None`` timeouts are skipped)."""
        while True:
            try:
                frame = self.read()
            except EndOfStream:
                return
            if frame is not None:
                yield frame

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


# -- files ---------------------------------------------------------------------------------------
class FileSource(Source):
    """A video file, decoded on demand in the caller's thread; never drops a frame.

    Args:
        path: Video file path.
        loop: Start again from the first frame at the end instead of ending.
        phrase: A referring expression that comes with the file (see :attr:`Source.phrase`).

    Raises:
        SourceNotFoundError: the file does not exist or OpenCV cannot decode a first frame.
    """

    live = False

    def __init__(
        self, path: str | os.PathLike[str], *, loop: bool = False, phrase: str | None = None
    ) -> None:
        self.path = Path(path)
        self.name = str(path)
        self.loop = loop
        self.phrase = phrase
        if not self.path.is_file():
            raise SourceNotFoundError(f"video file not found: {self.path}")
        self._cap = self._open()
        self._index = 0
        self._closed = False
        self._fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0) or None

    def _open(self) -> cv2.VideoCapture:
        cap = open_ffmpeg_capture(str(self.path))
        if not cap.isOpened():
            cap.release()
            raise SourceNotFoundError(f"cannot decode video file {self.path} (not a video?)")
        return cap

    @property
    def fps(self) -> float | None:
        """Nominal frame rate, or ``None`` when unknown."""
        return self._fps

    def read(self, timeout: float = 1.0) -> Frame | None:
        """See :meth:`Source.read`."""
        if self._closed:
            raise EndOfStream(self.name)
        ok, image = self._cap.read()
        cut = False
        if not ok and self.loop and self._index > 0:
            self._cap.release()
            self._cap = self._open()
            ok, image = self._cap.read()
            cut = True
        if not ok:
            raise EndOfStream(self.name)
        frame = Frame(sanitize_frame(image), self._index, time.monotonic(), cut=cut)
        self._index += 1
        return frame

    def close(self) -> None:
        """Release resources. Idempotent."""
        self._closed = True
        self._cap.release()


class ImageFolderSource(Source):
    """The images of a folder in name order (:data:`IMAGE_EXTENSIONS`); never drops a frame.

    Args:
        folder: Directory holding the images.
        loop: Start again at the first image at the end.

    Raises:
        SourceNotFoundError: the folder is missing or holds no images.
    """

    live = False

    def __init__(self, folder: str | os.PathLike[str], *, loop: bool = False) -> None:
        self.folder = Path(folder)
        self.name = str(folder)
        self.loop = loop
        if not self.folder.is_dir():
            raise SourceNotFoundError(f"image folder not found: {self.folder}")
        self.files = sorted(
            p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS
        )
        if not self.files:
            raise SourceNotFoundError(
                f"no images ({', '.join(IMAGE_EXTENSIONS)}) in folder {self.folder}"
            )
        self._pos = 0
        self._index = 0
        self._closed = False

    def read(self, timeout: float = 1.0) -> Frame | None:
        """See :meth:`Source.read`."""
        if self._closed:
            raise EndOfStream(self.name)
        cut = False
        if self._pos >= len(self.files):
            if not self.loop:
                raise EndOfStream(self.name)
            self._pos, cut = 0, True
        path = self.files[self._pos]
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise SourceError(f"cannot decode image {path}")
        self._pos += 1
        frame = Frame(sanitize_frame(image), self._index, time.monotonic(), cut=cut)
        self._index += 1
        return frame

    def close(self) -> None:
        """Release resources. Idempotent."""
        self._closed = True


class PacedSource(Source):
    """Serve a finite source's frames at ``fps``, like a camera.

    Without ``drop`` (the default) every frame is served, in order, at ``fps``: a consumer that
    falls behind gets the next frame at once and the pace resumes from there (it never bursts
    more than one frame to catch up); the source is not live, so a pipeline never drops a frame
    of it. With ``drop=True`` the source is live: frames are due at ``fps`` from the first read,
    and a consumer that falls behind skips to the newest due frame (the skipped frames are read
    and counted as dropped), as a real camera behaves. Frames are stamped when served.

    Args:
        inner: A file or folder source (or any finite source).
        fps: Frames per second (> 0).
        drop: Skip the frames a slow consumer missed.
    """

    def __init__(self, inner: Source, fps: float, *, drop: bool = False) -> None:
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.inner = inner
        self.name = f"{inner.name} @ {fps:g} fps"
        self.live = bool(drop)
        self.phrase = inner.phrase
        self._fps = float(fps)
        self._t0: float | None = None
        self._next = 0  # the index of the next frame served
        self._due = 0.0  # paced without drop: when the next frame may be served
        self._dropped = 0

    @property
    def fps(self) -> float:
        """The pace."""
        return self._fps

    @property
    def dropped(self) -> int:
        """Frames skipped because the consumer was late (``drop=True`` only)."""
        return self._dropped + self.inner.dropped

    @property
    def reconnects(self) -> int:
        """The inner source's reconnects."""
        return self.inner.reconnects

    def read(self, timeout: float = 1.0) -> Frame | None:
        """See :meth:`Source.read`."""
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = self._due = now
        if self.live:
            target = max(self._next, int((now - self._t0) * self._fps))  # newest due frame
            due = self._t0 + target / self._fps
        else:
            target, due = self._next, self._due
        wait = due - now
        if wait > timeout:
            time.sleep(max(0.0, timeout))
            return None
        if wait > 0:
            time.sleep(wait)
        if self._next < target:  # live: read past what the consumer missed
            start = time.monotonic()
            while self._next < target:
                if self._read_inner() is not None:
                    self._dropped += 1
                self._next += 1
            # the time spent decoding them makes no more frames due: a reader slower than the
            # pace would otherwise fall further behind at every read
            self._t0 += time.monotonic() - start
        frame = self._read_inner()
        if frame is None:
            return None
        served = time.monotonic()
        self._next += 1
        self._due = max(due, served - 1.0 / self._fps) + 1.0 / self._fps
        return Frame(frame.image, frame.index, served, cut=frame.cut)

    def _read_inner(self) -> Frame | None:
        return self.inner.read(timeout=1.0)

    def close(self) -> None:
        """Close the inner source."""
        self.inner.close()
