#!/usr/bin/env python3
"""Segment the object a phrase refers to in a live stream, a video file or the demo clip.

Examples::

    python run_stream.py                                   # demo clip, its own phrase
    python run_stream.py --source 0 --phrase "the person on the left"
    python run_stream.py --source rtsp://10.0.0.5:8554/cam --phrase "the red car" --no-display --output out.mp4 --stats-json stats.json
    python run_stream.py --source clip.mp4 --phrase "the dog" --backend torch --masks
    python run_stream.py --source rtsp://cam1/s --source rtsp://cam2/s --phrase "the person" \
        --backend triton --checkpoint exports/default_triton --no-display    # two streams

Each run writes into a folder of its own (``runs/<name>/``, see ``--out-dir``): the overlaid
video (H.264), ``stats.json`` (per-stage latency) and ``overlay.jsonl`` (per frame: score,
peak probability, area, found, and the mask as COCO RLE), and the mask PNGs with ``--masks``.
With several ``--source`` values each stream writes the same files into ``<out-dir>/<stream>/``
and ``<out-dir>/stats.json`` holds every stream's summary and their total.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
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
EXIT_OUTPUT = 10
EXIT_INTERRUPTED = 130

EPILOG = f"""\
sources:
  demo, demo:NAME      a clip shipped with the project (default; its phrase is the default
                       --phrase; played at its own frame rate like a camera, every frame
                       processed)
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
  {EXIT_INTERRUPTED}  interrupted by Ctrl-C or SIGTERM (the summary is still written)

what the shipped model knows:
  {{trained_on}}
"""

#: Frames per second a demo clip is played at when --pace is not given and the clip does not say
#: (otherwise: its own rate, like the camera that filmed it).
DEMO_PACE = 25.0


class RunError(Exception):
    """A run that cannot start: the exit code and one line for stderr."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class _Renamed(argparse.Action):
    """A flag that was renamed: a usage error that names the new spelling."""

    def __init__(self, option_strings, dest, new: str, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs="?", help=argparse.SUPPRESS, **kwargs)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        parser.error(f"{option_string} is now {self.new}")


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    from engine.options import add_model_options, add_session_options, positive_int
    from engine.runfiles import add_output_options

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
    add_model_options(p)
    p.add_argument("--engine", action=_Renamed, new="--backend")
    add_session_options(p)
    add_output_options(p)
    run = p.add_argument_group("run")
    run.add_argument("--no-display", action="store_true", help="no window (automatic w/o DISPLAY)")
    run.add_argument("--no-hud", action="store_true", help="do not draw the statistics on frames")
    run.add_argument("--max-frames", type=positive_int, help="stop after this many frames")
    run.add_argument("--loop", action="store_true", help="loop video files / image folders")
    run.add_argument(
        "--pace",
        type=_non_negative,
        help="play a file, folder or the demo at this many fps like a camera, every frame "
        "processed, so a stream slower than the pace falls behind and its latency includes "
        "the backlog (default: the demo clip's own rate, as fast as possible for files; 0: as "
        "fast as possible)",
    )
    run.add_argument(
        "--live",
        action="store_true",
        help="a paced file, folder or demo behaves like a live camera: the frames the stream is "
        "too slow for are skipped (counted as dropped) and the newest wins",
    )
    run.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="debug logging, and OpenCV's and FFmpeg's own messages",
    )
    return p


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value:g}")
    return value


def _shipped_trained_on() -> str:
    try:
        from models.checkpoint import DEFAULT_CHECKPOINT, read_checkpoint_config, trained_on

        return trained_on(read_checkpoint_config(DEFAULT_CHECKPOINT)[2])
    except (ValueError, OSError):
        return "(the shipped model could not be read)"


def _quiet_native_logs() -> None:
    """Keep OpenCV's ``[ WARN:0@...]`` and FFmpeg's ``[tcp @ 0x...]`` lines off the console.

    ``-v`` shows them. Both read their level from the environment when they start.
    """
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Parse and cross-check the command line (usage errors exit with code 2)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.source = args.source or ["demo"]
    phrases = args.phrase or []
    if len(phrases) not in (0, 1, len(args.source)):
        parser.error(f"give one --phrase for all {len(args.source)} sources or one per source, "
                     f"got {len(phrases)}")  # fmt: skip
    if len(args.source) > 1 and (args.output or args.masks_dir):
        parser.error("with several --source, each stream writes into <out-dir>/<stream>/: give "
                     "--out-dir (and --masks) instead of --output / --masks-dir")  # fmt: skip
    return args


def open_engine(options):
    """The engine for ``--checkpoint`` on ``--backend``.

    Raises:
        RunError: the model is missing or invalid (:data:`EXIT_MODEL`), or the runtime cannot run
            it (:data:`EXIT_ENGINE`).
    """
    from engine.loading import source_kind
    from engine.manifest import ExportError
    from models.checkpoint import CheckpointError

    if not Path(options.checkpoint).exists():
        raise RunError(EXIT_MODEL, f"model not found: {options.checkpoint} (see --checkpoint)")
    try:
        source_kind(options.checkpoint)
    except ValueError as exc:
        raise RunError(EXIT_MODEL, str(exc)) from exc
    try:
        from export.engines import create_engine

        return create_engine(**options.engine_kwargs())
    except (CheckpointError, ExportError, FileNotFoundError) as exc:
        raise RunError(
            EXIT_MODEL, f"cannot load model {options.checkpoint} for {options.backend}: {exc}"
        ) from exc
    except (ImportError, RuntimeError, OSError, ValueError) as exc:
        raise RunError(
            EXIT_ENGINE,
            f"{options.backend} engine on {options.resolved_device} unavailable: {exc}",
        ) from exc


def open_sources(specs: list[str], *, loop: bool, pace: float | None, live: bool = False) -> list:
    """Open every source (the demo paced like a camera unless ``pace`` says otherwise).

    With ``live`` a paced source skips the frames a slow stream missed (the newest wins).

    Raises:
        RunError: a source cannot be opened, or ``live`` for a file or folder with no rate
            (the ones already open are closed).
    """
    from engine.capture import open_source
    from engine.sources import (
        CameraUnavailableError,
        PacedSource,
        SourceNotFoundError,
        StreamUnavailableError,
        UnknownSourceError,
    )

    codes = {UnknownSourceError: EXIT_UNKNOWN_SOURCE, SourceNotFoundError: EXIT_SOURCE_NOT_FOUND,
             CameraUnavailableError: EXIT_CAMERA, StreamUnavailableError: EXIT_STREAM}  # fmt: skip
    sources = []
    for spec in specs:
        is_demo = spec.strip().lower().split(":", 1)[0] == "demo"
        try:
            src = open_source(spec, loop=loop)
        except tuple(codes) as exc:
            for opened in sources:
                opened.close()
            raise RunError(codes[type(exc)], str(exc)) from exc
        sources.append(src)
        if src.live:  # a camera or a stream: paced by itself
            continue
        # the demo: the clip's own rate, like the camera that filmed it
        rate = (src.fps or DEMO_PACE) if is_demo and pace is None else (pace or None)
        if rate is not None:
            sources[-1] = PacedSource(src, rate, drop=live)
        elif live:
            for opened in sources:
                opened.close()
            raise RunError(
                EXIT_USAGE, f"--live plays {spec} like a camera: give its rate, --pace N"
            )
    return sources


def stream_phrases(args: argparse.Namespace, sources: list) -> list[str]:
    """Each stream's phrase: one for all, one per source, or the demo clip's own.

    Raises:
        RunError: a source with no phrase (:data:`EXIT_USAGE`).
    """
    given = args.phrase or []
    phrases = []
    for i, (spec, source) in enumerate(zip(args.source, sources)):
        phrase = (given[i] if len(given) > 1 else given[0]) if given else source.phrase
        if not phrase:
            raise RunError(EXIT_USAGE, f"--phrase is required for source {spec!r}")
        phrases.append(phrase)
    return phrases


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
            target = group.pipelines[0] if key is None else group.by_key(key)
            where = "" if len(group.pipelines) == 1 else f" ({', '.join(names)})"
            print(f"phrase: {target.segmenter.phrase!r}{where}", file=sys.stderr)
        except ValueError as exc:
            print(f"phrase rejected: {exc}", file=sys.stderr)


def run_streams(group, engine, *, display: bool, names: list) -> dict:
    """Run the streams to their end (windows or headless, new phrases from stdin)."""
    headless = not display or not os.environ.get("DISPLAY")
    displays = [None] * len(group.pipelines)
    if not headless:
        from engine.window import WindowDisplay

        displays = [WindowDisplay(f"HINet-stream {n}" if n else "HINet-stream") for n in names]
    for p in group.pipelines:
        print(
            f"run_stream: {engine!r} source={p.source.name} phrase={p.segmenter.phrase!r} "
            f"display={'off' if headless else 'window'}" + (f" stream={p.name}" if p.name else ""),
            file=sys.stderr,
        )
    stop_stdin = threading.Event()
    if headless and sys.stdin is not None and sys.stdin.isatty():
        threading.Thread(target=_stdin_phrases, args=(group, stop_stdin), daemon=True).start()
    try:
        return group.run(displays)
    finally:
        stop_stdin.set()


def write_report(summary: dict, files: list, total_stats: Path | None, run_info: dict) -> None:
    """Print the latency table(s) and write each stream's ``stats.json`` and the total."""
    from engine.latency import format_table, json_safe
    from engine.streams import format_streams_table

    multi = len(summary["streams"]) > 1
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
    for s, out in zip(summary["streams"], files):
        if out.stats is not None:
            out.stats.write_text(json.dumps(json_safe(s), indent=2) + "\n")
        written += [str(f) for f in (out.video, out.results, out.stats, out.masks) if f]
    if total_stats is not None:
        total_stats.write_text(json.dumps(json_safe(summary), indent=2) + "\n")
        written.append(str(total_stats))
    if written:
        shown = written if len(written) <= 6 else [*written[:5], f"... ({len(written)} files)"]
        print(f"wrote {', '.join(shown)}", file=sys.stderr)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the process exit code (see the --help epilog).

    SIGTERM (``docker stop``, systemd, a supervisor) ends a run as Ctrl-C does: the streams
    stop, their files are closed and the summary is written.
    """
    own = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if own else None
    try:
        return _main(argv)
    except KeyboardInterrupt:  # outside the streams' run (which summarises it): loading, say
        print("run_stream: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if own:
            signal.signal(signal.SIGTERM, previous)


def _main(argv: list[str] | None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not {"-v", "--verbose"} & set(argv):
        _quiet_native_logs()  # before OpenCV is imported
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from engine.options import ModelOptions, SessionOptions
    from engine.outputs import OutputPathError
    from engine.runfiles import OutputOptions, plan_outputs, plan_streams, stream_names

    specs, multi = args.source, len(args.source) > 1
    model = ModelOptions.from_args(args)
    planned: list = []
    engine = None
    sources: list = []
    try:
        # 0. the outputs, checked before anything is loaded; 1. the model, before the sources
        try:
            outputs = OutputOptions.from_args(args)
            files, total = (
                plan_streams(outputs, specs) if multi else ([plan_outputs(outputs, specs[0])], None)
            )
        except OutputPathError as exc:
            raise RunError(EXIT_OUTPUT, str(exc)) from exc
        planned = files
        engine = open_engine(model)
        sources = open_sources(specs, loop=args.loop, pace=args.pace, live=args.live)
        names = stream_names(specs) if multi else [None]
        from engine.detector import DetectorFilesError
        from engine.streams import build_streams

        try:
            group = build_streams(engine, sources, stream_phrases(args, sources), files,
                                  session=SessionOptions.from_args(args), names=names,
                                  hud=not args.no_hud, max_frames=args.max_frames)  # fmt: skip
        except DetectorFilesError as exc:  # --instances: the detector's files are broken
            raise RunError(EXIT_MODEL, f"instance detector unusable: {exc}") from exc
        except ValueError as exc:
            raise RunError(EXIT_PHRASE, f"phrase rejected: {exc}") from exc
    except RunError as exc:
        print(f"run_stream: error: {exc}", file=sys.stderr)
        for src in sources:
            src.close()
        if engine is not None:
            engine.close()
        for out in reversed(planned):  # the later streams' folders sit in the first's
            out.discard_empty()
        return exc.code
    try:
        summary = run_streams(group, engine, display=not args.no_display, names=names)
    finally:
        engine.close()
    run_info = dict(backend=model.backend, device=model.resolved_device, precision=model.precision,
                    input_size=list(engine.input_size), flow_preset=args.flow_preset)  # fmt: skip
    write_report(summary, files, total, run_info)
    if summary["total"].get("interrupted"):
        return EXIT_INTERRUPTED
    return EXIT_RUNTIME if group.errors else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
