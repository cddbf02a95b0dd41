"""The text encoder and the frame network export to ONNX (dynamo, opset 18) and match ORT."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from models.hinet import HINet, build_model

ATOL = 1e-4


class _Text(nn.Module):
    def __init__(self, model: HINet) -> None:
        super().__init__()
        self.model = model

    def forward(self, token_ids, token_mask):
        return self.model.encode_text(token_ids, token_mask)


class _Frame(nn.Module):
    def __init__(self, model: HINet) -> None:
        super().__init__()
        self.model = model

    def forward(self, image, flow, words, words_mask, sentence):
        return self.model.forward_frame(image, flow, words, words_mask, sentence)


def _export(module: nn.Module, args: tuple, names_in, names_out, path) -> ort.InferenceSession:
    torch.onnx.export(
        module,
        args,
        str(path),
        input_names=list(names_in),
        output_names=list(names_out),
        opset_version=18,
        dynamo=True,
        external_data=False,
    )
    onnx.checker.check_model(onnx.load(str(path)))
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("preset", ["hinet_tiny"])
def test_text_and_frame_export_match_onnxruntime(tmp_path, make_inputs, preset):
    torch.manual_seed(0)
    model = build_model(preset).eval()
    image, flow, ids, mask = make_inputs(size=(64, 96), n_tokens=5)

    text_sess = _export(
        _Text(model).eval(),
        (ids, mask),
        ("token_ids", "token_mask"),
        ("words", "words_mask", "sentence"),
        tmp_path / "text_encoder.onnx",
    )
    # Fresh inputs (a different phrase length) for the comparison.
    _, _, ids2, mask2 = make_inputs(seed=1, n_tokens=9)
    with torch.no_grad():
        ref_text = model.encode_text(ids2, mask2)
    got_text = text_sess.run(None, {"token_ids": ids2.numpy(), "token_mask": mask2.numpy()})
    for ref, got in zip(ref_text, got_text):
        np.testing.assert_allclose(got, ref.numpy(), atol=ATOL, rtol=0)

    words, wmask, sent = ref_text
    frame_sess = _export(
        _Frame(model).eval(),
        (image, flow, words, wmask, sent),
        ("image", "flow", "words", "words_mask", "sentence"),
        ("logits",),
        tmp_path / "frame_net.onnx",
    )
    image2, flow2, _, _ = make_inputs(seed=2)
    with torch.no_grad():
        ref = model.forward_frame(image2, flow2, words, wmask, sent).numpy()
    feeds = {
        "image": image2.numpy(),
        "flow": flow2.numpy(),
        "words": words.numpy(),
        "words_mask": wmask.numpy(),
        "sentence": sent.numpy(),
    }
    (got,) = frame_sess.run(None, feeds)
    assert got.shape == (1, 1, 64, 96) and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, atol=ATOL, rtol=0)
