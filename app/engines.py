"""Engines shared by every browser session of the page, loaded once per backend on first use.

An engine holds only the loaded model, so sessions may share it; but backends keep per-shape
buffers, so two sessions must not run the same engine at the same moment. :class:`SharedEngine`
wraps an engine with a lock (the arrays every backend returns are new, so nothing needs copying
after the lock is released). Everything
that changes per session (phrase, previous frame, smoothing) lives in each session's own
:class:`engine.session.Segmenter`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from engine.base import Engine
from engine.options import ModelOptions

__all__ = ["EngineRegistry", "EngineUnavailableError", "SharedEngine", "offered_backends"]

logger = logging.getLogger(__name__)


class EngineUnavailableError(RuntimeError):
    """A backend could not be loaded (runtime missing, model invalid, ...)."""


class SharedEngine(Engine):
    """A thread-safe view of another engine: one call at a time.

    Args:
        inner: The engine to share.
    """

    def __init__(self, inner: Engine) -> None:
        super().__init__(
            config=inner.config,
            tokenizer=inner.tokenizer,
            input_size=inner.input_size,
            precision=inner.precision,
            device=inner.device,
        )
        self.inner = inner
        self.backend = inner.backend  # type: ignore[misc]  # instance attribute shadows ClassVar
        self._lock = threading.Lock()

    def run_text(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """See :meth:`Engine.run_text`; serialised."""
        with self._lock:
            return self.inner.run_text(inputs)

    def run_frame(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """See :meth:`Engine.run_frame`; serialised."""
        with self._lock:
            return self.inner.run_frame(inputs)

    def close(self) -> None:
        """Close the wrapped engine."""
        with self._lock:
            self.inner.close()


def offered_backends(default: str, source: str | Path, *, device: str) -> tuple[str, ...]:
    """Backends the page offers for ``source``: ``default`` first, then those that can run.

    torch needs a checkpoint folder (not an export) and torch installed; TensorRT needs a CUDA
    device.

    Raises:
        ValueError: ``default`` is not a backend (lists the valid ones).
    """
    from engine.backends import BACKENDS, available_backends
    from engine.loading import source_kind

    if default not in BACKENDS:
        raise ValueError(f"unknown backend {default!r}; valid: {', '.join(BACKENDS)}")
    kind = source_kind(source)
    usable = []
    for name in available_backends():
        if name == "torch" and kind != "checkpoint":
            continue
        if name == "tensorrt" and not device.startswith("cuda"):
            continue
        if (name == "triton") != (kind == "triton_repository"):  # a repository serves only there
            continue
        usable.append(name)
    return (default, *[b for b in usable if b != default])


class EngineRegistry:
    """Loads each backend's engine once, on first use, and shares it.

    Args:
        model: The model and how to run it (:class:`engine.options.ModelOptions`); its
            ``backend`` is replaced by each offered backend in turn.
        backends: Backends offered, the default first.
    """

    def __init__(self, model: ModelOptions, *, backends: Sequence[str]) -> None:
        from models.checkpoint import read_checkpoint_config  # torch-free

        if not backends:
            raise ValueError("backends must name at least one engine backend")
        self.model = model
        self.source = Path(model.checkpoint)
        self.backends = tuple(backends)
        self.config, self.tokenizer, self.meta = read_checkpoint_config(self.source)
        self.input_size = tuple(model.size or self.config.input_size)
        self._engines: dict[str, SharedEngine] = {}
        # One lock per backend: loading one backend never blocks the use of another.
        self._locks = {b: threading.Lock() for b in self.backends}

    @property
    def default(self) -> str:
        """The default backend."""
        return self.backends[0]

    @property
    def trained_on(self) -> str:
        """What the model was trained on, for people (:func:`models.checkpoint.trained_on`)."""
        from models.checkpoint import trained_on

        return trained_on(self.meta)

    @property
    def max_chars(self) -> int:
        """Longest phrase in characters the model accepts."""
        return int(self.config.text.max_chars)

    def get(self, backend: str) -> SharedEngine:
        """The shared engine of ``backend``, loading it on first use.

        Raises:
            ValueError: ``backend`` is not offered (lists the valid ones).
            EngineUnavailableError: loading failed (the message says why).
        """
        if backend not in self.backends:
            raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(self.backends)}")
        engine = self._engines.get(backend)
        if engine is not None:
            return engine
        with self._locks[backend]:  # one load per backend; later callers get the loaded one
            engine = self._engines.get(backend)
            if engine is None:
                from export.engines import create_engine

                logger.info("loading %s engine from %s", backend, self.source)
                options = replace(self.model, backend=backend, size=self.input_size)
                try:
                    inner = create_engine(**options.engine_kwargs())
                except (ImportError, RuntimeError, OSError, ValueError) as exc:
                    raise EngineUnavailableError(
                        f"the {backend} engine cannot be loaded: {exc}"
                    ) from exc
                engine = self._engines[backend] = SharedEngine(inner)
        return engine

    def preload(self) -> threading.Thread:
        """Load every offered backend not loaded yet, in a background thread (failures logged).

        Returns:
            The started daemon thread.
        """

        def run() -> None:
            for backend in self.backends:
                try:
                    self.get(backend)
                except EngineUnavailableError as exc:
                    logger.warning("%s", exc)

        thread = threading.Thread(target=run, name="engine-preload", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        """Close every loaded engine."""
        for backend in self.backends:
            with self._locks[backend]:
                engine = self._engines.pop(backend, None)
                if engine is not None:
                    engine.close()
