"""TensorRT engine builder: everything up to the TensorRT call.

TensorRT cannot be installed on these CPU hosts (see docs DEPLOY_NOTES), so the version
branching is tested with a tiny recording stand-in for the ``tensorrt`` module namespace: it only
records which API calls :func:`build_serialized_engine` chooses for TensorRT 10 vs 11. Profiles,
cache keys, ONNX selection and the missing-TensorRT error run for real; the real build is a
``trt``-marked test that skips without TensorRT.
"""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
from pathlib import Path
from types import SimpleNamespace

import onnx
import pytest

from engine.base import BackendUnavailable
from engine.manifest import ExportError
from export.tensorrt import (
    Profile,
    build_export_engines,
    build_serialized_engine,
    engine_cache_key,
    frame_profile,
    import_tensorrt,
    onnx_for_precision,
    text_profile,
    trt_major,
)
from models.config import build_config

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


class _Recorder:
    """Records calls made on a fake TensorRT object graph."""

    def __init__(self, version: str, *, parse_ok: bool = True, build_ok: bool = True, inputs=()):
        self.calls: list[tuple] = []
        self.inputs = tuple(inputs)
        rec = self

        class Network:
            @property
            def num_inputs(self):
                return len(rec.inputs)

            def get_input(self, i):
                return SimpleNamespace(name=rec.inputs[i])

        class Parser:
            num_errors = 0 if parse_ok else 1

            def __init__(self, network, logger):
                rec.calls.append(("OnnxParser",))

            def parse(self, data):
                rec.calls.append(("parse", len(data)))
                # A real ONNX file: the network gets the graph's real input names.
                with contextlib.suppress(Exception):
                    rec.inputs = tuple(i.name for i in onnx.load_from_string(data).graph.input)
                return parse_ok

            def get_error(self, i):
                return "bad node"

        class Cache:
            def serialize(self):
                return b"timing-cache"

        class Config:
            def set_memory_pool_limit(self, pool, size):
                rec.calls.append(("set_memory_pool_limit", pool, size))

            def set_flag(self, flag):
                rec.calls.append(("set_flag", flag))

            def add_optimization_profile(self, p):
                rec.calls.append(("add_optimization_profile",))

            def create_timing_cache(self, data):
                rec.calls.append(("create_timing_cache", bytes(data)))
                return Cache()

            def set_timing_cache(self, cache, ignore_mismatch):
                rec.calls.append(("set_timing_cache", ignore_mismatch))

            def get_timing_cache(self):
                return Cache()

        class OptProfile:
            def set_shape(self, name, lo, opt, hi):
                rec.calls.append(("set_shape", name, tuple(lo), tuple(opt), tuple(hi)))

        class Builder:
            def __init__(self, logger):
                pass

            def create_network(self, flags):
                rec.calls.append(("create_network", flags))
                return Network()

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return OptProfile()

            def build_serialized_network(self, network, config):
                rec.calls.append(("build_serialized_network",))
                return b"PLAN" if build_ok else None

        class Logger:
            WARNING = 2

            def __init__(self, level):
                pass

        builder_flag = (
            SimpleNamespace(FP16="FP16", INT8="INT8")
            if version.startswith("10")
            else SimpleNamespace()
        )
        self.module = SimpleNamespace(
            __version__=version,
            Logger=Logger,
            Builder=Builder,
            OnnxParser=Parser,
            MemoryPoolType=SimpleNamespace(WORKSPACE="WORKSPACE"),
            BuilderFlag=builder_flag,
        )

    def names(self):
        return [c[0] for c in self.calls]


@pytest.fixture(scope="module")
def config():
    return build_config("hinet_tiny")


def test_missing_tensorrt_gives_a_clear_error():
    if HAS_TRT:
        pytest.skip("TensorRT is installed here")
    with pytest.raises(
        BackendUnavailable, match="TensorRT is not installed: pip install hinet-stream\\[gpu\\]"
    ):
        import_tensorrt()


def test_export_cli_checks_for_tensorrt_before_exporting(tiny_checkpoint, tmp_path):
    """``python -m export --tensorrt`` on a host without TensorRT: exit 3 at once, nothing written
    (it used to export ONNX for a minute first)."""
    if HAS_TRT:
        pytest.skip("TensorRT is installed here")
    import subprocess
    import sys
    import time

    out = tmp_path / "export"
    cmd = [sys.executable, "-m", "export", "--checkpoint", str(tiny_checkpoint),
           "--out", str(out), "--tensorrt"]  # fmt: skip
    t0 = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                       cwd=Path(__file__).resolve().parents[2])  # fmt: skip
    took = time.monotonic() - t0
    assert r.returncode == 3, r.stderr[-2000:]
    assert r.stderr.strip().splitlines() == [
        "error: --tensorrt: " + str(BackendUnavailable(_install_hint()))
    ]
    assert "exported" not in r.stdout and not out.exists() and not list(tmp_path.glob(".export-*"))
    print(f"failed in {took:.1f} s")


def _install_hint() -> str:
    with pytest.raises(BackendUnavailable) as info:
        import_tensorrt()
    return str(info.value)


def test_profiles_cover_every_dynamic_input(config):
    p = frame_profile(
        config, min_size=(64, 64), opt_size=(320, 320), max_size=(480, 640), max_batch=2
    )
    d = p.as_dict()
    assert set(d) == {"image", "flow", "words", "words_mask", "sentence"}
    assert d["image"] == [[1, 3, 64, 64], [1, 3, 320, 320], [2, 3, 480, 640]]
    assert d["flow"] == [[1, 2, 64, 64], [1, 2, 320, 320], [2, 2, 480, 640]]
    assert d["words"] == [[1, 20, 32], [1, 20, 32], [2, 20, 32]]
    t = text_profile(config, max_batch=3).as_dict()
    assert t == {
        "token_ids": [[1, 20], [1, 20], [3, 20]],
        "token_mask": [[1, 20], [1, 20], [3, 20]],
    }


def test_frame_profile_of_a_prior_model_covers_the_classes():
    from models.config import build_config

    d = frame_profile(build_config("hinet_tiny_prior"), min_size=(64, 64), opt_size=(128, 128),
                      max_size=(256, 256), max_batch=4).as_dict()  # fmt: skip
    assert d["classes"] == [[1, 1000], [1, 1000], [4, 1000]]
    assert set(d) == {"image", "flow", "words", "words_mask", "sentence", "classes"}


def test_frame_profile_of_a_referent_model_covers_its_map():
    from models.config import build_config

    prof = frame_profile(build_config("hinet_tiny_referent"), min_size=(64, 64),
                         opt_size=(128, 160), max_size=(256, 256), max_batch=2)  # fmt: skip
    assert prof.as_dict()["referent"] == [[1, 1, 64, 64], [1, 1, 128, 160], [2, 1, 256, 256]]
    names = [name for name, *_ in prof.shapes]
    assert names == sorted(names)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"min_size": (64, 64), "opt_size": (320, 320), "max_size": (256, 256)},
            "min <= opt <= max",
        ),
        ({"min_size": (60, 64), "opt_size": (320, 320), "max_size": (640, 640)}, "multiples of 32"),
        (
            {"min_size": (64, 64), "opt_size": (64, 64), "max_size": (64, 64), "max_batch": 0},
            "max_batch",
        ),
    ],
)
def test_bad_profiles_are_rejected(config, kwargs, match):
    with pytest.raises(ValueError, match=match):
        frame_profile(config, **kwargs)


def test_cache_key_changes_with_each_ingredient(config):
    base = {
        "trt_version": "10.7.0",
        "compute_capability": (8, 9),
        "onnx_sha256": "a" * 64,
        "profile": frame_profile(
            config, min_size=(64, 64), opt_size=(320, 320), max_size=(640, 640)
        ),
        "precision": "fp32",
    }
    key = engine_cache_key(**base)
    assert key == engine_cache_key(**base)  # deterministic
    variants = {
        "trt_version": "11.0.0",
        "compute_capability": (9, 0),
        "onnx_sha256": "b" * 64,
        "profile": frame_profile(
            config, min_size=(64, 64), opt_size=(256, 320), max_size=(640, 640)
        ),
        "precision": "fp16",
    }
    keys = {key}
    for name, value in variants.items():
        keys.add(engine_cache_key(**{**base, name: value}))
    assert len(keys) == 1 + len(variants)


def test_onnx_choice_per_version():
    assert onnx_for_precision(10, "fp32") == "fp32"
    assert onnx_for_precision(10, "fp16") == "fp32"  # weakly typed: BuilderFlag.FP16
    assert onnx_for_precision(11, "fp32") == "fp32"
    assert onnx_for_precision(11, "fp16") == "fp16"  # strongly typed: the FP16 graph
    assert onnx_for_precision(10, "int8") == "int8"  # the QDQ graph, BuilderFlag.INT8
    assert onnx_for_precision(11, "int8") == "int8"  # the QDQ graph, strongly typed
    assert onnx_for_precision(11, "int8", "text_encoder") == "fp32"  # text stays FP32
    with pytest.raises(ValueError, match="valid: fp32, fp16, int8"):
        onnx_for_precision(10, "int4")


def test_unsupported_major_version():
    with pytest.raises(BackendUnavailable, match="need 10.x or 11.x"):
        trt_major(SimpleNamespace(__version__="8.6.1"))
    assert trt_major(SimpleNamespace(__version__="10.13.0.35")) == 10
    assert trt_major(SimpleNamespace(__version__="11.4.1")) == 11


@pytest.mark.parametrize(
    ("version", "precision", "flag"),
    [
        ("10.13.0", "fp32", None),
        ("10.13.0", "fp16", "FP16"),
        ("10.13.0", "int8", "INT8"),
        ("11.4.1", "fp32", None),
        ("11.4.1", "fp16", None),
        ("11.4.1", "int8", None),  # strongly typed: the QDQ graph alone decides
    ],
)
def test_builder_api_calls_per_major_version(tmp_path, config, version, precision, flag):
    profile = text_profile(config)
    rec = _Recorder(version, inputs=("token_ids", "token_mask"))
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"onnx-bytes")
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"old-cache")
    plan = build_serialized_engine(
        rec.module,
        onnx_file,
        profile=profile,
        precision=precision,
        workspace_bytes=123,
        timing_cache=cache,
    )
    assert plan == b"PLAN"
    assert ("create_network", 0) in rec.calls  # explicit batch (10) / strongly typed (11) implied
    assert ("set_memory_pool_limit", "WORKSPACE", 123) in rec.calls
    assert [c[1] for c in rec.calls if c[0] == "set_flag"] == ([flag] if flag else [])
    shapes = {c[1]: c[2:] for c in rec.calls if c[0] == "set_shape"}
    assert shapes == {n: (lo, opt, hi) for n, lo, opt, hi in profile.shapes}
    assert ("create_timing_cache", b"old-cache") in rec.calls  # loaded before the build
    assert cache.read_bytes() == b"timing-cache"  # saved after it
    order = rec.names()
    assert (
        order.index("parse")
        < order.index("add_optimization_profile")
        < order.index("build_serialized_network")
    )


def test_builder_reports_parse_and_build_failures(tmp_path, config):
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"x")
    rec = _Recorder("10.13.0", parse_ok=False, inputs=("token_ids", "token_mask"))
    with pytest.raises(ExportError, match="cannot parse.*bad node"):
        build_serialized_engine(
            rec.module, onnx_file, profile=text_profile(config), precision="fp32"
        )
    rec = _Recorder("11.4.1", build_ok=False, inputs=("token_ids", "token_mask"))
    with pytest.raises(ExportError, match="failed to build"):
        build_serialized_engine(
            rec.module, onnx_file, profile=text_profile(config), precision="fp32"
        )
    rec = _Recorder("11.4.1", inputs=("token_ids",))
    with pytest.raises(ExportError, match="profile covers"):
        build_serialized_engine(
            rec.module, onnx_file, profile=text_profile(config), precision="fp32"
        )


@pytest.mark.parametrize(
    ("version", "source"), [("10.13.0", "frame_net.onnx"), ("11.4.1", "frame_net.fp16.onnx")]
)
def test_export_engines_pick_the_onnx_and_cache_the_plan(exported, tmp_path, version, source):
    _, out = exported
    rec = _Recorder(version)
    trt = rec.module
    paths = build_export_engines(
        out,
        precision="fp16",
        opt_size=(128, 128),
        cache_dir=tmp_path,
        trt=trt,
        compute_capability=(8, 6),
    )
    assert [p.name.split("-")[0] for p in paths] == ["text_encoder", "frame_net"]
    assert all(p.read_bytes() == b"PLAN" for p in paths)
    parsed = [c[1] for c in rec.calls if c[0] == "parse"]
    assert parsed[1] == (out / source).stat().st_size  # the frame engine came from this ONNX
    n_builds = rec.names().count("build_serialized_network")
    build_export_engines(
        out,
        precision="fp16",
        opt_size=(128, 128),
        cache_dir=tmp_path,
        trt=trt,
        compute_capability=(8, 6),
    )
    assert rec.names().count("build_serialized_network") == n_builds  # cached: no rebuild
    build_export_engines(
        out,
        precision="fp16",
        opt_size=(128, 128),
        cache_dir=tmp_path,
        trt=trt,
        compute_capability=(9, 0),
    )
    assert rec.names().count("build_serialized_network") == n_builds + 2  # other GPU: rebuild


@pytest.mark.parametrize("version", ["10.13.0", "11.4.1"])
def test_int8_engines_build_the_qdq_frame_graph_and_an_fp32_text_engine(exported, tmp_path,
                                                                          version):  # fmt: skip
    _, out = exported
    folder = tmp_path / "export"
    shutil.copytree(out, folder)
    with pytest.raises(ExportError, match="re-export with --int8"):
        build_export_engines(folder, precision="int8", opt_size=(128, 128), cache_dir=tmp_path,
                             trt=_Recorder(version).module, compute_capability=(8, 6))  # fmt: skip
    qdq = folder / "frame_net.int8.onnx"  # a valid graph of another size stands in for QDQ
    model = onnx.load(str(folder / "frame_net.onnx"))
    model.doc_string = "stands in for the QDQ graph " * 8
    onnx.save(model, str(qdq))
    rec = _Recorder(version)
    text, frame = build_export_engines(folder, precision="int8", opt_size=(128, 128),
                                       cache_dir=tmp_path / "fresh", trt=rec.module,
                                       compute_capability=(8, 6))  # fmt: skip
    assert text.name.startswith("text_encoder-fp32-") and frame.name.startswith("frame_net-int8-")
    parsed = [c[1] for c in rec.calls if c[0] == "parse"]
    assert parsed == [(folder / "text_encoder.onnx").stat().st_size, qdq.stat().st_size]
    flags = [c[1] for c in rec.calls if c[0] == "set_flag"]
    assert flags == (["INT8"] if version.startswith("10") else [])  # on the frame engine only


def test_engine_file_is_a_model_source(exported, tmp_path):
    """The frame plan's sidecar makes the plan file alone a source for the TensorRT backend."""
    import json

    from engine.loading import resolve, source_kind

    _, out = exported
    text_plan, frame_plan = build_export_engines(
        out, precision="fp32", opt_size=(128, 128), cache_dir=tmp_path,
        trt=_Recorder("10.13.0").module, compute_capability=(8, 6),
    )  # fmt: skip
    side = json.loads(frame_plan.with_name(frame_plan.name + ".json").read_text())
    assert side["export"] == str(out.resolve()) and side["text_engine"] == text_plan.name
    assert source_kind(frame_plan) == "tensorrt_engine"
    resolved = resolve("tensorrt", frame_plan, precision="fp32")
    assert (resolved.text_engine, resolved.frame_engine) == (text_plan, frame_plan)
    assert resolved.export.folder == Path(side["export"])
    with pytest.raises(ExportError, match="fp32 engine; fp16 was asked"):
        resolve("tensorrt", frame_plan, precision="fp16")
    with pytest.raises(ValueError, match="use backend 'tensorrt'"):
        resolve("onnx", frame_plan)
    text_plan.unlink()
    with pytest.raises(ExportError, match="text engine .* is missing"):
        resolve("tensorrt", frame_plan, precision="fp32")
    frame_plan.with_name(frame_plan.name + ".json").unlink()
    with pytest.raises(ExportError, match="has no .*json next to it"):
        resolve("tensorrt", frame_plan, precision="fp32")


def test_profile_validation_message():
    with pytest.raises(ValueError, match="min <= opt <= max"):
        Profile(shapes=(("x", (2,), (1,), (3,)),))


@pytest.mark.trt
@pytest.mark.skipif(not HAS_TRT, reason="needs TensorRT and pycuda on a CUDA host")
def test_real_tensorrt_build(exported, tmp_path):  # pragma: no cover - GPU hosts only
    _, out = exported
    paths = build_export_engines(out, precision="fp32", opt_size=(128, 128), cache_dir=tmp_path)
    assert all(p.stat().st_size > 0 for p in paths)
