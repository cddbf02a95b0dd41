"""The training loop on tiny synthetic data: logs, curves, checkpoints, export, exact resume."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from models.checkpoint import load_checkpoint
from training.recipe import Recipe, load_recipe, lr_factor
from training.state import ResumeError
from training.train import main, train

RECIPES = Path(__file__).resolve().parents[2] / "training" / "recipes"


def _recipe(**overrides) -> Recipe:
    data = {
        "name": "unit_tiny",
        "preset": "hinet_tiny",
        "model": {"input_size": [64, 64]},
        "data": {
            "kind": "synthetic",
            "size": [64, 64],
            "train_clips": {"appearance": 2, "motion": 2},
            "val_clips": {"appearance": 1, "motion": 1},
            "spec": {"frames": 3},
        },
        "steps": 4,
        "batch_size": 2,
        "lr": 1e-3,
        "warmup_steps": 1,
        "tokenizer_type": "bpe",
        "vocab_size": 128,
        "val_every": 2,
        "checkpoint_every": 2,
        "log_every": 1,
        "val_batch_size": 8,
        "seed": 3,
    }
    data.update(overrides)
    return Recipe.from_dict(data)


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """An uninterrupted 4-step run with export (shared by several tests)."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("full")
    result = train(_recipe(), out_dir=out / "run", export=out / "export", progress=False)
    return out, result


def test_run_writes_logs_curves_checkpoints_and_export(full_run):
    out, result = full_run
    run = out / "run"
    assert result.step == 4 and len(result.losses) == 4
    assert all(math.isfinite(v) for v in result.losses)
    for name in ("train_log.csv", "val_log.csv", "curves.png", "summary.json"):
        assert (run / name).is_file() and (run / name).stat().st_size > 0, name
    rows = (run / "train_log.csv").read_text().strip().splitlines()
    assert rows[0].startswith("step,epoch,lr,loss") and len(rows) == 5
    val_rows = (run / "val_log.csv").read_text().strip().splitlines()
    assert len(val_rows) == 3 and "overall/mIoU" in val_rows[0] and "motion/oIoU" in val_rows[0]
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name in ("model/model.safetensors", "optimizer.safetensors", "rng.safetensors"):
        assert (run / "last" / name).is_file()
    state = json.loads((run / "last" / "trainer.json").read_text())
    assert state["step"] == 4 and state["recipe"]["name"] == "unit_tiny"
    # The export is a float16 checkpoint with the run's tokenizer and the validation metrics.
    model, tok, meta = load_checkpoint(out / "export")
    assert json.loads((out / "export" / "config.json").read_text())["dtype"] == "float16"
    assert model.config.input_size == (64, 64)
    assert meta["step"] == result.best["step"] and "overall" in meta["val_metrics"]
    assert tok.vocab_size <= model.config.text.vocab_size
    summary = json.loads((run / "summary.json").read_text())
    assert summary["step"] == 4 and summary["best"]["step"] in (2, 4)


def test_training_reduces_loss_on_a_fixed_batch(tmp_path):
    # 12 steps on ONE repeated sample pair: the loss must go down (it can fail if the
    # optimiser, the schedule or the loss wiring is broken).
    recipe = _recipe(
        steps=12,
        lr=3e-3,
        warmup_steps=0,
        batch_size=2,
        val_every=100,
        checkpoint_every=100,
        augment={
            "hflip": 0.0,
            "scale": [1.0, 1.0],
            "brightness": 0.0,
            "contrast": 0.0,
            "saturation": 0.0,
        },
        data={
            "kind": "synthetic",
            "size": [64, 64],
            "train_clips": {"appearance": 1},
            "val_clips": {"appearance": 1},
            "spec": {"frames": 2, "min_objects": 2, "max_objects": 2},
        },
    )
    result = train(recipe, out_dir=tmp_path / "run", progress=False)
    first, last = sum(result.losses[:2]) / 2, sum(result.losses[-2:]) / 2
    assert last < first * 0.98, result.losses  # deterministic (seeded, one thread)


def test_resume_is_bit_exact(full_run, tmp_path):
    _, full = full_run
    run = tmp_path / "run"
    part = train(_recipe(), out_dir=run, stop_after=2, progress=False)
    assert part.step == 2 and part.losses == full.losses[:2]
    state = json.loads((run / "last" / "trainer.json").read_text())
    assert state["step"] == 2
    rest = train(_recipe(), out_dir=run, resume=True, progress=False)
    assert rest.step == 4
    assert rest.losses == full.losses[2:]  # bit-exact: same batches, weights, optimiser, RNG
    rows = (run / "train_log.csv").read_text().strip().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4"]


def _stopped_run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    train(_recipe(), out_dir=run, stop_after=2, progress=False)
    return run


def test_corrupt_resume_state_raises_clear_error(tmp_path):
    run = _stopped_run(tmp_path)
    last = run / "last"
    opt = last / "optimizer.safetensors"
    data = bytearray(opt.read_bytes())
    data[-5] ^= 0xFF
    opt.write_bytes(bytes(data))
    with pytest.raises(ResumeError, match="optimizer.safetensors is corrupt"):
        train(_recipe(), out_dir=run, resume=True, progress=False)
    (last / "trainer.json").write_text("{not json")
    with pytest.raises(ResumeError, match="not valid JSON"):
        train(_recipe(), out_dir=run, resume=True, progress=False)


def test_corrupt_resume_model_raises(tmp_path):
    run = _stopped_run(tmp_path)
    weights = run / "last" / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ResumeError, match="model is corrupt"):
        train(_recipe(), out_dir=run, resume=True, progress=False)


def test_resume_errors(tmp_path):
    with pytest.raises(ResumeError, match="no resume state"):
        train(_recipe(), out_dir=tmp_path / "nothing", resume=True, progress=False)
    run = _stopped_run(tmp_path)
    with pytest.raises(ResumeError, match=r"differs .* \['lr'\]"):
        train(_recipe(lr=5e-4), out_dir=run, resume=True, progress=False)
    with pytest.raises(ValueError, match="already holds a run"):
        train(_recipe(), out_dir=run, progress=False)


def test_lr_schedule():
    kw = {"steps": 110, "warmup": 10}
    assert lr_factor(0, schedule="poly", **kw) == pytest.approx(0.1)
    assert lr_factor(9, schedule="poly", **kw) == pytest.approx(1.0)
    assert lr_factor(10, schedule="poly", **kw) == pytest.approx(1.0)
    assert lr_factor(60, schedule="poly", power=1.0, **kw) == pytest.approx(0.5)
    assert lr_factor(60, schedule="cosine", **kw) == pytest.approx(0.5)
    assert lr_factor(110, schedule="cosine", **kw) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(110, schedule="poly", floor=0.1, **kw) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="valid: poly, cosine"):
        lr_factor(0, schedule="step", **kw)


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"schedule": "linear"}, "valid: poly, cosine"),
        ({"preset": "hinet_huge"}, "unknown preset"),
        ({"warmup_steps": 4}, "warmup_steps"),
        ({"data": {"kind": "video"}}, "data.kind must be one of"),
        ({"loss": {"focal": 1.0}}, "unknown loss keys"),
        ({"augment": {"hue": 0.1}}, "unknown augment keys"),
        ({"model": {"width": 3}}, "unknown config fields"),
        ({"learning_rate": 0.1}, "unknown recipe keys"),
    ],
)
def test_bad_recipes_raise(overrides, match):
    with pytest.raises(ValueError, match=match):
        _recipe(**overrides)


def test_shipped_recipes_load():
    names = sorted(p.stem for p in RECIPES.glob("*.json"))
    for expected in (
        "a2d_lite0",
        "synthetic_lite0",
        "synthetic_lite0_nogate",
        "synthetic_lite0_nosent",
        "synthetic_lite0_plaingate",
        "synthetic_lite0_top",
    ):
        assert expected in names
    for name in names:
        recipe = load_recipe(RECIPES / f"{name}.json")
        assert recipe.name == name
    base = load_recipe(RECIPES / "synthetic_lite0.json").to_dict()
    for ablation, preset in (
        ("nogate", "hinet_lite0_nogate"),
        ("top", "hinet_lite0_top"),
        ("nosent", "hinet_lite0_nosent"),
        ("plaingate", "hinet_lite0_plaingate"),
    ):
        other = load_recipe(RECIPES / f"synthetic_lite0_{ablation}.json").to_dict()
        assert other["preset"] == preset
        diff = {k for k in base if base[k] != other[k]}
        assert diff == {"name", "preset"}, diff  # same data, steps and seed


def test_cli_reports_bad_input(tmp_path, capsys):
    assert main(["--recipe", str(tmp_path / "missing.json"), "--out", str(tmp_path / "o")]) == 2
    assert "recipe file not found" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    assert main(["--recipe", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_torchrun_two_processes_ddp(tmp_path):
    """Two CPU processes (gloo) under torchrun: one log, one checkpoint, synced weights."""
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    recipe = tmp_path / "tiny.json"
    recipe.write_text(json.dumps(_recipe(steps=2, val_every=2, checkpoint_every=2).to_dict()))
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_port", "29517", "-m", "training.train", "--recipe", str(recipe),
        "--out", str(tmp_path / "run"), "--device", "cpu", "--threads", "1", "--no-progress",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["step"] == 2
    rows = (tmp_path / "run" / "train_log.csv").read_text().strip().splitlines()
    assert len(rows) == 3  # rank 0 logs alone: header + 2 steps
    assert proc.stdout.count("done: step 2") == 2


def test_minilm_run_warm_starts_trains_and_resumes(tmp_path, full_run, tiny_minilm_checkpoint):
    """The pretrained text side in the loop: MiniLM's tokenizer, a warm start of everything but
    the text encoder from another checkpoint, frozen MiniLM weights untouched, exact resume."""
    from safetensors.torch import load_file

    from models.minilm import MiniLM
    from models.tokenizer import WordPieceTokenizer
    from training.torch_data import trim_tokens

    out, _ = full_run
    donor = out / "export"  # the SentencePiece tiny model of the full run
    recipe = _recipe(preset="hinet_tiny_minilm", init_from=str(donor), steps=3, val_every=3,
                     checkpoint_every=1, augment={"reword": 1.0})  # fmt: skip
    result = train(recipe, out_dir=tmp_path / "run", export=tmp_path / "export", progress=False)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["warm_started_tensors"] > 100  # backbone, motion, levels, decoder
    model, tok, _ = load_checkpoint(tmp_path / "export")
    assert isinstance(tok, WordPieceTokenizer)
    assert not any(
        k.startswith("text.bert") for k in load_file(str(tmp_path / "export" / "model.safetensors"))
    )
    fresh = MiniLM()
    fresh.load_pretrained()
    for k, v in fresh.state_dict().items():  # frozen: exactly the pinned weights after training
        torch.testing.assert_close(model.text.bert.state_dict()[k], v, rtol=0, atol=0)
    # resume continues bit-exactly from the last state
    again = train(recipe.__class__.from_dict({**recipe.to_dict(), "steps": 3}), out_dir=tmp_path / "run2",
                  stop_after=2, progress=False)  # fmt: skip
    cont = train(recipe, out_dir=tmp_path / "run2", resume=True, progress=False)
    assert cont.losses == pytest.approx(result.losses[2:], abs=0) and again.step == 2
    batch = {"token_ids": torch.tensor([[101, 5, 102, 0, 0], [101, 5, 6, 7, 102]]),
             "token_mask": torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]), "x": torch.zeros(2)}  # fmt: skip
    trimmed = trim_tokens(batch)
    assert trimmed["token_ids"].shape == (2, 5) and trim_tokens(
        {**batch, "token_mask": batch["token_mask"][:1].repeat(2, 1)}
    )["token_ids"].shape == (2, 3)


def test_warm_start_copies_the_text_side_only_when_the_text_config_matches(tiny_minilm_checkpoint):
    from models.hinet import build_model
    from training.train import warm_start

    donor, _, _ = load_checkpoint(tiny_minilm_checkpoint)
    model = build_model("hinet_tiny_prior", pretrained_backbone=False)
    copied = warm_start(model, tiny_minilm_checkpoint)
    assert "text.proj.weight" in copied and "backbone._conv_stem.weight" in copied
    assert not any(k.startswith("prior.") for k in copied)  # the donor has no prior
    torch.testing.assert_close(model.text.proj.weight, donor.text.proj.weight, rtol=0, atol=0)
    other = build_model("hinet_tiny", pretrained_backbone=False)  # SentencePiece text side
    assert not any(k.startswith("text.") for k in warm_start(other, tiny_minilm_checkpoint))
