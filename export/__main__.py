"""``python -m export``: export a checkpoint to ONNX (FP32, FP16, INT8), TensorRT, Triton.

Examples::

    python -m export --checkpoint models/weights/hinet_lite0_prior_person_tune --out exports/default --fp16
    python -m export --checkpoint CKPT --out DIR --min-size 64 --max-size 640 --opset 18
    python -m export --checkpoint CKPT --out DIR --tensorrt --trt-size 320x320   # CUDA + TensorRT
    python -m export --checkpoint CKPT --out DIR --triton REPO                 # + Triton repository
    python -m export --out DIR --triton REPO --triton-backend python           # from an export
    python -m export --checkpoint CKPT --out DIR --int8                        # + INT8 frame_net
    python -m export --out DIR --int8 --int8-sensitivity sens.json             # layer by layer
    python -m export --out DIR --int8 --int8-float-scopes model.prior,model.prior_in  # prior float
    python -m export --checkpoint CKPT --out DIR --fp16 --tensorrt --triton REPO \
        --triton-backend tensorrt --triton-precision fp16                      # plans (CUDA host)

Prints one line per exported graph and one PASS/FAIL line per precision; the full parity
numbers are in ``DIR/manifest.json``. The flags come from the formats table
(:mod:`export.formats`), which ``--help`` prints.
"""

from __future__ import annotations

import argparse
import logging
import sys

from engine.base import BackendUnavailable
from engine.manifest import ExportError
from export import formats

EXIT_BAD_INPUT = 2
EXIT_NO_TENSORRT = 3


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface, generated from :data:`export.formats.FORMATS`."""
    return formats.build_parser(description=__doc__.splitlines()[0])


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Combinations the parser alone cannot refuse (usage errors, exit code 2)."""
    if args.out is None or (args.checkpoint is None and args.triton is None and not args.int8):
        parser.error(
            "pass --checkpoint and --out to export, and/or --out with --triton REPO or --int8"
        )
    plans = args.triton_backend == "tensorrt"
    if args.triton and plans and not (args.trt_engine or args.tensorrt):
        parser.error("--triton-backend tensorrt serves TensorRT plans: add --tensorrt (build them "
                     "now) or --trt-engine FRAME_ENGINE (built before)")  # fmt: skip
    if args.trt_engine and not plans:
        parser.error("--trt-engine goes with --triton-backend tensorrt")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _check(parser, args)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )

    def say(line: str) -> None:
        print(f"export: {line}", flush=True)

    trt_host = None
    if args.tensorrt:  # a host that cannot build engines fails now, not after the export
        from export.tensorrt import check_build_host

        try:
            trt_host = check_build_host()
        except BackendUnavailable as exc:
            print(f"error: --tensorrt: {exc}", file=sys.stderr)
            return EXIT_NO_TENSORRT
    code = 0
    if args.checkpoint is not None:
        code = _onnx_and_tensorrt(args, trt_host, say)
    if code == 0 and args.int8:
        code = _int8(args, say)
    if code == 0 and args.triton:
        code = _triton(args, say)
    return code


def _onnx_and_tensorrt(args: argparse.Namespace, trt_host, say) -> int:
    """Export ``--checkpoint`` into ``--out``, then build its TensorRT plans when asked."""
    from export.onnx_export import export_checkpoint

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
            _tensorrt(args, manifest, trt_host, say)
    except (ExportError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (BackendUnavailable, RuntimeError) as exc:  # TensorRT missing or build failures
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_NO_TENSORRT
    return 0


def _tensorrt(args: argparse.Namespace, manifest, trt_host, say) -> None:
    """Build every exported precision's plans; the served one becomes ``args.trt_engine``."""
    from export.tensorrt import build_export_engines

    trt, cc = trt_host
    serve_plans = args.triton and args.triton_backend == "tensorrt"
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


def _int8(args: argparse.Namespace, say) -> int:
    from pathlib import Path

    from engine.latency import json_safe
    from engine.manifest import graph_file
    from export.int8 import add_int8, read_sweep, scope_nodes
    from export.int8_sweep import sensitivity

    videos = [Path(v) for v in args.calibration_video] if args.calibration_video else None
    depth, tail = args.int8_float_ends
    missing = [str(v) for v in videos or () if not v.is_file()]
    if missing:
        print(f"error: --calibration-video not found: {', '.join(missing)}", file=sys.stderr)
        return EXIT_BAD_INPUT
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
                sweep = sensitivity(args.out, size=tuple(min(v, 160) for v in args.int8_size),
                                    limit=args.int8_sweep_layers)  # fmt: skip
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
        return EXIT_BAD_INPUT
    return 0


def _triton(args: argparse.Namespace, say) -> int:
    from export.triton import write_repository

    try:
        repo = write_repository(
            args.out,
            args.triton,
            backend=args.triton_backend,
            max_batch=args.triton_max_batch,
            instances=args.instances,
            queue_delay_us=args.queue_delay_us,
            kind="KIND_GPU" if args.gpu_instances else "KIND_CPU",
            precision=args.triton_precision,
            frame_engine=args.trt_engine if args.triton_backend == "tensorrt" else None,
        )
    except (ExportError, ValueError, OSError) as exc:
        print(f"error: --triton: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    say(f"wrote Triton repository {repo} ({args.triton_backend} backend)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
