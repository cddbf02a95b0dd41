"""Motion branch: a light CNN over optical flow and the per-level motion gate.

The flow input is the 2-channel field from :func:`engine.preprocess.prepare_flow` (pixels
divided by the flow grid size, times ``config.flow_gain``). :class:`MotionEncoder` turns it into
F3/F4/F5 at strides 8/16/32 with ``ceil(H / stride)`` sides, matching the TF-"same" backbone for
any input size. :class:`MotionGate` modulates an interaction feature ``M_l`` with ``F_l``:

- ``multiplicative``: ``M * sigmoid(g([M, F]))``
- ``residual``: ``M + M * sigmoid(g([M, F]))``

The gate's last bias starts at :data:`GATE_BIAS_INIT` so that an untrained gate passes most of
``M`` through (sigmoid(2) = 0.88) instead of halving it. ``g`` is a bottleneck:
1x1 conv-BN-ReLU to ``motion_dim``, 3x3 conv-BN-ReLU, 1x1 conv back to ``dim`` (one gate value
per channel and pixel).

With ``config.gate_language`` the gate also matches the motion against the phrase. With
``t = tanh(W s)`` from the sentence feature ``s``:

- ``score = w . (F * t)``, one logit per pixel: "this pixel moves the way the phrase says";
- ``gate = sigmoid(g([M, F, F * t]) + score)``.

During training ``score`` is also supervised with the target mask (an auxiliary output of
:meth:`models.hinet.HINet.forward_aux`). The first models, whose gate saw only ``[M, F]``, never
told two look-alikes apart by motion: their text encoder had collapsed the direction words
(cosine 0.99 between "moving left" and "moving right" sentences) because nothing rewarded
keeping them apart. The supervised score map is a direct path from direction words to the loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.config import GATE_FORMS
from models.layers import conv_bn_relu, init_weights

__all__ = ["GATE_BIAS_INIT", "MotionEncoder", "MotionGate"]

GATE_BIAS_INIT = 2.0


def _down(in_ch: int, out_ch: int) -> nn.Sequential:
    """3x3 stride-2 conv-BN-ReLU; output side ``ceil(in / 2)`` for any input side."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class MotionEncoder(nn.Module):
    """Flow -> motion features at strides 8, 16 and 32.

    Args:
        dim: Output width of every level (``config.motion_dim``).
    """

    def __init__(self, *, dim: int) -> None:
        super().__init__()
        mid = max(dim // 2, 8)
        self.stem = nn.Sequential(_down(2, mid), _down(mid, dim))  # stride 4
        self.down3 = _down(dim, dim)  # stride 8
        self.down4 = _down(dim, dim)  # stride 16
        self.down5 = _down(dim, dim)  # stride 32
        init_weights(self)

    def forward(self, flow: torch.Tensor) -> list[torch.Tensor]:
        """Encode flow.

        Args:
            flow: (B, 2, H, W) float32 normalised flow (dx, dy).

        Returns:
            [F3, F4, F5]: (B, dim, ceil(H / s), ceil(W / s)) for s = 8, 16, 32.
        """
        f3 = self.down3(self.stem(flow))
        f4 = self.down4(f3)
        f5 = self.down5(f4)
        return [f3, f4, f5]


class MotionGate(nn.Module):
    """Gate an interaction feature with a motion feature.

    Args:
        dim: Width of ``M`` (``fusion_dim``).
        motion_dim: Width of ``F`` (``motion_dim``).
        form: One of :data:`models.config.GATE_FORMS`.
        text_dim: Width of the sentence feature to condition the gate on, or ``None`` for a
            gate that sees only ``[M, F]``.
        prior_ch: Channels of the grounding prior the gate also reads (its logits get a 1x1
            convolution of the prior, initialised at zero), or ``None``.
    """

    def __init__(
        self,
        *,
        dim: int,
        motion_dim: int,
        form: str,
        text_dim: int | None = None,
        prior_ch: int | None = None,
    ) -> None:
        super().__init__()
        if form not in GATE_FORMS:
            raise ValueError(f"unknown gate form {form!r}; valid: {', '.join(GATE_FORMS)}")
        self.form = form
        self.language = nn.Linear(text_dim, motion_dim) if text_dim is not None else None
        self.score = nn.Conv2d(motion_dim, 1, 1) if text_dim is not None else None
        n_in = dim + motion_dim * (2 if self.language is not None else 1)
        # Bottleneck at motion_dim keeps the gate ~10x cheaper than a 3x3 conv at dim.
        self.g = nn.Sequential(
            conv_bn_relu(n_in, motion_dim, 1),
            conv_bn_relu(motion_dim, motion_dim, 3),
            nn.Conv2d(motion_dim, dim, 1),
        )
        init_weights(self)
        nn.init.constant_(self.g[-1].bias, GATE_BIAS_INIT)
        self.prior = nn.Conv2d(prior_ch, dim, 1) if prior_ch is not None else None
        if self.prior is not None:
            nn.init.zeros_(self.prior.weight)
            nn.init.zeros_(self.prior.bias)
        if self.language is not None:
            # Unit-scale t from the start (the generic 0.02 init would leave t ~ 0 and the
            # language path with almost no gradient).
            nn.init.normal_(self.language.weight, std=text_dim**-0.5)

    def forward(
        self,
        m: torch.Tensor,
        f: torch.Tensor,
        sentence: torch.Tensor | None = None,
        prior: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Gate ``M``; see :meth:`forward_score` for the arguments."""
        return self.forward_score(m, f, sentence, prior)[0]

    def forward_score(
        self,
        m: torch.Tensor,
        f: torch.Tensor,
        sentence: torch.Tensor | None = None,
        prior: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Gate ``M`` and return the motion-phrase score map.

        Args:
            m: (B, dim, h, w) interaction feature ``M``.
            f: (B, motion_dim, h, w) motion feature ``F``.
            sentence: (B, text_dim) sentence feature; required when built with ``text_dim``.
            prior: (B, prior_ch, h', w') grounding prior channels (any size: resized to
                ``M``); required when built with ``prior_ch``.

        Returns:
            ``(gated, score)``: (B, dim, h, w) gated ``M`` and (B, 1, h, w) score logits, or
            ``None`` for a gate without language.
        """
        parts = [m, f]
        score = None
        if self.language is not None and self.score is not None:
            if sentence is None:
                raise ValueError("this gate is conditioned on the phrase: pass the sentence")
            t = torch.tanh(self.language(sentence))[:, :, None, None]  # (B, motion_dim, 1, 1)
            parts.append(f * t)
            score = self.score(f * t)  # (B, 1, h, w)
        logits = self.g(torch.cat(parts, dim=1))  # (B, dim, h, w)
        if self.prior is not None:
            if prior is None:
                raise ValueError("this gate reads the grounding prior: pass it")
            p = F.interpolate(prior, size=m.shape[-2:], mode="bilinear", align_corners=False)
            logits = logits + self.prior(p)
        if score is not None:
            logits = logits + score
        gate = torch.sigmoid(logits)
        if self.form == "residual":
            return m + m * gate, score
        return m * gate, score
