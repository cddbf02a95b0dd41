"""Engine backends behind :class:`engine.base.Engine`, and the one loader of ready artefacts.

============  ===================================  ==============================================
backend       runtime (imported lazily)            what it loads (:func:`engine.loading.resolve`)
============  ===================================  ==============================================
``torch``     torch (CPU / CUDA)                   checkpoint folder
``onnx``      ONNX Runtime (cpu / cuda / tensorrt  export folder (``python -m export``)
              execution providers)
``tensorrt``  TensorRT + pycuda                    frame_net engine file with its sidecar
                                                   (``python -m export --tensorrt``)
``triton``    tritonclient (a Triton server runs   Triton model repository (``python -m export
              the graphs)                          --triton``)
============  ===================================  ==============================================

:func:`load_engine` loads what is already built. To start from a checkpoint with any backend,
use :func:`export.engines.create_engine`: it builds what the backend needs (once, cached) and
then calls :func:`load_engine`. Only ``torch_backend`` imports torch; this package and the other
backends run without it.
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
    "backend_class",
    "load_engine",
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


def backend_class(backend: str) -> type[Engine]:
    """The :class:`~engine.base.Engine` subclass of a backend (its module imported now).

    Raises:
        ValueError: unknown backend (lists the valid ones).
    """
    if backend not in _TABLE:
        raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    entry = _TABLE[backend]
    return getattr(importlib.import_module(entry.module), entry.cls)


def load_engine(
    backend: str,
    source: str | Path,
    *,
    device: str = "cpu",
    precision: str = "fp32",
    input_size: tuple[int, int] | None = None,
    **options: Any,
) -> Engine:
    """Load an engine from an artefact the backend runs as it is (see the table above).

    Args:
        backend: One of :data:`BACKENDS`.
        source: A checkpoint folder (torch), an export folder (onnx), a frame_net engine file
            (tensorrt) or a Triton repository (triton).
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        precision: ``"fp32"``, ``"fp16"`` or ``"int8"``.
        input_size: Network input ``(H, W)``, multiples of 32 (default: the model's own,
            :func:`engine.loading.model_input_size`).
        **options: Backend-specific keyword options:
            torch: ``cuda_graphs``, ``compile``;
            onnx: ``providers`` (``"cpu"``, ``"cuda"``, ``"tensorrt"`` or a list of them),
            ``intra_op_threads``, ``io_binding``;
            triton: ``url``, ``protocol`` (``"grpc"`` / ``"http"``), ``timeout_s``, ``retry_s``;
            any: ``int8_below_target=True`` loads an INT8 graph whose recorded real-frame parity
            is under the bar (for measuring it, :mod:`benchmarks.int8`; refused otherwise).

    Returns:
        An :class:`~engine.base.Engine`.

    Raises:
        ValueError: unknown backend (lists the valid ones), a source the backend does not load
            as it is (the message says how to build it), bad size, precision or option.
        BackendUnavailable: the backend's runtime is not installed.
    """
    from engine.loading import model_input_size, resolve
    from engine.preprocess import check_input_size

    cls = backend_class(backend)
    input_size = check_input_size(input_size or model_input_size(source))
    parse_device(device)
    below_target = bool(options.pop("int8_below_target", False))
    cls.check_request(device=device, precision=precision, **options)
    resolved = resolve(backend, source, precision=precision, input_size=input_size,
                       int8_below_target=below_target)  # fmt: skip
    return cls.load(resolved, device=device, precision=precision, input_size=input_size, **options)
