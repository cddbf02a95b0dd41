"""INT8 vs FP32 ``frame_net`` on ONNX Runtime (CPU), side by side, with the per-op profile.

The export gets its INT8 graph first if it has none (:func:`export.int8.add_int8`). Then both
engines run ``Engine.segment`` on the same real inputs in alternating rounds (FP32, INT8, INT8,
FP32, ...: load from other processes hits both alike); the ratio is of the medians. ONNX
Runtime's profiler then gives each op type's share of one run's time per precision, which shows
where INT8 gains and where it cannot (depthwise convolutions, the float layers, quantise /
dequantise). The parity report comes from the manifest (``checks["int8"]``).

Usage::

    python -m benchmarks.int8 [--checkpoint CHECKPOINT_OR_EXPORT] [--size 320x320] [--threads 2]
        [--repeats 40] [--json benchmarks/results/int8_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from benchmarks.common import cpu_name, versions, write_json
from engine.latency import percentiles
from engine.preprocess import parse_size

RESULTS = Path(__file__).parent / "results"


def op_profile(model: Path, feeds: dict[str, np.ndarray], threads: int, runs: int = 10) -> dict:
    """``{op type: share of the node time}`` over ``runs`` runs (ONNX Runtime's profiler)."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="hinet-prof-") as tmp:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "p")
        opts.log_severity_level = 3
        sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
        for _ in range(runs):
            sess.run(None, feeds)
        events = json.loads(Path(sess.end_profiling()).read_text())
    per_op: dict[str, float] = defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            per_op[e["args"]["op_name"]] += float(e["dur"])
    total = sum(per_op.values()) or 1.0
    ranked = sorted(per_op.items(), key=lambda kv: -kv[1])
    return {op: round(us / total, 4) for op, us in ranked}


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    from models.checkpoint import DEFAULT_CHECKPOINT

    p = argparse.ArgumentParser(
        prog="python -m benchmarks.int8", description=__doc__.splitlines()[0]
    )
    p.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT,
                   help="checkpoint or export folder (default: the shipped model)")  # fmt: skip
    p.add_argument("--size", type=parse_size, default=(320, 320))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=40, help="timed calls per precision")
    p.add_argument("--json", type=Path, default=RESULTS / "int8_cpu.json")
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="also time the INT8 graph of another export folder of the same model (e.g. one made "
        "with --int8-keep-below), in the same alternating rounds; repeatable",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    p = build_parser()
    args = p.parse_args(argv)

    from engine.manifest import graph_file, read_manifest
    from export.calibration import encode_phrase
    from export.check import real_frame_inputs
    from export.engines import cached_export, create_engine
    from export.int8 import add_int8

    variants = {}
    for item in args.variant:
        name, sep, path = item.partition("=")
        if not (sep and name and Path(path).is_dir()) or name in ("fp32", "int8"):
            p.error(f"--variant must be NAME=DIR with an export folder, got {item!r}")
        variants[name] = Path(path)
    from engine.loading import source_kind

    kind = source_kind(args.checkpoint)
    folder = args.checkpoint if kind == "export" else cached_export(args.checkpoint, int8=True)
    if "int8" not in read_manifest(folder).precisions:
        add_int8(folder, size=args.size, progress=print)
    folders = {"fp32": folder, "int8": folder, **variants}
    engines = {
        name: create_engine(
            "onnx",
            path,
            precision="fp32" if name == "fp32" else "int8",
            input_size=args.size,
            intra_op_threads=args.threads,
            int8_below_target=True,  # measured here, whatever its parity
        )  # fmt: skip
        for name, path in folders.items()
    }
    state = encode_phrase(engines["fp32"], "the person riding a bike on the left")
    (image, flow), *_ = real_frame_inputs(engines["fp32"].config, size=args.size, count=1)
    times: dict[str, list[float]] = {name: [] for name in engines}
    for e in engines.values():
        for _ in range(5):
            e.segment(image, flow, state)
    rounds = max(1, args.repeats // 5)
    for r in tqdm(range(rounds), desc="int8 vs fp32"):
        names = list(engines)
        for prec in names if r % 2 == 0 else names[::-1]:
            for _ in range(5):
                t0 = time.perf_counter()
                engines[prec].segment(image, flow, state)
                times[prec].append((time.perf_counter() - t0) * 1e3)
    feeds = {"image": image, "flow": flow, "words": state.words, "words_mask": state.words_mask,
             "sentence": state.sentence}  # fmt: skip
    if state.classes is not None:
        feeds["classes"] = state.classes
    rows = []
    for name, values in times.items():
        pct = percentiles(values)
        prec = "fp32" if name == "fp32" else "int8"
        check = read_manifest(folders[name]).checks.get("int8", {}) if prec == "int8" else {}
        rows.append({"backend": "onnxruntime", "variant": name, "precision": prec,
                     "export": str(folders[name]), "p50_ms": pct["p50"], "p95_ms": pct["p95"],
                     "p99_ms": pct["p99"], "fps": 1e3 / pct["p50"],
                     "speedup_p50": percentiles(times["fp32"])["p50"] / pct["p50"],
                     "kept_float": len(check.get("kept_float", [])),
                     "keep_below": check.get("keep_below"), "parity": check,
                     "op_share": op_profile(folders[name] / graph_file("frame_net", prec), feeds,
                                            args.threads)})  # fmt: skip
    ratio = rows[1]["speedup_p50"]
    parity = rows[1]["parity"]
    print(f"{'variant':<12}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'fps':>8}{'x fp32':>8}"
          f"{'IoU syn':>9}{'IoU real':>9}  top ops")  # fmt: skip
    for r in rows:
        top = ", ".join(f"{op} {100 * v:.0f}%" for op, v in list(r["op_share"].items())[:3])
        syn, real = (f"{r['parity'][k]['mask_iou_mean']:.3f}" if r["parity"] else "-"
                     for k in ("synthetic", "real"))  # fmt: skip
        print(f"{r['variant']:<12}{r['p50_ms']:>9.2f}{r['p95_ms']:>9.2f}{r['p99_ms']:>9.2f}"
              f"{r['fps']:>8.1f}{r['speedup_p50']:>8.2f}{syn:>9}{real:>9}  {top}")  # fmt: skip
    print(f"int8 / fp32 speed-up (p50): {ratio:.2f}x (target 1.4x); mask IoU target "
          f"{parity.get('target_mask_iou', '-')}")  # fmt: skip
    write_json(args.json, {
        "benchmark": "int8", "device": "cpu", "cpu": cpu_name(), "cores": os.cpu_count(),
        "resolution": list(args.size), "threads": args.threads, "model": str(folder),
        "speedup_p50": ratio, "rows": rows, "parity": parity, "note": "not measured on GPU",
        "load_average": os.getloadavg()[0],
        "versions": versions(onnxruntime="onnxruntime", numpy="numpy"),
    })  # fmt: skip
    print(f"wrote {args.json}")
    for e in engines.values():
        e.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
