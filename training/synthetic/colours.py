"""Named object colours and their jitter."""

from __future__ import annotations

import numpy as np

__all__ = ["COLOURS", "jitter_colour"]

#: Colour name -> BGR uint8 prototype. Far apart in RGB so a jittered sample keeps its name.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (40, 35, 215),
    "green": (45, 165, 40),
    "blue": (215, 85, 30),
    "yellow": (35, 220, 235),
    "orange": (15, 135, 245),
    "purple": (165, 40, 135),
    "cyan": (225, 210, 40),
    "pink": (200, 130, 250),
    "white": (245, 245, 245),
    "black": (25, 25, 25),
}


def jitter_colour(name: str, rng: np.random.Generator, amplitude: float) -> tuple[int, int, int]:
    """A BGR sample of the named colour, each channel moved by ``U(-amplitude, amplitude)``.

    Args:
        name: One of :data:`COLOURS`.
        rng: Random generator (consumes 3 draws).
        amplitude: Jitter in 0-255 units.

    Returns:
        ``(b, g, r)`` ints in 0..255.
    """
    if name not in COLOURS:
        raise ValueError(f"unknown colour {name!r}; valid: {', '.join(COLOURS)}")
    base = np.asarray(COLOURS[name], np.float64)
    bgr = np.clip(np.round(base + rng.uniform(-amplitude, amplitude, 3)), 0, 255)
    return int(bgr[0]), int(bgr[1]), int(bgr[2])
