"""The threaded stream pipeline: capture -> optical flow -> inference -> overlay/output.

One thread per stage, joined by bounded queues. One stop event ends everything; every queue
``put``/``get`` uses a short timeout and re-checks the event, so no thread can block forever on
a queue. An exception in any worker stops the pipeline and is re-raised in the caller by
:meth:`Pipeline.wait` / :meth:`Pipeline.run` / :meth:`Pipeline.stop`. A finite source ends the
pipeline after its last frame has been written (nothing is dropped). With a live source the
capture and flow stages put "newest wins" into single-slot queues: a frame still waiting when
a newer one is ready is replaced (and counted as dropped), so no stage works on a stale frame
and latency stays bounded by the stage times rather than by queue depth.

The flow and inference stages call :meth:`engine.session.Segmenter.prepare` and
:meth:`engine.session.Segmenter.infer`: the same code as :meth:`Segmenter.step`.

Example::

    with Pipeline(open_source("demo"), segmenter, outputs=[VideoFileOutput("out.mp4")]) as p:
        p.set_phrase("the red circle")
        summary = p.run()                       # until the source ends or Ctrl-C
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from engine.latency import LatencyStats, Stamps
from engine.overlay import OverlayStyle, draw_hud_inplace, draw_mask, hud_lines
from engine.session import PreparedFrame, Result, Segmenter
from engine.sources import EndOfStream, Frame, Source

__all__ = [
    "CallbackOutput",
    "MaskFolderOutput",
    "Output",
    "Pipeline",
    "VideoFileOutput",
    "WindowDisplay",
]

logger = logging.getLogger(__name__)

_END = object()  # end-of-stream marker passed down the queues
_POLL = 0.05  # seconds: every blocking queue call wakes up this often to check the stop event


# -- outputs -------------------------------------------------------------------------------------
class Output(Protocol):
    """A sink for finished frames, called from the overlay/output thread."""

    def write(self, image: np.ndarray, result: Result, frame: Frame) -> None:
        """Consume one composed (H, W, 3) uint8 BGR image and its result."""

    def close(self) -> None:
        """Flush and release."""


class VideoFileOutput:
    """Write composed frames to a video file (``mp4v`` fourcc; OpenCV cannot write H.264).

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
        """Release resources. Idempotent."""
        pass


class CallbackOutput:
    """Call ``fn(image, result, frame)`` for every finished frame (tests, apps)."""

    def __init__(self, fn: Callable[[np.ndarray, Result, Frame], None]) -> None:
        self.fn = fn

    def write(self, image: np.ndarray, result: Result, frame: Frame) -> None:
        """Consume one finished frame (see :class:`Output`)."""
        self.fn(image, result, frame)

    def close(self) -> None:
        """Release resources. Idempotent."""
        pass


@dataclass(frozen=True)
class KeyAction:
    """What a key press in the window asks for: ``kind`` is ``"quit"`` or ``"phrase"``."""

    kind: str
    phrase: str = ""


class WindowDisplay:
    """An OpenCV window shown from the MAIN thread by :meth:`Pipeline.run`.

    Keys: ``q`` or Esc quits; ``p`` or Enter starts typing a new phrase in the window (Enter
    applies it, Esc cancels, Backspace deletes).

    Args:
        title: Window title.
    """

    ESC = 27
    ENTER = (10, 13)
    BACKSPACE = (8, 127)

    def __init__(self, title: str = "HINet-stream") -> None:
        self.title = title
        self.typing: str | None = None  # the phrase being typed, None when not typing
        self.message = ""
        self._opened = False

    def handle_key(self, key: int) -> KeyAction | None:
        """Update the typing state for one key code (``cv2.waitKey`` value, -1 for none)."""
        if key < 0:
            return None
        key &= 0xFF
        if self.typing is None:
            if key in (ord("q"), self.ESC):
                return KeyAction("quit")
            if key == ord("p") or key in self.ENTER:
                self.typing = ""
            return None
        if key == self.ESC:
            self.typing = None
        elif key in self.ENTER:
            phrase, self.typing = self.typing, None
            if phrase.strip():
                return KeyAction("phrase", phrase)
        elif key in self.BACKSPACE:
            self.typing = self.typing[:-1]
        elif 32 <= key < 127:
            self.typing += chr(key)
        return None

    def show(self, image: np.ndarray) -> None:
        """Show ``image`` (plus the phrase being typed, if any)."""
        if self.typing is not None or self.message:
            image = image.copy()
            extra = [f"new phrase: {self.typing}_"] if self.typing is not None else []
            if self.message:
                extra.append(self.message)
            h = image.shape[0]
            for i, text in enumerate(reversed(extra)):
                y = h - 10 - i * 22
                cv2.putText(image, text, (8, y), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 3)
                cv2.putText(image, text, (8, y), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1)
        cv2.imshow(self.title, image)
        self._opened = True

    def poll(self) -> KeyAction | None:
        """Pump the window's events for ~1 ms and return the action of a pressed key."""
        if not self._opened:
            return None
        return self.handle_key(cv2.waitKey(1))

    def close(self) -> None:
        """Release resources. Idempotent."""
        if self._opened:
            cv2.destroyWindow(self.title)
            self._opened = False


# -- the pipeline ---------------------------------------------------------------------------------
@dataclass
class _Item:
    frame: Frame
    stamps: Stamps
    prepared: PreparedFrame | None = None
    result: Result | None = None


class Pipeline:
    """Capture, flow, inference and overlay/output in four threads.

    Args:
        source: Where frames come from; closed by :meth:`stop`.
        segmenter: The session whose ``prepare``/``infer`` run in the flow/inference threads.
        outputs: Sinks called in the overlay thread (video file, mask PNGs, callbacks).
        style: How the mask is drawn.
        hud: Draw fps, per-stage p50/p95, dropped frames and the phrase on the video.
        max_frames: Stop after this many captured frames (``None``: until the source ends).
        queue_size: Capacity of each inter-stage queue (default 1 for live sources, which keeps
            latency low, and 2 for files).
        stats: Where latencies go (a new :class:`LatencyStats` by default).
        join_timeout: Seconds :meth:`stop` waits for each thread; a thread stuck in a source's
            blocking read is abandoned (daemon) after that, with a warning.
    """

    STAGE_THREADS = ("capture", "flow", "inference", "overlay")

    def __init__(
        self,
        source: Source,
        segmenter: Segmenter,
        *,
        outputs: Sequence[Output] = (),
        style: OverlayStyle | None = None,
        hud: bool = True,
        max_frames: int | None = None,
        queue_size: int | None = None,
        stats: LatencyStats | None = None,
        join_timeout: float = 3.0,
    ) -> None:
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"max_frames must be >= 1 or None, got {max_frames}")
        if queue_size is not None and queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        self.source = source
        self.segmenter = segmenter
        self.outputs = list(outputs)
        self.style = style or OverlayStyle()
        self.hud = hud
        self.max_frames = max_frames
        self.stats = stats or LatencyStats()
        self.join_timeout = join_timeout
        size = queue_size or (1 if source.live else 2)
        self._queues = [queue.Queue(maxsize=size) for _ in range(3)]
        self._stop = threading.Event()
        self._done = threading.Event()
        self._error: BaseException | None = None
        self._error_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._queue_dropped = 0
        self._drop_lock = threading.Lock()
        self.captured = 0
        self.written = 0
        self._hud_cache: list[str] = []
        self._latest_lock = threading.Lock()
        self._latest: tuple[int, np.ndarray] | None = None
        self._stopped = False
        self.started_at: float | None = None

    # -- public control -----------------------------------------------------------------------
    @property
    def dropped(self) -> int:
        """Frames lost so far: dropped by the live source plus replaced in the live queues."""
        return self.source.dropped + self._queue_dropped

    @property
    def running(self) -> bool:
        """Whether any stage thread is still alive."""
        return any(t.is_alive() for t in self._threads)

    def set_phrase(self, text: str) -> None:
        """Encode ``text`` once (in the caller's thread); used from the next inferred frame.

        Raises:
            ValueError: empty or too long phrase (the previous phrase stays in use).
        """
        self.segmenter.set_phrase(text)
        logger.info("phrase set to %r", self.segmenter.phrase)

    def start(self) -> Pipeline:
        """Start the four stage threads and return ``self``."""
        if self._threads:
            raise RuntimeError("pipeline already started")
        if self.segmenter.phrase is None:
            raise ValueError("set a phrase (Pipeline.set_phrase) before starting the pipeline")
        self.started_at = time.monotonic()
        targets = (self._capture, self._flow, self._inference, self._overlay)
        for name, target in zip(self.STAGE_THREADS, targets):
            t = threading.Thread(target=self._guard, args=(target,), name=name, daemon=True)
            self._threads.append(t)
        for t in self._threads:
            t.start()
        return self

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the stream ended, the pipeline stopped or ``timeout`` passed.

        Returns:
            ``True`` when the pipeline finished (ended or stopped).

        Raises:
            Exception: the first exception raised in a worker thread.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not (self._done.is_set() or self._stop.is_set()):
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            self._done.wait(_POLL if remaining is None else min(_POLL, remaining))
        self._raise_error()
        return self._done.is_set() or self._stop.is_set()

    def run(self, display: WindowDisplay | None = None) -> dict[str, Any]:
        """Run until the source ends, ``q``/Esc, Ctrl-C or a worker error; then stop.

        The window (if any) is shown from this (the main) thread.

        Returns:
            :meth:`summary` (with ``"interrupted": True`` after Ctrl-C).

        Raises:
            Exception: a worker thread's exception.
        """
        if not self._threads:
            self.start()
        interrupted = False
        shown = -1
        try:
            while not (self._done.is_set() or self._stop.is_set()):
                if display is None:
                    self._done.wait(0.1)
                    continue
                latest = self.latest_image()
                if latest is not None and latest[0] != shown:
                    shown = latest[0]
                    display.show(latest[1])
                action = display.poll()
                if latest is None or latest[0] == shown:
                    time.sleep(0.005)
                if action is None:
                    continue
                if action.kind == "quit":
                    break
                try:
                    self.set_phrase(action.phrase)
                    display.message = ""
                except ValueError as exc:
                    display.message = f"rejected: {exc}"
        except KeyboardInterrupt:
            interrupted = True
            logger.info("interrupted; stopping")
        finally:
            if display is not None:
                display.close()
            self.stop()
        summary = self.summary()
        if interrupted:
            summary["interrupted"] = True
        return summary

    def stop(self) -> None:
        """Stop every thread, join them (bounded), close outputs and the source. Idempotent.

        Raises:
            Exception: a worker thread's exception (after everything was shut down).
        """
        if not self._stopped:
            self._stopped = True
            self._stop.set()
            for t in self._threads:
                if t is threading.current_thread():  # stop() called from an output callback
                    continue
                t.join(self.join_timeout)
                if t.is_alive():
                    logger.warning("%s thread did not stop in %.1f s; abandoned", t.name,
                                   self.join_timeout)  # fmt: skip
            overlay_alive = any(t.is_alive() for t in self._threads if t.name == "overlay")
            if not overlay_alive:
                for out in self.outputs:
                    try:
                        out.close()
                    except Exception:
                        logger.exception("closing output %r failed", out)
            if not any(t.is_alive() for t in self._threads if t.name == "capture"):
                self.source.close()
            else:  # the capture thread still sits in read(); closing may unblock it
                threading.Thread(target=self.source.close, daemon=True).start()
        self._raise_error()

    def summary(self) -> dict[str, Any]:
        """Latency percentiles per stage and end-to-end, fps, frames, dropped, reconnects."""
        return self.stats.summary(
            dropped=self.dropped,
            reconnects=self.source.reconnects,
            captured=self.captured,
            written=self.written,
            source=self.source.name,
            phrase=self.segmenter.phrase,
        )

    def latest_image(self) -> tuple[int, np.ndarray] | None:
        """``(frame index, composed image)`` of the newest finished frame, or ``None``."""
        with self._latest_lock:
            return self._latest

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        try:
            self.stop()
        except Exception as err:
            if exc is None:
                raise
            if err is not exc:  # do not hide the block's own exception
                logger.error("worker error while leaving a failing block: %r", err)

    # -- plumbing ------------------------------------------------------------------------------
    def _guard(self, target: Callable[[], None]) -> None:
        try:
            target()
        except BaseException as exc:
            with self._error_lock:
                if self._error is None:
                    self._error = exc
            logger.error("%s stage failed: %r", threading.current_thread().name, exc)
            self._stop.set()

    def _raise_error(self) -> None:
        with self._error_lock:
            err = self._error
        if err is not None:
            raise err

    def _put(self, q: queue.Queue, item: object) -> bool:
        """Blocking put that gives up when the stop event is set."""
        while not self._stop.is_set():
            try:
                q.put(item, timeout=_POLL)
                return True
            except queue.Full:
                continue
        return False

    def _put_newest(self, q: queue.Queue, item: object) -> None:
        """Put without waiting: replace the queued (stale) item if the queue is full."""
        while True:
            try:
                q.put_nowait(item)
                return
            except queue.Full:
                try:
                    q.get_nowait()
                    with self._drop_lock:
                        self._queue_dropped += 1
                except queue.Empty:
                    pass

    def _get(self, q: queue.Queue) -> object | None:
        """Blocking get that returns ``None`` when the stop event is set."""
        while not self._stop.is_set():
            try:
                return q.get(timeout=_POLL)
            except queue.Empty:
                continue
        return None

    # -- the stages ------------------------------------------------------------------------------
    def _capture(self) -> None:
        out = self._queues[0]
        live = self.source.live
        while not self._stop.is_set():
            if self.max_frames is not None and self.captured >= self.max_frames:
                break
            try:
                frame = self.source.read(timeout=0.1)
            except EndOfStream:
                break
            if frame is None:
                continue
            self.captured += 1
            item = _Item(frame, Stamps(capture=frame.timestamp))
            if live:
                self._put_newest(out, item)
            elif not self._put(out, item):
                return
        self._put(out, _END)

    def _stage(
        self, src: queue.Queue, out: queue.Queue, work: Callable[[_Item], None], *, newest: bool
    ) -> None:
        """Run ``work`` on every item from ``src`` and pass it on to ``out`` (then END).

        ``newest``: on a live source, replace a stale item waiting in ``out`` instead of
        queueing behind it.
        """
        while True:
            item = self._get(src)
            if item is None:
                return
            if item is _END:
                self._put(out, _END)
                return
            assert isinstance(item, _Item)
            work(item)
            if newest and self.source.live:
                self._put_newest(out, item)
            elif not self._put(out, item):
                return

    def _flow(self) -> None:
        self._stage(self._queues[0], self._queues[1], self._prepare, newest=True)

    def _inference(self) -> None:
        self._stage(self._queues[1], self._queues[2], self._infer, newest=False)

    def _prepare(self, item: _Item) -> None:
        item.stamps.flow_start = time.monotonic()
        item.prepared = self.segmenter.prepare(item.frame)
        item.stamps.flow_end = time.monotonic()

    def _infer(self, item: _Item) -> None:
        assert item.prepared is not None
        item.stamps.infer_start = time.monotonic()
        item.result = self.segmenter.infer(item.prepared)
        item.prepared = None  # free the network inputs early
        item.stamps.infer_end = time.monotonic()

    def _hud(self) -> list[str]:
        if self.written % 5 == 0 or not self._hud_cache:
            stage_ms = {}
            for stage in ("capture", "flow", "inference", "overlay", "end_to_end"):
                p = self.stats.percentiles(stage)
                stage_ms[stage] = (p["p50"], p["p95"])
            self._hud_cache = hud_lines(
                fps=self.stats.fps(),
                stage_ms=stage_ms,
                dropped=self.dropped,
                phrase=self.segmenter.phrase,
            )
        return self._hud_cache

    def _overlay(self) -> None:
        src = self._queues[2]
        while True:
            item = self._get(src)
            if item is None:
                return
            if item is _END:
                self._done.set()
                return
            assert isinstance(item, _Item) and item.result is not None
            image = draw_mask(item.frame.image, item.result.mask, self.style)
            if self.hud:
                draw_hud_inplace(image, self._hud())
            stamps = item.stamps
            drawn = time.monotonic()  # the outputs see the latency up to now
            result = replace(
                item.result,
                timings={
                    **item.result.timings,
                    **stamps.durations_ms(),
                    "overlay": (drawn - stamps.infer_end) * 1e3,
                    "end_to_end": (drawn - stamps.capture) * 1e3,
                },
            )
            for out in self.outputs:
                out.write(image, result, item.frame)
            stamps.overlay_end = time.monotonic()
            self.stats.record(stamps)
            self.written += 1
            with self._latest_lock:
                self._latest = (item.frame.index, image)
