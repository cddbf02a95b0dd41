"""The per-frame latency plot of a processed video (matplotlib, Agg canvas, no pyplot).

No pyplot: a :class:`matplotlib.figure.Figure` on its own Agg canvas keeps no global state, so
two sessions can draw at the same time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["latency_plot"]


def latency_plot(
    per_frame_ms: Mapping[str, Sequence[float]],
    *,
    title: str = "",
    size: tuple[float, float] = (7.0, 3.2),
    dpi: int = 100,
) -> np.ndarray:
    """Plot each stage's latency against the frame index.

    Args:
        per_frame_ms: Stage name -> one duration in milliseconds per frame (equal lengths).
        title: Figure title.
        size: Figure ``(width, height)`` in inches.
        dpi: Dots per inch (the image is ``size * dpi`` pixels).

    Returns:
        (H, W, 3) uint8 RGB image.

    Raises:
        ValueError: no stages, or stages of different lengths.
    """
    if not per_frame_ms:
        raise ValueError("nothing to plot: no stages")
    lengths = {len(v) for v in per_frame_ms.values()}
    if len(lengths) != 1:
        raise ValueError(f"every stage needs one value per frame, got lengths {sorted(lengths)}")
    fig = Figure(figsize=size, dpi=dpi, layout="constrained")
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for stage, values in per_frame_ms.items():
        arr = np.asarray(values, np.float64)
        p50 = float(np.median(arr)) if arr.size else float("nan")
        ax.plot(np.arange(arr.size), arr, linewidth=1.2, label=f"{stage} (p50 {p50:.1f} ms)")
    ax.set_xlabel("frame")
    ax.set_ylabel("latency (ms)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper right", ncols=2)
    if title:
        ax.set_title(title, fontsize=10)
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())  # (H, W, 4) uint8
    return np.ascontiguousarray(rgba[:, :, :3])
