"""The page on the ONNX Runtime engine, served from an export folder (torch-free loading path)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from app_helpers import (
    NET_SIZE,
    AppServer,
    assert_masks_match,
    count_frames,
    read_masks_zip,
    reference_masks,
)

pytest.importorskip("onnxruntime")
gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

pytestmark = pytest.mark.slow  # needs the session's export (about a minute on 2 cores)


@pytest.fixture(scope="module")
def onnx_server(tiny_export, tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx_app")
    server = AppServer(
        ["--checkpoint", str(tiny_export), "--backend", "onnx",
         "--size", f"{NET_SIZE[0]}x{NET_SIZE[1]}", "--no-examples"],
        log=root / "server.log",
        cache=root / "cache",
    ).start()  # fmt: skip
    yield server
    server.stop()


def test_segment_clip_with_onnx(onnx_server, target_clip, tiny_engine, tmp_path):
    client = Client(onnx_server.url, verbose=False, download_files=str(tmp_path))
    info = client.view_api(print_info=False, return_format="dict")
    engines = info["named_endpoints"]["/segment_video"]["parameters"][2]["type"]["enum"]
    assert engines == ["onnx"]  # an export folder has no torch weights
    video, masks_zip, _, _, summary_json = client.predict(
        handle_file(str(target_clip.path)), target_clip.phrase, "onnx", 0.5,
        api_name="/segment_video",
    )  # fmt: skip
    summary = json.loads(Path(summary_json).read_text())
    assert summary["backend"] == "onnx" and summary["frames"] == target_clip.frames
    assert count_frames(Path(video)) == target_clip.frames
    want = reference_masks(tiny_engine, target_clip.path, target_clip.phrase)  # torch
    assert_masks_match(read_masks_zip(Path(masks_zip)), want, agree=0.99)
