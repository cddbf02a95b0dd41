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

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from engine.detector import COCO_CLASSES, Detections
from engine.phrase_cues import BASIC_COLOURS, REGIONS, Cues, parse_phrase

__all__ = [
    "box_map",
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


#: A pixel counts as chromatic from this CIELAB chroma on (fully from twice it): below it,
#: lightness alone names it black, grey or white (the xkcd survey's greys reach chroma 18).
CHROMA = 8.0
#: CIELAB hue angles (degrees) where each chromatic term starts, going round: the boundaries
#: that best separate, term by neighbouring term, the chromatic colours of the xkcd colour
#: survey whose names end in the term (CC0, ``matplotlib.colors.XKCD_COLORS``; the survey's
#: median hues are red 35, orange 57, yellow 101, green 135, blue 274, purple 321). Brown and
#: pink are lightness ranges of these hues (:func:`colour_memberships`).
HUES = (("red", -1.2), ("orange", 46.7), ("yellow", 77.9), ("green", 106.1),
        ("blue", 165.0), ("purple", 310.3), ("red", 358.8))  # fmt: skip
#: Other instances of the landmark's class count from this detector confidence on.
LANDMARK_CONFIDENCE = 0.4


def colour_memberships(bgr: np.ndarray) -> dict[str, np.ndarray]:
    """Each basic colour term's membership in [0, 1] of every pixel of (N, 3) uint8 BGR.

    Read from CIELAB lightness L*, chroma C* and hue h: pixels under :data:`CHROMA` are black,
    grey or white by L*; the chromatic ones take their hue's term (:data:`HUES`); dark orange
    and yellow hues are brown, light red and purple ones pink (the survey's browns have median
    L* 45 against orange's 58, its pinks 63 against red's 46), and the very dark ones black.
    The memberships of a pixel sum to 1.
    """
    lab = cv2.cvtColor(bgr.reshape(-1, 1, 3).astype(np.float32) / 255.0, cv2.COLOR_BGR2LAB)
    L, A, B = lab[:, 0, 0], lab[:, 0, 1], lab[:, 0, 2]
    hue = np.degrees(np.arctan2(B, A))
    hue = np.where(hue < HUES[0][1], hue + 360.0, hue)
    chromatic = np.clip((np.hypot(A, B) - CHROMA) / CHROMA, 0.0, 1.0) * np.clip(
        (L - 8.0) / 10.0, 0.0, 1.0
    )
    achromatic = 1.0 - chromatic
    out = {name: np.zeros(len(L), np.float32) for name in BASIC_COLOURS}
    out["black"] += achromatic * np.clip((40.0 - L) / 15.0, 0.0, 1.0)
    out["white"] += achromatic * np.clip((L - 70.0) / 15.0, 0.0, 1.0)
    out["grey"] += achromatic - out["black"] - out["white"]
    starts = np.array([h for _, h in HUES] + [HUES[0][1] + 360.0])
    index = np.clip(np.searchsorted(starts, hue, side="right") - 1, 0, len(HUES) - 1)
    term = np.array([n for n, _ in HUES])[index]
    brown = np.isin(term, ["orange", "yellow"]) * np.clip((58.0 - L) / 12.0, 0.0, 1.0)
    pink = np.isin(term, ["red", "purple"]) * np.clip((L - 52.0) / 12.0, 0.0, 1.0)
    for name in ("red", "orange", "yellow", "green", "blue", "purple"):
        out[name] += chromatic * (term == name) * (1.0 - brown) * (1.0 - pink)
    out["brown"] += chromatic * brown
    out["pink"] += chromatic * pink
    return out


def _colour_shares(frame: np.ndarray, box: np.ndarray, region: str, person: bool
                   ) -> dict[str, float]:  # fmt: skip
    """Mean membership of each basic colour over the box's central pixels.

    For a person, over the part of the box the garment covers (:data:`~engine.phrase_cues.REGIONS`).
    """
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    top, bottom = REGIONS[region if person else "whole"]
    crop = frame[max(0, int(y0 + top * h)) : int(np.ceil(y0 + bottom * h)),
                 max(0, int(x0 + 0.2 * w)) : int(np.ceil(x1 - 0.2 * w))]  # fmt: skip
    if crop.size == 0:
        return dict.fromkeys(BASIC_COLOURS, 0.0)
    if crop.shape[0] * crop.shape[1] > 4096:  # enough pixels to count colours
        f = np.sqrt(4096 / (crop.shape[0] * crop.shape[1]))
        crop = cv2.resize(crop, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
    return {k: float(v.mean()) for k, v in colour_memberships(crop.reshape(-1, 3)).items()}


def _flow_in(flow: np.ndarray, box: np.ndarray, frame_hw: tuple[int, int]) -> np.ndarray:
    """Median (dx, dy) of the flow inside ``box`` (frame pixels per frame), less the scene's."""
    fh, fw = flow.shape[:2]
    sy, sx = fh / frame_hw[0], fw / frame_hw[1]
    x0, y0, x1, y1 = box
    inner = flow[int(y0 * sy) : max(int(y0 * sy) + 1, int(y1 * sy)),
                 int(x0 * sx) : max(int(x0 * sx) + 1, int(x1 * sx))].reshape(-1, 2)  # fmt: skip
    scene = np.median(flow.reshape(-1, 2), axis=0)
    return (np.median(inner, axis=0) - scene) / np.array([sx, sy])


def _ranked(values: np.ndarray, weights: np.ndarray, rank: int, descending: bool) -> np.ndarray:
    """How well each instance is the ``rank``-th of ``values`` in the wanted order (-1: last).

    1 for the ``rank``-th, falling by ``exp(-1.2)`` a place ("the man on the left" need not be
    the very leftmost), in expectation over which other instances are real, each with its
    ``weights`` (a doubtful box ahead only partly pushes an instance back).
    """
    if rank < 0:
        descending, rank = not descending, 1
    want = rank - 1
    out = np.empty(len(values), np.float32)
    for i, v in enumerate(values):
        ahead = weights[(values > v) if descending else (values < v)]
        # Poisson-binomial: dist[k] = chance that k of those ahead are real.
        dist = np.zeros(len(ahead) + 1)
        dist[0] = 1.0
        for p in ahead:
            dist[1:] = dist[1:] * (1 - p) + dist[:-1] * p
            dist[0] *= 1 - p
        out[i] = float((dist * np.exp(-np.abs(np.arange(len(dist)) - want) * 1.2)).sum())
    return out


def _related(kind: str, boxes: np.ndarray, marks: np.ndarray, weights: np.ndarray,
             same: np.ndarray) -> np.ndarray:  # fmt: skip
    """How well each of ``boxes`` stands in relation ``kind`` to one of the landmarks ``marks``.

    Each landmark is real with its ``weights``; ``same[i, j]``: box i is landmark j, which
    does not count.
    """
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    lx, ly = (marks[:, 0] + marks[:, 2]) / 2, (marks[:, 1] + marks[:, 3]) / 2
    bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    mw, mh = marks[:, 2] - marks[:, 0], marks[:, 3] - marks[:, 1]
    sx = (bw[:, None] + mw[None]) / 2 + 1e-3
    sy = (bh[:, None] + mh[None]) / 2 + 1e-3
    dx, dy = (lx[None] - cx[:, None]) / sx, (ly[None] - cy[:, None]) / sy  # > 0: box left/above
    gap = np.hypot(np.maximum(np.abs(dx) - 1, 0), np.maximum(np.abs(dy) - 1, 0))
    near = np.exp(-gap)
    sig = lambda t: 1 / (1 + np.exp(-4 * t))  # noqa: E731
    feet = (marks[None, :, 3] - boxes[:, None, 3]) / sy  # > 0: the box stands further back
    side = {"left": sig(dx), "right": sig(-dx), "above": sig(dy), "below": sig(-dy),
            "behind": sig(feet), "front": sig(-feet), "near": np.ones_like(dx)}[kind]  # fmt: skip
    score = side * near * weights[None] * ~same
    return score.max(axis=1)


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
    real = cls[cand] / max(float(cls[cand].max()), 1e-6)
    parts: dict[str, np.ndarray] = {"class": real}
    boxes = dets.boxes[cand]
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    h, w = dets.frame_hw
    # Place among the instances that are likely the named class (the doubtful count less).
    for side, rank in cues.places:
        if side in ("left", "right"):
            place = _ranked(cx, real, rank, descending=side == "right")
        elif side in ("top", "bottom"):
            place = _ranked(cy, real, rank, descending=side == "bottom")
        elif side in ("front", "back"):  # nearer the camera: lower in the frame, larger
            place = _ranked(boxes[:, 3] + 0.25 * np.sqrt(area), real, rank,
                            descending=side == "front")  # fmt: skip
        else:  # middle
            place = _ranked(np.hypot((cx - w / 2) / w, (cy - h / 2) / h), real, rank,
                            descending=False)  # fmt: skip
        parts[side] = place
    rel = cues.relation
    if rel is not None and rel.classes.any():
        lcls = (dets.probs * rel.classes[None]).max(axis=1)
        marks = np.flatnonzero(lcls >= LANDMARK_CONFIDENCE)
        if marks.size:
            same = cand[:, None] == marks[None]
            related = _related(rel.kind, boxes, dets.boxes[marks],
                               lcls[marks] / lcls[marks].max(), same)  # fmt: skip
            label = {"left": "left of", "right": "right of", "front": "in front of"}.get(
                rel.kind, rel.kind
            )
            parts[f"{label} {rel.landmark}"] = np.clip(related, 0.05, 1.0)
    if cues.size is not None:
        parts[cues.size] = _ranked(area, real, 1, descending=cues.size == "big")
    person = dets.classes[cand] == COCO_CLASSES.index("person")
    shares: dict[str, list[dict[str, float]]] = {}  # per region, once ("red and navy jacket")
    for colour, region in zip(cues.colours, cues.colour_regions or ("whole",) * len(cues.colours)):
        if region not in shares:
            shares[region] = [_colour_shares(frame, b, region, bool(p))
                              for b, p in zip(boxes, person)]  # fmt: skip
        share = np.array([s[colour] for s in shares[region]], np.float32)
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
        name = f"moving {cues.motion}" if cues.motion in ("left", "right") else cues.motion
        parts[name] = np.clip(m, 0.02, 1.0).astype(np.float32)
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
    if not chosen:
        return np.zeros(size, np.float32)
    h, w = size
    fh, fw = dets.frame_hw
    top = max(s.score for s in chosen)
    boxes = np.stack([dets.boxes[s.index] for s in chosen]) * np.array([w / fw, h / fh] * 2)
    weights = [s.score / top if top > 0 else 0.0 for s in chosen]
    return box_map(boxes, weights, size)


def box_map(boxes: np.ndarray, weights: Sequence[float], size: tuple[int, int]) -> np.ndarray:
    """(H, W) float32: each ``x0, y0, x1, y1`` box (in the map's pixels) as a tent.

    Inside a box the value falls from its weight at the centre to half of it at the edges;
    where boxes overlap the larger value wins. The training's simulated detections draw
    their maps with it too (:mod:`training.referent_sim`), so the network trains on the
    stream's own map.
    """
    h, w = size
    out = np.zeros((h, w), np.float32)
    for (x0, y0, x1, y1), weight in zip(np.asarray(boxes, np.float64), weights):
        xa, ya = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
        xb, yb = min(w, max(xa + 1, int(np.ceil(x1)))), min(h, max(ya + 1, int(np.ceil(y1))))
        if xa >= w or ya >= h or xb <= xa or yb <= ya:
            continue
        ys, xs = np.mgrid[ya:yb, xa:xb].astype(np.float32)
        dx = np.abs(xs + 0.5 - (x0 + x1) / 2) / max((x1 - x0) / 2, 0.5)
        dy = np.abs(ys + 0.5 - (y0 + y1) / 2) / max((y1 - y0) / 2, 0.5)
        tent = 1.0 - 0.5 * np.clip(np.maximum(dx, dy), 0.0, 1.0)
        region = out[ya:yb, xa:xb]
        np.maximum(region, (float(weight) * tent).astype(np.float32), out=region)
    return out
