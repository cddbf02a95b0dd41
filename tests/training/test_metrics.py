"""Metrics against hand-computed cases (every expected number is worked out in the comments)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.metrics import (
    EPS,
    DavisAccumulator,
    ReferringAccumulator,
    boundary_f,
    boundary_radius,
    disk,
    intersection_union,
    iou,
    jaccard,
    mask_boundary,
    sequence_stats,
)


def _counts_pair(i: int, u: int, size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """A 1-row pred/target pair with exactly I = i and U = u (target covers the first i pixels
    plus nothing else; pred covers the first u pixels)."""
    pred = np.zeros((1, size), bool)
    target = np.zeros((1, size), np.uint8)
    pred[0, :u] = True
    target[0, :i] = 1
    return pred, target


# -- A2D / J-HMDB ------------------------------------------------------------------------------
def test_iou_4x4_known_counts():
    # pred = top two rows (8 px), target = left two columns (8 px):
    # I = top-left 2x2 = 4, U = 8 + 8 - 4 = 12.
    pred = np.zeros((4, 4), bool)
    pred[:2, :] = True
    target = np.zeros((4, 4), np.uint8)
    target[:, :2] = 1
    assert intersection_union(pred, target) == (4, 12)
    acc = ReferringAccumulator()
    assert acc.add(pred, target) == (4 + EPS) / (12 + EPS)
    s = acc.summary()
    assert s["samples"] == 1
    assert s["oIoU"] == pytest.approx(1 / 3)
    assert s["mIoU"] == pytest.approx((4 + EPS) / (12 + EPS))
    assert all(s[f"P@0.{k}"] == 0.0 for k in range(5, 10))


def test_empty_cases():
    empty = np.zeros((4, 4), bool)
    assert intersection_union(empty, np.zeros((4, 4), np.uint8)) == (0, 0)
    assert iou(0, 0) == 1.0  # (0 + eps) / (0 + eps)
    target = np.zeros((4, 4), np.uint8)
    target[1:3, 1:3] = 1  # 4 px
    i, u = intersection_union(empty, target)
    assert (i, u) == (0, 4)
    assert iou(i, u) == pytest.approx(EPS / (4 + EPS))
    assert iou(i, u) < 1e-6
    acc = ReferringAccumulator()
    acc.add(empty, np.zeros((4, 4), np.uint8))  # IoU 1, counts for every P@K
    acc.add(empty, target)  # IoU ~0
    s = acc.summary()
    assert s["oIoU"] == 0.0  # 0 / (0 + 4)
    assert s["mIoU"] == pytest.approx(0.5, abs=1e-6)
    assert s["P@0.5"] == s["P@0.9"] == 0.5


def test_void_pixels_are_excluded():
    # Same as the 4x4 case, but the pred-only pixels (rows 0-1, cols 2-3) are void in the target:
    # they leave the union, so I = 4, U = 12 - 4 = 8 and IoU = 0.5.
    pred = np.zeros((4, 4), bool)
    pred[:2, :] = True
    target = np.zeros((4, 4), np.uint8)
    target[:, :2] = 1
    target[:2, 2:] = 255
    assert intersection_union(pred, target) == (4, 8)
    assert jaccard(pred, target) == 0.5
    # An all-void target has nothing to score: I = U = 0, J = 1.
    all_void = np.full((4, 4), 255, np.uint8)
    assert intersection_union(pred, all_void) == (0, 0)
    assert jaccard(pred, all_void) == 1.0


def test_precision_at_k_is_strict():
    acc = ReferringAccumulator()
    acc.add(*_counts_pair(2, 4))  # IoU exactly 0.5: not counted for P@0.5
    acc.add(*_counts_pair(3, 5))  # exactly 0.6: counts for 0.5 only
    acc.add(*_counts_pair(7, 10))  # exactly 0.7: counts for 0.5, 0.6
    acc.add(*_counts_pair(9, 10))  # 0.9 exactly: counts for 0.5 .. 0.8
    s = acc.summary()
    assert s["P@0.5"] == 3 / 4
    assert s["P@0.6"] == 2 / 4
    assert s["P@0.7"] == 1 / 4
    assert s["P@0.8"] == 1 / 4
    assert s["P@0.9"] == 0.0
    assert s["oIoU"] == pytest.approx((2 + 3 + 7 + 9) / (4 + 5 + 10 + 10))
    assert s["mIoU"] == pytest.approx((0.5 + 0.6 + 0.7 + 0.9) / 4, abs=1e-6)


def test_overall_and_mean_iou_differ():
    # A: a 1-px object found exactly (I=1, U=1, IoU 1). B: a 99-px object missed (I=0, U=99).
    # Overall IoU = 1 / 100 = 0.01; mean IoU = (1 + ~0) / 2 = 0.5.
    acc = ReferringAccumulator()
    pa = np.zeros((10, 10), bool)
    pa[0, 0] = True
    ta = np.zeros((10, 10), np.uint8)
    ta[0, 0] = 1
    acc.add(pa, ta, key="a")
    tb = np.ones((10, 10), np.uint8)
    tb[0, 0] = 0
    acc.add(np.zeros((10, 10), bool), tb, key="b")
    s = acc.summary()
    assert s["oIoU"] == pytest.approx(0.01)
    assert s["mIoU"] == pytest.approx(0.5, abs=1e-6)
    assert acc.keys == ["a", "b"]
    assert len(acc) == 2


def test_empty_accumulator_is_nan():
    s = ReferringAccumulator().summary()
    assert s["samples"] == 0 and math.isnan(s["oIoU"]) and math.isnan(s["P@0.5"])


@pytest.mark.parametrize(
    ("pred", "target", "match"),
    [
        (np.zeros((4, 4), bool), np.zeros((4, 5), np.uint8), "same shape"),
        (np.zeros((4, 4), np.float32), np.zeros((4, 4), np.uint8), "bool or 0/1"),
        (np.full((4, 4), 2, np.int64), np.zeros((4, 4), np.uint8), "bool or 0/1"),
        (np.zeros((4, 4), bool), np.full((4, 4), 2, np.uint8), r"0, 1 or 255"),
        (np.zeros((4, 4), bool), np.zeros((4, 4), np.int64), "uint8"),
        ([[0]], np.zeros((1, 1), np.uint8), "numpy arrays"),
    ],
)
def test_bad_inputs_raise(pred, target, match):
    with pytest.raises(ValueError, match=match):
        intersection_union(pred, target)


def test_bad_counts_raise():
    with pytest.raises(ValueError, match="intersection <= union"):
        iou(5, 4)
    with pytest.raises(ValueError, match="intersection <= union"):
        ReferringAccumulator().add_counts(-1, 3)


def test_integer_pred_accepted():
    pred = np.array([[1, 0], [0, 1]], np.int64)
    target = np.array([[1, 1], [0, 0]], np.uint8)
    assert intersection_union(pred, target) == (1, 3)


# -- DAVIS: J and boundaries -----------------------------------------------------------------------
def test_jaccard_cases():
    e = np.zeros((5, 5), bool)
    assert jaccard(e, np.zeros((5, 5), np.uint8)) == 1.0
    t = np.zeros((5, 5), np.uint8)
    t[0, :] = 1
    assert jaccard(e, t) == 0.0
    p = np.zeros((5, 5), bool)
    p[0, :3] = True
    assert jaccard(p, t) == 3 / 5


def test_boundary_radius_by_hand():
    # sqrt(480^2 + 854^2) = sqrt(959716) = 979.65...; * 0.008 = 7.84 -> 8
    assert boundary_radius(480, 854) == 8
    # sqrt(2) * 100 * 0.008 = 1.13 -> 2
    assert boundary_radius(100, 100) == 2
    # 0.008 * 125 = 1.0 exactly -> 1 (ceil of an integer): sides 75 x 100, diagonal 125
    assert boundary_radius(75, 100) == 1
    with pytest.raises(ValueError, match="positive"):
        boundary_radius(0, 10)


def test_disk_shapes():
    assert disk(0).tolist() == [[1]]
    assert disk(1).tolist() == [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
    # r = 2: 5x5 minus the 4 corners (8 > 4) and the 8 pixels at (±2, ±1), (±1, ±2) (5 > 4)
    assert int(disk(2).sum()) == 25 - 4 - 8
    with pytest.raises(ValueError, match="radius"):
        disk(-1)


def test_mask_boundary_4_neighbour_and_image_edge():
    m = np.zeros((6, 6), bool)
    m[1:5, 1:5] = True  # a 4x4 square: its ring of 12 px is boundary, 2x2 inside is not
    b = mask_boundary(m)
    assert int(b.sum()) == 12
    assert not b[2:4, 2:4].any()
    # A full 3x3 image: every pixel but the centre touches the image edge.
    full = mask_boundary(np.ones((3, 3), bool))
    assert full.tolist() == [[True] * 3, [True, False, True], [True] * 3]
    # 4-neighbour rule: (1, 1) of a plus shape has all four neighbours set -> interior.
    plus = disk(1).astype(bool)
    plus_b = mask_boundary(np.pad(plus, 1))
    assert int(plus_b.sum()) == 4 and not plus_b[2, 2]


def _square(h: int, w: int, top: int, left: int, side: int) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[top : top + side, left : left + side] = 1
    return m


def test_boundary_f_one_pixel_shift_is_perfect():
    # 480x854 -> radius 8; a 1-px shift keeps every boundary pixel within 1 px of the other.
    gt = _square(480, 854, 100, 100, 100)
    pred = _square(480, 854, 100, 101, 100).astype(bool)
    assert boundary_f(pred, gt) == 1.0
    assert jaccard(pred, gt) == pytest.approx(99 * 100 / (101 * 100))


def test_boundary_f_shift_beyond_radius_by_hand():
    # GT: 100x100 square rows/cols 100..199; pred shifted right by 20 (cols 120..219); radius 8.
    # Each boundary has 4 * 100 - 4 = 396 px.
    # Pred boundary inside the dilated GT boundary:
    #   top row c = 120..207 (within 8 px of GT top row, which ends at c = 199): 88; bottom: 88;
    #   left column c = 120, rows 101..198: within 8 px of the GT top/bottom rows for
    #   r <= 108 or r >= 191: 16; right column c = 219: >= 20 px from any GT boundary: 0.
    #   precision = 192 / 396. By mirror symmetry recall = 192 / 396, so F = 192 / 396.
    gt = _square(480, 854, 100, 100, 100)
    pred = _square(480, 854, 100, 120, 100).astype(bool)
    assert boundary_f(pred, gt) == pytest.approx(192 / 396, abs=1e-12)
    # An explicit radius 0 keeps only exact overlaps: top/bottom rows c = 120..199 (80 each),
    # nothing else -> 160 / 396.
    assert boundary_f(pred, gt, radius=0) == pytest.approx(160 / 396, abs=1e-12)


def test_boundary_f_empty_cases():
    gt = _square(40, 40, 10, 10, 10)
    empty = np.zeros((40, 40), bool)
    assert boundary_f(empty, np.zeros((40, 40), np.uint8)) == 1.0
    assert boundary_f(empty, gt) == 0.0
    assert boundary_f(gt.astype(bool), np.zeros((40, 40), np.uint8)) == 0.0


def test_boundary_f_void_removed_from_both_masks():
    # GT square (boundary 396 px) predicted exactly, plus a 10x10 blob far away (boundary 36 px).
    gt = _square(480, 854, 100, 100, 100)
    pred = gt.astype(bool).copy()
    pred[300:310, 500:510] = True
    # Blob counted as background: precision = 396 / 432, recall 1, F = 2 * 396 / (396 + 432).
    assert boundary_f(pred, gt) == pytest.approx(792 / 828, abs=1e-12)
    # Blob area void in the GT: it is removed from the prediction too, F = 1.
    voided = gt.copy()
    voided[295:315, 495:515] = 255
    assert boundary_f(pred, voided) == 1.0
    assert jaccard(pred, voided) == 1.0


# -- DAVIS: per-object statistics -------------------------------------------------------------------
def test_sequence_stats_decay_8_frames():
    # 8 frames: bin edges round(linspace(1, 8, 5)) - 1 = round(1, 2.75, 4.5, 6.25, 8) - 1
    # = 0, 2, 4, 5, 7 -> first bin frames 0..2, last bin frames 5..7.
    values = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2]
    s = sequence_stats(values)
    assert s.mean == pytest.approx(0.55)
    assert s.recall == 0.5  # 0.9, 0.8, 0.7, 0.6 > 0.5; 0.5 itself is not
    assert s.decay == pytest.approx((0.9 + 0.8 + 0.7) / 3 - (0.4 + 0.3 + 0.2) / 3)  # 0.5
    assert s.frames == 8


def test_sequence_stats_short_and_bad():
    one = sequence_stats([0.7])
    assert (one.mean, one.recall, one.decay) == (0.7, 1.0, 0.0)
    with pytest.raises(ValueError, match="at least one"):
        sequence_stats([])
    with pytest.raises(ValueError, match="finite"):
        sequence_stats([0.1, float("nan")])


def test_davis_accumulator_protocols():
    # Object a: J = 0, 1, 0.5, 0 over frames 0..3 (added out of order); F = 1 everywhere.
    # Object b: J = F = 1 on frames 0..2.
    def fill(acc):
        for idx, j in [(2, 0.5), (0, 0.0), (3, 0.0), (1, 1.0)]:
            acc.add_scores(j, 1.0, key="a", frame_index=idx)
        for idx in range(3):
            acc.add_scores(1.0, 1.0, key="b", frame_index=idx)

    semi = DavisAccumulator(protocol="semi-supervised")
    fill(semi)
    s = semi.summary()
    # semi-supervised keeps a: frames 1, 2 (J 1, 0.5) and b: frame 1 (J 1).
    # J_M: a 0.75, b 1 -> 0.875; J recall: a 1/2, b 1 -> 0.75; F = 1 -> J&F = 0.9375.
    assert s["protocol"] == "semi-supervised"
    assert s["objects"] == 2
    assert s["J"] == pytest.approx(0.875)
    assert s["J-recall"] == pytest.approx(0.75)
    assert s["F"] == 1.0
    assert s["J&F"] == pytest.approx(0.9375)
    # decay of a over 2 frames: edges round(linspace(1, 2, 5)) - 1 = 0, 0, 1, 1, 1 ->
    # first bin frames 0..0 (J 1), last bin 1..1 (J 0.5): D = 0.5; b: 0 -> mean 0.25.
    assert s["J-decay"] == pytest.approx(0.25)

    full = DavisAccumulator(protocol="all")
    fill(full)
    s = full.summary()
    # all frames: a J_M = 1.5 / 4 = 0.375, b 1 -> 0.6875; J&F = (0.6875 + 1) / 2.
    assert s["J"] == pytest.approx(0.6875)
    assert s["J&F"] == pytest.approx(0.84375)


def test_davis_accumulator_masks_and_errors():
    acc = DavisAccumulator(protocol="all")
    gt = _square(48, 64, 10, 10, 20)
    j, f = acc.add(gt.astype(bool), gt, key=("v", "1"), frame_index=0)
    assert (j, f) == (1.0, 1.0)
    with pytest.raises(ValueError, match="already added"):
        acc.add(gt.astype(bool), gt, key=("v", "1"), frame_index=0)
    with pytest.raises(ValueError, match="semi-supervised, all"):
        DavisAccumulator(protocol="unsupervised")
    # Under semi-supervised, a one-frame object has nothing left: skipped, and NaN overall.
    semi = DavisAccumulator()
    semi.add_scores(1.0, 1.0, key="x", frame_index=0)
    s = semi.summary()
    assert s["objects"] == 0 and s["objects_skipped"] == 1 and math.isnan(s["J&F"])
