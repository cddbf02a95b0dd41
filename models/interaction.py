"""Vision-language interaction at one pyramid level (the "hierarchical" part of HINet).

The same class is used at every fused level with its own weights:

1. project the backbone feature ``C_l`` to ``fusion_dim`` (``v``);
2. append normalised x/y coordinate channels and attend from every pixel to the words
   (single-head pixel-word cross-attention with the padding mask; ``matmul`` and a finite
   masked softmax, so it exports and runs in FP16) giving ``a``;
3. combine element-wise: ``v * a`` (pixel-word) and, if ``use_sentence``, ``v * s`` with the
   projected sentence feature ``s``;
4. fuse ``[v, v * a, (v * s), x, y]`` with a 1x1 and a 3x3 conv-BN-ReLU into ``M_l``.

Levels that are not in ``config.fusion_levels`` (e.g. C3 and C4 in the top-only ablation) go
through :class:`LevelProjection` instead: the same projection and a 3x3 conv-BN-ReLU with no
language, so the decoder always receives M3, M4 and M5 of width ``fusion_dim``.

With the grounding prior (``config.prior``), :class:`PriorInjection` then modulates every
level's ``M_l`` with the prior's two channels (:func:`models.grounding.prior_features`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from models.layers import conv_bn_relu, init_weights, masked_softmax

__all__ = [
    "Interaction",
    "LevelProjection",
    "PriorInjection",
    "ReferentInjection",
    "coord_channels",
]


def coord_channels(feature: torch.Tensor) -> torch.Tensor:
    """Normalised pixel-centre coordinates shaped like ``feature``.

    Args:
        feature: (B, C, h, w) any float tensor (only its shape, dtype and device are used).

    Returns:
        (B, 2, h, w): x then y, each in (-1, 1), ``2 * (i + 0.5) / n - 1``.
    """
    b, _, h, w = feature.shape
    xs = (torch.arange(w, device=feature.device, dtype=feature.dtype) + 0.5) * (2.0 / w) - 1.0
    ys = (torch.arange(h, device=feature.device, dtype=feature.dtype) + 0.5) * (2.0 / h) - 1.0
    gx = xs.view(1, 1, 1, w).expand(b, 1, h, w)  # (B, 1, h, w)
    gy = ys.view(1, 1, h, 1).expand(b, 1, h, w)  # (B, 1, h, w)
    return torch.cat([gx, gy], dim=1)


class LevelProjection(nn.Module):
    """A pyramid level that is not fused with language: 1x1 projection + 3x3 conv-BN-ReLU.

    Args:
        in_ch: Backbone channels ``C_l``.
        dim: Output width (``fusion_dim``).
    """

    def __init__(self, *, in_ch: int, dim: int) -> None:
        super().__init__()
        self.proj = conv_bn_relu(in_ch, dim, 1)
        self.conv = conv_bn_relu(dim, dim, 3)
        init_weights(self)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        """(B, C_l, h, w) -> (B, dim, h, w)."""
        return self.conv(self.proj(feature))


class Interaction(nn.Module):
    """Pixel-word and pixel-sentence interaction at one level.

    Args:
        in_ch: Backbone channels ``C_l``.
        text_dim: Text feature width ``C_t``.
        dim: Output width (``fusion_dim``).
        use_sentence: Combine the sentence feature (ablation switch).
    """

    def __init__(self, *, in_ch: int, text_dim: int, dim: int, use_sentence: bool) -> None:
        super().__init__()
        self.dim = dim
        self.use_sentence = use_sentence
        self.proj = conv_bn_relu(in_ch, dim, 1)
        self.query = nn.Conv2d(dim + 2, dim, 1)
        self.key = nn.Linear(text_dim, dim)
        self.value = nn.Linear(text_dim, dim)
        if use_sentence:
            self.sentence = nn.Linear(text_dim, dim)
        n_in = dim * (3 if use_sentence else 2) + 2
        self.fuse = nn.Sequential(conv_bn_relu(n_in, dim, 1), conv_bn_relu(dim, dim, 3))
        init_weights(self)

    def forward(
        self,
        feature: torch.Tensor,
        words: torch.Tensor,
        words_mask: torch.Tensor,
        sentence: torch.Tensor,
    ) -> torch.Tensor:
        """Fuse one level with the phrase.

        Args:
            feature: (B, C_l, h, w) backbone feature.
            words: (B, L, C_t) word features.
            words_mask: (B, L) float {0, 1}, 1 for real tokens.
            sentence: (B, C_t) sentence feature (ignored when ``use_sentence`` is off).

        Returns:
            (B, dim, h, w) float ``M_l``.
        """
        b, _, h, w = feature.shape
        v = self.proj(feature)  # (B, D, h, w)
        coords = coord_channels(v)  # (B, 2, h, w)
        q = self.query(torch.cat([v, coords], dim=1))  # (B, D, h, w)
        q = q.flatten(2).transpose(1, 2)  # (B, hw, D)
        k = self.key(words)  # (B, L, D)
        val = self.value(words)  # (B, L, D)
        scores = torch.bmm(q, k.transpose(1, 2)) * (1.0 / math.sqrt(self.dim))  # (B, hw, L)
        attn = masked_softmax(scores, words_mask[:, None, :])  # (B, hw, L)
        a = torch.bmm(attn, val)  # (B, hw, D)
        a = a.transpose(1, 2).reshape(b, self.dim, h, w)  # (B, D, h, w)
        parts = [v, v * a]
        if self.use_sentence:
            s = self.sentence(sentence)[:, :, None, None]  # (B, D, 1, 1)
            parts.append(v * s)
        parts.append(coords)
        return self.fuse(torch.cat(parts, dim=1))


class PriorInjection(nn.Module):
    """Bring the grounding prior into one level: ``M <- M * (1 + tanh(a(P))) + b(P)``.

    ``P`` (the prior's channels at stride 32) is resized to the level; ``a`` and ``b`` are 1x1
    convolutions initialised at zero, so a model warm-started without the prior starts out
    computing exactly what it did, and learns how far to trust the prior.

    Args:
        dim: Width of ``M`` (``fusion_dim``).
        prior_ch: Channels of ``P``.
    """

    def __init__(self, *, dim: int, prior_ch: int = 2) -> None:
        super().__init__()
        self.scale = nn.Conv2d(prior_ch, dim, 1)
        self.shift = nn.Conv2d(prior_ch, dim, 1)
        for conv in (self.scale, self.shift):
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, m: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        """(B, dim, h, w) ``M`` and (B, prior_ch, h', w') prior -> (B, dim, h, w)."""
        p = F.interpolate(prior, size=m.shape[-2:], mode="bilinear", align_corners=False)
        return m * (1.0 + torch.tanh(self.scale(p))) + self.shift(p)


class ReferentInjection(nn.Module):
    """Bring the referent map into one level: ``M <- M * (1 + p tanh(a)) + p b``, ``a, b = f(M, R)``.

    ``R`` is the (B, 1, H, W) referent map at the input's size (the chosen instance's box,
    highest at its centre), pooled to the level both ways (the mean: how much of the cell
    the box covers; the max: whether a small, far box touches it at all). ``f`` sees the
    level's own features beside it, so it can tell the object in the box from the box's
    background. ``p`` is the map's peak (1 with a chosen instance, 0 without): a frame
    without a sure instance gets exactly the network it would have had without this input.
    The last 1x1 convolution starts at zero: a model warm-started without the referent
    computes exactly what it did, and learns how far to trust the detector.

    Args:
        dim: Width of ``M`` (``fusion_dim``).
        stride: The level's stride (the input's size divided by ``M``'s; a power of two).
    """

    def __init__(self, *, dim: int, stride: int) -> None:
        super().__init__()
        self.stride = int(stride)
        self.mix = nn.Conv2d(dim + 2, dim, 1)
        self.out = nn.Conv2d(dim, 2 * dim, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, m: torch.Tensor, referent: torch.Tensor) -> torch.Tensor:
        """(B, dim, h, w) ``M`` and (B, 1, h * stride, w * stride) map -> (B, dim, h, w)."""
        s = self.stride
        r = torch.cat([F.avg_pool2d(referent, s, s), F.max_pool2d(referent, s, s)], dim=1)
        a, b = self.out(F.relu(self.mix(torch.cat([m, r.to(m.dtype)], dim=1)))).chunk(2, dim=1)
        p = referent.amax(dim=(2, 3), keepdim=True).to(m.dtype)  # (B, 1, 1, 1)
        return m * (1.0 + p * torch.tanh(a)) + p * b
