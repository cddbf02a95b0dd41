"""Build TensorRT engines (plans) from an export folder's ONNX graphs (TensorRT 10 and 11).

``python -m export --tensorrt`` builds them ahead of time; :func:`export.engines.create_engine`
builds them on first use (cached) when the TensorRT backend is given an export or checkpoint
folder. The runtime (:mod:`engine.backends.tensorrt_backend`) only loads plans.

The API differences that matter here (NVIDIA's 10.x -> 11.x migration guide):

- **TensorRT 10**: networks are always explicit-batch (the ``EXPLICIT_BATCH`` flag is deprecated
  and ignored), so ``create_network(0)``. FP16 is *weakly typed*: build the FP32 ONNX with
  ``BuilderFlag.FP16`` and TensorRT may pick FP16 kernels per layer.
- **TensorRT 11**: strongly typed only; ``BuilderFlag.FP16`` no longer exists and the
  ``STRONGLY_TYPED`` creation flag is deprecated because it is always on, so again
  ``create_network(0)``. Every tensor's type comes from the graph: an FP16 engine is built from
  the FP16 ONNX (:mod:`export.fp16`), an FP32 engine from the FP32 ONNX.

Both: one optimisation profile with (min, opt, max) shapes for every dynamic input, a workspace
limit via ``set_memory_pool_limit``, a timing cache loaded before and saved after each build,
and ``build_serialized_network``. Engines are cached under a key of TensorRT version + GPU
compute capability + ONNX SHA-256 + profile + precision, since an engine only runs on the
TensorRT version and GPU architecture that built it.

``tensorrt`` (and ``pycuda``, to read the compute capability) are imported lazily; without them
:func:`~engine.backends.tensorrt_backend.import_tensorrt` raises
:class:`~engine.base.BackendUnavailable`. This module imports no torch.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.backends.tensorrt_backend import import_tensorrt, trt_major
from engine.base import PRIOR_TENSOR, REFERENT_TENSOR, BackendUnavailable, prior_classes
from engine.loading import ENGINE_SIDECAR_FORMAT, cache_root, load_export
from engine.manifest import ExportError, graph_file
from models.files import sha256_file

__all__ = [
    "Profile",
    "build_export_engines",
    "build_serialized_engine",
    "check_build_host",
    "engine_cache_key",
    "engine_path",
    "frame_profile",
    "gpu_compute_capability",
    "onnx_for_precision",
    "text_profile",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Profile:
    """One optimisation profile: input name -> (min, opt, max) shapes.

    Attributes:
        shapes: Tuple of ``(name, min_shape, opt_shape, max_shape)``, sorted by name.
    """

    shapes: tuple[tuple[str, tuple[int, ...], tuple[int, ...], tuple[int, ...]], ...]

    def __post_init__(self) -> None:
        for name, lo, opt, hi in self.shapes:
            if not (len(lo) == len(opt) == len(hi)) or any(
                not a <= b <= c for a, b, c in zip(lo, opt, hi)
            ):
                raise ValueError(
                    f"profile for {name} needs min <= opt <= max, got {lo}, {opt}, {hi}"
                )

    def as_dict(self) -> dict[str, list[list[int]]]:
        """JSON-able ``{name: [min, opt, max]}``."""
        return {n: [list(lo), list(opt), list(hi)] for n, lo, opt, hi in self.shapes}


def _sides(size: tuple[int, int], what: str) -> tuple[int, int]:
    h, w = (int(v) for v in size)
    if h % 32 or w % 32 or h <= 0 or w <= 0:
        raise ValueError(f"{what} size must be positive multiples of 32, got {size}")
    return h, w


def frame_profile(
    config: Any,
    *,
    min_size: tuple[int, int],
    opt_size: tuple[int, int],
    max_size: tuple[int, int],
    max_batch: int = 1,
) -> Profile:
    """The frame network's profile: batch 1..max_batch (opt 1), image/flow sizes as given.

    Args:
        config: :class:`models.config.HINetConfig` (text width and max tokens).
        min_size: Smallest ``(H, W)``.
        opt_size: The ``(H, W)`` TensorRT tunes for (the engine's working size).
        max_size: Largest ``(H, W)``.
        max_batch: Largest batch.
    """
    (h0, w0), (h1, w1), (h2, w2) = (
        _sides(min_size, "min"),
        _sides(opt_size, "opt"),
        _sides(max_size, "max"),
    )
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    n, c = config.text.max_tokens, config.text.width
    shapes = [
        ("flow", (1, 2, h0, w0), (1, 2, h1, w1), (max_batch, 2, h2, w2)),
        ("image", (1, 3, h0, w0), (1, 3, h1, w1), (max_batch, 3, h2, w2)),
        ("sentence", (1, c), (1, c), (max_batch, c)),
        ("words", (1, n, c), (1, n, c), (max_batch, n, c)),
        ("words_mask", (1, n), (1, n), (max_batch, n)),
    ]
    if getattr(config, "prior", False):  # the grounding prior's class weights
        k = prior_classes(config)
        shapes.insert(0, (PRIOR_TENSOR, (1, k), (1, k), (max_batch, k)))
    if getattr(config, "referent", False):  # the detected referent's map
        shapes.append((REFERENT_TENSOR, (1, 1, h0, w0), (1, 1, h1, w1), (max_batch, 1, h2, w2)))
        shapes.sort(key=lambda s: s[0])
    return Profile(shapes=tuple(shapes))


def text_profile(config: Any, *, max_batch: int = 1) -> Profile:
    """The text encoder's profile: batch 1..max_batch, L = ``config.text.max_tokens``."""
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    n = config.text.max_tokens
    return Profile(
        shapes=(
            ("token_ids", (1, n), (1, n), (max_batch, n)),
            ("token_mask", (1, n), (1, n), (max_batch, n)),
        )
    )


def engine_cache_key(
    *,
    trt_version: str,
    compute_capability: tuple[int, int],
    onnx_sha256: str,
    profile: Profile,
    precision: str,
) -> str:
    """Hex key of an engine: changes with any of TensorRT version, GPU arch, ONNX, profile, precision."""
    payload = {
        "trt": str(trt_version),
        "sm": list(compute_capability),
        "onnx": onnx_sha256,
        "profile": profile.as_dict(),
        "precision": precision,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def onnx_for_precision(major: int, precision: str, graph: str = "frame_net") -> str:
    """Which exported ONNX precision a TensorRT ``major`` version builds a ``precision`` engine from.

    TensorRT 10 builds FP16 engines from the FP32 graph with ``BuilderFlag.FP16``; TensorRT 11
    (strongly typed) needs the FP16 graph. INT8 is explicit quantisation: ``frame_net`` is built
    from the QDQ graph (``python -m export --int8``; TensorRT 10 with ``BuilderFlag.INT8``,
    TensorRT 11 with no flag), and the text encoder, run once per phrase, stays FP32.
    """
    if precision not in ("fp32", "fp16", "int8"):
        raise ValueError(f"unknown precision {precision!r}; valid: fp32, fp16, int8")
    if precision == "int8":
        return "int8" if graph == "frame_net" else "fp32"
    return "fp16" if (major >= 11 and precision == "fp16") else "fp32"


def gpu_compute_capability(device: int = 0) -> tuple[int, int]:
    """``(major, minor)`` compute capability of CUDA device ``device`` (via pycuda).

    Raises:
        BackendUnavailable: pycuda missing or no GPU.
    """
    try:
        import pycuda.driver as cuda
    except ImportError as exc:
        raise BackendUnavailable(
            "pycuda is not installed: pip install pycuda on a CUDA host (builds from source)"
        ) from exc
    try:
        cuda.init()
        major, minor = cuda.Device(device).compute_capability()
    except Exception as exc:  # pycuda.driver.Error and friends
        raise BackendUnavailable(f"no usable CUDA GPU {device}: {exc}") from exc
    return int(major), int(minor)


def check_build_host(trt: Any = None) -> tuple[Any, tuple[int, int]]:
    """What building engines needs, checked in a second: TensorRT 10/11, pycuda and a GPU.

    ``python -m export --tensorrt`` calls it before exporting anything.

    Returns:
        The ``tensorrt`` module and the GPU's compute capability.

    Raises:
        BackendUnavailable: TensorRT, pycuda or the GPU is missing (with the install hint).
    """
    trt = import_tensorrt() if trt is None else trt
    trt_major(trt)
    return trt, gpu_compute_capability()


def build_serialized_engine(
    trt: Any,
    onnx_path: str | Path,
    *,
    profile: Profile,
    precision: str,
    workspace_bytes: int = 1 << 30,
    timing_cache: str | Path | None = None,
) -> bytes:
    """Parse an ONNX file and build a serialized engine with the API of ``trt``'s major version.

    Args:
        trt: The ``tensorrt`` module (see :func:`import_tensorrt`).
        onnx_path: ONNX file; for TensorRT 11 FP16 it must be the FP16 graph.
        profile: Shapes for every dynamic input.
        precision: ``"fp32"`` or ``"fp16"``.
        workspace_bytes: Builder workspace limit.
        timing_cache: File to load the timing cache from (if present) and save it to.

    Returns:
        The serialized engine (plan) bytes.

    Raises:
        ExportError: the ONNX file does not parse, or the build fails.
    """
    major = trt_major(trt)
    logger_ = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger_)
    # Explicit batch is implicit in 10.x; strong typing is implicit in 11.x: no flags needed.
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger_)
    data = Path(onnx_path).read_bytes()
    if not parser.parse(data):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    if precision == "fp16" and major == 10:
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8" and major == 10:  # the QDQ nodes say where: explicit quantisation
        config.set_flag(trt.BuilderFlag.INT8)
    opt = builder.create_optimization_profile()
    names = {network.get_input(i).name for i in range(network.num_inputs)}
    declared = {name for name, *_ in profile.shapes}
    if names != declared:
        raise ExportError(
            f"profile covers {sorted(declared)} but {onnx_path} has inputs {sorted(names)}"
        )
    for name, lo, mid, hi in profile.shapes:
        opt.set_shape(name, lo, mid, hi)
    config.add_optimization_profile(opt)
    cache_path = Path(timing_cache) if timing_cache else None
    cache_bytes = cache_path.read_bytes() if cache_path and cache_path.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ExportError(f"TensorRT failed to build an engine from {onnx_path} (see its log)")
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    return bytes(plan)


def engine_path(
    export_dir: str | Path,
    graph: str,
    *,
    precision: str,
    profile: Profile,
    cache_dir: str | Path,
    trt: Any,
    compute_capability: tuple[int, int],
) -> tuple[Path, Path]:
    """``(engine file, source ONNX)`` of ``graph`` in the cache (the engine may not exist yet)."""
    source = Path(export_dir) / graph_file(
        graph, onnx_for_precision(trt_major(trt), precision, graph)
    )
    if not source.is_file():
        flag = "--int8" if precision == "int8" else "--fp16"
        raise ExportError(
            f"{source} not found: TensorRT {trt.__version__} builds {precision} engines from it "
            f"(re-export with {flag})"
        )
    key = engine_cache_key(
        trt_version=trt.__version__,
        compute_capability=compute_capability,
        onnx_sha256=sha256_file(source),
        profile=profile,
        precision=precision,
    )
    return Path(cache_dir) / f"{graph}-{precision}-{key}.engine", source


def build_export_engines(
    export_dir: str | Path,
    *,
    precision: str = "fp32",
    opt_size: tuple[int, int] = (320, 320),
    min_size: tuple[int, int] | None = None,
    max_size: tuple[int, int] | None = None,
    max_batch: int = 1,
    cache_dir: str | Path | None = None,
    workspace_bytes: int = 1 << 30,
    trt: Any = None,
    compute_capability: tuple[int, int] | None = None,
) -> list[Path]:
    """Build (or reuse from the cache) both engines of an export folder.

    Args:
        export_dir: Export folder (``python -m export``).
        precision: ``"fp32"`` or ``"fp16"``.
        opt_size: ``(H, W)`` the frame engine is tuned for.
        min_size: Smallest ``(H, W)`` (default: ``opt_size``).
        max_size: Largest ``(H, W)`` (default: ``opt_size``).
        max_batch: Largest batch.
        cache_dir: Engine cache (default ``<cache_root>/tensorrt``).
        workspace_bytes: Builder workspace limit.
        trt: The ``tensorrt`` module (default: imported here).
        compute_capability: GPU arch (default: read from device 0 with pycuda).

    Returns:
        ``[text_encoder engine, frame_net engine]`` paths.
    """
    trt = import_tensorrt() if trt is None else trt
    cc = gpu_compute_capability() if compute_capability is None else compute_capability
    loaded = load_export(export_dir, precision="fp32")
    cache = Path(cache_dir) if cache_dir else cache_root() / "tensorrt"
    cache.mkdir(parents=True, exist_ok=True)
    profiles = {
        "text_encoder": text_profile(loaded.config, max_batch=max_batch),
        "frame_net": frame_profile(
            loaded.config,
            min_size=min_size or opt_size,
            opt_size=opt_size,
            max_size=max_size or opt_size,
            max_batch=max_batch,
        ),
    }
    paths = []
    for graph, profile in profiles.items():
        # INT8 quantises frame_net only; the text encoder (once per phrase) stays FP32
        graph_precision = "fp32" if precision == "int8" and graph == "text_encoder" else precision
        path, source = engine_path(
            export_dir,
            graph,
            precision=graph_precision,
            profile=profile,
            cache_dir=cache,
            trt=trt,
            compute_capability=cc,
        )
        if not path.is_file():
            logger.info("building TensorRT %s engine %s from %s", graph_precision, path.name,
                        source.name)  # fmt: skip
            plan = build_serialized_engine(
                trt,
                source,
                profile=profile,
                precision=graph_precision,
                workspace_bytes=workspace_bytes,
                timing_cache=cache / f"timing-{trt.__version__}-sm{cc[0]}{cc[1]}.cache",
            )
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(plan)
            tmp.replace(path)
        paths.append(path)
    text_engine, frame_engine = paths
    _write_sidecar(
        frame_engine,
        {
            "format": ENGINE_SIDECAR_FORMAT,
            "graph": "frame_net",
            "precision": precision,
            "export": str(Path(export_dir).resolve()),
            "text_engine": text_engine.name,
            "trt_version": str(trt.__version__),
            "compute_capability": list(cc),
            "profile": profiles["frame_net"].as_dict(),
        },
    )
    return paths


def _write_sidecar(engine_file: Path, data: dict[str, Any]) -> None:
    """``<engine>.json``: what the plan was built from, so the plan alone is a model source."""
    path = engine_file.with_name(engine_file.name + ".json")
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
