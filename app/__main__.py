"""Start the local page: ``python -m app [--checkpoint DIR] [--backend onnx|torch] [--port 7860]``.

Binds 127.0.0.1 unless ``--host`` says otherwise; a public share link only with ``--share``.

Exit codes: 0 stopped (Ctrl-C or SIGTERM), 2 bad arguments or no engine can load the model,
3 the port is in use or the address cannot be bound (checked before any model loads).
"""

from __future__ import annotations

import argparse
import errno
import logging
import signal
import socket
import sys
import tempfile
from pathlib import Path

__all__ = ["PortInUseError", "build_parser", "check_port", "main"]

logger = logging.getLogger("app")


def _positive(kind: type) -> object:
    def parse(text: str) -> float | int:
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    from engine.options import add_model_options, positive_int

    p = argparse.ArgumentParser(
        prog="python -m app",
        description="Local Gradio page: segment what a phrase refers to in a webcam or a video.",
    )
    model = add_model_options(p, threads=False)
    model.add_argument(
        "--backends",
        help="comma-separated backends the page offers (default: --backend plus every other "
        "backend that can run here)",
    )
    model.add_argument(
        "--no-preload", action="store_true",
        help="load the other backends on first use instead of in the background at start",
    )  # fmt: skip
    page = p.add_argument_group("page")
    page.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    page.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    page.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    page.add_argument("--max-mb", type=_positive(float), default=200.0, help="largest upload (MB)")
    page.add_argument(
        "--max-seconds", type=_positive(float), default=60.0, help="longest upload (seconds)"
    )
    page.add_argument(
        "--max-frames", type=positive_int, default=1800, help="most frames per upload"
    )
    page.add_argument(
        "--stream-every", type=_positive(float), default=0.1, help="webcam frame interval (s)"
    )
    page.add_argument(
        "--stream-time-limit", type=positive_int, default=300, help="webcam session limit (s)"
    )
    page.add_argument("--no-examples", action="store_true", help="do not offer the example clips")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


class PortInUseError(OSError):
    """The page's address cannot be bound."""


def check_port(host: str, port: int) -> None:
    """Bind ``(host, port)`` for a moment, as the server will, or raise :class:`PortInUseError`.

    A server still listening there makes the bind fail; a closed one in ``TIME_WAIT`` does not
    (``SO_REUSEADDR``, as uvicorn binds).
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise PortInUseError(f"--host {host}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError(
                    f"port {port} is in use on {host}; pass --port with a free one"
                ) from None
            raise PortInUseError(f"cannot bind {host}:{port} ({exc.strerror})") from None


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    """Run the server until interrupted (Ctrl-C or SIGTERM); returns the exit code."""
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # clean shutdown: temp files removed
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        check_port(args.host, args.port)
    except PortInUseError as exc:
        print(f"python -m app: error: {exc}", file=sys.stderr)
        return 3
    import gradio as gr

    from app.engines import EngineRegistry, EngineUnavailableError, offered_backends
    from app.examples import default_examples
    from app.ui import LiveSettings, build_app
    from app.validation import MB, UploadLimits
    from engine.options import ModelOptions

    if args.host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning("binding %s: the page is reachable from other machines", args.host)
    try:
        limits = UploadLimits(
            max_mb=args.max_mb, max_seconds=args.max_seconds, max_frames=args.max_frames
        )
        model = ModelOptions.from_args(args)
        backends = offered_backends(model.backend, model.checkpoint, device=model.resolved_device)
        if args.backends:
            wanted = [b.strip() for b in args.backends.split(",") if b.strip()]
            bad = [b for b in wanted if b not in backends]
            if bad:
                raise ValueError(
                    f"--backends: {', '.join(bad)} cannot run here; valid: {', '.join(backends)}"
                )
            backends = (model.backend, *[b for b in wanted if b != model.backend])
        registry = EngineRegistry(model, backends=backends)
        registry.get(registry.default)  # load now: the first request must not wait for it
        if not args.no_preload:
            registry.preload()
    except (ValueError, EngineUnavailableError) as exc:
        print(f"python -m app: error: {exc}", file=sys.stderr)
        return 2
    examples = [] if args.no_examples else default_examples()
    with tempfile.TemporaryDirectory(prefix="hinet-app-") as work:
        demo = build_app(
            registry,
            limits=limits,
            examples=examples,
            work_root=Path(work),
            live=LiveSettings(stream_every=args.stream_every, time_limit=args.stream_time_limit),
        )
        logger.info("engines offered: %s (default %s)", ", ".join(backends), backends[0])
        try:
            demo.queue().launch(
                server_name=args.host,
                server_port=args.port,
                share=args.share,
                allowed_paths=[str(e.video.parent) for e in examples],
                max_file_size=int(args.max_mb * MB),  # bytes; gradio refuses bigger uploads
                theme=gr.themes.Soft(),
                footer_links=["api"],
                show_error=True,
                quiet=True,  # its banner speaks of launch(share=True); ours of the flags
                prevent_thread_lock=True,
            )
            print(_banner(args, demo.share_url), flush=True)
            demo.block_thread()
        except OSError as exc:  # another server took the port since check_port
            print(f"python -m app: error: port {args.port}: {exc}", file=sys.stderr)
            return 3
        except KeyboardInterrupt:
            pass
        finally:
            registry.close()
    return 0


def _banner(args: argparse.Namespace, share_url: str | None) -> str:
    host = f"[{args.host}]" if ":" in args.host else args.host
    lines = [f"HINet-stream page: http://{host}:{args.port}/"]
    if share_url:
        lines.append(f"public link (--share, anyone who has it can use the page): {share_url}")
    elif args.share:
        lines.append("--share: no public link could be made (no internet access?)")
    else:
        lines.append("only this machine can open it; --share makes a public link")
    lines.append("Ctrl-C stops the server")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
