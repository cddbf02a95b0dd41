"""Several streams side by side: ``run_stream.py`` with several ``--source`` values, and
:class:`engine.streams.StreamGroup` (one pipeline per source, one shared engine, a failing stream
does not end the others)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.pipeline import Pipeline
from engine.session import Segmenter
from engine.sources import EndOfStream, FileSource, Frame, Source
from engine.stages import Stages
from engine.streams import StreamGroup, format_streams_table

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCV_")}
    cmd = [sys.executable, str(ROOT / "run_stream.py"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env={**env, "DISPLAY": ""})  # fmt: skip


def tiny(checkpoint: Path) -> list[str]:
    return ["--backend", "torch", "--checkpoint", str(checkpoint), "--size", "64x64",
            "--threads", "1", "--no-display"]  # fmt: skip


class BrokenAfter(Source):
    """A deliberately broken stream (never used by the product): fails after ``good`` frames."""

    name = "broken"

    def __init__(self, good: int) -> None:
        self.good, self.index = good, 0

    def read(self, timeout: float = 1.0) -> Frame | None:
        if self.index >= self.good:
            raise RuntimeError("decoder crashed")
        self.index += 1
        return Frame(np.zeros((48, 64, 3), np.uint8), self.index - 1, time.monotonic())


def test_cli_runs_two_streams_into_their_own_folders(tiny_checkpoint, video_file, tmp_path):
    out = tmp_path / "run"
    r = run_cli("--source", str(video_file), "--source", str(video_file), "--phrase",
                "the red square", "--phrase", "the blue circle", "--max-frames", "10",
                "--out-dir", str(out), *tiny(tiny_checkpoint), cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "total (2 streams)" in r.stdout
    names = ["moving_square", "moving_square-2"]
    total = json.loads((out / "stats.json").read_text())
    assert [s["stream"] for s in total["streams"]] == names
    assert [s["phrase"] for s in total["streams"]] == ["the red square", "the blue circle"]
    assert total["total"]["streams"] == 2 and total["total"]["frames"] == 20
    assert total["total"]["fps"] == pytest.approx(sum(s["fps"] for s in total["streams"]))
    for name in names:
        stats = json.loads((out / name / "stats.json").read_text())
        assert stats["stream"] == name and stats["frames"] == 10
        cap = cv2.VideoCapture(str(out / name / "overlay.mp4"))
        assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 10
        cap.release()
        assert len((out / name / "overlay.jsonl").read_text().splitlines()) == 10


def test_cli_rejects_what_several_streams_cannot_mean(tiny_checkpoint, video_file, tmp_path):
    two = ["--source", str(video_file), "--source", str(video_file)]
    r = run_cli(*two, "--phrase", "a", "--phrase", "b", "--phrase", "c", *tiny(tiny_checkpoint),
                cwd=tmp_path)  # fmt: skip
    assert r.returncode == 2 and "one per source" in r.stderr
    r = run_cli(*two, "--output", "x.mp4", *tiny(tiny_checkpoint), cwd=tmp_path)
    assert r.returncode == 2 and "--out-dir" in r.stderr
    out = tmp_path / "missing_run"
    r = run_cli(*two[:2], "--source", str(tmp_path / "nope.mp4"), "--phrase", "the square",
                "--out-dir", str(out), *tiny(tiny_checkpoint), cwd=tmp_path)  # fmt: skip
    assert r.returncode == 4 and "nope.mp4" in r.stderr
    assert not out.exists()  # the planned folders of a failed start are removed


def test_a_failing_stream_does_not_end_the_others(engine, video_file):
    good = Pipeline(FileSource(video_file), Segmenter(engine), name="good", max_frames=12)
    bad = Pipeline(BrokenAfter(3), Segmenter(engine), name="bad")
    group = StreamGroup([good, bad])
    group.set_phrase("the red square")
    summary = group.run()
    assert set(group.errors) == {"bad"} and "decoder crashed" in repr(group.errors["bad"])
    streams = {s["stream"]: s for s in summary["streams"]}
    assert streams["good"]["frames"] == 12 and "error" not in streams["good"]
    assert streams["bad"]["captured"] == 3 and "decoder crashed" in streams["bad"]["error"]
    assert summary["total"]["failed"] == ["bad"] and summary["total"]["frames"] >= 12
    assert "FAILED" in format_streams_table(summary)


def test_phrases_go_to_one_stream_or_all(engine, video_file):
    a = Pipeline(FileSource(video_file), Segmenter(engine), name="cam1")
    b = Pipeline(FileSource(video_file), Segmenter(engine), name="cam2")
    group = StreamGroup([a, b])
    assert group.set_phrase("the red square") == ["cam1", "cam2"]
    assert group.set_phrase("the blue circle", "2") == ["cam2"]
    assert (a.segmenter.phrase, b.segmenter.phrase) == ("the red square", "the blue circle")
    assert group.set_phrase("the green star", "cam1") == ["cam1"]
    with pytest.raises(ValueError, match="no stream '3'"):
        group.set_phrase("the red square", "3")
    with pytest.raises(ValueError):
        group.set_phrase("   ")  # rejected by the engine: nothing changes
    assert (a.segmenter.phrase, b.segmenter.phrase) == ("the green star", "the blue circle")
    with pytest.raises(ValueError, match="distinct names"):
        StreamGroup([a, Pipeline(FileSource(video_file), Segmenter(engine), name="cam1")])
    for p in (a, b):
        p.source.close()


def test_the_hud_names_the_stream(engine, video_file):
    seg = Segmenter(engine)
    seg.set_phrase("the red square")
    with FileSource(video_file) as src:
        frame = src.read()
    result = seg.step(frame)
    assert Stages(seg, name="cam7").hud_text(result)[0] == "stream cam7"
    assert not Stages(seg).hud_text(result)[0].startswith("stream")


def test_end_of_stream_is_not_an_error(engine):
    class Three(BrokenAfter):
        def read(self, timeout: float = 1.0) -> Frame | None:
            if self.index >= self.good:
                raise EndOfStream(self.name)
            return super().read(timeout)

    group = StreamGroup([Pipeline(Three(3), Segmenter(engine), name=n) for n in ("x", "y")])
    group.set_phrase("the red square")
    summary = group.run()
    assert not group.errors and summary["total"]["frames"] == 6
