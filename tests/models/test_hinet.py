"""HINet network: presets, gradients, determinism, motion gate, odd sizes, ablation switches."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from models.config import PRESETS, build_config
from models.decoder import Decoder
from models.hinet import HINet, build_model
from models.interaction import Interaction, LevelProjection
from models.motion import MotionGate
from models.text import TextEncoder


@pytest.fixture(scope="module")
def tiny(tiny_config):
    torch.manual_seed(0)
    return build_model(tiny_config).eval()


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_builds_and_runs(preset, make_inputs):
    torch.manual_seed(0)
    model = build_model(preset).eval()
    cfg = model.config
    image, flow, ids, mask = make_inputs(batch=2, size=(64, 96))
    with torch.no_grad():
        feats = model.backbone(image)
        text = model.encode_text(ids, mask)
        words, wmask, sent = text[:3]
        logits = model.forward_frame(image, flow, *text)
    assert len(text) == (4 if cfg.prior else 3)  # + the ImageNet class weights
    assert [f.shape[1] for f in feats] == list(model.backbone.channels)
    assert [f.shape[-2:] for f in feats] == [(64 // s, 96 // s) for s in model.backbone.strides]
    assert words.shape == (2, 20, cfg.text.width) and words.dtype == torch.float32
    assert wmask.shape == (2, 20) and wmask.dtype == torch.float32
    assert sent.shape == (2, cfg.text.width)
    assert logits.shape == (2, 1, 64, 96) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
    assert logits.std() > 0
    assert hasattr(model, "motion") == cfg.motion_gate
    fused = {lv for lv in (3, 4, 5) if isinstance(model.levels[str(lv)], Interaction)}
    assert fused == set(cfg.fusion_levels)


def test_forward_equals_encode_then_frame(tiny, make_inputs):
    image, flow, ids, mask = make_inputs()
    with torch.no_grad():
        a = tiny(image, flow, ids, mask)
        b = tiny.forward_frame(image, flow, *tiny.encode_text(ids, mask))
    assert torch.equal(a, b)


def test_eval_is_deterministic(tiny, make_inputs):
    image, flow, ids, mask = make_inputs(batch=2)
    with torch.no_grad():
        a = tiny(image, flow, ids, mask)
        b = tiny(image, flow, ids, mask)
    assert torch.equal(a, b)


def test_batch_items_are_independent(tiny, make_inputs):
    image, flow, ids, mask = make_inputs(batch=2)
    mask[1, 3:] = 0
    ids = ids * mask
    with torch.no_grad():
        both = tiny(image, flow, ids, mask)
        one = tiny(image[1:], flow[1:], ids[1:], mask[1:])
    torch.testing.assert_close(both[1:], one, atol=1e-5, rtol=1e-5)


def test_gradients_reach_every_parameter(tiny_config, make_inputs):
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(tiny_config, deep_supervision=True)).train()
    image, flow, ids, mask = make_inputs(batch=2)
    logits, aux = model.forward_aux(image, flow, ids, mask)
    # M4 and M5 heads, then the language gate's score maps of levels 3, 4, 5.
    assert len(aux) == 5 and all(a.shape == logits.shape for a in aux)
    (logits.mean() + sum(a.mean() for a in aux)).backward()
    no_grad = [
        n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)
    ]
    # Token embeddings of ids never fed get zero rows but the tensor still has gradient.
    assert not no_grad, no_grad[:10]
    assert any(n.startswith("backbone._blocks.0.") for n, _ in model.named_parameters())


def test_forward_aux_without_deep_supervision(tiny, tiny_config, make_inputs):
    image, flow, ids, mask = make_inputs()
    with torch.no_grad():
        logits, aux = tiny.forward_aux(image, flow, ids, mask)
        plain = build_model(dataclasses.replace(tiny_config, gate_language=False)).eval()
        _, none = plain.forward_aux(image, flow, ids, mask)
    # Only the language gate's three score maps; none without it.
    assert len(aux) == 3 and all(a.shape == (1, 1, 64, 96) for a in aux)
    assert none == [] and logits.shape == (1, 1, 64, 96)


def test_padding_tokens_are_ignored(tiny, make_inputs):
    image, flow, ids, mask = make_inputs(n_tokens=4)
    other = ids.clone()
    other[:, 4:] = 7  # change only padded positions
    with torch.no_grad():
        a = tiny(image, flow, ids, mask)
        b = tiny(image, flow, other, mask)
        c = tiny(image, flow, ids[:, :6], mask[:, :6])  # shorter padding
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    torch.testing.assert_close(a, c, atol=1e-5, rtol=0)


def test_text_changes_output(tiny, make_inputs):
    image, flow, ids, mask = make_inputs()
    other = ids.clone()
    other[:, :5] = torch.arange(40, 45)
    with torch.no_grad():
        a = tiny(image, flow, ids, mask)
        b = tiny(image, flow, other, mask)
    assert (a - b).abs().max() > 1e-4


@pytest.mark.parametrize("form", ["multiplicative", "residual"])
def test_gate_on_flow_changes_output(tiny_config, make_inputs, form):
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(tiny_config, gate_form=form)).eval()
    assert all(g.form == form for g in model.gates.values())
    image, flow, ids, mask = make_inputs()
    with torch.no_grad():
        a = model(image, flow, ids, mask)
        b = model(image, torch.zeros_like(flow), ids, mask)
    assert (a - b).abs().max() > 1e-4


def test_gate_off_flow_is_ignored(tiny_config, make_inputs):
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(tiny_config, motion_gate=False)).eval()
    assert not any(isinstance(m, MotionGate) for m in model.modules())
    image, flow, ids, mask = make_inputs()
    with torch.no_grad():
        a = model(image, flow, ids, mask)
        b = model(image, torch.randn_like(flow) * 10, ids, mask)
    assert torch.equal(a, b)


def test_gate_forms_compute_what_they_say():
    torch.manual_seed(0)
    m = torch.randn(1, 8, 4, 5)
    f = torch.randn(1, 4, 4, 5)
    mult = MotionGate(dim=8, motion_dim=4, form="multiplicative").eval()
    res = MotionGate(dim=8, motion_dim=4, form="residual").eval()
    res.load_state_dict(mult.state_dict())
    with torch.no_grad():
        gate = torch.sigmoid(mult.g(torch.cat([m, f], dim=1)))
        torch.testing.assert_close(mult(m, f), m * gate)
        torch.testing.assert_close(res(m, f), m + m * gate)
    with pytest.raises(ValueError, match="multiplicative"):
        MotionGate(dim=8, motion_dim=4, form="additive")


def test_language_gate_matches_flow_against_the_phrase():
    torch.manual_seed(0)
    m = torch.randn(2, 8, 4, 5)
    f = torch.randn(2, 4, 4, 5)
    sentence = torch.randn(2, 6)
    gate = MotionGate(dim=8, motion_dim=4, form="multiplicative", text_dim=6).eval()
    with torch.no_grad():
        t = torch.tanh(gate.language(sentence))[:, :, None, None]
        score = gate.score(f * t)
        expected = m * torch.sigmoid(gate.g(torch.cat([m, f, f * t], dim=1)) + score)
        gated, got_score = gate.forward_score(m, f, sentence)
        torch.testing.assert_close(gated, expected)
        torch.testing.assert_close(got_score, score)
        torch.testing.assert_close(gate(m, f, sentence), expected)
        # Same M and F, another phrase: the gate changes.
        assert (gate(m, f, sentence) - gate(m, f, -sentence)).abs().max() > 1e-4
    with pytest.raises(ValueError, match="sentence"):
        gate(m, f)


def test_language_gate_is_the_default_and_legacy_configs_load_without_it(tiny_config):
    from models.config import HINetConfig

    assert tiny_config.gate_language
    model = build_model(tiny_config, pretrained_backbone=False)
    assert all(g.language is not None for g in model.gates.values())
    legacy = tiny_config.to_dict()
    del legacy["gate_language"]  # a config saved before the field existed
    old = HINetConfig.from_dict(legacy)
    assert old.gate_language is False
    old_model = build_model(old, pretrained_backbone=False)
    assert all(g.language is None for g in old_model.gates.values())
    with pytest.raises(ValueError, match="unknown"):
        HINetConfig.from_dict({**tiny_config.to_dict(), "gate_colour": True})


@pytest.mark.parametrize("size", [(65, 97), (33, 47), (100, 75)])
def test_odd_input_sizes(tiny, make_inputs, size):
    image, flow, ids, mask = make_inputs(size=size)
    with torch.no_grad():
        logits = tiny(image, flow, ids, mask)
    assert logits.shape == (1, 1, *size)
    assert torch.isfinite(logits).all()


def test_top_only_ablation_projects_lower_levels():
    model = build_model("hinet_lite0_top", pretrained_backbone=False)
    assert isinstance(model.levels["5"], Interaction)
    assert isinstance(model.levels["3"], LevelProjection)
    assert isinstance(model.levels["4"], LevelProjection)


def test_no_sentence_ablation(tiny_config, make_inputs):
    torch.manual_seed(0)
    # The language gate reads the sentence too; switch it off to see that the interaction alone
    # ignores the sentence.
    config = dataclasses.replace(tiny_config, use_sentence=False, gate_language=False)
    model = build_model(config).eval()
    assert not any(hasattr(m, "sentence") for m in model.levels.values())
    image, flow, ids, mask = make_inputs()
    words, wmask, sent = model.encode_text(ids, mask)
    with torch.no_grad():
        a = model.forward_frame(image, flow, words, wmask, sent)
        b = model.forward_frame(image, flow, words, wmask, torch.randn_like(sent))
    assert torch.equal(a, b)


def test_pretrained_backbone_is_loaded(tiny_config):
    a = build_model(tiny_config)
    b = build_model(tiny_config)
    c = build_model(tiny_config, pretrained_backbone=False)
    key = "_blocks.5._depthwise_conv.weight"
    sa, sb, sc = (m.backbone.state_dict()[key] for m in (a, b, c))
    assert torch.equal(sa, sb) and not torch.equal(sa, sc)


def test_build_model_errors():
    with pytest.raises(ValueError, match="hinet_lite0"):
        build_model("hinet_huge")
    with pytest.raises(ValueError, match="HINetConfig"):
        build_model(42)
    with pytest.raises(ValueError, match="HINetConfig"):
        HINet(config={"backbone": "efficientnet_lite0"})


def test_text_encoder_mask_semantics():
    torch.manual_seed(0)
    enc = TextEncoder(config=build_config("hinet_tiny").text).eval()
    ids = torch.tensor([[5, 6, 7, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 0, 0]])
    with torch.no_grad():
        words, wmask, sent = enc(ids, mask)
    assert torch.equal(wmask, mask.float())
    assert torch.equal(words[0, 3:], torch.zeros_like(words[0, 3:]))
    torch.testing.assert_close(sent[0], words[0, :3].mean(0))


def test_decoder_output_stride():
    dec = Decoder(fusion_dim=8, skip_ch=6, dim=4).eval()
    with torch.no_grad():
        logits, x4 = dec(
            torch.randn(1, 8, 9, 13),
            torch.randn(1, 8, 5, 7),
            torch.randn(1, 8, 3, 4),
            torch.randn(1, 6, 17, 25),
        )
    assert logits.shape == (1, 1, 17, 25) and x4.shape == (1, 4, 5, 7)
