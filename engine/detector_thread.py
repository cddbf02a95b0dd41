"""The instance detector in its own thread: one frame asked at a time, the last answer kept.

:class:`~engine.instances.InstanceEvidence` runs the detector here in a stream, so that a frame
never waits for it (see that module's text); :func:`one_scale_a_round` is what the thread runs
of a multi-scale detector, :func:`timed` how each run's cost reaches the stream's report.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable

import numpy as np

from engine.detector import Detections, Detector

__all__ = ["DetectorThread", "one_scale_a_round", "timed"]


class DetectorThread:
    """One detector in its own thread: one frame asked at a time, the last answer kept.

    It holds no reference to its :class:`~engine.instances.InstanceEvidence`, so dropping that
    stops the thread.
    """

    def __init__(self, detect: Callable[[np.ndarray], Detections]) -> None:
        self.detector = detect
        self._cv = threading.Condition()
        self._job: tuple[np.ndarray, int, int] | None = None
        self._answer: tuple[int, int, Detections] | BaseException | None = None
        self._busy = False
        self._closed = False
        self._generation = 0
        self._thread = threading.Thread(target=self._run, name="instances", daemon=True)
        self._thread.start()

    def ask(self, frame: np.ndarray, seq: int) -> bool:
        """Ask for ``frame``'s detections; ``False`` (nothing asked) while busy."""
        with self._cv:
            if self._closed or self._busy or self._job is not None or self._answer is not None:
                return False  # one question at a time, and the last answer taken first
            self._job = (frame.copy(), seq, self._generation)
            self._cv.notify()
            return True

    def take(self) -> tuple[int, Detections] | None:
        """``(the frame number it was asked on, detections)`` once, or ``None``.

        Raises:
            Exception: what the detector raised.
        """
        with self._cv:
            answer, self._answer = self._answer, None
        if isinstance(answer, BaseException):
            raise answer
        if answer is None or answer[1] != self._generation:
            return None
        return answer[0], answer[2]

    def forget(self) -> None:
        """Drop the question and answer in flight (their frames are from before a reset)."""
        with self._cv:
            self._generation += 1
            self._job = None
            if not isinstance(self._answer, BaseException):  # a failure is still reported
                self._answer = None

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the thread; a detection in progress finishes first.

        ONNX Runtime must not be inside a run when the interpreter exits.
        """
        with self._cv:
            self._closed = True
            self._cv.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            with self._cv:
                while self._job is None and not self._closed:
                    self._cv.wait()
                if self._closed:
                    return
                (frame, seq, generation), self._job = self._job, None
                self._busy = True
            try:
                answer: tuple[int, int, Detections] | BaseException = (
                    seq,
                    generation,
                    self.detector(frame),
                )
            except Exception as exc:  # re-raised in the stream by take()
                answer = exc
            with self._cv:
                self._busy = False
                if isinstance(self._answer, BaseException):
                    continue  # a failure not yet reported stays: nothing may hide it
                if generation == self._generation or isinstance(answer, BaseException):
                    self._answer = answer


def one_scale_a_round(detector: Callable[[np.ndarray], Detections]) -> Callable:
    """The background thread's detector: a multi-scale :class:`Detector`'s passes in turn.

    One pass a round; any other callable is returned as it is.

    A box found at one scale only (a far walker at 640, a close car at 416) is missed by the
    next round and held (:data:`~engine.instances.HOLD_ROUNDS` >= 2 rounds) until its scale
    comes round again, so the stream keeps the union of the scales at about half the cost of
    running both each round.
    A frame that waits for its detections (the first) runs them all.
    """
    sizes = detector.sizes if isinstance(detector, Detector) else ()
    if len(sizes) < 2:
        return detector
    turn = itertools.cycle([(size,) for size in sizes])

    def run(frame: np.ndarray) -> Detections:  # only ever called from the detector thread
        return detector(frame, next(turn))

    return run


def timed(detector: Callable[[np.ndarray], Detections],
           times: deque[float]) -> Callable[[np.ndarray], Detections]:  # fmt: skip
    """``detector`` as a function that also appends each run's milliseconds to ``times``."""

    def run(frame: np.ndarray) -> Detections:
        t0 = time.perf_counter()
        dets = detector(frame)
        times.append(1000.0 * (time.perf_counter() - t0))
        return dets

    return run
