"""Engine backends behind :class:`engine.base.Engine` and the one factory that builds them.

============  ===================================  ==============================================
backend       runtime (imported lazily)            sources (:func:`engine.loading.resolve`)
============  ===================================  ==============================================
``torch``     torch (CPU / CUDA)                   checkpoint folder
``onnx``      ONNX Runtime (cpu / cuda / tensorrt  export folder, or a checkpoint folder
              execution providers)                 (exported once into the cache)
``tensorrt``  TensorRT + pycuda                    TensorRT engine file, export folder or
                                                   checkpoint folder (plans built once, cached)
``triton``    tritonclient (a Triton server runs   Triton model repository (``python -m export
              the graphs)                          --triton``)
============  ===================================  ==============================================

Only ``torch_backend`` imports torch; this package and the other backends run without it.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.base import Engine

__all__ = [
    "BACKENDS",
    "available_backends",
    "create_engine",
    "parse_device",
]


@dataclass(frozen=True)
class _Backend:
    module: str  # where the Engine subclass lives
    cls: str
    runtime: str  # the module whose presence makes the backend usable


_TABLE = {
    "torch": _Backend("engine.backends.torch_backend", "TorchEngine", "torch"),
    "onnx": _Backend("engine.backends.onnx_backend", "OnnxEngine", "onnxruntime"),
    "tensorrt": _Backend("engine.backends.tensorrt_backend", "TensorRTEngine", "tensorrt"),
    "triton": _Backend("engine.backends.triton_backend", "TritonEngine", "tritonclient"),
}
#: Backend names, in the order CLIs list them.
BACKENDS = tuple(_TABLE)
#: Options that go to the TensorRT plan build rather than to the engine.
_TRT_BUILD_OPTIONS = {"cache_dir", "workspace_mb", "max_batch"}


def parse_device(device: str) -> tuple[str, int]:
    """``"cpu"`` -> ``("cpu", 0)``; ``"cuda"`` / ``"cuda:N"`` -> ``("cuda", N)``.

    Raises:
        ValueError: anything else.
    """
    if device == "cpu":
        return "cpu", 0
    if device == "cuda":
        return "cuda", 0
    if isinstance(device, str) and device.startswith("cuda:") and device[5:].isdigit():
        return "cuda", int(device[5:])
    raise ValueError(f"unknown device {device!r}; valid: cpu, cuda, cuda:N")


def available_backends() -> list[str]:
    """Backends whose runtime imports here (TensorRT also needs pycuda and a GPU at use time)."""
    return [b for b, t in _TABLE.items() if importlib.util.find_spec(t.runtime) is not None]


def create_engine(
    backend: str,
    source: str | Path,
    *,
    device: str = "cpu",
    precision: str = "fp32",
    input_size: tuple[int, int] = (320, 320),
    **options: Any,
) -> Engine:
    """Build an engine: resolve the source for the backend, then construct it.

    Args:
        backend: One of :data:`BACKENDS`.
        source: A checkpoint folder, an export folder or a TensorRT engine file (see the table
            above).
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        precision: ``"fp32"`` or ``"fp16"``.
        input_size: Network input ``(H, W)``, multiples of 32.
        **options: Backend-specific keyword options:
            torch: ``cuda_graphs``, ``compile``;
            onnx: ``providers`` (``"cpu"``, ``"cuda"``, ``"tensorrt"`` or a list of them),
            ``intra_op_threads``, ``io_binding``;
            tensorrt: ``cache_dir``, ``workspace_mb``, ``max_batch`` (the plan build);
            triton: ``url``, ``protocol`` (``"grpc"`` / ``"http"``), ``timeout_s``, ``retry_s``.

    Returns:
        An :class:`~engine.base.Engine`.

    Raises:
        ValueError: unknown backend (lists the valid ones), bad source, size, precision or
            option.
        BackendUnavailable: the backend's runtime is not installed.
    """
    from engine.loading import resolve
    from engine.preprocess import check_input_size

    if backend not in _TABLE:
        raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    input_size = check_input_size(input_size)
    parse_device(device)
    entry = _TABLE[backend]
    cls = getattr(importlib.import_module(entry.module), entry.cls)
    cls.check_request(device=device, precision=precision, **options)  # before any slow work
    build = None
    if backend == "tensorrt":
        build = {k: options.pop(k) for k in list(options) if k in _TRT_BUILD_OPTIONS}
        if "workspace_mb" in build:
            build["workspace_bytes"] = int(build.pop("workspace_mb")) << 20
    resolved = resolve(backend, source, precision=precision, input_size=input_size, build=build)
    return cls.load(resolved, device=device, precision=precision, input_size=input_size, **options)
