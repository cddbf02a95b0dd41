"""Per-frame latency stamps, running per-stage statistics and the report helpers (numpy only).

Every frame that goes through :mod:`engine.pipeline` carries a :class:`Stamps` record of
monotonic times (``time.monotonic()``, seconds) that only the pipeline's stages set: when the
frame was captured, when the flow stage started and finished, when inference finished and when
its overlay was drawn. Stage durations derived from the stamps go into a :class:`LatencyStats`,
which keeps a bounded window of recent values per stage (constant memory on an endless stream)
and reports p50/p95/p99.

The project's one percentile summary (:func:`percentiles`) and one JSON-safe converter
(:func:`json_safe`) live here too.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "KEYS",
    "STAGES",
    "WAIT_STAGES",
    "WORK_STAGES",
    "LatencyStats",
    "Stamps",
    "bottleneck_line",
    "format_table",
    "json_safe",
    "percentiles",
]

#: Stage names reported by the pipeline, in pipeline order. Every stage has a *work* time (the
#: stage's own code) and, from ``flow`` on, a *wait* before it (queued behind the stage):
#: ``capture``: the capture stage's read of the next frame (decoding a file; waiting for a
#: camera's next frame); ``flow``: grey + optical flow + network inputs; ``inference``: frame
#: network + post-processing; ``overlay``: drawing the mask and the HUD; ``end_to_end``:
#: capture time -> overlay drawn (the frame is ready to show and to write), waits included.
STAGES = ("capture", "flow", "inference", "overlay", "end_to_end")
#: The stages with a work time (``end_to_end`` is their sum plus the waits).
WORK_STAGES = STAGES[:-1]
#: The stages that can wait in a queue before they run.
WAIT_STAGES = ("flow", "inference", "overlay")
#: Every duration a :class:`Stamps` gives: the stage names and ``<stage>_wait``.
KEYS = (*STAGES, *(f"{s}_wait" for s in WAIT_STAGES))


@dataclass
class Stamps:
    """Monotonic timestamps (seconds) of one frame's trip through the pipeline.

    Mutable on purpose: each stage fills in its own fields. Unset stamps are ``None``.
    ``capture`` is when the frame became available (decoded); ``read_start`` when the capture
    stage began to read it.
    """

    capture: float
    read_start: float | None = None
    flow_start: float | None = None
    flow_end: float | None = None
    infer_start: float | None = None
    infer_end: float | None = None
    overlay_start: float | None = None
    overlay_end: float | None = None

    def durations_ms(self) -> dict[str, float]:
        """Work and wait times in milliseconds (see :data:`KEYS`) for the stamps that are set."""
        out: dict[str, float] = {}

        def span(key: str, start: float | None, end: float | None) -> None:
            if start is not None and end is not None:
                out[key] = max(0.0, end - start) * 1e3

        span("capture", self.read_start, self.capture)
        span("flow_wait", self.capture, self.flow_start)
        span("flow", self.flow_start, self.flow_end)
        span("inference_wait", self.flow_end, self.infer_start)
        span("inference", self.infer_start, self.infer_end)
        span("overlay_wait", self.infer_end, self.overlay_start)
        span("overlay", self.overlay_start, self.overlay_end)
        span("end_to_end", self.capture, self.overlay_end)
        return out


def percentiles(values: Iterable[float]) -> dict[str, float]:
    """``{"p50", "p95", "p99", "mean"}`` of ``values`` (all NaN when there are none)."""
    arr = np.fromiter(values, dtype=np.float64)
    if arr.size == 0:
        return {"p50": math.nan, "p95": math.nan, "p99": math.nan, "mean": math.nan}
    p50, p95, p99 = np.percentile(arr, [50, 95, 99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99), "mean": float(arr.mean())}


class LatencyStats:
    """Thread-safe running latency statistics over a bounded window.

    Args:
        window: How many recent values per stage are kept for percentiles (memory is
            ``O(window * stages)`` however long the stream runs).
        fps_window: How many recent completion times are used for the live fps.
    """

    def __init__(self, *, window: int = 2048, fps_window: int = 60) -> None:
        if window < 1 or fps_window < 2:
            raise ValueError("window must be >= 1 and fps_window >= 2")
        self._lock = threading.Lock()
        self._values: dict[str, deque[float]] = {k: deque(maxlen=window) for k in KEYS}
        self._done: deque[float] = deque(maxlen=fps_window)
        self.frames = 0
        self.first_done: float | None = None
        self.last_done: float | None = None

    def record(self, stamps: Stamps) -> None:
        """Add one finished frame's stage durations."""
        durations = stamps.durations_ms()
        done = stamps.overlay_end if stamps.overlay_end is not None else time.monotonic()
        with self._lock:
            for stage, ms in durations.items():
                self._values[stage].append(ms)
            self._done.append(done)
            self.frames += 1
            if self.first_done is None:
                self.first_done = done
            self.last_done = done

    def fps(self) -> float:
        """Recent output frame rate (frames per second over the last ``fps_window`` frames)."""
        with self._lock:
            if len(self._done) < 2:
                return 0.0
            span = self._done[-1] - self._done[0]
            return (len(self._done) - 1) / span if span > 0 else 0.0

    def percentiles(self, stage: str) -> dict[str, float]:
        """``{"p50", "p95", "p99", "mean"}`` in ms for a key of :data:`KEYS` (NaN when none)."""
        if stage not in self._values:
            raise ValueError(f"unknown stage {stage!r}; valid: {', '.join(KEYS)}")
        with self._lock:
            values = list(self._values[stage])
        return percentiles(values)

    def values(self, stage: str) -> list[float]:
        """The recent durations (ms) of a key of :data:`KEYS`, oldest first (at most ``window``)."""
        if stage not in self._values:
            raise ValueError(f"unknown stage {stage!r}; valid: {', '.join(KEYS)}")
        with self._lock:
            return list(self._values[stage])

    def bottleneck(self) -> dict[str, Any] | None:
        """The stage with the longest mean work time: ``{"stage", "work_ms", "max_fps"}``.

        One frame per that many ms is the most the stream can sustain (the mean, not the
        median: with keyframes most frames skip the network and a few pay for it); ``None``
        before any frame.
        """
        work = {s: self.percentiles(s)["mean"] for s in WORK_STAGES}
        work = {s: v for s, v in work.items() if v == v}  # drop NaN
        if not work:
            return None
        stage = max(work, key=work.__getitem__)
        ms = work[stage]
        return {"stage": stage, "work_ms": ms, "max_fps": 1e3 / ms if ms > 0 else math.inf}

    def summary(self, **extra: Any) -> dict[str, Any]:
        """A JSON-able summary plus ``extra``.

        ``stages_ms``: work-time percentiles per stage (``end_to_end``: capture -> overlay,
        waits included); ``wait_ms``: queue-wait percentiles before ``flow``, ``inference`` and
        ``overlay``; ``bottleneck`` (:meth:`bottleneck`); ``frames``; ``fps``.
        """
        with self._lock:
            frames = self.frames
            span = (
                self.last_done - self.first_done
                if self.first_done is not None and self.last_done is not None
                else 0.0
            )
        out: dict[str, Any] = {
            "frames": frames,
            "fps": (frames - 1) / span if frames > 1 and span > 0 else 0.0,
            "stages_ms": {s: self.percentiles(s) for s in STAGES},
            "wait_ms": {s: self.percentiles(f"{s}_wait") for s in WAIT_STAGES},
            "bottleneck": self.bottleneck(),
        }
        out.update(extra)
        return out


def json_safe(obj: Any) -> Any:
    """A JSON-writable copy of ``obj`` (recursive).

    Non-finite floats become ``None``; numpy scalars and arrays (and anything else with
    ``.tolist()``, such as a torch tensor) plain values; tuples lists; mapping keys strings.
    """
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        return json_safe(obj.item())
    if hasattr(obj, "tolist") and not isinstance(obj, str | bytes):
        return json_safe(obj.tolist())
    return obj


def bottleneck_line(bottleneck: dict[str, Any] | None) -> str:
    """``"bottleneck: inference 23.1 ms/frame -> at most 43 fps"`` (or that none was measured)."""
    if not bottleneck:
        return "bottleneck: no frame measured"
    line = (
        f"bottleneck: {bottleneck['stage']} {bottleneck['work_ms']:.1f} ms/frame -> at most "
        f"{bottleneck['max_fps']:.0f} fps"
    )
    if bottleneck["stage"] == "capture":  # a read waits for the camera, stream or --pace
        line += " (reading frames: the source's own rate, or decoding)"
    return line


def format_table(summary: dict[str, Any]) -> str:
    """A plain-text table of a :meth:`LatencyStats.summary`.

    Work and wait per stage, then the frame counts and the bottleneck line.
    """

    def cell(p: dict[str, Any] | None, key: str) -> str:
        v = None if p is None else p.get(key)
        return f"{v:>9.2f}" if v is not None and v == v else f"{'-':>9}"

    lines = [
        f"{'stage':<12}{'work p50':>9}{'p95':>9}{'p99':>9}{'wait p50':>9}{'p95':>9}   (ms)",
    ]
    waits = summary.get("wait_ms", {})
    for stage, p in summary["stages_ms"].items():
        w = waits.get(stage)
        lines.append(
            f"{stage:<12}{cell(p, 'p50')}{cell(p, 'p95')}{cell(p, 'p99')}"
            f"{cell(w, 'p50')}{cell(w, 'p95')}"
        )
    tail = [f"frames {summary['frames']}", f"fps {summary['fps']:.2f}"]
    for key in ("dropped", "reconnects"):
        if key in summary:
            tail.append(f"{key} {summary[key]}")
    lines.append("  ".join(tail))
    det = summary.get("detector")
    if det and det.get("runs"):
        where = "in its own thread" if det.get("background") else "in the inference stage"
        lines.append(f"detector: {det['runs']} runs, p50 {det['p50_ms']:.1f} ms, p95 "
                     f"{det['p95_ms']:.1f} ms, every {det['every']}th frame, {where}")  # fmt: skip
    lines.append(bottleneck_line(summary.get("bottleneck")))
    return "\n".join(lines)
