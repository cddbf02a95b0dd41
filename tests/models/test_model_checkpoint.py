"""Checkpoint folders: round trips and clear errors for every kind of damage."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from models.checkpoint import (
    CONFIG_FILE,
    DEFAULT_CHECKPOINT,
    TOKENIZER_FILES,
    WEIGHTS_FILE,
    CheckpointError,
    load_checkpoint,
    read_checkpoint_config,
    save_checkpoint,
)
from models.config import build_config
from models.hinet import build_model
from models.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def model(tiny_config):
    torch.manual_seed(0)
    net = build_model(tiny_config)
    # Non-trivial BatchNorm statistics so they are part of what must round-trip.
    net.train()
    with torch.no_grad():
        net(
            torch.randn(2, 3, 64, 64),
            torch.randn(2, 2, 64, 64),
            torch.ones(2, 4).long() * 5,
            torch.ones(2, 4).long(),
        )
    return net.eval()


@pytest.fixture
def ckpt(tmp_path, model, tokenizer) -> Path:
    return save_checkpoint(tmp_path / "ckpt", model=model, tokenizer=tokenizer, meta={"step": 7})


def _outputs(net, make_inputs):
    image, flow, ids, mask = make_inputs()
    with torch.no_grad():
        return net(image, flow, ids, mask)


def test_round_trip_fp32_is_bit_exact(ckpt, model, tokenizer, make_inputs):
    assert sorted(p.name for p in ckpt.iterdir()) == sorted(
        [WEIGHTS_FILE, CONFIG_FILE, TOKENIZER_FILES[0]]
    )
    loaded, tok, meta = load_checkpoint(ckpt)
    assert not loaded.training
    assert meta == {"step": 7}
    assert loaded.config == model.config
    assert tok.to_bytes() == tokenizer.to_bytes()
    ref = model.state_dict()
    for name, t in loaded.state_dict().items():
        assert torch.equal(t, ref[name]), name
    assert torch.equal(_outputs(loaded, make_inputs), _outputs(model, make_inputs))


def test_round_trip_fp16_storage(tmp_path, model, tokenizer, make_inputs):
    full = save_checkpoint(tmp_path / "a", model=model, tokenizer=tokenizer)
    half = save_checkpoint(tmp_path / "b", model=model, tokenizer=tokenizer, dtype="float16")
    size_full = (full / WEIGHTS_FILE).stat().st_size
    size_half = (half / WEIGHTS_FILE).stat().st_size
    assert size_half < 0.55 * size_full
    assert load_file(str(half / WEIGHTS_FILE))["decoder.head.weight"].dtype == torch.float16
    loaded, _, _ = load_checkpoint(half)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    a, b = _outputs(loaded, make_inputs), _outputs(model, make_inputs)
    assert not torch.equal(a, b)
    torch.testing.assert_close(a, b, atol=5e-2, rtol=5e-2)


def test_read_config_is_torch_free(ckpt):
    code = (
        "import sys; from models.checkpoint import read_checkpoint_config as r; "
        f"c, t, m = r({str(ckpt)!r}); assert 'torch' not in sys.modules; "
        "assert m == {'step': 7} and c.fusion_dim == 32 and t.vocab_size > 4"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


def test_read_config_without_weights(ckpt, tiny_config):
    (ckpt / WEIGHTS_FILE).unlink()
    config, tok, meta = read_checkpoint_config(ckpt)
    assert config == tiny_config and meta == {"step": 7}
    with pytest.raises(CheckpointError, match=f"no {WEIGHTS_FILE}"):
        load_checkpoint(ckpt)


def test_missing_folder_and_files(tmp_path, ckpt):
    with pytest.raises(CheckpointError, match="folder not found"):
        load_checkpoint(tmp_path / "nowhere")
    (ckpt / TOKENIZER_FILES[0]).unlink()
    with pytest.raises(CheckpointError, match=f"no {TOKENIZER_FILES[0]}"):
        load_checkpoint(ckpt)
    (ckpt / CONFIG_FILE).unlink()
    with pytest.raises(CheckpointError, match=f"no {CONFIG_FILE}"):
        read_checkpoint_config(ckpt)


def test_invalid_json(ckpt):
    (ckpt / CONFIG_FILE).write_text('{"format": "hinet-stream-checkpoint", ')
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(ckpt)


def _edit_header(ckpt: Path, fn) -> None:
    path = ckpt / CONFIG_FILE
    header = json.loads(path.read_text())
    fn(header)
    path.write_text(json.dumps(header))


def test_config_key_mismatch(ckpt):
    _edit_header(ckpt, lambda h: h["config"].update(fusion_width=64))
    with pytest.raises(CheckpointError, match="fusion_width"):
        load_checkpoint(ckpt)


def test_config_value_invalid(ckpt):
    _edit_header(ckpt, lambda h: h["config"].update(backbone="resnet50"))
    with pytest.raises(CheckpointError, match="resnet50"):
        load_checkpoint(ckpt)


def test_wrong_format_version(ckpt):
    _edit_header(ckpt, lambda h: h.update(format_version=99))
    with pytest.raises(CheckpointError, match="format_version 99"):
        load_checkpoint(ckpt)


def test_edited_config_shape_mismatch(ckpt):
    # The hashes still match; the architecture no longer does.
    _edit_header(ckpt, lambda h: h["config"].update(decoder_dim=24))
    with pytest.raises(CheckpointError, match=r"decoder\..*shape \(.*16.*\).*needs \(.*24"):
        load_checkpoint(ckpt)


def test_truncated_weights(ckpt):
    path = ckpt / WEIGHTS_FILE
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(ckpt)
    # Even with the hash updated, a truncated file is refused as unreadable.
    import hashlib

    _edit_header(
        ckpt, lambda h: h.update(weights_sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    )
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_checkpoint(ckpt)


def test_flipped_bytes(ckpt):
    path = ckpt / WEIGHTS_FILE
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(ckpt)


def test_corrupt_tokenizer(ckpt):
    path = ckpt / TOKENIZER_FILES[0]
    raw = bytearray(path.read_bytes())
    raw[10] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=TOKENIZER_FILES[0]):
        read_checkpoint_config(ckpt)


def _rehash(ckpt: Path) -> None:
    import hashlib

    digest = hashlib.sha256((ckpt / WEIGHTS_FILE).read_bytes()).hexdigest()
    _edit_header(ckpt, lambda h: h.update(weights_sha256=digest))


def test_missing_and_unexpected_tensors(ckpt):
    path = ckpt / WEIGHTS_FILE
    state = load_file(str(path))
    del state["decoder.head.weight"]
    state["decoder.extra.weight"] = torch.zeros(3)
    save_file(state, str(path))
    _rehash(ckpt)
    with pytest.raises(CheckpointError, match=r"missing tensors \[decoder.head.weight\]") as e:
        load_checkpoint(ckpt)
    assert "decoder.extra.weight" in str(e.value)


def test_wrong_presets_weights(tmp_path, tokenizer, ckpt):
    other = build_model(build_config("hinet_tiny", motion_gate=False), pretrained_backbone=False)
    other_dir = save_checkpoint(tmp_path / "other", model=other, tokenizer=tokenizer)
    (ckpt / WEIGHTS_FILE).write_bytes((other_dir / WEIGHTS_FILE).read_bytes())
    _rehash(ckpt)
    with pytest.raises(CheckpointError, match=r"missing tensors \[(motion|gates)\."):
        load_checkpoint(ckpt)


def test_non_finite_weights(ckpt):
    path = ckpt / WEIGHTS_FILE
    state = load_file(str(path))
    state["decoder.head.bias"] = torch.tensor([float("nan")])
    save_file(state, str(path))
    _rehash(ckpt)
    with pytest.raises(CheckpointError, match="non-finite"):
        load_checkpoint(ckpt)


def test_save_arguments(tmp_path, model, tokenizer, corpus):
    with pytest.raises(ValueError, match="float32, float16"):
        save_checkpoint(tmp_path / "x", model=model, tokenizer=tokenizer, dtype="bfloat16")
    with pytest.raises(ValueError, match="JSON"):
        save_checkpoint(tmp_path / "x", model=model, tokenizer=tokenizer, meta={"a": object()})
    letters = "abcdefghijklmnopqrstuvwxyz"
    many_words = " ".join(a + b for a in letters for b in letters)
    big = Tokenizer.train([*corpus, many_words], vocab_size=400, model_type="word")
    assert big.vocab_size > model.config.text.vocab_size
    with pytest.raises(CheckpointError, match="vocab_size"):
        save_checkpoint(tmp_path / "x", model=model, tokenizer=big)


def test_default_checkpoint_path():
    assert DEFAULT_CHECKPOINT.name == "hinet_lite0_prior_person_ref"
    assert DEFAULT_CHECKPOINT.parent.name == "weights"


def test_two_checkpoints_ship_the_default_and_the_baseline():
    from models.checkpoint import BASELINE_CHECKPOINT

    shipped = sorted(p.name for p in DEFAULT_CHECKPOINT.parent.iterdir() if p.is_dir())
    assert shipped == sorted([DEFAULT_CHECKPOINT.name, BASELINE_CHECKPOINT.name])


def test_trained_on_says_what_the_default_learnt_from():
    from models.checkpoint import read_checkpoint_config, trained_on

    text = trained_on(read_checkpoint_config(DEFAULT_CHECKPOINT)[2])
    assert "real frames (15 % of each batch) pseudo-labelled" in text
    # a run's best step is named by its run, not "best"
    assert "recipe synthetic_lite0_prior_person_ref, 2000 steps on top of " in text
    assert text.count("on top of synthetic_lite0_prior_person_tune)") == 1
    assert "the instance a COCO detector found" in text
    synthetic = trained_on({"recipe_config": {"data": {"kind": "synthetic"}}})
    assert synthetic.startswith("This model was trained on synthetic clips only")


@pytest.mark.parametrize(
    ("folder", "encoder", "tokenizer"),
    [
        ("hinet_lite0", "minilm", "WordPieceTokenizer"),
        ("hinet_lite0_prior_person_ref", "minilm", "WordPieceTokenizer"),
    ],
)
def test_shipped_checkpoints_load_with_their_own_text_side(folder, encoder, tokenizer):
    """The default (grounding prior) and the synthetic-only baseline: the config says which."""
    from models.checkpoint import load_checkpoint

    path = DEFAULT_CHECKPOINT.parent / folder
    assert (path / "model.safetensors").is_file(), f"{path} is not shipped"
    model, tok, meta = load_checkpoint(path)
    assert model.config.text.encoder == encoder and type(tok).__name__ == tokenizer
    ids, mask = tok.encode(tok.normalize("the red circle moving left"),
                           max_tokens=model.config.text.max_tokens,
                           max_chars=model.config.text.max_chars)  # fmt: skip
    words, words_mask, sentence, *classes = model.encode_text(
        torch.from_numpy(ids), torch.from_numpy(mask)
    )
    assert words.shape[-1] == sentence.shape[-1] == model.config.text.width
    assert meta["recipe_config"]["data"]["kind"] == "synthetic"
    assert model.config.prior == folder.startswith("hinet_lite0_prior") == bool(classes)
