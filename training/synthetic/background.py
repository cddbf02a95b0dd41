"""Textured, non-uniform backgrounds: gradients, stripes, checkers and smooth noise."""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["TEXTURES", "make_background", "make_object_texture"]

#: Texture layers laid over a two-colour gradient.
TEXTURES = ("stripes", "checker", "noise", "blobs")


def _muted(rng: np.random.Generator) -> np.ndarray:
    """A low-saturation mid-value BGR colour, so named object colours stand out."""
    hsv = np.array(
        [[[rng.uniform(0, 180), rng.uniform(10, 80), rng.uniform(70, 185)]]], np.float32
    )  # (1, 1, 3) OpenCV HSV ranges
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)


def make_background(rng: np.random.Generator, *, height: int, width: int) -> np.ndarray:
    """A textured background.

    Args:
        rng: Random generator.
        height: Output height in pixels.
        width: Output width in pixels.

    Returns:
        (height, width, 3) uint8 BGR.
    """
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)  # (H, W) each
    theta = rng.uniform(0, 2 * np.pi)
    proj = xx * np.cos(theta) + yy * np.sin(theta)
    t = (proj - proj.min()) / max(float(np.ptp(proj)), 1.0)  # (H, W) in [0, 1]
    c0, c1 = _muted(rng), _muted(rng)
    img = c0 * (1 - t[..., None]) + c1 * t[..., None]  # (H, W, 3)

    kind = TEXTURES[int(rng.integers(len(TEXTURES)))]
    amp = rng.uniform(12, 30)
    scale = min(height, width)
    if kind == "stripes":
        phi = rng.uniform(0, np.pi)
        period = rng.uniform(0.04, 0.15) * scale
        layer = np.sin(2 * np.pi * (xx * np.cos(phi) + yy * np.sin(phi)) / period)
    elif kind == "checker":
        cell = rng.uniform(0.05, 0.15) * scale
        layer = ((np.floor(xx / cell) + np.floor(yy / cell)) % 2) * 2 - 1
    else:  # smooth noise; "blobs" is coarser and stronger
        cells = int(rng.integers(3, 7)) if kind == "blobs" else int(rng.integers(8, 20))
        coarse = rng.standard_normal((cells, cells)).astype(np.float32)
        layer = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
        layer = np.clip(layer, -2, 2) / 2
    tint = rng.uniform(0.6, 1.0, 3).astype(np.float32)  # texture slightly coloured
    img += amp * layer[..., None] * tint
    img += rng.normal(0, 3.0, img.shape).astype(np.float32)  # fine grain
    return np.clip(img, 0, 255).astype(np.uint8)


def make_object_texture(
    rng: np.random.Generator, *, bgr: tuple[int, int, int], size: int
) -> np.ndarray:
    """Surface of an object: its colour with directional shading and fine grain.

    Args:
        rng: Random generator.
        bgr: Object colour.
        size: Side of the square texture patch in pixels.

    Returns:
        (size, size, 3) uint8 BGR.
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)  # (S, S) in [0, 1]
    theta = rng.uniform(0, 2 * np.pi)
    shade = (xx - 0.5) * np.cos(theta) + (yy - 0.5) * np.sin(theta)  # (S, S) in ~[-0.7, 0.7]
    gain = 1.0 + rng.uniform(0.15, 0.3) * shade
    img = np.asarray(bgr, np.float32) * gain[..., None] + 12.0 * shade[..., None]
    cells = int(rng.integers(3, 6))
    blotch = cv2.resize(
        rng.standard_normal((cells, cells)).astype(np.float32),
        (size, size),
        interpolation=cv2.INTER_CUBIC,
    )  # (S, S) smooth, ~[-2, 2]; gives DIS a surface pattern to track
    img += 9.0 * np.clip(blotch, -2, 2)[..., None]
    img += rng.normal(0, 6.0, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)
