"""Live sources: webcams and RTSP/HTTP streams, newest frame wins, reconnecting.

A :class:`LiveSource` runs a reader thread that keeps only the NEWEST decoded frame. A frame
overwritten before anyone read it counts as dropped; the consumer never sees a growing backlog
(OpenCV's ``CAP_PROP_BUFFERSIZE`` is ignored by the FFmpeg backend, so this is done here).
Network streams reconnect with capped exponential backoff when they die.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import cv2
import numpy as np

from engine.preprocess import sanitize_frame
from engine.sources import (
    CameraUnavailableError,
    EndOfStream,
    Frame,
    Source,
    SourceError,
    StreamUnavailableError,
    open_ffmpeg_capture,
)

__all__ = ["RTSP_CAPTURE_OPTIONS", "LiveSource", "open_camera", "open_stream"]

logger = logging.getLogger(__name__)

#: FFmpeg options for low-latency RTSP (must be in the environment before a capture opens).
#: ``analyzeduration`` 0.5 s: FFmpeg's default (5 s budget) spent ~1.6 s probing a loopback
#: H.264 stream on every (re)open; the SDP already describes the codec.
RTSP_CAPTURE_OPTIONS = "rtsp_transport;tcp|fflags;nobuffer|flags;low_delay|analyzeduration;500000"
#: Default ports of the stream URL schemes (for the reconnect reachability probe).
_DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443, "rtmp": 1935}


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
        return open_ffmpeg_capture(url, params, ffmpeg_options=options)

    kwargs.setdefault("reachable", _tcp_probe(url))
    try:
        return LiveSource(opener, name=url, open_error=StreamUnavailableError, **kwargs)
    except StreamUnavailableError as exc:
        raise StreamUnavailableError(
            f"cannot open stream {url} within {open_timeout_ms} ms (server down, wrong path, "
            "or not a video stream?)"
        ) from exc
