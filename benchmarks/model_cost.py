"""Cost of the HINet network: parameters, GFLOPs and torch-eager CPU latency of ``forward_frame``.

FLOPs are counted with :class:`torch.utils.flop_counter.FlopCounterMode`, which counts each
multiply-accumulate of convolutions and matrix products as 2 FLOPs (GFLOPs = 2 x GMACs);
element-wise ops, normalisation and activations are not counted.

Usage::

    python -m benchmarks.model_cost [--preset hinet_lite0] [--repeats 20] [--json PATH]
        [--sizes 256x256 320x320 480x640] [--threads N]
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from benchmarks.common import cpu_name, write_json
from engine.latency import percentiles
from engine.preprocess import parse_size
from models.config import preset_names
from models.hinet import HINet, build_model

logger = logging.getLogger(__name__)

DEFAULT_SIZES = ((256, 256), (320, 320), (480, 640))
DEFAULT_JSON = Path(__file__).parent / "results" / "model_cost_cpu.json"


def _frame_inputs(model: HINet, size: tuple[int, int]) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    h, w = size
    cfg = model.config
    n = cfg.text.max_tokens
    ids = torch.randint(4, cfg.text.vocab_size, (1, n), generator=g)
    mask = torch.zeros(1, n, dtype=torch.int64)
    mask[:, :6] = 1
    with torch.no_grad():
        text = model.encode_text(ids * mask, mask)  # words, words_mask, sentence [, classes]
    image = torch.randn(1, 3, h, w, generator=g)
    flow = torch.randn(1, 2, h, w, generator=g) * 0.1
    return image, flow, *text


def count_gflops(model: HINet, size: tuple[int, int]) -> tuple[float, dict[str, float]]:
    """GFLOPs (2 x multiply-accumulates) of one ``forward_frame`` call at ``size`` (H, W).

    Returns:
        ``(total, by_part)``: total GFLOPs and GFLOPs per module class (summed over instances,
        e.g. ``EfficientNetLite``, ``Interaction``, ``MotionGate``, ``Decoder``).
    """
    inputs = _frame_inputs(model, size)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model.forward_frame(*inputs)
    by_part = {
        name: sum(ops.values()) / 1e9
        for name, ops in counter.get_flop_counts().items()
        if "." not in name and name not in ("Global", type(model).__name__)
    }
    return counter.get_total_flops() / 1e9, by_part


def time_frame(
    model: HINet, size: tuple[int, int], *, repeats: int, warmup: int = 3
) -> dict[str, float]:
    """Torch-eager CPU latency of ``forward_frame`` in milliseconds (p50, p95, mean, fps)."""
    inputs = _frame_inputs(model, size)
    times: list[float] = []
    with torch.inference_mode():
        for _ in range(warmup):
            model.forward_frame(*inputs)
        for _ in tqdm(range(repeats), desc=f"{size[0]}x{size[1]}", leave=False):
            t0 = time.perf_counter()
            model.forward_frame(*inputs)
            times.append((time.perf_counter() - t0) * 1e3)
    p = percentiles(times)
    return {"p50_ms": p["p50"], "p95_ms": p["p95"], "mean_ms": p["mean"], "fps_p50": 1e3 / p["p50"]}


def model_cost(
    preset: str = "hinet_lite0",
    *,
    sizes: tuple[tuple[int, int], ...] = DEFAULT_SIZES,
    repeats: int = 20,
    threads: int | None = None,
) -> dict[str, Any]:
    """Measure parameters, GFLOPs and CPU latency of a preset.

    Args:
        preset: A name from :func:`models.config.preset_names`.
        sizes: Input sizes (H, W) to measure.
        repeats: Timed runs per size (after 3 warm-up runs).
        threads: torch intra-op threads (default: torch's current setting).

    Returns:
        A JSON-able dict with ``params``, ``rows`` (one per size) and environment fields.
    """
    if preset not in preset_names():
        raise ValueError(f"unknown preset {preset!r}; valid: {', '.join(preset_names())}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if threads is not None:
        torch.set_num_threads(threads)
    model = build_model(preset, pretrained_backbone=False).eval()
    rows = []
    for size in sizes:
        row: dict[str, Any] = {"height": size[0], "width": size[1]}
        row["gflops"], row["gflops_by_part"] = count_gflops(model, size)
        row.update(time_frame(model, size, repeats=repeats))
        rows.append(row)
    return {
        "preset": preset,
        "config": model.config.to_dict(),
        "params": model.parameter_counts(),
        "flops_note": "FlopCounterMode: 2 FLOPs per multiply-accumulate (conv, matmul, bmm)",
        "backend": "torch-eager",
        "precision": "fp32",
        "device": cpu_name(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "repeats": repeats,
        "rows": rows,
    }


def format_table(result: dict[str, Any]) -> str:
    """Human-readable table of :func:`model_cost` output."""
    p = result["params"]
    lines = [
        f"{result['preset']}  params: total {p['total'] / 1e6:.2f} M, backbone "
        f"{p['backbone'] / 1e6:.2f} M, rest {p['rest'] / 1e6:.2f} M",
        f"{result['backend']} {result['precision']} on {result['device']}, "
        f"{result['threads']} threads, torch {result['torch']}, {result['repeats']} repeats",
        f"{'input':>10} {'GFLOPs':>8} {'p50 ms':>8} {'p95 ms':>8} {'fps':>7}",
    ]
    for r in result["rows"]:
        lines.append(
            f"{r['height']:>4}x{r['width']:<5} {r['gflops']:>8.2f} {r['p50_ms']:>8.1f} "
            f"{r['p95_ms']:>8.1f} {r['fps_p50']:>7.1f}"
        )
    first = result["rows"][0]
    parts = ", ".join(f"{k} {v:.2f}" for k, v in sorted(first["gflops_by_part"].items()))
    lines.append(f"GFLOPs by part at {first['height']}x{first['width']}: {parts}")
    return "\n".join(lines)


def parse_sizes(text: str) -> tuple[tuple[int, int], ...]:
    """Parse ``"256x256,480x640"`` (height x width) into ``((256, 256), (480, 640))``."""
    sizes = tuple(parse_size(item, network=False) for item in text.split(","))
    for h, w in sizes:
        if h < 32 or w < 32:
            raise ValueError(f"bad size {h}x{w}; each side must be >= 32")
    return sizes


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="hinet_lite0", choices=preset_names())
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    parser.add_argument(
        "--sizes", nargs="+", default=[f"{h}x{w}" for h, w in DEFAULT_SIZES], help="HxW sizes"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    try:
        sizes = parse_sizes(",".join(args.sizes))
    except ValueError as exc:
        parser.error(str(exc))
    result = model_cost(args.preset, sizes=sizes, repeats=args.repeats, threads=args.threads)
    print("\n" + format_table(result), flush=True)
    write_json(args.json, result)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
