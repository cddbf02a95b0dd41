"""Shared fixtures for the network tests: a tiny tokenizer and inputs for ``hinet_tiny``."""

from __future__ import annotations

import pytest
import torch

from models.config import build_config
from models.tokenizer import Tokenizer

CORPUS = [
    "the red car turning left",
    "the small blue circle",
    "the green ring that is not moving",
    "a big yellow star moving right",
    "the square moving up",
    "the purple triangle on the left",
    "the cross that moves down",
    "the big orange circle moving left",
]


@pytest.fixture(scope="session")
def corpus() -> list[str]:
    return list(CORPUS)


@pytest.fixture(scope="session")
def tokenizer() -> Tokenizer:
    return Tokenizer.train(CORPUS, vocab_size=64)


@pytest.fixture(scope="session")
def tiny_config():
    return build_config("hinet_tiny")


@pytest.fixture(scope="session")
def make_inputs():
    """Factory of random inputs; see :func:`_make_inputs`."""
    return _make_inputs


def _make_inputs(
    *, batch: int = 1, size: tuple[int, int] = (64, 96), seed: int = 0, n_tokens: int = 5
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random normalised image/flow and token ids with ``n_tokens`` real tokens of 20."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    image = torch.randn(batch, 3, h, w, generator=g)
    flow = torch.randn(batch, 2, h, w, generator=g) * 0.5
    ids = torch.randint(4, 60, (batch, 20), generator=g)
    mask = torch.zeros(batch, 20, dtype=torch.int64)
    mask[:, :n_tokens] = 1
    ids = ids * mask
    return image, flow, ids, mask
