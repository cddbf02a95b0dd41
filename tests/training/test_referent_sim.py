"""Simulated detections for the referent input: each detector failure is drawn, and the dataset
hands the map to training (augmented or not) with the network's input size."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.referent_sim import ReferentSim, object_boxes, simulate_referent


def _scene() -> tuple[np.ndarray, np.ndarray]:
    target = np.zeros((96, 128), bool)
    target[20:50, 30:60] = True
    others = np.zeros((96, 128), bool)
    others[60:90, 90:120] = True
    return target, others


def _peak(m: np.ndarray) -> tuple[int, int]:
    y, x = np.unravel_index(np.argmax(m[0]), m.shape[1:])
    return int(y), int(x)


def test_object_boxes_are_the_connected_parts() -> None:
    target, others = _scene()
    boxes = object_boxes(target | others)
    assert sorted(map(tuple, boxes.astype(int).tolist())) == [(30, 20, 60, 50), (90, 60, 120, 90)]
    assert object_boxes(np.zeros((8, 8), bool)).shape == (0, 4)


def test_the_usual_draw_marks_the_referent_loosely() -> None:
    target, others = _scene()
    exact = ReferentSim(none=0.0, wrong=0.0, second=0.0, jitter=0.0, margin=0.0)
    m = simulate_referent(target, others, np.random.default_rng(0), exact)
    assert m.shape == (1, 96, 128) and m.dtype == np.float32
    assert np.array_equal(m[0] > 0, target)  # the box of a box-shaped object is the object
    y, x = _peak(m)
    assert abs(y - 35) <= 1 and abs(x - 45) <= 1  # the tent's top: the box's centre
    loose = ReferentSim(none=0.0, wrong=0.0, second=0.0)
    for seed in range(20):
        m = simulate_referent(target, others, np.random.default_rng(seed), loose)
        y, x = _peak(m)
        assert 20 <= y < 50 and 30 <= x < 60  # around the referent, never on the other object


def test_each_failure_is_drawn_at_about_its_rate() -> None:
    target, others = _scene()
    sim = ReferentSim()
    n, none, wrong, second = 400, 0, 0, 0
    for seed in range(n):
        m = simulate_referent(target, others, np.random.default_rng(seed), sim)
        if not m.any():
            none += 1
            continue
        y, x = _peak(m)
        wrong += not target[y, x]
        second += bool((m[0, 55:95, 85:125] > 0).any()) and bool(target[y, x])
    assert abs(none / n - sim.none) < 0.07
    shown = n - none
    assert abs(wrong / shown - sim.wrong) < 0.06
    assert abs(second / shown - sim.second * (1 - sim.wrong)) < 0.07


def test_an_absent_referent_gets_none_or_a_false_positive() -> None:
    empty = np.zeros((96, 128), bool)
    maps = [simulate_referent(empty, None, np.random.default_rng(s)) for s in range(200)]
    drawn = sum(bool(m.any()) for m in maps)
    expected = (1 - ReferentSim().none) * ReferentSim().false_positive
    assert abs(drawn / 200 - expected) < 0.1


def test_torch_items_carry_the_referent_map() -> None:
    from models.config import build_config
    from models.pretrained import PretrainedMissingError, minilm_files
    from models.tokenizer import WordPieceTokenizer
    from training.synthetic.dataset import SyntheticDataset
    from training.torch_data import AugmentConfig, ReferringTorchDataset

    try:
        tok = WordPieceTokenizer.load(minilm_files()["tokenizer"])
    except PretrainedMissingError as exc:
        pytest.skip(str(exc))
    cfg = build_config("hinet_tiny_referent")
    samples = SyntheticDataset(split="appearance", seeds=[11, 12], flow_preset=None)
    train = ReferringTorchDataset(samples, tokenizer=tok, config=cfg, augment=AugmentConfig())
    val = ReferringTorchDataset(samples, tokenizer=tok, config=cfg)
    on_target = shown = 0
    for i in range(0, len(samples), 2):
        for ds in (train, val):
            item = ds[i]
            ref = item["referent"]
            assert ref.shape == (1, *cfg.input_size) and ref.dtype == torch.float32
            if float(ref.max()) > 0:
                shown += 1
                y, x = np.unravel_index(int(torch.argmax(ref[0])), cfg.input_size)
                on_target += bool(item["target"][0, y, x] > 0 or item["target"].sum() == 0)
    assert shown and on_target / shown > 0.6  # most maps point at the referent
    first = val[0]["referent"]
    assert torch.equal(first, val[0]["referent"])  # validation draws the same maps every time
