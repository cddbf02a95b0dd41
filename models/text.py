"""Text encoders: word features (B, L, C) and a sentence feature (B, C) for the fusion.

* :class:`TextEncoder` (``config.text.encoder == "transformer"``): token + position embeddings
  and a small pre-norm Transformer trained from scratch on a SentencePiece vocabulary.
* :class:`PretrainedTextEncoder` (``"minilm"``): the pretrained MiniLM-L6 English encoder
  (:mod:`models.minilm`; frozen, or its top layers fine-tuned) and a trained adapter: a linear
  projection to the fusion width and ``config.text.layers`` pre-norm Transformer layers. The
  adapter is what learns the task's words; MiniLM is what knows English. With
  ``config.text.colour_words`` a colour word's CIELAB colour (:mod:`models.colournames`) is
  added to its features through a learned embedding.

Both give word features zeroed at padding, the mask, and the masked mean as the sentence.

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
from models.layers import masked_softmax

__all__ = [
    "PretrainedTextEncoder",
    "TextEncoder",
    "build_text_encoder",
]


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

    def pretrained_keys(self) -> list[str]:
        """Keys holding pretrained values: none, everything here is trained."""
        return []

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
        return _finish(x, mask, self.norm)


def _finish(x: torch.Tensor, mask: torch.Tensor, norm: nn.Module) -> tuple[torch.Tensor, ...]:
    """Final norm, zeroed padding and the masked mean: (words, mask, sentence)."""
    words = norm(x) * mask[:, :, None]  # (B, L, C)
    count = mask.sum(dim=1, keepdim=True).clamp(min=1.0)  # (B, 1)
    return words, mask, words.sum(dim=1) / count  # (B, L, C), (B, L), (B, C)


class PretrainedTextEncoder(nn.Module):
    """MiniLM-L6 plus a trained adapter (see the module docstring).

    Args:
        config: :class:`~models.config.TextConfig` with ``encoder == "minilm"``.
        pretrained: Load MiniLM's pinned weights (``False`` when a checkpoint or a test fills
            them in).
        dropout: Dropout inside the adapter layers during training.
    """

    def __init__(self, *, config: TextConfig, pretrained: bool = True, dropout: float = 0.1):
        super().__init__()
        from models.minilm import HIDDEN, MiniLM

        if config.encoder != "minilm":
            raise ValueError(
                f"PretrainedTextEncoder needs encoder 'minilm', got {config.encoder!r}"
            )
        self.config = config
        self.bert = MiniLM()
        if pretrained:
            self.bert.load_pretrained()
        self.bert.freeze(trained_layers=config.trained_layers)
        self.proj = nn.Linear(HIDDEN, config.width)
        if config.colour_words:
            # (V, 4) scaled CIELAB + flag per token id; stored with the model (it is data).
            self.register_buffer("token_colour", _colour_table(pretrained), persistent=True)
            self.colour = nn.Linear(4, config.width)
        self.layers = nn.ModuleList(
            _EncoderLayer(config.width, config.heads, dropout) for _ in range(config.layers)
        )
        self.norm = nn.LayerNorm(config.width)

    @property
    def width(self) -> int:
        """Feature width C of words and sentence."""
        return self.config.width

    def pretrained_keys(self) -> list[str]:
        """State-dict keys (of this module) that hold MiniLM's pinned values, never trained."""
        return [
            f"bert.{k}" for k in self.bert.frozen_keys(trained_layers=self.config.trained_layers)
        ]

    def forward(
        self, token_ids: torch.Tensor, token_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode padded WordPiece sequences (``[CLS] ... [SEP]``, padding id 0).

        Args:
            token_ids: (B, L) int64, ``L <= max_tokens``.
            token_mask: (B, L) {0, 1}; each row has at least ``[CLS]`` and ``[SEP]``.

        Returns:
            ``(words, words_mask, sentence)``: (B, L, C) float32 (zero at padding), (B, L)
            float32 {0, 1}, (B, C) float32 masked mean of the words.
        """
        return self.forward_pooled(token_ids, token_mask)[:3]

    def forward_pooled(
        self, token_ids: torch.Tensor, token_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`forward` plus MiniLM's own mean-pooled sentence vector, (B, 384).

        That vector (pooled as sentence-transformers pools it) is what the grounding prior
        compares with the class names.
        """
        from models.minilm import mean_pool

        mask = token_mask.to(torch.float32)  # (B, L)
        hidden = self.bert(token_ids, token_mask)  # (B, L, 384)
        x = self.proj(hidden)  # (B, L, C)
        if self.config.colour_words:
            x = x + self.colour(self.token_colour[token_ids])  # (B, L, 4) -> (B, L, C)
        key_mask = mask[:, None, None, :]  # (B, 1, 1, L)
        for layer in self.layers:
            x = layer(x, key_mask)
        return (*_finish(x, mask, self.norm), mean_pool(hidden, token_mask))


def _colour_table(from_package: bool) -> torch.Tensor:
    """The colour-word table of MiniLM's vocabulary (zeros when a checkpoint will fill it)."""
    from models.minilm import VOCAB_SIZE

    if not from_package:
        return torch.zeros(VOCAB_SIZE, 4)
    from models.colournames import colour_table
    from models.pretrained import minilm_files
    from models.tokenizer import WordPieceTokenizer

    vocab = WordPieceTokenizer.load(minilm_files()["tokenizer"]).vocab()
    return torch.from_numpy(colour_table(vocab, VOCAB_SIZE))


def build_text_encoder(config: TextConfig, *, pretrained: bool = True) -> nn.Module:
    """The text encoder ``config.encoder`` names (``pretrained``: load MiniLM's weights)."""
    if config.encoder == "minilm":
        return PretrainedTextEncoder(config=config, pretrained=pretrained)
    return TextEncoder(config=config)
