"""TensorRT backend (TensorRT 10 / 11 runtime with pycuda; torch-free).

``pycuda.autoprimaryctx`` (not ``autoinit``) makes pycuda use the device's *primary* context, the
one the CUDA runtime, torch and ONNX Runtime also use, so this backend coexists with them in one
process. Per graph: one execution context and one CUDA stream; tensors are bound by name
(``set_input_shape``, ``set_tensor_address``), launched with ``execute_async_v3``. Host buffers
are page-locked (``pagelocked_empty``) for asynchronous copies; device and host buffers are
allocated once per tensor shape and reused, so the caller's inputs are copied into buffers the
engine owns and stay alive until the stream is synchronised after the launch.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from engine.backends import parse_device
from engine.base import (
    TEXT_INPUTS,
    BackendUnavailable,
    Engine,
    frame_inputs,
    frame_outputs,
    text_outputs,
)
from engine.manifest import ExportError

__all__ = ["TensorRTEngine", "import_tensorrt", "trt_major"]

logger = logging.getLogger(__name__)

_INSTALL_HINT = (
    "TensorRT is not installed: pip install hinet-stream[gpu] on a CUDA host "
    "(tensorrt and pycuda come from NVIDIA's package index / a CUDA toolkit build)"
)


def import_tensorrt() -> Any:
    """Import and return the ``tensorrt`` module.

    Raises:
        BackendUnavailable: TensorRT is not installed (with the install hint).
    """
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendUnavailable(_INSTALL_HINT) from exc
    return trt


def trt_major(trt: Any) -> int:
    """Major version of a ``tensorrt`` module; only 10 and 11 are supported.

    Raises:
        BackendUnavailable: another major version.
    """
    try:
        major = int(str(trt.__version__).split(".")[0])
    except (AttributeError, ValueError) as exc:
        raise BackendUnavailable(f"cannot read the TensorRT version: {exc}") from exc
    if major not in (10, 11):
        raise BackendUnavailable(f"TensorRT {trt.__version__} is not supported; need 10.x or 11.x")
    return major


def _import_pycuda() -> Any:
    try:
        import pycuda.autoprimaryctx  # noqa: F401  (retains the primary context of device 0)
        import pycuda.driver as cuda
    except ImportError as exc:
        raise BackendUnavailable(
            "pycuda is not installed: pip install hinet-stream[gpu] on a CUDA host "
            "(pycuda builds from source against the CUDA toolkit)"
        ) from exc
    return cuda


class _Buffer:
    """A page-locked host array and a device allocation of one shape and dtype."""

    def __init__(self, cuda: Any, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.shape = shape
        self.dtype = dtype
        self.host = cuda.pagelocked_empty(shape, dtype)
        self.device = cuda.mem_alloc(max(self.host.nbytes, 1))


class _TrtGraph:
    """One deserialized engine with its execution context, stream and buffers."""

    def __init__(
        self,
        trt: Any,
        cuda: Any,
        runtime: Any,
        plan: bytes,
        name: str,
        inputs: tuple[str, ...],
        outputs: tuple[str, ...],
    ) -> None:
        self._trt, self._cuda = trt, cuda
        self.engine = runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise ExportError(
                f"cannot deserialize the {name} engine (built by another TensorRT version or GPU?)"
            )
        self.context = self.engine.create_execution_context()
        self.stream = cuda.Stream()
        modes = {}
        for i in range(self.engine.num_io_tensors):
            tensor = self.engine.get_tensor_name(i)
            modes[tensor] = self.engine.get_tensor_mode(tensor) == trt.TensorIOMode.INPUT
        got_in = {n for n, is_in in modes.items() if is_in}
        got_out = {n for n, is_in in modes.items() if not is_in}
        if got_in != set(inputs) or got_out != set(outputs):
            raise ExportError(
                f"{name} engine has inputs {sorted(got_in)} and outputs {sorted(got_out)}; expected {inputs} -> {outputs}"
            )
        self.inputs, self.outputs = inputs, outputs
        self._dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in modes}
        self._buffers: dict[str, _Buffer] = {}

    def _buffer(self, name: str, shape: tuple[int, ...]) -> _Buffer:
        buf = self._buffers.get(name)
        if buf is None or buf.shape != shape:
            buf = _Buffer(self._cuda, shape, self._dtypes[name])
            self._buffers[name] = buf
        return buf

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        cuda = self._cuda
        for name in self.inputs:
            arr = np.asarray(feeds[name])
            shape = tuple(int(s) for s in arr.shape)
            if not self.context.set_input_shape(name, shape):
                raise ValueError(f"input {name} shape {shape} is outside the engine's profile")
            buf = self._buffer(name, shape)
            np.copyto(buf.host, arr, casting="same_kind")
            cuda.memcpy_htod_async(buf.device, buf.host, self.stream)
            self.context.set_tensor_address(name, int(buf.device))
        out_bufs = {}
        for name in self.outputs:
            shape = tuple(int(s) for s in self.context.get_tensor_shape(name))
            buf = self._buffer(name, shape)
            self.context.set_tensor_address(name, int(buf.device))
            out_bufs[name] = buf
        if not self.context.execute_async_v3(self.stream.handle):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        for buf in out_bufs.values():
            cuda.memcpy_dtoh_async(buf.host, buf.device, self.stream)
        self.stream.synchronize()  # inputs (in our pinned buffers) are free to reuse after this
        return {n: np.array(b.host, np.float32) for n, b in out_bufs.items()}


class TensorRTEngine(Engine):
    """Runs TensorRT engines built from an export folder (:mod:`export.tensorrt`).

    Load with :func:`engine.backends.load_engine`, or build and load with
    :func:`export.engines.create_engine`.

    Args:
        config: Model config (from the export folder).
        tokenizer: Its tokenizer.
        text_engine: Serialized ``text_encoder`` engine file.
        frame_engine: Serialized ``frame_net`` engine file.
        input_size: Network input ``(H, W)`` (inside the frame engine's profile).
        precision: ``"fp32"`` or ``"fp16"`` (what the engines were built for).
        device: ``"cuda"`` / ``"cuda:0"`` (pycuda's primary context of device 0).
    """

    backend = "tensorrt"

    def __init__(
        self,
        *,
        config: Any,
        tokenizer: Any,
        text_engine: Path,
        frame_engine: Path,
        input_size: tuple[int, int],
        precision: str = "fp32",
        device: str = "cuda",
    ) -> None:
        super().__init__(
            config=config,
            tokenizer=tokenizer,
            input_size=input_size,
            precision=precision,
            device=device,
        )
        trt = import_tensorrt()
        cuda = _import_pycuda()
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._text = _TrtGraph(
            trt,
            cuda,
            self._runtime,
            Path(text_engine).read_bytes(),
            "text_encoder",
            TEXT_INPUTS,
            text_outputs(config),
        )
        self._frame = _TrtGraph(
            trt,
            cuda,
            self._runtime,
            Path(frame_engine).read_bytes(),
            "frame_net",
            frame_inputs(config),
            frame_outputs(config),
        )

    @classmethod
    def check_request(cls, *, device: str, precision: str, **options: Any) -> None:
        """A CUDA device 0, TensorRT and pycuda: checked before any export or build."""
        super().check_request(device=device, precision=precision)
        kind, index = parse_device(device)
        if kind != "cuda":
            raise ValueError(
                f"the tensorrt backend runs on a CUDA GPU; got device {device!r}, use 'cuda'"
            )
        if index != 0:
            raise ValueError(
                "the tensorrt backend uses CUDA device 0; select a GPU with CUDA_VISIBLE_DEVICES"
            )
        if options:
            raise ValueError(
                f"unknown tensorrt options {sorted(options)}; the plan build's (cache_dir, "
                "max_batch, workspace_mb) go to export.engines.create_engine"
            )
        import_tensorrt()  # the install hint, before any export work
        _import_pycuda()

    @classmethod
    def load(
        cls,
        resolved: Any,
        *,
        device: str = "cuda",
        precision: str = "fp32",
        input_size: tuple[int, int],
        **options: Any,
    ) -> TensorRTEngine:
        """Deserialize the resolved plans (:func:`engine.loading.resolve`)."""
        return cls(
            config=resolved.export.config,
            tokenizer=resolved.export.tokenizer,
            text_engine=resolved.text_engine,
            frame_engine=resolved.frame_engine,
            input_size=input_size,
            precision=precision,
            device=device,
        )

    def run_text(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Text encoder: ``token_ids``, ``token_mask`` (B, L) int64 -> float32 features."""
        missing = [n for n in TEXT_INPUTS if n not in inputs]
        if missing:
            raise ValueError(f"missing inputs {missing}; expected {', '.join(TEXT_INPUTS)}")
        return self._text.run(inputs)

    def run_frame(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Frame network: :func:`~engine.base.frame_inputs` -> ``logits`` (and ``prior_conf``).

        ``logits`` (B, 1, H, W) float32; ``prior_conf`` (B, 1) with the grounding prior.
        """
        names = frame_inputs(self.config)
        missing = [n for n in names if n not in inputs]
        if missing:
            raise ValueError(f"missing inputs {missing}; expected {', '.join(names)}")
        return self._frame.run(inputs)

    def close(self) -> None:
        """Release contexts, engines and buffers."""
        self._text = self._frame = None
