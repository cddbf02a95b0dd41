"""The person class of the grounding prior: MediaPipe's segmenter through the project's own
TFLite converter, checked against the original interpreter on real frames, and inside HINet."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from models.files import OPENCV_DOC_DATA as OPENCV_DATA
from models.pretrained import PERSON_SEGMENTER, PretrainedFiles, PretrainedMissingError

MESSI = OPENCV_DATA / "messi5.jpg"  # a footballer mid-kick, a blurred crowd, grass below
#: Boxes drawn by eye on messi5.jpg (548x342), x0, y0, x1, y1: the player's shirt, and grass
#: with nobody on it.
SHIRT = (180, 110, 290, 230)
GRASS = (0, 290, 150, 342)


@pytest.fixture(scope="module")
def segmenter_file() -> Path:
    from models.pretrained import person_segmenter_file

    try:
        return person_segmenter_file()
    except PretrainedMissingError as exc:
        pytest.skip(str(exc))


def _frames() -> list[np.ndarray]:
    """Real RGB frames at the segmenter's 144x256: the photo and two of vtest.avi."""
    if not MESSI.is_file():
        pytest.skip("needs Debian's opencv-doc (scripts/setup.sh installs it)")
    out = [cv2.imread(str(MESSI))]
    cap = cv2.VideoCapture(str(OPENCV_DATA / "vtest.avi"))
    for index in (100, 300):
        cap.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, frame = cap.read()
        assert ok
        out.append(frame)
    cap.release()
    return [
        cv2.resize(cv2.cvtColor(f, cv2.COLOR_BGR2RGB), (256, 144), interpolation=cv2.INTER_AREA)
        for f in out
    ]


def test_converter_matches_the_original_interpreter_on_real_frames(segmenter_file) -> None:
    litert = pytest.importorskip("ai_edge_litert.interpreter")
    from models.tflite_graph import TFLiteGraph

    interpreter = litert.Interpreter(model_path=str(segmenter_file))
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    graph = TFLiteGraph(segmenter_file).eval()
    assert graph.input_shape == (1, 144, 256, 3)
    for frame in _frames():
        x = (frame.astype(np.float32) / 255.0)[None]
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        want = interpreter.get_tensor(out["index"])
        with torch.no_grad():
            (got,) = graph(torch.from_numpy(x))
        assert got.shape == want.shape == (1, 144, 256, 1)
        np.testing.assert_allclose(got.numpy(), want, atol=1e-3)
        assert want.max() > 0.9  # each frame shows people: the check is not on empty masks


def test_person_map_finds_the_player_not_the_grass(segmenter_file) -> None:
    from models.person import PersonMap

    if not MESSI.is_file():
        pytest.skip("needs Debian's opencv-doc")
    from engine.preprocess import prepare_image

    frame = cv2.imread(str(MESSI))
    image = torch.from_numpy(prepare_image(frame, (352, 544), (0.498,) * 3, (0.502,) * 3))
    person = PersonMap(mean=(0.498,) * 3, std=(0.502,) * 3)
    prob = person(image)[0, 0].numpy()
    assert prob.shape == (352, 544)
    prob = cv2.resize(prob, (548, 342))

    def mean(box: tuple[int, int, int, int]) -> float:
        x0, y0, x1, y1 = box
        return float(prob[y0:y1, x0:x1].mean())

    assert mean(SHIRT) > 0.7 and mean(GRASS) < 0.1
    assert not any(p.requires_grad for p in person.parameters())
    assert not person.state_dict()  # frozen and read from the package: never stored


def test_bad_tflite_files_are_refused_clearly(tmp_path, segmenter_file) -> None:
    from models.tflite_graph import TFLiteError, TFLiteGraph

    with pytest.raises(TFLiteError, match="not a TFLite file"):
        TFLiteGraph(b"\x00" * 64)
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(segmenter_file.read_bytes()[:5000])
    with pytest.raises(TFLiteError, match="corrupt"):
        TFLiteGraph(cut)
    from models.person import PersonMap

    square = Path(segmenter_file).with_name("selfie_segmentation.tflite")
    if square.is_file():  # the square variant: a real segmenter, but not the one PersonMap reads
        with pytest.raises(TFLiteError, match="144x256"):
            PersonMap(mean=(0.5,) * 3, std=(0.5,) * 3, path=square)


def test_missing_package_names_the_install_command() -> None:
    from models.pretrained import minilm_files

    fake = PretrainedFiles(**{**PERSON_SEGMENTER.__dict__, "module": "no_such_mediapipe"})
    with pytest.raises(PretrainedMissingError, match="pip install --no-deps mediapipe==0.10.21"):
        minilm_files(fake)


def test_person_phrases_weigh_the_person_class_and_export_with_parity(
    tiny_person_checkpoint,
) -> None:
    person_checkpoint = tiny_person_checkpoint
    pytest.importorskip("onnxruntime")
    from engine.preprocess import prepare_image
    from export.engines import create_engine
    from models.checkpoint import read_checkpoint_config

    config, _, _ = read_checkpoint_config(person_checkpoint)
    assert config.prior_person
    ref = create_engine("torch", person_checkpoint, input_size=(160, 256))
    onnx = create_engine("onnx", person_checkpoint, input_size=(160, 256))
    walker, van = ref.encode_text("the woman walking"), ref.encode_text("the white van")
    assert walker.classes.shape == (1, 1001)
    assert walker.classes[0, 1000] > 0.5 > van.classes[0, 1000]
    frame = cv2.imread(str(MESSI)) if MESSI.is_file() else pytest.skip("needs opencv-doc")
    image = prepare_image(frame, (160, 256), config.image_mean, config.image_std)
    flow = np.zeros((1, 2, 160, 256), np.float32)
    want = ref.segment(image, flow, walker)
    got = onnx.segment(image, flow, onnx.encode_text("the woman walking"))
    np.testing.assert_allclose(got, want, atol=1e-3)
    # The person class reaches the logits: on the player's shirt the person phrase scores
    # higher than the van phrase, beyond what the random tiny weights alone would give.
    other = ref.segment(image, flow, van)
    x0, y0, x1, y1 = (round(v * s) for v, s in zip(SHIRT, (256 / 548, 160 / 342) * 2))
    assert (want - other)[0, 0, y0:y1, x0:x1].mean() > 0.1
    ref.close()
    onnx.close()
