"""The Gradio page: a phrase box, a live webcam panel and a video-upload panel.

Per-user state lives only in each browser session: the phrase, engine and threshold are that
session's component values, and the live segmenter (previous frame, encoded phrase, statistics)
is a :class:`app.processing.LiveSession` in the session's own ``gr.State``. Uploaded clips get a
fresh segmenter per request. Only the loaded engines are shared (:class:`app.engines.SharedEngine`
serialises their use).

API names (for ``gradio_client``): ``/segment_video`` (video, phrase, engine, threshold[,
keyframes] -> overlay video, masks zip, latency plot, summary) and ``/live`` (frame, phrase,
engine, threshold[, keyframes] -> overlay frame, statistics; the webcam stream) and
``/segment_frame`` (the same per-session step, one request per frame, for clients that do not
stream). ``keyframes`` is one of :data:`app.validation.KEYFRAME_CHOICES` (default every frame).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

from app.engines import EngineRegistry, EngineUnavailableError
from app.examples import Example
from app.processing import LiveSession, segment_clip
from app.validation import (
    KEYFRAME_CHOICES,
    UploadLimits,
    check_backend,
    check_keyframes,
    check_phrase,
    check_threshold,
    check_video,
    describe_phrase,
)
from engine.instances import DEFAULT_EVERY, InstanceEvidence
from engine.latency import bottleneck_line
from engine.outputs import FFmpegError
from engine.session import Segmenter

__all__ = ["LiveSettings", "build_app"]

logger = logging.getLogger(__name__)

#: Request folders older than this are deleted when a new request starts.
REQUEST_TTL_S = 3600.0


class LiveSettings:
    """How the webcam stream is driven.

    Args:
        stream_every: Seconds between frames the browser sends.
        time_limit: Seconds one webcam stream may run before it stops.
        concurrency_limit: Streams processed at the same time (all sessions together).
    """

    def __init__(
        self, *, stream_every: float = 0.1, time_limit: int = 300, concurrency_limit: int = 2
    ) -> None:
        if not stream_every > 0 or time_limit < 1 or concurrency_limit < 1:
            raise ValueError(
                "stream_every must be > 0, time_limit and concurrency_limit >= 1; got "
                f"{stream_every}, {time_limit}, {concurrency_limit}"
            )
        self.stream_every = float(stream_every)
        self.time_limit = int(time_limit)
        self.concurrency_limit = int(concurrency_limit)


def _purge_old(root: Path, max_age_s: float) -> None:
    now = time.time()
    for child in root.iterdir():
        try:
            if child.is_dir() and now - child.stat().st_mtime > max_age_s:
                shutil.rmtree(child, ignore_errors=True)
        except OSError:  # raced with another request
            continue


def stages_markdown(summary: dict[str, Any]) -> str:
    """The stage table of a latency summary, in Markdown.

    Work p50/p95 and queue wait p50 per stage, and the bottleneck: the same names and numbers as
    the CLI's table and its stats JSON.
    """
    rows = ["| stage | work p50 ms | work p95 ms | wait p50 ms |", "|---|---:|---:|---:|"]
    waits = summary.get("wait_ms", {})
    for stage, p in summary["stages_ms"].items():
        if p["p50"] is None or p["p50"] != p["p50"]:  # nothing recorded yet
            continue
        wait = (waits.get(stage) or {}).get("p50")
        cell = f"{wait:.1f}" if wait is not None and wait == wait else "–"
        rows.append(f"| {stage} | {p['p50']:.1f} | {p['p95']:.1f} | {cell} |")
    return "\n".join([*rows, "", bottleneck_line(summary.get("bottleneck"))])


def clip_markdown(summary: dict[str, Any]) -> str:
    """The short table of a processed clip (its full JSON is the download beside it)."""
    score = summary["score"]
    head = (
        f"**{summary['frames']} frames** at {summary['processing_fps']:.1f} fps · "
        f"`{summary['backend']}` {summary['input_size'][0]}x{summary['input_size'][1]} · "
        f"found in {score['frames_found']} of {summary['frames']} frames"
        f" (mean score {score['mean_when_found']:.2f})"
    )
    if summary.get("keyframes", "1") != "1":
        head += (
            f" · network on {summary['frames_inferred']} of {summary['frames']} frames "
            f"(keyframes {summary['keyframes']}; the flow moved the mask on the others)"
        )
    return "\n".join([head, "", stages_markdown(summary)])


def _close_session(session: LiveSession | None) -> None:
    """Gradio deletes a closed tab's state: stop its session's detector thread."""
    if session is not None:
        session.close()


def _stats_markdown(session: LiveSession) -> str:
    result = session.last_result
    found = "" if result is None else (
        f" · score {result.score:.2f}" if result.found else " · **not found**"
    )  # fmt: skip
    if result is not None and result.prior_conf is not None:  # a grounding-prior model
        found += f" · prior {result.prior_conf:.2f}"
    if result is not None and not session.keyframes.always:
        found += " · network ran" if result.inferred else " · warped by the flow"
    head = (
        f"**{session.stats.fps():.1f} fps** · dropped {session.dropped} · "
        f"`{session.engine.backend}` {session.engine.input_size[0]}x{session.engine.input_size[1]}"
        f"{found}"
    )
    return "\n".join(
        [
            head,
            "",
            stages_markdown(session.stats.summary()),
            f'\nphrase: "{session.segmenter.phrase}"',
        ]
    )


def build_app(
    registry: EngineRegistry,
    *,
    limits: UploadLimits,
    examples: Sequence[Example] = (),
    work_root: Path,
    live: LiveSettings | None = None,
    video_concurrency: int = 1,
) -> gr.Blocks:
    """Build the page (not launched).

    Args:
        registry: The shared engines.
        limits: Upload limits.
        examples: Example clips with their phrases.
        work_root: Folder for per-request files (uploads' safe copies, results).
        live: Webcam stream settings.
        video_concurrency: Uploaded clips processed at the same time.

    Returns:
        The ``gr.Blocks``; launch it with ``theme``/``css`` passed to ``launch()`` (Gradio 6).
    """
    live = live or LiveSettings()
    work_root.mkdir(parents=True, exist_ok=True)

    def segment_video(
        video: str | None,
        phrase: str,
        backend: str,
        threshold: float,
        keyframes: str = "every frame",
        progress: gr.Progress = gr.Progress(),  # noqa: B008 - Gradio injects it per call
    ) -> tuple[str, str, np.ndarray, str, str]:
        _purge_old(work_root, REQUEST_TTL_S)
        workdir = Path(tempfile.mkdtemp(prefix="req-", dir=work_root))
        try:
            text = check_phrase(phrase, max_chars=registry.max_chars)
            backend = check_backend(backend, choices=registry.backends)
            threshold = check_threshold(threshold)
            policy = check_keyframes(keyframes)
            info = check_video(video, limits=limits, workdir=workdir / "in")
            progress(0.0, desc="loading the engine")
            segmenter = Segmenter(registry.get(backend), threshold=threshold, keyframes=policy,
                                  instances=InstanceEvidence(every=DEFAULT_EVERY))  # fmt: skip
            segmenter.set_phrase(text)
            result = segment_clip(
                info,
                segmenter,
                out_dir=workdir / "out",
                max_frames=limits.max_frames,
                progress=lambda done, total: progress(
                    (done, total or None), desc="segmenting", unit="frames"
                ),
            )
        except (ValueError, EngineUnavailableError, FFmpegError) as exc:
            shutil.rmtree(workdir, ignore_errors=True)
            logger.info("segment_video rejected: %s", exc)
            raise gr.Error(
                str(exc), title="Cannot segment this video", print_exception=False
            ) from None
        finally:
            shutil.rmtree(workdir / "in", ignore_errors=True)
        return (
            str(result.video),
            str(result.masks),
            result.plot,
            clip_markdown(result.summary),
            str(result.summary_file),
        )

    def live_step(
        frame: np.ndarray | None,
        phrase: str,
        backend: str,
        threshold: float,
        session: LiveSession | None,
        keyframes: str = "every frame",
    ) -> tuple[Any, str, LiveSession | None]:
        if frame is None:
            return gr.skip(), "Waiting for the webcam...", session
        try:
            backend = check_backend(backend, choices=registry.backends)
            threshold = check_threshold(threshold)
            policy = check_keyframes(keyframes)
            engine = registry.get(backend)
            if (
                session is None
                or session.engine is not engine
                or session.threshold != threshold
                or session.keyframes != policy
            ):
                previous = session.segmenter.phrase if session is not None else None
                if session is not None:
                    session.close()  # its detector thread; the new session has its own
                session = LiveSession(engine, threshold=threshold, keyframes=policy)
                if previous:
                    session.set_phrase(previous)
        except (ValueError, EngineUnavailableError) as exc:
            return frame, f"**Not segmenting:** {exc}", session
        rejected = None
        try:
            session.set_phrase(check_phrase(phrase, max_chars=registry.max_chars))
        except ValueError as exc:  # the stream keeps its last valid phrase, if it has one
            if session.segmenter.phrase is None:
                return frame, f"**Not segmenting:** {exc}", session
            rejected = f'**Phrase not used:** {exc}; still segmenting "{session.segmenter.phrase}"'
        try:
            out = session.step(frame)
        except ValueError as exc:
            return gr.skip(), f"**Not segmenting:** {exc}", session
        if out is None:  # the previous frame of this session is still being processed
            return gr.skip(), gr.skip(), session
        stats = _stats_markdown(session)
        return out, f"{rejected}\n\n{stats}" if rejected else stats, session

    def typed(text: str) -> tuple[str, Any]:
        usable, message = describe_phrase(
            text,
            tokenizer=registry.tokenizer,
            max_tokens=registry.config.text.max_tokens,
            max_chars=registry.max_chars,
        )
        return message, gr.update(interactive=usable)

    limits_text = (
        f"Uploads: at most {limits.max_mb:g} MB, {limits.max_seconds:g} s and "
        f"{limits.max_frames} frames, {limits.max_side} px per side."
    )
    with gr.Blocks(title="HINet-stream", delete_cache=(3600, 3600)) as demo:
        gr.Markdown(
            "# HINet-stream\nType what to segment (a referring expression such as "
            '*"the person in red"*, *"the car on the left"*), then stream your webcam or upload a video.\n\n'
            f"{registry.trained_on}"
        )
        with gr.Row():
            phrase = gr.Textbox(
                label="Phrase",
                placeholder="the red car turning left",
                max_length=registry.max_chars,
                scale=4,
                elem_id="phrase",
            )
            phrase_help = gr.Markdown(
                "Type what to segment, e.g. *the red car on the left*.", elem_id="phrase-help"
            )
            backend = gr.Dropdown(
                choices=list(registry.backends),
                value=registry.default,
                label="Engine",
                scale=1,
                elem_id="engine",
            )
            threshold = gr.Slider(
                0.05, 0.95, value=0.5, step=0.05, label="Mask threshold", scale=2,
                elem_id="threshold",
            )  # fmt: skip
            keyframes = gr.Dropdown(
                choices=list(KEYFRAME_CHOICES), value="every frame", label="Network runs on",
                scale=2, elem_id="keyframes",
            )  # fmt: skip
        with gr.Tabs():
            with gr.Tab("Video file", id="video"):
                with gr.Row():
                    with gr.Column():
                        # format="mp4": the preview of an .avi, .mkv, ... upload is converted
                        # so the browser can play it (the segmentation reads the original)
                        video_in = gr.Video(
                            sources=["upload"], label="Video", format="mp4", elem_id="video-in"
                        )
                        run = gr.Button(
                            "Segment video", variant="primary", interactive=False, elem_id="run"
                        )
                        if examples:
                            gr.Examples(
                                examples=[[str(e.video), e.phrase] for e in examples],
                                inputs=[video_in, phrase],
                                example_labels=[e.label for e in examples],
                                label="Examples",
                            )
                        gr.Markdown(
                            f"{limits_text} The masks come as a zip of PNGs, one per frame "
                            "(`mask_00000.png`, ...; 0 background, 255 object)."
                        )
                    with gr.Column():
                        video_out = gr.Video(
                            label="Segmented video", interactive=False, elem_id="video-out"
                        )
                        masks_out = gr.File(label="Masks (zip of PNGs)", elem_id="masks-out")
                with gr.Row():
                    plot_out = gr.Image(
                        label="Latency per frame", show_label=False, format="png",
                        interactive=False, scale=3, elem_id="latency-plot",
                    )  # fmt: skip
                    with gr.Column(scale=2):
                        summary_out = gr.Markdown(elem_id="summary")
                        summary_file = gr.File(label="Summary (JSON)", elem_id="summary-json")
            with gr.Tab("Webcam (live)", id="webcam"):
                session = gr.State(None, delete_callback=_close_session)
                with gr.Row():
                    cam = gr.Image(
                        sources=["webcam"], streaming=True, label="Webcam", elem_id="webcam-in"
                    )
                    cam_out = gr.Image(label="Segmented", elem_id="webcam-out")
                cam_stats = gr.Markdown(
                    "Start the webcam to see fps and latency here.", elem_id="webcam-stats"
                )
                # The same per-session step as one request per frame, for API clients
                # (gradio_client does not speak the streaming protocol); not shown on the page.
                one_frame = gr.Button("Segment one frame", visible=False)
        run.click(
            segment_video,
            inputs=[video_in, phrase, backend, threshold, keyframes],
            outputs=[video_out, masks_out, plot_out, summary_out, summary_file],
            api_name="segment_video",
            concurrency_limit=video_concurrency,
        )
        phrase.change(typed, inputs=[phrase], outputs=[phrase_help, run], show_progress="hidden")
        cam.stream(
            live_step,
            inputs=[cam, phrase, backend, threshold, session, keyframes],
            outputs=[cam_out, cam_stats, session],
            api_name="live",
            stream_every=live.stream_every,
            time_limit=live.time_limit,
            concurrency_limit=live.concurrency_limit,
            show_progress="hidden",
        )
        one_frame.click(
            live_step,
            inputs=[cam, phrase, backend, threshold, session, keyframes],
            outputs=[cam_out, cam_stats, session],
            api_name="segment_frame",
            concurrency_limit=live.concurrency_limit,
            show_progress="hidden",
        )
    return demo
