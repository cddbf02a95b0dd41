"""The export formats table: one row per format, and the one place its flags are defined.

Like ultralytics' ``export_formats()``: each row says what a format is, the flag that asks for
it, the files it writes, where it runs and which options tune it. ``python -m export``'s parser
and its ``--help`` are generated from this table (:func:`build_parser`, :func:`formats_table`),
so a format or an option is added in one place.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from engine.options import size_arg

__all__ = ["FORMATS", "OPTIONS", "Format", "build_parser", "formats_table"]


@dataclass(frozen=True)
class Format:
    """One export format.

    Attributes:
        name: What it is.
        flag: The flag that asks for it (``None``: always written by an export).
        files: What it writes.
        cpu: Runs on a CPU.
        gpu: Runs on a CUDA GPU.
        options: The option flags that tune it (keys of :data:`OPTIONS`).
        help: The flag's help.
    """

    name: str
    flag: str | None
    files: str
    cpu: bool
    gpu: bool
    options: tuple[str, ...]
    help: str = ""


def _ends(text: str) -> tuple[int, int]:
    try:
        depth, tail = (int(v) for v in text.split(","))
    except ValueError:
        depth = tail = -1
    if depth < 0 or tail < 0:
        raise argparse.ArgumentTypeError(f"must be D,T (two counts >= 0), got {text!r}")
    return depth, tail


def _unit_interval(text: str) -> float:
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {value:g}")
    return value


#: Every option flag of ``python -m export``: name -> argparse keyword arguments.
OPTIONS: dict[str, dict[str, Any]] = {
    "--min-size": dict(type=int, default=64, help="smallest input side (multiple of 32)"),
    "--max-size": dict(type=int, default=1024, help="largest input side (multiple of 32)"),
    "--max-batch": dict(type=int, default=16, help="largest batch"),
    "--opset": dict(type=int, default=18, help="ONNX opset (>= 18)"),
    "--no-check": dict(action="store_true", help="skip the ONNX Runtime parity checks"),
    "--int8-size": dict(
        type=size_arg, default=(320, 320), help="INT8 calibration/parity HxW (default 320x320)"
    ),
    "--int8-float-ends": dict(
        type=_ends, default=(2, 0), metavar="D,T",
        help="quantisable layers INT8 keeps float after every graph input (D) and before every "
        "output (T); 5,4 is closer to FP32 and slower (default 2,0)",
    ),
    "--calibration-video": dict(
        action="append",
        help="a real clip for INT8 calibration (repeatable; default: the opencv-doc clips "
        "export.int8 names, when installed)",
    ),
    "--int8-sensitivity": dict(
        metavar="JSON",
        help="quantise one layer at a time and write each layer's mask IoU here (with "
        "--int8-keep-below: read from here when it was measured on this frame_net)",
    ),
    "--int8-sweep-layers": dict(
        type=int, default=0, metavar="N",
        help="measure the sensitivity sweep on the first N quantisable layers only (a quick "
        "look; the layers after them count as insensitive; default 0: every layer)",
    ),
    "--int8-keep-below": dict(
        type=_unit_interval, metavar="IOU",
        help="also keep float every layer whose mask IoU vs FP32, quantised alone, is below IOU "
        "in the sensitivity sweep (measured first when not saved, at --int8-size capped at "
        "160x160)",
    ),
    "--int8-float-scopes": dict(
        metavar="MODULES",
        help="also keep float every layer of these comma-separated modules, e.g. "
        "model.prior,model.prior_in (the frozen prior and its inputs) or model.backbone",
    ),
    "--trt-size": dict(type=size_arg, default=(320, 320), help="TensorRT opt size HxW"),
    "--triton-backend": dict(
        choices=("onnxruntime", "python", "tensorrt"), default="onnxruntime",
        help="Triton backend of both models (python: ONNX Runtime inside Triton's Python "
        "backend; tensorrt: TensorRT plans, from --tensorrt or --trt-engine)",
    ),
    "--triton-precision": dict(
        choices=("fp32", "fp16", "int8"), default="fp32",
        help="which exported graphs (or TensorRT engines) the repository serves",
    ),
    "--trt-engine": dict(
        help="--triton-backend tensorrt from an export: the frame_net .engine built from it "
        "(its .json sidecar names the text engine)",
    ),
    "--triton-max-batch": dict(
        type=int,
        help="max_batch_size of both models (default: 8, or the export's --max-batch if smaller)",
    ),
    "--instances": dict(type=int, default=1, help="instances per model"),
    "--queue-delay-us": dict(type=int, default=2000, help="frame_net dynamic-batching delay"),
    "--gpu-instances": dict(
        action="store_true", help="KIND_GPU instance groups (default KIND_CPU)"
    ),
}  # fmt: skip

#: The formats, in the order an export writes them.
FORMATS = (
    Format(
        "ONNX FP32", None, "text_encoder.onnx, frame_net.onnx, manifest.json", True, True,
        ("--min-size", "--max-size", "--max-batch", "--opset", "--no-check"),
    ),
    Format(
        "ONNX FP16", "--fp16", "text_encoder.fp16.onnx, frame_net.fp16.onnx", True, True, (),
        "also write FP16 graphs",
    ),
    Format(
        "ONNX INT8", "--int8", "frame_net.int8.onnx (static QDQ)", True, True,
        ("--int8-size", "--int8-float-ends", "--calibration-video", "--int8-sensitivity",
         "--int8-sweep-layers", "--int8-keep-below", "--int8-float-scopes"),
        "also write a static INT8 (QDQ) frame_net, calibrated on synthetic training clips and "
        "real clips no benchmark uses (export.int8); alone with --out: add it to an export",
    ),
    Format(
        "TensorRT", "--tensorrt", "<cache>/tensorrt/*.engine + .json sidecar", False, True,
        ("--trt-size",), "also build TensorRT engines (CUDA host with TensorRT 10 or 11)",
    ),
    Format(
        "Triton repository", "--triton", "REPO/{text_encoder,frame_net}/config.pbtxt + models",
        True, True,
        ("--triton-backend", "--triton-precision", "--trt-engine", "--triton-max-batch",
         "--instances", "--queue-delay-us", "--gpu-instances"),
        "write a Triton model repository here (from --checkpoint's export, or from --out)",
    ),
)  # fmt: skip


def formats_table() -> str:
    """The formats as a plain-text table (the ``--help`` epilog and the docs)."""
    head = f"{'format':<19}{'flag':<13}{'CPU':<5}{'GPU':<5}writes / options"
    lines = [head, "-" * len(head)]
    for f in FORMATS:
        lines.append(
            f"{f.name:<19}{f.flag or '(always)':<13}{'yes' if f.cpu else 'no':<5}"
            f"{'yes' if f.gpu else 'no':<5}{f.files}"
        )
        if f.options:
            lines.append(f"{'':<42}{' '.join(f.options)}")
    return "\n".join(lines)


def build_parser(*, description: str, epilog_head: str = "") -> argparse.ArgumentParser:
    """``python -m export``'s parser, one argument group per format (from :data:`FORMATS`)."""
    parser = argparse.ArgumentParser(
        prog="python -m export",
        description=description,
        epilog=f"{epilog_head}formats:\n{formats_table()}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--checkpoint", help="checkpoint folder to export")
    parser.add_argument(
        "--out",
        help="export folder: written from --checkpoint (replaced), or read when only --triton "
        "or --int8 is asked",
    )
    for f in FORMATS:
        group = parser.add_argument_group(f"{f.name} ({f.files})")
        if f.flag == "--triton":
            group.add_argument(f.flag, metavar="REPO", help=f.help)
        elif f.flag is not None:
            group.add_argument(f.flag, action="store_true", help=f.help)
        for option in f.options:
            group.add_argument(option, **OPTIONS[option])
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser
