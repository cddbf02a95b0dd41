"""The motion probes on the real tiny checkpoint: what they report, and how bad input fails."""

from __future__ import annotations

import json

import numpy as np
import pytest

from export.engines import create_engine
from models.checkpoint import BASELINE_CHECKPOINT
from training import motion_probe


@pytest.fixture(scope="module")
def engine(tiny_checkpoint):
    return create_engine("torch", tiny_checkpoint, input_size=(128, 128))


SHIPPED = BASELINE_CHECKPOINT  # the synthetic-only model: these checks are synthetic


def test_twin_probe_counts_frames(engine):
    result = motion_probe.twin_probe(engine, clips=1, progress=False)
    assert result.clips == 1
    assert result.frames == 2 * 7  # two referred twins, frames 1..7 of an 8-frame clip


def test_twin_probe_sees_the_shipped_gate_pick_the_referent():
    """With the shipped phrase-conditioned gate the named twin wins most frames (92.7 % on 40
    clips); an untrained or motion-blind model sits at chance (~50 %)."""
    shipped = create_engine("torch", SHIPPED, input_size=(160, 160))
    result = motion_probe.twin_probe(shipped, clips=3, progress=False)
    assert result.referent_wins > 0.7 and result.iou_referent > 2 * result.iou_lookalike


def test_flow_probe_sees_the_generator_motion():
    result = motion_probe.flow_probe(size=(96, 96), clips=3, progress=False)
    assert result.flow_size == (96, 96)
    assert result.objects > 0
    # Moving objects travel 0.03-0.06 of the frame per frame (2.9-5.8 px at 96 px); static
    # ones 0. The DIS flow must follow that far better than a zero field would.
    assert 0.0 < result.mean_speed_px < 6.0
    assert result.median_error_px < 0.5 * result.mean_speed_px


def test_iou_helper_on_hand_made_masks():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[:2] = True  # 8 pixels
    b[1:3] = True  # 8 pixels, 4 shared
    assert motion_probe._iou(a, b) == pytest.approx(4 / 12)
    assert motion_probe._iou(np.zeros_like(a), np.zeros_like(a)) == 0.0


def test_text_probe_separates_identical_from_different_phrases(engine):
    same = motion_probe._mean_pairwise_cosine([np.array([1.0, 2.0]), np.array([2.0, 4.0])])
    assert same == pytest.approx(1.0)
    result = motion_probe.text_probe(engine)

    # The probe reports the mean over shapes of the pairwise cosines of the engine's own
    # sentence vectors; recompute it here.
    def cosines(phrases):
        vectors = np.stack([engine.encode_text(p).sentence[0] for p in phrases]).astype(float)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        sims = vectors @ vectors.T
        return sims[np.triu_indices(len(phrases), 1)].mean()

    shapes, motions, colours = (
        motion_probe._SHAPES,
        motion_probe._MOTION_PHRASES,
        motion_probe._COLOURS,
    )
    motion = np.mean([cosines([f"the {s} {m}" for m in motions]) for s in shapes])
    colour = np.mean([cosines([f"the {c} {s}" for c in colours]) for s in shapes])
    assert result.motion_only_cosine == pytest.approx(motion, abs=1e-9)
    assert result.colour_only_cosine == pytest.approx(colour, abs=1e-9)


def test_text_probe_keeps_directions_apart_in_the_shipped_encoder():
    """The first encoders collapsed "moving left" / "moving up" (cosine 0.99)."""
    shipped = create_engine("torch", SHIPPED, input_size=(160, 160))
    result = motion_probe.text_probe(shipped)
    assert result.motion_only_cosine < 0.9


def test_cli_writes_json(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "probe.json"
    argv = [
        "--checkpoint",
        str(tiny_checkpoint),
        "--backend",
        "torch",
        "--clips",
        "1",
        "--json",
        str(out),
    ]
    assert motion_probe.main([*argv, "--no-progress"]) == 0
    report = json.loads(out.read_text())
    assert report["twin_probe"]["clips"] == 1
    assert set(report["text_probe"]) == {"motion_only_cosine", "colour_only_cosine"}
    assert report["flow_probe"]["objects"] > 0
    assert "referent wins" in capsys.readouterr().out


def test_cli_rejects_bad_input(tiny_checkpoint, tmp_path, capsys):
    assert motion_probe.main(["--checkpoint", str(tiny_checkpoint), "--clips", "0"]) == 2
    assert "--clips" in capsys.readouterr().err
    assert motion_probe.main(["--checkpoint", str(tmp_path / "missing")]) == 2
    assert "error:" in capsys.readouterr().err
