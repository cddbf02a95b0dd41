"""SentencePiece tokenizer for referring expressions (torch-free: numpy + sentencepiece only).

The vocabulary is trained by the project on its training expressions (:meth:`Tokenizer.train`)
and stored next to the weights as ``tokenizer.model`` (the SentencePiece model bytes). Special
ids are fixed: pad 0, unk 1, bos 2, eos 3; phrases are encoded without bos/eos.

A phrase longer than the model accepts is rejected with ``ValueError``, never silently cut.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import sentencepiece as spm

__all__ = ["BOS_ID", "EOS_ID", "PAD_ID", "UNK_ID", "Tokenizer"]

logger = logging.getLogger(__name__)

PAD_ID = 0
UNK_ID = 1
BOS_ID = 2
EOS_ID = 3

_SPACES = re.compile(r"\s+")


class Tokenizer:
    """A trained SentencePiece model with the project's phrase conventions.

    Build with :meth:`train`, :meth:`from_bytes` or :meth:`load`.

    Args:
        model_bytes: Serialised SentencePiece model (``ModelProto``).

    Raises:
        ValueError: the bytes are not a SentencePiece model or its special ids differ from
            pad 0 / unk 1 / bos 2 / eos 3.
    """

    def __init__(self, model_bytes: bytes) -> None:
        if not isinstance(model_bytes, bytes | bytearray) or not model_bytes:
            raise ValueError("tokenizer model must be non-empty bytes")
        self._bytes = bytes(model_bytes)
        try:
            self._sp = spm.SentencePieceProcessor(model_proto=self._bytes)
        except (RuntimeError, OSError, TypeError) as exc:
            raise ValueError(f"not a valid SentencePiece model: {exc}") from exc
        ids = (self._sp.pad_id(), self._sp.unk_id(), self._sp.bos_id(), self._sp.eos_id())
        if ids != (PAD_ID, UNK_ID, BOS_ID, EOS_ID):
            raise ValueError(
                f"tokenizer special ids (pad, unk, bos, eos) must be (0, 1, 2, 3), got {ids}"
            )

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def train(
        cls,
        corpus: Iterable[str],
        *,
        vocab_size: int,
        model_type: str = "unigram",
    ) -> Tokenizer:
        """Train a vocabulary in memory on ``corpus`` (phrases are normalised first).

        Args:
            corpus: Phrases (at least one non-empty).
            vocab_size: Target size including the 4 special ids; small corpora may give fewer
                pieces (``hard_vocab_limit=False``), never more.
            model_type: ``"unigram"``, ``"bpe"``, ``"char"`` or ``"word"``.

        Raises:
            ValueError: empty corpus, bad ``vocab_size`` or ``model_type``.
        """
        if model_type not in ("unigram", "bpe", "char", "word"):
            raise ValueError(f"unknown model_type {model_type!r}; valid: unigram, bpe, char, word")
        if not isinstance(vocab_size, int) or vocab_size < 8:
            raise ValueError(f"vocab_size must be an integer >= 8, got {vocab_size!r}")
        phrases = [p for p in (cls.normalize(s) for s in corpus) if p]
        if not phrases:
            raise ValueError("cannot train a tokenizer on an empty corpus")
        buf = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(phrases),
                model_writer=buf,
                vocab_size=vocab_size,
                model_type=model_type,
                pad_id=PAD_ID,
                unk_id=UNK_ID,
                bos_id=BOS_ID,
                eos_id=EOS_ID,
                hard_vocab_limit=False,
                character_coverage=1.0,
                normalization_rule_name="identity",
                num_threads=1,
                shuffle_input_sentence=False,
                minloglevel=2,
            )
        except RuntimeError as exc:
            raise ValueError(f"tokenizer training failed: {exc}") from exc
        tok = cls(buf.getvalue())
        logger.info(
            "trained %s tokenizer: %d pieces on %d phrases",
            model_type,
            tok.vocab_size,
            len(phrases),
        )
        return tok

    @classmethod
    def from_bytes(cls, data: bytes) -> Tokenizer:
        """Rebuild from :meth:`to_bytes` output (corrupt bytes raise ``ValueError``)."""
        return cls(data)

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        """Read a ``tokenizer.model`` file."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"tokenizer file not found: {path}")
        return cls(path.read_bytes())

    def to_bytes(self) -> bytes:
        """The serialised SentencePiece model."""
        return self._bytes

    def save(self, path: str | Path) -> None:
        """Write the model bytes to ``path``."""
        Path(path).write_bytes(self._bytes)

    # -- use -----------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Number of pieces, special ids included (ids are ``0 .. vocab_size - 1``)."""
        return int(self._sp.get_piece_size())

    @staticmethod
    def normalize(phrase: str) -> str:
        """Lower-case and collapse whitespace; strips the ends."""
        if not isinstance(phrase, str):
            raise ValueError(f"phrase must be a string, got {type(phrase).__name__}")
        return _SPACES.sub(" ", phrase).strip().lower()

    def tokenize(self, phrase: str) -> list[int]:
        """Token ids of a normalised phrase, without padding or length checks."""
        return [int(i) for i in self._sp.encode(phrase, out_type=int)]

    def encode(
        self, norm: str, *, max_tokens: int, max_chars: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Encode one normalised phrase, padded with id 0 to exactly ``max_tokens``.

        Args:
            norm: Output of :meth:`normalize`.
            max_tokens: Longest accepted token count (``config.text.max_tokens``).
            max_chars: Longest accepted character count (``config.text.max_chars``).

        Returns:
            ``(ids, mask)``: (1, max_tokens) int64 token ids and (1, max_tokens) int64 mask,
            1 for real tokens and 0 for padding.

        Raises:
            ValueError: empty or whitespace-only phrase, more than ``max_chars`` characters or
                more than ``max_tokens`` tokens (the message states the limit and the count).
        """
        if not isinstance(norm, str):
            raise ValueError(f"phrase must be a string, got {type(norm).__name__}")
        if not norm.strip():
            raise ValueError("phrase is empty; type a referring expression, e.g. 'the red car'")
        if len(norm) > max_chars:
            raise ValueError(f"phrase has {len(norm)} characters; the limit is {max_chars}")
        tokens = self.tokenize(norm)
        if len(tokens) > max_tokens:
            raise ValueError(f"phrase has {len(tokens)} tokens; the limit is {max_tokens}")
        ids = np.full((1, max_tokens), PAD_ID, np.int64)
        mask = np.zeros((1, max_tokens), np.int64)
        ids[0, : len(tokens)] = tokens
        mask[0, : len(tokens)] = 1
        return ids, mask

    def decode(self, ids: Iterable[int]) -> str:
        """Text of token ids (padding ids are ignored)."""
        return str(self._sp.decode([int(i) for i in ids if int(i) != PAD_ID]))
