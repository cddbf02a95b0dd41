"""Drawing masks, outlines and the live HUD on frames (OpenCV + numpy).

Functions return a new image unless their name ends in ``_inplace``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = [
    "OverlayStyle",
    "draw_hud_inplace",
    "draw_mask",
    "HUD_INSIDE_MIN",
    "hud_lines",
    "mask_to_png_bytes",
    "place_hud",
    "result_lines",
]


@dataclass(frozen=True)
class OverlayStyle:
    """How a mask is drawn.

    Attributes:
        color: BGR fill and outline colour, each 0..255.
        opacity: Fill opacity in [0, 1] (0 draws only the outline).
        outline: Draw the object's outline (external contours).
        thickness: Outline thickness in pixels (>= 1).
    """

    color: tuple[int, int, int] = (0, 200, 255)
    opacity: float = 0.45
    outline: bool = True
    thickness: int = 2

    def __post_init__(self) -> None:
        if len(self.color) != 3 or any(not 0 <= int(c) <= 255 for c in self.color):
            raise ValueError(f"color must be three values in 0..255 (BGR), got {self.color}")
        if not 0.0 <= self.opacity <= 1.0:
            raise ValueError(f"opacity must be in [0, 1], got {self.opacity}")
        if self.thickness < 1:
            raise ValueError(f"thickness must be >= 1, got {self.thickness}")


def draw_mask(image: np.ndarray, mask: np.ndarray, style: OverlayStyle | None = None) -> np.ndarray:
    """Blend a mask over an image and outline it.

    Args:
        image: (H, W, 3) uint8 BGR; not modified.
        mask: (H, W) bool.
        style: Colour, opacity and outline settings (default :class:`OverlayStyle`).

    Returns:
        A new (H, W, 3) uint8 BGR image.
    """
    style = style or OverlayStyle()
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match image {image.shape[:2]}")
    out = image.copy()
    m8 = mask.astype(np.uint8)  # (H, W) 0/1
    if not m8.any():
        return out
    # OpenCV ops (not numpy fancy indexing): they release the GIL, so the pipeline's other
    # threads keep running while a frame is drawn.
    if style.opacity > 0:
        colour = np.empty_like(image)
        colour[:] = style.color
        blended = cv2.addWeighted(image, 1.0 - style.opacity, colour, style.opacity, 0.0)
        cv2.copyTo(blended, m8, out)
    if style.outline:
        contours, _ = cv2.findContours(m8, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(
            out, contours, -1, tuple(int(c) for c in style.color), style.thickness, cv2.LINE_AA
        )
    return out


def hud_lines(
    *,
    fps: float,
    stage_ms: dict[str, tuple[float, float]],
    dropped: int,
    bottleneck: dict[str, object] | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """Text lines of the live HUD's timing part.

    Args:
        fps: Output frames per second.
        stage_ms: Stage -> (work p50, wait p50) in ms (NaN work: nothing recorded yet).
        dropped: Frames dropped so far.
        bottleneck: :meth:`engine.latency.LatencyStats.bottleneck`.
        extra: More lines appended at the end.
    """
    lines = [f"{fps:5.1f} fps   dropped {dropped}"]
    for stage, (work, wait) in stage_ms.items():
        if work == work:  # skip NaN (nothing recorded yet)
            queued = f" +{wait:.1f} wait" if wait == wait and wait >= 0.05 else ""
            lines.append(f"{stage:<10}{work:6.1f} ms{queued}")
    if bottleneck:
        lines.append(f"bottleneck {bottleneck['stage']}: max {bottleneck['max_fps']:.0f} fps")
    lines.extend(extra)
    return lines


def result_lines(result: object) -> list[str]:
    """The HUD lines of one frame's result: the phrase, and the score or "not found".

    A grounding-prior model's confidence (``prior_conf``) follows, when there is one.
    """
    phrase = getattr(result, "phrase", "")
    conf = getattr(result, "prior_conf", None)
    if getattr(result, "found", True):
        verdict = f"score {result.score:.2f}  area {100 * result.area:.1f}%"  # type: ignore[attr-defined]
        verdict += "" if conf is None else f"  prior {conf:.2f}"
    elif getattr(result, "absent", None):
        verdict = f"not found: {result.absent}"  # type: ignore[attr-defined]
    else:
        verdict = f"not found (peak {result.peak:.2f}"  # type: ignore[attr-defined]
        verdict += ")" if conf is None else f", prior {conf:.2f})"
    if not getattr(result, "inferred", True):  # between keyframes: the flow moved the mask
        verdict += "  [warped]"
    lines = [f'phrase: "{phrase}"', verdict]
    chosen = [r for r in getattr(result, "instances", ()) if r.get("chosen")]
    if chosen:  # why this instance: "person 3: class 0.92 . left 0.88 . red 0.71"
        r = chosen[0]
        parts = " . ".join(f"{k} {v:.2f}" for k, v in r["parts"].items())
        more = f" (+{len(chosen) - 1})" if len(chosen) > 1 else ""
        lines.append(f"{r['class']} {r['instance'] + 1}: {parts}{more}")
    return lines


def draw_hud_inplace(image: np.ndarray, lines: Sequence[str], *, scale: float = 0.0) -> None:
    """Draw text lines on a dark translucent panel in the top-left corner, in place.

    Args:
        image: (H, W, 3) uint8 BGR, modified in place.
        lines: Text lines (ASCII).
        scale: Font scale; 0 picks one from the image height.
    """
    if not lines:
        return
    h, w = image.shape[:2]
    scale = scale or max(0.3, min(0.6, h / 900))
    thick = 1
    (_, th), base = cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    step = th + base + 4
    width = max(cv2.getTextSize(s, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)[0][0] for s in lines)
    x1, y1 = min(w, width + 12), min(h, step * len(lines) + 8)
    panel = image[0:y1, 0:x1]
    panel[:] = (panel.astype(np.uint16) * 2 // 5).astype(np.uint8)  # darken to 40 %
    for i, text in enumerate(lines):
        y = 4 + th + i * step
        cv2.putText(
            image, text, (6, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick,
            cv2.LINE_AA,
        )  # fmt: skip


#: Frames smaller than this (width, height) get the HUD in a bar below the picture.
HUD_INSIDE_MIN = (400, 300)
#: Lines the bar below a small frame has room for (the pipeline's HUD has at most 9).
HUD_BAR_LINES = 10


def _font(h: int) -> tuple[float, int, int]:
    scale = max(0.35, min(0.6, h / 900))
    (_, th), base = cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    return scale, th, th + base + 4


def place_hud(image: np.ndarray, lines: Sequence[str]) -> np.ndarray:
    """The image with its HUD.

    On a dark panel in the top-left corner, or, on frames smaller than
    :data:`HUD_INSIDE_MIN`, in a bar below the picture (the picture stays whole).

    Returns:
        ``image`` drawn on in place (HUD inside), or a new, taller image (HUD below).
    """
    h, w = image.shape[:2]
    if w >= HUD_INSIDE_MIN[0] and h >= HUD_INSIDE_MIN[1]:
        draw_hud_inplace(image, lines)
        return image
    scale, th, step = _font(HUD_INSIDE_MIN[1])
    cols = 2 if w >= 300 else 1
    rows = -(-HUD_BAR_LINES // cols)  # a fixed height: every frame of a video is one size
    lines = list(lines)[: rows * cols]
    bar = np.zeros((rows * step + 8, w, 3), np.uint8)
    col_w = w // cols
    for i, text in enumerate(lines):
        x, y = 4 + (i // rows) * col_w, 4 + th + (i % rows) * step
        cv2.putText(bar, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1,
                    cv2.LINE_AA)  # fmt: skip
    return np.ascontiguousarray(np.vstack([image, bar]))


def mask_to_png_bytes(mask: np.ndarray) -> bytes:
    """Encode a (H, W) bool mask as an 8-bit PNG (0 background, 255 object)."""
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got {mask.shape}")
    ok, buf = cv2.imencode(".png", mask.astype(np.uint8) * 255)
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()
