"""Instance evidence in the stream: which detected instance the phrase means, frame by frame.

:class:`InstanceEvidence` runs the COCO-80 :class:`~engine.detector.Detector` on every
``every``-th frame and carries its boxes between with the optical flow the session already
computes (each box moves by the median flow inside it). Every frame it scores the instances
against the phrase's cues (:mod:`engine.grounding`) and chooses the referent(s).

:func:`fuse` then lets the chosen instance decide *where* and HINet *which pixels*: HINet's
probabilities are kept inside the chosen boxes and damped outside; where HINet marks almost
nothing of a confidently detected instance, the box's centre part stands in. A phrase whose
head noun names no COCO class ("the tree"), or a frame without a confident instance of it,
leaves HINet's mask as it is. (The next step, training HINet with the referent map as an
input beside the prior, is the real-scenes issue's third point: not done yet.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engine.detector import Detections, Detector
from engine.grounding import (
    Cues,
    InstanceScore,
    choose,
    parse_phrase,
    referent_map,
    score_instances,
)

__all__ = ["InstanceEvidence", "InstanceView", "fuse"]

#: The chosen instance's class probability below which it does not steer the mask (NanoDet's
#: own demo draws boxes from 0.35; set a priori, not tuned on any benchmark).
MIN_CONFIDENCE = 0.4
#: Outside the chosen boxes HINet's probabilities are multiplied by this.
OUTSIDE = 0.15


@dataclass(frozen=True)
class InstanceView:
    """The instances of one frame as the phrase sees them.

    Attributes:
        detections: The frame's instances (detected now, or carried by the flow).
        scores: Every instance the phrase's class allows, best first.
        chosen: The instances the phrase means (one, or several for a plural).
        detected: Whether the detector ran on this frame.
        cues: The phrase's cues.
    """

    detections: Detections
    scores: list[InstanceScore]
    chosen: list[InstanceScore]
    detected: bool
    cues: Cues = field(repr=False)

    @property
    def confident(self) -> bool:
        """Whether the chosen instance is sure enough to steer the mask."""
        return bool(self.chosen) and self.confidence >= MIN_CONFIDENCE

    @property
    def confidence(self) -> float:
        """The chosen instance's probability of the class the phrase names."""
        if not self.chosen:
            return 0.0
        i = self.chosen[0].index
        return float((self.detections.probs[i] * self.cues.classes).max())

    def as_rows(self, top: int = 5) -> list[dict]:
        """The JSON form of the best ``top`` instances (``chosen`` marked)."""
        chosen = {s.index for s in self.chosen}
        rows = []
        for s in self.scores[:top]:
            row = s.as_dict()
            row["box"] = [round(float(v), 1) for v in self.detections.boxes[s.index]]
            row["chosen"] = s.index in chosen
            rows.append(row)
        return rows


class InstanceEvidence:
    """The detector on every ``every``-th frame, its boxes carried by the flow in between.

    Args:
        detector: The COCO-80 detector (default: a new one, one ONNX Runtime thread).
        every: Run the detector on every ``every``-th frame (1: every frame).

    Not thread-safe: one stream's inference stage owns it.
    """

    def __init__(self, detector: Detector | None = None, *, every: int = 5) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.detector = detector or Detector(threads=1)
        self.every = int(every)
        self.cues: Cues | None = None
        self._dets: Detections | None = None
        self._since = 0
        self._stale = False

    def set_phrase(self, phrase: str) -> Cues:
        """Read the phrase's cues (the detections stay: they do not depend on the phrase)."""
        self.cues = parse_phrase(phrase)
        return self.cues

    def reset(self) -> None:
        """Forget the carried detections (a new stream, a reconnect) from the next frame on.

        Safe from another thread than :meth:`update`'s: only a flag is set here.
        """
        self._stale = True

    def update(self, frame: np.ndarray, flow_px: np.ndarray | None) -> InstanceView | None:
        """This frame's view (``None`` until a phrase is set).

        Args:
            frame: (H, W, 3) uint8 BGR.
            flow_px: (h, w, 2) pixel flow from the previous frame at its own grid (``None``:
                none; the boxes stay where they were).
        """
        cues = self.cues  # set_phrase may swap it from another thread: one read per frame
        if cues is None:
            return None
        if self._stale:
            self._dets, self._stale = None, False
        h, w = frame.shape[:2]
        detected = (
            self._dets is None or self._since + 1 >= self.every or (self._dets.frame_hw != (h, w))
        )
        if detected:
            self._dets, self._since = self.detector(frame), 0
        else:
            self._dets, self._since = _carried(self._dets, flow_px), self._since + 1
        scores = score_instances(self._dets, cues, frame, flow_px)
        return InstanceView(self._dets, scores, choose(scores, cues), detected, cues)


def _carried(dets: Detections, flow_px: np.ndarray | None) -> Detections:
    """``dets`` with every box moved by the median flow inside it."""
    if flow_px is None or not len(dets):
        return dets
    fh, fw = flow_px.shape[:2]
    h, w = dets.frame_hw
    sx, sy = fw / w, fh / h
    boxes = dets.boxes.copy()
    for b in boxes:
        x0, y0 = int(b[0] * sx), int(b[1] * sy)
        x1, y1 = max(x0 + 1, int(np.ceil(b[2] * sx))), max(y0 + 1, int(np.ceil(b[3] * sy)))
        d = np.median(flow_px[y0:y1, x0:x1].reshape(-1, 2), axis=0) / np.array([sx, sy])
        b += np.array([d[0], d[1], d[0], d[1]], np.float32)
    boxes = np.clip(boxes, 0, [w, h, w, h]).astype(np.float32)
    return Detections(boxes=boxes, scores=dets.scores, classes=dets.classes, probs=dets.probs,
                      frame_hw=dets.frame_hw)  # fmt: skip


def fuse(
    prob: np.ndarray, mask: np.ndarray, view: InstanceView | None
) -> tuple[np.ndarray, np.ndarray]:
    """HINet's (H, W) probabilities and mask, steered by the chosen instances (see above).

    Returns ``(prob, mask)`` unchanged when there is no confident chosen instance.
    """
    if view is None or not view.confident:
        return prob, mask
    ref = referent_map(view.detections, view.chosen, prob.shape)  # 0 outside, 0.5..1 inside
    inside = ref > 0
    steered = prob * (OUTSIDE + (1.0 - OUTSIDE) * ref)
    kept = mask & inside
    if kept.sum() < 0.2 * inside.sum():  # HINet marks little of the instance: its centre part
        kept = kept | (ref > 0.75)
    return np.maximum(steered, 0.5 * ref).astype(np.float32), kept
