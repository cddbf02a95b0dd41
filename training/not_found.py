r"""Calibrate when the stream says "not found": frame scores for phrases that are in view or not.

A segmenter always produces some mask; the stream should draw it only when the referent is
probably in view. :class:`engine.session.Segmenter` calls a frame's referent found when its mask
is not empty and the mask's score (mean probability inside it) is at least ``min_score``. This
module measures the scores that decide it, on **validation** clips of both synthetic splits
(never test clips):

- *present*: each referred object's own expression; the frame counts when the object is visible;
- *absent*: ``"the <colour> <shape>"`` for a colour and shape pair that no object of the clip
  has (the shape or the colour alone may be in view, as when a user names the wrong car).

For each candidate threshold it reports the share of present frames still found (recall) and of
absent frames correctly called not found, and picks the highest threshold that keeps at least
``--keep`` of the present frames found: hiding a correct mask costs the user more than showing
a doubtful one, so the default keeps 95 %.

CLI::

    python -m training.not_found --checkpoint models/weights/hinet_lite0 --clips 40 \
        --json benchmarks/results/not_found_hinet_lite0.json \
        --png benchmarks/results/not_found_hinet_lite0.png

``--size`` runs the network at another input size than the model's default; the synthetic
clips are drawn for the size the models were trained at (160x160), so a model whose default
size is set for real footage (``hinet_lite0_prior_person``: 256x448) is calibrated with
``--size 160x160``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from engine.base import Engine

__all__ = ["Calibration", "absent_phrase", "calibrate", "frame_scores", "main"]

#: Candidate thresholds: a thresholded mask's mean probability is at least the mask threshold.
CANDIDATES = tuple(round(0.50 + 0.01 * k, 2) for k in range(50))


@dataclass(frozen=True)
class Calibration:
    """The chosen threshold and what it does on the measured frames (rates in [0, 1])."""

    min_score: float
    keep: float
    present_frames: int
    absent_frames: int
    present_found: float
    absent_not_found: float
    absent_not_found_at_zero: float


def absent_phrase(clip, rng: np.random.Generator) -> str:
    """``"the <colour> <shape>"`` naming no object of ``clip`` (both words from the lexicon)."""
    from training.synthetic.colours import COLOURS
    from training.synthetic.shapes import SHAPES

    present = {(o.colour, o.shape) for o in clip.objects}
    pairs = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in present]
    colour, shape = pairs[int(rng.integers(len(pairs)))]
    return f"the {colour} {shape}"


def frame_scores(
    engine: Engine, *, clips: int, progress: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame scores ``(present, absent)`` on ``clips`` validation clips of each split.

    A frame with an empty mask scores 0.
    """
    from engine.session import Segmenter
    from engine.sources import Frame
    from training.synthetic.generator import generate_clip
    from training.synthetic.spec import SPLITS, partition_seeds
    from training.synthetic.testset import TEST_SPEC

    present: list[float] = []
    absent: list[float] = []
    jobs = [(split, seed) for split in SPLITS for seed in partition_seeds("val", clips)]
    for split, seed in tqdm(jobs, desc="not-found scores", unit="clip", disable=not progress):
        clip = generate_clip(seed, split=split, spec=TEST_SPEC)
        rng = np.random.default_rng(seed)
        runs = [(o.expression, o) for o in clip.targets]
        runs.append((absent_phrase(clip, rng), None))
        for phrase, obj in runs:
            session = Segmenter(engine, min_score=0.0)
            session.set_phrase(phrase)
            for t, image in enumerate(clip.frames):
                result = session.step(Frame(image=image, index=t, timestamp=t / 30.0))
                if obj is None:
                    absent.append(result.score)
                elif obj.masks[t].any():
                    present.append(result.score)
    return np.asarray(present), np.asarray(absent)


def calibrate(present: np.ndarray, absent: np.ndarray, *, keep: float = 0.95) -> Calibration:
    """The highest candidate threshold that keeps at least ``keep`` of ``present`` found.

    A frame is found when its score is > 0 (mask not empty) and >= the threshold.
    """
    if not len(present) or not len(absent):
        raise ValueError("need present and absent frames")
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep must be in (0, 1], got {keep}")

    def found(scores: np.ndarray, t: float) -> np.ndarray:
        return (scores > 0) & (scores >= t)

    best = 0.0
    for t in CANDIDATES:
        if found(present, t).mean() >= keep:
            best = t
    return Calibration(
        min_score=best,
        keep=keep,
        present_frames=len(present),
        absent_frames=len(absent),
        present_found=float(found(present, best).mean()),
        absent_not_found=float(1.0 - found(absent, best).mean()),
        absent_not_found_at_zero=float(1.0 - found(absent, 0.0).mean()),
    )


def _plot(present: np.ndarray, absent: np.ndarray, cal: Calibration, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=110)
    bins = np.linspace(0.0, 1.0, 51)
    ax.hist(present, bins=bins, alpha=0.6, label=f"phrase in view ({len(present)} frames)")
    ax.hist(absent, bins=bins, alpha=0.6, label=f"phrase not in view ({len(absent)} frames)")
    ax.axvline(cal.min_score, color="k", linestyle="--", label=f"min_score {cal.min_score:.2f}")
    ax.set_xlabel("frame score (mean probability inside the mask; 0 = empty mask)")
    ax.set_ylabel("frames")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m training.not_found`` argument parser."""
    from engine.options import add_model_options, add_report_options

    p = argparse.ArgumentParser(
        prog="python -m training.not_found",
        description='Measure frame scores for present and absent phrases; pick "not found".',
    )
    add_model_options(p, triton=False)
    p.add_argument("--clips", type=int, default=40, help="validation clips per split (1-500)")
    p.add_argument("--keep", type=float, default=0.95, help="share of present frames kept found")
    add_report_options(p, png=True)
    return p


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status (2 on a bad argument or checkpoint)."""
    args = build_parser().parse_args(argv)
    if not 1 <= args.clips <= 500:
        print(f"error: --clips must be in 1..500, got {args.clips}", file=sys.stderr)
        return 2
    if not 0.0 < args.keep <= 1.0:
        print(f"error: --keep must be in (0, 1], got {args.keep}", file=sys.stderr)
        return 2
    from engine.options import ModelOptions
    from export.engines import create_engine

    try:
        engine = create_engine(**ModelOptions.from_args(args).engine_kwargs())
    except ValueError as exc:  # a bad checkpoint (CheckpointError), size or backend
        print(f"error: {exc}", file=sys.stderr)
        return 2
    size = engine.input_size
    present, absent = frame_scores(engine, clips=args.clips, progress=not args.no_progress)
    cal = calibrate(present, absent, keep=args.keep)
    print(
        f"present {cal.present_frames} frames, absent {cal.absent_frames}: min_score "
        f"{cal.min_score:.2f} keeps {100 * cal.present_found:.1f} % of present frames found and "
        f"calls {100 * cal.absent_not_found:.1f} % of absent frames not found "
        f"(without it: {100 * cal.absent_not_found_at_zero:.1f} %, empty masks only)"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {
            "checkpoint": str(args.checkpoint),
            "backend": args.backend,
            "clips_per_split": args.clips,
            "input_size": list(size),
            "calibration": asdict(cal),
            "present_quantiles": dict(
                zip(("p05", "p25", "p50"), np.quantile(present, [0.05, 0.25, 0.5]).tolist())
            ),
            "absent_quantiles": dict(
                zip(("p50", "p75", "p95"), np.quantile(absent, [0.5, 0.75, 0.95]).tolist())
            ),
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.png:
        _plot(present, absent, cal, args.png)
        print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
