"""Where a run writes: its folder, the overlaid video, the per-frame results, the stats, the masks.

Every path is checked (and its folders created) before any model or frame work, so a bad one
fails in a second with one clear line and loses nothing; a failed start removes the folders it
created. One stream writes into ``runs/<source>-<date-time>/`` unless told otherwise; several
streams write into ``<out-dir>/<stream>/`` each, with the total in ``<out-dir>/stats.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path

from engine.outputs import (
    MaskFolderOutput,
    Output,
    ResultsFileOutput,
    check_output_dir,
    check_output_file,
    video_output,
)

__all__ = [
    "VIDEO_SUFFIXES",
    "OutputOptions",
    "RunFiles",
    "add_output_options",
    "plan_outputs",
    "plan_streams",
    "stream_names",
]

#: Video file endings the writers make.
VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi")


@dataclass(frozen=True)
class OutputOptions:
    """What a run was asked to write (the flags of :func:`add_output_options`).

    Attributes:
        out_dir: The run's folder (``None``: ``runs/<source>-<date-time>``, or ``output``'s).
        output: The overlaid video.
        stats_json: The latency summary.
        masks: Also write every mask as a PNG.
        masks_dir: The mask PNGs' folder (implies ``masks``).
        save: Write the default files (video, results, stats); ``False`` writes only what is
            named.
    """

    out_dir: Path | None = None
    output: Path | None = None
    stats_json: Path | None = None
    masks: bool = False
    masks_dir: Path | None = None
    save: bool = True

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> OutputOptions:
        """The options :func:`add_output_options` added to ``args``."""
        return cls(out_dir=args.out_dir, output=args.output, stats_json=args.stats_json,
                   masks=args.masks, masks_dir=args.masks_dir, save=not args.no_save)  # fmt: skip


def add_output_options(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """Add ``--out-dir --output --stats-json --masks --masks-dir --no-save`` as one group."""
    g = parser.add_argument_group("outputs")
    g.add_argument(
        "--out-dir",
        type=Path,
        help="the run's folder (default: runs/<source>-<date-time>, or the folder of --output)",
    )
    g.add_argument(
        "--output",
        type=Path,
        help=f"the overlaid video (default: <out-dir>/overlay.mp4); ends in "
        f"{', '.join(VIDEO_SUFFIXES)}; H.264, or mp4v when ffmpeg is missing",
    )
    g.add_argument(
        "--stats-json", type=Path, help="the latency summary JSON (default: <out-dir>/stats.json)"
    )
    g.add_argument("--masks", action="store_true", help="also write every mask as a PNG")
    g.add_argument("--masks-dir", type=Path, help="the mask PNGs' folder (implies --masks)")
    g.add_argument(
        "--no-save", action="store_true", help="write nothing but what is asked explicitly"
    )
    return g


@dataclass(frozen=True)
class RunFiles:
    """Where a run writes (``None``: not written)."""

    video: Path | None
    stats: Path | None
    results: Path | None
    masks: Path | None
    created: tuple[Path, ...] = ()

    def open_outputs(self, *, fps: float) -> list[Output]:
        """The writers of these files: the video at ``fps``, the JSONL results, the mask PNGs."""
        outputs: list[Output] = []
        if self.video is not None:
            outputs.append(video_output(self.video, fps=fps))
        if self.results is not None:
            outputs.append(ResultsFileOutput(self.results))
        if self.masks is not None:
            outputs.append(MaskFolderOutput(self.masks))
        return outputs

    def discard_empty(self) -> None:
        """Remove the folders the plan created if nothing was written in them (a failed start)."""
        for folder in sorted(self.created, key=lambda f: len(f.parts), reverse=True):
            with contextlib.suppress(OSError):
                folder.rmdir()


def _run_name(source_spec: str) -> str:
    spec = source_spec.strip()
    name = f"camera{spec}" if spec.isdigit() else Path(spec.rstrip("/")).stem or spec
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._")[:40] or "run"


def plan_outputs(options: OutputOptions, source_spec: str) -> RunFiles:
    """The run's files, checked (and their folders created) before any model or frame work.

    Raises:
        OutputPathError: a path that cannot be written (a folder given for a file, no video
            file ending, a folder that cannot be created or written).
    """
    o = options
    if o.out_dir is not None:
        folder = o.out_dir
    elif o.output is not None:
        folder = o.output.parent
    else:
        folder = Path("runs") / f"{_run_name(source_spec)}-{time.strftime('%Y%m%d-%H%M%S')}"
    video = o.output or (folder / "overlay.mp4" if o.save else None)
    stats = o.stats_json or (folder / "stats.json" if o.save else None)
    masks = o.masks_dir or (folder / "masks" if o.masks else None)
    wanted = [f.parent for f in (video, stats) if f is not None] + ([masks] if masks else [])
    created: list[Path] = []
    for f in wanted:  # the folders that do not exist yet, up to the first one that does
        f = f.absolute()
        while not f.exists() and f not in created:
            created.append(f)
            f = f.parent
    try:
        return RunFiles(
            video=video and check_output_file(video, what="--output", suffixes=VIDEO_SUFFIXES),
            stats=stats and check_output_file(stats, what="--stats-json"),
            results=video and check_output_file(video.with_suffix(".jsonl"), what="--output"),
            masks=masks and check_output_dir(masks, what="--masks-dir"),
            created=tuple(created),
        )
    except Exception:
        RunFiles(None, None, None, None, tuple(created)).discard_empty()
        raise


def stream_names(specs: list[str]) -> list[str]:
    """One distinct, file-safe name per source (``camera0``, ``vtest``, ``vtest-2``, ...)."""
    names: list[str] = []
    for spec in specs:
        base = _run_name(spec)
        name, n = base, 1
        while name in names:
            n += 1
            name = f"{base}-{n}"
        names.append(name)
    return names


def plan_streams(options: OutputOptions, specs: list[str]) -> tuple[list[RunFiles], Path | None]:
    """Each stream's files in ``<out-dir>/<stream>/`` and the total summary's path.

    Raises:
        OutputPathError: a path that cannot be written.
    """
    root = options.out_dir or Path("runs") / f"streams-{time.strftime('%Y%m%d-%H%M%S')}"
    plans: list[RunFiles] = []
    try:
        for spec, name in zip(specs, stream_names(specs)):
            one = replace(options, out_dir=root / name, output=None, stats_json=None,
                          masks_dir=None)  # fmt: skip
            plans.append(plan_outputs(one, spec))
        total = options.stats_json or (root / "stats.json" if options.save else None)
        if total is not None:
            total = check_output_file(total, what="--stats-json")
    except Exception:
        for files in reversed(plans):  # the later streams' folders sit in the first's
            files.discard_empty()
        raise
    return plans, total
