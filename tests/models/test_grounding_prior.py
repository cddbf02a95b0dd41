"""The grounding prior inside HINet (``config.prior``): text side, frame side, injection, export."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from tiny_model import randomise_prior_paths

from models.checkpoint import load_checkpoint
from models.config import HINetConfig, build_config
from models.decoder import upsample_to
from models.grounding import (
    LOG_FLOOR,
    LOG_SPAN,
    class_names,
    prior_features,
    simulate_prior,
)
from models.hinet import LEVELS


@pytest.fixture(scope="module")
def prior_model(tiny_prior_checkpoint):
    model, tokenizer, _ = load_checkpoint(tiny_prior_checkpoint)
    return model, tokenizer


def _encode(model, tokenizer, phrase: str):
    ids, mask = tokenizer.encode(tokenizer.normalize(phrase), max_tokens=66, max_chars=400)
    with torch.no_grad():
        return model.encode_text(torch.from_numpy(ids), torch.from_numpy(mask))


def test_config_needs_the_frozen_minilm_and_old_configs_load_without_prior() -> None:
    with pytest.raises(ValueError, match="prior needs the frozen minilm"):
        build_config("hinet_lite0_spm", prior=True)
    with pytest.raises(ValueError, match="prior_backbone"):
        build_config("hinet_lite0_prior", prior_backbone="resnet50")
    old = build_config("hinet_lite0").to_dict()
    del old["prior"], old["prior_backbone"]
    assert HINetConfig.from_dict(old).prior is False
    with pytest.raises(ValueError, match="prior_skip needs prior"):
        build_config("hinet_lite0", prior_skip=True)
    old = build_config("hinet_lite0_prior").to_dict()
    del old["prior_skip"]
    assert HINetConfig.from_dict(old).prior_skip is False


def test_text_side_names_imagenet_classes(prior_model) -> None:
    model, tokenizer = prior_model
    names = class_names()
    cases = (("the grey van", ("van",)), ("the kitten", ("cat",)),
             ("a red bicycle", ("bike", "bicycle")))  # fmt: skip
    for phrase, words in cases:
        *_, classes = _encode(model, tokenizer, phrase)
        assert classes.shape == (1, 1000)
        assert float(classes.sum()) == pytest.approx(1.0, abs=1e-4)
        top = [names[int(i)].lower() for i in classes[0].topk(3).indices]
        assert any(w in n for w in words for n in top), (phrase, top)


def test_frozen_imagenet_network_is_not_trained_and_not_stored(prior_model, tiny_prior_checkpoint):
    from safetensors.torch import load_file

    model, _ = prior_model
    model.train()
    try:
        assert not model.prior.net.training  # BatchNorm keeps ImageNet's statistics
        assert not any(p.requires_grad for p in model.prior.net.parameters())
    finally:
        model.eval()
    stored = load_file(str(tiny_prior_checkpoint / "model.safetensors"))
    assert not any(k.startswith("prior.net.") and "num_batches" not in k for k in stored)
    assert "prior.class_text" in stored and stored["prior.class_text"].shape == (1000, 384)


def test_prior_reaches_every_level_and_every_gate(prior_model) -> None:
    """With one injection at a time switched on, changing only the prior changes the logits."""
    model, tokenizer = prior_model
    words, words_mask, sentence, classes = _encode(model, tokenizer, "the grey van")
    g = torch.Generator().manual_seed(0)
    image = torch.randn(2, 3, 128, 128, generator=g)
    flow = torch.randn(2, 2, 128, 128, generator=g) * 0.3
    text = [t.expand(2, *t.shape[1:]) for t in (words, words_mask, sentence, classes)]

    def logits(prior: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model._frame(image, flow, *text, prior, torch.ones(2))[0]

    a, b = torch.rand(2, 1, 4, 4, generator=g) * 1e-2, torch.rand(2, 1, 4, 4, generator=g) * 1e-2
    paths = [model.prior_in[str(lv)].scale for lv in LEVELS]
    paths += [model.prior_in[str(lv)].shift for lv in LEVELS]
    paths += [model.gates[str(lv)].prior for lv in LEVELS]
    saved = [p.weight.detach().clone() for p in paths]
    try:
        with torch.no_grad():
            for p in paths:
                p.weight.zero_()
        assert torch.equal(logits(a), logits(b))  # all paths at zero: the prior is unread
        for p, w in zip(paths, saved):
            with torch.no_grad():
                p.weight.copy_(w)
            assert not torch.allclose(logits(a), logits(b)), p
            with torch.no_grad():
                p.weight.zero_()
    finally:
        with torch.no_grad():
            for p, w in zip(paths, saved):
                p.weight.copy_(w)


def test_forward_frame_without_classes_is_refused(prior_model) -> None:
    model, tokenizer = prior_model
    words, words_mask, sentence, _ = _encode(model, tokenizer, "the van")
    with pytest.raises(ValueError, match="pass the classes"):
        model.forward_frame(torch.zeros(1, 3, 64, 64), torch.zeros(1, 2, 64, 64), words,
                            words_mask, sentence)  # fmt: skip


def test_prior_features_shape_and_confidence() -> None:
    raw = torch.zeros(2, 1, 3, 4)
    raw[0, 0, 1, 2] = 0.1
    raw[0, 0, 0, 0] = 0.05
    raw[1] = 1e-3
    q = prior_features(raw)
    assert q.shape == (2, 2, 3, 4)
    assert float(q[0, 0].max()) == pytest.approx(1.0) and float(q[0, 0, 0, 0]) == pytest.approx(0.5)
    assert float(q[0, 1, 2, 3]) == pytest.approx((-1.0 - LOG_FLOOR) / LOG_SPAN, abs=1e-5)
    assert float(q[1, 1, 0, 0]) == pytest.approx((-3.0 - LOG_FLOOR) / LOG_SPAN, abs=1e-4)
    assert float(prior_features(torch.zeros(1, 1, 2, 2)).max()) == 0.0  # nothing named


def test_simulated_prior_finds_the_category_and_varies() -> None:
    cats = np.zeros((160, 160), np.uint8)
    cats[10:60, 10:60] = 1  # the referent, top left
    cats[100:150, 100:150] = 2  # another of its shape, bottom right
    cats[10:60, 100:150] = 3  # another shape, top right
    peaks, on_ref_or_same = [], 0
    for seed in range(200):
        m = simulate_prior(cats, (5, 5), np.random.default_rng(seed))
        assert m.shape == (1, 5, 5) and m.dtype == np.float32 and m.min() >= 0.0
        peaks.append(float(m.max()))
        y, x = np.unravel_index(int(m[0].argmax()), (5, 5))
        on_ref_or_same += cats[y * 32 + 16, x * 32 + 16] in (1, 2)
    assert on_ref_or_same > 120  # mostly the named category, not always (misses, noise)
    assert 1e-4 < min(peaks) < 1e-2 < max(peaks) < 0.25  # confident and uninformative draws


def test_onnx_graphs_carry_the_classes_with_parity(tiny_person_checkpoint) -> None:
    """The default's kind of model (prior, person class, prior skip) exported: its one export is
    shared with the person and prior-confidence tests (the run's export cache)."""
    pytest.importorskip("onnxruntime")
    from engine.base import frame_inputs, text_outputs
    from export.engines import create_engine

    onnx = create_engine("onnx", tiny_person_checkpoint, input_size=(128, 160))
    ref = create_engine("torch", tiny_person_checkpoint, input_size=(128, 160))
    assert "classes" in text_outputs(onnx.config) and "classes" in frame_inputs(onnx.config)
    assert onnx.config.prior_skip and onnx.config.prior_person
    a, b = onnx.encode_text("the white van"), ref.encode_text("the white van")
    assert a.classes is not None and a.classes.shape == (1, 1001)
    np.testing.assert_allclose(a.classes, b.classes, atol=1e-5)
    rng = np.random.default_rng(0)
    image = rng.standard_normal((1, 3, 128, 160), dtype=np.float32)
    flow = np.zeros((1, 2, 128, 160), np.float32)
    got, want = onnx.segment(image, flow, a), ref.segment(image, flow, b)
    np.testing.assert_allclose(got, want, atol=1e-3)
    other = ref.encode_text("the tabby cat")
    assert np.abs(ref.segment(image, flow, other) - want).max() > 1e-3  # the phrase's classes act
    ref.use_prior = False  # the ablation switch: the phrase names no class
    off = ref.encode_text("the white van")
    assert not off.classes.any() and np.array_equal(off.words, b.words)
    assert np.abs(ref.segment(image, flow, off) - want).max() > 1e-3
    onnx.close()
    ref.close()


def test_randomised_paths_helper_touches_only_prior_weights() -> None:
    from models.hinet import build_model

    model = build_model("hinet_tiny_prior", pretrained_backbone=False, pretrained_text=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    randomise_prior_paths(model, seed=0)
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(".prior" in k or k.startswith("prior_in.") for k in changed)


def _with_skip(model):
    """``model`` with ``prior_skip`` on: the same weights, the skip's gain at its start (1)."""
    from models.hinet import build_model

    skip = build_model(
        dataclasses.replace(model.config, prior_skip=True),
        pretrained_backbone=False,
        pretrained_text=False,
    ).eval()
    missing, unexpected = skip.load_state_dict(model.state_dict(), strict=False)
    assert missing == ["prior_gain"] and not unexpected
    return skip


def test_prior_skip_adds_the_gained_prior_map_to_the_logits(prior_model) -> None:
    model, tokenizer = prior_model
    skip = _with_skip(model)
    text = _encode(model, tokenizer, "the grey van")
    g = torch.Generator().manual_seed(3)
    image = torch.randn(1, 3, 128, 160, generator=g)
    flow = torch.zeros(1, 2, 128, 160)
    raw = torch.zeros(1, 1, 4, 5)
    raw[0, 0, 1, 3] = 0.2  # a sure prior, peaked at one cell
    with torch.no_grad():
        plain = model._frame(image, flow, *text, raw, torch.ones(1))[0]
        added = skip._frame(image, flow, *text, raw, torch.ones(1))[0] - plain
    where, conf = upsample_to(prior_features(raw), image).split(1, dim=1)
    torch.testing.assert_close(added, conf * (2 * where - 1), atol=1e-4, rtol=0)  # gain 1
    y, x = np.unravel_index(int(added.argmax()), added.shape[-2:])
    assert 32 <= y < 64 and 96 <= x < 128 and float(added.max()) > 0.3  # up on the prior's cell
    assert float(added[0, 0, :, :32].max()) < -0.3  # down where the prior has nothing
    with torch.no_grad():
        skip.prior_gain.mul_(3.0)
        tripled = skip._frame(image, flow, *text, raw, torch.ones(1))[0] - plain
        # The prior switched off (a phrase naming no class): zero map, nothing added.
        off = skip._frame(image, flow, *text, torch.zeros_like(raw), torch.ones(1))[0]
        plain_off = model._frame(image, flow, *text, torch.zeros_like(raw), torch.ones(1))[0]
    torch.testing.assert_close(tripled, 3 * added, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(off, plain_off)


def test_frame_graph_reports_the_prior_confidence_with_parity(tiny_person_checkpoint) -> None:
    """``prior_conf``: the confidence channel of the prior map, out of both backends alike."""
    pytest.importorskip("onnxruntime")
    from engine.base import frame_outputs
    from export.engines import create_engine

    onnx = create_engine("onnx", tiny_person_checkpoint, input_size=(128, 160))
    ref = create_engine("torch", tiny_person_checkpoint, input_size=(128, 160))
    assert frame_outputs(onnx.config) == ("logits", "prior_conf")
    rng = np.random.default_rng(2)
    image = rng.standard_normal((1, 3, 128, 160), dtype=np.float32)
    flow = np.zeros((1, 2, 128, 160), np.float32)
    confs = {}
    for phrase in ("the white van", "the tabby cat"):
        a, b = onnx.encode_text(phrase), ref.encode_text(phrase)
        (la, ca), (lb, cb) = onnx.segment_prior(image, flow, a), ref.segment_prior(image, flow, b)
        np.testing.assert_allclose(la, lb, atol=1e-3)
        assert ca == pytest.approx(cb, abs=1e-4) and 0.0 <= ca <= 1.0
        with torch.no_grad():  # what the frame network's prior map peaks at, on the log scale
            raw = ref.model.prior(torch.from_numpy(image), torch.from_numpy(b.classes))
        want = (np.log10(float(raw.max())) - LOG_FLOOR) / LOG_SPAN
        assert cb == pytest.approx(min(max(want, 0.0), 1.0), abs=1e-4)
        confs[phrase] = cb
    assert confs["the white van"] != pytest.approx(confs["the tabby cat"], abs=1e-3)
    ref.use_prior = False  # the ablation: no prior, no confidence
    assert ref.segment_prior(image, flow, ref.encode_text("the white van"))[1] is None
    onnx.close()
    ref.close()
