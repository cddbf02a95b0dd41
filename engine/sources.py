"""Frame sources: webcams, RTSP/HTTP streams, video files, image folders and the demo clips.

Every source yields :class:`Frame` objects carrying a sequence number and a monotonic capture
timestamp. Two behaviours:

* **Live** sources (cameras, network streams) run a reader thread that keeps only the NEWEST
  decoded frame. A frame overwritten before anyone read it counts as dropped; the consumer never
  sees a growing backlog (OpenCV's ``CAP_PROP_BUFFERSIZE`` is ignored by the FFmpeg backend, so
  this is done here). Network streams reconnect with capped exponential backoff when they die.
* **File** sources (video files, image folders) decode on demand in the caller's thread and never
  drop a frame. :class:`PacedSource` plays any of them at a fixed rate like a camera: without
  dropping (the default), or, with ``drop=True``, skipping the frames a slow consumer missed.

Use :func:`open_source` with a spec string: ``"0"`` (webcam index), ``"rtsp://..."``,
``"http(s)://..."``, a video file path, an image folder path, or ``"demo"`` (a clip shipped with
the project, :mod:`engine.demo`).
"""

from __future__ import annotations

import abc
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import cv2
import numpy as np

from engine.preprocess import sanitize_frame

__all__ = [
    "IMAGE_EXTENSIONS",
    "RTSP_CAPTURE_OPTIONS",
    "SOURCE_FORMS",
    "CameraUnavailableError",
    "EndOfStream",
    "FileSource",
    "Frame",
    "ImageFolderSource",
    "LiveSource",
    "PacedSource",
    "Source",
    "SourceError",
    "SourceNotFoundError",
    "StreamUnavailableError",
    "UnknownSourceError",
    "open_camera",
    "open_source",
    "open_stream",
]

logger = logging.getLogger(__name__)

#: FFmpeg options for low-latency RTSP (must be in the environment before a capture opens).
#: ``analyzeduration`` 0.5 s: FFmpeg's default (5 s budget) spent ~1.6 s probing a loopback
#: H.264 stream on every (re)open; the SDP already describes the codec.
RTSP_CAPTURE_OPTIONS = "rtsp_transport;tcp|fflags;nobuffer|flags;low_delay|analyzeduration;500000"
#: Default ports of the stream URL schemes (for the reconnect reachability probe).
_DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443, "rtmp": 1935}

#: File name endings read by :class:`ImageFolderSource`.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

#: Human-readable list of accepted source specs (used in error messages and --help).
SOURCE_FORMS = (
    "'demo' (the clip shipped with the project), a webcam index such as '0', "
    "an rtsp:// rtsps:// http:// https:// URL, a video file path, or a folder of images"
)

#: Serialises captures that open while ``OPENCV_FFMPEG_CAPTURE_OPTIONS`` is temporarily set:
#: the variable is process-wide and FFmpeg reads it at open time, so RTSP-only options
#: (``low_delay`` drops reordered frames) must never leak into a file capture.
_OPEN_LOCK = threading.Lock()
_FFMPEG_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"

_URL = re.compile(r"^(rtsps?|https?|rtmp|udp|tcp)://", re.IGNORECASE)


def _open_capture(
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
    """

    image: np.ndarray
    index: int
    timestamp: float

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
        cap = _open_capture(str(self.path))
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
        if not ok and self.loop and self._index > 0:
            self._cap.release()
            self._cap = self._open()
            ok, image = self._cap.read()
        if not ok:
            raise EndOfStream(self.name)
        frame = Frame(sanitize_frame(image), self._index, time.monotonic())
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
        if self._pos >= len(self.files):
            if not self.loop:
                raise EndOfStream(self.name)
            self._pos = 0
        path = self.files[self._pos]
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise SourceError(f"cannot decode image {path}")
        self._pos += 1
        frame = Frame(sanitize_frame(image), self._index, time.monotonic())
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
        while self._next < target:  # live: read past what the consumer missed
            if self._read_inner() is not None:
                self._dropped += 1
            self._next += 1
        frame = self._read_inner()
        if frame is None:
            return None
        served = time.monotonic()
        self._next += 1
        self._due = max(due, served - 1.0 / self._fps) + 1.0 / self._fps
        return Frame(frame.image, frame.index, served)

    def _read_inner(self) -> Frame | None:
        return self.inner.read(timeout=1.0)

    def close(self) -> None:
        """Close the inner source."""
        self.inner.close()


# -- live sources --------------------------------------------------------------------------------
class LiveSource(Source):
    """A live capture read by a background thread that keeps only the newest frame.

    The constructor opens the capture once (a failure raises ``open_error``) and starts the
    reader thread. When a read fails (the stream died) and ``reconnect`` is on, the reader
    releases the capture and re-opens it after ``backoff``, doubling the wait up to
    ``max_backoff``, until it succeeds or the source is closed. The consumer just sees no new
    frames meanwhile (:meth:`read` returns ``None`` on timeout), so a pipeline keeps running.

    Args:
        opener: Returns a new ``cv2.VideoCapture`` (opened or not).
        name: Description for messages.
        open_error: Exception type raised when the first open fails.
        reconnect: Re-open after the stream dies (else the source ends).
        backoff: First reconnect delay in seconds.
        max_backoff: Cap on the reconnect delay in seconds.
        reachable: A cheap check that the server accepts connections again (a TCP connect);
            while it says no, the reader waits out the backoff, and the moment it says yes the
            reader re-opens at once instead of sleeping out the rest of the delay.
    """

    live = True

    def __init__(
        self,
        opener: Callable[[], cv2.VideoCapture],
        *,
        name: str,
        open_error: type[SourceError] = StreamUnavailableError,
        reconnect: bool = True,
        backoff: float = 0.25,
        max_backoff: float = 4.0,
        reachable: Callable[[], bool] | None = None,
    ) -> None:
        if backoff <= 0 or max_backoff < backoff:
            raise ValueError(f"need 0 < backoff <= max_backoff, got {backoff}, {max_backoff}")
        self.name = name
        self._opener = opener
        self._reconnect = reconnect
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._reachable = reachable
        self._cond = threading.Condition()
        self._latest: Frame | None = None
        self._next_index = 0
        self._returned_index = -1
        self._dropped = 0
        self._reconnects = 0
        self._ended = False
        self._stop = threading.Event()
        cap = opener()
        if not cap.isOpened():
            cap.release()
            raise open_error(f"cannot open {name}")
        self._cap: cv2.VideoCapture | None = cap
        self._fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0) or None
        self._thread = threading.Thread(target=self._reader, name=f"reader:{name}", daemon=True)
        self._thread.start()

    @property
    def dropped(self) -> int:
        """Frames skipped so far."""
        with self._cond:
            return self._dropped

    @property
    def reconnects(self) -> int:
        """Re-opens after the stream died."""
        with self._cond:
            return self._reconnects

    @property
    def fps(self) -> float | None:
        """Nominal frame rate, or ``None`` when unknown."""
        return self._fps

    def _publish(self, image: np.ndarray) -> None:
        frame = Frame(sanitize_frame(image), self._next_index, time.monotonic())
        self._next_index += 1
        with self._cond:
            if self._latest is not None and self._latest.index > self._returned_index:
                self._dropped += 1  # overwritten before anyone read it
            self._latest = frame
            self._cond.notify_all()

    def _reader(self) -> None:
        delay = self._backoff
        try:
            while not self._stop.is_set():
                cap = self._cap
                ok, image = cap.read() if cap is not None else (False, None)
                if ok and image is not None:
                    delay = self._backoff
                    self._publish(image)
                    continue
                if self._stop.is_set():
                    break
                if cap is not None:
                    cap.release()
                    self._cap = None
                if not self._reconnect:
                    logger.info("%s ended", self.name)
                    break
                logger.warning("%s: no frame; reconnecting in %.2f s", self.name, delay)
                if self._wait_to_reopen(delay):
                    break
                delay = min(delay * 2.0, self._max_backoff)
                new = self._opener()
                if new.isOpened():
                    self._cap = new
                    with self._cond:
                        self._reconnects += 1
                    logger.info("%s: reconnected", self.name)
                else:
                    new.release()
        except Exception:  # the reader must never die silently
            logger.exception("%s: reader thread failed", self.name)
        finally:
            if self._stop.is_set() and self._cap is not None:  # closed while reading
                self._cap.release()
                self._cap = None
            with self._cond:
                self._ended = True
                self._cond.notify_all()

    def _wait_to_reopen(self, delay: float) -> bool:
        """Wait ``delay`` seconds, or less once the server is reachable; ``True``: stopped."""
        if self._reachable is None:
            return self._stop.wait(delay)
        deadline = time.monotonic() + delay
        while True:
            if self._reachable():
                return self._stop.is_set()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return self._stop.is_set()
            if self._stop.wait(min(_PROBE_EVERY, remaining)):
                return True

    def read(self, timeout: float = 1.0) -> Frame | None:
        """See :meth:`Source.read`."""
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            while True:
                latest = self._latest
                if latest is not None and latest.index > self._returned_index:
                    self._returned_index = latest.index
                    return latest
                if self._ended:
                    raise EndOfStream(self.name)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)

    def close(self) -> None:
        """Release resources. Idempotent."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        # The reader may sit in cap.read() for up to the read timeout; do not wait forever.
        self._thread.join(timeout=2.0)
        if not self._thread.is_alive() and self._cap is not None:
            self._cap.release()
            self._cap = None


def open_camera(index: int, **kwargs: object) -> LiveSource:
    """Open webcam ``index`` (V4L2 on Linux) as a :class:`LiveSource`.

    Raises:
        CameraUnavailableError: no such device, or it exists but cannot be opened (busy).
    """
    device = Path(f"/dev/video{index}")
    if os.name == "posix" and Path("/dev").is_dir() and not device.exists():
        raise CameraUnavailableError(f"camera {index} not found ({device} does not exist)")

    def opener() -> cv2.VideoCapture:
        return cv2.VideoCapture(index, cv2.CAP_V4L2 if os.name == "posix" else cv2.CAP_ANY)

    try:
        return LiveSource(
            opener, name=f"camera {index}", open_error=CameraUnavailableError, **kwargs
        )
    except CameraUnavailableError as exc:
        raise CameraUnavailableError(
            f"camera {index} exists but cannot be opened (busy in another program, or no "
            f"permission on {device}?)"
        ) from exc


#: Seconds between reachability probes while a stream is down.
_PROBE_EVERY = 0.1


def _tcp_probe(url: str) -> Callable[[], bool] | None:
    """A callable that says whether ``url``'s host accepts a TCP connection (``None``: no port)."""
    parts = urlsplit(url)
    try:
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme.lower())
    except ValueError:  # a malformed port: FFmpeg will say so when it opens
        return None
    if not parts.hostname or not port:
        return None
    host = parts.hostname

    def reachable() -> bool:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return True
        except OSError:
            return False

    return reachable


def open_stream(
    url: str, *, open_timeout_ms: int = 5000, read_timeout_ms: int = 3000, **kwargs: object
) -> LiveSource:
    """Open an RTSP/HTTP stream as a reconnecting :class:`LiveSource`.

    For RTSP, sets ``OPENCV_FFMPEG_CAPTURE_OPTIONS`` (TCP transport, no buffering, low delay)
    while the capture opens (and re-opens), bounds open/read time so a dead stream cannot block ``read()`` for ~90 s, and
    asks for one decoder thread (lower latency).

    Raises:
        StreamUnavailableError: the stream cannot be opened at start.
    """
    options = RTSP_CAPTURE_OPTIONS if url.lower().startswith("rtsp") else None
    params = [
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
        int(open_timeout_ms),
        cv2.CAP_PROP_READ_TIMEOUT_MSEC,
        int(read_timeout_ms),
        cv2.CAP_PROP_N_THREADS,
        1,
    ]

    def opener() -> cv2.VideoCapture:
        return _open_capture(url, params, ffmpeg_options=options)

    kwargs.setdefault("reachable", _tcp_probe(url))
    try:
        return LiveSource(opener, name=url, open_error=StreamUnavailableError, **kwargs)
    except StreamUnavailableError as exc:
        raise StreamUnavailableError(
            f"cannot open stream {url} within {open_timeout_ms} ms (server down, wrong path, "
            "or not a video stream?)"
        ) from exc


def open_source(
    spec: str, *, loop: bool = False, pace: float | None = None, **kwargs: object
) -> Source:
    """Open a source from a spec string.

    Args:
        spec: ``"demo"`` (or ``"demo:<clip>"``), a webcam index (``"0"``), an
            ``rtsp://``/``http(s)://`` URL, a video file path or an image folder path (see
            :data:`SOURCE_FORMS`).
        loop: Loop finite sources (files, folders) forever; the demo always loops.
        pace: Play a file, folder or demo clip at this many frames per second like a camera,
            never dropping (:class:`PacedSource`); ``None`` serves frames as fast as they are
            read. Live sources ignore it.
        **kwargs: Passed to the stream/camera opener (e.g. ``backoff``).

    Raises:
        UnknownSourceError: the spec matches no accepted form (the message lists them).
        SourceNotFoundError: a file/folder does not exist.
        CameraUnavailableError: the webcam is absent or busy.
        StreamUnavailableError: the URL cannot be opened.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise UnknownSourceError(f"empty source spec; accepted: {SOURCE_FORMS}")
    spec = spec.strip()
    if pace is not None and not pace > 0:
        raise ValueError(f"pace must be positive frames per second or None, got {pace}")
    if spec.lower() == "demo" or spec.lower().startswith("demo:"):
        from engine.demo import open_demo

        name = spec.split(":", 1)[1] if ":" in spec else None
        return open_demo(name, pace=pace)
    if spec.isdigit():
        return open_camera(int(spec), **kwargs)
    if _URL.match(spec):
        return open_stream(spec, **kwargs)
    if "://" in spec:
        raise UnknownSourceError(f"unsupported URL scheme in {spec!r}; accepted: {SOURCE_FORMS}")
    path = Path(spec).expanduser()
    finite: Source | None = None
    if path.is_dir():
        finite = ImageFolderSource(path, loop=loop)
    elif path.is_file():
        finite = FileSource(path, loop=loop)
    if finite is not None:
        return finite if pace is None else PacedSource(finite, pace)
    if path.suffix or os.sep in spec:
        raise SourceNotFoundError(f"no such file or folder: {spec}")
    raise UnknownSourceError(f"unknown source {spec!r}; accepted: {SOURCE_FORMS}")
