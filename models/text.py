"""Text encoder: token + position embeddings and a small pre-norm Transformer encoder.

Attention is written with ``matmul`` and a masked softmax whose padded keys get a large negative
*finite* bias (:data:`MASK_BIAS`), so the graph exports to ONNX (opset 18) and stays finite in
FP16. ``nn.TransformerEncoder`` is avoided on purpose: its inference fast path and ``-inf``
masking trouble export.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from models.config import TextConfig

__all__ = ["MASK_BIAS", "TextEncoder", "masked_softmax"]

#: Added to attention scores of padded keys; finite so FP16 graphs never see ``-inf``.
MASK_BIAS = -1.0e4


def masked_softmax(scores: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis ignoring masked keys.

    Args:
        scores: (..., Q, K) float attention scores.
        key_mask: (..., 1, K) float, 1 for valid keys and 0 for padding (broadcast over Q).

    Returns:
        (..., Q, K) probabilities; padded keys get (numerically) zero weight.
    """
    return torch.softmax(scores + (1.0 - key_mask) * MASK_BIAS, dim=-1)


class _SelfAttention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        """(B, L, C), key_mask (B, 1, 1, L) -> (B, L, C)."""
        b, n, c = x.shape
        h = self.heads
        qkv = self.qkv(x).reshape(b, n, 3, h, c // h)  # (B, L, 3, H, D)
        qkv = qkv.permute(2, 0, 3, 1, 4)  # (3, B, H, L, D)
        q, k, v = qkv[0], qkv[1], qkv[2]
        scores = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(c // h))  # (B, H, L, L)
        attn = masked_softmax(scores, key_mask)
        y = torch.matmul(attn, v)  # (B, H, L, D)
        y = y.transpose(1, 2).reshape(b, n, c)  # (B, L, C)
        return self.proj(y)


class _EncoderLayer(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = _SelfAttention(width, heads)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x), key_mask))
        return x + self.drop(self.mlp(self.norm2(x)))


class TextEncoder(nn.Module):
    """Phrase encoder giving word features and a masked-mean sentence feature.

    Args:
        config: :class:`~models.config.TextConfig` (vocab, max tokens, width, layers, heads).
        dropout: Dropout inside the layers during training.
    """

    def __init__(self, *, config: TextConfig, dropout: float = 0.1) -> None:
        super().__init__()
        self.config = config
        self.token_embed = nn.Embedding(config.vocab_size, config.width)
        self.pos_embed = nn.Parameter(torch.zeros(1, config.max_tokens, config.width))
        nn.init.normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.token_embed.weight, std=0.02)
        self.layers = nn.ModuleList(
            _EncoderLayer(config.width, config.heads, dropout) for _ in range(config.layers)
        )
        self.norm = nn.LayerNorm(config.width)

    @property
    def width(self) -> int:
        """Feature width C of words and sentence."""
        return self.config.width

    def forward(
        self, token_ids: torch.Tensor, token_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode padded token sequences.

        Args:
            token_ids: (B, L) int64 in ``[0, vocab_size)``, ``L <= max_tokens``, padding id 0.
            token_mask: (B, L) int64 (or any numeric type), 1 for tokens and 0 for padding;
                each row needs at least one token.

        Returns:
            ``(words, words_mask, sentence)``: (B, L, C) float32 word features (zero at
            padding), (B, L) float32 {0, 1} mask, (B, C) float32 masked mean of the words.
        """
        n = token_ids.shape[1]
        mask = token_mask.to(torch.float32)  # (B, L)
        x = self.token_embed(token_ids) + self.pos_embed[:, :n]  # (B, L, C)
        key_mask = mask[:, None, None, :]  # (B, 1, 1, L)
        for layer in self.layers:
            x = layer(x, key_mask)
        words = self.norm(x) * mask[:, :, None]  # (B, L, C)
        count = mask.sum(dim=1, keepdim=True).clamp(min=1.0)  # (B, 1)
        sentence = words.sum(dim=1) / count  # (B, C)
        return words, mask, sentence
