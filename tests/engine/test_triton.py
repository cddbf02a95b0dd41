"""The triton backend against a real Triton Inference Server on loopback (nvidia-pytriton's binary).

The server runs the repository ``python -m export --triton --triton-backend python`` writes for the tiny
export, in its own environment ``.venv-triton`` (``scripts/setup.sh``); every test that starts
one stops it by PID in teardown.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from dataclasses import replace

import numpy as np
import pytest
from tiny_model import MAX_BATCH

from benchmarks.triton_local import LocalTritonServer, TritonEnvMissingError, free_port, server_env
from engine.base import BackendUnavailable
from engine.manifest import ExportError
from export.check import mask_iou, real_frame_inputs
from export.triton import REPOSITORY_FILE, model_config, write_repository

pytest.importorskip("tritonclient.grpc")
pytestmark = pytest.mark.timeout(300)

SIZE = (128, 160)


def _env_or_skip() -> None:
    try:
        server_env()
    except TritonEnvMissingError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def repo(tiny_export, tmp_path_factory):
    return write_repository(tiny_export, tmp_path_factory.mktemp("triton") / "repo",
                            backend="python", max_batch=MAX_BATCH, queue_delay_us=20000)  # fmt: skip


@pytest.fixture(scope="module")
def server(repo):
    _env_or_skip()
    srv = LocalTritonServer(repo).start()
    yield srv
    srv.close()


def _engine(repo, server, **kw):
    from export.engines import create_engine

    return create_engine("triton", repo, input_size=SIZE, **{"url": server.grpc_url, **kw})


def test_repository_layout_and_configs(repo, tiny_export):
    desc = json.loads((repo / REPOSITORY_FILE).read_text())
    assert desc["backend"] == "python" and desc["models"] == {"text": "text_encoder",
                                                               "frame": "frame_net"}  # fmt: skip
    for name in ("text_encoder", "frame_net"):
        assert (repo / name / "1" / "model.onnx").is_file()
        assert (repo / name / "1" / "model.py").is_file()
    frame = (repo / "frame_net" / "config.pbtxt").read_text()
    assert 'backend: "python"' in frame and f"max_batch_size: {MAX_BATCH}" in frame
    assert "dynamic_batching" in frame and "preferred_batch_size: [ 2, 4 ]" in frame
    assert 'name: "image" data_type: TYPE_FP32 dims: [ 3, -1, -1 ]' in frame
    text = (repo / "text_encoder" / "config.pbtxt").read_text()
    assert "dynamic_batching" not in text and 'name: "token_ids" data_type: TYPE_INT64' in text
    assert (repo / "config.json").is_file() and (repo / "export_manifest.json").is_file()
    ort = model_config("frame_net", {"inputs": {}, "outputs": {}}, backend="onnxruntime",
                       max_batch=8, batching=True, preferred=(4, 8), threads=2)  # fmt: skip
    assert 'backend: "onnxruntime"' in ort and "intra_op_thread_count" in ort
    with pytest.raises(ValueError, match="preferred batch sizes"):
        model_config("x", {"inputs": {}, "outputs": {}}, backend="python", max_batch=2,
                     batching=True, preferred=(4,))  # fmt: skip
    with pytest.raises(ValueError, match="exceeds the export's max_batch"):
        write_repository(tiny_export, repo.parent / "big", max_batch=MAX_BATCH + 1)


def test_export_cli_writes_a_repository(tiny_export, tmp_path, capsys):
    from export.__main__ import main

    assert main(["--out", str(tiny_export), "--triton", str(tmp_path / "r"), "--triton-backend",
                 "onnxruntime"]) == 0  # fmt: skip
    assert "wrote Triton repository" in capsys.readouterr().out
    assert 'backend: "onnxruntime"' in (tmp_path / "r" / "frame_net" / "config.pbtxt").read_text()
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "x.txt").write_text("mine")
    assert main(["--out", str(tiny_export), "--triton", str(tmp_path / "plain")]) == 2
    assert "not a repository written by this tool" in capsys.readouterr().err
    assert (tmp_path / "plain" / "x.txt").read_text() == "mine"  # nothing of the user's lost


def test_parity_with_the_local_onnx_engine_on_real_frames(repo, server, tiny_export):
    from export.engines import create_engine

    tri = _engine(repo, server)
    local = create_engine("onnx", tiny_export, input_size=SIZE)
    for protocol_engine in (tri, _engine(repo, server, protocol="http", url=server.http_url)):
        for phrase in ("the red car turning left", "the small blue circle"):
            a, b = protocol_engine.encode_text(phrase), local.encode_text(phrase)
            np.testing.assert_allclose(a.words, b.words, atol=1e-5)
            for image, flow in real_frame_inputs(tri.config, size=SIZE, count=2):
                got, want = protocol_engine.segment(image, flow, a), local.segment(image, flow, b)
                assert mask_iou(got > 0, want > 0) >= 0.99
                assert np.abs(got - want).max() < 1e-3
        protocol_engine.close()
    local.close()


def _batch_counts(engine) -> dict[int, int]:
    """frame_net executions per batch size so far, from the server's statistics endpoint."""
    stats = engine.statistics()["model_stats"][0]
    return {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in stats["batch_stats"]}


@pytest.mark.parametrize("shared", [False, True], ids=["engine-per-stream", "one-shared-engine"])
def test_four_streams_share_one_server_in_dynamic_batches(repo, server, shared):
    """Four stream threads; with one shared engine each thread gets its own client."""
    engines = [_engine(repo, server)] * 4 if shared else [_engine(repo, server) for _ in range(4)]
    before = _batch_counts(engines[0])
    state = engines[0].encode_text("the small blue circle")
    rng = np.random.default_rng(0)
    image = rng.standard_normal((1, 3, *SIZE), dtype=np.float32)
    flow = np.zeros((1, 2, *SIZE), np.float32)
    errors: list[BaseException] = []
    outputs: list[np.ndarray] = []

    def stream(engine):
        try:
            for _ in range(12):
                outputs.append(engine.segment(image, flow, state))
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=stream, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    assert len(outputs) == 48 and all(np.array_equal(o, outputs[0]) for o in outputs)
    # The server records an execution's statistics after it has sent the responses: wait until
    # they account for the 48 frames (or 5 s), then check that no frame ran twice or never.
    deadline = time.monotonic() + 5.0
    while True:
        after = _batch_counts(engines[0])
        grew = {b: after[b] - before.get(b, 0) for b in after if after[b] > before.get(b, 0)}
        if sum(b * n for b, n in grew.items()) >= 48 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert sum(b * n for b, n in grew.items()) == 48, grew  # every frame ran exactly once
    assert max(grew) > 1, grew  # requests of several streams ran as one batch
    if shared:
        assert len(engines[0]._clients) >= 4  # one client per calling thread
    for e in set(engines):
        e.close()


def test_run_stream_with_two_sources_against_the_server(repo, server, tmp_path):
    """The CLI's several-streams path with the triton engine (one engine, a client per thread)."""
    import cv2

    clip = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (160, 128))
    for i in range(12):
        img = np.full((128, 160, 3), 60, np.uint8)
        cv2.circle(img, (20 + 8 * i, 64), 14, (255, 80, 0), -1)
        writer.write(img)
    writer.release()
    import run_stream

    out = tmp_path / "run"
    code = run_stream.main(["--backend", "triton", "--checkpoint", str(repo), "--triton-url",
                            server.grpc_url, "--size", "128x160", "--source", str(clip),
                            "--source", str(clip), "--phrase", "the small blue circle",
                            "--no-display", "--out-dir", str(out)])  # fmt: skip
    assert code == 0
    total = json.loads((out / "stats.json").read_text())
    assert total["total"]["streams"] == 2 and total["total"]["frames"] == 24
    assert {s["backend"] for s in total["streams"]} == {"triton"}
    assert (out / "clip" / "overlay.mp4").is_file() and (out / "clip-2" / "stats.json").is_file()


def test_server_killed_and_restarted_mid_stream_resumes(repo, caplog):
    _env_or_skip()
    srv = LocalTritonServer(repo).start()
    try:
        engine = _engine(repo, srv, retry_s=60.0)
        state = engine.encode_text("the small blue circle")
        image = np.zeros((1, 3, *SIZE), np.float32)
        flow = np.zeros((1, 2, *SIZE), np.float32)
        engine.segment(image, flow, state)
        srv.kill()
        restart = threading.Timer(1.5, srv.start)
        restart.start()
        with caplog.at_level(logging.WARNING, logger="engine.backends.triton_backend"):
            t0 = time.monotonic()
            out = engine.segment(image, flow, state)  # waits for the restarted server
        restart.join()
        assert out.shape == (1, 1, *SIZE) and time.monotonic() - t0 > 1.0
        messages = " ".join(r.getMessage() for r in caplog.records)
        assert "unreachable" in messages and "is back" in messages
        engine.close()
    finally:
        srv.close()


def test_clear_errors_server_down_model_missing_shapes_disagree(repo, server, tmp_path):
    from export.engines import create_engine

    with pytest.raises(BackendUnavailable, match="is not reachable"):
        create_engine("triton", repo, input_size=SIZE, url=f"127.0.0.1:{free_port()}")
    with pytest.raises(ValueError, match="nor a Triton repository"):
        create_engine("triton", repo.parent, input_size=SIZE, url=server.grpc_url)
    with pytest.raises(ValueError, match="use backend 'triton'"):
        create_engine("onnx", repo, input_size=SIZE)
    # another model's config next to the served models: widths disagree
    other = tmp_path / "other"
    shutil.copytree(repo, other)
    cfg = json.loads((other / "config.json").read_text())
    cfg["config"]["text"]["width"] = 48
    cfg["config"]["text"]["heads"] = 4
    (other / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="shapes disagree"):
        create_engine("triton", other, input_size=SIZE, url=server.grpc_url)
    with pytest.raises(ValueError, match="outside the repository's range"):
        create_engine("triton", repo, input_size=(512, 512), url=server.grpc_url)


def test_missing_model_and_bad_repository(repo, tmp_path):
    from export.engines import create_engine

    _env_or_skip()
    partial = tmp_path / "partial"
    shutil.copytree(repo, partial)
    shutil.rmtree(partial / "frame_net")
    with LocalTritonServer(partial) as srv, pytest.raises(ValueError, match="'frame_net' is not"):
        create_engine("triton", partial, input_size=SIZE, url=srv.grpc_url)
    broken = tmp_path / "broken"
    shutil.copytree(repo, broken)
    (broken / "frame_net" / "1" / "model.onnx").write_bytes(b"not an onnx file")
    with pytest.raises(RuntimeError, match="tritonserver exited|not ready"):
        LocalTritonServer(broken, ready_timeout_s=30).start()


def _fake_plans(folder, export, *, batch: int = 4):
    """Engine files with the sidecar ``python -m export --tensorrt`` writes (bytes: no TensorRT
    here, and the repository only copies plans)."""
    from engine.loading import ENGINE_SIDECAR_FORMAT

    folder.mkdir()
    (folder / "text_encoder-fp16-k.engine").write_bytes(b"text plan")
    frame = folder / "frame_net-fp16-k.engine"
    frame.write_bytes(b"frame plan")
    profile = {"image": [[1, 3, 128, 96], [batch, 3, 160, 160], [batch, 3, 256, 320]]}
    side = {"format": ENGINE_SIDECAR_FORMAT, "graph": "frame_net", "precision": "fp16",
            "export": str(export), "text_engine": "text_encoder-fp16-k.engine",
            "profile": profile}  # fmt: skip
    (folder / (frame.name + ".json")).write_text(json.dumps(side))
    return frame


def test_tensorrt_plan_repository_from_built_engines(tiny_export, tmp_path):
    frame = _fake_plans(tmp_path / "engines", tiny_export)
    repo = write_repository(tiny_export, tmp_path / "repo", backend="tensorrt", frame_engine=frame)
    for name, plan in (("text_encoder", b"text plan"), ("frame_net", b"frame plan")):
        assert (repo / name / "1" / "model.plan").read_bytes() == plan
        assert not (repo / name / "1" / "model.onnx").exists()
        config = (repo / name / "config.pbtxt").read_text()
        assert 'backend: "tensorrt"' in config and "kind: KIND_GPU" in config
        assert "max_batch_size: 4" in config  # the plan's profile bounds the batch
    desc = json.loads((repo / REPOSITORY_FILE).read_text())
    assert desc["precision"] == "fp16" and (desc["min_side"], desc["max_side"]) == (128, 256)
    with pytest.raises(ExportError, match="exceeds the TensorRT profile"):
        write_repository(tiny_export, tmp_path / "r2", backend="tensorrt", frame_engine=frame,
                         max_batch=8)  # fmt: skip
    (tmp_path / "engines" / "text_encoder-fp16-k.engine").unlink()
    with pytest.raises(ExportError, match="text engine .* is missing"):
        write_repository(tiny_export, tmp_path / "r3", backend="tensorrt", frame_engine=frame)
    with pytest.raises(ValueError, match="give the frame_net engine"):
        write_repository(tiny_export, tmp_path / "r4", backend="tensorrt")


def test_export_cli_tensorrt_repository_needs_plans(tiny_export, tmp_path, capsys):
    from export.__main__ import main

    frame = _fake_plans(tmp_path / "engines", tiny_export)
    with pytest.raises(SystemExit) as stop:
        main(["--out", str(tiny_export), "--triton", str(tmp_path / "r"), "--triton-backend",
              "tensorrt"])  # fmt: skip
    assert stop.value.code == 2 and "--trt-engine" in capsys.readouterr().err
    assert main(["--out", str(tiny_export), "--triton", str(tmp_path / "r"), "--triton-backend",
                 "tensorrt", "--trt-engine", str(frame)]) == 0  # fmt: skip
    assert (tmp_path / "r" / "frame_net" / "1" / "model.plan").read_bytes() == b"frame plan"


def test_the_app_offers_and_loads_the_triton_engine(repo, server):
    from app.__main__ import build_parser
    from app.engines import EngineRegistry, offered_backends
    from engine.options import ModelOptions

    assert offered_backends("triton", repo, device="cpu") == ("triton",)
    args = build_parser().parse_args(["--backend", "triton", "--checkpoint", str(repo),
                                      "--triton-url", server.grpc_url])  # fmt: skip
    model = replace(ModelOptions.from_args(args), size=SIZE)
    registry = EngineRegistry(model, backends=("triton",))
    try:
        engine = registry.get("triton")
        state = engine.encode_text("the small blue circle")
        assert state.phrase == "the small blue circle" and engine.inner.url == server.grpc_url
    finally:
        registry.close()
