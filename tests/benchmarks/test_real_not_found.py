"""``python -m benchmarks.real_not_found``: its cases, its threshold rule, and the default."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.real_not_found import CASES, load_cases, measure, pick_min_prior, rates
from engine.session import DEFAULT_MIN_PRIOR
from models.checkpoint import DEFAULT_CHECKPOINT

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


def test_pick_min_prior_keeps_the_share_asked_for():
    conf = np.array([0.1, 0.5, 0.6, 0.7, 0.8, 0.9, 0.9, 0.95, 0.97, 0.99])
    assert pick_min_prior(conf, keep=0.9) == 0.5  # 0.51 would lose two of ten
    assert pick_min_prior(conf, keep=1.0) == 0.1
    with pytest.raises(ValueError, match="prior"):
        pick_min_prior(np.array([np.nan, 0.5]), keep=0.9)


def test_rates_of_the_rules():
    # columns: score, prior_conf, mask not empty, steered, absent
    # (a tie the detector misses but the prior is sure of; a phrase no instance shows, on a
    # model without the prior)
    values = np.array([[0.9, 0.8, 1, 0, 1], [0.9, 0.1, 1, 1, 0], [0.2, 0.9, 1, 0, 0],
                       [0.9, 0.9, 0, 0, 0], [0.9, np.nan, 1, 0, 1]])  # fmt: skip
    present = np.array([True, True, False, False, False])
    r = rates(values, present, min_score=0.5, min_prior=0.5)
    assert r["score"] == {"present_found": 1.0, "absent_not_found": pytest.approx(2 / 3)}
    assert r["prior"] == {"present_found": 0.5, "absent_not_found": 0.0}
    assert r["both"] == {"present_found": 0.5, "absent_not_found": pytest.approx(2 / 3)}
    # the steered instance is found despite the prior; a class no instance shows is not found
    # unless the prior is sure of it
    assert r["session"] == {"present_found": 1.0, "absent_not_found": 1.0}


def test_cases_split_calibration_clips_from_benchmark_clips():
    try:
        files, cases = load_cases()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    cal = {c.clip for c in cases if c.split == "calibration"}
    test = {c.clip for c in cases if c.split == "test"}
    assert cal == {"Megamind", "tree"} and not cal & test  # no benchmark clip calibrates
    assert all(c.frame >= 1 for c in cases) and all(files[c].is_file() for c in cal | test)
    for split in ("calibration", "test"):
        kinds = {c.present for c in cases if c.split == split}
        assert kinds == {True, False}
    assert sum(c.present for c in cases if c.split == "test") == 41


def test_bad_case_files_are_refused(tmp_path):
    data = json.loads(CASES.read_text())
    data["calibration"][0]["clip"] = "nowhere"
    bad = tmp_path / "cases.json"
    bad.write_text(json.dumps(data))
    try:
        with pytest.raises(ValueError, match="unknown clip"):
            load_cases(bad)
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


def test_measure_records_score_and_prior_on_real_frames(tiny_prior_checkpoint):
    from export.engines import create_engine

    try:
        files, cases = load_cases()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    picked = [c for c in cases if c.split == "calibration"][:2]
    engine = create_engine("torch", tiny_prior_checkpoint, input_size=(128, 160))
    values = measure(engine, files, picked, instances=True, progress=False)
    engine.close()
    assert values.shape == (2, 5) and set(np.unique(values[:, 3:])) <= {0.0, 1.0}
    assert ((values[:, 0] >= 0) & (values[:, 0] <= 1)).all()
    assert ((values[:, 1] >= 0) & (values[:, 1] <= 1)).all()


def test_default_min_prior_is_the_calibrated_one():
    """``DEFAULT_MIN_PRIOR`` is what the benchmark chose for the shipped model."""
    report = json.loads((RESULTS / f"real_not_found_{DEFAULT_CHECKPOINT.name}.json").read_text())
    assert report["checkpoint"].endswith(DEFAULT_CHECKPOINT.name)
    assert report["min_prior"] == DEFAULT_MIN_PRIOR
