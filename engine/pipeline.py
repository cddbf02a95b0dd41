"""The stream pipeline: capture -> optical flow -> inference -> overlay, threaded or sequential.

:class:`~engine.stages.Stages` holds the four per-frame stages and the one clock.
:class:`Pipeline` runs them over a source in one of two modes:

* **threaded** (default): one thread per stage, joined by bounded queues. One stop event ends
  everything; every queue ``put``/``get`` uses a short timeout and re-checks the event, so no
  thread can block forever on a queue. With a live source the capture and flow stages put
  "newest wins" into single-slot queues: a frame still waiting when a newer one is ready is
  replaced (and counted as dropped), so no stage works on a stale frame and latency stays
  bounded by the stage times rather than by queue depth. A finite source ends the pipeline
  after its last frame has been written (nothing is dropped).
* **sequential**: the same stages one after another in one thread (the caller's for
  :meth:`Pipeline.run`), for clip processing and as the benchmarks' baseline.

An exception in any stage stops the pipeline and is re-raised in the caller by
:meth:`Pipeline.wait` / :meth:`Pipeline.run` / :meth:`Pipeline.stop`.

Example::

    with Pipeline(open_source("demo"), segmenter, outputs=[H264FileOutput("out.mp4")]) as p:
        p.set_phrase("the red circle")
        summary = p.run()                       # until the source ends or Ctrl-C
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from engine.latency import LatencyStats
from engine.outputs import Output
from engine.overlay import OverlayStyle
from engine.session import Segmenter
from engine.sources import EndOfStream, Frame, Source
from engine.stages import Stages, Work
from engine.window import WindowDisplay

__all__ = ["MODES", "Pipeline"]

logger = logging.getLogger(__name__)

#: How a :class:`Pipeline` runs its stages.
MODES = ("threaded", "sequential")
_END = object()  # end-of-stream marker passed down the queues
_POLL = 0.05  # seconds: every blocking queue call wakes up this often to check the stop event


class Pipeline:
    """Capture, flow, inference and overlay over a source, threaded or sequential.

    Args:
        source: Where frames come from; closed by :meth:`stop`.
        segmenter: The session whose ``prepare``/``infer`` run in the flow/inference stages.
        outputs: Sinks written by the overlay stage (video file, mask PNGs, callbacks).
        style: How the mask is drawn.
        hud: Draw fps, per-stage p50/p95, dropped frames and the phrase on the video.
        max_frames: Stop after this many captured frames (``None``: until the source ends).
        queue_size: Capacity of each inter-stage queue in threaded mode (default 1 for live
            sources, which keeps latency low, and 2 for files).
        stats: Where latencies go (a new :class:`LatencyStats` by default).
        join_timeout: Seconds :meth:`stop` waits for each thread; a thread stuck in a source's
            blocking read is abandoned (daemon) after that, with a warning.
        mode: ``"threaded"`` (one thread per stage) or ``"sequential"`` (one thread).
        name: The stream's name (HUD, summary, thread names) when several run side by side
            (:class:`engine.streams.StreamGroup`); ``None`` for a single stream.
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
        mode: str = "threaded",
        name: str | None = None,
    ) -> None:
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"max_frames must be >= 1 or None, got {max_frames}")
        if queue_size is not None and queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
        self.source = source
        self.segmenter = segmenter
        self.name = name
        self.mode = mode
        self.max_frames = max_frames
        self.join_timeout = join_timeout
        self.stages = Stages(
            segmenter,
            outputs=outputs,
            style=style,
            hud=hud,
            stats=stats,
            dropped=lambda: self.dropped,
            name=name,
        )
        size = queue_size or (1 if source.live else 2)
        self._queues: list[queue.Queue] = [queue.Queue(maxsize=size) for _ in range(3)]
        self._stop = threading.Event()
        self._done = threading.Event()
        self._error: BaseException | None = None
        self._error_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._queue_dropped = 0
        self._drop_lock = threading.Lock()
        self.captured = 0
        self._stopped = False

    # -- public control -----------------------------------------------------------------------
    @property
    def stats(self) -> LatencyStats:
        """The stage statistics."""
        return self.stages.stats

    @property
    def outputs(self) -> list[Output]:
        """The sinks (append before :meth:`start`)."""
        return self.stages.outputs

    @property
    def written(self) -> int:
        """Frames through the overlay stage so far."""
        return self.stages.written

    @property
    def dropped(self) -> int:
        """Frames lost so far: dropped by the live source plus replaced in the live queues."""
        return self.source.dropped + self._queue_dropped

    @property
    def finished(self) -> bool:
        """Whether the stream ended or the pipeline was stopped (or failed)."""
        return self._done.is_set() or self._stop.is_set()

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
        """Start the stage threads (one in sequential mode) and return ``self``."""
        self._check_startable()
        if self.mode == "sequential":
            targets: tuple[tuple[str, Callable[[], None]], ...] = (("stages", self._sequential),)
        else:
            targets = tuple(
                zip(self.STAGE_THREADS, (self._capture, self._flow, self._inference, self._overlay))
            )
        for stage, target in targets:
            name = f"{self.name}:{stage}" if self.name else stage
            t = threading.Thread(target=self._guard, args=(target,), name=name, daemon=True)
            self._threads.append(t)
        for t in self._threads:
            t.start()
        return self

    def _check_startable(self) -> None:
        if self._threads or self._done.is_set():
            raise RuntimeError("pipeline already started")
        if self.segmenter.phrase is None:
            raise ValueError("set a phrase (Pipeline.set_phrase) before starting the pipeline")

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the stream ended, the pipeline stopped or ``timeout`` passed.

        Returns:
            ``True`` when the pipeline finished (ended or stopped).

        Raises:
            Exception: the first exception raised in a stage.
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
        """Run until the source ends, ``q``/Esc, Ctrl-C or a stage error; then stop.

        In sequential mode the stages run in this thread. The window (if any) is shown from
        this (the main) thread.

        Returns:
            :meth:`summary` (with ``"interrupted": True`` after Ctrl-C).

        Raises:
            Exception: a stage's exception.
        """
        interrupted = False
        try:
            if self.mode == "sequential" and not self._threads:
                self._check_startable()
                self._guard(lambda: self._sequential(display))
            else:
                if not self._threads:
                    self.start()
                self._show_until_done(display)
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

        The session's instance evidence is closed too (its detector thread, if it has one).

        Raises:
            Exception: a stage's exception (after everything was shut down).
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
            writer_alive = any(t.is_alive() for t in self._threads if _stage(t) != "capture")
            if not writer_alive:
                for out in self.outputs:
                    try:
                        out.close()
                    except Exception as exc:
                        logger.exception("closing output %r failed", out)
                        self._set_error(exc)
            if not writer_alive and self.segmenter.instances is not None:
                self.segmenter.instances.close()  # its detector thread, if it has one
            reader_alive = any(
                t.is_alive() for t in self._threads if _stage(t) in ("capture", "stages")
            )
            if not reader_alive:
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
            mode=self.mode,
            **({"stream": self.name} if self.name else {}),
            **(
                {"detector": self.segmenter.instances.report()}
                if self.segmenter.instances is not None
                else {}
            ),  # fmt: skip
        )

    def latest_image(self) -> tuple[int, np.ndarray] | None:
        """``(frame index, composed image)`` of the newest finished frame, or ``None``."""
        latest = self.stages.latest()
        return None if latest is None else (latest[0], latest[1])

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        try:
            self.stop()
        except Exception as err:
            if exc is None:
                raise
            if err is not exc:  # do not hide the block's own exception
                logger.error("stage error while leaving a failing block: %r", err)

    # -- plumbing ------------------------------------------------------------------------------
    def _guard(self, target: Callable[[], None]) -> None:
        try:
            target()
        except BaseException as exc:
            if (
                isinstance(exc, KeyboardInterrupt)
                and threading.current_thread() is threading.main_thread()
            ):
                self._stop.set()
                raise
            self._set_error(exc)
            logger.error("%s stage failed: %r", threading.current_thread().name, exc)
            self._stop.set()

    def _set_error(self, exc: BaseException) -> None:
        with self._error_lock:
            if self._error is None:
                self._error = exc

    def _raise_error(self) -> None:
        with self._error_lock:
            err = self._error
        if err is not None:
            raise err

    def _show_until_done(self, display: WindowDisplay | None) -> None:
        shown: int | None = -1
        while not (self._done.is_set() or self._stop.is_set()):
            if display is None:
                self._done.wait(0.1)
                continue
            shown = self.show_once(display, shown)
            if shown is None:
                return

    def show_once(self, display: WindowDisplay, shown: int | None) -> int | None:
        """Show the newest frame (if not shown yet) and handle one key.

        Returns:
            The index of the frame on screen, or ``None`` when the user asked to quit.
        """
        latest = self.latest_image()
        fresh = latest is not None and latest[0] != shown
        if fresh:
            shown = latest[0]
            display.show(latest[1])
        action = display.poll()
        if not fresh:
            time.sleep(0.005)
        if action is None:
            return shown
        if action.kind == "quit":
            return None
        try:
            self.set_phrase(action.phrase)
            display.message = ""
        except ValueError as exc:
            display.message = f"rejected: {exc}"
        return shown

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

    def _read(self) -> tuple[Frame | None, float]:
        """``(next frame or None on a live timeout, when the read began)``.

        Raises:
            EndOfStream: the source ended or ``max_frames`` were read.
        """
        if self.max_frames is not None and self.captured >= self.max_frames:
            raise EndOfStream(self.source.name)
        started = time.monotonic()
        frame = self.source.read(timeout=0.1)
        if frame is not None:
            self.captured += 1
        return frame, started

    # -- sequential mode -------------------------------------------------------------------------
    def _sequential(self, display: WindowDisplay | None = None) -> None:
        shown: int | None = -1
        while not self._stop.is_set():
            try:
                frame, started = self._read()
            except EndOfStream:
                break
            if frame is not None:
                self.stages.process(frame, started)
            if display is not None:
                shown = self.show_once(display, shown)
                if shown is None:
                    break
        self._done.set()

    # -- threaded mode ---------------------------------------------------------------------------
    def _capture(self) -> None:
        out = self._queues[0]
        live = self.source.live
        while not self._stop.is_set():
            try:
                frame, started = self._read()
            except EndOfStream:
                break
            if frame is None:
                continue
            work = self.stages.capture(frame, started)
            if live:
                self._put_newest(out, work)
            elif not self._put(out, work):
                return
        self._put(out, _END)

    def _stage(
        self, src: queue.Queue, out: queue.Queue, run: Callable[[Work], None], *, newest: bool
    ) -> None:
        """Run ``run`` on every item from ``src`` and pass it on to ``out`` (then END).

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
            assert isinstance(item, Work)
            run(item)
            if newest and self.source.live:
                self._put_newest(out, item)
            elif not self._put(out, item):
                return

    def _flow(self) -> None:
        self._stage(self._queues[0], self._queues[1], self.stages.flow, newest=True)

    def _inference(self) -> None:
        self._stage(self._queues[1], self._queues[2], self.stages.inference, newest=False)

    def _overlay(self) -> None:
        src = self._queues[2]
        while True:
            item = self._get(src)
            if item is None:
                return
            if item is _END:
                self._done.set()
                return
            assert isinstance(item, Work)
            self.stages.overlay(item)


def _stage(thread: threading.Thread) -> str:
    """The stage a pipeline thread runs (its name without the stream prefix)."""
    return thread.name.rsplit(":", 1)[-1]
