"""Animated previews of synthetic clips: the referred mask and its expression over each frame."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from training.synthetic.generator import Clip

__all__ = ["draw_sample", "write_preview"]

_OVERLAY_BGR = np.array([60, 255, 60], np.float32)


def draw_sample(frame: np.ndarray, mask: np.ndarray, expression: str) -> np.ndarray:
    """A new image: ``frame`` with ``mask`` tinted and outlined and ``expression`` on top.

    Args:
        frame: (H, W, 3) uint8 BGR.
        mask: (H, W) uint8, nonzero = referred object.
        expression: Text drawn in a band along the top edge.

    Returns:
        (H, W, 3) uint8 BGR.
    """
    out = frame.astype(np.float32)
    m = mask > 0
    out[m] = 0.45 * out[m] + 0.55 * _OVERLAY_BGR
    out = out.astype(np.uint8)
    contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, (255, 255, 255), 1)
    h, w = out.shape[:2]
    scale = 0.5
    (tw, th), base = cv2.getTextSize(expression, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    scale *= min(1.0, (w - 6) / max(tw, 1))
    (tw, th), base = cv2.getTextSize(expression, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    band = th + base + 6
    out[:band] = (out[:band] * 0.35).astype(np.uint8)
    cv2.putText(
        out, expression, (3, th + 3), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1,
        cv2.LINE_AA,
    )  # fmt: skip
    return out


def write_preview(path: Path | str, clip: Clip, *, fps: float = 4.0) -> Path:
    """Write an animated preview of every referred object of ``clip``.

    The animation shows the T frames once per referred object, each with that object's
    mask and expression. ``.gif`` is written with Pillow; ``.mp4`` with OpenCV (``mp4v``).

    Args:
        path: Output file ending in ``.gif`` or ``.mp4``.
        clip: The clip.
        fps: Frames per second.

    Returns:
        The written path.
    """
    path = Path(path)
    if path.suffix not in (".gif", ".mp4"):
        raise ValueError(f"preview must end in .gif or .mp4, got {path.name!r}")
    images = [
        draw_sample(frame, obj.masks[t], obj.expression)
        for obj in clip.targets
        for t, frame in enumerate(clip.frames)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gif":
        from PIL import Image

        pil = [Image.fromarray(cv2.cvtColor(im, cv2.COLOR_BGR2RGB)) for im in images]
        pil[0].save(path, save_all=True, append_images=pil[1:], duration=int(1000 / fps), loop=0)
    else:
        h, w = images[0].shape[:2]
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
        if not writer.isOpened():
            raise OSError(f"OpenCV cannot open an mp4v writer for {path}")
        try:
            for im in images:
                writer.write(im)
        finally:
            writer.release()
    return path
