"""Optical flow between consecutive frames (OpenCV DIS), shared by training data and runtime.

The synthetic training data and the live pipeline call the same :class:`OpticalFlow`, so the
network sees the same signal in training and deployment.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["FLOW_PRESETS", "OpticalFlow"]

#: Preset name -> OpenCV DIS preset.
FLOW_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


class OpticalFlow:
    """Dense optical flow on downscaled grey frames.

    Args:
        preset: One of :data:`FLOW_PRESETS`.
        size: ``(width, height)`` the grey frames are resized to before DIS runs. The flow is
            returned at this size, in pixels of this size.

    Not thread-safe: use one instance per thread.
    """

    def __init__(self, *, preset: str = "ultrafast", size: tuple[int, int] = (320, 240)) -> None:
        if preset not in FLOW_PRESETS:
            raise ValueError(f"unknown flow preset {preset!r}; valid: {', '.join(FLOW_PRESETS)}")
        w, h = size
        if w < 16 or h < 16:
            raise ValueError(f"flow size must be at least 16x16, got {size}")
        self.preset = preset
        self.size = (int(w), int(h))
        self._dis = cv2.DISOpticalFlow_create(FLOW_PRESETS[preset])

    def gray(self, frame_bgr: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 BGR -> (h, w) uint8 grey at :attr:`size`."""
        g = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY) if frame_bgr.ndim == 3 else frame_bgr
        if (g.shape[1], g.shape[0]) != self.size:
            g = cv2.resize(g, self.size, interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(g)

    def __call__(self, prev_gray: np.ndarray, gray: np.ndarray) -> np.ndarray:
        """Flow from ``prev_gray`` to ``gray`` (both from :meth:`gray`).

        Returns:
            (h, w, 2) float32, (dx, dy) in pixels at :attr:`size`; ``prev + flow ~ current``.
        """
        if prev_gray.shape != gray.shape:
            raise ValueError(f"frame shapes differ: {prev_gray.shape} vs {gray.shape}")
        return self._dis.calc(prev_gray, gray, None)

    def between(self, prev_bgr: np.ndarray | None, frame_bgr: np.ndarray) -> np.ndarray:
        """Convenience: flow between two BGR frames; zero flow when ``prev_bgr`` is None."""
        g = self.gray(frame_bgr)
        if prev_bgr is None:
            return np.zeros((g.shape[0], g.shape[1], 2), np.float32)
        return self(self.gray(prev_bgr), g)
