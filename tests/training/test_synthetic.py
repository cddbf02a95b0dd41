"""Synthetic generator: determinism, split properties, expressions, masks, flow, dataset."""

from __future__ import annotations

import copy
import re

import cv2
import numpy as np
import pytest

from engine.preprocess import parse_size
from training.sample import Sample
from training.synthetic import (
    LEXICON,
    PARTITIONS,
    SyntheticDataset,
    SyntheticSpec,
    generate_clip,
    partition_seeds,
)
from training.synthetic.generator import target_count
from training.synthetic.grammar import choose_attributes

SPEC = SyntheticSpec(size=(96, 128), frames=6)
SEEDS = range(12)


@pytest.fixture(scope="module")
def clips():
    return {
        split: [generate_clip(s, split=split, spec=SPEC) for s in SEEDS]
        for split in ("appearance", "motion")
    }


def parse_expression(text: str) -> dict[str, str]:
    """Independent reading of an expression back into canonical attributes."""
    assert text == text.lower() and text == " ".join(text.split())
    assert text.startswith("the ")
    rest = " " + text[4:] + " "
    found: dict[str, str] = {}
    categories = ("motion", "motion_adjective", "shape", "size", "colour")
    phrases = [
        (len(p), cat, canon, p)
        for cat in categories
        for canon, forms in LEXICON[cat].items()
        for p in forms
    ]
    for _, cat, canon, phrase in sorted(phrases, reverse=True):  # longest phrases first
        key = "motion" if cat == "motion_adjective" else cat
        pat = f" {phrase} "
        if pat in rest:
            assert key not in found, f"{text!r}: two {key} phrases"
            found[key] = canon
            rest = rest.replace(pat, " ", 1)
    assert not rest.strip(), f"{text!r}: unparsed words {rest.strip()!r}"
    assert "shape" in found
    return found


def matching(objects, attrs: dict[str, str]):
    return [o for o in objects if all(o.attributes[k] == v for k, v in attrs.items())]


def test_same_seed_same_bytes_other_seed_differs():
    a = generate_clip(7, split="motion", spec=SPEC)
    b = generate_clip(7, split="motion", spec=SPEC)
    assert a.digest() == b.digest()
    assert all(np.array_equal(x, y) for x, y in zip(a.frames, b.frames))
    assert [o.expression for o in a.objects] == [o.expression for o in b.objects]
    assert generate_clip(8, split="motion", spec=SPEC).digest() != a.digest()
    assert generate_clip(7, split="appearance", spec=SPEC).digest() != a.digest()


def test_clip_shapes_and_types(clips):
    for clip in clips["appearance"][:3] + clips["motion"][:3]:
        assert len(clip.frames) == SPEC.frames
        assert SPEC.min_objects <= len(clip.objects) <= SPEC.max_objects
        assert len(clip.targets) == target_count(clip.seed, split=clip.split, spec=SPEC)
        for f in clip.frames:
            assert f.shape == (96, 128, 3) and f.dtype == np.uint8
        for o in clip.objects:
            assert o.masks.shape == (SPEC.frames, 96, 128) and o.masks.dtype == np.uint8
            assert set(np.unique(o.masks)) <= {0, 1}
        # backgrounds are textured, not flat
        assert clip.frames[0].reshape(-1, 3).std(0).min() > 3


def test_appearance_expressions_single_out_by_appearance(clips):
    for clip in clips["appearance"]:
        assert all(o.is_target for o in clip.objects)
        looks = [o.appearance for o in clip.objects]
        assert len(set(looks)) == len(looks), "appearance split must have no look-alikes"
        for o in clip.objects:
            parsed = parse_expression(o.expression)
            assert parsed == o.expression_attributes
            assert "motion" not in parsed
            assert matching(clip.objects, parsed) == [o]
            # fewest: dropping any one attribute (other than shape) makes it ambiguous
            for k in set(parsed) - {"shape"}:
                fewer = {a: v for a, v in parsed.items() if a != k}
                assert len(matching(clip.objects, fewer)) > 1


def test_motion_split_needs_motion(clips):
    for clip in clips["motion"]:
        t1, t2 = clip.targets
        assert t1.appearance == t2.appearance and t1.bgr == t2.bgr
        assert t1.diameter == t2.diameter
        assert t1.motion != t2.motion
        for o in (t1, t2):
            parsed = parse_expression(o.expression)
            assert parsed == o.expression_attributes
            assert "motion" in parsed
            assert matching(clip.objects, parsed) == [o]
            without = {k: v for k, v in parsed.items() if k != "motion"}
            assert len(matching(clip.objects, without)) >= 2
        others = [o for o in clip.objects if not o.is_target]
        for o in others:
            assert o.appearance != t1.appearance
            assert matching(clip.objects, parse_expression(o.expression)) == [o]


def test_motion_targets_really_move(clips):
    min_px = SPEC.speed[0] * min(SPEC.size)
    for clip in clips["motion"]:
        moving = [o for o in clip.targets if o.motion != "static"]
        assert moving, "at least one twin moves"
        for o in moving:
            steps = np.diff(o.centers, axis=0) - np.diff(clip.camera, axis=0)  # (T-1, 2)
            assert np.all(np.linalg.norm(steps, axis=1) >= min_px - 1e-9)
            assert min_px >= 2.5
        for o in clip.targets:
            if o.motion == "static":
                assert np.allclose(o.centers - clip.camera, o.centers[0] - clip.camera[0])


def test_expressions_unique_per_clip(clips):
    for clip in clips["appearance"] + clips["motion"]:
        expr = [o.expression for o in clip.objects]
        assert len(set(expr)) == len(expr)


def test_synonyms_vary_wording(clips):
    words = {o.expression for c in clips["appearance"] + clips["motion"] for o in c.objects}
    used = {f for forms in LEXICON["shape"].values() for f in forms if any(f in w for w in words)}
    assert len(used) > len(LEXICON["shape"]), "several synonyms per shape must appear"


def test_masks_visible_disjoint_and_match_render(clips):
    for clip in clips["appearance"] + clips["motion"]:
        stack = np.stack([o.masks for o in clip.objects])  # (N, T, H, W)
        assert stack.sum(0).max() <= 1, "visible masks overlap"
        for o in clip.objects:
            area = o.masks.reshape(SPEC.frames, -1).sum(1)
            assert np.all(area > 0), f"{clip.video_id} object {o.object_id} vanished"
            for t, frame in enumerate(clip.frames):
                m = o.masks[t] > 0
                diff = np.abs(frame[m].astype(int) - np.array(o.bgr)).max(1)
                assert np.mean(diff < 70) > 0.97, "masked pixels are not the object's colour"
        # analytic check for round objects: visible mask = disc minus occluders (1 px slack)
        for o in clip.objects:
            if o.shape != "circle":
                continue
            hh, ww = SPEC.size
            yy, xx = np.mgrid[0:hh, 0:ww] + 0.5
            for t in range(SPEC.frames):
                cx, cy = o.centers[t]
                dist = np.hypot(xx - 0.5 - cx, yy - 0.5 - cy)
                front = [p.masks[t] for p in clip.objects if p.depth > o.depth]
                occl = np.any(front, axis=0) if front else np.zeros((hh, ww), bool)
                inner = (dist <= o.diameter / 2 - 1) & ~occl
                outer = dist <= o.diameter / 2 + 1
                m = o.masks[t] > 0
                assert np.all(m[inner]) and not np.any(m & ~outer)


def test_choose_attributes_picks_fewest():
    objs = [
        {"shape": "circle", "size": "small", "colour": "red", "motion": "left"},
        {"shape": "circle", "size": "big", "colour": "red", "motion": "left"},
        {"shape": "circle", "size": "small", "colour": "blue", "motion": "left"},
        {"shape": "star", "size": "small", "colour": "red", "motion": "up"},
    ]
    rng = np.random.default_rng(0)
    assert choose_attributes(objs, 3, allowed=("size", "colour"), rng=rng) == ()
    assert choose_attributes(objs, 1, allowed=("size", "colour"), rng=rng) == ("size",)
    assert choose_attributes(objs, 0, allowed=("size", "colour"), rng=rng) == ("size", "colour")
    with pytest.raises(ValueError, match="cannot be singled out"):
        choose_attributes(objs[:2] + objs[:1], 0, allowed=("colour",), rng=rng)
    with pytest.raises(ValueError, match="valid: size, colour, motion"):
        choose_attributes(objs, 0, allowed=("texture",), rng=rng)


def test_dataset_samples_and_flow():
    ds = SyntheticDataset(split="motion", seeds=[3, 4], spec=SPEC, cache_clips=2)
    assert len(ds) == 2 * 2 * SPEC.frames
    s0 = ds[0]
    assert isinstance(s0, Sample)
    assert s0.frame_index == 0 and s0.prev_frame is None
    assert s0.flow.shape == (96, 128, 2) and s0.flow.dtype == np.float32
    assert not s0.flow.any()
    clip, _ = ds.clip(3)
    for i in range(1, SPEC.frames):
        s = ds[i]
        assert s.frame_index == i and s.video_id == clip.video_id and s.split == "motion"
        assert np.array_equal(s.prev_frame, clip.frames[i - 1])
        assert s.expression == clip.targets[0].expression
        assert np.array_equal(s.mask, clip.targets[0].masks[i])
    assert ds[SPEC.frames].object_id == str(clip.targets[1].object_id)
    assert ds[-1].video_id == "motion-0000000004"
    with pytest.raises(IndexError):
        ds[len(ds)]
    # moving objects show flow along their motion inside their (eroded) mask
    kernel = np.ones((3, 3), np.uint8)
    ratios, still = [], []
    for i in range(len(ds)):
        s = ds[i]
        seed, k, t = ds.locate(i)
        obj = ds.clip(seed)[0].targets[k]
        core = cv2.erode(s.mask, kernel) > 0
        if t == 0 or core.sum() < 20:
            continue
        if obj.motion == "static":
            still.append(np.median(np.linalg.norm(s.flow[core], axis=1)))
            continue
        v = np.asarray(obj.velocity)
        along = (s.flow[core] @ v) / np.linalg.norm(v)  # px along the motion
        ratios.append(np.median(along) / np.linalg.norm(v))
    ratios = np.array(ratios)
    assert len(ratios) >= 5
    assert np.median(ratios) > 0.5, ratios
    assert np.mean(ratios > 0.2) >= 0.8, ratios
    assert still and np.median(still) < 0.5  # px; no camera shake at this size


def test_dataset_copy_without_flow_object_and_no_flow_mode():
    ds = SyntheticDataset(split="appearance", seeds=range(2), spec=SPEC)
    ds[1]
    clone = copy.deepcopy(ds)  # what worker processes get: no cv2 object, empty cache
    assert clone._flow is None and len(clone._cache) == 0
    assert np.array_equal(clone[5].flow, ds[5].flow)
    plain = SyntheticDataset(split="appearance", seeds=range(2), spec=SPEC, flow_preset=None)
    assert plain[3].flow is None


def test_partitions_disjoint_and_seed_helpers():
    ranges = sorted(PARTITIONS.values())
    assert all(a[1] <= b[0] for a, b in zip(ranges, ranges[1:]))
    assert partition_seeds("val", 3) == range(1_000_000, 1_000_003)
    with pytest.raises(ValueError, match="valid: train, val, test"):
        partition_seeds("dev")
    with pytest.raises(ValueError, match="leaves it"):
        partition_seeds("val", 200_000)


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda: generate_clip(0, split="colour", spec=SPEC), "valid: appearance, motion"),
        (lambda: generate_clip(-1, split="motion", spec=SPEC), "non-negative int"),
        (lambda: SyntheticSpec(size=(20, 20)), "at least 48x48"),
        (lambda: SyntheticSpec(min_objects=1), "min_objects"),
        (lambda: SyntheticSpec(frames=40), "cannot stay in frame"),
        (lambda: SyntheticSpec(big_diameter=(0.17, 0.2)), "unambiguous"),
        (lambda: SyntheticSpec.from_dict({"sizes": [1, 2]}), "unknown SyntheticSpec fields"),
        (lambda: parse_size("96by128"), "HxW"),
        (lambda: SyntheticDataset(split="all", seeds=[1]), "valid: appearance, motion"),
        (lambda: SyntheticDataset(split="motion", seeds="test"), "fixed_test_dataset"),
        (lambda: SyntheticDataset(split="motion", seeds=[]), "empty"),
        (lambda: SyntheticDataset(split="motion", seeds=[1], flow_preset="x"), "valid: ultrafast"),
    ],
)
def test_bad_input_raises(call, pattern):
    with pytest.raises(ValueError, match=re.escape(pattern)):
        call()


def test_spec_dict_round_trip():
    assert SyntheticSpec.from_dict(SPEC.to_dict()) == SPEC


def test_attribute_coverage(clips):
    everything = [o for c in clips["appearance"] + clips["motion"] for o in c.objects]
    assert {o.motion for o in everything} == {"static", "left", "right", "up", "down"}
    assert {o.size for o in everything} == {"small", "big"}
    assert len({o.shape for o in everything}) >= 6
    used = [set(o.expression_attributes) - {"shape"} for o in everything]
    assert any(u == set() for u in used) and any(len(u) >= 2 for u in used)
    assert any(u == {"size", "colour"} for u in used)
    assert any("motion" in u and len(u) >= 2 for u in used)
