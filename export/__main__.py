"""``python -m export``: export a checkpoint to ONNX (and optionally build TensorRT engines).

Examples::

    python -m export --checkpoint models/weights/hinet_lite0 --out exports/lite0 --fp16
    python -m export --checkpoint CKPT --out DIR --min-size 64 --max-size 640 --opset 18
    python -m export --checkpoint CKPT --out DIR --tensorrt --trt-size 320x320   # CUDA + TensorRT
    python -m export --checkpoint CKPT --out DIR --triton REPO                 # + Triton repository
    python -m export --out DIR --triton REPO --backend python                  # from an export
    python -m export --checkpoint CKPT --out DIR --int8                        # + INT8 frame_net
    python -m export --out DIR --int8 --int8-sensitivity sens.json             # layer by layer
    python -m export --out DIR --int8 --int8-float-scopes model.prior,model.prior_in  # prior float
    python -m export --checkpoint CKPT --out DIR --fp16 --tensorrt --triton REPO --backend tensorrt \
        --triton-precision fp16                                                # plans (CUDA host)

Prints one line per exported graph and one PASS/FAIL line per precision; the full parity
numbers are in ``DIR/manifest.json``.
"""

from __future__ import annotations

import argparse
import logging
import sys

from engine.base import BackendUnavailable
from engine.manifest import ExportError
from engine.preprocess import parse_size


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="checkpoint folder to export")
    parser.add_argument(
        "--out",
        help="export folder: written from --checkpoint (replaced), or read when only --triton "
        "is asked",
    )
    parser.add_argument("--fp16", action="store_true", help="also write FP16 graphs")
    parser.add_argument(
        "--int8",
        action="store_true",
        help="also write a static INT8 (QDQ) frame_net, calibrated on synthetic training clips "
        "and real clips no benchmark uses (export.int8); alone with --out: add it to an export",
    )
    parser.add_argument(
        "--int8-size", type=parse_size, default=(320, 320), help="INT8 calibration/parity HxW"
    )
    parser.add_argument(
        "--int8-float-ends",
        default="2,0",
        help="D,T: quantisable layers INT8 keeps float after every graph input (D) and before "
        "every output (T); 5,4 is closer to FP32 and slower (README, measured numbers)",
    )
    parser.add_argument(
        "--calibration-video",
        action="append",
        help="a real clip for INT8 calibration (repeatable; default: opencv-doc's vtest.avi, "
        "Megamind.avi, tree.avi when installed)",
    )
    parser.add_argument(
        "--int8-sensitivity",
        metavar="JSON",
        help="with --int8: quantise one layer at a time and write each layer's mask IoU here "
        "(with --int8-keep-below: read from here when it was measured on this frame_net)",
    )
    parser.add_argument(
        "--int8-keep-below",
        type=float,
        metavar="IOU",
        help="with --int8: also keep float every layer whose mask IoU vs FP32, quantised alone, "
        "is below IOU in the sensitivity sweep (measured first when not saved, at --int8-size "
        "capped at 160x160)",
    )
    parser.add_argument(
        "--int8-float-scopes",
        metavar="MODULES",
        help="with --int8: also keep float every layer of these comma-separated modules, e.g. "
        "model.prior,model.prior_in (the frozen prior and its inputs) or model.backbone",
    )
    parser.add_argument(
        "--min-size", type=int, default=64, help="smallest input side (multiple of 32)"
    )
    parser.add_argument(
        "--max-size", type=int, default=1024, help="largest input side (multiple of 32)"
    )
    parser.add_argument("--max-batch", type=int, default=16, help="largest batch")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset (>= 18)")
    parser.add_argument(
        "--no-check", action="store_true", help="skip the ONNX Runtime parity checks"
    )
    parser.add_argument(
        "--tensorrt", action="store_true", help="also build TensorRT engines (CUDA host)"
    )
    parser.add_argument(
        "--trt-size", type=parse_size, default=(320, 320), help="TensorRT opt size HxW"
    )
    triton = parser.add_argument_group("Triton model repository (export.triton)")
    triton.add_argument("--triton", metavar="REPO", help="write a Triton model repository here")
    triton.add_argument(
        "--backend",
        choices=("onnxruntime", "python", "tensorrt"),
        default="onnxruntime",
        help="Triton backend of both models (python: ONNX Runtime inside Triton's Python backend; "
        "tensorrt: TensorRT plans, from --tensorrt or --trt-engine)",
    )
    triton.add_argument(
        "--triton-precision",
        choices=("fp32", "fp16", "int8"),
        default="fp32",
        help="which exported graphs (or TensorRT engines) the repository serves",
    )
    triton.add_argument(
        "--trt-engine",
        help="--backend tensorrt from an export: the frame_net .engine built from it (its "
        ".json sidecar names the text engine)",
    )
    triton.add_argument(
        "--triton-max-batch",
        type=int,
        help="max_batch_size of both models (default: 8, or the export's --max-batch if smaller)",
    )
    triton.add_argument("--instances", type=int, default=1, help="instances per model")
    triton.add_argument(
        "--queue-delay-us", type=int, default=2000, help="frame_net dynamic-batching delay"
    )
    triton.add_argument(
        "--gpu-instances", action="store_true", help="KIND_GPU instance groups (default KIND_CPU)"
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.out is None or (args.checkpoint is None and args.triton is None and not args.int8):
        parser.error(
            "pass --checkpoint and --out to export, and/or --out with --triton REPO or --int8"
        )
    if args.triton and args.backend == "tensorrt" and not (args.trt_engine or args.tensorrt):
        parser.error("--backend tensorrt serves TensorRT plans: add --tensorrt (build them now) "
                     "or --trt-engine FRAME_ENGINE (built before)")  # fmt: skip
    if args.trt_engine and args.backend != "tensorrt":
        parser.error("--trt-engine goes with --backend tensorrt")
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )

    def say(line: str) -> None:
        print(f"export: {line}", flush=True)

    from export.onnx_export import export_checkpoint

    trt_host = None
    if args.tensorrt:  # a host that cannot build engines fails now, not after the export
        from export.tensorrt import check_build_host

        try:
            trt_host = check_build_host()
        except BackendUnavailable as exc:
            print(f"error: --tensorrt: {exc}", file=sys.stderr)
            return 3
    if args.checkpoint is None:  # only INT8 and/or the repository, from an existing export
        code = _int8(args, say) if args.int8 else 0
        return _triton(args, say) if code == 0 and args.triton else code
    try:
        manifest = export_checkpoint(
            args.checkpoint,
            args.out,
            fp16=args.fp16,
            opset=args.opset,
            min_side=args.min_size,
            max_side=args.max_size,
            max_batch=args.max_batch,
            check=not args.no_check,
            progress=say,
        )
        say(
            f"wrote {args.out} (precisions {', '.join(manifest.precisions)}, opset {manifest.opset})"
        )
        if trt_host is not None:
            from export.tensorrt import build_export_engines

            trt, cc = trt_host
            serve_plans = args.triton and args.backend == "tensorrt"
            batch = (args.triton_max_batch or min(8, args.max_batch)) if serve_plans else 1
            for precision in manifest.precisions:
                paths = build_export_engines(
                    args.out,
                    precision=precision,
                    opt_size=args.trt_size,
                    max_batch=batch,
                    trt=trt,
                    compute_capability=cc,
                )
                for path in paths:
                    say(f"TensorRT {precision} engine {path}")
                if serve_plans and precision == args.triton_precision:
                    args.trt_engine = str(paths[1])
    except (ExportError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (BackendUnavailable, RuntimeError) as exc:  # TensorRT missing or build failures
        print(f"error: {exc}", file=sys.stderr)
        return 3
    code = _int8(args, say) if args.int8 else 0
    return _triton(args, say) if code == 0 and args.triton else code


def _int8(args: argparse.Namespace, say) -> int:
    from pathlib import Path

    from engine.latency import json_safe
    from engine.manifest import graph_file
    from export.int8 import add_int8, read_sweep, scope_nodes, sensitivity

    videos = [Path(v) for v in args.calibration_video] if args.calibration_video else None
    try:
        depth, tail = (int(v) for v in args.int8_float_ends.split(","))
        if depth < 0 or tail < 0:
            raise ValueError
    except ValueError:
        print(f"error: --int8-float-ends must be D,T (two counts >= 0), got "
              f"{args.int8_float_ends!r}", file=sys.stderr)  # fmt: skip
        return 2
    missing = [str(v) for v in videos or () if not v.is_file()]
    if missing:
        print(f"error: --calibration-video not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    if args.int8_keep_below is not None and not 0.0 < args.int8_keep_below <= 1.0:
        print(f"error: --int8-keep-below must be in (0, 1], got {args.int8_keep_below}",
              file=sys.stderr)  # fmt: skip
        return 2
    scopes = [s.strip() for s in (args.int8_float_scopes or "").split(",") if s.strip()]
    try:
        src = Path(args.out) / graph_file("frame_net", "fp32")
        if scopes and src.is_file():  # refused before the sweep's minutes, not after
            import onnx

            scope_nodes(onnx.load(str(src), load_external_data=False), scopes)
        sweep = None
        if args.int8_keep_below is not None or args.int8_sensitivity:
            import json

            saved = args.int8_sensitivity and read_sweep(args.int8_sensitivity, args.out)
            if saved and args.int8_keep_below is not None:
                sweep = saved
                say(f"int8: sensitivity sweep read from {args.int8_sensitivity}")
            else:
                sweep = sensitivity(args.out, size=tuple(min(v, 160) for v in args.int8_size))
                if args.int8_sensitivity:
                    Path(args.int8_sensitivity).write_text(
                        json.dumps(json_safe(sweep), indent=1) + "\n")  # fmt: skip

            def worst(r):
                return min(r["synthetic"]["mask_iou_mean"], r["real"]["mask_iou_mean"])

            say("int8 sensitivity, worst layers (synthetic / real IoU): " + ", ".join(
                f"#{r['index']} {r['op']} {r['synthetic']['mask_iou_mean']:.3f} / "
                f"{r['real']['mask_iou_mean']:.3f}"
                for r in sorted(sweep["rows"], key=worst)[:6]))  # fmt: skip
        add_int8(args.out, size=args.int8_size, videos=videos, ends=(depth, tail),
                 keep_below=args.int8_keep_below, sweep=sweep, float_scopes=scopes,
                 progress=say)  # fmt: skip
    except (ExportError, ValueError, FileNotFoundError) as exc:
        print(f"error: --int8: {exc}", file=sys.stderr)
        return 2
    return 0


def _triton(args: argparse.Namespace, say) -> int:
    from export.triton import write_repository

    try:
        repo = write_repository(
            args.out,
            args.triton,
            backend=args.backend,
            max_batch=args.triton_max_batch,
            instances=args.instances,
            queue_delay_us=args.queue_delay_us,
            kind="KIND_GPU" if args.gpu_instances else "KIND_CPU",
            precision=args.triton_precision,
            frame_engine=args.trt_engine if args.backend == "tensorrt" else None,
        )
    except (ExportError, ValueError, OSError) as exc:
        print(f"error: --triton: {exc}", file=sys.stderr)
        return 2
    say(f"wrote Triton repository {repo} ({args.backend} backend)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
