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


def test_mask_boundary_is_seg2bmap_by_hand():
    # davis2017-evaluation's seg2bmap: a pixel is boundary when it differs from its right,
    # bottom or bottom-right neighbour. A 4x4 square at rows/cols 1..4 of a 6x6 image:
    # foreground: its last row and last column (4 + 4 - 1 = 7 px);
    # background: column 0 rows 1..4 (right neighbour set), row 0 cols 1..4 (bottom neighbour
    # set) and (0, 0) (bottom-right neighbour set): 9 px. 16 in all.
    m = np.zeros((6, 6), bool)
    m[1:5, 1:5] = True
    want = np.zeros((6, 6), bool)
    want[4, 1:5] = want[1:5, 4] = True
    want[1:5, 0] = want[0, 1:5] = want[0, 0] = True
    np.testing.assert_array_equal(mask_boundary(m), want)


def test_mask_boundary_image_edge_is_not_a_boundary():
    # A mask covering the whole image has no boundary at all.
    assert not mask_boundary(np.ones((3, 3), bool)).any()
    # The left two columns of a 4x4 image: only column 1 differs from its right neighbour;
    # column 0 lies on the image edge and is not boundary; the last row compares only along
    # the row ((3, 1) vs (3, 2): boundary), the last column only down the column (all equal).
    m = np.zeros((4, 4), bool)
    m[:, :2] = True
    want = np.zeros((4, 4), bool)
    want[:, 1] = True
    np.testing.assert_array_equal(mask_boundary(m), want)
    # The bottom-right pixel alone: (2, 2) is never boundary; (1, 2) differs from its bottom
    # neighbour, (2, 1) from its right one, (1, 1) from its bottom-right one.
    m = np.zeros((3, 3), bool)
    m[2, 2] = True
    want = np.zeros((3, 3), bool)
    want[1, 2] = want[2, 1] = want[1, 1] = True
    np.testing.assert_array_equal(mask_boundary(m), want)


def test_boundary_f_on_masks_touching_the_edge_by_hand():
    # 10x10 -> radius ceil(0.008 * 14.14) = 1 (a plus-shaped disk).
    # GT: columns 0..4. Boundary: column 4 only (10 px; column 0 is on the image edge).
    gt = np.zeros((10, 10), np.uint8)
    gt[:, :5] = 1
    # Pred: columns 0..5, boundary column 5: every pixel 1 px from GT column 4 -> F = 1.
    pred = np.zeros((10, 10), bool)
    pred[:, :6] = True
    assert boundary_f(pred, gt) == 1.0
    # Pred: columns 0..6, boundary column 6, 2 px away -> no match either way: F = 0.
    pred[:, 6] = True
    assert boundary_f(pred, gt) == 0.0
    # Pred: columns 0..5 in rows 0..4, columns 0..6 in rows 5..9.
    # Pred boundary: (r, 5) for r = 0..3 (right neighbour 0; (r, 5) vs (r + 1, 6) too),
    # (4, 5) (bottom-right (5, 6) set: same value? (4, 5) = 1, (5, 6) = 1; right (4, 6) = 0 ->
    # boundary), (4, 6)? (4, 6) = 0, bottom (5, 6) = 1 -> boundary; (r, 6) for r = 5..9
    # (right neighbour 0). 4 + 1 + 1 + 5 = 11 px.
    # Within 1 px (plus) of GT column 4: (r, 5) r = 0..4 -> 5 of 11: precision 5 / 11.
    # GT boundary (r, 4), r = 0..9: within the dilated pred boundary where a pred boundary pixel
    # is at (r, 5), (r +- 1, 4) or (r, 3): rows 0..4 via (r, 5); rows 5..9 have (r, 5) = 1 inside,
    # not boundary, and no pred boundary pixel in column 4 or 3: recall 5 / 10.
    pred = np.zeros((10, 10), bool)
    pred[:5, :6] = True
    pred[5:, :7] = True
    b = mask_boundary(pred)
    assert int(b.sum()) == 11 and b[4, 6] and b[4, 5] and not b[5, 5]
    p, r = 5 / 11, 5 / 10
    assert boundary_f(pred, gt) == pytest.approx(2 * p * r / (p + r), abs=1e-12)


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
    # seg2bmap draws each square's boundary as a closed 400-px ring: the background row above
    # and column left of it (row 99 cols 99..199, col 99 rows 100..199) and the square's own
    # last row and column (row 199 cols 100..199, col 199 rows 100..198). The pred ring is the
    # same 20 px to the right (row 99 cols 119..219, col 119 rows 100..199, row 199 cols
    # 120..219, col 219 rows 100..198).
    # Pred ring pixels within 8 px of the GT ring: top row cols 119..207 (89), bottom row cols
    # 120..207 (88), left column rows 100..107 and 191..199 (17), right column none: 194.
    # GT ring pixels within 8 px of the pred ring: top row cols 111..199 (89), left column
    # none, bottom row cols 111..199 (89, the last via pred pixel (199, 119)), right column
    # rows 100..107 and 191..198 (16): 194. P = R = F = 194 / 400.
    gt = _square(480, 854, 100, 100, 100)
    pred = _square(480, 854, 100, 120, 100).astype(bool)
    assert int(mask_boundary(gt.astype(bool)).sum()) == 400
    assert boundary_f(pred, gt) == pytest.approx(194 / 400, abs=1e-12)
    # An explicit radius 0 keeps only exact overlaps: row 99 cols 119..199 (81), row 199 cols
    # 120..199 (80) and (199, 119) (1) -> 162 / 400.
    assert boundary_f(pred, gt, radius=0) == pytest.approx(162 / 400, abs=1e-12)


def test_boundary_f_empty_cases():
    gt = _square(40, 40, 10, 10, 10)
    empty = np.zeros((40, 40), bool)
    assert boundary_f(empty, np.zeros((40, 40), np.uint8)) == 1.0
    assert boundary_f(empty, gt) == 0.0
    assert boundary_f(gt.astype(bool), np.zeros((40, 40), np.uint8)) == 0.0


def test_boundary_f_void_removed_from_both_masks():
    # GT square (boundary ring 400 px) predicted exactly, plus a 10x10 blob far away (its ring:
    # 11 + 10 + 10 + 9 = 40 px).
    gt = _square(480, 854, 100, 100, 100)
    pred = gt.astype(bool).copy()
    pred[300:310, 500:510] = True
    # Blob counted as background: precision = 400 / 440, recall 1, F = 2 * 400 / (400 + 440).
    assert boundary_f(pred, gt) == pytest.approx(800 / 840, abs=1e-12)
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
