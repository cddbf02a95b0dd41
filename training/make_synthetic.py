"""Write a synthetic referring-video dataset to disk (format: docs/SYNTHETIC_FORMAT.md).

Examples::

    python -m training.make_synthetic --out data/syn --split all --clips 100 --seed 0
    python -m training.make_synthetic --out /tmp/syn --split motion --clips 4 --size 96x128 \
        --frames 8 --preview
    python -m training.make_synthetic --write-manifest   # maintainers: regenerate testset_v1.json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from tqdm import tqdm

from engine.preprocess import parse_size
from training.synthetic.generator import generate_clip
from training.synthetic.io import IMAGE_FORMATS, write_clip, write_index
from training.synthetic.preview import write_preview
from training.synthetic.spec import PARTITIONS, SPLITS, SyntheticSpec
from training.synthetic.testset import MANIFEST_PATH, build_manifest

log = logging.getLogger("make_synthetic")


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = argparse.ArgumentParser(
        prog="python -m training.make_synthetic", description=__doc__.splitlines()[0]
    )
    p.add_argument("--out", type=Path, help="output folder (created)")
    p.add_argument("--split", default="all", choices=[*SPLITS, "all"])
    p.add_argument("--clips", type=int, default=10, help="clips per split")
    p.add_argument("--seed", type=int, default=0, help="first seed; clips use seed..seed+N-1")
    p.add_argument("--size", default="320x320", help="frame size HxW")
    p.add_argument("--frames", type=int, default=8, help="frames per clip")
    p.add_argument("--image-format", default="png", choices=IMAGE_FORMATS)
    p.add_argument("--preview", action="store_true", help="write previews/<video_id>.gif|mp4")
    p.add_argument("--preview-format", default="gif", choices=["gif", "mp4"])
    p.add_argument("--overwrite", action="store_true", help="replace an existing index.json")
    p.add_argument(
        "--write-manifest",
        action="store_true",
        help=f"regenerate the fixed test-set manifest {MANIFEST_PATH.name} and exit",
    )
    return p


def _overlaps(seeds: range) -> list[str]:
    return [
        name
        for name, (lo, hi) in PARTITIONS.items()
        if seeds.start < hi and lo < seeds.stop and not (lo <= seeds.start and seeds.stop <= hi)
    ]


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    if args.write_manifest:
        manifest = build_manifest(progress=True)
        MANIFEST_PATH.write_text(json.dumps(manifest, indent=1) + "\n")
        print(f"wrote {MANIFEST_PATH}")
        return 0
    if args.out is None:
        print("error: --out is required", file=sys.stderr)
        return 2
    try:
        h, w = parse_size(args.size, network=False)
        spec = SyntheticSpec(size=(h, w), frames=args.frames)
        if args.clips < 1 or args.seed < 0:
            raise ValueError(f"need --clips >= 1 and --seed >= 0, got {args.clips}, {args.seed}")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    seeds = range(args.seed, args.seed + args.clips)
    if _overlaps(seeds):
        log.warning("seeds %s straddle partitions %s (see PARTITIONS)", seeds, _overlaps(seeds))
    if (args.out / "index.json").exists() and not args.overwrite:
        print(f"error: {args.out / 'index.json'} exists; pass --overwrite", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    splits = SPLITS if args.split == "all" else (args.split,)
    jobs = [(s, seed) for s in splits for seed in seeds]
    entries = []
    for split, seed in tqdm(jobs, desc="clips", unit="clip"):
        clip = generate_clip(seed, split=split, spec=spec)
        entries.append(write_clip(args.out, clip, image_format=args.image_format))
        if args.preview:
            write_preview(args.out / "previews" / f"{clip.video_id}.{args.preview_format}", clip)
    index = write_index(args.out, entries, spec=spec.to_dict())
    print(f"wrote {len(entries)} clips to {args.out} ({index.name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
