"""torch backend: the checkpoint's network in eager mode (CPU or CUDA).

On CUDA it optionally runs FP16 (``torch.autocast``: convolutions and matmuls in FP16, softmax
and LayerNorm kept in FP32 by autocast's op lists), ``torch.compile`` and CUDA graphs (the frame
network captured once per input shape into static buffers and replayed). On the CPU only FP32
eager is offered; use the ``onnx`` backend there for speed.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from engine.backends import parse_device
from engine.base import (
    TEXT_INPUTS,
    BackendUnavailable,
    Engine,
    frame_inputs,
    frame_outputs,
    text_outputs,
)

__all__ = ["TorchEngine"]

logger = logging.getLogger(__name__)


class TorchEngine(Engine):
    """The torch network behind the engine interface.

    Args:
        model: An :class:`models.hinet.HINet` (moved to ``device`` and set to eval mode here).
        tokenizer: Its tokenizer.
        input_size: Network input ``(H, W)``.
        precision: ``"fp32"``, or ``"fp16"`` (CUDA only, autocast).
        device: ``"cpu"`` or ``"cuda[:N]"``.
        cuda_graphs: Capture and replay the frame network with CUDA graphs (CUDA only).
        compile: Wrap the frame network in ``torch.compile`` (CUDA only).
        intra_op_threads: torch's intra-op CPU threads (process-wide: ``torch.set_num_threads``;
            ``None`` keeps torch's default).
    """

    backend = "torch"

    def __init__(
        self,
        *,
        model: Any,
        tokenizer: Any,
        input_size: tuple[int, int],
        precision: str = "fp32",
        device: str = "cpu",
        cuda_graphs: bool = False,
        compile: bool = False,
        intra_op_threads: int | None = None,
    ) -> None:
        super().__init__(
            config=model.config,
            tokenizer=tokenizer,
            input_size=input_size,
            precision=precision,
            device=device,
        )
        self.check_request(device=device, precision=precision, cuda_graphs=cuda_graphs,
                           compile=compile, intra_op_threads=intra_op_threads)  # fmt: skip
        if intra_op_threads:
            torch.set_num_threads(int(intra_op_threads))
        kind, index = parse_device(device)
        if kind == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailable(f"device {device!r} requested but torch sees no CUDA GPU")
        self._device = torch.device("cuda", index) if kind == "cuda" else torch.device("cpu")
        self.model = model.to(self._device).eval()
        self.cuda_graphs = cuda_graphs
        frame_fn: Callable[..., tuple[torch.Tensor, ...]] = (
            self.model.forward_frame_prior if model.config.prior else self._logits_only
        )
        if compile:
            frame_fn = torch.compile(frame_fn, dynamic=False)
        self._frame_fn = frame_fn
        self._graphs: dict[
            tuple[tuple[int, ...], ...], tuple[Any, list[torch.Tensor], tuple[torch.Tensor, ...]]
        ] = {}

    def _logits_only(self, *args: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.model.forward_frame(*args),)

    @classmethod
    def check_request(cls, *, device: str, precision: str, **options: Any) -> None:
        """fp16, CUDA graphs and compile need a CUDA device (see :meth:`Engine.check_request`)."""
        super().check_request(device=device, precision=precision)
        if precision == "int8":
            raise ValueError(
                "int8 is a quantised ONNX graph: export it (python -m export --int8) and use the "
                "onnx backend"
            )
        threads = options.pop("intra_op_threads", None)
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise ValueError(f"intra_op_threads must be a positive integer, got {threads!r}")
        unknown = sorted(set(options) - {"cuda_graphs", "compile"})
        if unknown:
            raise ValueError(
                f"unknown torch options {unknown}; valid: compile, cuda_graphs, intra_op_threads"
            )
        if parse_device(device)[0] == "cpu" and (precision == "fp16" or any(options.values())):
            raise ValueError(
                "fp16, cuda_graphs and compile need a CUDA device with the torch backend; "
                "on the CPU use precision='fp32' (or the onnx backend)"
            )

    @classmethod
    def load(
        cls,
        resolved: Any,
        *,
        device: str = "cpu",
        precision: str = "fp32",
        input_size: tuple[int, int],
        **options: Any,
    ) -> TorchEngine:
        """Load the resolved checkpoint folder (:func:`engine.loading.resolve`)."""
        from models.checkpoint import load_checkpoint

        model, tokenizer, _ = load_checkpoint(resolved.checkpoint)
        return cls(
            model=model,
            tokenizer=tokenizer,
            input_size=input_size,
            precision=precision,
            device=device,
            **options,
        )

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.precision == "fp16":
            return torch.autocast(device_type="cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def _tensors(
        self, inputs: Mapping[str, np.ndarray], names: tuple[str, ...]
    ) -> list[torch.Tensor]:
        missing = [n for n in names if n not in inputs]
        if missing:
            raise ValueError(f"missing inputs {missing}; expected {', '.join(names)}")
        return [torch.from_numpy(np.ascontiguousarray(inputs[n])).to(self._device) for n in names]

    def run_text(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Text encoder: ``token_ids``, ``token_mask`` (B, L) int64 -> float32 features."""
        ids, mask = self._tensors(inputs, TEXT_INPUTS)
        with torch.inference_mode(), self._autocast():
            out = self.model.encode_text(ids, mask)
        return {k: v.float().cpu().numpy() for k, v in zip(text_outputs(self.config), out)}

    def run_frame(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Frame network: :func:`~engine.base.frame_inputs` -> ``logits`` (and ``prior_conf``).

        ``logits`` (B, 1, H, W) float32; ``prior_conf`` (B, 1) with the grounding prior.
        """
        args = self._tensors(inputs, frame_inputs(self.config))
        if self.cuda_graphs:
            out = self._replay(args)
        else:
            with torch.inference_mode(), self._autocast():
                out = self._frame_fn(*args)
        names = frame_outputs(self.config)  # .cpu() synchronises the stream
        return {k: v.float().cpu().numpy() for k, v in zip(names, out, strict=True)}

    def _replay(self, args: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """Run the frame network through a CUDA graph captured for these input shapes."""
        key = tuple(tuple(a.shape) for a in args)
        if key not in self._graphs:
            static = [a.clone() for a in args]
            stream = torch.cuda.Stream(self._device)
            stream.wait_stream(torch.cuda.current_stream(self._device))
            with torch.cuda.stream(stream), torch.inference_mode(), self._autocast():
                for _ in range(3):  # warm-up outside the capture (allocator, cuDNN autotune)
                    self._frame_fn(*static)
            torch.cuda.current_stream(self._device).wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph), torch.inference_mode(), self._autocast():
                out = self._frame_fn(*static)
            self._graphs[key] = (graph, static, out)
            logger.info("captured a CUDA graph for input shapes %s", key)
        graph, static, out = self._graphs[key]
        for dst, src in zip(static, args):
            dst.copy_(src)
        graph.replay()
        return tuple(o.clone() for o in out)

    def close(self) -> None:
        """Drop captured graphs."""
        self._graphs.clear()
