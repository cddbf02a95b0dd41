#!/usr/bin/env python3
"""Segment the object a phrase refers to in a live stream, a video file or the demo clip.

Examples::

    python run_stream.py                                   # demo clip, its own phrase
    python run_stream.py --source 0 --phrase "the person on the left"
    python run_stream.py --source rtsp://10.0.0.5:8554/cam --phrase "the red car" --no-display --output out.mp4 --stats-json stats.json
    python run_stream.py --source clip.mp4 --phrase "the dog" --engine torch --masks

Each run writes into a folder of its own (``runs/<name>/``, see ``--out-dir``): the overlaid
video (H.264), ``stats.json`` (per-stage latency) and ``overlay.jsonl`` (per frame: score,
peak probability, area, found, and the mask as COCO RLE), and the mask PNGs with ``--masks``.
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
Headless with a terminal: type a new phrase and press Enter.

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
    from engine.session import DEFAULT_MIN_SCORE
    from models.checkpoint import DEFAULT_CHECKPOINT

    p = argparse.ArgumentParser(
        prog="run_stream.py",
        description="Real-time referring video object segmentation (HINet) on a stream.",
        epilog=EPILOG.replace("{trained_on}", _shipped_trained_on()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--source", default="demo", help="demo | camera index | URL | file | folder")
    p.add_argument("--phrase", help="referring expression (default for demo: the clip's own)")
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


def _stdin_phrases(pipeline, stop: threading.Event) -> None:
    """Read new phrases from the terminal (headless mode)."""
    for line in sys.stdin:
        if stop.is_set():
            return
        text = line.strip()
        if not text:
            continue
        try:
            pipeline.set_phrase(text)
            print(f"phrase: {pipeline.segmenter.phrase!r}", file=sys.stderr)
        except ValueError as exc:
            print(f"phrase rejected: {exc}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the process exit code (see the --help epilog)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not {"-v", "--verbose"} & set(argv):
        _quiet_native_logs()  # before OpenCV is imported
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.pace is not None and args.pace < 0:
        parser.error(f"--pace must be >= 0, got {args.pace}")
    if not 0.0 < args.threshold < 1.0:
        parser.error(f"--threshold must be in (0, 1), got {args.threshold}")
    if not 0.0 <= args.min_score < 1.0:
        parser.error(f"--min-score must be in [0, 1), got {args.min_score}")
    if not 0.0 <= args.smoothing < 1.0:
        parser.error(f"--smoothing must be in [0, 1), got {args.smoothing}")
    from engine.session import KeyframePolicy

    try:
        keyframes = KeyframePolicy.parse(args.keyframes)
    except ValueError as exc:
        parser.error(f"--keyframes: {exc}")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from engine.latency import format_table
    from engine.outputs import MaskFolderOutput, OutputPathError, ResultsFileOutput, video_output
    from engine.pipeline import Pipeline
    from engine.session import Segmenter
    from engine.sources import (
        CameraUnavailableError,
        SourceNotFoundError,
        StreamUnavailableError,
        UnknownSourceError,
        open_source,
    )

    planned: list[RunFiles] = []

    def fail(code: int, message: str) -> int:
        print(f"run_stream: error: {message}", file=sys.stderr)
        for files in planned:
            files.discard_empty()
        return code

    # 0. the outputs (checked before anything is loaded or computed)
    try:
        files = plan_outputs(args, args.source)
    except OutputPathError as exc:
        return fail(EXIT_OUTPUT, str(exc))
    planned.append(files)

    # 1. the model (checked before the source so a missing model does not open a camera)
    try:
        from engine.backends import create_engine
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

    # 2. the source
    is_demo = args.source.strip().lower().split(":", 1)[0] == "demo"
    pace = DEMO_PACE if args.pace is None and is_demo else args.pace
    try:
        source = open_source(args.source, loop=args.loop, pace=pace or None)
    except UnknownSourceError as exc:
        return fail(EXIT_UNKNOWN_SOURCE, str(exc))
    except SourceNotFoundError as exc:
        return fail(EXIT_SOURCE_NOT_FOUND, str(exc))
    except CameraUnavailableError as exc:
        return fail(EXIT_CAMERA, str(exc))
    except StreamUnavailableError as exc:
        return fail(EXIT_STREAM, str(exc))
    phrase = args.phrase or source.phrase
    if not phrase:
        source.close()
        return fail(EXIT_USAGE, f"--phrase is required for source {args.source!r}")

    # 3. the session and the pipeline
    segmenter = Segmenter(
        engine,
        flow_preset=args.flow_preset,
        threshold=args.threshold,
        smoothing=args.smoothing,
        min_score=args.min_score,
        keyframes=keyframes,
    )
    try:
        segmenter.set_phrase(phrase)
    except ValueError as exc:
        source.close()
        return fail(EXIT_PHRASE, f"phrase rejected: {exc}")
    outputs = []
    if files.video is not None:
        outputs.append(video_output(files.video, fps=source.fps or 25.0))
    if files.results is not None:
        outputs.append(ResultsFileOutput(files.results))
    if files.masks is not None:
        outputs.append(MaskFolderOutput(files.masks))
    headless = args.no_display or not os.environ.get("DISPLAY")
    display = None
    if not headless:
        from engine.window import WindowDisplay

        display = WindowDisplay()
    pipeline = Pipeline(source, segmenter, outputs=outputs, hud=not args.no_hud,
                        max_frames=args.max_frames)  # fmt: skip
    print(
        f"run_stream: {engine!r} source={source.name} phrase={segmenter.phrase!r} "
        f"display={'off' if headless else 'window'}",
        file=sys.stderr,
    )
    stop_stdin = threading.Event()
    if headless and sys.stdin is not None and sys.stdin.isatty():
        threading.Thread(target=_stdin_phrases, args=(pipeline, stop_stdin), daemon=True).start()
    code = EXIT_OK
    try:
        summary = pipeline.run(display=display)
    except Exception as exc:  # a worker failed: report it, still write the stats
        logging.getLogger("run_stream").exception("pipeline failed")
        summary = pipeline.summary()
        summary["error"] = repr(exc)
        code = EXIT_RUNTIME
    finally:
        stop_stdin.set()
        engine.close()
    if summary.get("interrupted"):
        code = EXIT_INTERRUPTED
    summary.update(
        backend=backend, device=device, precision=args.precision,
        input_size=list(engine.input_size), flow_preset=args.flow_preset,
    )  # fmt: skip
    print(format_table(summary))
    if files.stats is not None:
        from engine.latency import json_safe

        files.stats.write_text(json.dumps(json_safe(summary), indent=2) + "\n")
    written = [str(f) for f in (files.video, files.results, files.stats, files.masks) if f]
    if written:
        print(f"wrote {', '.join(written)}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
