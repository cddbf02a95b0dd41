"""Engine backends behind :class:`engine.base.Engine` and the one factory that builds them.

============  ===================================  =====================================
backend       runtime (imported lazily)            source
============  ===================================  =====================================
``torch``     torch (CPU / CUDA)                   checkpoint folder
``onnx``      ONNX Runtime (cpu / cuda / tensorrt  export folder, or a checkpoint folder
              execution providers)                 (auto-exported once into the cache)
``tensorrt``  TensorRT + pycuda                    export folder, or a checkpoint folder
============  ===================================  =====================================

Only ``torch_backend`` imports torch; this package and the other backends run without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.base import Engine

__all__ = [
    "BACKENDS",
    "BackendUnavailable",
    "available_backends",
    "create_engine",
    "parse_device",
]

BACKENDS = ("torch", "onnx", "tensorrt")


class BackendUnavailable(RuntimeError):  # noqa: N818 (name used across the project)
    """The runtime a backend needs (torch, onnxruntime, TensorRT, pycuda, a GPU) is missing."""


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
    import importlib.util

    modules = {"torch": "torch", "onnx": "onnxruntime", "tensorrt": "tensorrt"}
    return [b for b in BACKENDS if importlib.util.find_spec(modules[b]) is not None]


def create_engine(
    backend: str,
    source: str | Path,
    *,
    device: str = "cpu",
    precision: str = "fp32",
    input_size: tuple[int, int] = (320, 320),
    **options: Any,
) -> Engine:
    """Build an engine.

    Args:
        backend: One of :data:`BACKENDS`.
        source: A checkpoint folder or an export folder (see the table above).
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        precision: ``"fp32"`` or ``"fp16"``.
        input_size: Network input ``(H, W)``, multiples of 32.
        **options: Backend-specific keyword options:
            torch: ``cuda_graphs``, ``compile``;
            onnx: ``providers`` (``"cpu"``, ``"cuda"``, ``"tensorrt"`` or a list of them),
            ``intra_op_threads``, ``io_binding``;
            tensorrt: ``cache_dir``, ``workspace_mb``, ``max_batch``.

    Returns:
        An :class:`~engine.base.Engine`.

    Raises:
        ValueError: unknown backend (lists the valid ones), bad source, size, precision or
            option.
        BackendUnavailable: the backend's runtime is not installed.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if backend == "torch":
        from engine.backends.torch_backend import TorchEngine

        return TorchEngine.from_source(
            source, device=device, precision=precision, input_size=input_size, **options
        )
    if backend == "onnx":
        from engine.backends.onnx_backend import OnnxEngine

        return OnnxEngine.from_source(
            source, device=device, precision=precision, input_size=input_size, **options
        )
    from engine.backends.tensorrt_backend import TensorRTEngine

    return TensorRTEngine.from_source(
        source, device=device, precision=precision, input_size=input_size, **options
    )
