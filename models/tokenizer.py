"""Tokenizers for referring expressions (torch-free).

Two kinds, one interface (:class:`PhraseTokenizer`):

* :class:`WordPieceTokenizer`: the pretrained MiniLM's WordPiece vocabulary (30 522 pieces,
  ``tokenizer.json``, run by the ``tokenizers`` package), for models with the pretrained
  English encoder. A phrase becomes ``[CLS] pieces [SEP]`` padded with id 0.
* :class:`Tokenizer`: a SentencePiece vocabulary the project trains on its own training
  expressions (:meth:`Tokenizer.train`), stored as ``tokenizer.model``, for models trained from
  scratch. Special ids are fixed: pad 0, unk 1, bos 2, eos 3; phrases are encoded without
  bos/eos.

Every phrase goes through the same checks (:meth:`PhraseTokenizer.check`): empty or
whitespace-only, longer than the model's character limit, control or invisible format
characters, letters of more than one script (``"the red cаr"`` with a Cyrillic ``а``), more
pieces than the model accepts. Each raises ``ValueError`` naming the problem and the limit; a
phrase is never silently cut.
"""

from __future__ import annotations

import io
import logging
import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import sentencepiece as spm

__all__ = [
    "BOS_ID",
    "EOS_ID",
    "PAD_ID",
    "TOKENIZERS",
    "UNK_ID",
    "PhraseTokenizer",
    "Tokenizer",
    "WordPieceTokenizer",
    "load_tokenizer",
]

logger = logging.getLogger(__name__)

PAD_ID = 0
UNK_ID = 1
BOS_ID = 2
EOS_ID = 3

_SPACES = re.compile(r"\s+")
#: Unicode script words that ``unicodedata.name`` starts letter names with, where the first word
#: is not the script (``"CJK UNIFIED IDEOGRAPH"`` -> CJK, ``"HIRAGANA LETTER"`` -> HIRAGANA).
_SCRIPT_ALIASES = {"HIRAGANA": "JAPANESE", "KATAKANA": "JAPANESE", "CJK": "CJK"}


def _script(ch: str) -> str:
    name = unicodedata.name(ch, "")
    word = name.split(" ", 1)[0] if name else "UNKNOWN"
    return _SCRIPT_ALIASES.get(word, word)


class PhraseTokenizer:
    """What every tokenizer of the project does with a phrase (see the module docstring).

    Subclasses implement :meth:`pieces` (the piece ids of a checked phrase), :meth:`wrap` (add
    the sequence's special tokens), :attr:`vocab_size`, :attr:`file_name` and the byte round
    trip.
    """

    #: What the pieces are called in messages.
    unit = "tokens"
    #: The checkpoint file the tokenizer is stored in.
    file_name = "tokenizer"
    #: Special tokens :meth:`wrap` adds around the pieces.
    specials = 0

    @staticmethod
    def normalize(phrase: str) -> str:
        """Lower-case and collapse whitespace; strips the ends."""
        if not isinstance(phrase, str):
            raise ValueError(f"phrase must be a string, got {type(phrase).__name__}")
        return _SPACES.sub(" ", phrase).strip().lower()

    @staticmethod
    def check(norm: str, *, max_chars: int) -> None:
        """Reject what no model should be given (see the module docstring).

        Raises:
            ValueError: not a string, empty, longer than ``max_chars``, a control or format
                character, or letters of more than one script.
        """
        if not isinstance(norm, str):
            raise ValueError(f"phrase must be a string, got {type(norm).__name__}")
        if not norm.strip():
            raise ValueError("phrase is empty; type a referring expression, e.g. 'the red car'")
        if len(norm) > max_chars:
            raise ValueError(f"phrase has {len(norm)} characters; the limit is {max_chars}")
        for ch in norm:
            if unicodedata.category(ch) in ("Cc", "Cf", "Co", "Cs"):
                raise ValueError(
                    f"phrase contains the control character U+{ord(ch):04X}; type plain text"
                )
        scripts = sorted({_script(ch) for ch in norm if ch.isalpha()})
        if len(scripts) > 1:
            raise ValueError(
                f"phrase mixes letters of {', '.join(s.title() for s in scripts)}; type it in "
                "one script (a look-alike letter from another alphabet is a different letter)"
            )

    def pieces(self, norm: str) -> list[int]:
        """Piece ids of a normalised, checked phrase (no special tokens, no padding)."""
        raise NotImplementedError

    def wrap(self, pieces: list[int]) -> list[int]:
        """The sequence the model reads: ``pieces`` with the special tokens it expects."""
        return pieces

    @property
    def vocab_size(self) -> int:
        """Number of ids (``0 .. vocab_size - 1``)."""
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        """The serialised tokenizer (the checkpoint file's bytes)."""
        raise NotImplementedError

    def save(self, path: str | Path) -> None:
        """Write :meth:`to_bytes` to ``path``."""
        Path(path).write_bytes(self.to_bytes())

    def tokenize(self, phrase: str) -> list[int]:
        """Piece ids of a normalised phrase, without checks, special tokens or padding."""
        return self.pieces(phrase)

    def encode(
        self, norm: str, *, max_tokens: int, max_chars: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Check and encode one normalised phrase, padded with id 0 to exactly ``max_tokens``.

        Args:
            norm: Output of :meth:`normalize`.
            max_tokens: Sequence length the model reads (``config.text.max_tokens``), special
                tokens included.
            max_chars: Longest accepted character count (``config.text.max_chars``).

        Returns:
            ``(ids, mask)``: (1, max_tokens) int64 ids and (1, max_tokens) int64 mask, 1 for
            real tokens (special ones included) and 0 for padding.

        Raises:
            ValueError: see :meth:`check`, or more pieces than ``max_tokens`` leaves room for
                (the message states the limit and the count).
        """
        self.check(norm, max_chars=max_chars)
        pieces = self.pieces(norm)
        limit = max_tokens - self.specials
        if len(pieces) > limit:
            raise ValueError(f"phrase has {len(pieces)} {self.unit}; the limit is {limit}")
        tokens = self.wrap(pieces)
        ids = np.full((1, max_tokens), PAD_ID, np.int64)
        mask = np.zeros((1, max_tokens), np.int64)
        ids[0, : len(tokens)] = tokens
        mask[0, : len(tokens)] = 1
        return ids, mask


class WordPieceTokenizer(PhraseTokenizer):
    """The pretrained MiniLM's WordPiece tokenizer (``tokenizer.json``, ``tokenizers`` package).

    The file's own padding and truncation are switched off: this class pads, and a phrase that
    is too long is refused, never cut.

    Args:
        json_bytes: The ``tokenizer.json`` file's bytes.

    Raises:
        ValueError: not a WordPiece ``tokenizer.json`` with ``[CLS]``/``[SEP]``/``[PAD]``.
    """

    unit = "word pieces"
    file_name = "tokenizer.json"
    specials = 2

    def __init__(self, json_bytes: bytes) -> None:
        from tokenizers import Tokenizer as HFTokenizer

        if not isinstance(json_bytes, bytes | bytearray) or not json_bytes:
            raise ValueError("tokenizer.json must be non-empty bytes")
        self._bytes = bytes(json_bytes)
        try:
            tok = HFTokenizer.from_str(self._bytes.decode("utf-8"))
        except (UnicodeDecodeError, Exception) as exc:  # tokenizers raises its own type
            raise ValueError(f"not a valid tokenizer.json: {exc}") from exc
        tok.no_padding()
        tok.no_truncation()
        ids = [tok.token_to_id(t) for t in ("[PAD]", "[CLS]", "[SEP]", "[UNK]")]
        if ids[0] != PAD_ID or None in ids:
            raise ValueError(f"tokenizer.json needs [PAD]=0, [CLS], [SEP], [UNK]; got ids {ids}")
        self._tok = tok
        self.cls_id, self.sep_id, self.unk_id = ids[1], ids[2], ids[3]

    @classmethod
    def load(cls, path: str | Path) -> WordPieceTokenizer:
        """Read a ``tokenizer.json`` file."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"tokenizer file not found: {path}")
        return cls(path.read_bytes())

    @property
    def vocab_size(self) -> int:
        """30 522 for MiniLM."""
        return int(self._tok.get_vocab_size())

    def to_bytes(self) -> bytes:
        """The ``tokenizer.json`` bytes, unchanged."""
        return self._bytes

    def pieces(self, norm: str) -> list[int]:
        """WordPiece ids without ``[CLS]``/``[SEP]``."""
        return [int(i) for i in self._tok.encode(norm, add_special_tokens=False).ids]

    def wrap(self, pieces: list[int]) -> list[int]:
        """``[CLS] pieces [SEP]``."""
        return [self.cls_id, *pieces, self.sep_id]

    def vocab(self) -> dict[str, int]:
        """WordPiece token -> id."""
        return dict(self._tok.get_vocab())

    def words(self, norm: str) -> list[str]:
        """The pieces of a phrase as text (``"em", "##oj", "##i"``; unknown -> ``[UNK]``)."""
        return list(self._tok.encode(norm, add_special_tokens=False).tokens)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ids (padding and special tokens are dropped)."""
        return str(self._tok.decode([int(i) for i in ids if int(i) != PAD_ID]))


class Tokenizer(PhraseTokenizer):
    """A trained SentencePiece model with the project's phrase conventions.

    Named plainly for history: it was the project's only tokenizer.

    Build with :meth:`train`, :meth:`from_bytes` or :meth:`load`.

    Args:
        model_bytes: Serialised SentencePiece model (``ModelProto``).

    Raises:
        ValueError: the bytes are not a SentencePiece model or its special ids differ from
            pad 0 / unk 1 / bos 2 / eos 3.
    """

    unk_id = UNK_ID

    file_name = "tokenizer.model"

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

    # -- use -----------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Number of pieces, special ids included (ids are ``0 .. vocab_size - 1``)."""
        return int(self._sp.get_piece_size())

    def pieces(self, norm: str) -> list[int]:
        """SentencePiece ids of a normalised phrase."""
        return [int(i) for i in self._sp.encode(norm, out_type=int)]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of token ids (padding ids are ignored)."""
        return str(self._sp.decode([int(i) for i in ids if int(i) != PAD_ID]))


#: ``config.text.encoder`` -> its tokenizer class (``.file_name``: the checkpoint file).
TOKENIZERS: dict[str, type[PhraseTokenizer]] = {
    "transformer": Tokenizer,
    "minilm": WordPieceTokenizer,
}


def load_tokenizer(encoder: str, path: str | Path) -> PhraseTokenizer:
    """The tokenizer of a text encoder kind (``config.text.encoder``) from its file.

    Raises:
        ValueError: unknown encoder kind, missing or corrupt file.
    """
    if encoder not in TOKENIZERS:
        raise ValueError(f"unknown text encoder {encoder!r}; valid: {', '.join(TOKENIZERS)}")
    return TOKENIZERS[encoder].load(path)  # type: ignore[attr-defined]
