"""RTSP soak: the full default on a live RTSP camera for many minutes, the server restarted.

A real GStreamer RTSP server on loopback (:data:`SERVER`, run by the system python that has
``gi``) serves a live 640x480 test pattern; the stream's default session (the shipped model,
ONNX Runtime, instance evidence in its own thread) segments it through the threaded pipeline,
exactly as ``run_stream.py --source rtsp://...`` does. The server is killed ``--restarts``
times (SIGTERM by PID), stays down ``--down-s`` seconds and comes back on the same URL. Measured:

* the process's resident memory (RSS) every few seconds: its growth from the end of the first
  minute (warm-up) to the end (target: at most 30 MB over 30 minutes);
* per restart, the gap from the server being back to the first frame segmented after it
  (target: at most 2 s), and the whole gap in the stream;
* frames, processed fps, capture -> overlay p50/p95/p99, reconnects, and whether it crashed.

It prints a table and writes JSON and a PNG (RSS over time with the restarts marked, and the
processed fps per 10 s)::

    python -m benchmarks.rtsp_soak                       # 30 minutes, two restarts
    python -m benchmarks.rtsp_soak --minutes 2 --restarts 1 --json /tmp/soak.json
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import cpu_name, versions, write_json

logger = logging.getLogger("benchmarks.rtsp_soak")

RESULTS = Path(__file__).parent / "results"
#: The RTSP server script (GStreamer, run by :data:`SYSTEM_PYTHON`).
SERVER = Path(__file__).with_name("rtsp_server.py")
SYSTEM_PYTHON = "/usr/bin/python3"
PHRASE = "the ball"
#: RSS is sampled this often (seconds).
RSS_EVERY_S = 2.0
#: Targets (the speed issue): RSS growth over the run, and the gap once the server is back.
TARGET_GROWTH_MB, TARGET_GAP_S = 30.0, 2.0


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gst_rtsp_missing() -> str | None:
    """``None`` if the system python can run the RTSP server, else the reason it cannot."""
    if not os.path.exists(SYSTEM_PYTHON):
        return f"{SYSTEM_PYTHON} missing"
    probe = (
        "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0');"
        "from gi.repository import Gst, GstRtspServer; Gst.init(None);"
        "assert Gst.ElementFactory.find('x264enc') and Gst.ElementFactory.find('rtph264pay')"
    )
    r = subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, text=True, timeout=60)
    if r.returncode:
        return (
            "GStreamer RTSP server unavailable to /usr/bin/python3 (apt-get install "
            "python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-{good,ugly,bad}): "
            + (r.stderr.strip().splitlines() or ["?"])[-1]
        )
    return None


class RtspServer:
    """The real GStreamer RTSP server (:data:`SERVER`) as a subprocess on a fixed port.

    :meth:`start` and :meth:`stop` may be called repeatedly (kill + restart on the same URL).
    It binds 127.0.0.1 only.
    """

    def __init__(self, port: int, *, size: tuple[int, int] = (320, 240), fps: int = 15) -> None:
        self.port, self.size, self.fps = port, size, fps
        self.url = f"rtsp://127.0.0.1:{port}/test"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> RtspServer:
        """Start it and wait until it listens (the port may linger briefly after a kill)."""
        assert self.proc is None
        deadline = time.monotonic() + timeout
        w, h = self.size
        while True:
            self.proc = subprocess.Popen(
                [SYSTEM_PYTHON, str(SERVER), "--port", str(self.port), "--width", str(w),
                 "--height", str(h), "--fps", str(self.fps)],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            )  # fmt: skip
            line = self.proc.stdout.readline().strip()
            if line.startswith("READY"):
                return self
            self.stop()
            if time.monotonic() > deadline:
                raise RuntimeError(f"RTSP server did not start: {line!r}")
            time.sleep(0.3)

    def stop(self) -> None:
        """Terminate by PID (SIGTERM, then SIGKILL)."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        if self.proc.stdout:
            self.proc.stdout.close()
        self.proc = None


def rss_mb() -> float:
    """This process's resident memory in MB (Linux ``/proc/self/statm``)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def soak(engine, server: RtspServer, *, seconds: float, restarts: int, down_s: float,
         instances: bool = True, progress: bool = True) -> dict[str, Any]:  # fmt: skip
    """Segment ``server``'s stream for ``seconds``, restarting the server ``restarts`` times.

    The restarts are spread evenly over the run after its first minute (or first third).
    """
    from tqdm import tqdm

    from engine.capture import open_source
    from engine.instances import DEFAULT_EVERY, InstanceEvidence
    from engine.outputs import CallbackOutput
    from engine.pipeline import Pipeline
    from engine.session import Segmenter

    done: list[float] = []  # when each frame was segmented (monotonic)
    lock = threading.Lock()

    def output(image, result, frame) -> None:
        with lock:
            done.append(time.monotonic())

    evidence = InstanceEvidence(every=DEFAULT_EVERY, background=True) if instances else None
    seg = Segmenter(engine, instances=evidence)
    seg.set_phrase(PHRASE)
    warm = min(60.0, seconds / 3)
    at = [warm + (seconds - warm) * (k + 1) / (restarts + 1) for k in range(restarts)]
    events: list[dict[str, float]] = []
    rss: list[tuple[float, float]] = []
    crashed = None
    src = open_source(server.url, backoff=0.2, max_backoff=1.0)
    pipe = Pipeline(src, seg, outputs=[CallbackOutput(output)])
    t0 = time.monotonic()
    bar = tqdm(total=int(seconds), desc="soak", unit="s", disable=not progress)
    try:
        pipe.start()
        next_rss = 0.0
        while (now := time.monotonic() - t0) < seconds:
            pipe.wait(timeout=0.2)  # re-raises a stage's error
            if now >= next_rss:
                rss.append((now, rss_mb()))
                next_rss += RSS_EVERY_S
            if at and now >= at[0]:
                at.pop(0)
                server.stop()
                down = time.monotonic() - t0
                time.sleep(down_s)
                server.start()
                events.append({"down_s": down, "back_s": time.monotonic() - t0})
            bar.update(int(now) - bar.n)
    except Exception as exc:  # a crash is a result, reported
        crashed = repr(exc)
        logger.error("the stream failed: %r", exc)
    finally:
        bar.close()
        try:
            pipe.stop()
        except Exception as exc:
            crashed = crashed or repr(exc)
    summary = pipe.summary()
    times = np.array(done) - t0
    for ev in events:
        before = times[times <= ev["down_s"]]
        after = times[times > ev["back_s"]]
        first = round(float(after[0] - ev["back_s"]), 3) if after.size else None
        gap = round(float(after[0] - before[-1]), 3) if after.size and before.size else None
        ev.update(first_frame_after_back_s=first, stream_gap_s=gap)
        ev["down_s"], ev["back_s"] = round(ev["down_s"], 2), round(ev["back_s"], 2)
    rss_arr = np.array(rss) if rss else np.zeros((0, 2))
    after_warm = rss_arr[rss_arr[:, 0] >= warm] if rss_arr.size else rss_arr
    growth = float(after_warm[-1, 1] - after_warm[0, 1]) if len(after_warm) >= 2 else None
    fps_bins = np.histogram(times, bins=np.arange(0.0, seconds + 10.0, 10.0))[0] / 10.0
    e2e = summary["stages_ms"]["end_to_end"]
    gaps = [ev["first_frame_after_back_s"] for ev in events]
    return {
        "seconds": round(time.monotonic() - t0, 1),
        "frames": int(len(done)),
        "fps": round(len(done) / seconds, 2),
        "capture_to_overlay_ms": {k: round(e2e[k], 1) for k in ("p50", "p95", "p99")},
        "reconnects": summary["reconnects"],
        "dropped": summary["dropped"],
        "crashed": crashed,
        "warm_up_s": warm,
        "rss_mb": [[round(t, 1), round(m, 2)] for t, m in rss],
        "rss_growth_mb": None if growth is None else round(growth, 2),
        "restarts": events,
        "fps_per_10s": [round(float(v), 2) for v in fps_bins],
        "detector": evidence.report() if evidence is not None else None,
        "meets": {
            "no_crash": crashed is None,
            "rss_growth": growth is not None and growth <= TARGET_GROWTH_MB,
            "gap_after_restart": bool(gaps)
            and all(g is not None and g <= TARGET_GAP_S for g in gaps),
        },
    }


def save_plot(result: dict[str, Any], path: Path) -> Path:
    """RSS over time with the restarts marked, and the processed fps per 10 s."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 5), sharex=True, dpi=110)
    rss = np.array(result["rss_mb"]) if result["rss_mb"] else np.zeros((0, 2))
    if len(rss):
        ax1.plot(rss[:, 0] / 60, rss[:, 1], color="tab:blue")
    for ev in result["restarts"]:
        for ax in (ax1, ax2):
            ax.axvspan(ev["down_s"] / 60, ev["back_s"] / 60, color="tab:red", alpha=0.3)
    ax1.set_ylabel("RSS (MB)")
    ax1.set_title(f"RTSP soak: RSS growth {result['rss_growth_mb']} MB after the warm-up; "
                  "server down in red", fontsize=9)  # fmt: skip
    fps = result["fps_per_10s"]
    ax2.step(np.arange(len(fps)) * 10 / 60, fps, where="post", color="tab:green")
    ax2.set_ylabel("processed fps")
    ax2.set_xlabel("minutes")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def format_table(result: dict[str, Any]) -> str:
    """What a reader wants first: memory, gaps, rate, latency, and the verdicts."""
    e2e = result["capture_to_overlay_ms"]
    lines = [
        f"soak {result['seconds'] / 60:.1f} min: {result['frames']} frames, {result['fps']} fps, "
        f"capture -> overlay p50/p95/p99 {e2e['p50']}/{e2e['p95']}/{e2e['p99']} ms, "
        f"reconnects {result['reconnects']}, crashed: {result['crashed'] or 'no'}",
        f"RSS growth after the {result['warm_up_s']:.0f} s warm-up: {result['rss_growth_mb']} MB "
        f"(target <= {TARGET_GROWTH_MB:.0f})",
    ]
    for k, ev in enumerate(result["restarts"], 1):
        lines.append(
            f"restart {k}: down at {ev['down_s']:.1f} s, back at {ev['back_s']:.1f} s, first "
            f"frame {ev['first_frame_after_back_s']} s after (target <= {TARGET_GAP_S:.0f}), "
            f"stream gap {ev['stream_gap_s']} s"
        )
    lines.append("meets: " + ", ".join(f"{k} {'yes' if v else 'NO'}"
                                       for k, v in result["meets"].items()))  # fmt: skip
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    from engine.options import add_model_options

    p = argparse.ArgumentParser(prog="python -m benchmarks.rtsp_soak",
                                description=__doc__.splitlines()[0])  # fmt: skip
    add_model_options(p, backends=("torch", "onnx"), threads=False, triton=False)
    p.add_argument("--minutes", type=float, default=30.0, help="length of the run")
    p.add_argument("--restarts", type=int, default=2, help="server restarts during the run")
    p.add_argument("--down-s", type=float, default=3.0, help="seconds the server stays down")
    p.add_argument("--stream-size", default="640x480", help="the camera's WxH (default 640x480)")
    p.add_argument("--stream-fps", type=int, default=15, help="the camera's frame rate")
    p.add_argument("--instances", action=argparse.BooleanOptionalAction, default=True,
                   help="the stream's default session, with instance evidence")  # fmt: skip
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", type=Path, default=RESULTS / "rtsp_soak_cpu.json")
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """CLI entry point; returns the JSON record."""
    p = build_parser()
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    missing = gst_rtsp_missing()
    if missing:
        p.error(missing)
    try:
        w, h = (int(v) for v in args.stream_size.lower().split("x"))
    except ValueError:
        p.error(f"--stream-size: WxH, got {args.stream_size!r}")
    from engine.loading import model_input_size
    from export.engines import create_engine

    size = args.size or model_input_size(args.checkpoint)
    engine = create_engine(args.backend, args.checkpoint, input_size=size)
    server = RtspServer(free_port(), size=(w, h), fps=args.stream_fps).start()
    try:
        result = soak(engine, server, seconds=args.minutes * 60, restarts=args.restarts,
                      down_s=args.down_s, instances=args.instances,
                      progress=not args.no_progress)  # fmt: skip
    finally:
        server.stop()
        engine.close()
    record = {
        "benchmark": "rtsp_soak",
        "device": f"cpu ({cpu_name()}, {os.cpu_count()} cores visible)",
        "backend": args.backend,
        "precision": "fp32",
        "checkpoint": str(args.checkpoint),
        "input_size": list(size),
        "stream": {
            "size": [w, h],
            "fps": args.stream_fps,
            "source": "GStreamer videotestsrc (ball), x264, RTSP on 127.0.0.1",
        },
        "instances": args.instances,
        "down_s": args.down_s,
        "targets": {"rss_growth_mb": TARGET_GROWTH_MB, "first_frame_after_back_s": TARGET_GAP_S},
        "versions": versions(opencv="cv2", numpy="numpy", onnxruntime="onnxruntime"),
        **result,
    }
    write_json(args.json, record)
    png = save_plot(record, args.json.with_suffix(".png"))
    print(format_table(record))
    print(f"wrote {args.json} and {png}")
    return record


if __name__ == "__main__":
    main()
