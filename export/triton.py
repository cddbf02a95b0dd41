"""A Triton Inference Server model repository from an export folder (``python -m export --triton``).

Layout written (``REPO``)::

    REPO/
      text_encoder/config.pbtxt, text_encoder/1/model.onnx [, model.py]
      frame_net/config.pbtxt,    frame_net/1/model.onnx    [, model.py]
      hinet_stream.json          # what the triton engine reads: config, names, sizes, source
      config.json, <tokenizer>   # copied from the export: the client tokenises phrases itself
      export_manifest.json       # the export's manifest.json (graphs, io, parity report)

``--triton-backend onnxruntime`` (default) declares both models for Triton's ONNX Runtime backend;
``--triton-backend python`` wraps the same ONNX files in Triton's Python backend, which runs ONNX
Runtime inside the server (:mod:`export.triton_python_model`), for servers built without the
ONNX Runtime backend. ``frame_net`` gets **dynamic batching** (preferred batch sizes, a short
queue delay) so that frames of many streams meet in one batch; ``text_encoder`` runs once per
phrase and is not batched. Dims come from the export's manifest: the batch dim is Triton's
(``max_batch_size``), named dynamic dims (height, width) become ``-1``, so any size inside the
export's range is served.

``--triton-backend tensorrt`` serves TensorRT plans instead: the ``frame_net`` engine that
``python -m export --tensorrt`` built (its JSON sidecar names the text engine and the profile)
and its text engine become ``<model>/1/model.plan`` (``backend: "tensorrt"``, GPU instances);
the served side range and batch come from the plan's profile. A plan only runs on the GPU
architecture and TensorRT version it was built with: the server's (NVIDIA's container of the
same TensorRT release) must match (README, "Many cameras").
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from engine.manifest import TRITON_REPOSITORY_FILE as REPOSITORY_FILE
from engine.manifest import TRITON_REPOSITORY_FORMAT as REPOSITORY_FORMAT
from engine.manifest import ExportError

__all__ = ["REPOSITORY_FILE", "TRITON_BACKENDS", "model_config", "write_repository"]

#: Triton backends a repository can be written for.
TRITON_BACKENDS = ("onnxruntime", "python", "tensorrt")
#: The two models' names in the repository.
MODELS = {"text": "text_encoder", "frame": "frame_net"}

_TRITON_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "int64": "TYPE_INT64"}


def _dims(shape: list[Any]) -> list[int]:
    """Manifest shape without its batch dim; named (dynamic) dims -> -1."""
    return [d if isinstance(d, int) else -1 for d in shape[1:]]


def _tensors(kind: str, io: dict[str, dict[str, Any]]) -> str:
    rows = []
    for name, spec in io.items():
        dtype = _TRITON_TYPES.get(spec["dtype"])
        if dtype is None:
            raise ExportError(f"tensor {name}: dtype {spec['dtype']} has no Triton type here")
        dims = ", ".join(str(d) for d in _dims(spec["shape"]))
        rows.append(f'  {{ name: "{name}" data_type: {dtype} dims: [ {dims} ] }}')
    return f"{kind} [\n" + ",\n".join(rows) + "\n]\n"


def model_config(
    name: str,
    io: dict[str, Any],
    *,
    backend: str,
    max_batch: int,
    batching: bool,
    preferred: tuple[int, ...] = (),
    queue_delay_us: int = 0,
    instances: int = 1,
    kind: str = "KIND_CPU",
    threads: int = 0,
) -> str:
    """``config.pbtxt`` text of one model.

    Args:
        name: Model name.
        io: The manifest's ``{"inputs": {...}, "outputs": {...}}`` of its graph.
        backend: One of :data:`TRITON_BACKENDS`.
        max_batch: Triton's ``max_batch_size``.
        batching: Add a ``dynamic_batching`` block.
        preferred: Preferred batch sizes (each ``<= max_batch``).
        queue_delay_us: How long the batcher waits to fill a batch.
        instances: Model instances in the instance group.
        kind: ``KIND_CPU`` or ``KIND_GPU`` (TensorRT plans always run on the GPU).
        threads: ONNX Runtime intra-op threads inside the server (0: its default).
    """
    if backend not in TRITON_BACKENDS:
        raise ValueError(f"unknown Triton backend {backend!r}; valid: {', '.join(TRITON_BACKENDS)}")
    if max_batch < 1 or instances < 1 or queue_delay_us < 0:
        raise ValueError("max_batch and instances must be >= 1, queue_delay_us >= 0")
    bad = [p for p in preferred if not 1 <= p <= max_batch]
    if bad:
        raise ValueError(f"preferred batch sizes {bad} outside 1..{max_batch}")
    if kind not in ("KIND_CPU", "KIND_GPU"):
        raise ValueError(f"instance kind must be KIND_CPU or KIND_GPU, got {kind!r}")
    if backend == "tensorrt":
        kind = "KIND_GPU"
    text = f'name: "{name}"\nbackend: "{backend}"\nmax_batch_size: {max_batch}\n'
    text += _tensors("input", io["inputs"]) + _tensors("output", io["outputs"])
    if batching:
        sizes = ", ".join(str(p) for p in preferred)
        text += (
            "dynamic_batching {\n"
            + (f"  preferred_batch_size: [ {sizes} ]\n" if preferred else "")
            + f"  max_queue_delay_microseconds: {queue_delay_us}\n}}\n"
        )
    text += f"instance_group [ {{ kind: {kind} count: {instances} }} ]\n"
    if backend == "onnxruntime" and threads:
        text += (
            'parameters { key: "intra_op_thread_count" '
            f'value: {{ string_value: "{threads}" }} }}\n'
        )
    if backend == "python":
        text += f'parameters {{ key: "ort_threads" value: {{ string_value: "{threads}" }} }}\n'
    return text


def write_repository(
    export_folder: str | Path,
    repo: str | Path,
    *,
    backend: str = "onnxruntime",
    precision: str = "fp32",
    max_batch: int | None = None,
    preferred: tuple[int, ...] = (2, 4, 8),
    queue_delay_us: int = 2000,
    instances: int = 1,
    kind: str = "KIND_CPU",
    threads: int = 0,
    frame_engine: str | Path | None = None,
) -> Path:
    """Write a Triton model repository for an export folder (replacing ``repo``).

    Args:
        export_folder: Folder written by ``python -m export`` (verified here).
        repo: Repository folder to write.
        backend: One of :data:`TRITON_BACKENDS`.
        precision: Which exported graphs to serve (``fp32`` or ``fp16``).
        max_batch: ``max_batch_size`` of both models (at most the export's ``max_batch``;
            default: 8 or the export's, whichever is smaller).
        preferred: ``frame_net``'s preferred batch sizes.
        queue_delay_us: ``frame_net``'s dynamic-batching queue delay.
        instances: Instances per model.
        kind: ``KIND_CPU`` or ``KIND_GPU``.
        threads: ONNX Runtime threads per instance inside the server (0: its default).
        frame_engine: ``--triton-backend tensorrt``: the ``frame_net`` TensorRT engine built from this
            export (``python -m export --tensorrt``); its sidecar gives the text engine, the
            precision and the profile (side range, largest batch).

    Returns:
        The repository folder.

    Raises:
        ExportError: the export is missing, corrupt or cannot serve the request.
        ValueError: a bad option.
    """
    from engine.loading import load_export
    from engine.manifest import MANIFEST_FILE, graph_file
    from models.checkpoint import CONFIG_FILE, TOKENIZER_FILES

    if (backend == "tensorrt") != (frame_engine is not None):
        raise ValueError(
            "--triton-backend tensorrt serves TensorRT plans: give the frame_net engine "
            "(--trt-engine, or build with --tensorrt); other backends take none"
        )
    loaded = load_export(export_folder, precision="fp32" if frame_engine else precision)
    manifest = loaded.manifest
    sides = (manifest.min_side, manifest.max_side)
    plans: dict[str, Path] = {}
    if frame_engine is not None:
        plans, precision, sides, plan_batch = _plans(Path(frame_engine), manifest)
        max_batch = max_batch or min(8, plan_batch)
        if max_batch > plan_batch:
            raise ExportError(
                f"max_batch {max_batch} exceeds the TensorRT profile's {plan_batch}: rebuild the "
                "engines with a larger batch (python -m export --tensorrt --triton ...)"
            )
    if max_batch is None:
        max_batch = min(8, manifest.max_batch)
    if max_batch > manifest.max_batch:
        raise ExportError(
            f"max_batch {max_batch} exceeds the export's max_batch {manifest.max_batch}; "
            "re-export with a larger --max-batch"
        )
    preferred = tuple(p for p in preferred if p <= max_batch)
    repo = Path(repo)
    if repo.exists():
        if not (repo / REPOSITORY_FILE).is_file():
            raise ExportError(f"{repo} exists and is not a repository written by this tool")
        shutil.rmtree(repo)
    repo.mkdir(parents=True)
    for role, name in MODELS.items():
        graph = name  # the manifest's graph names are the model names
        version = repo / name / "1"
        version.mkdir(parents=True)
        if plans:
            shutil.copyfile(plans[graph], version / "model.plan")
        else:
            # INT8 quantises frame_net only; the text encoder stays FP32
            graph_precision = "fp32" if precision == "int8" and role == "text" else precision
            shutil.copyfile(
                loaded.folder / graph_file(graph, graph_precision), version / "model.onnx"
            )
        if backend == "python":
            shutil.copyfile(
                Path(__file__).with_name("triton_python_model.py"), version / "model.py"
            )
        config = model_config(
            name,
            manifest.io[graph],
            backend=backend,
            max_batch=max_batch,
            batching=role == "frame",
            preferred=preferred if role == "frame" else (),
            queue_delay_us=queue_delay_us,
            instances=instances,
            kind=kind,
            threads=threads,
        )
        (repo / name / "config.pbtxt").write_text(config)
    for f in (CONFIG_FILE, *TOKENIZER_FILES):  # the client reads config and tokenizer here
        if (loaded.folder / f).is_file():
            shutil.copyfile(loaded.folder / f, repo / f)
    # not under its own name: a manifest.json would make the folder look like an export
    shutil.copyfile(loaded.folder / MANIFEST_FILE, repo / "export_manifest.json")
    description = {
        "format": REPOSITORY_FORMAT,
        "backend": backend,
        "precision": precision,
        "models": MODELS,
        "max_batch": max_batch,
        "min_side": sides[0],
        "max_side": sides[1],
        "source_export": str(Path(export_folder).resolve()),
        "source_checkpoint_sha256": manifest.source_checkpoint_sha256,
    }
    (repo / REPOSITORY_FILE).write_text(json.dumps(description, indent=2) + "\n")
    return repo


def _plans(frame_engine: Path, manifest: Any) -> tuple[dict[str, Path], str, tuple[int, int], int]:
    """``(plan per graph, precision, (min side, max side), largest batch)`` of a frame engine.

    The side range is the one every (H, W) inside it is valid for (the profile may differ per
    axis).

    Raises:
        ExportError: no engine or sidecar, its text engine missing, or built from another model.
    """
    from engine.loading import load_export, read_engine_sidecar

    if not frame_engine.is_file():
        raise ExportError(f"TensorRT engine {frame_engine} not found")
    side = read_engine_sidecar(frame_engine)
    text_engine = frame_engine.with_name(side["text_engine"])
    if not text_engine.is_file():
        raise ExportError(f"{frame_engine}: its text engine {text_engine} is missing")
    built_from = load_export(side["export"], precision="fp32").manifest
    if built_from.source_checkpoint_sha256 != manifest.source_checkpoint_sha256:
        raise ExportError(
            f"{frame_engine} was built from another model ({side['export']}), not this export"
        )
    profile = side.get("profile", {}).get("image")
    if not profile:
        raise ExportError(f"{frame_engine}: its sidecar has no image profile")
    (_, _, *lo), _, (batch, _, *hi) = profile
    return ({"text_encoder": text_engine, "frame_net": frame_engine}, str(side["precision"]),
            (max(lo), min(hi)), int(batch))  # fmt: skip
