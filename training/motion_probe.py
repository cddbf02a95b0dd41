"""Does a model tell two look-alikes apart by their motion? Two probes for the motion gate.

The ``motion`` split's mIoU alone cannot say *why* a model fails there. This module measures:

- **Twin probe** (on the fixed synthetic test set, ``motion`` split): every clip has two objects
  identical in appearance that differ only in motion, each referred by its own phrase. For
  frames 1..T-1 (frame 0 has no flow) it reports the mean IoU of the predicted mask with the
  referred object and with its look-alike, and how often the referred one overlaps more
  (``referent_wins``). A model that ignores motion scores the same on both and wins about half
  the time.
- **Flow probe**: the end-point error of the runtime's optical flow (DIS, computed at the network
  input size as deployed) averaged inside each referred object, against the generator's true
  velocity, next to the mean true speed. If the error were near the speed, the gate would have
  no signal to work with.
- **Text probe**: the cosine similarity of sentence features between phrases that differ only
  in the motion words ("the red cross moving left" / "... moving up"), and between phrases that
  differ only in colour, averaged over shapes. If motion phrases encode to (almost) the same
  vector, no gate downstream can follow the phrase's motion.

The probes evaluate; they are never used for training or model selection.

CLI::

    python -m training.motion_probe --checkpoint models/weights/hinet_lite0 --clips 40 \
        --json benchmarks/results/motion_probe_hinet_lite0.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from dataclasses import asdict, dataclass

import numpy as np
from tqdm import tqdm

from engine.base import Engine
from export.engines import create_engine

__all__ = ["FlowProbe", "TextProbe", "TwinProbe", "flow_probe", "main", "text_probe", "twin_probe"]

#: Surface forms used by the text probe (one per motion / colour, from the generator's lexicon).
_MOTION_PHRASES = ("moving left", "moving right", "moving up", "moving down", "that is still")
_COLOURS = ("red", "green", "blue", "yellow", "purple")
_SHAPES = ("circle", "square", "triangle", "star", "cross")


@dataclass(frozen=True)
class TwinProbe:
    """Result of :func:`twin_probe` (IoUs in [0, 1])."""

    clips: int
    frames: int
    iou_referent: float
    iou_lookalike: float
    referent_wins: float


@dataclass(frozen=True)
class FlowProbe:
    """Result of :func:`flow_probe`, in pixels per frame at the flow grid size."""

    flow_size: tuple[int, int]
    objects: int
    mean_speed_px: float
    mean_error_px: float
    median_error_px: float


@dataclass(frozen=True)
class TextProbe:
    """Result of :func:`text_probe`: mean pairwise cosine similarities of sentence features."""

    motion_only_cosine: float
    colour_only_cosine: float


def _iou(pred: np.ndarray, gt: np.ndarray) -> float:
    union = np.logical_or(pred, gt).sum()
    return float(np.logical_and(pred, gt).sum() / union) if union else 0.0


def twin_probe(engine: Engine, *, clips: int = 40, progress: bool = True) -> TwinProbe:
    """Run the twin probe on the first ``clips`` clips of the fixed ``motion`` test split."""
    from engine.session import Segmenter
    from engine.sources import Frame
    from training.synthetic.generator import generate_clip
    from training.synthetic.testset import TEST_SPEC, fixed_test_seeds

    seeds = fixed_test_seeds("motion")[:clips]
    own, other = [], []
    for seed in tqdm(seeds, desc="twin probe", unit="clip", disable=not progress):
        clip = generate_clip(seed, split="motion", spec=TEST_SPEC)
        a, b = (o for o in clip.objects if o.is_target)
        for referent, lookalike in ((a, b), (b, a)):
            session = Segmenter(engine)
            session.set_phrase(referent.expression)
            for t, image in enumerate(clip.frames):
                mask = session.step(Frame(image=image, index=t, timestamp=t / 30.0)).mask
                if t == 0:  # no flow yet
                    continue
                own.append(_iou(mask, referent.masks[t] > 0))
                other.append(_iou(mask, lookalike.masks[t] > 0))
    own_a, other_a = np.asarray(own), np.asarray(other)
    return TwinProbe(
        clips=len(seeds),
        frames=len(own),
        iou_referent=float(own_a.mean()),
        iou_lookalike=float(other_a.mean()),
        referent_wins=float(np.mean(own_a > other_a)),
    )


def flow_probe(
    *, size: tuple[int, int], preset: str = "ultrafast", clips: int = 40, progress: bool = True
) -> FlowProbe:
    """Flow end-point error inside the referred objects of the first ``clips`` motion test clips.

    Args:
        size: Flow grid ``(H, W)`` (the network input size, as the runtime computes flow).
        preset: DIS preset (:data:`engine.flow.FLOW_PRESETS`).
        clips: Number of clips.
        progress: Show a progress bar.
    """
    import cv2

    from engine.flow import OpticalFlow
    from training.synthetic.generator import generate_clip
    from training.synthetic.testset import TEST_SPEC, fixed_test_seeds

    h, w = size
    flow = OpticalFlow(preset=preset, size=(w, h))
    scale = np.asarray([w / TEST_SPEC.size[1], h / TEST_SPEC.size[0]])  # (2,) spec px -> grid px
    errors, speeds = [], []
    seeds = fixed_test_seeds("motion")[:clips]
    for seed in tqdm(seeds, desc="flow probe", unit="clip", disable=not progress):
        clip = generate_clip(seed, split="motion", spec=TEST_SPEC)
        grays = [flow.gray(f) for f in clip.frames]
        fields = [flow(grays[t - 1], grays[t]) for t in range(1, len(grays))]  # (h, w, 2) each
        for obj in (o for o in clip.objects if o.is_target):
            velocity = np.asarray(obj.velocity) * scale  # (2,) grid px per frame
            for t, field in enumerate(fields, start=1):
                mask = cv2.resize(obj.masks[t], (w, h), interpolation=cv2.INTER_NEAREST) > 0
                if not mask.any():
                    continue
                errors.append(float(np.linalg.norm(field[mask].mean(axis=0) - velocity)))
                speeds.append(float(np.linalg.norm(velocity)))
    return FlowProbe(
        flow_size=(h, w),
        objects=len(errors),
        mean_speed_px=float(np.mean(speeds)),
        mean_error_px=float(np.mean(errors)),
        median_error_px=float(np.median(errors)),
    )


def _mean_pairwise_cosine(vectors: list[np.ndarray]) -> float:
    v = np.stack(vectors).astype(np.float64)  # (n, C)
    v /= np.linalg.norm(v, axis=1, keepdims=True).clip(min=1e-12)
    sims = [float(v[i] @ v[j]) for i, j in itertools.combinations(range(len(v)), 2)]
    return float(np.mean(sims))


def text_probe(engine: Engine) -> TextProbe:
    """Cosine similarity of sentence features for motion-only and colour-only differences."""
    motion, colour = [], []
    for shape in _SHAPES:
        motion.append(
            _mean_pairwise_cosine(
                [engine.encode_text(f"the {shape} {m}").sentence[0] for m in _MOTION_PHRASES]
            )
        )
        colour.append(
            _mean_pairwise_cosine(
                [engine.encode_text(f"the {c} {shape}").sentence[0] for c in _COLOURS]
            )
        )
    return TextProbe(
        motion_only_cosine=float(np.mean(motion)), colour_only_cosine=float(np.mean(colour))
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m training.motion_probe`` argument parser."""
    from engine.options import add_model_options, add_report_options

    p = argparse.ArgumentParser(
        prog="python -m training.motion_probe",
        description="Probe whether a model follows the phrase's motion (twin and text probes).",
    )
    add_model_options(p, triton=False)
    p.add_argument("--clips", type=int, default=40, help="motion test clips to probe (1-800)")
    add_report_options(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status (2 on a bad argument or checkpoint)."""
    args = build_parser().parse_args(argv)
    if not 1 <= args.clips <= 800:
        print(f"error: --clips must be in 1..800, got {args.clips}", file=sys.stderr)
        return 2
    from engine.options import ModelOptions

    try:
        engine = create_engine(**ModelOptions.from_args(args).engine_kwargs())
    except ValueError as exc:  # a bad checkpoint (CheckpointError), size or backend
        print(f"error: {exc}", file=sys.stderr)
        return 2
    config = engine.config
    twins = twin_probe(engine, clips=args.clips, progress=not args.no_progress)
    text = text_probe(engine)
    flows = flow_probe(size=engine.input_size, clips=args.clips, progress=not args.no_progress)
    report = {
        "checkpoint": str(args.checkpoint),
        "backend": args.backend,
        "gate": {"motion_gate": config.motion_gate, "gate_language": config.gate_language},
        "twin_probe": asdict(twins),
        "text_probe": asdict(text),
        "flow_probe": asdict(flows),
    }
    print(
        f"twin probe ({twins.clips} clips, {twins.frames} frames): IoU referent "
        f"{100 * twins.iou_referent:.1f}, look-alike {100 * twins.iou_lookalike:.1f}, "
        f"referent wins {100 * twins.referent_wins:.1f} %"
    )
    print(
        f"text probe: sentence cosine, motion-only differences {text.motion_only_cosine:.3f}, "
        f"colour-only {text.colour_only_cosine:.3f}"
    )
    print(
        f"flow probe ({flows.objects} object-frames at {flows.flow_size[1]}x{flows.flow_size[0]}): "
        f"mean speed {flows.mean_speed_px:.2f} px/frame, end-point error mean "
        f"{flows.mean_error_px:.2f}, median {flows.median_error_px:.2f}"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
