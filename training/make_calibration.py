"""Write the synthetic INT8 calibration clip shipped in ``export/data/calibration/`` (run once).

:mod:`export.int8` calibrates the INT8 ``frame_net`` on synthetic frames *and* real frames. The
export package never imports :mod:`training` (the generator), so the synthetic part is rendered
here once and committed: frame pairs (previous, current; the flow needs both) of clips from the
generator's **training** partition, so no calibration frame comes from the test or validation
partitions, the demo clips or a benchmark. One H.264 file (``synthetic.mp4``) holds the pairs
one after the other; ``clips.json`` gives each pair's frame indices and its clip's phrase.

    python -m training.make_calibration      # rewrites export/data/calibration/
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from engine.outputs import H264Writer
from training.make_demo import SIZE, render
from training.synthetic.spec import partition_seeds

#: Where :mod:`export.int8` reads the clip (the export package's data folder).
OUT = Path(__file__).resolve().parents[1] / "export" / "data" / "calibration"
FORMAT = "hinet-stream-calibration-pairs"


def main(argv: list[str] | None = None) -> int:
    """Render the calibration pairs and their index; returns the exit code."""
    from training.synthetic.generator import GENERATOR_VERSION

    p = argparse.ArgumentParser(prog="python -m training.make_calibration", description=__doc__)
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--clips", type=int, default=16, help="training clips (splits alternate)")
    p.add_argument("--start", type=int, default=500_000, help="first training seed used")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "synthetic.mp4"
    rows, n = [], 0
    with H264Writer(path, size=SIZE, fps=8.0, crf=18) as writer:
        for k, seed in enumerate(partition_seeds("train", args.clips, start=args.start)):
            split = ("appearance", "motion")[k % 2]
            images, phrase = render(seed, split)
            pairs = []
            for t in (1, len(images) - 1):  # the clip's start and end
                writer.write(images[t - 1])
                writer.write(images[t])
                pairs.append([n, n + 1])
                n += 2
            rows.append({"seed": seed, "split": split, "phrase": phrase, "pairs": pairs})
    index = {
        "format": FORMAT,
        "file": path.name,
        "origin": f"training.synthetic generator v{GENERATOR_VERSION}, training partition, "
        f"seeds {args.start}..{args.start + args.clips - 1}, {SIZE[0]}x{SIZE[1]}",
        "licence": "Apache-2.0 (rendered by this project)",
        "frames": n,
        "clips": rows,
    }
    (args.out / "clips.json").write_text(json.dumps(index, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {path} ({n} frames, {len(rows)} clips) and {args.out / 'clips.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
