"""Synthetic data generation speed on this CPU: clips/s with and without optical flow.

    python -m benchmarks.synthetic_speed --clips 20
    python benchmarks/synthetic_speed.py --clips 20 --size 320x320 --frames 8

Prints a table and writes ``benchmarks/results/synthetic_speed_cpu.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2
import numpy as np
from tqdm import tqdm

from benchmarks.common import cpu_name, versions, write_json
from engine.flow import OpticalFlow
from engine.latency import percentiles
from engine.preprocess import parse_size
from training.synthetic.dataset import clip_flows
from training.synthetic.generator import generate_clip
from training.synthetic.spec import SPLITS, SyntheticSpec

RESULTS = Path(__file__).resolve().parent / "results" / "synthetic_speed_cpu.json"


def _stats(ms: np.ndarray, *, split: str, flow: str, samples: int) -> dict:
    total_s = ms.sum() / 1e3
    p = percentiles(ms)
    return {
        "split": split,
        "flow": flow,
        "clips": len(ms),
        "ms_per_clip_p50": p["p50"],
        "ms_per_clip_p95": p["p95"],
        "ms_per_clip_p99": p["p99"],
        "clips_per_s": float(len(ms) / total_s),
        "samples_per_s": float(samples / total_s),
    }


def bench_split(*, split: str, spec: SyntheticSpec, clips: int, warmup: int, flow_preset: str):
    """Time ``clips`` clips of one split, generation and flow timed separately per clip.

    Returns:
        Two rows: generation only, and generation + flow on all T-1 frame pairs.
    """
    h, w = spec.size
    flow = OpticalFlow(preset=flow_preset, size=(w, h))
    for seed in range(warmup):
        clip_flows(generate_clip(10_000_000 + seed, split=split, spec=spec).frames, flow)
    gen, both, samples = [], [], 0
    for seed in tqdm(range(clips), desc=split, leave=False):
        t0 = time.perf_counter()
        clip = generate_clip(seed, split=split, spec=spec)
        t1 = time.perf_counter()
        clip_flows(clip.frames, flow)
        t2 = time.perf_counter()
        gen.append((t1 - t0) * 1e3)
        both.append((t2 - t0) * 1e3)
        samples += len(clip.targets) * spec.frames
    return [
        _stats(np.array(gen), split=split, flow="none", samples=samples),
        _stats(np.array(both), split=split, flow=flow_preset, samples=samples),
    ]


def run(*, size: tuple[int, int], frames: int, clips: int, warmup: int, flow_preset: str) -> dict:
    """All splits, with and without flow. Returns the JSON-ready result."""
    spec = SyntheticSpec(size=size, frames=frames)
    rows = [
        row
        for s in SPLITS
        for row in bench_split(
            split=s, spec=spec, clips=clips, warmup=warmup, flow_preset=flow_preset
        )
    ]
    return {
        "benchmark": "synthetic_speed",
        "device": "cpu",
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "opencv_threads": cv2.getNumThreads(),
        "load_average_1m": os.getloadavg()[0],
        **versions(numpy="numpy", opencv="cv2"),
        "size_hw": list(size),
        "frames": frames,
        "note": "single process; the same clips timed without and with OpticalFlow on all "
        "T-1 frame pairs; samples = referred objects x frames",
        "results": rows,
    }


def print_table(result: dict) -> None:
    h, w = result["size_hw"]
    print(f"synthetic clips {h}x{w}, T={result['frames']}, {result['cpu']}")
    print(f"{'split':<11} {'flow':<10} {'clips':>5} {'p50 ms':>8} {'p95 ms':>8} "
          f"{'clips/s':>8} {'samples/s':>10}")  # fmt: skip
    for r in result["results"]:
        print(
            f"{r['split']:<11} {r['flow']:<10} {r['clips']:>5} {r['ms_per_clip_p50']:>8.1f} "
            f"{r['ms_per_clip_p95']:>8.1f} {r['clips_per_s']:>8.1f} {r['samples_per_s']:>10.0f}"
        )


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=20, help="timed clips per split and mode")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--size", default="320x320", help="frame size HxW")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--flow-preset", default="ultrafast")
    p.add_argument("--json", type=Path, default=RESULTS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result = run(
        size=parse_size(args.size, network=False),
        frames=args.frames,
        clips=args.clips,
        warmup=args.warmup,
        flow_preset=args.flow_preset,
    )
    print_table(result)
    write_json(args.json, result, indent=1)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
