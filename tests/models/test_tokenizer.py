"""SentencePiece tokenizer: normalisation, padding, errors, byte round trip; torch-free."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models.tokenizer import PAD_ID, Tokenizer


def test_normalize():
    assert Tokenizer.normalize("  The  RED\tcar\n ") == "the red car"
    assert Tokenizer.normalize("   ") == ""


def test_encode_pads_to_max_tokens(tokenizer):
    norm = tokenizer.normalize("The red car")
    ids, mask = tokenizer.encode(norm, max_tokens=20, max_chars=200)
    assert ids.shape == mask.shape == (1, 20)
    assert ids.dtype == mask.dtype == np.int64
    n = int(mask.sum())
    assert 0 < n < 20
    assert (mask[0, :n] == 1).all() and (mask[0, n:] == 0).all()
    assert (ids[0, n:] == PAD_ID).all() and (ids[0, :n] != PAD_ID).all()
    assert (ids < tokenizer.vocab_size).all()
    assert tokenizer.decode(ids[0]) == norm


def test_different_phrases_differ(tokenizer):
    a, _ = tokenizer.encode("the red car", max_tokens=20, max_chars=200)
    b, _ = tokenizer.encode("the blue circle", max_tokens=20, max_chars=200)
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("phrase", ["", "   ", "\t\n"])
def test_empty_phrase_rejected(tokenizer, phrase):
    with pytest.raises(ValueError, match="empty"):
        tokenizer.encode(phrase, max_tokens=20, max_chars=200)


def test_too_many_chars_rejected(tokenizer):
    phrase = "the red car " * 20
    with pytest.raises(ValueError, match=rf"{len(phrase)} characters; the limit is 200"):
        tokenizer.encode(phrase, max_tokens=500, max_chars=200)


def test_too_many_tokens_rejected(tokenizer):
    phrase = "the red car turning left and the small blue circle"
    n = len(tokenizer.tokenize(phrase))
    assert n > 5
    with pytest.raises(ValueError, match=rf"{n} tokens; the limit is 5"):
        tokenizer.encode(phrase, max_tokens=5, max_chars=200)
    ids, _ = tokenizer.encode(phrase, max_tokens=n, max_chars=200)
    assert ids.shape == (1, n)


def test_bytes_and_file_round_trip(tokenizer, tmp_path):
    clone = Tokenizer.from_bytes(tokenizer.to_bytes())
    assert clone.vocab_size == tokenizer.vocab_size
    phrase = "the small blue circle moving left"
    assert clone.tokenize(phrase) == tokenizer.tokenize(phrase)
    path = tmp_path / "tokenizer.model"
    tokenizer.save(path)
    assert Tokenizer.load(path).to_bytes() == tokenizer.to_bytes()


def test_corrupt_bytes_rejected(tokenizer):
    raw = bytearray(tokenizer.to_bytes())
    for i in range(0, len(raw), 5):
        raw[i] ^= 0xA5
    with pytest.raises(ValueError, match="SentencePiece"):
        Tokenizer.from_bytes(bytes(raw))
    with pytest.raises(ValueError):
        Tokenizer.from_bytes(tokenizer.to_bytes()[:40])
    with pytest.raises(ValueError):
        Tokenizer.from_bytes(b"")


def test_missing_file_rejected(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        Tokenizer.load(tmp_path / "nope.model")


def test_training_is_deterministic_and_bounded(corpus):
    a = Tokenizer.train(corpus, vocab_size=64)
    b = Tokenizer.train(corpus, vocab_size=64)
    assert a.to_bytes() == b.to_bytes()
    assert 4 < a.vocab_size <= 64
    bpe = Tokenizer.train(corpus, vocab_size=48, model_type="bpe")
    assert bpe.vocab_size <= 48


def test_bad_training_arguments(corpus):
    with pytest.raises(ValueError, match="unigram, bpe"):
        Tokenizer.train(corpus, vocab_size=64, model_type="wordpiece")
    with pytest.raises(ValueError, match="empty corpus"):
        Tokenizer.train(["  ", ""], vocab_size=64)
    with pytest.raises(ValueError, match="vocab_size"):
        Tokenizer.train(corpus, vocab_size=2)


def test_tokenizer_imports_no_torch():
    code = "import sys, models.tokenizer, models.checkpoint; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])
