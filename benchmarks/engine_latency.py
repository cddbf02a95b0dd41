"""Latency of ``Engine.segment`` and ``Engine.encode_text`` per backend x precision x size.

Usage::

    python -m benchmarks.engine_latency                       # the shipped model, CPU rows, JSON
    python -m benchmarks.engine_latency --checkpoint CKPT --repeats 50 --sizes 320x320

Every combination gets a warm-up, then ``repeats`` timed calls (``time.perf_counter``; results
come back as host numpy arrays, so GPU work is synchronised before the clock is read). Rows:
torch eager FP32 on the CPU; ONNX Runtime FP32 and FP16 (CPU provider); on a CUDA host also torch
FP16 / CUDA graphs, ONNX Runtime CUDA and TensorRT. GPU rows are only written where a GPU exists.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import cpu_name, versions, write_json
from engine.latency import percentiles
from engine.preprocess import parse_size
from models.checkpoint import DEFAULT_CHECKPOINT

RESULTS = Path(__file__).parent / "results"
DEFAULT_SIZES = ((256, 256), (320, 320), (480, 640))
PHRASES = ("the person riding a bike on the left", "the red car turning left", "a dog running")

logger = logging.getLogger("benchmarks.engine_latency")


def _stats(ms: list[float]) -> dict[str, float]:
    p = percentiles(ms)
    return {
        **{f"{k}_ms": round(v, 3) for k, v in p.items()},
        "fps": round(1000.0 / p["p50"], 2),
        "n": len(ms),
    }


def _time(fn: Callable[[], Any], *, warmup: int, repeats: int) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000.0)
    return _stats(out)


def measure_engine(
    engine: Any, *, size: tuple[int, int], warmup: int, repeats: int
) -> dict[str, Any]:
    """Time ``segment`` (one real-sized random frame) and ``encode_text`` on one engine."""
    from engine.preprocess import prepare_flow, prepare_image

    rng = np.random.default_rng(0)
    h, w = size
    frame = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    cfg = engine.config
    image = prepare_image(frame, size, cfg.image_mean, cfg.image_std)
    flow = prepare_flow(rng.standard_normal((h, w, 2)).astype(np.float32), size, cfg.flow_gain)
    text = engine.encode_text(PHRASES[0])
    seg = _time(lambda: engine.segment(image, flow, text), warmup=warmup, repeats=repeats)
    phrases = iter(PHRASES * (warmup + repeats + 1))
    enc = _time(lambda: engine.encode_text(next(phrases)), warmup=warmup, repeats=repeats)
    return {"segment": seg, "encode_text": enc}


def run(
    *,
    checkpoint: Path = DEFAULT_CHECKPOINT,
    sizes: tuple[tuple[int, int], ...] = DEFAULT_SIZES,
    warmup: int = 3,
    repeats: int = 20,
    threads: int | None = None,
    workdir: Path | None = None,
) -> dict[str, Any]:
    """Run every available combination; returns the JSON-able report."""
    import torch

    from engine.base import BackendUnavailable
    from engine.manifest import ExportError, checkpoint_sha256, read_manifest, verify_files
    from export.engines import create_engine
    from export.onnx_export import export_checkpoint

    work = Path(workdir or tempfile.mkdtemp(prefix="engine-latency-"))
    weights = str(checkpoint)
    export_dir = work / "export"
    t0 = time.perf_counter()
    try:  # reuse an export of this very checkpoint from an earlier run in the same workdir
        manifest = read_manifest(export_dir)
        verify_files(export_dir, manifest)
        if manifest.source_checkpoint_sha256 != checkpoint_sha256(checkpoint):
            raise ExportError("stale export")
    except ExportError:
        manifest = export_checkpoint(checkpoint, export_dir, fp16=True, min_side=64, max_side=1024)
    export_s = time.perf_counter() - t0
    if threads:
        torch.set_num_threads(threads)
    has_cuda = torch.cuda.is_available()
    combos: list[tuple[str, str, str, Path, dict[str, Any]]] = [
        ("torch", "fp32", "cpu", checkpoint, {}),
        ("onnx", "fp32", "cpu", export_dir, {"intra_op_threads": threads}),
        ("onnx", "fp16", "cpu", export_dir, {"intra_op_threads": threads}),
    ]
    if has_cuda:
        combos += [
            ("torch", "fp32", "cuda", checkpoint, {}),
            ("torch", "fp16", "cuda", checkpoint, {}),
            ("torch", "fp16", "cuda", checkpoint, {"cuda_graphs": True}),
            ("onnx", "fp32", "cuda", export_dir, {"providers": "cuda"}),
            ("onnx", "fp16", "cuda", export_dir, {"providers": "cuda"}),
            ("tensorrt", "fp32", "cuda", export_dir, {}),
            ("tensorrt", "fp16", "cuda", export_dir, {}),
        ]
    rows, skipped = [], []
    load_before = os.getloadavg()
    for backend, precision, device, source, opts in combos:
        for size in sizes:
            label = f"{backend} {precision} {device} {size[0]}x{size[1]} {opts or ''}".strip()
            try:
                engine = create_engine(
                    backend, source, device=device, precision=precision, input_size=size, **opts
                )
            except (BackendUnavailable, ValueError) as exc:
                skipped.append({"combo": label, "reason": str(exc)})
                logger.warning("skipped %s: %s", label, exc)
                break
            with engine:
                result = measure_engine(engine, size=size, warmup=warmup, repeats=repeats)
            row = {
                "backend": backend,
                "precision": precision,
                "device": device,
                "options": {k: v for k, v in opts.items() if v is not None},
                "resolution": f"{size[0]}x{size[1]}",
                **result,
            }
            rows.append(row)
            logger.info("%s: segment p50 %.2f ms", label, result["segment"]["p50_ms"])

    def p50(backend: str, precision: str, res: str) -> float | None:
        for r in rows:
            if (r["backend"], r["precision"], r["device"], r["resolution"]) == (
                backend,
                precision,
                "cpu",
                res,
            ) and not r["options"].get("cuda_graphs"):
                return r["segment"]["p50_ms"]
        return None

    ratios = {}
    for h, w in sizes:
        res = f"{h}x{w}"
        t, o = p50("torch", "fp32", res), p50("onnx", "fp32", res)
        if t and o:
            ratios[res] = round(t / o, 2)
    return {
        "benchmark": "engine_latency",
        "device": {
            "cpu": cpu_name(),
            "cores": os.cpu_count(),
            "gpu": torch.cuda.get_device_name(0) if has_cuda else None,
        },
        "gpu": "measured" if has_cuda else "not measured on GPU (no CUDA device on this host)",
        "weights": weights,
        "threads": threads,
        "load_average_1_5_15": {"before": load_before, "after": os.getloadavg()},
        "warmup": warmup,
        "repeats": repeats,
        "versions": versions(onnxruntime="onnxruntime", torch="torch", tensorrt="tensorrt"),
        "export": {
            "seconds": round(export_s, 1),
            "opset": manifest.opset,
            "checks": manifest.checks,
        },
        "onnx_vs_torch_segment_speedup_cpu_fp32": ratios,
        "rows": rows,
        "skipped": skipped,
    }


def format_table(report: dict[str, Any]) -> str:
    """Plain-text table of the report's rows."""
    head = f"{'backend':9} {'prec':5} {'dev':5} {'size':8} {'seg p50':>8} {'p95':>8} {'p99':>8} {'fps':>7} {'text p50':>9}"
    lines = [head, "-" * len(head)]
    for r in report["rows"]:
        s, t = r["segment"], r["encode_text"]
        extra = " cuda_graphs" if r["options"].get("cuda_graphs") else ""
        lines.append(
            f"{r['backend']:9} {r['precision']:5} {r['device']:5} {r['resolution']:8} "
            f"{s['p50_ms']:8.2f} {s['p95_ms']:8.2f} {s['p99_ms']:8.2f} {s['fps']:7.1f} {t['p50_ms']:9.2f}{extra}"
        )
    lines.append(
        f"ONNX Runtime vs torch eager (CPU, FP32, segment p50): {report['onnx_vs_torch_segment_speedup_cpu_fp32']}"
    )
    lines.append(f"GPU: {report['gpu']}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=DEFAULT_CHECKPOINT,
        help=f"checkpoint folder (default: the shipped model, {DEFAULT_CHECKPOINT.name})",
    )
    parser.add_argument(
        "--sizes", nargs="+", default=[f"{h}x{w}" for h, w in DEFAULT_SIZES], help="HxW sizes"
    )
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch / ONNX Runtime intra-op threads"
    )
    parser.add_argument(
        "--workdir", type=Path, default=None, help="keeps checkpoint + export between runs"
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        help="JSON path (default results/engine_latency_{cpu,gpu}.json)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sizes = tuple(parse_size(s) for s in args.sizes)
    report = run(
        checkpoint=args.checkpoint,
        sizes=sizes,
        warmup=args.warmup,
        repeats=args.repeats,
        threads=args.threads,
        workdir=args.workdir,
    )
    out = args.json or RESULTS / (
        "engine_latency_gpu.json" if report["device"]["gpu"] else "engine_latency_cpu.json"
    )
    write_json(out, report)
    print(format_table(report))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
