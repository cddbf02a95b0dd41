"""Evaluate an engine (any backend) on a referring segmentation dataset and print the paper's table.

Library: :func:`evaluate` runs an :class:`engine.base.Engine` over :class:`training.sample.Sample`
objects through the stream's own per-frame code: an :class:`engine.session.Segmenter` (text
encoded once per expression, optical flow from the previous frame, network, the one
post-processing :func:`engine.preprocess.postprocess`) driven by the flow and inference stages
of :class:`engine.pipeline.Stages` (their clock gives the latency). So it scores exactly the
masks a user sees. It returns an :class:`EvalReport` with the A2D / J-HMDB metrics per split
and overall, plus DAVIS J / F / J&F per object for DAVIS-style datasets (``davis17``,
``ytvos``). Metric definitions: :mod:`training.metrics`.

CLI (the shipped model unless ``--checkpoint`` names another; ONNX Runtime unless ``--backend``)::

    python -m training.evaluate --dataset synthetic --size 160x160 --wording all
    python -m training.evaluate --checkpoint exports/default --dataset a2d \
        --root /data/a2d_sentences --split test --json a2d.json
    python -m training.evaluate --dataset synthetic --keyframes 2
        (whole clips in order, the network on every 2nd frame)

By default every sample is scored on its own (its previous frame gives the flow). With
``--sequential`` (implied by ``--keyframes``) consecutive samples of one clip, object and
expression run as one stream: the segmenter keeps its state from frame to frame (temporal
smoothing, and with ``--keyframes`` the warped masks between keyframes), as ``run_stream.py``
does; a run starts afresh where the clip, object, expression or frame order changes.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from engine.base import BackendUnavailable, Engine
from engine.latency import LatencyStats, json_safe, percentiles
from engine.options import (
    ModelOptions,
    add_model_options,
    add_report_options,
    add_session_options,
    positive_int,
)
from engine.preprocess import sanitize_frame
from engine.session import KeyframePolicy, Result, Segmenter
from engine.sources import Frame
from engine.stages import Stages
from export.engines import create_engine
from training.eval_samples import DATASETS, SampleView, load_samples
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
        latency_ms: ``mean``, ``p50``, ``p95`` of the pipeline's ``inference`` stage (frame
            network + post-processing) in milliseconds, over every sample but the first
            (warm-up); NaN when nothing was segmented.
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
        return json_safe(asdict(self))

    def to_json(self) -> str:
        """Indented JSON text."""
        return json.dumps(self.to_dict(), indent=2)

    def table(self) -> str:
        """The report as a text table (see :func:`format_table`)."""
        return format_table(self)


def _split_name(sample: Sample) -> str:
    return sample.split or sample.dataset


def evaluate(
    engine: Engine,
    samples: Iterable[Sample],
    *,
    flow_preset: str = "ultrafast",
    threshold: float = 0.5,
    protocol: str = "semi-supervised",
    progress: bool = True,
    meta: dict[str, Any] | None = None,
    sequential: bool = False,
    keyframes: KeyframePolicy | None = None,
) -> EvalReport:
    """Run ``engine`` on every sample through the stream's per-frame code and score the masks.

    Each sample is processed on its own, online, as the stream would process that frame right
    after its previous one: a :class:`engine.session.Segmenter` sees ``sample.prev_frame``
    (:meth:`~engine.session.Segmenter.observe`: flow state only), then the flow and inference
    stages of :class:`engine.pipeline.Stages` run on ``sample.frame``. A sample without a
    previous frame gets zero flow, like a stream's first frame. ``sample.flow`` is not used:
    the flow is computed exactly as the runtime computes it.

    Args:
        engine: Any backend's :class:`engine.base.Engine`.
        samples: An iterable (or sequence; its ``len`` sizes the progress bar) of samples.
        flow_preset: DIS preset (at the network input size, like the stream).
        threshold: Probability threshold in (0, 1).
        protocol: DAVIS protocol, one of :data:`training.metrics.DAVIS_PROTOCOLS`.
        progress: Show a tqdm progress bar.
        meta: Extra information stored in the report.
        sequential: Run consecutive frames of one clip, object and expression as one stream
            (the segmenter's state carries over) instead of each sample on its own.
        keyframes: When the network runs (implies ``sequential`` unless every frame); the
            report's meta gets the share of frames inferred.

    Returns:
        The :class:`EvalReport`.

    Raises:
        ValueError: bad threshold or protocol, a sample that is not a :class:`Sample`, no
            samples, or a frame/mask the engine or the metrics reject.
    """
    if protocol not in DAVIS_PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; valid: {', '.join(DAVIS_PROTOCOLS)}")
    keyframes = keyframes or KeyframePolicy()
    sequential = sequential or not keyframes.always
    segmenter = Segmenter(engine, flow_preset=flow_preset, threshold=threshold, max_flow_gap=None,
                          keyframes=keyframes)  # fmt: skip
    stats = LatencyStats(window=1 << 20)
    stages = Stages(segmenter, hud=False, stats=stats)
    rejected_texts: set[str] = set()
    referring: dict[str, ReferringAccumulator] = {}
    davis: dict[str, DavisAccumulator] = {}
    overall, overall_davis = ReferringAccumulator(), DavisAccumulator(protocol=protocol)
    seen: dict[tuple[Any, int], int] = {}
    datasets: set[str] = set()
    rejected = 0
    run: tuple[Any, ...] | None = None  # the (clip, object, expression, frame) just segmented
    inferred = frames = 0
    total = len(samples) if hasattr(samples, "__len__") else None  # type: ignore[arg-type]
    for sample in tqdm(samples, total=total, desc="evaluate", unit="sample", disable=not progress):
        if not isinstance(sample, Sample):
            raise ValueError(f"samples must be training.sample.Sample, got {type(sample).__name__}")
        datasets.add(sample.dataset)
        frame = sanitize_frame(sample.frame)
        key_run = (sample.dataset, sample.video_id, sample.object_id, sample.expression)
        follows = sequential and run == (*key_run, sample.frame_index - 1)
        result = _segment(stages, sample, frame, rejected_texts, follows=follows)
        run = (*key_run, sample.frame_index) if result is not None else None
        mask = None if result is None else result.mask
        if result is not None:
            frames += 1
            inferred += bool(result.inferred)
        if mask is None:
            rejected += 1
            mask = np.zeros(frame.shape[:2], bool)
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
    inference = stats.values("inference")[1:] or stats.values("inference")  # drop the warm-up
    latency = {k: v for k, v in percentiles(inference).items() if k in ("mean", "p50", "p95")}
    return EvalReport(
        datasets=tuple(sorted(datasets)),
        backend=engine.backend,
        precision=engine.precision,
        device=str(engine.device),
        input_size=tuple(engine.input_size),
        threshold=float(threshold),
        samples=len(overall),
        referring=ref_summary,
        davis=davis_summary,
        protocol=protocol,
        latency_ms=latency,
        text_rejected=rejected,
        meta={
            **(meta or {}),
            "sequential": sequential,
            "keyframes": str(keyframes),
            "inferred_share": inferred / frames if frames else 0.0,
        },  # fmt: skip
    )


#: Capture interval given to a sample's previous/current frame pair (only differences matter).
_FRAME_DT = 1.0 / 25.0


def _segment(
    stages: Stages, sample: Sample, frame: np.ndarray, rejected: set[str], *, follows: bool = False
) -> Result | None:
    """What the stream would show for ``sample`` (``None``: the tokenizer rejects the phrase).

    ``follows``: the sample is the next frame of the run segmented last, which goes on from the
    segmenter's state; otherwise the segmenter starts afresh from the sample's previous frame.
    """
    segmenter = stages.segmenter
    if follows:
        last = segmenter.flow_state.prev_time
        return stages.segment(Frame(frame, sample.frame_index, last + _FRAME_DT))
    if sample.expression in rejected:
        return None
    if segmenter.phrase != segmenter.engine.tokenizer.normalize(sample.expression):
        try:
            segmenter.set_phrase(sample.expression)  # encoded once per run of one expression
        except ValueError as exc:
            logger.warning("expression rejected, scored as empty: %r (%s)", sample.expression, exc)
            rejected.add(sample.expression)
            return None
    segmenter.reset()
    now = time.monotonic()  # the pair is "captured" now, one frame period apart
    if sample.prev_frame is not None:
        segmenter.observe(Frame(sanitize_frame(sample.prev_frame), 0, now - _FRAME_DT))
    return stages.segment(Frame(frame, 1, now))


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
        f"inference stage {report.latency_ms['mean']:.1f} ms mean "
        f"(p50 {report.latency_ms['p50']:.1f}, p95 {report.latency_ms['p95']:.1f})",
    ]
    if report.text_rejected:
        lines.append(
            f"expressions rejected by the tokenizer (scored empty): {report.text_rejected}"
        )
    cols = ("oIoU", "mIoU", *_PK)
    width = max(len(s) for s in [*report.referring, "split"])
    lines.append("figures in % (samples: a count)")
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
def _dataset_option(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), int(value) if value.strip().isdigit() else value.strip()


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m training.evaluate`` argument parser."""
    p = argparse.ArgumentParser(
        prog="python -m training.evaluate",
        description="Evaluate a HINet model (any backend) on a referring segmentation dataset.",
    )
    add_model_options(p, prior=True)
    data = p.add_argument_group("data")
    data.add_argument("--dataset", choices=DATASETS, required=True)
    data.add_argument("--root", type=Path, help="dataset root folder (required except synthetic)")
    data.add_argument(
        "--split",
        help="dataset split (default: the evaluation split: synthetic both, a2d test, jhmdb "
        "test, davis17 val, ytvos the loader's default)",
    )
    data.add_argument(
        "--option",
        action="append",
        default=[],
        type=_dataset_option,
        metavar="KEY=VALUE",
        help="dataset loader option, repeatable, e.g. --option annotator=1 (davis17)",
    )
    data.add_argument(
        "--limit",
        type=positive_int,
        help="evaluate N samples spread evenly over every split (a quick look)",
    )
    data.add_argument(
        "--wording",
        choices=("grammar", "paraphrase", "both", "spatial", "all"),
        default="grammar",
        help="synthetic only: the test set's own wording, the held-out paraphrase lexicon "
        "(splits <split>/paraphrase), both, the held-out spatial split (every frame where a "
        "referent is the leftmost/rightmost/top/bottom object of its shape, "
        "<split>/spatial), or all three",
    )
    data.add_argument(
        "--clips",
        type=positive_int,
        help="synthetic only: evaluate the first N test clips of each split",
    )
    data.add_argument(
        "--by-size",
        action="store_true",
        help="synthetic only: report each split per referred-object size (<split>/small|big)",
    )
    add_session_options(p, only=("threshold", "flow_preset", "keyframes"))
    p.add_argument(
        "--protocol",
        choices=DAVIS_PROTOCOLS,
        default="semi-supervised",
        help="DAVIS protocol: drop first/last frames (semi-supervised) or keep all",
    )
    p.add_argument(
        "--sequential",
        action="store_true",
        help="run each clip's consecutive frames as one stream (the segmenter keeps its state), "
        "not every sample on its own (implied by --keyframes)",
    )
    add_report_options(p)
    return p


def _load_engine(args: argparse.Namespace) -> Engine:
    """The engine for ``--checkpoint`` on ``--backend`` (the runtime is imported lazily)."""
    model = ModelOptions.from_args(args)
    engine = create_engine(**model.engine_kwargs())
    engine.use_prior = model.prior
    return engine


def _load_samples(args: argparse.Namespace) -> SampleView:
    """The samples ``--dataset`` and its options name (:func:`training.eval_samples.load_samples`)."""
    return load_samples(args.dataset, root=args.root, split=args.split, options=dict(args.option),
                        wording=args.wording, clips=args.clips, by_size=args.by_size,
                        limit=args.limit)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        samples = _load_samples(args)
        engine = _load_engine(args)
        with engine:
            report = evaluate(
                engine,
                samples,
                flow_preset=args.flow_preset,
                threshold=args.threshold,
                protocol=args.protocol,
                progress=not args.no_progress,
                meta={
                    "source": str(args.checkpoint),
                    "dataset": args.dataset,
                    "root": None if args.root is None else str(args.root),
                    "split": args.split,
                    "options": dict(args.option),
                    "limit": args.limit,
                    "clips": args.clips,
                    "wording": args.wording,
                    "flow_preset": args.flow_preset,
                    "prior": args.prior,
                },
                sequential=args.sequential,
                keyframes=args.keyframes,
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
