"""One options layer: every program that runs a model spells each setting the same way.

``run_stream.py``, the page (``python -m app``), ``training.evaluate`` and the benchmarks add
their model and session options here, so one idea has one flag everywhere:

==============================  =========================================================
flag                            what
==============================  =========================================================
``--checkpoint PATH``           the model: a checkpoint or export folder, a TensorRT engine
                                file or a Triton repository (default: the shipped model)
``--backend NAME``              ``torch``, ``onnx``, ``tensorrt`` or ``triton``
``--device``                    ``cpu``, ``cuda`` or ``cuda:N``
``--precision``                 ``fp32``, ``fp16`` or ``int8``
``--size HxW``                  the network input (default: the model's own)
``--threads N``                 the engine's intra-op CPU threads
``--triton-url``,               where the Triton server is, and how to talk to it
``--triton-protocol``
``--threshold``, ``--min-score``, ``--min-prior``, ``--smoothing``, ``--keyframes``,
``--flow-preset``               the streaming session (:class:`engine.session.Segmenter`)
``--json``, ``--png``,          a report's files, and the progress bar
``--no-progress``
==============================  =========================================================

:class:`ModelOptions` and :class:`SessionOptions` are what the flags parse into; a program
turns them into an engine with ``export.engines.create_engine(**options.engine_kwargs())`` and
into a session with :meth:`SessionOptions.segmenter`. Torch-free.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.backends import BACKENDS
from engine.base import PRECISIONS
from engine.flow import FLOW_PRESETS
from engine.instances import DEFAULT_EVERY, InstanceEvidence
from engine.preprocess import parse_size
from engine.session import DEFAULT_MIN_PRIOR, DEFAULT_MIN_SCORE, KeyframePolicy, Segmenter
from models.checkpoint import DEFAULT_CHECKPOINT

__all__ = [
    "DEFAULT_BACKEND",
    "ModelOptions",
    "SessionOptions",
    "add_model_options",
    "add_report_options",
    "add_session_options",
    "default_device",
    "fraction",
    "positive_int",
    "size_arg",
]

#: The backend every program uses unless told otherwise: ONNX Runtime (4x torch eager on CPU).
DEFAULT_BACKEND = "onnx"


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from exc
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def fraction(low_open: bool = False) -> Any:
    """An argparse type: a float in [0, 1), or in (0, 1) with ``low_open``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from exc
        if not ((value > 0.0 if low_open else value >= 0.0) and value < 1.0):
            raise argparse.ArgumentTypeError(
                f"must be in {'(0' if low_open else '[0'}, 1), got {value:g}"
            )
        return value

    return parse


def size_arg(text: str) -> tuple[int, int]:
    """An argparse type: ``HxW``, each side a multiple of 32 (:func:`engine.preprocess.parse_size`)."""
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _keyframes(text: str) -> KeyframePolicy:
    try:
        return KeyframePolicy.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def default_device() -> str:
    """``"cuda"`` when ONNX Runtime sees a CUDA GPU here, else ``"cpu"``."""
    try:
        import onnxruntime as ort
    except ImportError:
        return "cpu"
    return "cuda" if "CUDAExecutionProvider" in ort.get_available_providers() else "cpu"


@dataclass(frozen=True)
class ModelOptions:
    """Which model runs, on what (the flags of :func:`add_model_options`).

    Attributes:
        checkpoint: Checkpoint or export folder, TensorRT engine file or Triton repository.
        backend: One of :data:`engine.backends.BACKENDS`.
        device: ``cpu``, ``cuda`` or ``cuda:N`` (``None``: :func:`default_device`).
        precision: One of :data:`engine.base.PRECISIONS`.
        size: Network input ``(H, W)`` (``None``: the model's own).
        threads: Intra-op CPU threads of the engine (``None``: the runtime's default).
        triton_url: ``host:port`` of the Triton server (``None``: loopback, the protocol's port).
        triton_protocol: ``grpc`` or ``http``.
        prior: ``False`` runs a grounding-prior model with its prior switched off (ablations).
    """

    checkpoint: Path = DEFAULT_CHECKPOINT
    backend: str = DEFAULT_BACKEND
    device: str | None = None
    precision: str = "fp32"
    size: tuple[int, int] | None = None
    threads: int | None = None
    triton_url: str | None = None
    triton_protocol: str = "grpc"
    prior: bool = True

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; valid: {', '.join(BACKENDS)}")
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"unknown precision {self.precision!r}; valid: {', '.join(PRECISIONS)}"
            )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ModelOptions:
        """The options :func:`add_model_options` added to ``args`` (absent ones keep defaults)."""
        names = {f for f in cls.__dataclass_fields__ if hasattr(args, f)}
        values = {f: getattr(args, f) for f in names}
        if "prior" in values and isinstance(values["prior"], str):
            values["prior"] = values["prior"] == "on"
        return cls(**values)

    @property
    def resolved_device(self) -> str:
        """:attr:`device`, or :func:`default_device` when not given."""
        return self.device or default_device()

    def engine_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``export.engines.create_engine`` for these options."""
        options: dict[str, Any] = {}
        if self.threads and self.backend in ("onnx", "torch"):
            options["intra_op_threads"] = self.threads
        if self.backend == "triton":
            options.update(url=self.triton_url, protocol=self.triton_protocol)
        return dict(
            backend=self.backend,
            source=self.checkpoint,
            device=self.resolved_device,
            precision=self.precision,
            input_size=self.size,
            **options,
        )


@dataclass(frozen=True)
class SessionOptions:
    """How a stream session turns the network's output into masks (:class:`Segmenter`).

    Attributes:
        threshold: Mask probability threshold, in (0, 1).
        min_score: A mask is shown only when its score reaches this, in [0, 1).
        min_prior: With a grounding-prior model, its confidence must reach this, in [0, 1).
        smoothing: Temporal EMA weight of the previous frame, in [0, 1).
        keyframes: When the network runs (every frame, every N-th, adaptive).
        flow_preset: The optical flow's DIS preset.
        instances: Instance evidence: the COCO-80 detector's instance the phrase means steers
            the mask (:mod:`engine.instances`); the detector runs in its own thread, off the
            frame's path.
        instances_every: Ask the detector for every N-th frame (its boxes follow the flow
            between, and while it works).
    """

    threshold: float = 0.5
    min_score: float = DEFAULT_MIN_SCORE
    min_prior: float = DEFAULT_MIN_PRIOR
    smoothing: float = 0.0
    keyframes: KeyframePolicy = field(default_factory=KeyframePolicy)
    flow_preset: str = "ultrafast"
    instances: bool = True
    instances_every: int = DEFAULT_EVERY

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> SessionOptions:
        """The options :func:`add_session_options` added to ``args``."""
        return cls(**{f: getattr(args, f) for f in cls.__dataclass_fields__ if hasattr(args, f)})

    def segmenter(self, engine: Any, **overrides: Any) -> Segmenter:
        """A :class:`Segmenter` on ``engine`` with these settings (``overrides`` win)."""
        settings = {f: getattr(self, f) for f in self.__dataclass_fields__}
        every = settings.pop("instances_every")
        if settings.pop("instances"):
            settings["instances"] = InstanceEvidence(every=every, background=True)
        return Segmenter(engine, **{**settings, **overrides})


def add_model_options(
    parser: argparse.ArgumentParser,
    *,
    backends: Sequence[str] = BACKENDS,
    default_backend: str = DEFAULT_BACKEND,
    threads: bool = True,
    triton: bool = True,
    prior: bool = False,
    default_checkpoint: Path | None = DEFAULT_CHECKPOINT,
) -> argparse._ArgumentGroup:
    """Add the model's flags as one group.

    Always ``--checkpoint --backend --device --precision --size``; ``--threads``,
    ``--triton-url`` / ``--triton-protocol`` and ``--prior`` as asked.
    """
    g = parser.add_argument_group("model")
    g.add_argument(
        "--checkpoint",
        type=Path,
        default=default_checkpoint,
        required=default_checkpoint is None,
        help="checkpoint or export folder, TensorRT engine file or Triton repository"
        + (
            f" (default: the shipped model, {default_checkpoint.name})"
            if default_checkpoint
            else ""
        ),
    )
    g.add_argument(
        "--backend",
        choices=tuple(backends),
        default=default_backend,
        help=f"inference backend (default: {default_backend})",
    )
    g.add_argument(
        "--device", help="cpu, cuda or cuda:N (default: cuda when a GPU is visible, else cpu)"
    )
    g.add_argument("--precision", choices=PRECISIONS, default="fp32", help="(default: fp32)")
    g.add_argument("--size", type=size_arg, help="network input HxW (default: the model's own)")
    if threads:
        g.add_argument(
            "--threads",
            type=positive_int,
            help="the engine's intra-op CPU threads (default: the runtime's; 1 often wins when "
            "other pipeline stages share a small CPU)",
        )
    if triton:
        g.add_argument(
            "--triton-url",
            help="--backend triton: host:port of the server (default 127.0.0.1:8001 for gRPC, "
            ":8000 for HTTP); --checkpoint names the repository folder",
        )
        g.add_argument(
            "--triton-protocol", choices=("grpc", "http"), default="grpc", help="(default: grpc)"
        )
    if prior:
        g.add_argument(
            "--prior",
            choices=("on", "off"),
            default="on",
            help="off: a grounding-prior model runs with its prior switched off (the ablation)",
        )
    return g


def add_session_options(
    parser: argparse.ArgumentParser, *, only: Sequence[str] | None = None
) -> argparse._ArgumentGroup:
    """Add the streaming session's flags (all of them, or ``only`` these field names)."""
    g = parser.add_argument_group("session")
    d = SessionOptions()
    flags = {
        "threshold": dict(
            type=fraction(low_open=True), default=d.threshold,
            help="mask probability threshold (default %(default)s)",
        ),
        "min_score": dict(
            type=fraction(), default=d.min_score,
            help="show a frame's mask only when its score (mean probability inside it) reaches "
            'this; else "not found" (default %(default)s, calibrated on synthetic validation '
            "clips; 0 shows every non-empty mask)",
        ),
        "min_prior": dict(
            type=fraction(), default=d.min_prior,
            help="with a grounding-prior model, also need the prior's confidence that the frame "
            'shows what the phrase names to reach this; else "not found" (default '
            "%(default)s; 0 disables it)",
        ),
        "smoothing": dict(
            type=fraction(), default=d.smoothing,
            help="temporal EMA weight of the previous frame (default %(default)s)",
        ),
        "keyframes": dict(
            type=_keyframes, default=d.keyframes, metavar="N|adaptive",
            help="run the network on every N-th frame only, or 'adaptive' (when the flow says "
            "the warped mask can no longer be trusted); frames in between reuse the last mask "
            "moved by the optical flow (default 1: every frame)",
        ),
        "flow_preset": dict(
            choices=tuple(FLOW_PRESETS), default=d.flow_preset,
            help="the optical flow's DIS preset (default %(default)s)",
        ),
        "instances": dict(
            action=argparse.BooleanOptionalAction, default=d.instances,
            help="instance evidence (on by default): the COCO-80 detector (NanoDet-g, in its own "
            "thread) finds people, vehicles, animals and everyday things, the phrase's words "
            "choose one (category, colour, position, motion), and that instance steers the "
            "mask; its scores go to the HUD and the results. --no-instances: HINet alone",
        ),
        "instances_every": dict(
            type=positive_int, default=d.instances_every, metavar="N",
            help="ask the detector for every N-th frame, its boxes carried by the flow between "
            "(default %(default)s)",
        ),
    }  # fmt: skip
    for name in only or flags:
        g.add_argument("--" + name.replace("_", "-"), **flags[name])
    return g


def add_report_options(
    parser: argparse.ArgumentParser,
    *,
    json: Path | None = None,
    png: bool = False,
    progress: bool = True,
) -> None:
    """Add ``--json PATH`` (default ``json``), ``--png PATH`` and ``--no-progress``."""
    parser.add_argument(
        "--json",
        type=Path,
        default=json,
        help="write the results as JSON here" + (f" (default: {json})" if json else ""),
    )
    if png:
        parser.add_argument("--png", type=Path, help="write the results' plot (PNG) here")
    if progress:
        parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
