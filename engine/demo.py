"""The ``demo`` source: a synthetic referring-video clip rendered on the fly, looping.

The clip comes from the project's synthetic generator (:mod:`training.synthetic`), so the default
model knows its objects; its referring expression is the demo's default phrase
(:attr:`DemoSource.phrase`). Frames are rendered once at start and then served in a loop.

Unpaced (``fps=None``, the default) the demo behaves like a file: every frame is served in
order, none dropped. Paced (``fps=25``) it behaves like a camera: frames are due at the given
rate, a consumer that falls behind skips to the newest due frame and the skipped ones count as
dropped.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import cv2
import numpy as np

from engine.preprocess import sanitize_frame
from engine.sources import EndOfStream, Frame, Source

__all__ = ["DemoSource", "render_demo_clip"]

logger = logging.getLogger(__name__)


def _clip_spec(frames: int, size: tuple[int, int]) -> Any:
    """The generator's spec at ``size`` (W, H) with as many frames (<= ``frames``) as it allows.

    The generator keeps every object inside the frame for the whole clip, so long clips at the
    default object speeds are refused; the demo loops a shorter one instead.
    """
    from training.synthetic.spec import SyntheticSpec

    w, h = size
    error: ValueError | None = None
    for t in range(frames, 1, -1):
        try:
            return SyntheticSpec(size=(h, w), frames=t)
        except ValueError as exc:
            error = error or exc
    raise ValueError(f"no synthetic clip fits {w}x{h}: {error}")


def render_demo_clip(
    *,
    seed: int = 0,
    frames: int = 48,
    size: tuple[int, int] = (320, 240),
    split: str = "appearance",
) -> tuple[list[np.ndarray], str]:
    """Render one synthetic referring clip.

    Args:
        seed: Generator seed (the same seed gives the same clip).
        frames: Most frames in the clip (fewer if the generator's object speeds need it).
        size: ``(width, height)`` of the frames.
        split: Generator split (``"appearance"`` or ``"motion"``).

    Returns:
        ``(frames, phrase)``: (H, W, 3) uint8 BGR frames and the clip's referring expression.

    """
    from training.synthetic.generator import generate_clip

    clip = generate_clip(seed, split=split, spec=_clip_spec(frames, size))
    images = [sanitize_frame(np.asarray(f)) for f in clip.frames]
    targets = clip.targets or clip.objects
    phrase = targets[0].expression
    w, h = size
    images = [
        img if img.shape[:2] == (h, w) else cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
        for img in images
    ]
    if not images:
        raise ValueError("synthetic generator returned an empty clip")
    for img in images:
        img.flags.writeable = False  # served again on every loop: nobody may draw on them
    return images, str(phrase)


class DemoSource(Source):
    """A looping synthetic clip (see module docstring).

    Args:
        seed: Clip seed.
        frames: Clip length before it loops.
        size: ``(width, height)``.
        fps: ``None`` for an unpaced, never-dropping source; a rate to act like a live camera.
        max_loops: End after this many passes over the clip (``None``: forever).
        split: Generator split.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        frames: int = 48,
        size: tuple[int, int] = (320, 240),
        fps: float | None = None,
        max_loops: int | None = None,
        split: str = "appearance",
    ) -> None:
        if fps is not None and fps <= 0:
            raise ValueError(f"fps must be positive or None, got {fps}")
        if frames < 1:
            raise ValueError(f"frames must be >= 1, got {frames}")
        self.name = f"demo(seed={seed})"
        self.live = fps is not None
        self._frames, self.phrase = render_demo_clip(
            seed=seed, frames=frames, size=size, split=split
        )
        self._fps = fps
        self._max_loops = max_loops
        self._index = 0
        self._dropped = 0
        self._t0: float | None = None
        self._closed = False

    @property
    def fps(self) -> float | None:
        """Nominal frame rate, or ``None`` when unknown."""
        return self._fps

    @property
    def dropped(self) -> int:
        """Frames skipped so far."""
        return self._dropped

    def read(self, timeout: float = 1.0) -> Frame | None:
        """See :meth:`Source.read`."""
        if self._closed:
            raise EndOfStream(self.name)
        index = self._index
        if self._fps is not None:
            now = time.monotonic()
            if self._t0 is None:
                self._t0 = now
            due = int((now - self._t0) * self._fps)  # newest frame due by now
            if due > index:
                self._dropped += due - index
                index = due
            else:
                wait = self._t0 + index / self._fps - now
                if wait > timeout:
                    time.sleep(max(0.0, timeout))
                    return None
                time.sleep(max(0.0, wait))
        n = len(self._frames)
        if self._max_loops is not None and index >= self._max_loops * n:
            raise EndOfStream(self.name)
        self._index = index + 1
        return Frame(self._frames[index % n], index, time.monotonic())

    def close(self) -> None:
        """Release resources. Idempotent."""
        self._closed = True
