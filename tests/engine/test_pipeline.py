"""The pipeline (threaded and sequential), its outputs, overlay drawing, latency stats and the
run_stream CLI.

Everything runs a real engine (torch backend, real tiny HINet checkpoint) on real video files
or the shipped demo clip.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

import run_stream
from engine.capture import open_source
from engine.demo import demo_clip
from engine.latency import (
    KEYS,
    STAGES,
    WAIT_STAGES,
    LatencyStats,
    Stamps,
    format_table,
    json_safe,
)
from engine.outputs import CallbackOutput, MaskFolderOutput, VideoFileOutput
from engine.overlay import (
    OverlayStyle,
    draw_hud_inplace,
    draw_mask,
    hud_lines,
    mask_to_png_bytes,
    result_lines,
)
from engine.pipeline import Pipeline
from engine.session import Result, Segmenter
from engine.sources import FileSource, PacedSource, Source
from engine.window import WindowDisplay

ROOT = Path(__file__).resolve().parents[2]
PHRASE_A = "the red circle"
PHRASE_B = "a big yellow star moving right"


class Collector:
    """Collects (frame index, frame image, result, composed image) in the output stage, and
    the monotonic time each frame reached the sink."""

    def __init__(self) -> None:
        self.items: list = []
        self.arrived: list[float] = []

    def __call__(self, image, result, frame) -> None:
        self.arrived.append(time.monotonic())
        self.items.append((frame.index, frame.image, result, image))


def make_segmenter(engine, phrase: str = PHRASE_A, **kwargs) -> Segmenter:
    seg = Segmenter(engine, **kwargs)
    seg.set_phrase(phrase)
    return seg


def sequential_probs(engine, video, phrase) -> list[np.ndarray]:
    seg = make_segmenter(engine, phrase)
    with FileSource(video) as src:
        return [seg.step(f).prob for f in src]


# -- files: every frame, in order, the same numbers as the session -----------------------------------
@pytest.mark.timeout(120)
def test_file_every_frame_in_order_with_outputs(engine, video_file, tmp_path, frame_code) -> None:
    col = Collector()
    video_out = VideoFileOutput(tmp_path / "out.mp4", fps=25)
    masks = MaskFolderOutput(tmp_path / "masks")
    pipe = Pipeline(
        open_source(str(video_file)),
        make_segmenter(engine),
        outputs=[video_out, masks, CallbackOutput(col)],
    )
    summary = pipe.run()
    n = 39
    assert [i for i, *_ in col.items] == list(range(n))
    assert [frame_code(img) for _, img, _, _ in col.items] == list(range(n))
    assert summary["frames"] == summary["written"] == summary["captured"] == n
    assert summary["dropped"] == 0 and pipe.dropped == 0
    assert not pipe.running
    # the mask PNG sequence holds exactly the masks
    pngs = sorted((tmp_path / "masks").glob("*.png"))
    assert len(pngs) == n
    for path, (_, _, result, _) in zip(pngs[::10], col.items[::10]):
        np.testing.assert_array_equal(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) > 127,
                                      result.mask)  # fmt: skip
    # the overlay video is a real, readable file of the same length and size
    cap = cv2.VideoCapture(str(tmp_path / "out.mp4"))
    count = 0
    while cap.read()[0]:
        count += 1
    assert count == n
    # frames this small get the HUD on a bar below them, so the video is taller than the source
    w, h = cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)
    assert w == 160 and h == col.items[0][3].shape[0] > 120
    # every stage was stamped once, from the one clock: the sinks see exactly the times the
    # statistics recorded, and end_to_end is the real time from capture to the finished image
    # (measured here, outside the pipeline, when the sink is called)
    for i, (_, _, result, _) in enumerate(col.items):
        assert set(result.timings) == set(KEYS)
        for stage in KEYS:
            assert result.timings[stage] == pipe.stats.values(stage)[i]
        waited = (col.arrived[i] - result.capture_time) * 1e3
        assert 0 < result.timings["end_to_end"] <= waited < result.timings["end_to_end"] + 50


@pytest.mark.timeout(300)
@pytest.mark.parametrize("mode", ["threaded", "sequential"])
def test_pipeline_runs_the_session_code(any_engine, video_file, mode) -> None:
    """Both modes give a plain ``step`` loop's results, frame by frame, with the same stages."""
    col = Collector()
    summary = Pipeline(open_source(str(video_file)), make_segmenter(any_engine),
                       outputs=[CallbackOutput(col)], mode=mode).run()  # fmt: skip
    ref = sequential_probs(any_engine, video_file, PHRASE_A)
    assert len(col.items) == len(ref) == summary["written"]
    assert summary["mode"] == mode and set(summary["stages_ms"]) == set(STAGES)
    assert set(summary["wait_ms"]) == set(WAIT_STAGES) and summary["bottleneck"]["stage"]
    for (_, _, result, _), prob in zip(col.items, ref):
        np.testing.assert_allclose(result.prob, prob, atol=1e-5)
        assert set(result.timings) == set(KEYS)


def test_sequential_mode_runs_in_the_callers_thread(engine, video_file) -> None:
    threads: set[str] = set()
    pipe = Pipeline(open_source(str(video_file)), make_segmenter(engine), mode="sequential",
                    max_frames=5,
                    outputs=[CallbackOutput(lambda *a: threads.add(threading.current_thread().name))])  # fmt: skip
    assert pipe.run()["written"] == 5
    assert threads == {threading.current_thread().name}
    with pytest.raises(ValueError, match="valid: threaded, sequential"):
        Pipeline(open_source(str(video_file)), make_segmenter(engine), mode="parallel")


@pytest.mark.timeout(300)
def test_bikes_every_frame(engine, bikes_video) -> None:
    col = Collector()
    summary = Pipeline(open_source(str(bikes_video)), make_segmenter(engine), hud=False,
                       outputs=[CallbackOutput(col)]).run()  # fmt: skip
    assert [i for i, *_ in col.items] == list(range(250))
    assert summary["dropped"] == 0
    assert col.items[0][2].mask.shape == (272, 640)


# -- phrase change while running ---------------------------------------------------------------------
@pytest.mark.timeout(120)
def test_phrase_change_mid_stream(engine, video_file) -> None:
    col = Collector()
    pipe = Pipeline(open_source(str(video_file)), make_segmenter(engine, PHRASE_A))

    def output(image, result, frame) -> None:
        col(image, result, frame)
        if frame.index == 10:
            pipe.set_phrase(PHRASE_B)  # from another thread, while frames are in flight

    pipe.outputs.append(CallbackOutput(output))
    pipe.run()
    phrases = [r.phrase for _, _, r, _ in col.items]
    switch = phrases.index(PHRASE_B)
    assert 10 < switch <= 10 + 3 * 2 + 2  # applied from the next inferred frame
    assert phrases == [PHRASE_A] * switch + [PHRASE_B] * (len(phrases) - switch)
    ref_a = sequential_probs(engine, video_file, PHRASE_A)
    ref_b = sequential_probs(engine, video_file, PHRASE_B)
    for i, (_, _, r, _) in enumerate(col.items):
        np.testing.assert_allclose(r.prob, (ref_a if i < switch else ref_b)[i], atol=1e-5)
    assert not np.allclose(ref_a[switch], ref_b[switch])  # the change is visible


def test_bad_phrase_while_running_keeps_previous(engine) -> None:
    pipe = Pipeline(open_source("demo"), make_segmenter(engine), max_frames=30)
    with pipe.start():
        with pytest.raises(ValueError):
            pipe.set_phrase("   ")
        assert pipe.wait(timeout=60)
    assert pipe.segmenter.phrase == PHRASE_A


# -- errors, shutdown -----------------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_worker_exception_is_reraised(engine, video_file) -> None:
    def boom(image, result, frame) -> None:
        if frame.index == 5:
            raise RuntimeError("disk full")

    pipe = Pipeline(open_source(str(video_file)), make_segmenter(engine),
                    outputs=[CallbackOutput(boom)])  # fmt: skip
    with pytest.raises(RuntimeError, match="disk full"):
        pipe.run()
    assert not pipe.running


class BlockingSource(Source):
    """A source whose read() blocks forever, ignoring close (a hung driver)."""

    name = "blocks forever"
    live = True

    def read(self, timeout: float = 1.0):
        threading.Event().wait()


@pytest.mark.timeout(60)
def test_shutdown_never_hangs_on_blocked_source(engine) -> None:
    pipe = Pipeline(BlockingSource(), make_segmenter(engine), join_timeout=0.5).start()
    time.sleep(0.2)
    t0 = time.monotonic()
    pipe.stop()
    elapsed = time.monotonic() - t0
    assert elapsed < 10, f"stop took {elapsed:.1f} s"
    alive = [t.name for t in pipe._threads if t.is_alive()]
    assert alive == ["capture"]  # only the thread stuck in the driver is abandoned (daemon)


@pytest.mark.timeout(60)
def test_ctrl_c_stops_cleanly(engine, video_file) -> None:
    """A real SIGINT, as Ctrl-C sends it, with Python's own handler installed for the test.

    (``_thread.interrupt_main`` was not delivered in one full-suite order on CI; a real signal
    is what a user's terminal sends anyway.)
    """
    pipe = Pipeline(open_source(str(video_file), loop=True), make_segmenter(engine))
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(1.0, os.kill, args=(os.getpid(), signal.SIGINT))
    timer.start()
    try:
        summary = pipe.run()
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)
    assert summary["interrupted"] is True
    assert summary["frames"] > 0
    assert not pipe.running


def test_start_rules(engine, video_file) -> None:
    with pytest.raises(ValueError, match="set a phrase"):
        Pipeline(open_source(str(video_file)), Segmenter(engine)).start()
    with pytest.raises(ValueError, match="max_frames"):
        Pipeline(open_source(str(video_file)), make_segmenter(engine), max_frames=0)
    with Pipeline(open_source(str(video_file)), make_segmenter(engine), max_frames=3) as pipe:
        assert pipe.start() is pipe
        with pytest.raises(RuntimeError, match="already started"):
            pipe.start()
        assert pipe.wait(timeout=60)
    assert not pipe.running and pipe.written == 3


# -- live behaviour: drops at the source, newest frame wins, bounded queues ---------------------------
@pytest.mark.timeout(60)
def test_live_source_drops_instead_of_queueing(engine, video_file) -> None:
    src = PacedSource(
        FileSource(video_file, loop=True), 1000.0, drop=True
    )  # faster than the engine
    sizes: list[int] = []
    col = Collector()
    pipe = Pipeline(src, make_segmenter(engine), max_frames=40)

    def output(image, result, frame) -> None:
        col(image, result, frame)
        sizes.append(max(q.qsize() for q in pipe._queues))

    pipe.outputs.append(CallbackOutput(output))
    summary = pipe.run()
    idx = [i for i, *_ in col.items]
    assert idx == sorted(set(idx))
    assert summary["dropped"] > 0 and idx[-1] + 1 > len(idx)
    assert max(sizes) <= 1  # live sources use single-slot queues


class _Slow(Segmenter):
    """A real segmenter whose flow or inference stage takes at least ``delay`` seconds (a slow
    machine), so frames pile up in front of it."""

    def __init__(self, engine, *, stage: str, delay: float) -> None:
        super().__init__(engine)
        self.stage, self.delay = stage, delay

    def prepare(self, frame):
        if self.stage == "flow":
            time.sleep(self.delay)
        return super().prepare(frame)

    def infer(self, prepared):
        if self.stage == "inference":
            time.sleep(self.delay)
        return super().infer(prepared)


def _live_run(engine, video_file, stage: str, delay: float) -> list[dict[str, float]]:
    seg = _Slow(engine, stage=stage, delay=delay)
    seg.set_phrase(PHRASE_A)
    col = Collector()
    src = PacedSource(FileSource(video_file, loop=True), 200.0, drop=True)  # a new frame every 5 ms
    with Pipeline(src, seg, hud=False, outputs=[CallbackOutput(col)]).start() as pipe:
        deadline = time.monotonic() + 60
        while len(col.items) < 18 and time.monotonic() < deadline:
            pipe.wait(timeout=0.1)
    return [r.timings for _, _, r, _ in col.items[3:]]  # past the start-up


@pytest.mark.timeout(120)
def test_capture_stage_hands_on_the_newest_frame(engine, video_file) -> None:
    """With a slow flow stage, the frame it picks up was captured just now: a frame that waited
    in the capture queue was replaced by a newer one ("newest wins"), never queued behind."""
    times = _live_run(engine, video_file, "flow", 0.08)
    waits = [t["flow_wait"] for t in times]  # capture -> flow start
    work = [t["flow"] for t in times]  # the slow stage: >= 80 ms
    # Newest wins: the frame waited at most about one source period (5 ms) plus scheduling.
    # Queued behind (a blocking put): it would wait a whole flow stage or more. A ratio to the
    # stage's own work, so a busy machine (which slows both) does not change the verdict.
    assert np.median(waits) < 0.5 * np.median(work), (waits, work)


@pytest.mark.timeout(120)
def test_flow_stage_hands_on_the_newest_frame(engine, video_file) -> None:
    """With a slow inference stage, the frame it picks up left the flow stage just now."""
    times = _live_run(engine, video_file, "inference", 0.08)
    waits = [t["inference_wait"] for t in times]  # flow end -> inference start
    work = [t["inference"] for t in times]  # the slow stage: >= 80 ms
    # Newest wins: the prepared frame waits at most one flow step (a few ms).
    # Queued behind: it waits for the whole previous inference too (>= 80 ms).
    assert np.median(waits) < 0.5 * np.median(work), (waits, work)


@pytest.mark.timeout(120)
def test_paced_file_never_drops_and_writes_exactly_max_frames(engine) -> None:
    """The demo played like a camera (and any file): a slow consumer still gets every frame."""
    seg = _Slow(engine, stage="inference", delay=0.03)
    seg.set_phrase(PHRASE_A)
    col = Collector()
    src = open_source("demo", pace=100.0)  # faster than this consumer
    summary = Pipeline(src, seg, max_frames=25, outputs=[CallbackOutput(col)]).run()
    assert summary["written"] == summary["captured"] == 25 and summary["dropped"] == 0
    assert [i for i, *_ in col.items] == list(range(25))


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _soak(engine, frames: int, bound_mb: float) -> dict:
    src = open_source("demo")  # unpaced: every frame goes through
    samples: dict[int, float] = {}
    sizes: list[int] = []
    pipe = Pipeline(src, make_segmenter(engine, smoothing=0.3), max_frames=frames)

    def output(image, result, frame) -> None:
        if frame.index in (100, frames - 1):
            samples[frame.index] = rss_mb()
        if frame.index % 50 == 0:
            sizes.append(max(q.qsize() for q in pipe._queues))

    pipe.outputs.append(CallbackOutput(output))
    summary = pipe.run()
    growth = samples[frames - 1] - samples[100]
    print(f"soak {frames} frames: RSS {samples[100]:.1f} -> {samples[frames - 1]:.1f} MB "
          f"(+{growth:.1f}), {summary['fps']:.0f} fps")  # fmt: skip
    assert summary["frames"] == frames and summary["dropped"] == 0
    assert max(sizes) <= 2  # file-like source: 2-slot queues, never more
    assert growth < bound_mb
    return summary


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_soak_10k_frames_bounded_memory(onnx_engine) -> None:
    """10 000 frames of the real demo clip, unpaced, through every stage (ONNX Runtime: the
    product's default backend, and 3x faster than torch eager on this tiny network)."""
    _soak(onnx_engine, 10_000, bound_mb=30.0)


# -- HUD, display keys ------------------------------------------------------------------------------------
def test_hud_is_drawn_on_the_video(engine, video_file) -> None:
    """A 640x480 frame gets the HUD panel in its corner; the rest is the plain overlay."""
    plain, hud = Collector(), Collector()
    for col, flag in ((plain, False), (hud, True)):
        src = open_source(str(video_file))
        big = _Resized(src, (640, 480))
        Pipeline(big, make_segmenter(engine), hud=flag, max_frames=6,
                 outputs=[CallbackOutput(col)], mode="sequential").run()  # fmt: skip
    _, img, result, composed = plain.items[-1]
    np.testing.assert_array_equal(composed, draw_mask(img, result.shown_mask))
    hud_img = hud.items[-1][3]
    assert hud_img.shape == composed.shape
    assert not np.array_equal(hud_img[:40, :80], composed[:40, :80])  # the panel
    np.testing.assert_array_equal(hud_img[-200:, -300:], composed[-200:, -300:])


@pytest.mark.parametrize("size", [(176, 144), (320, 240)])
def test_hud_goes_below_a_small_picture_and_leaves_it_whole(engine, video_file, size) -> None:
    """On a 176x144 clip the panel covered 40 % of the picture: small frames get a bar below
    it instead, of one height for every frame (a video file has one frame size)."""
    col = Collector()
    src = _Resized(open_source(str(video_file)), size)
    Pipeline(src, make_segmenter(engine), hud=True, max_frames=8,
             outputs=[CallbackOutput(col)], mode="sequential").run()  # fmt: skip
    w, h = size
    shapes = {item[3].shape for item in col.items}
    assert len(shapes) == 1
    (shape,) = shapes
    assert shape[1] == w and shape[0] > h
    for _, img, result, composed in col.items:
        np.testing.assert_array_equal(composed[:h], draw_mask(img, result.shown_mask))
        assert composed[h:].max() == 255  # white text on the bar


class _Resized:
    """A source whose frames are resized to ``size`` (w, h)."""

    def __init__(self, source, size) -> None:
        self.source, self.size = source, size

    def __getattr__(self, name):
        return getattr(self.source, name)

    def read(self, timeout: float = 1.0):
        frame = self.source.read(timeout)
        if frame is None:
            return None
        return dataclasses.replace(frame, image=cv2.resize(frame.image, self.size))


def test_window_keys() -> None:
    d = WindowDisplay()
    assert d.handle_key(-1) is None
    assert d.handle_key(ord("q")).kind == "quit"
    assert d.handle_key(27).kind == "quit"
    assert d.handle_key(ord("p")) is None and d.typing == ""
    for ch in "the dogx":
        d.handle_key(ord(ch))
    d.handle_key(8)  # backspace
    assert d.typing == "the dog"
    assert d.handle_key(ord("q")) is None  # q types while typing
    d.handle_key(8)
    action = d.handle_key(13)
    assert action.kind == "phrase" and action.phrase == "the dog" and d.typing is None
    d.handle_key(13)  # Enter also starts typing
    assert d.typing == ""
    assert d.handle_key(13) is None  # empty phrase is not submitted
    d.handle_key(ord("p"))
    d.handle_key(ord("x"))
    assert d.handle_key(27) is None and d.typing is None  # Esc cancels typing


# -- overlay drawing ---------------------------------------------------------------------------------------
def test_draw_mask_returns_new_blended_image() -> None:
    img = np.full((40, 50, 3), 100, np.uint8)
    mask = np.zeros((40, 50), bool)
    mask[10:30, 10:30] = True
    style = OverlayStyle(color=(0, 0, 255), opacity=0.5, outline=False)
    out = draw_mask(img, mask, style)
    assert out is not img and (img == 100).all()  # input untouched
    assert tuple(out[20, 20]) == (50, 50, 178)  # 100 * 0.5 + (0, 0, 255) * 0.5
    assert tuple(out[0, 0]) == (100, 100, 100)
    outlined = draw_mask(img, mask, OverlayStyle(color=(0, 255, 0), opacity=0.0))
    assert tuple(outlined[10, 20]) == (0, 255, 0)  # on the contour
    assert tuple(outlined[20, 20]) == (100, 100, 100)  # inside, no fill
    np.testing.assert_array_equal(draw_mask(img, np.zeros_like(mask)), img)


def test_overlay_errors() -> None:
    img = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="does not match"):
        draw_mask(img, np.zeros((4, 4), bool))
    with pytest.raises(ValueError, match="uint8"):
        draw_mask(img.astype(np.float32), np.zeros((8, 8), bool))
    for kwargs, match in [({"opacity": 1.5}, "opacity"), ({"color": (0, 0, 300)}, "color"),
                          ({"thickness": 0}, "thickness")]:  # fmt: skip
        with pytest.raises(ValueError, match=match):
            OverlayStyle(**kwargs)


def test_hud_and_png() -> None:
    img = np.full((120, 200, 3), 200, np.uint8)
    nan = float("nan")
    lines = hud_lines(fps=12.5, stage_ms={"flow": (1.0, 2.0), "inference": (nan, nan)},
                      dropped=3, bottleneck={"stage": "flow", "work_ms": 1.0, "max_fps": 1000.0})  # fmt: skip
    assert lines[0].strip().startswith("12.5 fps") and "dropped 3" in lines[0]
    assert lines[1].split() == ["flow", "1.0", "ms", "+2.0", "wait"]  # work, then queue wait
    assert not any("inference" in s for s in lines)  # nothing recorded yet: no row
    assert lines[-1] == "bottleneck flow: max 1000 fps"
    before = img.copy()
    assert draw_hud_inplace(img, lines) is None
    assert (img[:10, :10] < before[:10, :10]).all()  # darkened panel, in place
    mask = np.zeros((5, 7), bool)
    mask[1:3, 2:5] = True
    png = mask_to_png_bytes(mask)
    back = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(back, mask.astype(np.uint8) * 255)


def test_result_lines_say_not_found() -> None:
    mask = np.zeros((4, 4), bool)
    mask[:2, :2] = True
    prob = np.where(mask, 0.9, 0.1).astype(np.float32)
    found = Result(mask=mask, prob=prob, score=0.9, peak=0.9, found=True, frame_index=0,
                   capture_time=0.0, phrase="the dog")  # fmt: skip
    assert result_lines(found) == ['phrase: "the dog"', "score 0.90  area 25.0%"]
    lost = dataclasses.replace(found, score=0.55, found=False)
    assert result_lines(lost) == ['phrase: "the dog"', "not found (peak 0.90)"]
    doubted = dataclasses.replace(found, found=False, prior_conf=0.2)
    assert result_lines(doubted) == ['phrase: "the dog"', "not found (peak 0.90, prior 0.20)"]
    sure = dataclasses.replace(found, prior_conf=0.97)
    assert result_lines(sure) == ['phrase: "the dog"', "score 0.90  area 25.0%  prior 0.97"]
    assert not lost.shown_mask.any() and found.shown_mask.sum() == 4


# -- latency statistics -------------------------------------------------------------------------------------
def test_stamps_and_stats() -> None:
    s = Stamps(capture=1.0, read_start=0.99, flow_start=1.010, flow_end=1.012, infer_start=1.03,
               infer_end=1.05, overlay_start=1.055, overlay_end=1.06)  # fmt: skip
    d = s.durations_ms()
    assert d["capture"] == pytest.approx(10)  # the read
    assert d["flow_wait"] == pytest.approx(10) and d["flow"] == pytest.approx(2)
    assert d["inference_wait"] == pytest.approx(18) and d["inference"] == pytest.approx(20)
    assert d["overlay_wait"] == pytest.approx(5) and d["overlay"] == pytest.approx(5)
    assert d["end_to_end"] == pytest.approx(60)  # capture -> overlay drawn, waits included
    work = sum(d[k] for k in ("flow", "inference", "overlay"))
    waits = sum(d[k] for k in ("flow_wait", "inference_wait", "overlay_wait"))
    assert work + waits == pytest.approx(d["end_to_end"])
    assert Stamps(capture=1.0).durations_ms() == {}
    stats = LatencyStats(window=100)
    rng = np.random.default_rng(0)
    values = rng.gamma(2.0, 5.0, 300)
    for v in values:  # flow stages of v ms each
        stats.record(Stamps(capture=0.0, flow_start=0.0, flow_end=v / 1e3))
    p = stats.percentiles("flow")
    np.testing.assert_allclose([p["p50"], p["p95"], p["p99"]],
                               np.percentile(values[-100:], [50, 95, 99]))  # fmt: skip
    with pytest.raises(ValueError, match="valid"):
        stats.percentiles("decode")
    stats = LatencyStats(window=100)
    for k in range(10):
        stats.record(Stamps(capture=k * 0.1, read_start=k * 0.1, flow_start=k * 0.1, flow_end=k * 0.1,
                            infer_end=k * 0.1, overlay_end=k * 0.1 + 0.05))  # fmt: skip
    summary = stats.summary(dropped=2)
    assert summary["frames"] == 10 and summary["fps"] == pytest.approx(10.0)
    assert summary["dropped"] == 2
    table = format_table(summary)
    assert "end_to_end" in table and "dropped 2" in table
    assert json.loads(json.dumps(json_safe(stats.summary())))["stages_ms"]["capture"]["p50"] == 0


# -- the command line -------------------------------------------------------------------------------------
def _cli(*args: str) -> int:
    return run_stream.main(list(args))


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch) -> None:
    """Run every test from its own folder: a run's default ``runs/<name>/`` lands there."""
    monkeypatch.chdir(tmp_path)


def test_cli_exit_codes(tiny_checkpoint, video_file, tmp_path, capsys, free_port) -> None:
    common = ["--backend", "torch", "--checkpoint", str(tiny_checkpoint), "--no-display"]
    assert _cli(*common, "--source", "webcam") == run_stream.EXIT_UNKNOWN_SOURCE
    assert "accepted" in capsys.readouterr().err
    assert _cli(*common, "--source", "missing.mp4") == run_stream.EXIT_SOURCE_NOT_FOUND
    assert _cli(*common, "--source", "63") == run_stream.EXIT_CAMERA
    url = f"rtsp://127.0.0.1:{free_port()}/x"
    assert _cli(*common, "--source", url, "--phrase", "x") == run_stream.EXIT_STREAM
    assert "cannot open stream" in capsys.readouterr().err
    assert (
        _cli("--checkpoint", str(tmp_path / "none"), "--backend", "torch") == run_stream.EXIT_MODEL
    )
    (tmp_path / "empty").mkdir()
    assert (
        _cli("--checkpoint", str(tmp_path / "empty"), "--backend", "torch") == run_stream.EXIT_MODEL
    )
    assert "neither" in capsys.readouterr().err
    trt = ["--backend", "tensorrt", "--device", "cpu", "--checkpoint", str(tiny_checkpoint)]
    assert _cli(*trt, "--no-display") == run_stream.EXIT_ENGINE
    assert "tensorrt" in capsys.readouterr().err
    assert _cli(*common, "--source", str(video_file), "--phrase", " ") == run_stream.EXIT_PHRASE
    assert _cli(*common, "--source", str(video_file)) == run_stream.EXIT_USAGE  # no phrase
    with pytest.raises(SystemExit) as info:
        _cli("--size", "big")
    assert info.value.code == run_stream.EXIT_USAGE
    for flag in ("--min-score", "--min-prior"):
        with pytest.raises(SystemExit) as info:
            _cli(flag, "1.5")
        assert info.value.code == run_stream.EXIT_USAGE
        assert f"argument {flag}: must be in [0, 1)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("phrase", "why"),
    [
        ("   ", "empty"),
        ("the red\x07circle", "control character U+0007"),
        ("x" * 10_000, "10000 characters; the limit is 200"),
        ("the red c\u0430r", "mixes letters of Cyrillic, Latin"),
    ],
)
def test_cli_rejects_bad_phrases(tiny_checkpoint, video_file, capsys, phrase, why) -> None:
    code = _cli("--backend", "torch", "--checkpoint", str(tiny_checkpoint), "--no-display",
                "--source", str(video_file), "--phrase", phrase)  # fmt: skip
    assert code == run_stream.EXIT_PHRASE
    err = capsys.readouterr().err
    assert "phrase rejected" in err and why in err and "Traceback" not in err


@pytest.mark.timeout(120)
def test_cli_demo_uses_its_own_phrase(tiny_checkpoint, tmp_path) -> None:
    stats = tmp_path / "s.json"
    code = _cli("--backend", "torch", "--checkpoint", str(tiny_checkpoint), "--size", "64x64",
                "--no-display", "--max-frames", "6", "--pace", "0", "--stats-json", str(stats))  # fmt: skip
    assert code == run_stream.EXIT_OK
    data = json.loads(stats.read_text())
    assert data["frames"] == 6 and data["source"].startswith("demo")
    assert data["phrase"] == demo_clip().phrase


def test_cli_help_documents_exit_codes() -> None:
    text = run_stream.build_parser().format_help()
    for code in ("exit codes", "camera absent or busy", "stream URL", "model checkpoint"):
        assert code in text
    for flag in ("--source", "--phrase", "--backend", "--device", "--precision", "--size",
                 "--flow-preset", "--output", "--no-display", "--max-frames", "--stats-json",
                 "--checkpoint", "--masks-dir"):  # fmt: skip
        assert flag in text


def test_cli_broken_detector_files_are_a_model_error(
    tiny_checkpoint, video_file, tmp_path, monkeypatch, capsys
) -> None:
    """--instances with the detector's files missing: exit 7 naming the detector, not a phrase
    error, and no run folder left behind."""
    import engine.detector as detector

    monkeypatch.setattr(detector, "_DIR", tmp_path / "no_detector")
    code = _cli("--backend", "torch", "--checkpoint", str(tiny_checkpoint), "--size", "64x64",
                "--no-display", "--source", str(video_file), "--phrase", PHRASE_A, "--instances",
                "--out-dir", str(tmp_path / "run"))  # fmt: skip
    assert code == run_stream.EXIT_MODEL
    err = capsys.readouterr().err
    assert "instance detector unusable" in err and "missing" in err and "phrase" not in err
    assert not (tmp_path / "run").exists()


def test_cli_names_the_new_spelling_of_a_renamed_flag(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        _cli("--engine", "torch")
    assert info.value.code == run_stream.EXIT_USAGE
    assert "--engine is now --backend" in capsys.readouterr().err
    assert "--engine" not in run_stream.build_parser().format_help()


@pytest.mark.timeout(180)
def test_cli_end_to_end_subprocess(tiny_checkpoint, video_file, tmp_path) -> None:
    stats = tmp_path / "stats.json"
    cmd = [
        sys.executable, str(ROOT / "run_stream.py"), "--source", str(video_file),
        "--phrase", PHRASE_A, "--backend", "torch", "--checkpoint", str(tiny_checkpoint),
        "--size", "64x64", "--threads", "1", "--no-display", "--max-frames", "12",
        "--stats-json", str(stats), "--output", str(tmp_path / "out.mp4"),
        "--masks-dir", str(tmp_path / "masks"),
    ]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=170, cwd=tmp_path,
                       env={**os.environ, "DISPLAY": ""})  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert "end_to_end" in r.stdout
    data = json.loads(stats.read_text())
    assert data["frames"] == 12 and data["dropped"] == 0 and data["backend"] == "torch"
    assert set(data["stages_ms"]) == set(STAGES)
    assert data["stages_ms"]["end_to_end"]["p99"] >= data["stages_ms"]["end_to_end"]["p50"] > 0
    assert len(list((tmp_path / "masks").glob("*.png"))) == 12
    assert (tmp_path / "out.mp4").stat().st_size > 1000
