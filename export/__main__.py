"""``python -m export``: export a checkpoint to ONNX (and optionally build TensorRT engines).

Examples::

    python -m export --checkpoint models/weights/hinet_lite0 --out exports/lite0 --fp16
    python -m export --checkpoint CKPT --out DIR --min-size 64 --max-size 640 --opset 18
    python -m export --checkpoint CKPT --out DIR --tensorrt --trt-size 320x320   # CUDA + TensorRT

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
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder")
    parser.add_argument("--out", required=True, help="export folder to write (replaced)")
    parser.add_argument("--fp16", action="store_true", help="also write FP16 graphs")
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
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )

    def say(line: str) -> None:
        print(f"export: {line}", flush=True)

    from export.onnx_export import export_checkpoint

    trt_host = None
    if args.tensorrt:  # a host that cannot build engines fails now, not after the export
        from engine.backends.tensorrt_build import check_build_host

        try:
            trt_host = check_build_host()
        except BackendUnavailable as exc:
            print(f"error: --tensorrt: {exc}", file=sys.stderr)
            return 3
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
            from engine.backends.tensorrt_build import build_export_engines

            trt, cc = trt_host
            for precision in manifest.precisions:
                for path in build_export_engines(
                    args.out,
                    precision=precision,
                    opt_size=args.trt_size,
                    trt=trt,
                    compute_capability=cc,
                ):
                    say(f"TensorRT {precision} engine {path}")
    except (ExportError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (BackendUnavailable, RuntimeError) as exc:  # TensorRT missing or build failures
        print(f"error: {exc}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
