"""Export a checkpoint to two ONNX graphs (wrap, export, check, compare).

``text_encoder.onnx``: ``token_ids`` (B, L) int64, ``token_mask`` (B, L) int64
    -> ``words`` (B, L, C), ``words_mask`` (B, L), ``sentence`` (B, C), float32.
``frame_net.onnx``: ``image`` (B, 3, H, W), ``flow`` (B, 2, H, W), ``words``, ``words_mask``,
    ``sentence`` -> ``logits`` (B, 1, H, W), float32.

B is dynamic in ``[1, max_batch]``; H and W are dynamic multiples of 32 in
``[min_side, max_side]``; L = ``config.text.max_tokens`` is static (the tokenizer always pads
to it). Graphs come from ``torch.onnx.export(dynamo=True)`` with ``dynamic_shapes`` keyed by the
wrappers' forward-argument names, which are exactly the names of :mod:`engine.base`. The
wrappers below adapt the model to the exporter; the model itself is not changed.

Every export is checked: ``onnx.checker``, then ONNX Runtime against torch on random inputs and
on real video frames (:mod:`export.check`); a failing check raises :class:`ExportError`.
"""

from __future__ import annotations

import contextlib
import logging
import platform
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn
from torch.export import Dim

from engine.base import (
    PRIOR_TENSOR,
    REFERENT_TENSOR,
    TEXT_INPUTS,
    frame_inputs,
    frame_outputs,
    prior_classes,
    text_outputs,
)
from engine.manifest import (
    Manifest,
    checkpoint_sha256,
    graph_file,
    write_manifest,
)
from export.fp16 import convert_to_fp16
from models.files import sha256_file

__all__ = [
    "DEFAULT_MAX_BATCH",
    "DEFAULT_OPSET",
    "FrameNetExport",
    "TextEncoderExport",
    "export_checkpoint",
    "export_frame_net",
    "export_text_encoder",
    "graph_io",
]

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 18
DEFAULT_MAX_BATCH = 16
#: Above this many bytes of weights the graph is written with external data (protobuf limit).
_EXTERNAL_DATA_BYTES = 2_000_000_000
#: Readable names for the dynamic dims (torch names them after the ``Dim`` expressions).
_DIM_NAMES = {"32*h32": "height", "32*w32": "width"}


class TextEncoderExport(nn.Module):
    """Export adapter: ``(token_ids, token_mask) -> (words, words_mask, sentence[, classes])``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, token_ids: torch.Tensor, token_mask: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        """(B, L) int64 ids and mask -> (B, L, C), (B, L), (B, C) [, (B, 1000)] float32."""
        return self.model.encode_text(token_ids, token_mask)


class FrameNetExport(nn.Module):
    """Export adapter: ``(image, flow, words, words_mask, sentence) -> logits``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        image: torch.Tensor,
        flow: torch.Tensor,
        words: torch.Tensor,
        words_mask: torch.Tensor,
        sentence: torch.Tensor,
    ) -> torch.Tensor:
        """(B, 3, H, W), (B, 2, H, W), (B, L, C), (B, L), (B, C) -> (B, 1, H, W) logits."""
        return self.model.forward_frame(image, flow, words, words_mask, sentence)


class FrameNetPriorExport(FrameNetExport):
    """Export adapter of a model with the grounding prior: also reads ``classes`` (B, 1000)."""

    def forward(  # type: ignore[override]
        self,
        image: torch.Tensor,
        flow: torch.Tensor,
        words: torch.Tensor,
        words_mask: torch.Tensor,
        sentence: torch.Tensor,
        classes: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """As :class:`FrameNetExport`, plus the class weights in and ``prior_conf`` out.

        ``classes`` is (B, 1000); ``prior_conf`` is (B, 1).
        """
        return self.model.forward_frame_prior(image, flow, words, words_mask, sentence, classes)


class FrameNetReferentExport(FrameNetExport):
    """Export adapter of a model with the referent input: also reads ``referent`` (B, 1, H, W)."""

    def forward(  # type: ignore[override]
        self,
        image: torch.Tensor,
        flow: torch.Tensor,
        words: torch.Tensor,
        words_mask: torch.Tensor,
        sentence: torch.Tensor,
        classes: torch.Tensor,
        referent: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """As :class:`FrameNetPriorExport`, plus the referent map in."""
        return self.model.forward_frame_prior(image, flow, words, words_mask, sentence, classes,
                                              referent)  # fmt: skip


def _check_range(min_side: int, max_side: int, max_batch: int) -> None:
    if min_side % 32 or max_side % 32 or not 32 <= min_side <= max_side:
        raise ValueError(
            f"size range {min_side}..{max_side} invalid: both must be multiples of 32 "
            "with 32 <= min <= max"
        )
    if not isinstance(max_batch, int) or max_batch < 1:
        raise ValueError(f"max_batch must be a positive integer, got {max_batch!r}")


def _param_bytes(model: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def _rename_dims(path: Path) -> None:
    """Give the dynamic H/W dims readable names in the saved graph (labels only)."""
    proto = onnx.load(str(path), load_external_data=False)
    values = [*proto.graph.input, *proto.graph.output, *proto.graph.value_info]
    for value in values:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in _DIM_NAMES:
                dim.dim_param = _DIM_NAMES[dim.dim_param]
    onnx.save(proto, str(path))


#: Loggers of the exporter's internals: one INFO line per graph pass (hundreds per export).
_NOISY_LOGGERS = ("onnx_ir", "onnxscript", "torch.onnx")
#: The exporter's registry warns once per torchvision operator it cannot register
#: ("torchvision is not installed. Skipping torchvision::nms"): the project never uses them.
_REGISTRY_LOGGER = "torch.onnx._internal.exporter._registration"


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's per-pass INFO logs and axis-renaming warnings while exporting."""
    quiet = {name: logging.WARNING for name in _NOISY_LOGGERS} | {_REGISTRY_LOGGER: logging.ERROR}
    loggers = [logging.getLogger(name) for name in quiet]
    levels = [lg.level for lg in loggers]
    for lg, level in zip(loggers, quiet.values()):
        lg.setLevel(level)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*axis name.*will not be used.*")
            # torch's own pytree use inside the exporter (not ours; fixed upstream later).
            warnings.filterwarnings("ignore", category=FutureWarning, message=r".*LeafSpec.*")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


@contextlib.contextmanager
def _step(say: Callable[[str], None], what: str) -> Iterator[None]:
    """Report ``what`` with its duration once it finished."""
    t0 = time.perf_counter()
    yield
    say(f"exported {what} ({time.perf_counter() - t0:.1f} s)")


def _export(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    path: Path,
    *,
    inputs: tuple[str, ...],
    outputs: tuple[str, ...],
    dynamic_shapes: dict[str, Any],
    opset: int,
) -> None:
    if opset < 18:
        raise ValueError(f"opset must be >= 18, got {opset}")
    external = _param_bytes(module) > _EXTERNAL_DATA_BYTES
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), _quiet_exporter():
        torch.onnx.export(
            module.eval(),
            args,
            str(path),
            input_names=list(inputs),
            output_names=list(outputs),
            opset_version=opset,
            dynamo=True,
            external_data=external,
            dynamic_shapes=dynamic_shapes,
            verbose=False,
        )
    if not external:
        _rename_dims(path)
    onnx.checker.check_model(str(path), full_check=True)
    logger.debug("exported %s (%.1f MB)", path, path.stat().st_size / 1e6)


def export_text_encoder(
    model: nn.Module,
    path: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
    max_batch: int = DEFAULT_MAX_BATCH,
) -> Path:
    """Export ``model.encode_text`` to ``path`` (dynamic batch) and run ``onnx.checker``.

    Args:
        model: An :class:`models.hinet.HINet` in eval mode.
        path: Output ``.onnx`` file.
        opset: ONNX opset (>= 18).
        max_batch: Upper bound of the dynamic batch dim.
    """
    _check_range(32, 32, max_batch)
    text = model.config.text
    batch = Dim("batch", min=1, max=max(2, max_batch))
    ids = torch.randint(4, text.vocab_size, (2, text.max_tokens), dtype=torch.int64)
    mask = torch.zeros(2, text.max_tokens, dtype=torch.int64)
    mask[0, :3] = 1
    mask[1, :7] = 1
    path = Path(path)
    _export(
        TextEncoderExport(model),
        (ids * mask, mask),
        path,
        inputs=TEXT_INPUTS,
        outputs=text_outputs(model.config),
        dynamic_shapes={"token_ids": {0: batch}, "token_mask": {0: batch}},
        opset=opset,
    )
    return path


def export_frame_net(
    model: nn.Module,
    path: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
    min_side: int = 64,
    max_side: int = 1024,
    max_batch: int = DEFAULT_MAX_BATCH,
) -> Path:
    """Export ``model.forward_frame`` with dynamic batch, height and width.

    Args:
        model: An :class:`models.hinet.HINet` in eval mode.
        path: Output ``.onnx`` file.
        opset: ONNX opset (>= 18).
        min_side: Smallest H or W (multiple of 32).
        max_side: Largest H or W (multiple of 32).
        max_batch: Upper bound of the dynamic batch dim.
    """
    _check_range(min_side, max_side, max_batch)
    cfg = model.config
    batch = Dim("batch", min=1, max=max(2, max_batch))
    spatial: dict[int, Any] = {}
    if min_side < max_side:
        # Sides are 32 * k: torch.export keeps the multiple-of-32 fact in the graph.
        h32 = Dim("h32", min=min_side // 32, max=max_side // 32)
        w32 = Dim("w32", min=min_side // 32, max=max_side // 32)
        spatial = {2: 32 * h32, 3: 32 * w32}
    # Example sides differ (so H and W stay separate symbols) and lie inside the range.
    h = min(max(128, min_side), max_side)
    w = min(h + 32, max_side) if min_side < max_side else h
    if w == h and min_side < max_side:
        h = w - 32
    g = torch.Generator().manual_seed(0)
    c, n = cfg.text.width, cfg.text.max_tokens
    words_mask = torch.zeros(2, n)
    words_mask[:, :4] = 1.0
    args = (
        torch.randn(2, 3, h, w, generator=g),
        torch.randn(2, 2, h, w, generator=g),
        torch.randn(2, n, c, generator=g),
        words_mask,
        torch.randn(2, c, generator=g),
    )
    dynamic = {
        "image": {0: batch, **spatial},
        "flow": {0: batch, **spatial},
        "words": {0: batch},
        "words_mask": {0: batch},
        "sentence": {0: batch},
    }
    adapter = FrameNetExport(model)
    if cfg.prior:
        args += (torch.softmax(torch.randn(2, prior_classes(cfg), generator=g), dim=-1),)
        dynamic[PRIOR_TENSOR] = {0: batch}
        adapter = FrameNetPriorExport(model)
    if cfg.referent:
        args += ((torch.rand(2, 1, h, w, generator=g) > 0.7).float(),)
        dynamic[REFERENT_TENSOR] = {0: batch, **spatial}
        adapter = FrameNetReferentExport(model)
    path = Path(path)
    _export(
        adapter,
        args,
        path,
        inputs=frame_inputs(cfg),
        outputs=frame_outputs(cfg),
        dynamic_shapes=dynamic,
        opset=opset,
    )
    return path


_ONNX_DTYPES = {1: "float32", 7: "int64", 10: "float16", 6: "int32", 9: "bool"}


def graph_io(path: str | Path) -> dict[str, dict[str, dict[str, Any]]]:
    """Input/output names, shapes (ints or dim names) and dtypes of an ONNX file."""
    proto = onnx.load(str(path), load_external_data=False)

    def describe(values: Any) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for v in values:
            t = v.type.tensor_type
            shape = [d.dim_param if d.dim_param else int(d.dim_value) for d in t.shape.dim]
            out[v.name] = {"shape": shape, "dtype": _ONNX_DTYPES.get(t.elem_type, str(t.elem_type))}
        return out

    return {"inputs": describe(proto.graph.input), "outputs": describe(proto.graph.output)}


def _versions() -> dict[str, str]:
    import onnxruntime
    import onnxscript

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxscript": onnxscript.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def export_checkpoint(
    checkpoint: str | Path,
    out: str | Path,
    *,
    fp16: bool = False,
    opset: int = DEFAULT_OPSET,
    min_side: int = 64,
    max_side: int = 1024,
    max_batch: int = DEFAULT_MAX_BATCH,
    check: bool = True,
    progress: Callable[[str], None] | None = None,
) -> Manifest:
    """Export a checkpoint folder to an export folder, check it and write ``manifest.json``.

    The folder is written to a temporary sibling and renamed at the end, so a failed export
    never leaves a half-written folder behind.

    Args:
        checkpoint: Checkpoint folder (:mod:`models.checkpoint`).
        out: Export folder to create (replaced if it exists).
        fp16: Also write the FP16 graphs (:mod:`export.fp16`).
        opset: ONNX opset (>= 18).
        min_side: Smallest accepted input side (multiple of 32).
        max_side: Largest accepted input side (multiple of 32).
        max_batch: Largest declared batch.
        check: Run the parity checks of :mod:`export.check` (raise on failure).
        progress: Called with one line per finished step (graph exported, check passed).

    Returns:
        The written :class:`~engine.manifest.Manifest`.

    Raises:
        ExportError: a parity check failed (the message gives the measured differences).
        ValueError: bad size range or opset; CheckpointError for a bad checkpoint.
    """
    from export.check import check_export, check_line
    from models.checkpoint import CONFIG_FILE, load_checkpoint, tokenizer_file

    say = progress or (lambda line: logger.info("%s", line))

    _check_range(min_side, max_side, max_batch)
    if opset < 18:
        raise ValueError(f"opset must be >= 18, got {opset}")
    checkpoint, out = Path(checkpoint), Path(out)
    model, tokenizer, _ = load_checkpoint(checkpoint)
    model.eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        with _step(say, "text_encoder fp32"):
            export_text_encoder(
                model, tmp / graph_file("text_encoder", "fp32"), opset=opset, max_batch=max_batch
            )
        with _step(say, "frame_net fp32"):
            export_frame_net(
                model,
                tmp / graph_file("frame_net", "fp32"),
                opset=opset,
                min_side=min_side,
                max_side=max_side,
                max_batch=max_batch,
            )
        precisions = ["fp32"]
        if fp16:
            for graph in ("text_encoder", "frame_net"):
                with _step(say, f"{graph} fp16"):
                    src = tmp / graph_file(graph, "fp32")
                    half = convert_to_fp16(onnx.load(str(src)))
                    dst = tmp / graph_file(graph, "fp16")
                    onnx.save(half, str(dst))
                    onnx.checker.check_model(str(dst), full_check=True)
            precisions.append("fp16")
        shutil.copyfile(checkpoint / CONFIG_FILE, tmp / CONFIG_FILE)
        tok_name = tokenizer_file(model.config)
        shutil.copyfile(checkpoint / tok_name, tmp / tok_name)
        checks: dict[str, Any] = {}
        if check:
            for precision in precisions:
                checks[precision] = check_export(
                    model,
                    tokenizer,
                    text_path=tmp / graph_file("text_encoder", precision),
                    frame_path=tmp / graph_file("frame_net", precision),
                    precision=precision,
                    min_side=min_side,
                    max_side=max_side,
                )
                say(check_line(precision, checks[precision]))
        manifest = Manifest(
            opset=opset,
            versions=_versions(),
            source_checkpoint_sha256=checkpoint_sha256(checkpoint),
            min_side=min_side,
            max_side=max_side,
            max_batch=max_batch,
            precisions=tuple(precisions),
            io={
                graph: graph_io(tmp / graph_file(graph, "fp32"))
                for graph in ("text_encoder", "frame_net")
            },
            files={p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()},
            checks=checks,
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )
        write_manifest(tmp, manifest)
        if out.exists():
            shutil.rmtree(out)
        tmp.chmod(0o755)  # mkdtemp made it private
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("export written to %s (%s)", out, ", ".join(precisions))
    return manifest
