"""What a user of ``run_stream.py`` sees: fail-fast output checks, the run folder, files that
play, per-frame results as COCO RLE, quiet native logs, and the latency summary.

Each test runs the CLI as a user would (a subprocess), on the session's tiny checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.session import DEFAULT_MIN_SCORE

ROOT = Path(__file__).resolve().parents[2]


NATIVE_LOG_VARS = ("OPENCV_LOG_LEVEL", "OPENCV_FFMPEG_LOGLEVEL")


def run_cli(*args: str, cwd: Path, env: dict | None = None, timeout: float = 240):
    cmd = [sys.executable, str(ROOT / "run_stream.py"), *args]
    # a CLI run inside this test process (run_stream.main) set OpenCV's log levels in
    # os.environ; a user's shell would not have them
    inherited = {k: v for k, v in os.environ.items() if k not in NATIVE_LOG_VARS}
    env = {**inherited, "DISPLAY": "", **(env or {})}
    t0 = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)
    return r, time.monotonic() - t0


def tiny(checkpoint: Path) -> list[str]:
    return ["--backend", "torch", "--checkpoint", str(checkpoint), "--size", "64x64",
            "--threads", "1", "--no-display"]  # fmt: skip


# -- fail fast -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--output", "/proc/nope/out.mp4"], "--output: cannot create folder /proc/nope"),
        (["--output", "{tmp}"], "is a folder; give a file name"),
        (["--output", "out_noext"], "out_noext must end in .mp4, .mkv, .mov, .avi"),
        (["--stats-json", "/proc/nope.json"], "--stats-json: cannot write in /proc"),
        (["--masks-dir", "{tmp}/file.txt"], "--masks-dir: {tmp}/file.txt is a file; give a folder"),
    ],
)
def test_bad_output_paths_fail_before_the_model_loads(tmp_path, args, message):
    """One line, exit code 10, nothing created. The checkpoint does not exist: had the model
    been loaded first, the exit code would be 7 (model missing)."""
    (tmp_path / "file.txt").write_text("x")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    message = message.replace("{tmp}", str(tmp_path))
    r, _ = run_cli("--checkpoint", str(tmp_path / "no-model"), *args, cwd=tmp_path)
    assert r.returncode == 10, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("run_stream: error: "), r.stderr
    assert message in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]  # no runs/ left behind


def test_a_failed_start_leaves_no_empty_run_folder(tmp_path):
    r, _ = run_cli("--checkpoint", str(tmp_path / "no-model"), cwd=tmp_path)
    assert r.returncode == 7 and "model not found" in r.stderr
    assert not (tmp_path / "runs").exists()


def test_help_names_exit_code_10_and_what_the_model_knows(tmp_path):
    r, _ = run_cli("--help", cwd=tmp_path)
    assert r.returncode == 0
    assert "an output path cannot be written" in r.stdout
    assert "what the shipped model knows:" in r.stdout
    assert "synthetic" in r.stdout.split("what the shipped model knows:")[1]


def test_native_library_noise_stays_behind_verbose(tmp_path, tiny_checkpoint, free_port):
    """A dead RTSP URL: one error line; OpenCV's ``[ WARN`` and FFmpeg's ``[tcp @`` only with -v."""
    url = f"rtsp://127.0.0.1:{free_port()}/cam"
    common = [*tiny(tiny_checkpoint), "--source", url, "--phrase", "the red circle", "--no-save"]
    quiet, _ = run_cli(*common, cwd=tmp_path)
    loud, _ = run_cli(*common, "-v", cwd=tmp_path)
    for r in (quiet, loud):
        assert r.returncode == 6 and "cannot open stream" in r.stderr
    assert "[ WARN" not in quiet.stderr and "[tcp @" not in quiet.stderr, quiet.stderr
    assert "[tcp @" in loud.stderr or "[ WARN" in loud.stderr, loud.stderr


# -- the run folder and its files ------------------------------------------------------------------
def _codec(path: Path) -> str:
    cap = cv2.VideoCapture(str(path))
    fourcc = int(cap.get(cv2.CAP_PROP_FOURCC))
    frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    return "".join(chr((fourcc >> (8 * i)) & 0xFF) for i in range(4)).lower(), frames


@pytest.mark.timeout(300)
def test_default_run_folder_has_h264_video_results_and_stats(tmp_path, tiny_checkpoint):
    pytest.importorskip("pycocotools")
    from pycocotools import mask as coco_mask

    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg not installed")
    args = [*tiny(tiny_checkpoint), "--max-frames", "8", "--pace", "0", "--masks"]
    r, _ = run_cli(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    (run,) = list((tmp_path / "runs").iterdir())
    assert run.name.startswith("demo-")
    assert sorted(p.name for p in run.iterdir()) == [
        "masks", "overlay.jsonl", "overlay.mp4", "stats.json"
    ]  # fmt: skip
    assert _codec(run / "overlay.mp4") in (("avc1", 8), ("h264", 8))
    assert f"wrote {run.relative_to(tmp_path)}/overlay.mp4" in r.stderr

    rows = [json.loads(line) for line in (run / "overlay.jsonl").read_text().splitlines()]
    assert [row["frame"] for row in rows] == list(range(8))
    for row in rows:
        png = cv2.imread(str(run / "masks" / f"{row['frame']:06d}.png"), cv2.IMREAD_UNCHANGED)
        rle = {"size": row["mask"]["size"], "counts": row["mask"]["counts"].encode()}
        decoded = coco_mask.decode(rle)  # the reference decoder reads our RLE
        np.testing.assert_array_equal(decoded, (png > 0).astype(np.uint8))
        assert row["area"] == pytest.approx(decoded.mean(), abs=1e-6)
        assert 0.0 <= row["score"] <= 1.0 and 0.0 <= row["peak"] <= 1.0
        # the raw mask is kept even when "not found" (found says what the stream showed)
        # (or the instance the words chose steered it; or no instance of the class is in view)
        shown = row["score"] >= DEFAULT_MIN_SCORE or row["steered"]
        assert row["found"] == bool(decoded.any() and shown and row["absent"] is None)
        assert row["phrase"] and set(row["timings_ms"]) >= {"flow", "inference", "overlay"}
        assert row["inferred"] is True  # every frame is a keyframe by default
        assert row["prior_conf"] is None  # tiny_checkpoint has no grounding prior

    stats = json.loads((run / "stats.json").read_text())
    assert stats["frames"] == 8
    assert set(stats["stages_ms"]) == {"capture", "flow", "inference", "overlay", "end_to_end"}
    assert set(stats["wait_ms"]) == {"flow", "inference", "overlay"}
    b = stats["bottleneck"]
    assert b["stage"] in ("capture", "flow", "inference", "overlay")
    assert b["work_ms"] == pytest.approx(
        stats["stages_ms"][b["stage"]]["mean"]
    )  # the mean: what a stream sustains
    last = r.stdout.strip().splitlines()[-1]
    assert last.startswith(f"bottleneck: {b['stage']} ") and "fps" in last


@pytest.mark.timeout(300)
def test_without_ffmpeg_the_video_is_mp4v_with_a_warning(tmp_path, tiny_checkpoint):
    out = tmp_path / "clip" / "seg.mp4"
    args = [*tiny(tiny_checkpoint), "--max-frames", "5", "--pace", "0", "--output", str(out)]
    r, _ = run_cli(*args, cwd=tmp_path, env={"PATH": str(tmp_path / "no-bin")})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "ffmpeg not found" in r.stderr and "mp4v" in r.stderr
    assert _codec(out) in (("mp4v", 5), ("fmp4", 5))  # FFmpeg's reader names MPEG-4 Part 2 FMP4
    # --output's folder is the run folder: the results and the stats sit next to the video
    assert sorted(p.name for p in out.parent.iterdir()) == ["seg.jsonl", "seg.mp4", "stats.json"]


@pytest.mark.timeout(300)
def test_no_save_writes_nothing_unless_asked(tmp_path, tiny_checkpoint):
    stats = tmp_path / "only" / "stats.json"
    args = [*tiny(tiny_checkpoint), "--max-frames", "3", "--pace", "0", "--no-save"]
    r, _ = run_cli(*args, "--stats-json", str(stats), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "only", "only/stats.json"
    ]  # fmt: skip


@pytest.mark.timeout(300)
def test_sigterm_ends_a_run_like_ctrl_c(tmp_path, tiny_checkpoint):
    """``docker stop`` / systemd send SIGTERM: files closed, stats.json and the summary written."""
    args = [*tiny(tiny_checkpoint), "--loop", "--pace", "10", "--out-dir", str(tmp_path / "run")]
    env = {k: v for k, v in os.environ.items() if k not in NATIVE_LOG_VARS}
    proc = subprocess.Popen([sys.executable, str(ROOT / "run_stream.py"), *args], cwd=tmp_path,
                            env={**env, "DISPLAY": ""}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        results = tmp_path / "run" / "overlay.jsonl"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if results.exists() and len(results.read_text().splitlines()) >= 5:
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err[-3000:]
    stats = json.loads((tmp_path / "run" / "stats.json").read_text())
    assert stats["interrupted"] is True and stats["frames"] >= 5
    rows = results.read_text().splitlines()
    assert all(json.loads(line)["frame"] >= 0 for line in rows)  # every line whole
    assert _codec(tmp_path / "run" / "overlay.mp4")[1] >= 5  # the video is closed and readable
    assert "bottleneck:" in out


@pytest.mark.timeout(300)
def test_live_makes_a_paced_file_drop_what_the_stream_is_too_slow_for(tmp_path, tiny_checkpoint):
    """--pace alone never drops (the latency then holds the backlog); --live skips the late
    frames like a camera; --live with no rate for a file is a usage error."""
    dropped = {}
    for flags in ((), ("--live",)):
        stats = tmp_path / f"stats{len(flags)}.json"
        args = [*tiny(tiny_checkpoint), "--source", "demo:shapes", "--loop", "--pace", "500",
                "--max-frames", "30", "--no-save", "--stats-json", str(stats), *flags]  # fmt: skip
        r, _ = run_cli(*args, cwd=tmp_path)
        assert r.returncode == 0, r.stderr[-3000:]
        summary = json.loads(stats.read_text())
        assert summary["captured"] == 30 and 0 < summary["frames"] <= 30
        dropped[flags] = summary["dropped"]
    assert dropped[()] == 0 and dropped[("--live",)] > 0
    clip = tmp_path / "clip"
    clip.mkdir()
    cv2.imwrite(str(clip / "0.png"), np.zeros((48, 64, 3), np.uint8))
    r, _ = run_cli(*tiny(tiny_checkpoint), "--source", str(clip), "--live", cwd=tmp_path)
    assert r.returncode == 2 and "--live plays" in r.stderr and "--pace N" in r.stderr
