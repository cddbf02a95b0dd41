"""What a model source is, and the one resolver that turns it into what a backend loads.

A *source* is one of:

* a **checkpoint folder** (``model.safetensors`` + ``config.json`` + a tokenizer file): the
  torch backend loads it;
* an **export folder** (``manifest.json`` + ONNX graphs + ``config.json`` + a tokenizer file):
  :func:`load_export` verifies it (every file's SHA-256, the config against the graphs' declared
  shapes) without torch;
* a **TensorRT engine file** (``frame_net-<precision>-<key>.engine`` with its ``.json`` sidecar,
  written by :mod:`export.tensorrt`): the TensorRT backend loads it and the text engine the
  sidecar names, with the config and tokenizer of the export folder it was built from;
* a **Triton model repository** (``python -m export --triton``): the triton backend's.

:func:`resolve` is the one place that maps (backend, artefact) to a :class:`Resolved` record.
It only *loads*: building what a backend needs from a checkpoint (ONNX graphs, TensorRT plans)
is :mod:`export`'s job, and :func:`export.engines.create_engine` does both ("give me an engine
for this model"). This module is torch-free.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.manifest import (
    MANIFEST_FILE,
    PRECISIONS,
    TRITON_REPOSITORY_FILE,
    ExportError,
    Manifest,
    graph_file,
    read_manifest,
    verify_files,
)

__all__ = [
    "ENGINE_SIDECAR_FORMAT",
    "SOURCE_KINDS",
    "LoadedExport",
    "Resolved",
    "cache_root",
    "load_export",
    "model_input_size",
    "read_engine_sidecar",
    "resolve",
    "source_kind",
]

logger = logging.getLogger(__name__)

#: What :func:`source_kind` can answer.
SOURCE_KINDS = ("checkpoint", "export", "tensorrt_engine")
#: Each source kind, as a message names it.
_WHAT = {
    "checkpoint": "a checkpoint folder",
    "export": "an export folder",
    "tensorrt_engine": "a TensorRT engine file",
    "triton_repository": "a Triton model repository",
}
#: How to get what a backend loads from a checkpoint folder.
_BUILD_HINT = (
    "export it first (python -m export --checkpoint CKPT --out DIR [--tensorrt]), or open it "
    "with export.engines.create_engine, which exports it once into the cache"
)
#: ``format`` of the JSON sidecar written next to every TensorRT frame engine.
ENGINE_SIDECAR_FORMAT = "hinet-stream-tensorrt-engine"
_ENGINE_SUFFIXES = (".engine", ".plan")


def source_kind(source: str | Path) -> str:
    """``"checkpoint"``, ``"export"``, ``"tensorrt_engine"`` or ``"triton_repository"``.

    Raises:
        ValueError: the path does not exist or is none of these.
    """
    path = Path(source)
    if path.is_file() and path.suffix in _ENGINE_SUFFIXES:
        return "tensorrt_engine"
    if not path.is_dir():
        raise ValueError(
            f"model source {path} is not a folder (checkpoint or export folder) or a TensorRT "
            "engine file (.engine)"
        )
    if (path / MANIFEST_FILE).is_file():
        return "export"
    if (path / TRITON_REPOSITORY_FILE).is_file():
        return "triton_repository"
    if (path / "model.safetensors").is_file() and (path / "config.json").is_file():
        return "checkpoint"
    raise ValueError(
        f"{path} is neither an export folder ({MANIFEST_FILE}) nor a checkpoint folder "
        "(model.safetensors + config.json + tokenizer.model or tokenizer.json) nor a Triton "
        "repository (hinet_stream.json)"
    )


def _check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    return precision


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
    folder: str | Path,
    *,
    precision: str = "fp32",
    input_size: tuple[int, int] | None = None,
    int8_below_target: bool = False,
) -> LoadedExport:
    """Verify and load an export folder (torch-free).

    Args:
        folder: Export folder written by ``python -m export``.
        precision: ``"fp32"``, ``"fp16"`` (an export made with ``--fp16``) or ``"int8"`` (one
            made with ``--int8``; refused when its recorded parity misses the bar:
            :func:`check_int8_parity`).
        input_size: Optional ``(H, W)`` to check against the exported size range.
        int8_below_target: Load an INT8 graph under the bar anyway (to measure it).

    Returns:
        A :class:`LoadedExport`.

    Raises:
        ExportError: missing/corrupt/replaced files, config/graph mismatch, precision not
            exported, or ``input_size`` outside the exported range (all ``ValueError``).
    """
    from models.checkpoint import CheckpointError, read_checkpoint_config

    folder = Path(folder)
    _check_precision(precision)
    manifest = read_manifest(folder)
    verify_files(folder, manifest)
    if precision not in manifest.precisions:
        raise ExportError(
            f"export {folder} has no {precision} graphs (has: {', '.join(manifest.precisions)}); "
            f"re-export with python -m export --{precision}"
        )
    try:
        config, tokenizer, _ = read_checkpoint_config(folder)
    except CheckpointError as exc:
        raise ExportError(f"export {folder}: {exc}") from exc
    _check_io(manifest, config, folder)
    if precision == "int8" and not int8_below_target:
        check_int8_parity(folder, manifest.checks.get("int8"))
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
        # INT8 quantises the frame network only: the text runs once per phrase, in FP32
        text_path=folder / graph_file("text_encoder", "fp32" if precision == "int8" else precision),
        frame_path=folder / graph_file("frame_net", precision),
    )


class Int8RefusedError(ExportError):
    """An INT8 graph whose recorded mask IoU against FP32 misses the bar."""


def check_int8_parity(folder: str | Path, report: dict | None) -> None:
    """Refuse an INT8 frame network whose recorded parity with FP32 misses its target.

    ``python -m export --int8`` records the INT8 graph's mask IoU against FP32 on synthetic
    and real frames in the manifest (``checks["int8"]``, with ``meets_target``); a graph under
    the bar draws visibly other masks than the model it came from, so no entry point (the
    CLI, the page, ``training.evaluate``, Triton's repository) runs it.

    Raises:
        Int8RefusedError: no report, or one under the target (the message says what to use).
    """
    if report is None:
        raise Int8RefusedError(
            f"{folder}: its INT8 graph has no parity report; re-run python -m export --int8"
        )
    if report.get("meets_target"):
        return
    real, synthetic = report.get("real", {}), report.get("synthetic", {})
    raise Int8RefusedError(
        f"{folder}: INT8 refused: its masks match FP32's with IoU "
        f"{real.get('mask_iou_mean', float('nan')):.3f} on real frames and "
        f"{synthetic.get('mask_iou_mean', float('nan')):.3f} on synthetic ones, under the "
        f"{report.get('target_mask_iou', float('nan')):.2f} bar (manifest checks.int8); use "
        "--precision fp32 (fp16 on a GPU); python -m benchmarks.int8 measures it anyway"
    )


def cache_root() -> Path:
    """``$HINET_STREAM_CACHE`` or ``~/.cache/hinet-stream``."""
    env = os.environ.get("HINET_STREAM_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "hinet-stream"


@dataclass(frozen=True)
class Resolved:
    """What one backend loads for one source (the output of :func:`resolve`).

    Attributes:
        backend: The backend name.
        kind: :func:`source_kind` of the source the user gave.
        checkpoint: The checkpoint folder (torch backend), else ``None``.
        export: The verified export (ONNX Runtime, and TensorRT's config/tokenizer), else
            ``None``.
        text_engine: TensorRT text-encoder plan, else ``None``.
        frame_engine: TensorRT frame-network plan, else ``None``.
        repository: Triton model repository (triton backend), else ``None``.
    """

    backend: str
    kind: str
    checkpoint: Path | None = None
    export: LoadedExport | None = None
    text_engine: Path | None = None
    frame_engine: Path | None = None
    repository: Path | None = None


def model_input_size(source: str | Path) -> tuple[int, int]:
    """The network input ``(H, W)`` a model source's config names (its default size).

    Works for every :func:`source_kind`: a checkpoint, export or Triton repository's
    ``config.json``, a TensorRT engine's through its sidecar's export folder.

    Raises:
        ValueError: not a model source, or its config cannot be read.
    """
    from models.checkpoint import read_checkpoint_config

    path = Path(source)
    folder = (
        Path(read_engine_sidecar(path)["export"])
        if source_kind(path) == "tensorrt_engine"
        else path
    )
    config = read_checkpoint_config(folder)[0]
    return tuple(config.input_size)


def read_engine_sidecar(engine_file: Path) -> dict[str, Any]:
    """The JSON sidecar of a TensorRT ``frame_net`` engine (what it was built from).

    Raises:
        ExportError: no sidecar, invalid JSON, or not a frame_net engine's.
    """
    path = engine_file.with_name(engine_file.name + ".json")
    if not path.is_file():
        raise ExportError(
            f"{engine_file} has no {path.name} next to it: pass the frame_net engine written "
            "by python -m export --tensorrt (or the export folder it was built from)"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ExportError(f"{path} is not valid JSON: {exc}") from exc
    keys = {"format", "graph", "precision", "export", "text_engine"}
    if not isinstance(data, dict) or data.get("format") != ENGINE_SIDECAR_FORMAT:
        raise ExportError(f"{path} is not a {ENGINE_SIDECAR_FORMAT} file")
    if not keys <= set(data) or data["graph"] != "frame_net":
        raise ExportError(
            f"{path} must describe a frame_net engine with keys {sorted(keys)}; "
            f"got {sorted(data) if isinstance(data, dict) else data!r}"
        )
    return data


def resolve(
    backend: str,
    source: str | Path,
    *,
    precision: str = "fp32",
    input_size: tuple[int, int] | None = None,
    int8_below_target: bool = False,
) -> Resolved:
    """Check that ``source`` is an artefact ``backend`` loads, and read what it needs.

    Args:
        backend: ``"torch"``, ``"onnx"``, ``"tensorrt"`` or ``"triton"``.
        source: What the backend loads: a checkpoint folder (torch), an export folder (onnx),
            a TensorRT frame_net engine file (tensorrt), a Triton repository (triton).
        precision: ``"fp32"``, ``"fp16"`` or ``"int8"``.
        input_size: Network input ``(H, W)``, checked against an export's size range.
        int8_below_target: Load an INT8 graph whose recorded parity misses the bar.

    Returns:
        A :class:`Resolved`.

    Raises:
        ValueError: a source the backend cannot load (the message says which kind it takes,
            and how to build it).
        ExportError: a corrupt export or a bad engine sidecar.
    """
    _check_precision(precision)
    path = Path(source)
    kind = source_kind(path)
    if (kind == "triton_repository") != (backend == "triton"):
        raise ValueError(
            f"{path} is a Triton model repository: use backend 'triton' for it"
            if backend != "triton"
            else f"the triton backend needs a repository written by python -m export --triton; "
            f"{path} is {_WHAT[kind]}"
        )
    if backend == "triton":
        return Resolved(backend, kind, repository=path)
    if backend == "torch":
        if kind != "checkpoint":
            raise ValueError(
                f"the torch backend needs a checkpoint folder (model.safetensors); {path} is "
                f"{_WHAT[kind]}: use backend 'onnx' or 'tensorrt' for it"
            )
        return Resolved(backend, kind, checkpoint=path)
    if backend == "onnx":
        if kind == "tensorrt_engine":
            raise ValueError(f"{path} is a TensorRT engine: use backend 'tensorrt' for it")
        if kind == "checkpoint":
            raise ValueError(f"{path} is a checkpoint folder: {_BUILD_HINT}")
        loaded = load_export(path, precision=precision, input_size=input_size,
                             int8_below_target=int8_below_target)  # fmt: skip
        return Resolved(backend, kind, export=loaded)
    if backend != "tensorrt":
        raise ValueError(f"unknown backend {backend!r}; valid: torch, onnx, tensorrt, triton")
    if kind != "tensorrt_engine":
        raise ValueError(
            f"the tensorrt backend loads a frame_net engine file (.engine); {path} is "
            f"{_WHAT[kind]}: {_BUILD_HINT}"
        )
    side = read_engine_sidecar(path)
    if side["precision"] != precision:
        raise ExportError(f"{path} is a {side['precision']} engine; {precision} was asked")
    text_engine = path.with_name(side["text_engine"])
    if not text_engine.is_file():
        raise ExportError(f"{path}: its text engine {text_engine} is missing")
    loaded = load_export(side["export"], precision="fp32", input_size=input_size)
    if precision == "int8" and not int8_below_target:  # built from the export's QDQ graph
        check_int8_parity(loaded.folder, loaded.manifest.checks.get("int8"))
    return Resolved(backend, kind, export=loaded, text_engine=text_engine, frame_engine=path)
