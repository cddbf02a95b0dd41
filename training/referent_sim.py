"""Simulated detections for training the referent input (``config.referent``).

In the stream the referent map comes from the COCO detector's boxes, scored by the phrase
(:mod:`engine.instances`); on a synthetic clip there is no detector, so training draws what
one would give, from the sample's own masks. A real detector and the phrase's cues are wrong
in known ways, and the network must learn each of them, not to copy a box:

- **no sure instance** (a phrase naming no COCO class, nothing detected): an all-zero map;
  the network must then do what it did without the input;
- **loose boxes**: every edge moves by a share of the box's size, and real boxes carry a
  margin around the object (the network must draw the object, not the box);
- **the wrong instance**: the cues chose another object (a same-looking one, or another
  category), or a false positive where the referent is not in view at all: the words and the
  frame must overrule it;
- **a second box**: a plural, or two instances that scored close, at a lower weight.

The map is drawn by :func:`engine.grounding.box_map`, the stream's own function.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from engine.grounding import box_map

__all__ = ["ReferentSim", "object_boxes", "simulate_referent"]


@dataclass(frozen=True)
class ReferentSim:
    """How often each detector failure is drawn (probabilities per sample)."""

    #: No map at all (no sure instance of the phrase's class).
    none: float = 0.35
    #: The map shows another object than the referent (the cues chose wrong).
    wrong: float = 0.1
    #: A referent that is not in view still gets a box (a false positive) rather than none.
    false_positive: float = 0.5
    #: A second, weaker box beside the chosen one.
    second: float = 0.2
    #: Each box edge moves by this share of the box's width or height (standard deviation).
    jitter: float = 0.08
    #: The box grows by up to this share (a detector's margin around the object).
    margin: float = 0.25


def object_boxes(labels: np.ndarray, min_pixels: int = 6) -> np.ndarray:
    """(N, 4) ``x0, y0, x1, y1`` float32 boxes of the connected parts of a boolean map."""
    n, _, stats, _ = cv2.connectedComponentsWithStats(labels.astype(np.uint8), connectivity=8)
    boxes = [(x, y, x + w, y + h) for x, y, w, h, area in stats[1:n] if area >= min_pixels]
    return np.asarray(boxes, np.float32).reshape(-1, 4)


def _bbox(m: np.ndarray) -> np.ndarray | None:
    ys, xs = np.nonzero(m)
    if not len(xs):
        return None
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def _loose(box: np.ndarray, rng: np.random.Generator, sim: ReferentSim) -> np.ndarray:
    x0, y0, x1, y1 = box
    w, h = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
    grow = float(rng.uniform(0.0, sim.margin))
    out = np.array([x0 - grow * w / 2, y0 - grow * h / 2, x1 + grow * w / 2, y1 + grow * h / 2])
    out += rng.normal(0.0, sim.jitter, 4) * np.array([w, h, w, h])
    return out.astype(np.float32)


def _random_box(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    h, w = size
    bw, bh = rng.uniform(0.08, 0.4) * w, rng.uniform(0.1, 0.6) * h
    x0, y0 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
    return np.array([x0, y0, x0 + bw, y0 + bh], np.float32)


def simulate_referent(
    target: np.ndarray,
    others: np.ndarray | None,
    rng: np.random.Generator,
    sim: ReferentSim = ReferentSim(),
) -> np.ndarray:
    """(1, H, W) float32 referent map as the stream's detector and cues might give it.

    Args:
        target: (H, W) bool, the referent's pixels (may be empty: the referent is not in view).
        others: (H, W) bool, the other objects' pixels (``None``: not known, as on
            pseudo-labelled real frames).
        rng: Source of randomness.
        sim: The failure rates.
    """
    size = target.shape[:2]
    empty = np.zeros((1, *size), np.float32)
    if rng.random() < sim.none:
        return empty
    own = _bbox(target)
    candidates = object_boxes(others) if others is not None else np.zeros((0, 4), np.float32)
    if own is None:
        if rng.random() >= sim.false_positive:
            return empty
        own = (candidates[rng.integers(len(candidates))] if len(candidates)
               else _random_box(size, rng))  # fmt: skip
    elif rng.random() < sim.wrong:
        own = (candidates[rng.integers(len(candidates))] if len(candidates)
               else _random_box(size, rng))  # fmt: skip
    boxes, weights = [_loose(own, rng, sim)], [1.0]
    if len(candidates) and rng.random() < sim.second:
        boxes.append(_loose(candidates[rng.integers(len(candidates))], rng, sim))
        weights.append(float(rng.uniform(0.5, 0.95)))
    return box_map(np.stack(boxes), weights, size)[None]
