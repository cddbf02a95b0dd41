"""Training for the grounding prior (simulated priors, category maps) and spatial expressions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from training.synthetic import generate_clip
from training.synthetic.dataset import SyntheticDataset, category_map
from training.synthetic.spatial import (
    MARGIN,
    POSITIONS,
    SpatialTestDataset,
    positions,
    spatial_expression,
)
from training.torch_data import AugmentConfig, ReferringTorchDataset, augment, swap_left_right


def _clip_with_spatial_referent():
    for seed in range(200):
        clip = generate_clip(seed, split="appearance")
        for obj in clip.targets:
            for t in range(clip.spec.frames):
                if positions(clip, obj, t):
                    return clip, obj, t
    raise AssertionError("no clip of 200 has a spatial referent")


def test_category_map_marks_referent_same_shape_and_other_objects() -> None:
    clip = generate_clip(7, split="appearance")
    obj = clip.targets[0]
    cats = category_map(clip, obj, 2)
    assert cats.dtype == np.uint8 and cats.shape == clip.frames[2].shape[:2]
    assert np.array_equal(cats == 1, obj.masks[2] > 0)
    for other in clip.objects:
        if other.object_id != obj.object_id:
            want = 2 if other.shape == obj.shape else 3
            visible = (other.masks[2] > 0) & (obj.masks[2] == 0)
            assert (cats[visible] == want).all()


def test_positions_hold_with_the_margin() -> None:
    clip, obj, t = _clip_with_spatial_referent()
    h, w = clip.frames[t].shape[:2]
    same = [o for o in clip.objects if o.shape == obj.shape and o.masks[t].any()]
    others = np.asarray([o.centers[t] for o in same if o.object_id != obj.object_id])
    x, y = obj.centers[t]
    for pos in positions(clip, obj, t):
        assert pos in POSITIONS
        if pos == "left":
            assert x + MARGIN * w <= others[:, 0].min()
        if pos == "right":
            assert x - MARGIN * w >= others[:, 0].max()
        if pos == "top":
            assert y + MARGIN * h <= others[:, 1].min()
        if pos == "bottom":
            assert y - MARGIN * h >= others[:, 1].max()
    alone = generate_clip(0, split="appearance")  # an object alone in its shape never qualifies
    for o in alone.objects:
        if sum(p.shape == o.shape for p in alone.objects) == 1:
            assert positions(alone, o, 0) == ()


def test_spatial_expressions_name_shape_and_position_and_flip() -> None:
    rng = np.random.default_rng(0)
    seen = {spatial_expression("circle", "left", rng) for _ in range(60)}
    assert all(s.startswith("the ") and "left" in s for s in seen) and len(seen) > 4
    assert all("right" in swap_left_right(s) and "left" not in swap_left_right(s) for s in seen)
    with pytest.raises(ValueError, match="unknown position"):
        spatial_expression("circle", "middle", rng)


def test_spatial_test_split_is_every_qualifying_frame_worded_once() -> None:
    base = SyntheticDataset(split="appearance", seeds=list(range(2000000, 2000006)),
                            flow_preset=None)  # fmt: skip
    split = SpatialTestDataset(base)
    assert 0 < len(split) < len(base)
    for i in range(len(split)):
        sample = split[i]
        seed, target, t = split.locate(i)
        clip, _ = split.clip(seed)
        obj = clip.targets[target]
        assert sample.attributes["position"] in positions(clip, obj, t)
        assert sample.split == "appearance/spatial"
        assert sample.expression == split[i].expression  # fixed wording
        assert np.array_equal(sample.mask, obj.masks[t])
    with pytest.raises(ValueError, match="grammar-worded"):
        SpatialTestDataset(SyntheticDataset(split="appearance", seeds=[1], wording="paraphrase"))


def test_augment_crops_and_flips_the_category_map_with_the_mask() -> None:
    clip, obj, t = _clip_with_spatial_referent()
    cats = category_map(clip, obj, t)
    mask = obj.masks[t]
    flow = np.zeros((*mask.shape, 2), np.float32)
    for seed in range(6):
        aug = augment(clip.frames[t], flow, mask, "the circle on the left", out_size=(96, 128),
                      rng=np.random.default_rng(seed),
                      config=AugmentConfig(hflip=0.5, scale=(1.0, 1.3)), categories=cats)  # fmt: skip
        assert aug.categories.shape == (96, 128)
        assert np.array_equal(aug.categories == 1, aug.mask == 1)


def _prior_config():
    from models.config import build_config

    return build_config("hinet_tiny_prior")


def test_torch_items_carry_a_simulated_prior_in_training_only() -> None:
    from models.pretrained import PretrainedMissingError, minilm_files
    from models.tokenizer import WordPieceTokenizer

    try:
        tok = WordPieceTokenizer.load(minilm_files()["tokenizer"])
    except PretrainedMissingError as exc:
        pytest.skip(str(exc))
    cfg = _prior_config()
    samples = SyntheticDataset(split="appearance", seeds=[11, 12], flow_preset=None)
    train = ReferringTorchDataset(samples, tokenizer=tok, config=cfg,
                                  augment=AugmentConfig(spatial=1.0), prior_sim=0.75)  # fmt: skip
    sims = []
    for i in range(0, len(samples), 3):
        item = train[i]
        assert item["prior"].shape == (1, 4, 4) and item["prior"].dtype == torch.float32
        sims.append(float(item["prior_sim"]))
        if sims[-1] == 0.0:
            assert float(item["prior"].abs().max()) == 0.0
        else:
            assert float(item["prior"].max()) > 0.0
    assert 0 < sum(sims) < len(sims)  # both the simulated and the network's own prior
    assert torch.equal(train[4]["prior"], train[4]["prior"])  # deterministic per epoch/index
    test = ReferringTorchDataset(samples, tokenizer=tok, config=cfg, augment=None)
    assert float(test[0]["prior_sim"]) == 0.0  # evaluation reads the network's own prior


def test_spatial_augmentation_words_qualifying_samples() -> None:
    from models.config import build_config
    from models.pretrained import PretrainedMissingError, minilm_files
    from models.tokenizer import WordPieceTokenizer

    try:
        tok = WordPieceTokenizer.load(minilm_files()["tokenizer"])
    except PretrainedMissingError as exc:
        pytest.skip(str(exc))
    samples = SyntheticDataset(split="appearance", seeds=list(range(20, 30)), flow_preset=None)
    qualifying = [i for i in range(len(samples)) if samples[i].positions][:8]
    assert qualifying
    seen = []
    cfg = build_config("hinet_tiny_minilm")
    ds = ReferringTorchDataset(samples, tokenizer=tok, config=cfg,
                               augment=AugmentConfig(spatial=1.0, hflip=0.0, scale=(1.0, 1.0)))  # fmt: skip
    original = tok.normalize
    tok.normalize = lambda text: (seen.append(text), original(text))[1]  # type: ignore[method-assign]
    for i in qualifying:
        ds[i]
    words = {"left", "right", "top", "bottom", "topmost", "uppermost", "lowest", "highest",
             "leftmost", "rightmost"}  # fmt: skip
    assert len(seen) == len(qualifying) and all(set(s.split()) & words for s in seen), seen
    with pytest.raises(ValueError, match="spatial"):
        AugmentConfig(spatial=1.5)


def test_prior_recipe_is_the_shipped_kind() -> None:
    from training.recipe import Recipe

    path = Path(__file__).resolve().parents[2] / "training/recipes/synthetic_lite0_prior.json"
    recipe = Recipe.from_dict(json.loads(path.read_text()))
    assert recipe.preset == "hinet_lite0_prior" and recipe.augment["spatial"] > 0


def test_real_nouns_stand_in_for_the_shape_only_where_the_prior_is_simulated() -> None:
    from models.pretrained import PretrainedMissingError, minilm_files
    from models.tokenizer import WordPieceTokenizer
    from training.synthetic.grammar import LEXICON
    from training.synthetic.wording import TRAIN_EXTRA

    try:
        tok = WordPieceTokenizer.load(minilm_files()["tokenizer"])
    except PretrainedMissingError as exc:
        pytest.skip(str(exc))
    shape_words = {w for forms in (*LEXICON["shape"].values(), *TRAIN_EXTRA["shape"].values())
                   for f in forms for w in f.split()}  # fmt: skip
    samples = SyntheticDataset(split="appearance", seeds=[31, 32], flow_preset=None)
    seen: list[str] = []
    original = tok.normalize
    tok.normalize = lambda text: (seen.append(text), original(text))[1]  # type: ignore[method-assign]
    for prior_sim in (1.0, 0.0):
        ds = ReferringTorchDataset(samples, tokenizer=tok, config=_prior_config(),
                                   augment=AugmentConfig(noun=1.0), prior_sim=prior_sim)  # fmt: skip
        seen.clear()
        for i in range(0, len(samples), 5):
            ds[i]
        with_shape = sum(bool(set(s.split()) & shape_words) for s in seen)
        if prior_sim:
            assert with_shape < len(seen) // 2  # mostly real nouns (a class name may share a word)
        else:
            assert with_shape == len(seen)  # the network's own prior: the shape is always named
