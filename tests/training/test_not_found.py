"""The "not found" calibration: absent phrases and the threshold rule."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.session import DEFAULT_MIN_SCORE
from export.engines import create_engine
from training.not_found import absent_phrase, calibrate, frame_scores
from training.synthetic.generator import generate_clip
from training.synthetic.spec import SyntheticSpec


def test_absent_phrase_names_no_object_of_the_clip() -> None:
    spec = SyntheticSpec(size=(64, 64), frames=2)
    for seed in range(20):
        clip = generate_clip(seed, split="appearance", spec=spec)
        phrase = absent_phrase(clip, np.random.default_rng(seed))
        _, colour, shape = phrase.split()
        assert all((o.colour, o.shape) != (colour, shape) for o in clip.objects)


def test_calibrate_keeps_the_asked_share_of_present_frames() -> None:
    present = np.asarray([0.0] + [0.6] * 9 + [0.9] * 90)  # 1 empty mask, 9 weak, 90 strong
    absent = np.asarray([0.0] * 10 + [0.55] * 40 + [0.95] * 50)
    cal = calibrate(present, absent, keep=0.95)
    assert cal.min_score == 0.6  # 0.61 would drop the 9 weak frames: 90 % found, < 95 %
    assert cal.present_found == pytest.approx(0.99)
    assert cal.absent_not_found == pytest.approx(
        0.5
    ) and cal.absent_not_found_at_zero == pytest.approx(0.1)
    strict = calibrate(present, absent, keep=0.9)  # 0.9 keeps exactly 90 %
    assert strict.min_score == 0.9 and strict.absent_not_found == pytest.approx(0.5)
    with pytest.raises(ValueError, match="present and absent"):
        calibrate(present, np.asarray([]))


def test_frame_scores_on_real_clips(tiny_minilm_checkpoint) -> None:
    engine = create_engine("torch", tiny_minilm_checkpoint, input_size=(64, 64))
    present, absent = frame_scores(engine, clips=1, progress=False)
    assert len(present) > 0 and len(absent) == 2 * 8  # one absent phrase per clip, 8 frames
    for scores in (present, absent):
        assert ((scores == 0) | ((scores >= 0.5) & (scores <= 1))).all()


def test_the_default_is_the_measured_calibration() -> None:
    """``DEFAULT_MIN_SCORE`` is what ``python -m training.not_found`` chose for the shipped model."""
    from models.checkpoint import DEFAULT_CHECKPOINT

    root = Path(__file__).resolve().parents[2]
    name = DEFAULT_CHECKPOINT.name
    report = json.loads((root / f"benchmarks/results/not_found_{name}.json").read_text())
    assert report["checkpoint"] == f"models/weights/{name}"
    assert report["calibration"]["min_score"] == DEFAULT_MIN_SCORE


def test_cli_runs_at_the_asked_size(tiny_minilm_checkpoint, tmp_path, capsys) -> None:
    from training.not_found import main

    out = tmp_path / "nf.json"
    code = main(["--checkpoint", str(tiny_minilm_checkpoint), "--backend", "torch", "--clips", "1",
                 "--size", "64x96", "--json", str(out), "--no-progress"])  # fmt: skip
    assert code == 0 and "min_score" in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["input_size"] == [64, 96] and report["clips_per_split"] == 1
    assert main(["--checkpoint", str(tmp_path / "none"), "--no-progress"]) == 2
