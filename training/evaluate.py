"""Evaluate an engine (any backend) on a referring segmentation dataset and print the paper's table.

Library: :func:`evaluate` runs an :class:`engine.base.Engine` over :class:`training.sample.Sample`
objects exactly as the runtime would (sanitise, resize/normalise, optical flow from the previous
frame, text encoded once per expression, logits -> mask at the frame's resolution) and returns an
:class:`EvalReport` with the A2D / J-HMDB metrics per split and overall, plus DAVIS J / F / J&F
per object for DAVIS-style datasets (``davis17``, ``ytvos``). Metric definitions:
:mod:`training.metrics`.

CLI::

    python -m training.evaluate --checkpoint models/weights/hinet_lite0 --dataset synthetic
    python -m training.evaluate --export exports/hinet_lite0 --backend onnx --dataset a2d
        --root /data/a2d_sentences --split test --json a2d.json   (one command line)
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from engine.backends import BackendUnavailable, create_engine
from engine.base import Engine, TextState
from engine.flow import FLOW_PRESETS, OpticalFlow
from engine.preprocess import (
    check_input_size,
    logits_to_mask,
    prepare_flow,
    prepare_image,
    sanitize_frame,
)
from training.metrics import (
    DAVIS_PROTOCOLS,
    PRECISION_THRESHOLDS,
    DavisAccumulator,
    ReferringAccumulator,
    intersection_union,
)
from training.sample import Sample

__all__ = [
    "DATASETS",
    "DAVIS_DATASETS",
    "OVERALL",
    "EvalReport",
    "evaluate",
    "format_table",
    "main",
]

logger = logging.getLogger(__name__)

#: Dataset names accepted by the CLI.
DATASETS = ("synthetic", "a2d", "jhmdb", "davis17", "ytvos")

#: Datasets that are also scored with DAVIS J / F / J&F per object sequence.
DAVIS_DATASETS = ("davis17", "ytvos")

#: Row name of the all-splits summary.
OVERALL = "overall"

_PK = tuple(f"P@{k / 100:.1f}" for k in PRECISION_THRESHOLDS)


@dataclass(frozen=True)
class EvalReport:
    """The result of :func:`evaluate`. Metric values are fractions in [0, 1].

    Attributes:
        datasets: Dataset names seen in the samples, sorted.
        backend: The engine's backend name.
        precision: The engine's precision (``fp32`` / ``fp16``).
        device: The engine's device string.
        input_size: Network input ``(H, W)``.
        threshold: Probability threshold of the masks.
        samples: Number of samples evaluated.
        referring: Split -> :meth:`training.metrics.ReferringAccumulator.summary`, splits in
            first-seen order, then :data:`OVERALL`.
        davis: Split -> :meth:`training.metrics.DavisAccumulator.summary` (same order), empty
            when no sample came from :data:`DAVIS_DATASETS`.
        protocol: DAVIS protocol used (see :data:`training.metrics.DAVIS_PROTOCOLS`).
        latency_ms: ``mean``, ``p50``, ``p95`` of :meth:`Engine.segment` in milliseconds, over
            every call but the first (warm-up); NaN when nothing was segmented.
        text_rejected: Samples whose expression the engine's tokenizer rejected (empty or too
            long); they are scored with an empty prediction.
        meta: Free-form extra information (checkpoint path, dataset root, ...).
    """

    datasets: tuple[str, ...]
    backend: str
    precision: str
    device: str
    input_size: tuple[int, int]
    threshold: float
    samples: int
    referring: dict[str, dict[str, Any]]
    davis: dict[str, dict[str, Any]]
    protocol: str
    latency_ms: dict[str, float]
    text_rejected: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (NaN becomes ``None``)."""
        return _json_safe(asdict(self))

    def to_json(self) -> str:
        """Indented JSON text."""
        return json.dumps(self.to_dict(), indent=2)

    def table(self) -> str:
        """The report as a text table (see :func:`format_table`)."""
        return format_table(self)


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    return value


def _split_name(sample: Sample) -> str:
    return sample.split or sample.dataset


def evaluate(
    engine: Engine,
    samples: Iterable[Sample],
    *,
    flow: OpticalFlow | None = None,
    threshold: float = 0.5,
    protocol: str = "semi-supervised",
    progress: bool = True,
    meta: dict[str, Any] | None = None,
) -> EvalReport:
    """Run ``engine`` on every sample and score the masks.

    Each sample is processed on its own, online: the frame and (if present) the previous frame
    are all the network sees. The flow is ``sample.flow`` when precomputed, otherwise computed
    from ``sample.prev_frame`` with ``flow``; zero when ``prev_frame`` is ``None``.

    Args:
        engine: Any backend's :class:`engine.base.Engine`.
        samples: An iterable (or sequence; its ``len`` sizes the progress bar) of samples.
        flow: Optical flow; default DIS ``ultrafast`` at the network input size, like
            :class:`engine.session.Segmenter`.
        threshold: Probability threshold in (0, 1).
        protocol: DAVIS protocol, one of :data:`training.metrics.DAVIS_PROTOCOLS`.
        progress: Show a tqdm progress bar.
        meta: Extra information stored in the report.

    Returns:
        The :class:`EvalReport`.

    Raises:
        ValueError: bad threshold or protocol, a sample that is not a :class:`Sample`, no
            samples, or a frame/mask the engine or the metrics reject.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    if protocol not in DAVIS_PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; valid: {', '.join(DAVIS_PROTOCOLS)}")
    size = engine.input_size
    if flow is None:
        flow = OpticalFlow(preset="ultrafast", size=(size[1], size[0]))
    cfg = engine.config
    texts: dict[str, TextState | None] = {}
    referring: dict[str, ReferringAccumulator] = {}
    davis: dict[str, DavisAccumulator] = {}
    overall, overall_davis = ReferringAccumulator(), DavisAccumulator(protocol=protocol)
    latencies: list[float] = []
    seen: dict[tuple[Any, int], int] = {}
    datasets: set[str] = set()
    rejected = 0
    total = len(samples) if hasattr(samples, "__len__") else None  # type: ignore[arg-type]
    for sample in tqdm(samples, total=total, desc="evaluate", unit="sample", disable=not progress):
        if not isinstance(sample, Sample):
            raise ValueError(f"samples must be training.sample.Sample, got {type(sample).__name__}")
        datasets.add(sample.dataset)
        frame = sanitize_frame(sample.frame)
        h0, w0 = frame.shape[:2]
        if sample.expression not in texts:
            try:
                texts[sample.expression] = engine.encode_text(sample.expression)
            except ValueError as exc:
                logger.warning(
                    "expression rejected, scored as empty: %r (%s)", sample.expression, exc
                )
                texts[sample.expression] = None
        text = texts[sample.expression]
        if text is None:
            rejected += 1
            mask = np.zeros((h0, w0), bool)
        else:
            image = prepare_image(frame, size, cfg.image_mean, cfg.image_std)
            flow_in = prepare_flow(_flow_px(sample, frame, flow), size, cfg.flow_gain)
            t0 = time.perf_counter()
            logits = engine.segment(image, flow_in, text)
            latencies.append((time.perf_counter() - t0) * 1e3)
            _, mask = logits_to_mask(logits, (h0, w0), threshold)
        split = _split_name(sample)
        key = f"{sample.dataset}/{sample.video_id}/{sample.frame_index}/{sample.object_id}"
        inter, union = intersection_union(mask, sample.mask)
        referring.setdefault(split, ReferringAccumulator()).add_counts(inter, union, key=key)
        overall.add_counts(inter, union, key=key)
        if sample.dataset in DAVIS_DATASETS:
            # One sequence per (object, expression); the same expression given twice for one
            # object (e.g. by both annotators) becomes a second sequence, not a duplicate frame.
            base = (sample.dataset, sample.video_id, sample.object_id, sample.expression)
            nth = seen.get((base, sample.frame_index), 0)
            seen[(base, sample.frame_index)] = nth + 1
            obj = (*base, nth)
            dacc = davis.setdefault(split, DavisAccumulator(protocol=protocol))
            j, f = dacc.add(mask, sample.mask, key=obj, frame_index=sample.frame_index)
            overall_davis.add_scores(j, f, key=obj, frame_index=sample.frame_index)
    if not len(overall):
        raise ValueError("no samples to evaluate")
    ref_summary = {name: acc.summary() for name, acc in referring.items()}
    ref_summary[OVERALL] = overall.summary()
    davis_summary = {name: acc.summary() for name, acc in davis.items()}
    if davis:
        davis_summary[OVERALL] = overall_davis.summary()
    lat = np.asarray(latencies[1:] if len(latencies) > 1 else latencies, np.float64)
    latency = (
        {
            "mean": float(lat.mean()),
            "p50": float(np.percentile(lat, 50)),
            "p95": float(np.percentile(lat, 95)),
        }
        if lat.size
        else {"mean": math.nan, "p50": math.nan, "p95": math.nan}
    )
    return EvalReport(
        datasets=tuple(sorted(datasets)),
        backend=engine.backend,
        precision=engine.precision,
        device=str(engine.device),
        input_size=tuple(size),
        threshold=float(threshold),
        samples=len(overall),
        referring=ref_summary,
        davis=davis_summary,
        protocol=protocol,
        latency_ms=latency,
        text_rejected=rejected,
        meta=dict(meta or {}),
    )


def _flow_px(sample: Sample, frame: np.ndarray, flow: OpticalFlow) -> np.ndarray:
    """(h, w, 2) float32 pixel flow previous -> current frame for ``sample``."""
    if sample.flow is not None:
        return np.asarray(sample.flow, np.float32)
    if sample.prev_frame is None:
        w, h = flow.size
        return np.zeros((h, w, 2), np.float32)
    return flow(flow.gray(sanitize_frame(sample.prev_frame)), flow.gray(frame))


def _pct(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{100.0 * value:.1f}"


def format_table(report: EvalReport) -> str:
    """Paper-style tables: rows per split then ``overall``; metrics in percent."""
    h, w = report.input_size
    lines = [
        f"datasets {', '.join(report.datasets)} | backend {report.backend} {report.precision} "
        f"{report.device} | input {h}x{w} | threshold {report.threshold:g} | "
        f"segment {report.latency_ms['mean']:.1f} ms mean "
        f"(p50 {report.latency_ms['p50']:.1f}, p95 {report.latency_ms['p95']:.1f})",
    ]
    if report.text_rejected:
        lines.append(
            f"expressions rejected by the tokenizer (scored empty): {report.text_rejected}"
        )
    cols = ("oIoU", "mIoU", *_PK)
    width = max(len(s) for s in [*report.referring, "split"])
    lines.append(f"{'split':<{width}} {'samples':>7} " + " ".join(f"{c:>6}" for c in cols))
    for name, row in report.referring.items():
        cells = " ".join(f"{_pct(row[c]):>6}" for c in cols)
        lines.append(f"{name:<{width}} {row['samples']:>7} {cells}")
    if report.davis:
        lines.append("")
        lines.append(f"DAVIS protocol: {report.protocol}")
        dcols = ("J&F", "J", "F", "J-recall", "F-recall", "J-decay", "F-decay")
        lines.append(f"{'split':<{width}} {'objects':>7} " + " ".join(f"{c:>8}" for c in dcols))
        for name, row in report.davis.items():
            cells = " ".join(f"{_pct(row[c]):>8}" for c in dcols)
            lines.append(f"{name:<{width}} {row['objects']:>7} {cells}")
    return "\n".join(lines)


# -- CLI -----------------------------------------------------------------------------------------
def _parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"size must be HxW, e.g. 320x320, got {text!r}") from exc
    try:
        return check_input_size((h, w))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from exc
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _dataset_option(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), int(value) if value.strip().isdigit() else value.strip()


#: Split evaluated when ``--split`` is not given, where it differs from the loader's default.
EVAL_SPLITS = {"a2d": "test"}


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m training.evaluate`` argument parser."""
    p = argparse.ArgumentParser(
        prog="python -m training.evaluate",
        description="Evaluate a HINet checkpoint or export on a referring segmentation dataset.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", type=Path, help="checkpoint folder (models.checkpoint)")
    src.add_argument("--export", type=Path, help="export folder (export/)")
    p.add_argument(
        "--backend",
        choices=("torch", "onnx", "tensorrt"),
        help="engine backend (default: torch for --checkpoint, onnx for --export)",
    )
    p.add_argument(
        "--device", default="cpu", help="backend device: cpu, cuda, cuda:N (default cpu)"
    )
    p.add_argument("--precision", choices=("fp32", "fp16"), default="fp32")
    p.add_argument("--dataset", choices=DATASETS, required=True)
    p.add_argument("--root", type=Path, help="dataset root folder (required except synthetic)")
    p.add_argument(
        "--split",
        help="dataset split (default: the evaluation split: synthetic both, a2d test, jhmdb "
        "test, davis17 val, ytvos the loader's default)",
    )
    p.add_argument(
        "--option",
        action="append",
        default=[],
        type=_dataset_option,
        metavar="KEY=VALUE",
        help="dataset loader option, repeatable, e.g. --option annotator=1 (davis17)",
    )
    p.add_argument("--size", type=_parse_size, help="network input HxW (default: model config)")
    p.add_argument("--limit", type=_positive_int, help="evaluate only the first N samples")
    p.add_argument("--threshold", type=float, default=0.5, help="mask probability threshold")
    p.add_argument(
        "--protocol",
        choices=DAVIS_PROTOCOLS,
        default="semi-supervised",
        help="DAVIS protocol: drop first/last frames (semi-supervised) or keep all",
    )
    p.add_argument("--flow-preset", choices=tuple(FLOW_PRESETS), default="ultrafast")
    p.add_argument(
        "--by-size",
        action="store_true",
        help="synthetic only: report each split per referred-object size (<split>/small|big)",
    )
    p.add_argument("--json", type=Path, help="write the report as JSON here")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def _load_engine(args: argparse.Namespace) -> Engine:
    """Build the engine for ``--checkpoint`` / ``--export`` (the runtime is imported lazily)."""
    from models.checkpoint import read_checkpoint_config

    backend = args.backend or ("torch" if args.checkpoint is not None else "onnx")
    source = args.checkpoint if args.checkpoint is not None else args.export
    size = args.size
    if size is None:
        size = tuple(read_checkpoint_config(source)[0].input_size)  # torch-free
    return create_engine(
        backend, source, input_size=size, device=args.device, precision=args.precision
    )


class _BySize(Sequence):
    """A synthetic dataset whose samples' split reads ``<split>/<small|big>``."""

    def __init__(self, base: Any) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> Sample:  # type: ignore[override]
        seed, target, _ = self.base.locate(i)
        size = self.base.clip(seed)[0].targets[target].size  # "small" / "big"
        sample = self.base[i]
        return replace(sample, split=f"{sample.split}/{size}")


class _SampleView:
    """Lazy concatenation of indexable datasets, cut after ``limit`` samples (sized for tqdm)."""

    def __init__(self, parts: Sequence[Any], limit: int | None = None) -> None:
        self._parts = list(parts)
        total = sum(len(p) for p in self._parts)
        self._len = total if limit is None else min(limit, total)

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[Sample]:
        n = 0
        for part in self._parts:
            for i in range(len(part)):
                if n == self._len:
                    return
                yield part[i]
                n += 1


def _load_samples(args: argparse.Namespace) -> _SampleView:
    """Open ``--dataset`` (loaders imported lazily), limited to ``--limit`` samples."""
    if args.dataset == "synthetic":
        if args.root is not None or args.option:
            raise ValueError(
                "--root and --option are not used with --dataset synthetic (it is generated)"
            )
        from training.synthetic import SPLITS, fixed_test_dataset

        if args.split is not None and args.split not in SPLITS:
            raise ValueError(f"unknown synthetic split {args.split!r}; valid: {', '.join(SPLITS)}")
        splits = (args.split,) if args.split else SPLITS
        # Sample.flow stays None: flow is computed here exactly as the runtime does (network size).
        parts = [fixed_test_dataset(s, flow_preset=None) for s in splits]
        if args.by_size:
            parts = [_BySize(p) for p in parts]
        return _SampleView(parts, args.limit)
    if args.by_size:
        raise ValueError(
            "--by-size needs --dataset synthetic (object sizes come from the generator)"
        )
    if args.root is None:
        raise ValueError(f"--root is required for --dataset {args.dataset}")
    from training.datasets import open_dataset

    split = args.split or EVAL_SPLITS.get(args.dataset)
    dataset = open_dataset(args.dataset, args.root, split=split, **dict(args.option))
    return _SampleView([dataset], args.limit)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        samples = _load_samples(args)
        engine = _load_engine(args)
        with engine:
            flow_size = (engine.input_size[1], engine.input_size[0])
            report = evaluate(
                engine,
                samples,
                flow=OpticalFlow(preset=args.flow_preset, size=flow_size),
                threshold=args.threshold,
                protocol=args.protocol,
                progress=not args.no_progress,
                meta={
                    "source": str(args.checkpoint or args.export),
                    "dataset": args.dataset,
                    "root": None if args.root is None else str(args.root),
                    "split": args.split,
                    "options": dict(args.option),
                    "limit": args.limit,
                    "flow_preset": args.flow_preset,
                },
            )
    except (ValueError, BackendUnavailable) as exc:
        parser.exit(2, f"error: {exc}\n")
    print(report.table())
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(report.to_json() + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
