"""Training curves from a run folder's CSV logs (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

__all__ = ["plot_curves", "read_log"]


def read_log(path: str | Path) -> dict[str, list[float]]:
    """Read a CSV log into column name -> values (non-numbers become NaN).

    Raises:
        ValueError: the file does not exist or holds no rows.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"log file not found: {path}")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"log file {path} has no rows")
    cols: dict[str, list[float]] = {k: [] for k in rows[0]}
    for row in rows:
        for k in cols:
            try:
                cols[k].append(float(row[k]))
            except (TypeError, ValueError):
                cols[k].append(math.nan)
    return cols


def plot_curves(run_dir: str | Path, *, out: str | Path | None = None) -> Path:
    """Draw loss / learning rate (``train_log.csv``) and validation metrics (``val_log.csv``).

    Args:
        run_dir: A :mod:`training.train` run folder.
        out: PNG path (default ``run_dir/curves.png``).

    Returns:
        The PNG path.

    Raises:
        ValueError: ``train_log.csv`` is missing or empty.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = Path(run_dir)
    tr = read_log(run / "train_log.csv")
    val_path = run / "val_log.csv"
    val = read_log(val_path) if val_path.is_file() and val_path.stat().st_size else None
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    ax = axes[0]
    for key in ("loss", "bce", "dice"):
        if key in tr:
            ax.plot(tr["step"], tr[key], label=key, lw=1)
    ax.set_xlabel("step")
    ax.set_title("training loss")
    ax.set_yscale("log")
    ax.legend()
    axes[1].plot(tr["step"], tr["lr"], color="tab:purple")
    axes[1].set_xlabel("step")
    axes[1].set_title("learning rate (head)")
    ax = axes[2]
    if val is not None:
        for key in sorted(val):
            if key.endswith("/mIoU") or key.endswith("/oIoU"):
                ax.plot(val["step"], val[key], marker="o", label=key)
        ax.legend(fontsize=8)
    ax.set_xlabel("step")
    ax.set_title("validation (val seeds)")
    ax.set_ylim(0, 1)
    fig.tight_layout()
    path = Path(out) if out is not None else run / "curves.png"
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
