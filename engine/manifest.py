"""The export folder's ``manifest.json``: what was exported, from what, and with which tools.

An export folder holds::

    text_encoder.onnx, frame_net.onnx            FP32 graphs (always)
    text_encoder.fp16.onnx, frame_net.fp16.onnx  FP16 graphs (``--fp16``; FP32 inputs/outputs)
    config.json, tokenizer.model|json            copied verbatim from the source checkpoint
    manifest.json                                this file

The manifest records the library versions, the opset, every graph's input/output names, shapes
(symbolic dims as strings) and dtypes, the accepted input size range, the precisions, the
SHA-256 of every other file in the folder, the source checkpoint's hash and the parity checks.
Loading an export verifies every hash, so a replaced or corrupt file is caught before a runtime
sees it. The engine owns this format (it is what the engine loads); ``python -m export``
writes it. This module is torch-free.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.base import PRECISIONS
from models.checkpoint import TOKENIZER_FILES, sha256_file

__all__ = [
    "TRITON_REPOSITORY_FILE",
    "TRITON_REPOSITORY_FORMAT",
    "FORMAT",
    "FORMAT_VERSION",
    "GRAPH_NAMES",
    "MANIFEST_FILE",
    "PRECISIONS",
    "ExportError",
    "Manifest",
    "checkpoint_sha256",
    "graph_file",
    "read_manifest",
    "verify_files",
    "write_manifest",
]

FORMAT = "hinet-stream-export"
FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
#: The description file of a Triton model repository (``python -m export --triton``).
TRITON_REPOSITORY_FILE = "hinet_stream.json"
TRITON_REPOSITORY_FORMAT = "hinet-stream-triton-repository"
GRAPH_NAMES = ("text_encoder", "frame_net")


class ExportError(ValueError):
    """An export folder is missing, incomplete, corrupt or does not match its manifest."""


def checkpoint_sha256(folder: str | Path) -> str:
    """One hash for a checkpoint folder: SHA-256 over its three files' SHA-256 digests.

    Raises:
        ExportError: a checkpoint file is missing.
    """
    folder = Path(folder)
    h = hashlib.sha256()
    tokenizers = [n for n in TOKENIZER_FILES if (folder / n).is_file()]
    if not tokenizers:
        raise ExportError(f"checkpoint {folder} has no {' or '.join(TOKENIZER_FILES)}")
    for name in ("config.json", "model.safetensors", *tokenizers):
        path = folder / name
        if not path.is_file():
            raise ExportError(f"checkpoint {folder} has no {name}")
        h.update(f"{name}:{sha256_file(path)}\n".encode())
    return h.hexdigest()


def graph_file(graph: str, precision: str) -> str:
    """File name of ``graph`` at ``precision`` (``frame_net.onnx``, ``frame_net.fp16.onnx``)."""
    if graph not in GRAPH_NAMES:
        raise ValueError(f"unknown graph {graph!r}; valid: {', '.join(GRAPH_NAMES)}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    return f"{graph}.onnx" if precision == "fp32" else f"{graph}.{precision}.onnx"


@dataclass(frozen=True)
class Manifest:
    """Parsed ``manifest.json``.

    Attributes:
        opset: ONNX opset of every graph.
        versions: Library name -> version used for the export (torch, onnx, ...).
        source_checkpoint_sha256: :func:`checkpoint_sha256` of the source checkpoint.
        min_side: Smallest accepted input side (pixels, multiple of 32).
        max_side: Largest accepted input side.
        max_batch: Largest batch the export was declared for.
        precisions: Exported precisions, a subset of :data:`PRECISIONS` containing ``"fp32"``.
        io: Graph name -> ``{"inputs": {name: {"shape", "dtype"}}, "outputs": {...}}``; shapes
            are lists of ints and dim names (strings).
        files: File name -> SHA-256 for every file except the manifest.
        checks: Parity-check results (see :mod:`export.check`), keyed by precision.
        created: ISO-8601 UTC creation time.
    """

    opset: int
    versions: dict[str, str]
    source_checkpoint_sha256: str
    min_side: int
    max_side: int
    max_batch: int
    precisions: tuple[str, ...]
    io: dict[str, Any]
    files: dict[str, str]
    checks: dict[str, Any] = field(default_factory=dict)
    created: str = ""

    def __post_init__(self) -> None:
        if "fp32" not in self.precisions or any(p not in PRECISIONS for p in self.precisions):
            raise ExportError(
                f"manifest precisions {self.precisions!r} invalid; valid: {', '.join(PRECISIONS)}"
                " (fp32 always present)"
            )
        if self.min_side % 32 or self.max_side % 32 or not 0 < self.min_side <= self.max_side:
            raise ExportError(f"manifest size range {self.min_side}..{self.max_side} invalid")
        if set(self.io) != set(GRAPH_NAMES):
            raise ExportError(f"manifest io must describe {GRAPH_NAMES}, got {sorted(self.io)}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict including the format header."""
        body = json.loads(json.dumps(dataclasses.asdict(self)))
        return {"format": FORMAT, "format_version": FORMAT_VERSION, **body}

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = MANIFEST_FILE) -> Manifest:
        """Parse :meth:`to_dict` output; a wrong format or key set raises :class:`ExportError`."""
        if not isinstance(data, dict):
            raise ExportError(f"{where} must hold a JSON object")
        if data.get("format") != FORMAT:
            raise ExportError(f"{where} is not a {FORMAT} manifest (format={data.get('format')!r})")
        if data.get("format_version") != FORMAT_VERSION:
            raise ExportError(
                f"{where}: unsupported format_version {data.get('format_version')!r}; "
                f"this code reads version {FORMAT_VERSION}"
            )
        body = {k: v for k, v in data.items() if k not in ("format", "format_version")}
        expected = {f.name for f in dataclasses.fields(cls)}
        missing, unknown = sorted(expected - set(body)), sorted(set(body) - expected)
        if missing or unknown:
            raise ExportError(f"{where} keys do not match: missing {missing}, unknown {unknown}")
        body["precisions"] = tuple(body["precisions"])
        return cls(**body)

    def input_shape(self, graph: str, name: str) -> list[int | str]:
        """Declared shape of input ``name`` of ``graph`` (ints and dim names)."""
        return list(self.io[graph]["inputs"][name]["shape"])


def write_manifest(folder: str | Path, manifest: Manifest) -> Path:
    """Write ``manifest.json`` into ``folder`` and return its path."""
    path = Path(folder) / MANIFEST_FILE
    path.write_text(json.dumps(manifest.to_dict(), indent=2, sort_keys=True) + "\n")
    return path


def read_manifest(folder: str | Path) -> Manifest:
    """Read and parse ``folder/manifest.json``.

    Raises:
        ExportError: missing folder or file, invalid JSON, wrong format or keys.
    """
    folder = Path(folder)
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise ExportError(
            f"{folder} is not an export folder (no {MANIFEST_FILE}); "
            "create one with: python -m export --checkpoint CKPT --out DIR"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ExportError(f"{path} is not valid JSON: {exc}") from exc
    return Manifest.from_dict(data, where=str(path))


def verify_files(folder: str | Path, manifest: Manifest) -> None:
    """Check that every file listed in the manifest exists and has the recorded SHA-256.

    Raises:
        ExportError: a file is missing or its hash differs (names the file and both hashes).
    """
    folder = Path(folder)
    for name, digest in sorted(manifest.files.items()):
        path = folder / name
        if not path.is_file():
            raise ExportError(f"export {folder} is incomplete: {name} is missing")
        got = sha256_file(path)
        if got != digest:
            raise ExportError(
                f"{path} does not match its manifest: sha256 {got[:12]}... != recorded "
                f"{digest[:12]}... (file replaced or corrupt; re-run python -m export)"
            )
