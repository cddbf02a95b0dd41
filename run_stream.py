#!/usr/bin/env python3
"""Segment the object a phrase refers to in a live stream, a video file or the demo clip.

Examples::

    python run_stream.py                                   # demo clip, its own phrase
    python run_stream.py --source 0 --phrase "the person on the left"
    python run_stream.py --source rtsp://10.0.0.5:8554/cam --phrase "the red car" --no-display --output out.mp4 --stats-json stats.json
    python run_stream.py --source clip.mp4 --phrase "the dog" --engine torch --masks
    python run_stream.py --source rtsp://cam1/s --source rtsp://cam2/s --phrase "the person" \
        --engine triton --checkpoint exports/lite0_triton --no-display       # two streams

Each run writes into a folder of its own (``runs/<name>/``, see ``--out-dir``): the overlaid
video (H.264), ``stats.json`` (per-stage latency) and ``overlay.jsonl`` (per frame: score,
peak probability, area, found, and the mask as COCO RLE), and the mask PNGs with ``--masks``.
With several ``--source`` values each stream writes the same files into ``<out-dir>/<stream>/``
and ``<out-dir>/stats.json`` holds every stream's summary and their total.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

#: Video file endings the writers make (kept here so --help needs no import of the engine).
VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi")

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_UNKNOWN_SOURCE = 3
EXIT_SOURCE_NOT_FOUND = 4
EXIT_CAMERA = 5
EXIT_STREAM = 6
EXIT_MODEL = 7
EXIT_ENGINE = 8
EXIT_PHRASE = 9
EXIT_OUTPUT = 10
EXIT_INTERRUPTED = 130

EPILOG = f"""\
sources:
  demo, demo:NAME      a clip shipped with the project (default; its phrase is the default
                       --phrase; played at --pace 25 like a camera, every frame processed)
  0, 1, ...            a webcam by index
  rtsp://..., http(s)://...   a network stream (reconnects with backoff if it dies)
  PATH                 a video file (every frame processed) or a folder of images

keys in the window: q or Esc quit; p or Enter type a new phrase (Enter applies, Esc cancels).
Headless with a terminal: type a new phrase and press Enter ("2: the red car" or
"NAME: the red car" gives it to one stream when several run).

exit codes:
  {EXIT_OK}    finished (source ended, --max-frames reached or q pressed)
  {EXIT_RUNTIME}    error while running
  {EXIT_USAGE}    bad command-line arguments
  {EXIT_UNKNOWN_SOURCE}    unknown --source form
  {EXIT_SOURCE_NOT_FOUND}    video file or image folder not found
  {EXIT_CAMERA}    camera absent or busy
  {EXIT_STREAM}    stream URL cannot be opened at start
  {EXIT_MODEL}    model checkpoint / export missing or invalid
  {EXIT_ENGINE}    inference engine unavailable (runtime not installed, no GPU, ...)
  {EXIT_PHRASE}    phrase rejected (empty, too long, control characters, mixed scripts)
  {EXIT_OUTPUT}   an output path cannot be written (checked before the model loads)
  {EXIT_INTERRUPTED}  interrupted by Ctrl-C (the summary is still written)

what the shipped model knows:
  {{trained_on}}
"""

#: Frames per second the demo clip is played at when --pace is not given.
DEMO_PACE = 25.0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    from engine.backends import BACKENDS
    from engine.base import PRECISIONS
    from engine.preprocess import parse_size
    from engine.session import DEFAULT_MIN_PRIOR, DEFAULT_MIN_SCORE
    from models.checkpoint import DEFAULT_CHECKPOINT

    p = argparse.ArgumentParser(
        prog="run_stream.py",
        description="Real-time referring video object segmentation (HINet) on a stream.",
        epilog=EPILOG.replace("{trained_on}", _shipped_trained_on()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--source",
        action="append",
        help="demo | camera index | URL | file | folder (default demo); repeat it for several "
        "streams: one pipeline each, one shared engine, one sub-folder of --out-dir each",
    )
    p.add_argument(
        "--phrase",
        action="append",
        help="referring expression (default for demo: the clip's own); with several --source: "
        "one for all, or one per source in order",
    )
    p.add_argument(
        "--engine",
        choices=BACKENDS,
        help="inference backend (default: onnx; on CPU when no GPU is visible)",
    )
    p.add_argument(
        "--triton-url",
        help="--engine triton: host:port of the Triton server (default 127.0.0.1:8001 for "
        "gRPC, 127.0.0.1:8000 for HTTP); --checkpoint names the repository folder",
    )
    p.add_argument(
        "--triton-protocol", choices=("grpc", "http"), default="grpc", help="--engine triton"
    )
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda if available, else cpu)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32")
    p.add_argument("--size", type=parse_size, help="network input HxW (default: the model's)")
    p.add_argument("--flow-preset", default="ultrafast", choices=("ultrafast", "fast", "medium"))
    p.add_argument("--threshold", type=float, default=0.5, help="mask probability threshold")
    p.add_argument(
        "--min-score",
        type=float,
        default=DEFAULT_MIN_SCORE,
        help="show a frame's mask only when its score (mean probability inside it) reaches this; "
        'else the HUD says "not found" (default %(default)s, calibrated on validation clips; 0 '
        "shows every non-empty mask)",
    )
    p.add_argument(
        "--min-prior",
        type=float,
        default=DEFAULT_MIN_PRIOR,
        help="with a grounding-prior model, also need the prior's confidence that the frame "
        'shows what the phrase names to reach this; else the HUD says "not found" (default '
        "%(default)s, calibrated on real clips no benchmark scores; 0 disables it)",
    )
    p.add_argument(
        "--smoothing", type=float, default=0.0, help="temporal EMA weight of the previous frame"
    )
    p.add_argument(
        "--keyframes",
        default="1",
        help="run the network on every N-th frame only, or 'adaptive' (when the flow says the "
        "warped mask can no longer be trusted); frames in between reuse the last mask moved by "
        "the optical flow, marked [warped] in the HUD (default 1: every frame)",
    )
    p.add_argument(
        "--threads",
        type=_positive_int,
        help="intra-op CPU threads of the engine (default: the runtime's; 1 often wins when "
        "the other pipeline stages share a small CPU)",
    )
    p.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT, help="model folder")
    p.add_argument(
        "--out-dir",
        type=Path,
        help="the run's folder (default: runs/<source>-<date-time>, or the folder of --output)",
    )
    p.add_argument(
        "--output",
        type=Path,
        help=f"the overlaid video (default: <out-dir>/overlay.mp4); ends in "
        f"{', '.join(VIDEO_SUFFIXES)}; H.264, or mp4v when ffmpeg is missing",
    )
    p.add_argument("--masks", action="store_true", help="also write every mask as a PNG")
    p.add_argument("--masks-dir", type=Path, help="the mask PNGs' folder (implies --masks)")
    p.add_argument(
        "--no-save", action="store_true", help="write nothing but what is asked explicitly"
    )
    p.add_argument("--no-display", action="store_true", help="no window (automatic w/o DISPLAY)")
    p.add_argument("--no-hud", action="store_true", help="do not draw the statistics on frames")
    p.add_argument("--max-frames", type=_positive_int, help="stop after this many frames")
    p.add_argument("--loop", action="store_true", help="loop video files / image folders")
    p.add_argument(
        "--pace",
        "--demo-fps",
        dest="pace",
        type=float,
        help=f"play a file, folder or the demo at this many fps like a camera, every frame "
        f"processed (default: {DEMO_PACE:g} for the demo, as fast as possible for files; 0: as "
        "fast as possible)",
    )
    p.add_argument(
        "--stats-json", type=Path, help="the latency summary JSON (default: <out-dir>/stats.json)"
    )
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="debug logging, and OpenCV's and FFmpeg's own messages",
    )
    return p


def _shipped_trained_on() -> str:
    try:
        from models.checkpoint import DEFAULT_CHECKPOINT, read_checkpoint_config, trained_on

        return trained_on(read_checkpoint_config(DEFAULT_CHECKPOINT)[2])
    except (ValueError, OSError):
        return "(the shipped model could not be read)"


@dataclass(frozen=True)
class RunFiles:
    """Where a run writes (``None``: not written)."""

    video: Path | None
    stats: Path | None
    results: Path | None
    masks: Path | None
    created: tuple[Path, ...] = ()

    def discard_empty(self) -> None:
        """Remove the folders the plan created if nothing was written in them (a failed start)."""
        for folder in sorted(self.created, key=lambda f: len(f.parts), reverse=True):
            with contextlib.suppress(OSError):
                folder.rmdir()


def _run_name(source_spec: str) -> str:
    spec = source_spec.strip()
    name = f"camera{spec}" if spec.isdigit() else Path(spec.rstrip("/")).stem or spec
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._")[:40] or "run"


def plan_outputs(args: argparse.Namespace, source_spec: str) -> RunFiles:
    """The run's files, checked (and their folders created) before any model or frame work.

    Raises:
        OutputPathError: a path that cannot be written (a folder given for a file, no video
            file ending, a folder that cannot be created or written).
    """
    from engine.outputs import check_output_dir, check_output_file

    save = not args.no_save
    if args.out_dir is not None:
        folder = args.out_dir
    elif args.output is not None:
        folder = args.output.parent
    else:
        folder = Path("runs") / f"{_run_name(source_spec)}-{time.strftime('%Y%m%d-%H%M%S')}"
    video = args.output or (folder / "overlay.mp4" if save else None)
    stats = args.stats_json or (folder / "stats.json" if save else None)
    masks = args.masks_dir or (folder / "masks" if args.masks else None)
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


def _quiet_native_logs() -> None:
    """Keep OpenCV's ``[ WARN:0@...]`` and FFmpeg's ``[tcp @ 0x...]`` lines off the console.

    ``-v`` shows them. Both read their level from the environment when they start.
    """
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET


def _model_input_size(folder: Path) -> tuple[int, int] | None:
    """The input size stored in a checkpoint's config (``None`` if it cannot be read here)."""
    try:
        from models.checkpoint import read_checkpoint_config

        return tuple(read_checkpoint_config(folder)[0].input_size)
    except (ValueError, OSError):
        return None


def _model_errors() -> tuple[type[Exception], ...]:
    """Exceptions meaning "the model folder is bad" (as opposed to "the runtime is missing")."""
    from engine.manifest import ExportError
    from models.checkpoint import CheckpointError

    return (CheckpointError, ExportError, FileNotFoundError)


def _default_engine_and_device(engine: str | None, device: str | None) -> tuple[str, str]:
    gpu = False
    try:
        import onnxruntime as ort

        gpu = "CUDAExecutionProvider" in ort.get_available_providers()
    except ImportError:
        pass
    return engine or "onnx", device or ("cuda" if gpu else "cpu")


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


def plan_streams(args: argparse.Namespace, specs: list[str]) -> tuple[list[RunFiles], Path | None]:
    """Each stream's files in ``<out-dir>/<stream>/`` and the total summary's path.

    Raises:
        OutputPathError: a path that cannot be written.
    """
    from engine.outputs import check_output_file

    root = args.out_dir or Path("runs") / f"streams-{time.strftime('%Y%m%d-%H%M%S')}"
    plans: list[RunFiles] = []
    try:
        for spec, name in zip(specs, stream_names(specs)):
            one = argparse.Namespace(**{**vars(args), "out_dir": root / name, "output": None,
                                        "stats_json": None, "masks_dir": None})  # fmt: skip
            plans.append(plan_outputs(one, spec))
        total = args.stats_json or (None if args.no_save else root / "stats.json")
        if total is not None:
            total = check_output_file(total, what="--stats-json")
    except Exception:
        for files in reversed(plans):  # the later streams' folders sit in the first's
            files.discard_empty()
        raise
    return plans, total


def _stdin_phrases(group, stop: threading.Event) -> None:
    """Read new phrases from the terminal (headless mode); ``N: phrase`` targets stream N."""
    for line in sys.stdin:
        if stop.is_set():
            return
        text = line.strip()
        if not text:
            continue
        key = None
        if len(group.pipelines) > 1 and ":" in text:
            head, rest = text.split(":", 1)
            if group.by_key(head) is not None:
                key, text = head, rest.strip()
        try:
            names = group.set_phrase(text, key)
            phrase = group.pipelines[0].segmenter.phrase if key is None else None
            if phrase is None:
                phrase = group.by_key(key).segmenter.phrase
            where = "" if len(group.pipelines) == 1 else f" ({', '.join(names)})"
            print(f"phrase: {phrase!r}{where}", file=sys.stderr)
        except ValueError as exc:
            print(f"phrase rejected: {exc}", file=sys.stderr)


def _open_sources(args, specs: list[str]):
    """Open every source; on a failure close the ones opened.

    Returns:
        ``(sources, None)``, or ``([], (exit code, message))``.
    """
    from engine.capture import open_source
    from engine.sources import (
        CameraUnavailableError,
        SourceNotFoundError,
        StreamUnavailableError,
        UnknownSourceError,
    )

    codes = {UnknownSourceError: EXIT_UNKNOWN_SOURCE, SourceNotFoundError: EXIT_SOURCE_NOT_FOUND,
             CameraUnavailableError: EXIT_CAMERA, StreamUnavailableError: EXIT_STREAM}  # fmt: skip
    sources = []
    for spec in specs:
        is_demo = spec.strip().lower().split(":", 1)[0] == "demo"
        pace = DEMO_PACE if args.pace is None and is_demo else args.pace
        try:
            sources.append(open_source(spec, loop=args.loop, pace=pace or None))
        except tuple(codes) as exc:
            for src in sources:
                src.close()
            return [], (codes[type(exc)], str(exc))
    return sources, None


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the process exit code (see the --help epilog)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not {"-v", "--verbose"} & set(argv):
        _quiet_native_logs()  # before OpenCV is imported
    parser = build_parser()
    args = parser.parse_args(argv)
    specs = args.source or ["demo"]
    phrases = args.phrase or []
    multi = len(specs) > 1
    if args.pace is not None and args.pace < 0:
        parser.error(f"--pace must be >= 0, got {args.pace}")
    if not 0.0 < args.threshold < 1.0:
        parser.error(f"--threshold must be in (0, 1), got {args.threshold}")
    if not 0.0 <= args.min_score < 1.0:
        parser.error(f"--min-score must be in [0, 1), got {args.min_score}")
    if not 0.0 <= args.min_prior < 1.0:
        parser.error(f"--min-prior must be in [0, 1), got {args.min_prior}")
    if not 0.0 <= args.smoothing < 1.0:
        parser.error(f"--smoothing must be in [0, 1), got {args.smoothing}")
    if len(phrases) not in (0, 1, len(specs)):
        parser.error(f"give one --phrase for all {len(specs)} sources or one per source, "
                     f"got {len(phrases)}")  # fmt: skip
    if multi and (args.output or args.masks_dir):
        parser.error("with several --source, each stream writes into <out-dir>/<stream>/: give "
                     "--out-dir (and --masks) instead of --output / --masks-dir")  # fmt: skip
    from engine.session import KeyframePolicy

    try:
        keyframes = KeyframePolicy.parse(args.keyframes)
    except ValueError as exc:
        parser.error(f"--keyframes: {exc}")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from engine.outputs import OutputPathError

    planned: list[RunFiles] = []

    def fail(code: int, message: str) -> int:
        print(f"run_stream: error: {message}", file=sys.stderr)
        for files in reversed(planned):  # the later streams' folders sit in the first's
            files.discard_empty()
        return code

    # 0. the outputs (checked before anything is loaded or computed)
    try:
        if multi:
            stream_files, total_stats = plan_streams(args, specs)
        else:
            stream_files, total_stats = [plan_outputs(args, specs[0])], None
    except OutputPathError as exc:
        return fail(EXIT_OUTPUT, str(exc))
    planned.extend(stream_files)

    # 1. the model (checked before the sources so a missing model does not open a camera)
    try:
        from export.engines import create_engine
    except ImportError as exc:
        return fail(EXIT_ENGINE, f"engine backends unavailable: {exc}")
    backend, device = _default_engine_and_device(args.engine, args.device)
    if not Path(args.checkpoint).exists():
        return fail(EXIT_MODEL, f"model not found: {args.checkpoint} (see --checkpoint)")
    try:
        from engine.loading import source_kind

        source_kind(args.checkpoint)
    except ValueError as exc:
        return fail(EXIT_MODEL, str(exc))
    size = args.size or _model_input_size(args.checkpoint)
    options: dict = {"input_size": size} if size else {}
    if backend == "triton":
        options.update(url=args.triton_url, protocol=args.triton_protocol)
    if args.threads and backend == "onnx":
        options["intra_op_threads"] = args.threads
    elif args.threads and backend == "torch":
        import torch

        torch.set_num_threads(args.threads)
    try:
        engine = create_engine(
            backend,
            args.checkpoint,
            device=device,
            precision=args.precision,
            **options,
        )
    except _model_errors() as exc:
        return fail(EXIT_MODEL, f"cannot load model {args.checkpoint} for {backend}: {exc}")
    except (ImportError, RuntimeError, OSError, ValueError) as exc:
        return fail(EXIT_ENGINE, f"{backend} engine on {device} unavailable: {exc}")

    # 2. the sources
    sources, error = _open_sources(args, specs)
    if error is not None:
        engine.close()
        return fail(*error)

    def close_all() -> None:
        for src in sources:
            src.close()
        engine.close()

    # 3. one session and pipeline per stream, one engine
    from engine.outputs import MaskFolderOutput, ResultsFileOutput, video_output
    from engine.pipeline import Pipeline
    from engine.session import Segmenter
    from engine.streams import StreamGroup, format_streams_table

    names = stream_names(specs) if multi else [None]
    pipelines = []
    for i, (spec, source, files, name) in enumerate(zip(specs, sources, stream_files, names)):
        phrase = (phrases[i] if len(phrases) > 1 else phrases[0]) if phrases else source.phrase
        if not phrase:
            close_all()
            return fail(EXIT_USAGE, f"--phrase is required for source {spec!r}")
        segmenter = Segmenter(
            engine,
            flow_preset=args.flow_preset,
            threshold=args.threshold,
            smoothing=args.smoothing,
            min_score=args.min_score,
            min_prior=args.min_prior,
            keyframes=keyframes,
        )
        try:
            segmenter.set_phrase(phrase)
        except ValueError as exc:
            close_all()
            return fail(EXIT_PHRASE, f"phrase rejected: {exc}")
        outputs = []
        if files.video is not None:
            outputs.append(video_output(files.video, fps=source.fps or 25.0))
        if files.results is not None:
            outputs.append(ResultsFileOutput(files.results))
        if files.masks is not None:
            outputs.append(MaskFolderOutput(files.masks))
        pipelines.append(Pipeline(source, segmenter, outputs=outputs, hud=not args.no_hud,
                                  max_frames=args.max_frames, name=name))  # fmt: skip
    group = StreamGroup(pipelines)
    headless = args.no_display or not os.environ.get("DISPLAY")
    displays = [None] * len(pipelines)
    if not headless:
        from engine.window import WindowDisplay

        displays = [WindowDisplay(f"HINet-stream {n}" if n else "HINet-stream") for n in names]
    for p in pipelines:
        print(
            f"run_stream: {engine!r} source={p.source.name} phrase={p.segmenter.phrase!r} "
            f"display={'off' if headless else 'window'}" + (f" stream={p.name}" if p.name else ""),
            file=sys.stderr,
        )
    stop_stdin = threading.Event()
    if headless and sys.stdin is not None and sys.stdin.isatty():
        threading.Thread(target=_stdin_phrases, args=(group, stop_stdin), daemon=True).start()
    try:
        summary = group.run(displays)
    finally:
        stop_stdin.set()
        engine.close()
    code = EXIT_RUNTIME if group.errors else EXIT_OK
    if summary["total"].get("interrupted"):
        code = EXIT_INTERRUPTED
    run_info = dict(backend=backend, device=device, precision=args.precision,
                    input_size=list(engine.input_size), flow_preset=args.flow_preset)  # fmt: skip
    from engine.latency import format_table, json_safe

    for s in summary["streams"]:
        s.update(run_info)
        if summary["total"].get("interrupted"):
            s["interrupted"] = True
        if not multi:
            print(format_table(s))
    summary["total"].update(run_info)
    if multi:
        print(format_streams_table(summary))
    written: list[str] = []
    for s, files in zip(summary["streams"], stream_files):
        if files.stats is not None:
            files.stats.write_text(json.dumps(json_safe(s), indent=2) + "\n")
        written += [str(f) for f in (files.video, files.results, files.stats, files.masks) if f]
    if total_stats is not None:
        total_stats.write_text(json.dumps(json_safe(summary), indent=2) + "\n")
        written.append(str(total_stats))
    if written:
        shown = written if len(written) <= 6 else [*written[:5], f"... ({len(written)} files)"]
        print(f"wrote {', '.join(shown)}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
