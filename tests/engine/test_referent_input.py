"""The referent map as a network input (``config.referent``): the model, the exported graph, the
engine's checks and the stream's session, which hands the chosen instance's map to the network."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from engine.grounding import box_map
from models.files import OPENCV_DOC_DATA
from models.hinet import build_model

SIZE = (128, 160)


def _box(h: int, w: int) -> np.ndarray:
    return box_map(np.array([[w * 0.2, h * 0.3, w * 0.45, h * 0.9]]), [1.0], (h, w))[None, None]


def test_a_fresh_referent_path_changes_nothing_until_trained():
    """Warm-starting the shipped default into the referent model must start from its outputs:
    the injections' last layers are zero, so any map gives the same logits as none."""
    torch.manual_seed(0)
    model = build_model("hinet_tiny_referent", pretrained_backbone=False,
                        pretrained_text=False).eval()  # fmt: skip
    h, w = SIZE
    image, flow = torch.randn(1, 3, h, w), torch.zeros(1, 2, h, w)
    ids, mask = torch.tensor([[101, 1996, 2158, 102]]), torch.ones(1, 4, dtype=torch.int64)
    with torch.no_grad():
        text = model.encode_text(ids, mask)
        none = model.forward_frame(image, flow, *text)
        boxed = model.forward_frame(image, flow, *text, referent=torch.from_numpy(_box(h, w)))
        logits, aux = model.forward_aux(image, flow, ids, mask,
                                        referent=torch.from_numpy(_box(h, w)))  # fmt: skip
    assert torch.equal(none, boxed)
    torch.testing.assert_close(logits, none)


def test_without_a_sure_instance_the_network_is_the_one_without_the_input():
    """The injections scale by the map's peak: an all-zero map leaves exactly the network the
    referent model was warm-started from, however its injections were trained."""
    torch.manual_seed(0)
    model = build_model("hinet_tiny_referent", pretrained_backbone=False,
                        pretrained_text=False).eval()  # fmt: skip
    with torch.no_grad():
        for block in model.referent_in.values():
            block.out.weight.normal_(0.0, 2.0)
    plain = build_model("hinet_tiny_prior", pretrained_backbone=False, pretrained_text=False)
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    assert not missing and all(k.startswith("referent_in.") for k in unexpected)
    plain.eval()
    h, w = SIZE
    image, flow = torch.randn(1, 3, h, w), torch.zeros(1, 2, h, w)
    ids, mask = torch.tensor([[101, 1996, 2158, 102]]), torch.ones(1, 4, dtype=torch.int64)
    with torch.no_grad():
        text = model.encode_text(ids, mask)
        zero = model.forward_frame(image, flow, *text, referent=torch.zeros(1, 1, h, w))
        without = plain.forward_frame(image, flow, *plain.encode_text(ids, mask))
        boxed = model.forward_frame(image, flow, *text, referent=torch.from_numpy(_box(h, w)))
    torch.testing.assert_close(zero, without)
    assert (boxed - zero).abs().max() > 0.05


def test_training_only_the_injections_leaves_the_rest_exactly_as_loaded():
    torch.manual_seed(0)
    model = build_model("hinet_tiny_referent", pretrained_backbone=False, pretrained_text=False)
    trained = model.train_only(("referent_in.",))
    assert trained and all(n.startswith("referent_in.") for n in trained)
    assert all(not p.requires_grad for n, p in model.named_parameters() if n not in trained)
    before = {k: v.clone() for k, v in model.state_dict().items() if "running_" in k}
    model.train()
    h, w = SIZE
    ids, mask = torch.tensor([[101, 1996, 2158, 102]]), torch.ones(1, 4, dtype=torch.int64)
    referent = torch.from_numpy(_box(h, w)).repeat(2, 1, 1, 1)
    image, flow = torch.randn(2, 3, h, w), torch.zeros(2, 2, h, w)
    logits, _ = model.forward_aux(
        image, flow, ids.repeat(2, 1), mask.repeat(2, 1), referent=referent
    )
    logits.mean().backward()
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())  # BatchNorm statistics kept
    assert model.referent_in["3"].out.weight.grad is not None
    with pytest.raises(ValueError, match="no parameter has such a name"):
        model.train_only(("no_such_module.",))


@pytest.fixture(scope="module")
def engines(tiny_referent_checkpoint):
    pytest.importorskip("onnxruntime")
    from export.engines import create_engine

    ref = create_engine("torch", tiny_referent_checkpoint, input_size=SIZE)
    onnx = create_engine("onnx", tiny_referent_checkpoint, input_size=SIZE)
    yield ref, onnx
    ref.close()
    onnx.close()


def test_the_exported_graph_reads_the_referent_with_parity(engines):
    ref, onnx = engines
    assert ref.takes_referent and onnx.takes_referent
    h, w = SIZE
    rng = np.random.default_rng(0)
    image = rng.standard_normal((1, 3, h, w), dtype=np.float32)
    flow = np.zeros((1, 2, h, w), np.float32)
    text_t, text_o = ref.encode_text("the man on the left"), onnx.encode_text("the man on the left")
    boxed = _box(h, w)
    a, b = ref.segment(image, flow, text_t, boxed), onnx.segment(image, flow, text_o, boxed)
    np.testing.assert_allclose(a, b, atol=2e-3)
    plain = onnx.segment(image, flow, text_o)  # no map: all zero
    assert np.abs(plain - b).max() > 0.05  # the graph really reads it
    np.testing.assert_allclose(plain, onnx.segment(image, flow, text_o, 0 * boxed), atol=1e-6)


def test_a_referent_of_the_wrong_size_is_refused_before_the_runtime(engines):
    _, onnx = engines
    h, w = SIZE
    text = onnx.encode_text("the dog")
    image, flow = np.zeros((1, 3, h, w), np.float32), np.zeros((1, 2, h, w), np.float32)
    with pytest.raises(ValueError, match=r"referent must be \(1, 1, 128, 160\) float32"):
        onnx.segment(image, flow, text, np.zeros((1, 1, 64, 80), np.float32))
    with pytest.raises(ValueError, match="referent must be"):
        onnx.segment(image, flow, text, _box(h, w).astype(np.float64))


def test_the_session_hands_the_chosen_instance_to_the_network(engines):
    """On a real street frame, "the person on the far left": the network's referent input is the
    leftmost walker's box (peak at its centre); a phrase naming no COCO class gives none."""
    from engine.detector import Detector
    from engine.instances import InstanceEvidence
    from engine.session import Segmenter

    vtest = OPENCV_DOC_DATA / "vtest.avi"
    if not vtest.is_file():
        pytest.skip("needs opencv-doc")
    cap = cv2.VideoCapture(str(vtest))
    cap.set(cv2.CAP_PROP_POS_FRAMES, 299)
    frames = [cap.read()[1] for _ in range(2)]
    cap.release()
    _, onnx = engines
    seen: list[np.ndarray | None] = []
    real = onnx.segment_prior

    def spy(image, flow, text, referent=None):
        seen.append(referent)
        return real(image, flow, text, referent)

    onnx.segment_prior = spy  # the real engine, its inputs recorded
    try:
        seg = Segmenter(onnx, instances=InstanceEvidence(Detector(threads=1), every=1))
        seg.set_phrase("the person on the far left")
        seg.step(frames[0])
        result = seg.step(frames[1])
        seg.set_phrase("the lamp post")
        seg.step(frames[1])
    finally:
        del onnx.segment_prior
    assert len(seen) == 3 and seen[2] is None
    chosen = [r for r in result.instances if r["chosen"]]
    x0, y0, x1, y1 = chosen[0]["box"]
    fh, fw = frames[1].shape[:2]
    ref = seen[1]
    assert ref is not None and ref.shape == (1, 1, *SIZE) and ref.dtype == np.float32
    y, x = np.unravel_index(np.argmax(ref[0, 0]), SIZE)
    sy, sx = SIZE[0] / fh, SIZE[1] / fw
    assert x0 * sx - 1 <= x <= x1 * sx + 1 and y0 * sy - 1 <= y <= y1 * sy + 1
    assert (ref > 0).mean() < 0.1  # one walker's box, not the frame
