"""Segmentation metrics for referring video segmentation (numpy only; OpenCV for dilation).

Engines and benchmarks import this module without torch.

Two families, each as plain functions plus an accumulator:

A2D-Sentences / J-HMDB-Sentences (the convention of later published work):
    One sample = one annotated frame x one referred instance. Per sample the intersection ``I``
    and union ``U`` are counted over non-void pixels; per-sample IoU ``= (I + eps) / (U + eps)``
    with ``eps = 1e-6`` (an empty prediction of an empty target scores 1). Overall IoU
    ``= sum(I) / sum(U)``; mean IoU = mean of per-sample IoU; ``P@K`` = fraction of samples with
    IoU strictly above ``K`` for ``K`` in 0.5 .. 0.9.

    Deviation, on exact ties only: ``P@K`` compares the exact ratio ``I / U`` with ``K`` in
    integer arithmetic (``100 * I > round(100 * K) * U``), so a sample with ``I / U == K`` exactly
    is *not* counted. Comparing the eps-smoothed IoU instead (as some reference code does) would
    lift such a tie to ``K + ~1e-7`` and count it. Samples with ``U == 0`` (empty prediction,
    empty target) have IoU 1 and count for every ``K``.

DAVIS (J, F, J&F), following the official definitions:
    * Void pixels (target value 255) are removed from *both* masks before anything is computed
      (they count neither as foreground nor as background).
    * ``J``: Jaccard of the two masks; 1 when both are empty.
    * Boundary of a mask (``seg2bmap`` of davis2017-evaluation, same-size case): every pixel,
      foreground or background, whose value differs from its right, bottom or bottom-right
      neighbour. Pixels of the last row compare only with their right neighbour, pixels of the
      last column only with their bottom neighbour, and the bottom-right pixel is never a
      boundary: the image edge itself is not a boundary, so a mask covering the whole image has
      none.
    * ``F``: tolerance radius ``r = ceil(0.008 * sqrt(H^2 + W^2))`` px (8 at 480x854); each
      boundary is dilated by a Euclidean disk ``{(dy, dx): dy^2 + dx^2 <= r^2}``; precision =
      predicted boundary pixels inside the dilated target boundary / predicted boundary pixels,
      recall = target boundary pixels inside the dilated predicted boundary / target boundary
      pixels; ``F = 2PR / (P + R)``. Empty cases: both boundaries empty -> 1; exactly one
      empty -> 0.
    * Per object sequence: mean (M), recall (fraction of frames with value > 0.5) and decay
      (D): the frames are split into four bins with edges at ``round(linspace(1, n, 5)) - 1``
      (halves rounded up; 0-based, each bin includes both of its edge frames, so neighbouring bins share a frame,
      as in the DAVIS toolkit); ``D = mean(bin 1) - mean(bin 4)``.
    * ``J&F = (mean over objects of J_M + mean over objects of F_M) / 2``.
    * Protocols: ``"semi-supervised"`` drops the first and the last frame of every object
      sequence (as the official semi-supervised evaluation does); ``"all"`` keeps every frame.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from training.sample import VOID

__all__ = [
    "DAVIS_PROTOCOLS",
    "EPS",
    "PRECISION_THRESHOLDS",
    "DavisAccumulator",
    "ReferringAccumulator",
    "SequenceStats",
    "boundary_f",
    "boundary_radius",
    "disk",
    "intersection_union",
    "iou",
    "jaccard",
    "mask_boundary",
    "precision_at",
    "sequence_stats",
]

#: Smoothing of the per-sample IoU: ``(I + EPS) / (U + EPS)``.
EPS = 1e-6

#: The ``K`` of ``P@K``, in percent (integers so ties are decided exactly).
PRECISION_THRESHOLDS = (50, 60, 70, 80, 90)

#: DAVIS protocols accepted by :class:`DavisAccumulator`.
DAVIS_PROTOCOLS = ("semi-supervised", "all")

#: Fraction of the image diagonal used as boundary tolerance (DAVIS).
BOUNDARY_FRACTION = 0.008


# -- input checks -------------------------------------------------------------------------------
def _check_pair(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate a prediction/target pair; return (pred bool, target fg bool, valid bool)."""
    if not isinstance(pred, np.ndarray) or not isinstance(target, np.ndarray):
        raise ValueError(
            f"pred and target must be numpy arrays, got {type(pred).__name__} and "
            f"{type(target).__name__}"
        )
    if pred.ndim != 2 or pred.shape != target.shape:
        raise ValueError(
            f"pred and target must be (H, W) of the same shape, got {pred.shape} and {target.shape}"
        )
    if pred.dtype != bool:
        if not np.issubdtype(pred.dtype, np.integer) or not np.isin(pred, (0, 1)).all():
            raise ValueError(f"pred must be bool or 0/1 integers, got dtype {pred.dtype}")
        pred = pred.astype(bool)
    if target.dtype != np.uint8:
        raise ValueError(f"target must be uint8 with values 0, 1, {VOID}, got {target.dtype}")
    valid = target != VOID
    fg = target == 1
    if not np.all(fg | (target == 0) | ~valid):
        bad = sorted(set(np.unique(target).tolist()) - {0, 1, VOID})
        raise ValueError(f"target values must be 0, 1 or {VOID} (void), found {bad[:5]}")
    return pred, fg, valid


# -- A2D / J-HMDB ----------------------------------------------------------------------------------
def intersection_union(pred: np.ndarray, target: np.ndarray) -> tuple[int, int]:
    """Intersection and union pixel counts over the non-void pixels.

    Args:
        pred: (H, W) bool (or 0/1 integer) predicted mask.
        target: (H, W) uint8: 1 object, 0 background, 255 void (ignored).

    Returns:
        ``(I, U)`` as Python ints.
    """
    p, fg, valid = _check_pair(pred, target)
    p = p & valid
    return int(np.count_nonzero(p & fg)), int(np.count_nonzero(p | fg))


def iou(intersection: int, union: int) -> float:
    """Per-sample IoU ``(I + EPS) / (U + EPS)`` (1.0 when both are 0)."""
    if intersection < 0 or union < intersection:
        raise ValueError(f"need 0 <= intersection <= union, got I={intersection}, U={union}")
    return (intersection + EPS) / (union + EPS)


def precision_at(intersection: int, union: int, percent: int) -> bool:
    """Whether the exact IoU ``I / U`` is strictly above ``percent / 100`` (``U == 0`` -> True)."""
    if union == 0:
        return True
    return 100 * intersection > percent * union


class ReferringAccumulator:
    """Collects per-sample intersections/unions and summarises them (A2D / J-HMDB convention).

    Example::

        acc = ReferringAccumulator()
        acc.add(pred_mask, gt_mask, key="vid/00012/inst1")
        acc.summary()  # {"samples": 1, "oIoU": ..., "mIoU": ..., "P@0.5": ..., ...}
    """

    def __init__(self) -> None:
        self._inter: list[int] = []
        self._union: list[int] = []
        self.keys: list[Hashable] = []

    def __len__(self) -> int:
        return len(self._inter)

    def add(self, pred: np.ndarray, target: np.ndarray, *, key: Hashable = None) -> float:
        """Score one sample; returns its IoU.

        Args:
            pred: (H, W) bool predicted mask.
            target: (H, W) uint8 ground truth, 255 = void.
            key: Optional identifier stored in :attr:`keys` (same order as the samples).
        """
        i, u = intersection_union(pred, target)
        self.add_counts(i, u, key=key)
        return iou(i, u)

    def add_counts(self, intersection: int, union: int, *, key: Hashable = None) -> None:
        """Add a sample given its intersection and union pixel counts."""
        iou(intersection, union)  # validates
        self._inter.append(int(intersection))
        self._union.append(int(union))
        self.keys.append(key)

    def ious(self) -> np.ndarray:
        """(N,) float64 per-sample IoU in insertion order."""
        i = np.asarray(self._inter, np.float64)
        u = np.asarray(self._union, np.float64)
        return (i + EPS) / (u + EPS)

    def summary(self) -> dict[str, float | int]:
        """Metrics as fractions in [0, 1].

        Returns:
            ``{"samples": N, "oIoU": float, "mIoU": float, "P@0.5": float, ..., "P@0.9": float}``.
            With no samples the metric values are NaN.
        """
        n = len(self._inter)
        out: dict[str, float | int] = {"samples": n}
        if n == 0:
            out.update({"oIoU": math.nan, "mIoU": math.nan})
            out.update({f"P@{k / 100:.1f}": math.nan for k in PRECISION_THRESHOLDS})
            return out
        total_i, total_u = sum(self._inter), sum(self._union)
        out["oIoU"] = 1.0 if total_u == 0 else total_i / total_u
        out["mIoU"] = float(self.ious().mean())
        for k in PRECISION_THRESHOLDS:
            hits = sum(precision_at(i, u, k) for i, u in zip(self._inter, self._union))
            out[f"P@{k / 100:.1f}"] = hits / n
        return out


# -- DAVIS ---------------------------------------------------------------------------------------
def jaccard(pred: np.ndarray, target: np.ndarray) -> float:
    """DAVIS region similarity J (void excluded; 1.0 when both masks are empty).

    Args:
        pred: (H, W) bool predicted mask.
        target: (H, W) uint8, 1 object, 0 background, 255 void.
    """
    i, u = intersection_union(pred, target)
    return 1.0 if u == 0 else i / u


def boundary_radius(height: int, width: int) -> int:
    """DAVIS boundary tolerance ``ceil(0.008 * sqrt(H^2 + W^2))`` in pixels (8 at 480x854)."""
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    return math.ceil(BOUNDARY_FRACTION * math.hypot(height, width))


def disk(radius: int) -> np.ndarray:
    """(2r+1, 2r+1) uint8 Euclidean disk ``dy^2 + dx^2 <= r^2``."""
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    r = np.arange(-radius, radius + 1)
    return ((r[:, None] ** 2 + r[None, :] ** 2) <= radius * radius).astype(np.uint8)


def mask_boundary(mask: np.ndarray) -> np.ndarray:
    """Boundary map of a mask, as the official DAVIS ``seg2bmap`` draws it (same size).

    A pixel is a boundary pixel when its value differs from that of its right, bottom or
    bottom-right neighbour; on the last row only the right neighbour counts, on the last column
    only the bottom one, and the bottom-right corner pixel is never a boundary. Background
    pixels next to the object are boundary pixels too, and the image edge is not a boundary.

    Args:
        mask: (H, W) bool.

    Returns:
        (H, W) bool.
    """
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got {mask.shape}")
    m = mask.astype(bool)
    out = np.zeros_like(m)
    out[:-1, :-1] = (
        (m[:-1, :-1] != m[:-1, 1:]) | (m[:-1, :-1] != m[1:, :-1]) | (m[:-1, :-1] != m[1:, 1:])
    )  # right, bottom, bottom-right
    out[-1, :-1] = m[-1, :-1] != m[-1, 1:]  # last row: right neighbour only
    out[:-1, -1] = m[:-1, -1] != m[1:, -1]  # last column: bottom neighbour only
    out[-1, -1] = False
    return out


def _dilate(boundary: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    return (
        cv2.dilate(boundary.astype(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
        > 0
    )


def boundary_f(pred: np.ndarray, target: np.ndarray, *, radius: int | None = None) -> float:
    """DAVIS contour accuracy F (boundary F-measure).

    Void pixels are removed from both masks before their boundaries are extracted.

    Args:
        pred: (H, W) bool predicted mask.
        target: (H, W) uint8, 1 object, 0 background, 255 void.
        radius: Tolerance in pixels; default :func:`boundary_radius` of the mask size.

    Returns:
        F in [0, 1]: 1 when both boundaries are empty, 0 when exactly one is.
    """
    p, fg, valid = _check_pair(pred, target)
    if radius is None:
        radius = boundary_radius(*target.shape)
    pb = mask_boundary(p & valid)
    gb = mask_boundary(fg)
    n_pred, n_gt = int(np.count_nonzero(pb)), int(np.count_nonzero(gb))
    if n_pred == 0 and n_gt == 0:
        return 1.0
    if n_pred == 0 or n_gt == 0:
        return 0.0
    kernel = disk(radius)
    precision = np.count_nonzero(pb & _dilate(gb, kernel)) / n_pred
    recall = np.count_nonzero(gb & _dilate(pb, kernel)) / n_gt
    if precision + recall == 0:
        return 0.0
    return float(2.0 * precision * recall / (precision + recall))


@dataclass(frozen=True)
class SequenceStats:
    """Statistics of one metric over the frames of one object.

    Attributes:
        mean: Mean over frames (M).
        recall: Fraction of frames with value > 0.5 (R).
        decay: Mean of the first quarter minus mean of the last quarter (D).
        frames: Number of frames used.
    """

    mean: float
    recall: float
    decay: float
    frames: int


def sequence_stats(values: Sequence[float] | np.ndarray) -> SequenceStats:
    """Mean, recall and decay of per-frame values (DAVIS binning, see the module docstring).

    Args:
        values: (T,) per-frame J or F in frame order, T >= 1.

    Raises:
        ValueError: empty or non-finite values.
    """
    v = np.asarray(values, np.float64).reshape(-1)
    if v.size == 0:
        raise ValueError("sequence_stats needs at least one frame")
    if not np.isfinite(v).all():
        raise ValueError("per-frame values must be finite")
    n = v.size
    edges = np.round(np.linspace(1, n, 5) + 1e-10).astype(np.int64) - 1  # (5,) 0-based
    first = v[edges[0] : edges[1] + 1]
    last = v[edges[3] : edges[4] + 1]
    return SequenceStats(
        mean=float(v.mean()),
        recall=float((v > 0.5).mean()),
        decay=float(first.mean() - last.mean()),
        frames=n,
    )


class DavisAccumulator:
    """Per-object J and F sequences and their DAVIS summary.

    Frames are added in any order; each object sequence is sorted by frame index before the
    statistics. An "object" is whatever ``key`` identifies (e.g. ``(video, object id,
    expression)`` so each referring expression of an object is its own sequence).

    Args:
        protocol: ``"semi-supervised"`` (drop each sequence's first and last frame) or ``"all"``.
    """

    def __init__(self, *, protocol: str = "semi-supervised") -> None:
        if protocol not in DAVIS_PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r}; valid: {', '.join(DAVIS_PROTOCOLS)}")
        self.protocol = protocol
        self._frames: dict[Hashable, dict[int, tuple[float, float]]] = {}

    def __len__(self) -> int:
        return len(self._frames)

    def add(
        self, pred: np.ndarray, target: np.ndarray, *, key: Hashable, frame_index: int
    ) -> tuple[float, float]:
        """Score one frame of one object; returns ``(J, F)``.

        Raises:
            ValueError: the same ``(key, frame_index)`` was already added.
        """
        j, f = jaccard(pred, target), boundary_f(pred, target)
        self.add_scores(j, f, key=key, frame_index=frame_index)
        return j, f

    def add_scores(self, j: float, f: float, *, key: Hashable, frame_index: int) -> None:
        """Add precomputed per-frame J and F."""
        frames = self._frames.setdefault(key, {})
        if int(frame_index) in frames:
            raise ValueError(f"frame {frame_index} of {key!r} was already added")
        frames[int(frame_index)] = (float(j), float(f))

    def per_object(self) -> dict[Hashable, tuple[SequenceStats, SequenceStats]]:
        """Key -> ``(J stats, F stats)`` after the protocol's frame selection.

        Objects left with no frame (e.g. two frames under ``"semi-supervised"``) are omitted.
        """
        out: dict[Hashable, tuple[SequenceStats, SequenceStats]] = {}
        for key, frames in self._frames.items():
            order = sorted(frames)
            if self.protocol == "semi-supervised":
                order = order[1:-1]
            if not order:
                continue
            js = [frames[i][0] for i in order]
            fs = [frames[i][1] for i in order]
            out[key] = (sequence_stats(js), sequence_stats(fs))
        return out

    def summary(self) -> dict[str, float | int | str]:
        """Means over objects, as fractions in [0, 1].

        Returns:
            ``{"protocol", "objects", "objects_skipped", "J&F", "J", "J-recall", "J-decay", "F",
            "F-recall", "F-decay"}``; metric values are NaN when no object has a frame.
        """
        stats = self.per_object()
        out: dict[str, float | int | str] = {
            "protocol": self.protocol,
            "objects": len(stats),
            "objects_skipped": len(self._frames) - len(stats),
        }
        names = ("J", "J-recall", "J-decay", "F", "F-recall", "F-decay")
        if not stats:
            out["J&F"] = math.nan
            out.update({n: math.nan for n in names})
            return out
        js = [s[0] for s in stats.values()]
        fs = [s[1] for s in stats.values()]
        values = {
            "J": _mean(s.mean for s in js),
            "J-recall": _mean(s.recall for s in js),
            "J-decay": _mean(s.decay for s in js),
            "F": _mean(s.mean for s in fs),
            "F-recall": _mean(s.recall for s in fs),
            "F-decay": _mean(s.decay for s in fs),
        }
        out["J&F"] = (values["J"] + values["F"]) / 2.0
        out.update(values)
        return out


def _mean(values: Iterable[float]) -> float:
    return float(np.mean(list(values)))
