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

__all__ = ["STAGES", "LatencyStats", "Stamps", "format_table", "json_safe", "percentiles"]

#: Stage names reported by the pipeline, in pipeline order.
#: ``capture``: capture time -> flow stage start (waiting for the pipeline);
#: ``flow``: grey + optical flow + network input preparation;
#: ``inference``: frame network + mask post-processing (includes waiting for the stage);
#: ``overlay``: drawing the mask and the HUD (includes waiting for the stage);
#: ``end_to_end``: capture time -> overlay drawn (the frame is ready to show and to write).
STAGES = ("capture", "flow", "inference", "overlay", "end_to_end")


@dataclass
class Stamps:
    """Monotonic timestamps (seconds) of one frame's trip through the pipeline.

    Mutable on purpose: each stage fills in its own fields. Unset stamps are ``None``.
    """

    capture: float
    flow_start: float | None = None
    flow_end: float | None = None
    infer_end: float | None = None
    overlay_end: float | None = None

    def durations_ms(self) -> dict[str, float]:
        """Stage durations in milliseconds for every stage whose stamps are set.

        ``flow`` and ``inference`` count from when the stage picked the frame up; ``inference``
        and ``overlay`` count from the end of the previous stage (so queue waits are included
        and the stages add up to ``end_to_end``).
        """
        out: dict[str, float] = {}
        if self.flow_start is not None:
            out["capture"] = (self.flow_start - self.capture) * 1e3
        if self.flow_start is not None and self.flow_end is not None:
            out["flow"] = (self.flow_end - self.flow_start) * 1e3
        if self.flow_end is not None and self.infer_end is not None:
            out["inference"] = (self.infer_end - self.flow_end) * 1e3
        if self.infer_end is not None and self.overlay_end is not None:
            out["overlay"] = (self.overlay_end - self.infer_end) * 1e3
        if self.overlay_end is not None:
            out["end_to_end"] = (self.overlay_end - self.capture) * 1e3
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
        self._values: dict[str, deque[float]] = {s: deque(maxlen=window) for s in STAGES}
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
        """``{"p50", "p95", "p99", "mean"}`` in ms for ``stage`` (NaN when nothing recorded)."""
        if stage not in self._values:
            raise ValueError(f"unknown stage {stage!r}; valid: {', '.join(STAGES)}")
        with self._lock:
            values = list(self._values[stage])
        return percentiles(values)

    def values(self, stage: str) -> list[float]:
        """The recent durations (ms) of ``stage``, oldest first (at most ``window``)."""
        if stage not in self._values:
            raise ValueError(f"unknown stage {stage!r}; valid: {', '.join(STAGES)}")
        with self._lock:
            return list(self._values[stage])

    def summary(self, **extra: Any) -> dict[str, Any]:
        """A JSON-able summary: per-stage percentiles, frames, overall fps, plus ``extra``."""
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


def format_table(summary: dict[str, Any]) -> str:
    """A plain-text table of a :meth:`LatencyStats.summary` (one row per stage)."""
    lines = [f"{'stage':<12}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}{'mean ms':>10}"]
    for stage, p in summary["stages_ms"].items():
        cells = "".join(
            f"{p[k]:>10.2f}" if p[k] is not None and p[k] == p[k] else f"{'-':>10}"
            for k in ("p50", "p95", "p99", "mean")
        )
        lines.append(f"{stage:<12}{cells}")
    tail = [f"frames {summary['frames']}", f"fps {summary['fps']:.2f}"]
    for key in ("dropped", "reconnects"):
        if key in summary:
            tail.append(f"{key} {summary[key]}")
    lines.append("  ".join(tail))
    return "\n".join(lines)
