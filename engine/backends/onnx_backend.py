"""ONNX Runtime backend (torch-free).

Providers are chosen by short name (:data:`PROVIDERS`). After the session is created the
requested provider must really be in ``session.get_providers()``: ONNX Runtime silently falls
back to the CPU when a GPU provider fails to load, and a "GPU" benchmark that ran on the CPU is
worse than an error. On a GPU provider the inputs and the preallocated (per shape) outputs are
bound with IOBinding, so ONNX Runtime copies straight between host arrays and device buffers.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engine.backends import parse_device
from engine.base import (
    PRIOR_CONF,
    PRIOR_TENSOR,
    TEXT_INPUTS,
    BackendUnavailable,
    Engine,
    frame_inputs,
    frame_outputs,
    prior_classes,
    text_outputs,
)
from engine.loading import LoadedExport, cache_root
from engine.manifest import ExportError

__all__ = ["PROVIDERS", "OnnxEngine", "resolve_providers"]

logger = logging.getLogger(__name__)

#: Short name -> ONNX Runtime execution provider.
PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


def resolve_providers(providers: str | Sequence[str] | None, device: str) -> list[str]:
    """Validate short provider names; default ``cpu`` on CPU and ``cuda`` on a CUDA device.

    Raises:
        ValueError: an unknown name (lists the valid ones) or an empty list.
    """
    if providers is None:
        providers = ["cpu"] if parse_device(device)[0] == "cpu" else ["cuda"]
    names = [providers] if isinstance(providers, str) else list(providers)
    if not names:
        raise ValueError(f"providers must not be empty; valid: {', '.join(PROVIDERS)}")
    bad = [n for n in names if n not in PROVIDERS]
    if bad:
        raise ValueError(f"unknown ONNX Runtime provider {bad[0]!r}; valid: {', '.join(PROVIDERS)}")
    return names


def _import_ort() -> Any:
    try:
        import onnxruntime as ort
    except ImportError as exc:  # pragma: no cover - onnxruntime is a core dependency
        raise BackendUnavailable("onnxruntime is not installed: pip install onnxruntime") from exc
    return ort


class OnnxEngine(Engine):
    """Runs the exported ``text_encoder`` and ``frame_net`` graphs with ONNX Runtime.

    Build with :func:`export.engines.create_engine` (or load with :func:`engine.backends.load_engine`).

    Args:
        loaded: A verified export (:func:`engine.loading.load_export`).
        input_size: Network input ``(H, W)``.
        device: ``"cpu"`` or ``"cuda[:N]"`` (N is the GPU provider's ``device_id``).
        providers: Short provider names in priority order (:data:`PROVIDERS`); the first one
            must load.
        intra_op_threads: ONNX Runtime intra-op threads (``None``: ONNX Runtime's default).
        io_binding: Bind inputs/outputs with IOBinding (default: on for GPU providers).
    """

    backend = "onnx"

    def __init__(
        self,
        *,
        loaded: LoadedExport,
        input_size: tuple[int, int],
        device: str = "cpu",
        providers: str | Sequence[str] | None = None,
        intra_op_threads: int | None = None,
        io_binding: bool | None = None,
    ) -> None:
        super().__init__(
            config=loaded.config,
            tokenizer=loaded.tokenizer,
            input_size=input_size,
            precision=loaded.precision,
            device=device,
        )
        _, device_id = parse_device(device)
        names = resolve_providers(providers, device)
        if intra_op_threads is not None and (
            not isinstance(intra_op_threads, int) or intra_op_threads < 1
        ):
            raise ValueError(
                f"intra_op_threads must be a positive integer, got {intra_op_threads!r}"
            )
        ort = _import_ort()
        self._ort = ort
        self.providers = names
        available = ort.get_available_providers()
        missing = [n for n in names if PROVIDERS[n] not in available]
        if missing:
            raise BackendUnavailable(
                f"ONNX Runtime provider {missing[0]!r} ({PROVIDERS[missing[0]]}) is not in this "
                f"onnxruntime build (available: {', '.join(available)}); for cuda/tensorrt "
                "install onnxruntime-gpu on a CUDA host (pip install hinet-stream[gpu])"
            )
        self._device_type = "cpu" if names[0] == "cpu" else "cuda"
        self._device_id = device_id
        self._io_binding = self._device_type == "cuda" if io_binding is None else bool(io_binding)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        if intra_op_threads is not None:
            opts.intra_op_num_threads = intra_op_threads
        provider_list = self._provider_list(names, device_id, loaded.folder)
        self._text_out = text_outputs(self.config)
        self._frame_in = frame_inputs(self.config)
        self._frame_out = frame_outputs(self.config)
        self._text = self._session(
            loaded.text_path, opts, provider_list, names[0], TEXT_INPUTS, self._text_out
        )
        self._frame = self._session(
            loaded.frame_path, opts, provider_list, names[0], self._frame_in, self._frame_out
        )
        self.export_folder = loaded.folder
        self._outputs: dict[tuple[str, tuple[int, ...]], Any] = {}

    @classmethod
    def check_request(cls, *, device: str, precision: str, **options: Any) -> None:
        """Valid option names and provider names (see :meth:`Engine.check_request`)."""
        super().check_request(device=device, precision=precision)
        unknown = sorted(set(options) - {"providers", "intra_op_threads", "io_binding"})
        if unknown:
            raise ValueError(
                f"unknown onnx options {unknown}; valid: intra_op_threads, io_binding, providers"
            )
        resolve_providers(options.get("providers"), device)

    @classmethod
    def load(
        cls,
        resolved: Any,
        *,
        device: str = "cpu",
        precision: str = "fp32",
        input_size: tuple[int, int],
        **options: Any,
    ) -> OnnxEngine:
        """Open the resolved, verified export (:func:`engine.loading.resolve`)."""
        return cls(loaded=resolved.export, input_size=input_size, device=device, **options)

    # -- set-up --------------------------------------------------------------------------------
    def _provider_list(self, names: list[str], device_id: int, folder: Path) -> list[Any]:
        out: list[Any] = []
        for name in names:
            if name == "cuda":
                out.append((PROVIDERS[name], {"device_id": device_id}))
            elif name == "tensorrt":
                cache = cache_root() / "ort-trt" / folder.resolve().name
                out.append(
                    (
                        PROVIDERS[name],
                        {
                            "device_id": device_id,
                            "trt_engine_cache_enable": True,
                            "trt_engine_cache_path": str(cache),
                            "trt_timing_cache_enable": True,
                            "trt_timing_cache_path": str(cache),
                        },
                    )
                )
            else:
                out.append(PROVIDERS[name])
        return out

    def _session(
        self,
        path: Path,
        opts: Any,
        providers: list[Any],
        primary: str,
        inputs: tuple[str, ...],
        outputs: tuple[str, ...],
    ) -> Any:
        try:
            sess = self._ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ExportError(f"cannot load {path} with ONNX Runtime: {exc}") from exc
        loaded = sess.get_providers()
        if PROVIDERS[primary] not in loaded:
            raise BackendUnavailable(
                f"requested ONNX Runtime provider {primary!r} ({PROVIDERS[primary]}) did not load "
                f"for {path.name}; the session has {loaded} (check CUDA/cuDNN/TensorRT libraries)"
            )
        got_in = tuple(i.name for i in sess.get_inputs())
        got_out = tuple(o.name for o in sess.get_outputs())
        if set(got_in) != set(inputs) or set(got_out) != set(outputs):
            raise ExportError(
                f"{path} has inputs {got_in} and outputs {got_out}; expected {inputs} -> {outputs}"
            )
        return sess

    # -- running -------------------------------------------------------------------------------
    def _feeds(
        self, inputs: Mapping[str, np.ndarray], names: tuple[str, ...]
    ) -> dict[str, np.ndarray]:
        missing = [n for n in names if n not in inputs]
        if missing:
            raise ValueError(f"missing inputs {missing}; expected {', '.join(names)}")
        return {n: np.ascontiguousarray(inputs[n]) for n in names}

    def _bound(
        self, sess: Any, feeds: dict[str, np.ndarray], shapes: dict[str, tuple[int, ...]]
    ) -> dict[str, np.ndarray]:
        binding = sess.io_binding()
        for name, arr in feeds.items():
            binding.bind_cpu_input(name, arr)
        values = []
        for name, shape in shapes.items():
            key = (name, shape)
            if key not in self._outputs:  # preallocated once per (output, shape)
                self._outputs[key] = self._ort.OrtValue.ortvalue_from_shape_and_type(
                    list(shape), np.float32, self._device_type, self._device_id
                )
            binding.bind_ortvalue_output(name, self._outputs[key])
            values.append(self._outputs[key])
        sess.run_with_iobinding(binding)  # synchronous: feeds stay referenced until it returns
        return {name: np.array(v.numpy(), np.float32) for name, v in zip(shapes, values)}

    def run_text(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Text encoder: ``token_ids``, ``token_mask`` (B, L) int64 -> float32 features."""
        feeds = self._feeds(inputs, TEXT_INPUTS)
        if self._io_binding:
            b, n = feeds["token_ids"].shape
            c = self.config.text.width
            shapes = {"words": (b, n, c), "words_mask": (b, n), "sentence": (b, c)}
            if PRIOR_TENSOR in self._text_out:
                shapes[PRIOR_TENSOR] = (b, prior_classes(self.config))
            return self._bound(self._text, feeds, shapes)
        out = self._text.run(list(self._text_out), feeds)
        return {k: np.asarray(v, np.float32) for k, v in zip(self._text_out, out)}

    def run_frame(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Frame network: :func:`~engine.base.frame_inputs` -> ``logits`` (and ``prior_conf``).

        ``logits`` (B, 1, H, W) float32; ``prior_conf`` (B, 1) with the grounding prior.
        """
        feeds = self._feeds(inputs, self._frame_in)
        if self._io_binding:
            b, _, h, w = feeds["image"].shape
            shapes = {"logits": (b, 1, h, w)}
            if PRIOR_CONF in self._frame_out:
                shapes[PRIOR_CONF] = (b, 1)
            return self._bound(self._frame, feeds, shapes)
        out = self._frame.run(list(self._frame_out), feeds)
        return {k: np.asarray(v, np.float32) for k, v in zip(self._frame_out, out)}

    def close(self) -> None:
        """Drop the sessions and preallocated outputs."""
        self._outputs.clear()
        self._text = self._frame = None
