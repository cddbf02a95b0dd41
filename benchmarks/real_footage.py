"""Real-footage benchmark: does the mask land on the person, the car, the rabbit a phrase names?

Frames of public clips (read from the installed packages, never committed) with phrases and
boxes annotated by eye (``benchmarks/data/real_footage_v1.json``). Each referent's frame is
segmented the way the stream does it: a fresh session, the phrase, the previous frame for the
flow, then the frame itself. Per referent:

* **pointing**: the most probable pixel lies inside the box;
* **inside**: the share of the mask's pixels inside the box (0 for an empty mask);
* **box IoU**: the IoU of the mask with the box's rectangle.

Beside them, what a pointer that always picks the frame's centre would score (``centre``): the
floor any method must clear. ``--method prior`` scores the zero-shot grounding prior of
:mod:`models.grounding` instead of a checkpoint (its mask: the pixels above half its maximum).

Each referent also lists, by eye, the classes the shipped prior knows that name its object
(``classes``: ImageNet-1k names, or ``person``; empty for trees, rocks, windows). The summary
splits on it: ``named`` and ``unnamed`` say how much of a miss is missing knowledge rather than
a wrong choice among things the prior can see.

A referent may also say whether the words must choose among instances of its kind in view
(``choice``, v2): the summary then has a ``choice`` group, and a ``distant`` group for the people,
vehicles and animals under a sixth of the frame's height (camera distance).
``benchmarks/data/real_footage_v2.json`` (``--annotations``) holds 109 more referents, mostly
pedestrians of opencv-doc's ``vtest.avi`` at a distance.

Printed per category and overall, written as JSON, and drawn as a grid of overlay PNGs (box in
green, mask in the stream's colour, the most probable pixel as a cross) so a person can look.

    python -m benchmarks.real_footage --checkpoint models/weights/hinet_lite0 \
        --json benchmarks/results/real_footage_hinet_lite0.json \
        --png benchmarks/results/real_footage_hinet_lite0.png

The network is fully convolutional: ``--size 256x448`` runs it at a wider input than the
one it was trained at (real clips are 16:9 or 4:3, and the prior's stride-32 grid needs pixels).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from benchmarks.common import cpu_name, write_json
from models.files import opencv_doc_file, package_file

__all__ = [
    "ANNOTATIONS",
    "Referent",
    "Score",
    "clip_path",
    "load_annotations",
    "main",
    "score_referent",
]

ANNOTATIONS = Path(__file__).with_name("data") / "real_footage_v1.json"
CATEGORIES = ("person", "vehicle", "bicycle", "animal", "object")
#: The categories whose small instances count as ``distant``.
DISTANT_CATEGORIES = ("person", "vehicle", "animal")


@dataclass(frozen=True)
class Referent:
    """One annotated referent: a phrase and its box on one frame of one clip."""

    clip: str
    frame: int
    phrase: str
    category: str
    box: tuple[int, int, int, int]  # x0, y0, x1, y1; x1, y1 exclusive
    #: the prior's classes that name the object (empty: none does; None: not annotated)
    classes: tuple[str, ...] | None = None
    #: the frame shows other instances of its kind, the words must choose (None: not annotated)
    choice: bool | None = None
    #: a person, vehicle or animal under a sixth of the frame's height
    distant: bool = False


@dataclass(frozen=True)
class Score:
    """The three measures of one referent (see the module docstring)."""

    pointing: bool
    inside: float
    box_iou: float
    area: float
    centre: bool  # the frame's centre pixel lies in the box


def load_annotations(path: Path = ANNOTATIONS) -> tuple[dict, list[Referent]]:
    """``(clips, referents)`` from an annotation file, checked.

    Raises:
        ValueError: a referent names an unknown clip, category or class, or its box is not
            inside the clip's frame size.
    """
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    clips = data["clips"]
    out = []
    for i, r in enumerate(data["referents"]):
        where = f"{path}: referent {i} ({r.get('phrase')!r})"
        if r["clip"] not in clips:
            raise ValueError(f"{where}: unknown clip {r['clip']!r}")
        if r["category"] not in CATEGORIES:
            raise ValueError(f"{where}: category must be one of {', '.join(CATEGORIES)}")
        x0, y0, x1, y1 = (int(v) for v in r["box"])
        w, h = clips[r["clip"]]["size"]
        if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
            raise ValueError(f"{where}: box {r['box']} is not inside {w}x{h}")
        if int(r["frame"]) < 1:
            raise ValueError(f"{where}: frame must be >= 1 (the flow needs the frame before)")
        classes = r.get("classes")
        if classes is not None:
            unknown = sorted(set(classes) - _known_classes())
            if unknown:
                raise ValueError(
                    f"{where}: unknown classes {unknown} (ImageNet-1k names or person)"
                )
            classes = tuple(classes)
        box = (x0, y0, x1, y1)
        choice = r.get("choice")
        if choice is not None and not isinstance(choice, bool):
            raise ValueError(f"{where}: choice must be true or false, got {choice!r}")
        distant = r["category"] in DISTANT_CATEGORIES and (y1 - y0) < h / 6
        out.append(Referent(r["clip"], int(r["frame"]), r["phrase"], r["category"], box, classes,
                            choice, distant))  # fmt: skip
    return clips, out


def _known_classes() -> set[str]:
    """The class names a referent's ``classes`` may use: ImageNet-1k's, and ``person``."""
    from models.grounding import class_names

    return {*class_names(), "person"}


def clip_path(clip: dict) -> Path:
    """The clip's file inside its installed package (found without importing the package).

    Raises:
        FileNotFoundError: the package or the file is not installed.
    """
    if clip["package"] == "opencv-doc":
        return opencv_doc_file(clip["file"])
    top, inside = clip["file"].split("/", 1)
    return package_file(top, inside, install=f"pip install {clip['package']}")


def read_frames(path: Path, indices: set[int]) -> dict[int, np.ndarray]:
    """The frames ``indices`` (and the one before each), read in order from the start."""
    want = indices | {i - 1 for i in indices}
    out: dict[int, np.ndarray] = {}
    cap = cv2.VideoCapture(str(path))
    try:
        index = 0
        while index <= max(want):
            ok, frame = cap.read()
            if not ok:
                raise ValueError(f"{path}: ends at frame {index}, wanted {max(want)}")
            if index in want:
                out[index] = frame
            index += 1
    finally:
        cap.release()
    return out


def score_referent(prob: np.ndarray, mask: np.ndarray, box: tuple[int, int, int, int]) -> Score:
    """The measures of one mask (H, W bool) and probability map (H, W) against ``box``."""
    x0, y0, x1, y1 = box
    inbox = np.zeros(mask.shape, bool)
    inbox[y0:y1, x0:x1] = True
    y, x = np.unravel_index(int(np.argmax(prob)), prob.shape)
    area = int(mask.sum())
    inter = int((mask & inbox).sum())
    union = int((mask | inbox).sum())
    return Score(
        pointing=bool(inbox[y, x]),
        inside=inter / area if area else 0.0,
        box_iou=inter / union if union else 0.0,
        area=area / mask.size,
        centre=bool(inbox[mask.shape[0] // 2, mask.shape[1] // 2]),
    )


def segment(engine, frames: dict[int, np.ndarray], ref: Referent, **session_options):
    """The stream's result for ``ref``: a fresh session, the frame before, then the frame.

    ``ref`` needs only ``frame`` and ``phrase``; ``session_options`` go to
    :class:`~engine.session.Segmenter` (``min_score``, ``min_prior``, ...).
    """
    from engine.session import Segmenter
    from engine.sources import Frame

    session = Segmenter(engine, **session_options)
    session.set_phrase(ref.phrase)
    session.step(Frame(image=frames[ref.frame - 1], index=0, timestamp=0.0))
    return session.step(Frame(image=frames[ref.frame], index=1, timestamp=0.04))


def summarise(rows: list[tuple[Referent, Score]]) -> dict[str, dict[str, float]]:
    """Per category and ``overall``: referents, pointing hit rate, mean inside, mean box IoU.

    Then ``named`` and ``unnamed``: the referents whose object a class the prior knows names, and
    those no class names (a referent without ``classes`` joins neither); ``choice``: those whose
    words must pick one of several of a kind; ``distant``: people, vehicles and animals under a
    sixth of the frame's height.
    """
    groups: dict[str, list[Score]] = defaultdict(list)
    for ref, s in rows:
        groups[ref.category].append(s)
        groups["overall"].append(s)
        if ref.classes is not None:
            groups["named" if ref.classes else "unnamed"].append(s)
        if ref.choice:
            groups["choice"].append(s)
        if ref.distant:
            groups["distant"].append(s)
    order = [c for c in CATEGORIES if c in groups] + ["overall"]
    order += [c for c in ("named", "unnamed", "choice", "distant") if c in groups]
    return {
        c: {
            "referents": len(groups[c]),
            "pointing": float(np.mean([s.pointing for s in groups[c]])),
            "inside": float(np.mean([s.inside for s in groups[c]])),
            "box_iou": float(np.mean([s.box_iou for s in groups[c]])),
            "centre_pointing": float(np.mean([s.centre for s in groups[c]])),
        }
        for c in order
    }


def draw_tile(image: np.ndarray, result, ref: Referent, score: Score, width: int = 224):
    """One referent's overlay: mask, box (green), most probable pixel (cross), caption."""
    from engine.overlay import draw_mask

    out = draw_mask(image, result.mask)
    x0, y0, x1, y1 = ref.box
    cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), (0, 220, 0), max(1, image.shape[1] // 320))
    y, x = np.unravel_index(int(np.argmax(result.prob)), result.prob.shape)
    size = max(4, image.shape[1] // 60)
    cv2.drawMarker(out, (int(x), int(y)), (0, 0, 255), cv2.MARKER_CROSS, size, 2)
    scale = width / out.shape[1]
    out = cv2.resize(
        out, (width, max(1, round(out.shape[0] * scale))), interpolation=cv2.INTER_AREA
    )
    bar = np.full((34, width, 3), 255, np.uint8)
    hit = "hit" if score.pointing else "miss"
    lines = (ref.phrase[:36], f"{hit}  inside {score.inside:.2f}  IoU {score.box_iou:.2f}")
    for i, text in enumerate(lines):
        cv2.putText(bar, text, (4, 13 + 16 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.36, (0, 0, 0), 1,
                    cv2.LINE_AA)  # fmt: skip
    return np.vstack([out, bar])


def grid(tiles: list[np.ndarray], columns: int = 6) -> np.ndarray:
    """Tiles (same width) in rows of ``columns``, each row as tall as its tallest tile."""
    rows = []
    for i in range(0, len(tiles), columns):
        row = tiles[i : i + columns]
        h = max(t.shape[0] for t in row)
        padded = [
            np.vstack([t, np.full((h - t.shape[0], t.shape[1], 3), 255, np.uint8)]) for t in row
        ]
        padded += [np.full((h, row[0].shape[1], 3), 255, np.uint8)] * (columns - len(row))
        rows.append(np.hstack(padded))
    return np.vstack(rows)


class _PriorEngine:
    """The zero-shot prior behind the same call as a checkpoint's session (see :func:`segment`)."""

    def __init__(self, *, variant: str, size: tuple[int, int], person: bool = False) -> None:
        from models.grounding import PhrasePrior

        self.prior = PhrasePrior(variant=variant, size=size, person=person)

    def __call__(self, frames: dict[int, np.ndarray], ref: Referent):
        from engine.session import Result

        prior = self.prior.prior(frames[ref.frame], self.prior.class_weights(ref.phrase))
        prob = (prior / max(float(prior.max()), 1e-12)).astype(np.float32)
        mask = prob >= 0.5
        return Result(mask=mask, prob=prob, score=float(prob[mask].mean()), frame_index=1,
                      capture_time=0.0, phrase=ref.phrase)  # fmt: skip


class _InstanceEngine:
    """The instances alone, zero-shot: COCO-80 detections scored by the phrase's cues.

    :mod:`engine.grounding` scores them; the chosen boxes are the map, peaking at the best
    one's centre.
    """

    def __init__(self, *, threads: int = 0) -> None:
        from engine.detector import Detector
        from engine.flow import OpticalFlow

        self.detector = Detector(threads=threads)
        self.flow = OpticalFlow(preset="ultrafast", size=(320, 240))

    def __call__(self, frames: dict[int, np.ndarray], ref: Referent):
        from engine.grounding import choose, parse_phrase, referent_map, score_instances
        from engine.session import Result

        frame = frames[ref.frame]
        cues = parse_phrase(ref.phrase)
        dets = self.detector(frame)
        flow = self.flow(self.flow.gray(frames[ref.frame - 1]), self.flow.gray(frame))
        chosen = choose(score_instances(dets, cues, frame, flow), cues)
        prob = referent_map(dets, chosen, frame.shape[:2])
        mask = prob > 0
        return Result(mask=mask, prob=prob, score=float(prob[mask].mean()) if mask.any() else 0.0,
                      frame_index=1, capture_time=0.0, phrase=ref.phrase,
                      found=bool(chosen))  # fmt: skip


def run(engine, referents: list[Referent], clips: dict, *, progress: bool = True,
        detector=None):  # fmt: skip
    """Score every referent (with ``detector``: the model's session with instance evidence).

    Returns:
        ``(rows, tiles, refused)``: each referent's :class:`Score` and overlay tile, and how
        many phrases the model refused (scored as empty masks).
    """
    by_clip: dict[str, set[int]] = defaultdict(set)
    for ref in referents:
        by_clip[ref.clip].add(ref.frame)
    frames = {name: read_frames(clip_path(clips[name]), idx) for name, idx in by_clip.items()}
    rows, tiles = [], []
    refused = 0
    if detector is not None:
        from engine.instances import InstanceEvidence
    for ref in tqdm(referents, desc="real footage", unit="referent", disable=not progress):
        try:
            if isinstance(engine, _PriorEngine | _InstanceEngine):
                result = engine(frames[ref.clip], ref)
            elif detector is not None:  # a fresh session per referent, one detector for all
                evidence = InstanceEvidence(detector, every=1)
                result = segment(engine, frames[ref.clip], ref, instances=evidence)
            else:
                result = segment(engine, frames[ref.clip], ref)
        except ValueError:  # the model refuses the phrase (too long): scored as an empty mask
            refused += 1
            result = _empty_result(frames[ref.clip][ref.frame], ref.phrase)
        score = score_referent(result.prob, result.mask, ref.box)
        rows.append((ref, score))
        tiles.append(draw_tile(frames[ref.clip][ref.frame], result, ref, score))
    return rows, tiles, refused


def _empty_result(image: np.ndarray, phrase: str):
    from engine.session import Result

    h, w = image.shape[:2]
    zeros = np.zeros((h, w), np.float32)
    return Result(mask=zeros > 0, prob=zeros, score=0.0, frame_index=1, capture_time=0.0,
                  phrase=phrase, found=False)  # fmt: skip


def print_table(summary: dict[str, dict[str, float]]) -> None:
    """The per-category table (percent)."""
    head = ("category", "referents", "pointing %", "inside %", "box IoU %", "centre pointing %")
    print(f"{head[0]:<10}{head[1]:>10}{head[2]:>12}{head[3]:>10}{head[4]:>11}{head[5]:>19}")
    for c, m in summary.items():
        if c == "named":
            print("-- by whether a class the prior knows names the object (annotation's classes):")
        print(f"{c:<10}{m['referents']:>10}{100 * m['pointing']:>12.1f}{100 * m['inside']:>10.1f}"
              f"{100 * m['box_iou']:>11.1f}{100 * m['centre_pointing']:>19.1f}")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    from engine.options import add_model_options, add_report_options

    p = argparse.ArgumentParser(
        prog="python -m benchmarks.real_footage", description=__doc__.splitlines()[0]
    )
    add_model_options(p, triton=False, prior=True)
    p.add_argument(
        "--method",
        choices=("model", "prior", "instances"),
        default="model",
        help="model: --checkpoint through the stream's session; prior: the zero-shot grounding "
        "prior (models.grounding) alone, no checkpoint (its --size defaults to 256x448); "
        "instances: the COCO detector's instances scored by the phrase (engine.grounding) "
        "alone, no checkpoint",
    )
    p.add_argument(
        "--prior-variant",
        default="efficientnet_lite2",
        help="--method prior: the EfficientNet-Lite whose ImageNet head gives the evidence",
    )
    p.add_argument(
        "--person",
        action="store_true",
        help="--method prior: add the person class (MediaPipe's person segmenter, models.person)",
    )
    p.add_argument(
        "--instances",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="--method model: with instance evidence, as the stream runs by default (the "
        "detector's instance the phrase means steers the mask, engine.instances); "
        "--no-instances: the network alone",
    )
    p.add_argument("--annotations", type=Path, default=ANNOTATIONS, help="annotation JSON")
    add_report_options(p, png=True)
    return p


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status (2 on a bad argument, file or checkpoint)."""
    args = build_parser().parse_args(argv)

    from engine.options import ModelOptions
    from export.engines import create_engine
    from models.checkpoint import CheckpointError, read_checkpoint_config

    model = args.method == "model"
    try:
        clips, referents = load_annotations(args.annotations)
        for clip in clips.values():
            clip_path(clip)
        if model:
            read_checkpoint_config(args.checkpoint)  # a bad model fails before any frame work
    except (OSError, ValueError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.method == "instances":
        engine = _InstanceEngine(threads=args.threads or 0)
        from engine.detector import DEFAULT_SIZES

        sides = " and ".join(str(v) for v in DEFAULT_SIZES)
        what = f"COCO instances scored by the phrase (NanoDet-g, long sides {sides})"
        input_size = None  # the detector's canvas follows each clip's aspect
    elif not model:
        size = args.size or (256, 448)
        engine = _PriorEngine(variant=args.prior_variant, size=size, person=args.person)
        person = " + person" if args.person else ""
        what, input_size = (
            f"zero-shot prior ({args.prior_variant}{person}, {size[0]}x{size[1]})",
            list(size),
        )
    else:
        options = ModelOptions.from_args(args)
        engine = create_engine(**options.engine_kwargs())
        engine.use_prior = options.prior
        input_size = list(engine.input_size)
        what = (
            f"{args.checkpoint} ({args.backend}, {engine.device}, {input_size[0]}x{input_size[1]})"
        )
    detector = None
    if model and args.instances:
        from engine.detector import Detector

        detector = Detector(threads=args.threads or 0)
        what += " + COCO instances (NanoDet-g)"
    rows, tiles, refused = run(engine, referents, clips, progress=not args.no_progress,
                               detector=detector)  # fmt: skip
    summary = summarise(rows)
    print(
        f"real footage: {len(rows)} referents, {what}; "
        f"phrases refused by the model (scored empty): {refused}"
    )
    print_table(summary)
    if args.json:
        write_json(
            args.json,
            {
                "method": args.method,
                "checkpoint": str(args.checkpoint) if model else None,
                "backend": args.backend if args.checkpoint else "torch",
                "device": "cpu",
                "cpu": cpu_name(),
                "input_size": input_size,
                "prior_variant": None if model else args.prior_variant,
                "person": None if model else bool(args.person),
                "prior": args.prior,
                "annotations": str(args.annotations),
                "refused": refused,
                "summary": summary,
                "referents": [{**asdict(r), **asdict(s)} for r, s in rows],
            },
        )
        print(f"wrote {args.json}")
    if args.png:
        args.png.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(args.png), grid(tiles), [cv2.IMWRITE_PNG_COMPRESSION, 9])
        print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
