r"""The demo clip, phrase by phrase: what the default model marks, as numbers and as stills.

The main job plays the real demo clip (``demo:people``, an excerpt of opencv-doc's ``vtest.avi``
with several pedestrians) with its phrase "the person in red". This benchmark runs the stream's
session code (fresh :class:`~engine.session.Segmenter` with instance evidence as the stream has
it, every frame, the flow from the previous one; the detector on every 6th frame, in line so the
numbers repeat) over the whole clip for that phrase, for other things in view ("the person on
the right", "the white van") and for things that are not there ("the dog", "the boat"), and
reports per phrase:

* the frame score (mean probability inside the mask), the grounding prior's confidence that
  the frame shows what the phrase names (``prior_conf``), and how many frames are "found" under
  the session's default rule (``min_score`` and ``min_prior``);
* the mask's share of the frame;
* for the clip's own phrase, against the boxes recorded with the clip (where its referent is on
  every frame, checked by eye), the real-footage benchmark's measures
  (:func:`benchmarks.real_footage.score_referent`): the share of the mask inside the box, whether
  the most probable pixel lies in it (pointing), and the mask's IoU with the box.

It prints a table, writes JSON and a PNG of stills (rows: phrases, columns: frames; the mask in
the stream's colour, the clip's box in green on the first row) so a person can look::

    python -m benchmarks.demo_stills --json benchmarks/results/demo_people.json \
        --png benchmarks/results/demo_people_stills.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from benchmarks.common import cpu_name, versions, write_json

__all__ = ["ABSENT", "PRESENT_BY_CLIP", "main", "run_phrases"]

#: Other things in view, per real demo clip.
PRESENT_BY_CLIP = {
    "people": ("the person on the right", "the white van"),
    "street": ("the van", "the motorbike"),
}
#: Things that are in neither clip.
ABSENT = ("the dog", "the boat")


def run_phrases(
    engine: Any,
    frames: list,
    phrases: list[str],
    *,
    min_score: float,
    instances: bool = True,
    progress: bool = True,
) -> dict[str, list]:
    """Phrase -> the session's :class:`~engine.session.Result` for every frame."""
    from engine.detector import Detector
    from engine.instances import DEFAULT_EVERY, InstanceEvidence
    from engine.session import Segmenter

    detector = Detector(threads=1) if instances else None
    out: dict[str, list] = {}
    for phrase in tqdm(phrases, desc="phrases", unit="phrase", disable=not progress):
        evidence = InstanceEvidence(detector, every=DEFAULT_EVERY) if detector else None
        session = Segmenter(engine, min_score=min_score, instances=evidence)
        session.set_phrase(phrase)
        out[phrase] = [session.step(frame) for frame in frames]
    return out


def _role(phrase: str, own: str, present: tuple[str, ...]) -> str:
    if phrase == own:
        return "clip's own"
    if phrase in present:
        return "in view"
    return "not in view" if phrase in ABSENT else "asked"


def _stills(frames, results, phrases, columns, clip, path: Path) -> None:
    from engine.overlay import draw_mask

    rows = []
    for r, phrase in enumerate(phrases):
        tiles = []
        for t in columns:
            res = results[phrase][t]
            tile = draw_mask(frames[t].image, res.shown_mask)
            if r == 0:
                box = clip.box_at(t)
                cv2.rectangle(tile, box[:2], (box[2] - 1, box[3] - 1), (0, 200, 0), 2)
            state = f"score {res.score:.2f}"
            if res.prior_conf is not None:
                state += f" prior {res.prior_conf:.2f}"
            state += "" if res.found else " (not found)"
            text = f'"{phrase}"  frame {t}  {state}'
            (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.6, 1)
            cv2.rectangle(tile, (0, 0), (w + 16, h + base + 12), (0, 0, 0), -1)
            cv2.putText(tile, text, (8, h + 6), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1,
                        cv2.LINE_AA)  # fmt: skip
            tiles.append(tile)
        rows.append(np.hstack(tiles))
    grid = np.vstack(rows)
    scale = min(1.0, 1600 / grid.shape[1])
    grid = cv2.resize(grid, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), grid):
        raise OSError(f"cannot write {path}")


def build_parser() -> argparse.ArgumentParser:
    from engine.options import add_model_options, add_report_options

    p = argparse.ArgumentParser(
        prog="python -m benchmarks.demo_stills",
        description="What the default model marks on the real demo clip, phrase by phrase.",
    )
    add_model_options(p, triton=False)
    p.add_argument("--clip", default="people", choices=tuple(PRESENT_BY_CLIP),
                   help="a real demo clip (it records where its referent is)")  # fmt: skip
    p.add_argument("--phrase", action="append", dest="phrases",
                   help="phrases besides the clip's own (repeatable; default: the clip's other "
                        f"things in view and {', '.join(ABSENT)})")  # fmt: skip
    p.add_argument("--columns", help="frames shown in the stills (default: first, middle, last)")
    p.add_argument(
        "--instances",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="instance evidence, as the stream has it (--no-instances: HINet alone)",
    )
    add_report_options(p, png=True)
    return p


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status (2 on a bad argument, clip or checkpoint)."""
    args = build_parser().parse_args(argv)
    from benchmarks.real_footage import score_referent
    from engine.demo import demo_clip
    from engine.options import ModelOptions
    from engine.session import DEFAULT_MIN_PRIOR, DEFAULT_MIN_SCORE
    from engine.sources import FileSource, SourceNotFoundError
    from export.engines import create_engine
    from models.checkpoint import CheckpointError, read_checkpoint_config

    try:
        clip = demo_clip(args.clip)
        read_checkpoint_config(args.checkpoint)  # a bad model fails before the clip is read
    except (SourceNotFoundError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with FileSource(clip.path) as source:
        frames = list(source)
    try:
        columns = ([int(c) for c in args.columns.split(",")] if args.columns
                   else [0, len(frames) // 2, len(frames) - 1])  # fmt: skip
    except ValueError:
        columns = []
    if not columns or not all(0 <= c < len(frames) for c in columns):
        print(f"error: --columns must be frame numbers in 0..{len(frames) - 1}", file=sys.stderr)
        return 2
    present = PRESENT_BY_CLIP[clip.name]
    phrases = [clip.phrase, *(args.phrases or [*present, *ABSENT])]
    engine = create_engine(**ModelOptions.from_args(args).engine_kwargs())
    size = engine.input_size
    results = run_phrases(engine, frames, phrases, min_score=DEFAULT_MIN_SCORE,
                          instances=args.instances, progress=not args.no_progress)  # fmt: skip

    rows = []
    for phrase in phrases:
        res = results[phrase]
        scores = np.asarray([r.score for r in res])
        row: dict[str, Any] = {
            "phrase": phrase,
            "role": _role(phrase, clip.phrase, present),
            "found_frames": int(sum(r.found for r in res)),
            "score_p50": float(np.median(scores)),
            "score_min": float(scores.min()),
            "score_max": float(scores.max()),
            "area_mean": float(np.mean([r.area for r in res])),
        }
        confs = [r.prior_conf for r in res if r.prior_conf is not None]
        if confs:
            row["prior_conf_p50"] = float(np.median(confs))
        if phrase == clip.phrase:  # the real-footage benchmark's measures, frame by frame
            boxed = [score_referent(r.prob, r.mask, clip.box_at(t)) for t, r in enumerate(res)]
            row["inside_box_mean"] = float(np.mean([b.inside for b in boxed]))
            row["inside_box_min"] = float(min(b.inside for b in boxed))
            row["pointing_frames"] = int(sum(b.pointing for b in boxed))
            row["box_iou_mean"] = float(np.mean([b.box_iou for b in boxed]))
        rows.append(row)

    print(f"{clip.name}: {len(frames)} frames, {args.checkpoint.name} at {size[0]}x{size[1]}, "
          f"{args.backend}, min_score {DEFAULT_MIN_SCORE:.2f}, min_prior {DEFAULT_MIN_PRIOR:.2f}")  # fmt: skip
    print(f"{'phrase':18s} {'role':12s} {'found':>7s} {'score p50':>9s} {'min':>5s} {'max':>5s} "
          f"{'prior p50':>9s} {'area':>6s} {'in box':>7s}")  # fmt: skip
    for row in rows:
        box = f"{100 * row['inside_box_mean']:6.1f}%" if "inside_box_mean" in row else "      -"
        conf = f"{row['prior_conf_p50']:9.2f}" if "prior_conf_p50" in row else f"{'-':>9s}"
        print(f"{row['phrase']:18s} {row['role']:12s} {row['found_frames']:3d}/{len(frames):<3d} "
              f"{row['score_p50']:9.2f} {row['score_min']:5.2f} {row['score_max']:5.2f} "
              f"{conf} {100 * row['area_mean']:5.1f}% {box}")  # fmt: skip
    if args.json:
        write_json(args.json, {
            "clip": {"name": clip.name, "origin": clip.origin, "phrase": clip.phrase,
                     "boxes": [list(clip.box_at(t)) for t in range(len(frames))],
                     "frames": len(frames)},
            "instances": args.instances,
            "checkpoint": str(args.checkpoint),
            "backend": args.backend,
            "precision": "fp32",
            "resolution": list(size),
            "device": cpu_name(),
            "min_score": DEFAULT_MIN_SCORE,
            "min_prior": DEFAULT_MIN_PRIOR,
            "versions": versions(onnxruntime="onnxruntime", opencv="cv2", numpy="numpy"),
            "phrases": rows,
        })  # fmt: skip
        print(f"wrote {args.json}")
    if args.png:
        _stills(frames, results, phrases, columns, clip, args.png)
        print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
