"""Many cameras: N concurrent streams against one Triton server vs N local engines, side by side.

For each stream count (default 1, 2, 4, 8) the same N camera-like streams run twice, one mode
after the other (the order swaps every count, so load from other processes hits both alike):

* ``triton``: one :class:`~engine.backends.triton_backend.TritonEngine` shared by the N
  pipelines (a client per thread) against a real ``tritonserver`` on loopback that serves the
  checkpoint's export through its Python backend (ONNX Runtime inside the server; the only
  backend ``nvidia-pytriton``'s bundled server has) with dynamic batching;
* ``local``: N ONNX Runtime engines in this process, one per stream (``--local-threads`` each).

Every stream is the demo clip played like a camera (:class:`~engine.sources.PacedSource` at
``--pace`` fps, newest frame wins: a stream that cannot keep up drops frames instead of
queueing them), through the whole threaded pipeline (capture, flow, inference, overlay with the
HUD). Reported per mode and N: per-stream output fps (mean, min), total fps, capture -> overlay
p50/p95 over every frame of every stream, frames dropped, and for Triton the server's
``frame_net`` batch-size histogram during that run (from its statistics endpoint). One JSON and
one PNG under ``benchmarks/results/``.

Both modes share this machine's cores with the N pipelines' other stages, so on a small CPU the
numbers show where the work goes, not what a GPU server gives (not measured on GPU here).

Usage::

    python -m benchmarks.serving [--checkpoint CHECKPOINT_OR_EXPORT] [--streams 1,2,4,8]
        [--seconds 8] [--pace 25] [--size HxW] [--json PATH] [--png PATH]
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from benchmarks.common import cpu_name, versions, write_json
from engine.preprocess import parse_size

logger = logging.getLogger(__name__)

RESULTS = Path(__file__).parent / "results"
DEFAULT_JSON = RESULTS / "serving_cpu.json"
MODES = ("triton", "local")


def _counts(text: str) -> list[int]:
    counts = [int(t) for t in text.split(",") if t.strip()]
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"stream counts must be >= 1, got {text!r}")
    return counts


def batch_histogram(stats: dict) -> dict[int, int]:
    """``{batch size: executions}`` of a model from Triton's statistics JSON."""
    model = stats["model_stats"][0]
    return {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in model["batch_stats"]}


def settled_histogram(
    read_stats, *, poll_s: float = 0.05, timeout_s: float = 3.0
) -> dict[int, int]:
    """:func:`batch_histogram` once two readings ``poll_s`` apart agree.

    Triton records an execution's statistics just after sending its response, so a reading taken
    right after the last answer can miss that execution (and the next run would count it).
    """
    reading = batch_histogram(read_stats())
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        time.sleep(poll_s)
        again = batch_histogram(read_stats())
        if again == reading:
            return reading
        reading = again
    return reading


def histogram_delta(before: dict[int, int], after: dict[int, int]) -> dict[int, int]:
    """Executions per batch size between two :func:`batch_histogram` readings."""
    return {b: n - before.get(b, 0) for b, n in sorted(after.items()) if n > before.get(b, 0)}


def run_streams(engines: list, *, phrase: str, clip: Path, pace: float, seconds: float) -> dict:
    """N paced demo streams through N pipelines (``engines[i]`` for stream ``i``) for a while."""
    from engine.latency import LatencyStats
    from engine.pipeline import Pipeline
    from engine.session import Segmenter
    from engine.sources import FileSource, PacedSource
    from engine.streams import StreamGroup

    frames = max(2, round(seconds * pace))
    pipelines = []
    for i, engine in enumerate(engines):
        seg = Segmenter(engine)
        seg.set_phrase(phrase)
        source = PacedSource(FileSource(clip, loop=True), pace, drop=True)
        pipelines.append(Pipeline(source, seg, max_frames=frames, name=f"cam{i + 1}",
                                  stats=LatencyStats(window=frames + 8)))  # fmt: skip
    t0 = time.monotonic()
    summary = StreamGroup(pipelines).run()
    wall = time.monotonic() - t0
    streams = summary["streams"]
    fps = [s["fps"] for s in streams]
    e2e = summary["total"]["stages_ms"]["end_to_end"]
    return {
        "streams": len(engines),
        "wall_s": wall,
        "fps_per_stream_mean": float(np.mean(fps)),
        "fps_per_stream_min": float(min(fps)),
        "fps_total": float(sum(fps)),
        "capture_to_overlay_p50_ms": e2e["p50"],
        "capture_to_overlay_p95_ms": e2e["p95"],
        "capture_to_overlay_p99_ms": e2e["p99"],
        "inference_p50_ms": summary["total"]["stages_ms"]["inference"]["p50"],
        "frames": summary["total"]["frames"],
        "dropped": summary["total"]["dropped"],
        "failed": summary["total"]["failed"],
    }


def _warm(engine, phrase: str, size: tuple[int, int], n: int = 3) -> None:
    state = engine.encode_text(phrase)
    image = np.zeros((1, 3, *size), np.float32)
    flow = np.zeros((1, 2, *size), np.float32)
    for _ in range(n):
        engine.segment(image, flow, state)


def bench(
    export: Path,
    *,
    counts: list[int],
    size: tuple[int, int],
    seconds: float,
    pace: float,
    local_threads: int,
    server_threads: int,
    queue_delay_us: int,
    progress: bool = True,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every (stream count, mode) run; returns ``(rows, server description)``."""
    from benchmarks.triton_local import LocalTritonServer
    from engine.demo import demo_clip
    from engine.manifest import read_manifest
    from export.engines import create_engine
    from export.triton import write_repository

    clip = demo_clip("moving")
    max_batch = min(max(counts), read_manifest(export).max_batch, 8)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="hinet-serving-") as tmp:
        repo = write_repository(export, Path(tmp) / "repo", backend="python", max_batch=max_batch,
                                queue_delay_us=queue_delay_us, threads=server_threads)  # fmt: skip
        with LocalTritonServer(repo, ready_timeout_s=120) as server:
            remote = create_engine("triton", repo, input_size=size, url=server.grpc_url)
            _warm(remote, clip.phrase, size)
            plan = [(n, m) for i, n in enumerate(counts)
                    for m in (MODES if i % 2 == 0 else MODES[::-1])]  # fmt: skip
            for n, mode in tqdm(plan, desc="serving benchmark", disable=not progress):
                if mode == "triton":
                    engines = [remote] * n
                    before = settled_histogram(remote.statistics)
                else:
                    engines = [create_engine("onnx", export, input_size=size,
                                             intra_op_threads=local_threads)
                               for _ in range(n)]  # fmt: skip
                    for e in engines:
                        _warm(e, clip.phrase, size, n=2)
                row = run_streams(engines, phrase=clip.phrase, clip=clip.path, pace=pace,
                                  seconds=seconds)  # fmt: skip
                row["mode"] = mode
                if mode == "triton":
                    hist = histogram_delta(before, settled_histogram(remote.statistics))
                    row["batch_histogram"] = hist
                    executions = sum(hist.values())
                    row["mean_batch"] = sum(b * c for b, c in hist.items()) / max(executions, 1)
                else:
                    for e in engines:
                        e.close()
                rows.append(row)
            remote.close()
    described = {"backend": "python (ONNX Runtime inside tritonserver)", "max_batch": max_batch,
                 "queue_delay_us": queue_delay_us, "ort_threads": server_threads,
                 "instances": 1}  # fmt: skip
    return rows, described


def print_table(rows: list[dict[str, Any]]) -> None:
    """One line per (stream count, mode)."""
    head = (f"{'streams':>7} {'mode':<7}{'fps/stream':>11}{'min':>6}{'total fps':>10}"
            f"{'e2e p50':>9}{'e2e p95':>9}{'dropped':>8}{'mean batch':>11}")  # fmt: skip
    print(head)
    print("-" * len(head))
    for r in sorted(rows, key=lambda r: (r["streams"], r["mode"])):
        batch = f"{r['mean_batch']:>11.2f}" if "mean_batch" in r else f"{'-':>11}"
        print(f"{r['streams']:>7} {r['mode']:<7}{r['fps_per_stream_mean']:>11.1f}"
              f"{r['fps_per_stream_min']:>6.1f}{r['fps_total']:>10.1f}"
              f"{r['capture_to_overlay_p50_ms']:>9.1f}{r['capture_to_overlay_p95_ms']:>9.1f}"
              f"{r['dropped']:>8}{batch}")  # fmt: skip


def plot(rows: list[dict[str, Any]], path: Path, *, pace: float, title: str) -> Path:
    """Total fps and capture -> overlay latency vs streams, and Triton's batch sizes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for mode, colour in zip(MODES, ("tab:green", "tab:blue")):
        rs = sorted((r for r in rows if r["mode"] == mode), key=lambda r: r["streams"])
        n = [r["streams"] for r in rs]
        axes[0].plot(n, [r["fps_total"] for r in rs], "o-", color=colour, label=mode)
        axes[1].plot(n, [r["capture_to_overlay_p50_ms"] for r in rs], "o-", color=colour,
                     label=f"{mode} p50")  # fmt: skip
        axes[1].plot(n, [r["capture_to_overlay_p95_ms"] for r in rs], "o--", color=colour,
                     alpha=0.6, label=f"{mode} p95")  # fmt: skip
    counts = sorted({r["streams"] for r in rows})
    axes[0].plot(counts, [pace * c for c in counts], ":", color="grey", label=f"{pace:g} fps each")
    axes[0].set(xlabel="streams", ylabel="frames per second, all streams", title="throughput")
    axes[1].set(xlabel="streams", ylabel="ms", title="capture -> overlay")
    for ax in axes[:2]:
        ax.set_xticks(counts)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    triton = sorted((r for r in rows if r["mode"] == "triton"), key=lambda r: r["streams"])
    sizes = sorted({int(b) for r in triton for b in r["batch_histogram"]}) or [1]
    width = 0.8 / max(len(triton), 1)
    for i, r in enumerate(triton):
        hist = {int(b): c for b, c in r["batch_histogram"].items()}
        total = max(sum(hist.values()), 1)
        axes[2].bar([s + (i - (len(triton) - 1) / 2) * width for s in sizes],
                    [hist.get(s, 0) / total for s in sizes], width,
                    label=f"{r['streams']} streams")  # fmt: skip
    axes[2].set(xlabel="frame_net batch size", ylabel="share of server executions",
                title="Triton dynamic batching")  # fmt: skip
    axes[2].set_xticks(sizes)
    axes[2].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    from models.checkpoint import DEFAULT_CHECKPOINT

    p = argparse.ArgumentParser(prog="python -m benchmarks.serving",
                                description=__doc__.splitlines()[0])  # fmt: skip
    p.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT,
                   help="model to serve: an export folder, or a checkpoint folder (exported once, "
                        "cached; default: the shipped model)")  # fmt: skip
    p.add_argument("--streams", type=_counts, default=[1, 2, 4, 8], help="e.g. 1,2,4,8")
    p.add_argument("--seconds", type=float, default=8.0, help="per (streams, mode) run")
    p.add_argument("--pace", type=float, default=25.0, help="each camera's frames per second")
    p.add_argument("--size", type=parse_size, help="network input HxW (default: the model's)")
    p.add_argument("--local-threads", type=int, default=1, help="ORT threads per local engine")
    p.add_argument("--server-threads", type=int, default=0,
                   help="ORT threads inside the server (0: its default)")  # fmt: skip
    p.add_argument("--queue-delay-us", type=int, default=2000, help="dynamic-batching delay")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON)
    p.add_argument("--png", type=Path, help="default: the JSON path with .png")
    return p


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    p = build_parser()
    args = p.parse_args(argv)
    if args.seconds <= 0 or args.pace <= 0:
        p.error("--seconds and --pace must be > 0")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")

    from benchmarks.triton_local import TritonEnvMissingError, server_env
    from engine.loading import source_kind
    from export.engines import cached_export
    from models.checkpoint import read_checkpoint_config

    try:
        server_env()
    except TritonEnvMissingError as exc:
        print(f"serving benchmark: {exc}")
        return 2
    kind = source_kind(args.checkpoint)
    export = args.checkpoint if kind == "export" else cached_export(args.checkpoint)
    size = args.size or tuple(read_checkpoint_config(export)[0].input_size)
    rows, server = bench(export, counts=args.streams, size=size, seconds=args.seconds,
                         pace=args.pace, local_threads=args.local_threads,
                         server_threads=args.server_threads,
                         queue_delay_us=args.queue_delay_us)  # fmt: skip
    print_table(rows)
    report = {
        "benchmark": "serving",
        "device": "cpu",
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "backend": {
            "triton": "tritonserver (nvidia-pytriton) + tritonclient gRPC",
            "local": "onnxruntime, one engine per stream",
        },  # fmt: skip
        "precision": "fp32",
        "resolution": list(size),
        "model": str(args.checkpoint),
        "source": f"demo clip paced at {args.pace:g} fps per stream, newest frame wins",
        "seconds_per_run": args.seconds,
        "local_threads": args.local_threads,
        "server": server,
        "note": "not measured on GPU",
        "versions": versions(onnxruntime="onnxruntime", tritonclient="tritonclient", numpy="numpy"),
        "rows": rows,
    }
    write_json(args.json, report)
    png = plot(rows, args.png or args.json.with_suffix(".png"), pace=args.pace,
               title=f"{', '.join(map(str, args.streams))} streams, {cpu_name()}, {size[0]}x{size[1]}, "
               "Triton (Python backend, CPU) vs local ONNX Runtime")  # fmt: skip
    print(f"wrote {args.json} and {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
