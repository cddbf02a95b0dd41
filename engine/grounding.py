"""Which instance a phrase means: explicit, explainable scores of every detected instance.

:func:`score_instances` scores every instance of a frame's :class:`~engine.detector.Detections`
on each cue of the phrase that applies (:func:`engine.phrase_cues.parse_phrase`), from its class
probabilities, its own pixels, its place among the same-class instances and the optical flow
inside it; the product is its score, and the parts stay visible (:meth:`InstanceScore.describe`:
"person 3: class 0.92 · left 0.88 · red 0.71"). :func:`choose` picks the referent(s) and
:func:`referent_map` draws them as a map.

numpy and OpenCV only: every backend shares it.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from engine.detector import COCO_CLASSES, Detections
from engine.phrase_cues import BASIC_COLOURS, Cues, parse_phrase

__all__ = [
    "CANDIDATE_SHARE",
    "Cues",
    "InstanceScore",
    "choose",
    "parse_phrase",
    "referent_map",
    "score_instances",
]

#: Instances count as candidates when the detector is at least this share as sure of them as
#: of its best instance of the named class.
CANDIDATE_SHARE = 0.5


@dataclass(frozen=True)
class InstanceScore:
    """How well one instance fits the phrase.

    Attributes:
        index: The instance's row in the :class:`~engine.detector.Detections`.
        name: Its class name.
        parts: Each cue that applied -> its score in [0, 1] (``class`` always).
        score: The product of the parts.
    """

    index: int
    name: str
    parts: dict[str, float]
    score: float

    def describe(self) -> str:
        """``person 3: class 0.92 · left 0.88 · red 0.71`` (the HUD and the JSONL)."""
        shown = " · ".join(f"{k} {v:.2f}" for k, v in self.parts.items())
        return f"{self.name} {self.index + 1}: {shown}"

    def as_dict(self) -> dict:
        """The JSON form."""
        return {"instance": self.index, "class": self.name, "score": round(self.score, 4),
                "parts": {k: round(v, 4) for k, v in self.parts.items()}}  # fmt: skip


_PROTOS = None


def _colour_shares(frame: np.ndarray, box: np.ndarray) -> dict[str, float]:
    """Share of the box's central pixels nearest each basic colour (CIELAB)."""
    global _PROTOS
    if _PROTOS is None:
        rgb = np.array(list(BASIC_COLOURS.values()), np.uint8)[None, :, ::-1]  # BGR
        _PROTOS = cv2.cvtColor(rgb, cv2.COLOR_BGR2LAB).reshape(-1, 3).astype(np.float32)
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    crop = frame[int(y0 + 0.15 * h) : int(np.ceil(y1 - 0.15 * h)),
                 int(x0 + 0.2 * w) : int(np.ceil(x1 - 0.2 * w))]  # fmt: skip
    if crop.size == 0:
        return dict.fromkeys(BASIC_COLOURS, 0.0)
    if crop.shape[0] * crop.shape[1] > 4096:  # enough pixels to count colours
        f = np.sqrt(4096 / (crop.shape[0] * crop.shape[1]))
        crop = cv2.resize(crop, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
    labs = cv2.cvtColor(crop, cv2.COLOR_BGR2LAB).reshape(-1, 3).astype(np.float32)
    nearest = np.argmin(((labs[:, None, :] - _PROTOS[None]) ** 2).sum(-1), axis=1)
    counts = np.bincount(nearest, minlength=len(BASIC_COLOURS)) / len(nearest)
    return dict(zip(BASIC_COLOURS, counts.tolist()))


def _flow_in(flow: np.ndarray, box: np.ndarray, frame_hw: tuple[int, int]) -> np.ndarray:
    """Median (dx, dy) of the flow inside ``box`` (frame pixels per frame), less the scene's."""
    fh, fw = flow.shape[:2]
    sy, sx = fh / frame_hw[0], fw / frame_hw[1]
    x0, y0, x1, y1 = box
    inner = flow[int(y0 * sy) : max(int(y0 * sy) + 1, int(y1 * sy)),
                 int(x0 * sx) : max(int(x0 * sx) + 1, int(x1 * sx))].reshape(-1, 2)  # fmt: skip
    scene = np.median(flow.reshape(-1, 2), axis=0)
    return (np.median(inner, axis=0) - scene) / np.array([sx, sy])


def _ranked(values: np.ndarray, rank: int, descending: bool) -> np.ndarray:
    """1 for the ``rank``-th of ``values`` in the wanted order, falling off for the others."""
    order = np.argsort(-values if descending else values, kind="stable")
    pos = np.empty(len(values), np.int64)
    pos[order] = np.arange(len(values))
    want = (len(values) - 1 if rank < 0 else rank - 1) if len(values) else 0
    return np.exp(-np.abs(pos - want) * 1.2).astype(np.float32)


def score_instances(
    dets: Detections,
    cues: Cues,
    frame: np.ndarray,
    flow: np.ndarray | None = None,
) -> list[InstanceScore]:
    """Every instance's fit to ``cues``, best first.

    Args:
        dets: The frame's instances.
        cues: :func:`parse_phrase` of the phrase.
        frame: (H, W, 3) uint8 BGR, the pixels the colour cue reads.
        flow: (h, w, 2) optical flow (pixels per frame at its own size) for motion words.

    Returns:
        One :class:`InstanceScore` per instance whose class the phrase names, best first
        (none when the phrase names no COCO class).
    """
    if not len(dets) or not cues.names_a_class:
        return []
    cls = (dets.probs * cues.classes[None]).max(axis=1)  # the named class's probability
    # The candidates: instances the detector is at least half as sure of as of its best one of
    # the named class (a doubtful box at the edge must not become "the one on the left").
    cand = np.flatnonzero((cls > 0) & (cls >= CANDIDATE_SHARE * cls.max()))
    if cand.size == 0:
        return []
    parts: dict[str, np.ndarray] = {"class": cls[cand] / max(float(cls[cand].max()), 1e-6)}
    boxes = dets.boxes[cand]
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    # Place among the instances that are likely the named class (the others do not count).
    if cues.side is not None:
        h, w = dets.frame_hw
        rank = cues.rank
        if cues.side in ("left", "right"):
            place = _ranked(cx, rank, descending=cues.side == "right")
        elif cues.side in ("top", "bottom"):
            place = _ranked(cy, rank, descending=cues.side == "bottom")
        elif cues.side == "front":  # nearer the camera: lower in the frame, larger
            place = _ranked(boxes[:, 3] + 0.25 * np.sqrt(area), rank, descending=True)
        elif cues.side == "back":
            place = _ranked(boxes[:, 3] + 0.25 * np.sqrt(area), rank, descending=False)
        else:  # middle
            d = np.hypot((cx - w / 2) / w, (cy - h / 2) / h)
            place = _ranked(d, rank, descending=False)
        parts[cues.side] = place
    if cues.size is not None:
        parts[cues.size] = _ranked(area, 1, descending=cues.size == "big")
    for colour in cues.colours:
        share = np.array([_colour_shares(frame, b)[colour] for b in boxes], np.float32)
        parts[colour] = np.clip(share / max(float(share.max()), 0.05), 0.05, 1.0)
    if cues.motion is not None and flow is not None:
        v = np.array([_flow_in(flow, b, dets.frame_hw) for b in boxes], np.float32)
        scale = np.sqrt(area) * 0.02 + 0.5  # about 2 % of the box's size per frame counts
        if cues.motion == "left":
            m = 1 / (1 + np.exp(v[:, 0] / scale))
        elif cues.motion == "right":
            m = 1 / (1 + np.exp(-v[:, 0] / scale))
        elif cues.motion == "towards":
            m = 1 / (1 + np.exp(-v[:, 1] / scale))
        elif cues.motion == "away":
            m = 1 / (1 + np.exp(v[:, 1] / scale))
        else:
            speed = np.hypot(v[:, 0], v[:, 1]) / scale
            m = np.exp(-speed) if cues.motion == "still" else 1 - np.exp(-speed)
        parts[cues.motion] = np.clip(m, 0.02, 1.0).astype(np.float32)
    total = np.prod(np.stack(list(parts.values())), axis=0)
    out = [
        InstanceScore(index=int(i), name=COCO_CLASSES[int(dets.classes[i])],
                      parts={k: float(v[j]) for k, v in parts.items()}, score=float(total[j]))
        for j, i in enumerate(cand)
    ]  # fmt: skip
    return sorted(out, key=lambda s: -s.score)


def choose(scores: list[InstanceScore], cues: Cues, *, keep: float = 0.5) -> list[InstanceScore]:
    """The instances the phrase means: the best one, or with a plural all within ``keep`` of it."""
    if not scores:
        return []
    if not cues.plural:
        return scores[:1]
    return [s for s in scores if s.score >= keep * scores[0].score]


def referent_map(
    dets: Detections, chosen: list[InstanceScore], size: tuple[int, int]
) -> np.ndarray:
    """(H, W) float32 in [0, 1] at ``size``: each chosen box, highest at its centre.

    Inside a box the value falls from its score's weight at the centre (1 for the best) to
    half of it at the edges, so the map's peak is the best instance's centre.
    """
    h, w = size
    out = np.zeros((h, w), np.float32)
    if not chosen:
        return out
    fh, fw = dets.frame_hw
    top = max(s.score for s in chosen)
    for s in chosen:
        x0, y0, x1, y1 = dets.boxes[s.index] * np.array([w / fw, h / fh, w / fw, h / fh])
        xa, ya = int(np.floor(x0)), int(np.floor(y0))
        xb, yb = max(xa + 1, int(np.ceil(x1))), max(ya + 1, int(np.ceil(y1)))
        ys, xs = np.mgrid[ya:yb, xa:xb].astype(np.float32)
        dx = np.abs(xs + 0.5 - (x0 + x1) / 2) / max((x1 - x0) / 2, 0.5)
        dy = np.abs(ys + 0.5 - (y0 + y1) / 2) / max((y1 - y0) / 2, 0.5)
        tent = 1.0 - 0.5 * np.clip(np.maximum(dx, dy), 0.0, 1.0)
        value = (s.score / top if top > 0 else 0.0) * tent
        region = out[ya:yb, xa:xb]
        np.maximum(region, value[: region.shape[0], : region.shape[1]], out=region)
    return out
