"""The four per-frame stages (capture, flow, inference, overlay) and the one clock.

Every stage time anywhere in the project (stats JSON, HUD, the app's plot and tables, the
benchmarks, the evaluator) comes from the monotonic :class:`~engine.latency.Stamps` that
:class:`Stages` sets. Nothing else stamps stage times. :class:`engine.pipeline.Pipeline` runs the
stages over a source, threaded or in sequence; the evaluator and the page call them directly.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from engine.latency import WAIT_STAGES, WORK_STAGES, LatencyStats, Stamps
from engine.outputs import Output
from engine.overlay import OverlayStyle, draw_mask, hud_lines, place_hud, result_lines
from engine.session import PreparedFrame, Result, Segmenter
from engine.sources import Frame

__all__ = ["Stages", "Work"]

_HUD_EVERY = 5  # frames between HUD text refreshes


@dataclass
class Work:
    """One frame on its way through the stages (filled in stage by stage)."""

    frame: Frame
    stamps: Stamps
    prepared: PreparedFrame | None = None
    result: Result | None = None


class Stages:
    """The four per-frame stages with the one clock.

    Args:
        segmenter: Runs the flow (``prepare``) and inference (``infer``) stages.
        outputs: Sinks the overlay stage writes every finished frame to.
        style: How the mask is drawn.
        hud: Draw fps, per-stage p50/p95, dropped frames and the phrase on the image.
        stats: Where stage times go (a new :class:`LatencyStats` by default).
        dropped: Returns the frames dropped so far (for the HUD).
        name: The stream's name, shown on the HUD's first line when several streams run
            (``None``: no name line).
    """

    def __init__(
        self,
        segmenter: Segmenter,
        *,
        outputs: Sequence[Output] = (),
        style: OverlayStyle | None = None,
        hud: bool = True,
        stats: LatencyStats | None = None,
        dropped: Callable[[], int] | None = None,
        name: str | None = None,
    ) -> None:
        self.segmenter = segmenter
        self.name = name
        self.outputs = list(outputs)
        self.style = style or OverlayStyle()
        self.hud = hud
        self.stats = stats or LatencyStats()
        self._dropped = dropped or (lambda: 0)
        self.written = 0
        self._hud_cache: list[str] = []
        self._latest_lock = threading.Lock()
        self._latest: tuple[int, np.ndarray, Result] | None = None

    # -- the stages, in order ----------------------------------------------------------------
    def capture(self, frame: Frame, read_start: float | None = None) -> Work:
        """A captured frame enters: its clock starts at the frame's capture timestamp.

        Args:
            frame: The frame the source returned.
            read_start: When the capture stage began to read it (its work time is the read).
        """
        return Work(frame, Stamps(capture=frame.timestamp, read_start=read_start))

    def flow(self, work: Work) -> None:
        """Flow stage: optical flow against the previous frame and the network inputs."""
        work.stamps.flow_start = time.monotonic()
        work.prepared = self.segmenter.prepare(work.frame)
        work.stamps.flow_end = time.monotonic()

    def inference(self, work: Work) -> None:
        """Inference stage: the frame network and the post-processing."""
        if work.prepared is None:
            raise RuntimeError("inference stage before the flow stage")
        work.stamps.infer_start = time.monotonic()
        work.result = self.segmenter.infer(work.prepared)
        work.prepared = None  # free the network inputs early
        work.stamps.infer_end = time.monotonic()

    def overlay(self, work: Work) -> tuple[np.ndarray, Result]:
        """Overlay stage: draw, stamp, record, then hand the frame to every sink.

        Returns:
            The composed (H, W, 3) uint8 BGR image and the result with its stage timings.
        """
        if work.result is None:
            raise RuntimeError("overlay stage before the inference stage")
        work.stamps.overlay_start = time.monotonic()
        image = draw_mask(work.frame.image, work.result.shown_mask, self.style)
        if self.hud:
            image = place_hud(image, self.hud_text(work.result))
        work.stamps.overlay_end = time.monotonic()
        result = replace(work.result, timings=work.stamps.durations_ms())
        self.stats.record(work.stamps)
        for out in self.outputs:
            out.write(image, result, work.frame)
        self.written += 1
        with self._latest_lock:
            self._latest = (work.frame.index, image, result)
        return image, result

    def segment(self, frame: Frame) -> Result:
        """The flow and inference stages on one frame, recorded, with no overlay or sinks.

        The evaluator's path: its timings hold ``flow`` and ``inference`` and their waits.
        """
        work = self.capture(frame)
        self.flow(work)
        self.inference(work)
        self.stats.record(work.stamps)
        assert work.result is not None
        return replace(work.result, timings=work.stamps.durations_ms())

    def process(self, frame: Frame, read_start: float | None = None) -> tuple[np.ndarray, Result]:
        """All four stages on one frame in the caller's thread (the sequential path)."""
        work = self.capture(frame, read_start)
        self.flow(work)
        self.inference(work)
        return self.overlay(work)

    # -- what the stages show ------------------------------------------------------------------
    def hud_text(self, result: Result) -> list[str]:
        """The HUD lines for ``result``.

        The timing lines are refreshed every few frames: percentiles cost more than drawing.
        """
        if self.written % _HUD_EVERY == 0 or not self._hud_cache:
            self._hud_cache = hud_lines(
                fps=self.stats.fps(),
                stage_ms={
                    s: (
                        self.stats.percentiles(s)["p50"],
                        self.stats.percentiles(f"{s}_wait")["p50"] if s in WAIT_STAGES else 0.0,
                    )
                    for s in WORK_STAGES
                },
                dropped=self._dropped(),
                bottleneck=self.stats.bottleneck(),
            )
        named = [f"stream {self.name}"] if self.name else []
        return [*named, *self._hud_cache, *result_lines(result)]

    def latest(self) -> tuple[int, np.ndarray, Result] | None:
        """``(frame index, composed image, result)`` of the newest finished frame, or ``None``."""
        with self._latest_lock:
            return self._latest
