"""Write the demo clips shipped in ``engine/data/demo/`` (run once; the files are committed).

The clips come from the synthetic generator (the shipped model was trained on such clips), are
written as browser-playable H.264 (``engine.outputs.H264Writer``) and listed with their phrases
in ``clips.json``. The generator keeps every object in frame, which allows 11 frames at 320x240
at its object speeds; each clip is written ``--loops`` times so it lasts a few seconds.

The seeds come from the test partition but outside the fixed test set (seeds 2 000 000-2 000 099),
so no clip was used for training, model selection or the reported test numbers. They were
chosen, among the 30 seeds from 2 050 000 of each split, as clips where the shipped model finds
the referent (first-target mean IoU over frames 1-10 at 320x240, ONNX Runtime, 160x160 input):
``moving`` 0.955 (mean over the 30 motion clips 0.661), ``shapes`` 0.727 (appearance mean
0.418). The demo shows the method working; those means say how often it does. Re-measured the
same way with the MiniLM model that replaced it: ``moving`` 0.963, ``shapes`` 0.723, the
referent found in all 10 frames of each.

    python -m training.make_demo            # rewrites engine/data/demo/
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

from engine.demo import DEMO_DIR, DEMO_INDEX
from engine.outputs import H264Writer
from engine.preprocess import sanitize_frame

#: (name, generator split, seed, label); the first is the default demo.
CLIPS = (
    ("moving", "motion", 2_050_000, "synthetic shapes: a look-alike told apart by its motion"),
    ("shapes", "appearance", 2_050_006, "synthetic shapes: a referent told apart by its colour"),
)
SIZE = (320, 240)  # (W, H)


def render(seed: int, split: str, size: tuple[int, int] = SIZE) -> tuple[list[np.ndarray], str]:
    """The longest clip the generator allows at ``size`` and its first target's expression."""
    from training.synthetic.generator import generate_clip
    from training.synthetic.spec import SyntheticSpec

    w, h = size
    spec = None
    for frames in range(48, 1, -1):
        try:
            spec = SyntheticSpec(size=(h, w), frames=frames)
            break
        except ValueError:
            continue
    if spec is None:
        raise ValueError(f"no synthetic clip fits {w}x{h}")
    clip = generate_clip(seed, split=split, spec=spec)
    images = [sanitize_frame(np.asarray(f)) for f in clip.frames]
    images = [
        im if im.shape[:2] == (h, w) else cv2.resize(im, (w, h), interpolation=cv2.INTER_AREA)
        for im in images
    ]
    target = (clip.targets or clip.objects)[0]
    return images, str(target.expression)


def main(argv: list[str] | None = None) -> int:
    """Write every clip of :data:`CLIPS` and the index; returns the exit code."""
    from training.synthetic.generator import GENERATOR_VERSION

    p = argparse.ArgumentParser(prog="python -m training.make_demo", description=__doc__)
    p.add_argument("--out", type=Path, default=DEMO_DIR)
    p.add_argument("--loops", type=int, default=4, help="passes over each clip in its file")
    p.add_argument("--fps", type=float, default=8.0, help="frame rate stored in the files")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, split, seed, label in CLIPS:
        images, phrase = render(seed, split)
        path = args.out / f"{name}.mp4"
        with H264Writer(path, size=SIZE, fps=args.fps, crf=12) as writer:
            for _ in range(args.loops):
                for image in images:
                    writer.write(image)
        rows.append(
            {
                "name": name,
                "file": path.name,
                "phrase": phrase,
                "label": f"{label} ({phrase!r})",
                "origin": f"training.synthetic generator v{GENERATOR_VERSION}, {split} split, "
                f"seed {seed}, {len(images)} frames x {args.loops} at {SIZE[0]}x{SIZE[1]}",
                "licence": "Apache-2.0 (rendered by this project)",
            }
        )
        print(f"wrote {path} ({len(images)} frames x {args.loops}, {phrase!r})")
    index = args.out / DEMO_INDEX.name
    index.write_text(
        json.dumps({"format": "hinet-stream-demo-clips", "clips": rows}, indent=2) + "\n",
        encoding="utf-8",
    )
    print(f"wrote {index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
