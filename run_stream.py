#!/usr/bin/env python3
"""Segment the object a phrase refers to in a live stream, a video file or the demo clip.

Examples::

    python run_stream.py                                   # demo clip, its own phrase
    python run_stream.py --source 0 --phrase "the person on the left"
    python run_stream.py --source rtsp://10.0.0.5:8554/cam --phrase "the red car" --no-display --output out.mp4 --stats-json stats.json
    python run_stream.py --source clip.mp4 --phrase "the dog" --engine torch --masks-dir masks/
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
from pathlib import Path

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
  {EXIT_PHRASE}    phrase rejected (empty or too long)
  {EXIT_INTERRUPTED}  interrupted by Ctrl-C (the summary is still written)
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
    from models.checkpoint import DEFAULT_CHECKPOINT

    p = argparse.ArgumentParser(
        prog="run_stream.py",
        description="Real-time referring video object segmentation (HINet) on a stream.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--source", default="demo", help="demo | camera index | URL | file | folder")
    p.add_argument("--phrase", help="referring expression (default for demo: the clip's own)")
    p.add_argument(
        "--engine",
        choices=BACKENDS,
        help="inference backend (default: onnx; on CPU when no GPU is visible)",
    )
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda if available, else cpu)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32")
    p.add_argument("--size", type=parse_size, help="network input HxW (default: the model's)")
    p.add_argument("--flow-preset", default="ultrafast", choices=("ultrafast", "fast", "medium"))
    p.add_argument("--threshold", type=float, default=0.5, help="mask probability threshold")
    p.add_argument(
        "--smoothing", type=float, default=0.0, help="temporal EMA weight of the previous frame"
    )
    p.add_argument(
        "--threads",
        type=_positive_int,
        help="intra-op CPU threads of the engine (default: the runtime's; 1 often wins when "
        "the other pipeline stages share a small CPU)",
    )
    p.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT, help="model folder")
    p.add_argument("--output", type=Path, help="write the overlaid video here (mp4v)")
    p.add_argument("--masks-dir", type=Path, help="write every mask as a PNG in this folder")
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
    p.add_argument("--stats-json", type=Path, help="write the latency summary JSON here")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


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
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.pace is not None and args.pace < 0:
        parser.error(f"--pace must be >= 0, got {args.pace}")
    if not 0.0 < args.threshold < 1.0:
        parser.error(f"--threshold must be in (0, 1), got {args.threshold}")
    if not 0.0 <= args.smoothing < 1.0:
        parser.error(f"--smoothing must be in [0, 1), got {args.smoothing}")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from engine.latency import format_table
    from engine.outputs import MaskFolderOutput, VideoFileOutput
    from engine.pipeline import Pipeline
    from engine.session import Segmenter
    from engine.sources import (
        CameraUnavailableError,
        SourceNotFoundError,
        StreamUnavailableError,
        UnknownSourceError,
        open_source,
    )

    def fail(code: int, message: str) -> int:
        print(f"run_stream: error: {message}", file=sys.stderr)
        return code

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
        engine, flow_preset=args.flow_preset, threshold=args.threshold, smoothing=args.smoothing
    )
    try:
        segmenter.set_phrase(phrase)
    except ValueError as exc:
        source.close()
        return fail(EXIT_PHRASE, f"phrase rejected: {exc}")
    outputs = []
    if args.output:
        outputs.append(VideoFileOutput(args.output, fps=source.fps or 25.0))
    if args.masks_dir:
        outputs.append(MaskFolderOutput(args.masks_dir))
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
    if args.stats_json:
        from engine.latency import json_safe

        args.stats_json.parent.mkdir(parents=True, exist_ok=True)
        args.stats_json.write_text(json.dumps(json_safe(summary), indent=2) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
