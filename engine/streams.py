"""Several streams side by side: one :class:`~engine.pipeline.Pipeline` per source, one engine.

Every pipeline keeps its own threads, flow state, phrase and statistics; they share the engine
they were given (a local ONNX Runtime or torch engine, whose session is safe to call from
several threads, or a Triton engine, which opens one client per thread so the server's dynamic
batcher sees the streams' frames side by side). A stream that fails is stopped and reported;
the others go on.

Example::

    group = StreamGroup([Pipeline(src, Segmenter(engine), name=f"cam{i}") for i, src in ...])
    summary = group.run()            # until every source ends, q in a window, or Ctrl-C
    summary["total"]["fps"]          # frames per second over all streams
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from engine.base import Engine
from engine.latency import STAGES, percentiles
from engine.options import SessionOptions
from engine.pipeline import Pipeline
from engine.runfiles import RunFiles
from engine.sources import Source
from engine.window import WindowDisplay

__all__ = ["StreamGroup", "build_streams", "format_streams_table", "total_summary"]

logger = logging.getLogger(__name__)


class StreamGroup:
    """Run pipelines together until all of them finished.

    Args:
        pipelines: One per stream, each with a distinct ``name``.
    """

    def __init__(self, pipelines: Sequence[Pipeline]) -> None:
        if not pipelines:
            raise ValueError("a stream group needs at least one pipeline")
        names = [p.name for p in pipelines]
        if len(pipelines) > 1 and (None in names or len(set(names)) != len(names)):
            raise ValueError(f"streams need distinct names, got {names}")
        self.pipelines = list(pipelines)
        self.errors: dict[str, BaseException] = {}

    def by_key(self, key: str) -> Pipeline | None:
        """The pipeline a user means by ``key``: its 1-based number or its name."""
        key = key.strip()
        if key.isdigit() and 1 <= int(key) <= len(self.pipelines):
            return self.pipelines[int(key) - 1]
        return next((p for p in self.pipelines if p.name == key), None)

    def run(self, displays: Sequence[WindowDisplay | None] | None = None) -> dict[str, Any]:
        """Start every pipeline and wait for all of them (showing their windows, if any).

        ``q`` in any window ends every stream; Ctrl-C too (``"interrupted"`` in the total).

        Returns:
            :meth:`summary`.
        """
        displays = list(displays or [None] * len(self.pipelines))
        if len(displays) != len(self.pipelines):
            raise ValueError("one display (or None) per pipeline")
        interrupted = False
        try:
            for p in self.pipelines:
                p.start()
            self._wait(displays)
        except KeyboardInterrupt:
            interrupted = True
            logger.info("interrupted; stopping every stream")
        finally:
            for d in displays:
                if d is not None:
                    d.close()
            for p in self.pipelines:
                self._stop(p)
        summary = self.summary()
        if interrupted:
            summary["total"]["interrupted"] = True
        return summary

    def _wait(self, displays: list[WindowDisplay | None]) -> None:
        shown: list[int | None] = [-1] * len(self.pipelines)
        while True:
            alive = False
            for i, (p, d) in enumerate(zip(self.pipelines, displays)):
                if p.finished:
                    self._stop(p)
                    continue
                alive = True
                if d is not None:
                    shown[i] = p.show_once(d, shown[i])
                    if shown[i] is None:  # q in a window: every stream ends
                        return
            if not alive:
                return
            if not any(displays):
                time.sleep(0.05)

    def _stop(self, p: Pipeline) -> None:
        """Stop one pipeline; its error is kept (and logged) instead of ending the others."""
        if p.name in self.errors:
            return
        try:
            p.stop()
        except Exception as exc:
            self.errors[str(p.name)] = exc
            logger.error("stream %s failed: %r", p.name, exc)

    def set_phrase(self, text: str, key: str | None = None) -> list[str]:
        """Give one stream (``key``: number or name) or all of them a new phrase.

        Returns:
            The names of the streams that took it.

        Raises:
            ValueError: an unknown stream, or a phrase the engine rejects (nothing changes).
        """
        if key is None:
            targets = self.pipelines
        else:
            p = self.by_key(key)
            if p is None:
                raise ValueError(f"no stream {key!r}; streams: {', '.join(self.names)}")
            targets = [p]
        states: dict[int, Any] = {}  # encoded once per engine, before any stream changes
        for p in targets:
            engine = p.segmenter.engine
            if id(engine) not in states:
                states[id(engine)] = engine.encode_text(text)
        for p in targets:
            p.segmenter.use_text(states[id(p.segmenter.engine)])
            logger.info("stream %s: phrase set to %r", p.name, p.segmenter.phrase)
        return [str(p.name) for p in targets]

    @property
    def names(self) -> list[str]:
        """The streams' names, in order."""
        return [str(p.name) for p in self.pipelines]

    def summary(self) -> dict[str, Any]:
        """``{"streams": [each pipeline's summary], "total": total_summary(...)}``."""
        streams = []
        for p in self.pipelines:
            s = p.summary()
            if p.name in self.errors:
                s["error"] = repr(self.errors[p.name])
            streams.append(s)
        return {"streams": streams, "total": total_summary(self.pipelines, streams)}


def build_streams(
    engine: Engine,
    sources: Sequence[Source],
    phrases: Sequence[str],
    files: Sequence[RunFiles],
    *,
    session: SessionOptions,
    names: Sequence[str | None],
    hud: bool = True,
    max_frames: int | None = None,
) -> StreamGroup:
    """One session and pipeline per source, all on ``engine``, each writing its own files.

    Args:
        engine: The one engine every stream shares.
        sources: Opened sources, one per stream.
        phrases: Each stream's phrase.
        files: Each stream's :class:`~engine.runfiles.RunFiles`.
        session: The session settings every stream uses.
        names: Each stream's name (``[None]`` for a single unnamed stream).
        hud: Draw the statistics on the frames.
        max_frames: Stop each stream after this many frames.

    Raises:
        ValueError: a phrase is rejected (empty, too long, ...); the message says which stream.
    """
    segmenters = []
    for phrase, name in zip(phrases, names, strict=True):  # every phrase before any file opens
        segmenter = session.segmenter(engine)
        try:
            segmenter.set_phrase(phrase)
        except ValueError as exc:
            raise ValueError(f"{exc} (stream {name})" if name else str(exc)) from exc
        segmenters.append(segmenter)
    pipelines = [
        Pipeline(source, segmenter, outputs=out.open_outputs(fps=source.fps or 25.0), hud=hud,
                 max_frames=max_frames, name=name)
        for source, segmenter, out, name in zip(sources, segmenters, files, names, strict=True)
    ]  # fmt: skip
    return StreamGroup(pipelines)


def total_summary(pipelines: Sequence[Pipeline], streams: Sequence[dict[str, Any]]) -> dict:
    """What the streams did together.

    ``fps``: frames per second over all streams (the sum); ``fps_per_stream``: min / mean;
    ``stages_ms``: percentiles over every frame of every stream (one pool, not a mean of
    percentiles); ``frames``, ``dropped``, ``reconnects``: sums; ``failed``: streams that failed.
    """
    pooled = {
        s: percentiles(np.concatenate([np.asarray(p.stats.values(s)) for p in pipelines]))
        for s in STAGES
    }
    fps = [float(s["fps"]) for s in streams]
    return {
        "streams": len(streams),
        "frames": int(sum(s["frames"] for s in streams)),
        "fps": float(sum(fps)),
        "fps_per_stream": {"min": min(fps), "mean": float(np.mean(fps))},
        "stages_ms": pooled,
        "dropped": int(sum(s.get("dropped", 0) for s in streams)),
        "reconnects": int(sum(s.get("reconnects", 0) for s in streams)),
        "failed": [s.get("stream") for s in streams if "error" in s],
    }


def format_streams_table(summary: dict[str, Any]) -> str:
    """One row per stream and a total row: frames, fps, capture -> overlay p50/p95, dropped."""

    def ms(p: dict[str, Any], key: str) -> str:
        v = p.get(key)
        return f"{v:8.1f}" if isinstance(v, int | float) and v == v else f"{'-':>8}"

    head = f"{'stream':<24}{'frames':>8}{'fps':>8}{'e2e p50':>9}{'e2e p95':>9}{'dropped':>9}"
    rows = [head, "-" * len(head)]
    for s in summary["streams"]:
        e2e = s["stages_ms"]["end_to_end"]
        name = str(s.get("stream") or s.get("source"))[:23]
        flag = "  FAILED" if "error" in s else ""
        rows.append(f"{name:<24}{s['frames']:>8}{s['fps']:>8.1f}{ms(e2e, 'p50')}"
                    f"{ms(e2e, 'p95')}{s.get('dropped', 0):>9}{flag}")  # fmt: skip
    t = summary["total"]
    e2e = t["stages_ms"]["end_to_end"]
    rows.append("-" * len(head))
    rows.append(f"{'total (' + str(t['streams']) + ' streams)':<24}{t['frames']:>8}{t['fps']:>8.1f}"
                f"{ms(e2e, 'p50')}{ms(e2e, 'p95')}{t['dropped']:>9}")  # fmt: skip
    return "\n".join(rows)
