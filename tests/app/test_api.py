"""The page's API through gradio_client against the real server (``python -m app``)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from app_helpers import (
    MAX_FRAMES,
    assert_masks_match,
    count_frames,
    read_masks_zip,
    reference_masks,
    write_plain_clip,
)

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402


def _client(server, tmp_path: Path) -> Client:
    return Client(server.url, verbose=False, download_files=str(tmp_path))


def _segment(client: Client, video: Path, phrase: str, *, engine: str = "torch", threshold=0.5,
             keyframes: str | None = None):  # fmt: skip
    """``(video, masks_zip, plot, summary)``: the summary read from the page's JSON download."""
    extra = () if keyframes is None else (keyframes,)
    video_out, masks_zip, plot, table, summary_json = client.predict(
        handle_file(str(video)), phrase, engine, threshold, *extra, api_name="/segment_video"
    )
    summary = json.loads(Path(summary_json).read_text())
    assert f"**{summary['frames']} frames**" in table and "bottleneck:" in table
    return video_out, masks_zip, plot, summary


def test_segment_clip(app_server, target_clip, tiny_engine, tmp_path):
    video, masks_zip, plot, summary = _segment(_client(app_server, tmp_path), target_clip.path,
                                               target_clip.phrase)  # fmt: skip
    # a real H.264 mp4 with every frame, at the clip's size
    cap = cv2.VideoCapture(video)
    fourcc = int(cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode()
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    cap.release()
    assert fourcc.lower() in ("avc1", "h264"), fourcc
    assert (w, h) == target_clip.size
    assert count_frames(Path(video)) == target_clip.frames
    # one PNG per frame, exactly the masks the session code gives for this phrase
    masks = read_masks_zip(Path(masks_zip))
    want = reference_masks(tiny_engine, target_clip.path, target_clip.phrase)
    assert_masks_match(masks, want)
    # the latency plot is a PNG picture; the summary describes this run
    assert Path(plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = cv2.imread(plot)
    assert img.shape[0] > 100 and img.shape[1] > 200
    assert summary["frames"] == target_clip.frames
    assert summary["phrase"] == target_clip.phrase.lower()
    assert summary["backend"] == "torch" and summary["input_size"] == [64, 64]
    for stage in ("flow", "inference", "overlay", "end_to_end"):  # the stream's stage names
        assert summary["stages_ms"][stage]["p50"] > 0
    assert set(summary["wait_ms"]) == {"flow", "inference", "overlay"}
    assert summary["bottleneck"]["stage"] in summary["stages_ms"]
    assert 0 <= summary["score"]["frames_found"] <= summary["frames"]


def test_change_phrase(app_server, target_clip, tiny_engine, tmp_path):
    client = _client(app_server, tmp_path)
    results = {}
    for phrase in ("the purple triangle", "the big orange circle moving up"):
        _, masks_zip, _, summary = _segment(client, target_clip.path, phrase)
        assert summary["phrase"] == phrase
        results[phrase] = read_masks_zip(Path(masks_zip))
        assert_masks_match(results[phrase], reference_masks(tiny_engine, target_clip.path, phrase))
    a, b = results.values()
    assert any((x != y).any() for x, y in zip(a, b)), "the phrase did not change the masks"


def test_threshold_changes_masks(app_server, target_clip, tiny_engine, tmp_path):
    client = _client(app_server, tmp_path)
    _, low, _, s_low = _segment(client, target_clip.path, target_clip.phrase, threshold=0.2)
    _, high, _, s_high = _segment(client, target_clip.path, target_clip.phrase, threshold=0.8)
    assert s_low["threshold"] == 0.2 and s_high["threshold"] == 0.8
    area_low = sum(m.sum() for m in read_masks_zip(Path(low)))
    area_high = sum(m.sum() for m in read_masks_zip(Path(high)))
    assert area_low >= area_high
    want = reference_masks(tiny_engine, target_clip.path, target_clip.phrase, threshold=0.2)
    assert_masks_match(read_masks_zip(Path(low)), want)


@pytest.mark.parametrize(
    ("kind", "phrase", "message"),
    [
        ("text", "the red circle", "not a video"),
        ("png", "the red circle", "not a video"),
        ("too_long", "the red circle", f"this server takes up to {MAX_FRAMES} frames"),
        ("clip", "", "phrase is empty"),
        ("clip", "   ", "phrase is empty"),
        ("clip", "the red circle " * 20, "characters; the limit is 200"),
    ],
)
def test_bad_inputs_give_clear_errors(app_server, target_clip, tmp_path, kind, phrase, message):
    if kind == "text":
        path = tmp_path / "notes.mp4"  # a video name does not make a video
        path.write_text("this is not a video\n" * 50)
    elif kind == "png":
        path = tmp_path / "still.mp4"
        cv2.imwrite(str(tmp_path / "still.png"), np.full((48, 64, 3), 128, np.uint8))
        (tmp_path / "still.png").rename(path)
    elif kind == "too_long":
        path = write_plain_clip(tmp_path / "long.mp4", frames=MAX_FRAMES + 5)
    else:
        path = target_clip.path
    with pytest.raises(AppError) as info:
        _segment(_client(app_server, tmp_path), path, phrase)
    assert message in str(info.value)
    assert "Traceback" not in str(info.value)


def test_unknown_engine_rejected(app_server, target_clip, tmp_path):
    with pytest.raises((AppError, ValueError)) as info:
        _segment(
            _client(app_server, tmp_path), target_clip.path, "the red circle", engine="tensorrt"
        )
    assert "tensorrt" in str(info.value)


def test_live_frames_keep_session_state(app_server, target_clip, tmp_path):
    cap = cv2.VideoCapture(str(target_clip.path))
    frames = []
    for i in range(3):
        ok, frame = cap.read()
        assert ok
        cv2.imwrite(str(tmp_path / f"f{i}.png"), frame)
        frames.append(tmp_path / f"f{i}.png")
    cap.release()
    client = _client(app_server, tmp_path)
    out, stats = client.predict(
        handle_file(str(frames[0])), "", "torch", 0.5, api_name="/segment_frame"
    )
    assert "phrase is empty" in stats
    for frame in frames:
        out, stats = client.predict(
            handle_file(str(frame)), "the red circle", "torch", 0.5, api_name="/segment_frame"
        )
        img = cv2.imread(out)
        assert img.shape[:2] == target_clip.size[::-1]
        assert 'phrase: "the red circle"' in stats and "| inference |" in stats
        assert "fps" in stats
    # the session keeps its statistics across requests: fps needs >= 2 frames of this session
    assert not stats.startswith("**0.0 fps")
    # a bad phrase while streaming: a message, and the stream keeps its last valid phrase
    for bad, why in [("the red\x07circle", "control character"), ("the red c\u0430r", "mixes")]:
        out, stats = client.predict(
            handle_file(str(frames[0])), bad, "torch", 0.5, api_name="/segment_frame"
        )
        assert "Phrase not used" in stats and why in stats
        assert 'phrase: "the red circle"' in stats and cv2.imread(out) is not None


def test_two_clients_get_their_own_results(app_server, target_clip, tiny_engine, tmp_path):
    phrases = ["the purple triangle", "the big orange circle moving up"]
    results: dict[str, tuple] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def work(phrase: str, folder: Path) -> None:
        try:
            client = _client(app_server, folder)
            barrier.wait(timeout=60)
            live = []
            for _ in range(2):  # interleaved live frames: each session keeps its own phrase
                for attempt in range(2):
                    try:
                        _, stats = client.predict(handle_file(str(still)), phrase, "torch", 0.5,
                                                  api_name="/segment_frame")  # fmt: skip
                        break
                    except httpx.RemoteProtocolError:
                        # Gradio names an output file by its content: two sessions' identical
                        # frames share one cache file, and one download can meet the other's
                        # rewrite (peer closed the connection mid-body); the frame is asked again
                        if attempt:
                            raise
                live.append(stats)
            _, masks_zip, _, summary = _segment(client, target_clip.path, phrase)
            results[phrase] = (live, summary, read_masks_zip(Path(masks_zip)))
        except BaseException as exc:  # re-raised in the main thread
            errors.append(exc)

    cap = cv2.VideoCapture(str(target_clip.path))
    still = tmp_path / "still.png"
    cv2.imwrite(str(still), cap.read()[1])
    cap.release()
    threads = []
    for i, phrase in enumerate(phrases):
        (tmp_path / str(i)).mkdir()
        threads.append(threading.Thread(target=work, args=(phrase, tmp_path / str(i))))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    if errors:
        raise errors[0]
    for phrase in phrases:
        live, summary, masks = results[phrase]
        assert all(f'phrase: "{phrase}"' in s for s in live), live
        assert summary["phrase"] == phrase
        assert_masks_match(masks, reference_masks(tiny_engine, target_clip.path, phrase))


def test_demo_example_works_out_of_the_box(app_server, tmp_path):
    from app.examples import default_examples
    from engine.demo import demo_clip

    example = default_examples()[0]  # the page's first example is the shipped demo clip
    assert (example.video, example.phrase) == (demo_clip().path, demo_clip().phrase)
    frames = count_frames(example.video)
    assert frames >= 20
    video, masks_zip, _, summary = _segment(_client(app_server, tmp_path), example.video,
                                            example.phrase)  # fmt: skip
    assert summary["phrase"] == example.phrase
    assert count_frames(Path(video)) == frames
    assert len(read_masks_zip(Path(masks_zip))) == frames


def test_keyframes_run_the_network_on_every_second_frame(app_server, target_clip, tmp_path):
    from app.validation import KEYFRAME_CHOICES

    client = _client(app_server, tmp_path)
    every_2nd = next(k for k, v in KEYFRAME_CHOICES.items() if v == "2")
    *_, summary = _segment(client, target_clip.path, target_clip.phrase, keyframes=every_2nd)
    assert summary["keyframes"] == "2" and summary["frames"] == target_clip.frames
    assert summary["frames_inferred"] == (target_clip.frames + 1) // 2
    *_, plain = _segment(client, target_clip.path, target_clip.phrase)  # the default
    assert plain["keyframes"] == "1" and plain["frames_inferred"] == target_clip.frames
    with pytest.raises(AppError, match="not in the list of choices|keyframes must be one of"):
        _segment(client, target_clip.path, target_clip.phrase, keyframes="every 7th frame")
