"""Shape outlines and their exact rasterisation into masks."""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["SHAPES", "draw_shape", "shape_outline"]

#: Shape names; each has a distinct silhouette at any rotation the generator uses (|angle| <= 15°).
SHAPES = ("circle", "square", "triangle", "star", "ring", "cross", "diamond")

_SHIFT = 4  # sub-pixel bits for cv2.fillPoly: vertices snap to 1/16 px, so rendering is exact
_ROUND_VERTICES = 48
_RING_HOLE = 0.55  # inner radius / outer radius


def _regular(n: int, radius: float, phase: float) -> np.ndarray:
    a = phase + np.arange(n) * (2 * np.pi / n)
    return np.stack([radius * np.cos(a), radius * np.sin(a)], axis=1)  # (n, 2) x, y


def shape_outline(shape: str) -> list[np.ndarray]:
    """Outline of ``shape`` with diameter 1, centred at the origin, y pointing down.

    Args:
        shape: One of :data:`SHAPES`.

    Returns:
        Polygons as (N, 2) float64 ``(x, y)`` arrays: the first is filled; any further ones
        are holes (the ring's inner circle).
    """
    if shape == "circle":
        return [_regular(_ROUND_VERTICES, 0.5, 0.0)]
    if shape == "ring":
        return [
            _regular(_ROUND_VERTICES, 0.5, 0.0),
            _regular(_ROUND_VERTICES, 0.5 * _RING_HOLE, 0.0),
        ]
    if shape == "square":
        h = 0.42
        return [np.array([[-h, -h], [h, -h], [h, h], [-h, h]])]
    if shape == "triangle":
        tri = _regular(3, 0.58, -np.pi / 2)  # apex up
        return [tri + np.array([0.0, 0.08])]  # centre the bounding box
    if shape == "star":
        outer = _regular(5, 0.5, -np.pi / 2)
        inner = _regular(5, 0.21, -np.pi / 2 + np.pi / 5)
        star = np.empty((10, 2))
        star[0::2], star[1::2] = outer, inner
        return [star + np.array([0.0, 0.05])]
    if shape == "cross":
        a, b = 0.46, 0.16  # arm half-length, half-width
        return [
            np.array(
                [
                    [-b, -a], [b, -a], [b, -b], [a, -b], [a, b], [b, b],
                    [b, a], [-b, a], [-b, b], [-a, b], [-a, -b], [-b, -b],
                ]
            )
        ]  # fmt: skip
    if shape == "diamond":
        return [np.array([[0.0, -0.5], [0.36, 0.0], [0.0, 0.5], [-0.36, 0.0]])]
    raise ValueError(f"unknown shape {shape!r}; valid: {', '.join(SHAPES)}")


def draw_shape(
    mask: np.ndarray,
    *,
    shape: str,
    center: tuple[float, float],
    diameter: float,
    angle: float = 0.0,
) -> None:
    """Rasterise a shape into ``mask`` in place (inside -> 1, holes -> 0, rest untouched).

    Args:
        mask: (H, W) uint8 array, modified in place.
        shape: One of :data:`SHAPES`.
        center: ``(x, y)`` centre in pixels (sub-pixel allowed).
        diameter: Size in pixels.
        angle: Rotation in radians (clockwise in image coordinates).
    """
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, s], [-s, c]])  # row vectors: p @ rot rotates by `angle`
    scale = float(1 << _SHIFT)
    for i, poly in enumerate(shape_outline(shape)):
        pts = (poly * diameter) @ rot + np.asarray(center, np.float64)  # (N, 2) px
        fixed = np.round(pts * scale).astype(np.int32)[None]  # (1, N, 2) 1/16 px
        cv2.fillPoly(mask, fixed, 1 if i == 0 else 0, lineType=cv2.LINE_8, shift=_SHIFT)
