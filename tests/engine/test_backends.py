"""The torch and ONNX Runtime backends behind one interface: parity on real frames and errors."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from tiny_model import MAX_SIDE

from engine.backends import BACKENDS, parse_device
from engine.backends.onnx_backend import PROVIDERS
from engine.base import BackendUnavailable, TextState
from engine.loading import load_export, source_kind
from engine.manifest import ExportError, read_manifest, write_manifest
from export.check import compare_logits, real_frame_inputs
from export.engines import create_engine
from models.files import sha256_file

SIZE = (128, 160)
PHRASE = "the person riding a bike"


@pytest.fixture(scope="module")
def torch_engine(exported):
    eng = create_engine("torch", exported[0], input_size=SIZE)
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def onnx_engine(exported):
    eng = create_engine("onnx", exported[1], input_size=SIZE, intra_op_threads=2)
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def frames(torch_engine):
    return real_frame_inputs(torch_engine.config, size=SIZE, count=3, start=60)


def _copy_export(exported, tmp_path) -> Path:
    dst = tmp_path / "export"
    shutil.copytree(exported[1], dst)
    return dst


def _rehash(folder: Path) -> None:
    """Rewrite the manifest hashes as if the folder had been exported like this."""
    m = read_manifest(folder)
    files = {name: sha256_file(folder / name) for name in m.files}
    write_manifest(folder, type(m)(**{**m.__dict__, "files": files}))


def test_text_encoder_parity(torch_engine, onnx_engine):
    a, b = torch_engine.encode_text(PHRASE), onnx_engine.encode_text(PHRASE)
    assert isinstance(b, TextState) and a.phrase == b.phrase == PHRASE
    for name in ("words", "words_mask", "sentence"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.shape == y.shape and y.dtype == np.float32
        np.testing.assert_allclose(y, x, atol=1e-4, rtol=0)


def test_torch_and_onnx_agree_on_real_frames(torch_engine, onnx_engine, frames):
    ta, tb = torch_engine.encode_text(PHRASE), onnx_engine.encode_text(PHRASE)
    for image, flow in frames:
        a = torch_engine.segment(image, flow, ta)
        b = onnx_engine.segment(image, flow, tb)
        assert a.shape == b.shape == (1, 1, *SIZE) and b.dtype == np.float32
        stats = compare_logits(a, b)
        assert stats["max_abs"] <= 1e-3, stats
        assert stats["iou"] >= 0.99, stats


def test_io_binding_path_matches(exported, onnx_engine, frames):
    with create_engine("onnx", exported[1], input_size=SIZE, io_binding=True) as bound:
        text = bound.encode_text(PHRASE)
        ref_text = onnx_engine.encode_text(PHRASE)
        np.testing.assert_allclose(text.words, ref_text.words, atol=1e-6)
        image, flow = frames[0]
        first = bound.segment(image, flow, text)
        np.testing.assert_allclose(first, onnx_engine.segment(image, flow, ref_text), atol=1e-6)
        image2, flow2 = frames[1]
        second = bound.segment(image2, flow2, text)  # the reused output buffer must not alias
        assert not np.shares_memory(first, second)
        assert np.abs(first - second).max() > 0


def test_fp16_onnx_engine_agrees_with_torch(exported, torch_engine, frames):
    with create_engine("onnx", exported[1], input_size=SIZE, precision="fp16") as half:
        assert half.precision == "fp16"
        ta, tb = torch_engine.encode_text(PHRASE), half.encode_text(PHRASE)
        np.testing.assert_allclose(tb.words, ta.words, atol=2e-2)
        for image, flow in frames:
            stats = compare_logits(
                torch_engine.segment(image, flow, ta), half.segment(image, flow, tb)
            )
            assert stats["max_abs"] <= 2e-2 + 2e-2 * stats["ref_max_abs"], stats
            assert stats["iou"] >= 0.95, stats


def test_changing_the_phrase_changes_the_logits(onnx_engine, frames):
    image, flow = frames[0]
    a = onnx_engine.segment(image, flow, onnx_engine.encode_text("the person riding a bike"))
    b = onnx_engine.segment(image, flow, onnx_engine.encode_text("a car moving right"))
    assert np.abs(a - b).mean() > 1e-3


def test_flow_matters(onnx_engine, frames):
    image, flow = frames[0]
    text = onnx_engine.encode_text(PHRASE)
    assert (
        np.abs(
            onnx_engine.segment(image, flow, text)
            - onnx_engine.segment(image, np.zeros_like(flow), text)
        ).max()
        > 1e-4
    )


def test_wrong_input_sizes_are_rejected(exported, onnx_engine, frames):
    image, flow = frames[0]
    text = onnx_engine.encode_text(PHRASE)
    with pytest.raises(ValueError, match=r"image must be \(1, 3, 128, 160\) float32"):
        onnx_engine.segment(image[:, :, :64], flow, text)
    with pytest.raises(ValueError, match="flow must be"):
        onnx_engine.segment(image, flow.astype(np.float64), text)
    with pytest.raises(ValueError, match="multiple of 32"):
        create_engine("onnx", exported[1], input_size=(100, 160))
    with pytest.raises(ExportError, match=f"outside the exported range.*\\[64, {MAX_SIDE}\\]"):
        create_engine("onnx", exported[1], input_size=(512, 512))
    with pytest.raises(ValueError, match="missing inputs"):
        onnx_engine.run_frame({"image": image})
    with pytest.raises(ValueError, match="empty"):
        onnx_engine.encode_text("   ")


def test_unknown_backend_provider_device_and_precision(exported):
    with pytest.raises(ValueError, match="unknown backend 'tflite'; valid: torch, onnx, tensorrt"):
        create_engine("tflite", exported[1])
    with pytest.raises(
        ValueError, match="unknown ONNX Runtime provider 'openvino'; valid: cpu, cuda, tensorrt"
    ):
        create_engine("onnx", exported[1], input_size=SIZE, providers="openvino")
    with pytest.raises(ValueError, match="unknown device"):
        create_engine("onnx", exported[1], input_size=SIZE, device="gpu")
    with pytest.raises(ValueError, match="unknown precision"):
        create_engine("onnx", exported[1], input_size=SIZE, precision="int4")
    assert set(BACKENDS) == {"torch", "onnx", "tensorrt", "triton"}
    assert set(PROVIDERS) == {"cpu", "cuda", "tensorrt"}
    assert parse_device("cuda:1") == ("cuda", 1)


def test_unavailable_provider_is_an_error_not_a_silent_cpu_fallback(exported):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA provider present here")
    with pytest.raises(BackendUnavailable, match="'cuda'.*not in this onnxruntime build"):
        create_engine("onnx", exported[1], input_size=SIZE, providers=["cuda", "cpu"])


def test_corrupt_onnx_is_caught(exported, tmp_path):
    folder = _copy_export(exported, tmp_path)
    data = bytearray((folder / "frame_net.onnx").read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\xff" * 64
    (folder / "frame_net.onnx").write_bytes(bytes(data[: len(data) // 3]))
    with pytest.raises(ExportError, match="frame_net.onnx does not match its manifest"):
        create_engine("onnx", folder, input_size=SIZE)
    _rehash(folder)  # even with a consistent manifest the runtime refuses the file
    with pytest.raises(ExportError, match="cannot load .*frame_net.onnx with ONNX Runtime"):
        create_engine("onnx", folder, input_size=SIZE)


def test_mismatched_export_folder_is_caught(exported, tmp_path):
    from models.checkpoint import CONFIG_FILE
    from models.config import build_config

    folder = _copy_export(exported, tmp_path)
    # A config from another preset with the same tokenizer (text width 128 vs the graphs' 32).
    header = json.loads((folder / CONFIG_FILE).read_text())
    header["config"] = build_config("hinet_lite0_spm").to_dict()
    (folder / CONFIG_FILE).write_text(json.dumps(header))
    with pytest.raises(ExportError, match="config.json does not match its manifest"):
        load_export(folder)
    _rehash(folder)
    with pytest.raises(ExportError, match="config.json does not match the exported graphs"):
        create_engine("onnx", folder, input_size=SIZE)
    # A missing graph and a missing manifest.
    (folder / "text_encoder.onnx").unlink()
    with pytest.raises(ExportError, match="text_encoder.onnx is missing"):
        load_export(folder)
    (folder / "manifest.json").unlink()
    with pytest.raises(ValueError, match="neither an export folder"):
        create_engine("onnx", folder, input_size=SIZE)


def test_fp16_needs_an_fp16_export(exported, tmp_path):
    folder = _copy_export(exported, tmp_path)
    m = read_manifest(folder)
    for name in ("text_encoder.fp16.onnx", "frame_net.fp16.onnx"):
        (folder / name).unlink()
    files = {k: v for k, v in m.files.items() if ".fp16." not in k}
    write_manifest(folder, type(m)(**{**m.__dict__, "files": files, "precisions": ("fp32",)}))
    with pytest.raises(ExportError, match="no fp16 graphs.*--fp16"):
        create_engine("onnx", folder, input_size=SIZE, precision="fp16")


def test_onnx_backend_from_a_checkpoint_uses_the_export_cache(
    exported, tmp_path, monkeypatch, frames, onnx_engine
):
    from engine.manifest import checkpoint_sha256
    from export.engines import EXPORT_LAYOUT, cached_export

    monkeypatch.setenv("HINET_STREAM_CACHE", str(tmp_path))
    ckpt = exported[0]
    assert source_kind(ckpt) == "checkpoint" and source_kind(exported[1]) == "export"
    # Seed the cache with the (identical) export so the test does not export a second time.
    key = f"{checkpoint_sha256(ckpt)[:24]}-op18-fp32-l{EXPORT_LAYOUT}"
    shutil.copytree(exported[1], tmp_path / "exports" / key)
    assert cached_export(ckpt) == tmp_path / "exports" / key
    with create_engine("onnx", ckpt, input_size=SIZE) as eng:
        assert eng.export_folder == tmp_path / "exports" / key
        image, flow = frames[0]
        np.testing.assert_allclose(
            eng.segment(image, flow, eng.encode_text(PHRASE)),
            onnx_engine.segment(image, flow, onnx_engine.encode_text(PHRASE)),
            atol=1e-6,
        )


def test_load_engine_loads_only_ready_artefacts(exported):
    """engine/ loads; building (ONNX export, TensorRT plans) is export/'s, via create_engine."""
    from engine.backends import load_engine
    from engine.loading import resolve

    ckpt, folder = exported
    with pytest.raises(ValueError, match="is a checkpoint folder: export it first"):
        load_engine("onnx", ckpt, input_size=SIZE)
    with pytest.raises(ValueError, match="loads a frame_net engine file .* is an export folder"):
        resolve("tensorrt", folder)
    with load_engine("onnx", folder, input_size=SIZE, intra_op_threads=1) as eng:
        assert eng.input_size == SIZE


def test_an_engine_takes_the_models_input_size_unless_told(exported):
    from models.checkpoint import read_checkpoint_config

    ckpt, folder = exported
    configured = tuple(read_checkpoint_config(ckpt)[0].input_size)
    assert configured != SIZE
    for backend, source in (("torch", ckpt), ("onnx", folder)):
        with create_engine(backend, source) as eng:
            assert eng.input_size == configured, backend
        with create_engine(backend, source, input_size=SIZE) as eng:
            assert eng.input_size == SIZE, backend


def test_torch_backend_errors(exported):
    with pytest.raises(ValueError, match="needs a checkpoint folder"):
        create_engine("torch", exported[1], input_size=SIZE)
    with pytest.raises(ValueError, match="need a CUDA device"):
        create_engine("torch", exported[0], input_size=SIZE, precision="fp16")
    with pytest.raises(ValueError, match="need a CUDA device"):
        create_engine("torch", exported[0], input_size=SIZE, cuda_graphs=True)


def test_tensorrt_backend_errors_without_gpu(exported):
    with pytest.raises(ValueError, match="runs on a CUDA GPU"):
        create_engine("tensorrt", exported[1], input_size=SIZE, device="cpu")
    if importlib.util.find_spec("tensorrt") is None:
        with pytest.raises(BackendUnavailable, match="TensorRT is not installed"):
            create_engine("tensorrt", exported[1], input_size=SIZE, device="cuda")


@pytest.mark.gpu
@pytest.mark.skipif(
    importlib.util.find_spec("tensorrt") is None, reason="needs TensorRT + pycuda + CUDA GPU"
)
def test_tensorrt_matches_onnx(exported, onnx_engine, frames):  # pragma: no cover - GPU hosts only
    with create_engine("tensorrt", exported[1], input_size=SIZE, device="cuda") as trt_engine:
        image, flow = frames[0]
        a = onnx_engine.segment(image, flow, onnx_engine.encode_text(PHRASE))
        b = trt_engine.segment(image, flow, trt_engine.encode_text(PHRASE))
        assert compare_logits(a, b)["iou"] >= 0.99


def test_text_state_checks_the_prior_classes_shape():
    words, mask, sentence = (
        np.zeros((1, 4, 8), np.float32),
        np.ones((1, 4), np.float32),
        np.zeros((1, 8), np.float32),
    )
    state = TextState(phrase="x", words=words, words_mask=mask, sentence=sentence,
                      classes=np.full((1, 1000), 1e-3, np.float32))  # fmt: skip
    assert set(state.as_inputs()) == {"words", "words_mask", "sentence", "classes"}
    assert set(TextState(phrase="x", words=words, words_mask=mask, sentence=sentence).as_inputs()) == {
        "words", "words_mask", "sentence"}  # fmt: skip
    # 1001: the person class of config.prior_person after the 1000 ImageNet ones
    TextState(phrase="x", words=words, words_mask=mask, sentence=sentence,
              classes=np.full((1, 1001), 1e-3, np.float32))  # fmt: skip
    for bad in ((1, 10), (2, 1001), (1000,)):
        with pytest.raises(ValueError, match="bad classes shape"):
            TextState(phrase="x", words=words, words_mask=mask, sentence=sentence,
                      classes=np.zeros(bad, np.float32))  # fmt: skip
