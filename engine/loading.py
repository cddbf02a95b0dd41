"""Find out what a model source is and load an export folder without torch.

A *source* is either a checkpoint folder (``model.safetensors`` + ``config.json`` +
``tokenizer.model``) or an export folder (``manifest.json`` + ONNX graphs + ``config.json`` +
``tokenizer.model``). :func:`load_export` verifies an export (every file's SHA-256, the config
against the graphs' declared shapes) and is torch-free; :func:`cached_export` turns a checkpoint
into an export under the user cache (this one needs torch, for the exporter).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from export.manifest import (
    MANIFEST_FILE,
    ExportError,
    Manifest,
    checkpoint_sha256,
    graph_file,
    read_manifest,
    verify_files,
)

__all__ = [
    "LoadedExport",
    "cache_root",
    "cached_export",
    "load_export",
    "source_kind",
]

logger = logging.getLogger(__name__)


def source_kind(source: str | Path) -> str:
    """``"export"`` or ``"checkpoint"`` for a model folder.

    Raises:
        ValueError: not a folder, or neither kind.
    """
    folder = Path(source)
    if not folder.is_dir():
        raise ValueError(f"model source {folder} is not a folder (checkpoint or export folder)")
    if (folder / MANIFEST_FILE).is_file():
        return "export"
    if (folder / "model.safetensors").is_file() and (folder / "config.json").is_file():
        return "checkpoint"
    raise ValueError(
        f"{folder} is neither an export folder ({MANIFEST_FILE}) nor a checkpoint folder "
        "(model.safetensors + config.json + tokenizer.model)"
    )


@dataclass(frozen=True)
class LoadedExport:
    """A verified export folder.

    Attributes:
        folder: The export folder.
        manifest: Its parsed manifest.
        config: The model's :class:`models.config.HINetConfig`.
        tokenizer: The model's :class:`models.tokenizer.Tokenizer`.
        precision: The precision the graph paths below are for.
        text_path: ``text_encoder`` ONNX file at ``precision``.
        frame_path: ``frame_net`` ONNX file at ``precision``.
    """

    folder: Path
    manifest: Manifest
    config: Any
    tokenizer: Any
    precision: str
    text_path: Path
    frame_path: Path


def _check_io(manifest: Manifest, config: Any, folder: Path) -> None:
    """The graphs' static dims must agree with the config (catches a config from another model)."""
    text = config.text
    expected = {
        ("text_encoder", "token_ids"): [None, text.max_tokens],
        ("frame_net", "words"): [None, text.max_tokens, text.width],
        ("frame_net", "sentence"): [None, text.width],
    }
    for (graph, name), want in expected.items():
        try:
            got = manifest.input_shape(graph, name)
        except KeyError as exc:
            raise ExportError(f"{folder}: manifest has no input {name!r} of {graph}") from exc
        static = [g if isinstance(g, int) else None for g in got]
        if len(static) != len(want) or any(w is not None and s != w for s, w in zip(static, want)):
            raise ExportError(
                f"{folder}: config.json does not match the exported graphs: {graph} input "
                f"{name} has shape {got}, the config needs {['batch', *want[1:]]} "
                "(config from another model?)"
            )


def load_export(
    folder: str | Path, *, precision: str = "fp32", input_size: tuple[int, int] | None = None
) -> LoadedExport:
    """Verify and load an export folder (torch-free).

    Args:
        folder: Export folder written by ``python -m export``.
        precision: ``"fp32"`` or ``"fp16"`` (needs an export made with ``--fp16``).
        input_size: Optional ``(H, W)`` to check against the exported size range.

    Returns:
        A :class:`LoadedExport`.

    Raises:
        ExportError: missing/corrupt/replaced files, config/graph mismatch, precision not
            exported, or ``input_size`` outside the exported range (all ``ValueError``).
    """
    from models.checkpoint import CheckpointError, read_checkpoint_config

    folder = Path(folder)
    manifest = read_manifest(folder)
    verify_files(folder, manifest)
    if precision not in ("fp32", "fp16"):
        raise ValueError(f"unknown precision {precision!r}; valid: fp32, fp16")
    if precision not in manifest.precisions:
        raise ExportError(
            f"export {folder} has no {precision} graphs (has: {', '.join(manifest.precisions)}); "
            "re-export with python -m export --fp16"
        )
    try:
        config, tokenizer, _ = read_checkpoint_config(folder)
    except CheckpointError as exc:
        raise ExportError(f"export {folder}: {exc}") from exc
    _check_io(manifest, config, folder)
    if input_size is not None:
        h, w = input_size
        lo, hi = manifest.min_side, manifest.max_side
        if not (lo <= h <= hi and lo <= w <= hi):
            raise ExportError(
                f"input size {h}x{w} is outside the exported range: each side in [{lo}, {hi}]"
            )
    return LoadedExport(
        folder=folder,
        manifest=manifest,
        config=config,
        tokenizer=tokenizer,
        precision=precision,
        text_path=folder / graph_file("text_encoder", precision),
        frame_path=folder / graph_file("frame_net", precision),
    )


def cache_root() -> Path:
    """``$HINET_STREAM_CACHE`` or ``~/.cache/hinet-stream``."""
    env = os.environ.get("HINET_STREAM_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "hinet-stream"


def cached_export(checkpoint: str | Path, *, fp16: bool = False, opset: int = 18) -> Path:
    """Export a checkpoint once into ``cache_root()/exports/<hash>/`` and return that folder.

    The key is the checkpoint's :func:`~export.manifest.checkpoint_sha256`, the opset and the
    precision set, so a changed checkpoint gets a fresh export. Needs torch (the exporter);
    loading the result later does not.
    """
    from export.onnx_export import export_checkpoint  # torch

    digest = checkpoint_sha256(checkpoint)
    key = f"{digest[:24]}-op{opset}-{'fp16' if fp16 else 'fp32'}"
    out = cache_root() / "exports" / key
    if (out / MANIFEST_FILE).is_file():
        try:
            verify_files(out, read_manifest(out))
            return out
        except ExportError as exc:
            logger.warning("cached export %s is unusable (%s); exporting again", out, exc)
    logger.info("exporting %s to %s (first use of this checkpoint)", checkpoint, out)
    export_checkpoint(checkpoint, out, fp16=fp16, opset=opset)
    return out
