"""End to end in a real headless Chromium (Debian's /usr/bin/chromium) driven by playwright.

One browser session per module (:func:`browser_run`): type a phrase, upload the real street demo
clip (``demo:street``, "the cyclist", with the box where he is in every frame; the page's first
example, ``demo:people``, is checked through the API in ``test_api.py``), wait for the result, download the returned video and masks the
way the page links them, then stream the (fake) webcam for a few seconds. The tests below check
what came back.

The model: the trained default (``models.checkpoint.DEFAULT_CHECKPOINT``) at its own input size
when it exists, else a tiny untrained checkpoint. The masks must always equal what the stream's
session code computes in-process for the same clip and phrase (deterministic for any model); "the
mask lies on the cyclist" is checked only with the trained model (an untrained one segments
arbitrarily).

Set ``HINET_APP_SCREENSHOT=docs/img/app.png`` to also save the page screenshot there.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from app_helpers import (
    NET_SIZE,
    ROOT,
    AppServer,
    TargetClip,
    assert_masks_match,
    count_frames,
    read_masks_zip,
)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
    # a synthetic camera, allowed without a prompt, for the live webcam panel
    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
]  # fmt: skip

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} missing (apt-get install chromium)"
    ),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (dev extra)")


@dataclass(frozen=True)
class Model:
    checkpoint: Path
    size: tuple[int, int]
    trained: bool


@dataclass(frozen=True)
class BrowserRun:
    model: Model
    clip: TargetClip
    video: Path
    masks: Path
    summary_text: str
    screenshot: Path
    live_stats: str
    live_frame: np.ndarray | None
    phrase_help: tuple  # (disabled while empty, (text, disabled) overlong, (text, disabled) usable)


@pytest.fixture(scope="module")
def model(tiny_checkpoint) -> Model:
    from models.checkpoint import DEFAULT_CHECKPOINT, read_checkpoint_config

    if (DEFAULT_CHECKPOINT / "model.safetensors").is_file():
        config, _, _ = read_checkpoint_config(DEFAULT_CHECKPOINT)
        return Model(DEFAULT_CHECKPOINT, tuple(config.input_size), True)
    return Model(tiny_checkpoint, NET_SIZE, False)


@pytest.fixture(scope="module")
def browser_server(model, tmp_path_factory):
    pytest.importorskip("gradio")
    root = tmp_path_factory.mktemp("browser_server")
    server = AppServer(
        ["--checkpoint", str(model.checkpoint), "--backend", "torch", "--backends", "torch",
         "--size", f"{model.size[0]}x{model.size[1]}", "--no-examples"],
        log=root / "server.log",
        cache=root / "cache",
    ).start()  # fmt: skip
    yield server
    server.stop()


def _street_clip() -> TargetClip:
    """The real demo clip (H.264 already), its "truth" the box where the cyclist is."""
    from engine.demo import demo_clip

    street = demo_clip("street")
    cap = cv2.VideoCapture(str(street.path))
    size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    cap.release()
    frames = count_frames(street.path)
    x0, y0, x1, y1 = street.box
    boxes = np.zeros((frames, size[1], size[0]), bool)
    boxes[:, y0:y1, x0:x1] = True
    return TargetClip(street.path, street.phrase, boxes, frames, size)


def _image_from_src(page, src: str | None, path: Path) -> np.ndarray | None:
    if not src:
        return None
    if src.startswith("data:"):
        data = base64.b64decode(src.split(",", 1)[1])
    else:
        data = _download(page, src, path).read_bytes()
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


def _download(page, url: str, path: Path) -> Path:
    response = page.request.get(url)
    assert response.ok, f"{url}: HTTP {response.status}"
    path.write_bytes(response.body())
    return path


@pytest.fixture(scope="module")
def browser_run(browser_server, model, tmp_path_factory) -> BrowserRun:
    out = tmp_path_factory.mktemp("browser")
    clip = _street_clip()
    with sync_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(out / "user-data"),  # a fresh profile
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 1000},
        )
        try:
            page = context.new_page()
            page.goto(browser_server.url)
            page.wait_for_selector("#phrase textarea", timeout=60_000)
            # 0. the run button waits for a usable phrase; the help line says why
            run_button = page.locator("#run")
            help_line = page.locator("#phrase-help")
            empty_disabled = run_button.is_disabled()
            page.locator("#phrase textarea").fill("the red circle " * 40)
            page.wait_for_function(
                "() => document.querySelector('#phrase-help').innerText.includes('Not usable')",
                timeout=30_000,
            )
            overlong = (help_line.inner_text(), run_button.is_disabled())
            # 1. a phrase and a clip in, the segmented video, masks and plot out
            page.locator("#phrase textarea").fill(clip.phrase)
            page.wait_for_function(
                "() => /\\d+ words/.test(document.querySelector('#phrase-help').innerText)",
                timeout=30_000,
            )
            usable = (help_line.inner_text(), run_button.is_disabled())
            page.locator("#video-in input[type=file]").set_input_files(str(clip.path))
            page.wait_for_selector("#video-in video", timeout=30_000)  # upload finished
            page.locator("#run").click()
            page.wait_for_selector("#video-out video[src]", timeout=120_000)
            page.wait_for_selector("#masks-out a[href]", timeout=30_000)
            page.wait_for_selector("#latency-plot img", timeout=30_000)
            video_url = page.locator("#video-out video").get_attribute("src")
            masks_url = page.locator("#masks-out a[href]").first.get_attribute("href")
            video = _download(page, video_url, out / "overlay.mp4")
            masks = _download(page, masks_url, out / "masks.zip")
            summary_text = page.locator("#summary").inner_text()
            screenshot = out / "app.png"
            page.screenshot(path=str(screenshot), full_page=True)
            # 2. the live webcam panel (Chromium's fake camera)
            page.get_by_role("tab", name="Webcam (live)").click()
            page.locator("#webcam-in [title='grant webcam access'] button").click()
            page.locator("#webcam-in button[aria-label='capture photo']").click()  # Record
            live_stats, live_frame = "", None
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:  # until this session has >= 2 frames (fps > 0)
                live_stats = page.locator("#webcam-stats").inner_text()
                fps = re.search(r"([0-9.]+) fps", live_stats)
                if fps and float(fps.group(1)) > 0 and "inference" in live_stats:
                    src = page.locator("#webcam-out img").first.get_attribute("src")
                    try:
                        live_frame = _image_from_src(page, src, out / "live.img")
                        break
                    except sync_api.Error:  # a streamed frame is transient: the next one will do
                        pass
                time.sleep(0.5)
            page.screenshot(path=str(out / "live.png"))
        finally:
            context.close()
    target = os.environ.get("HINET_APP_SCREENSHOT")
    if target:
        dest = Path(target) if Path(target).is_absolute() else ROOT / target
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(screenshot, dest)
    return BrowserRun(model, clip, video, masks, summary_text, screenshot, live_stats, live_frame,
                      (empty_disabled, overlong, usable))  # fmt: skip


def test_returned_video_has_every_frame(browser_run):
    assert count_frames(browser_run.video) == browser_run.clip.frames
    cap = cv2.VideoCapture(str(browser_run.video))
    fourcc = int(cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode()
    size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    cap.release()
    assert fourcc.lower() in ("avc1", "h264"), fourcc  # browser-playable H.264
    assert size == browser_run.clip.size
    assert f"{browser_run.clip.frames} frames" in browser_run.summary_text
    assert "bottleneck:" in browser_run.summary_text


def test_phrase_help_and_run_button(browser_run):
    empty_disabled, (long_text, long_disabled), (text, disabled) = browser_run.phrase_help
    assert empty_disabled and long_disabled and not disabled
    assert "Not usable" in long_text and "limit" in long_text
    words = len(browser_run.clip.phrase.split())
    assert f"{words} words" in text and "room for about" in text


def test_masks_equal_the_session_code(browser_run):
    from app_helpers import reference_masks

    masks = read_masks_zip(browser_run.masks)
    assert len(masks) == browser_run.clip.frames
    assert all(m.shape == browser_run.clip.masks.shape[1:] for m in masks)
    from export.engines import create_engine

    model = browser_run.model
    with create_engine("torch", model.checkpoint, device="cpu", input_size=model.size) as engine:
        want = reference_masks(engine, browser_run.clip.path, browser_run.clip.phrase)
    assert_masks_match(masks, want)


def test_mask_lies_on_the_cyclist(browser_run):
    if not browser_run.model.trained:
        pytest.skip(
            "no trained default model in models/weights: an untrained checkpoint "
            "segments arbitrarily (test_masks_equal_the_session_code checks its masks exactly)"
        )
    masks = np.stack(read_masks_zip(browser_run.masks))  # (T, H, W)
    box = browser_run.clip.masks  # (T, H, W): the box where the cyclist is
    assert masks.any(axis=(1, 2)).all(), "some frames have an empty mask"
    inside = (masks & box).sum(axis=(1, 2)) / masks.sum(axis=(1, 2))
    cover = (masks & box).sum(axis=(1, 2)) / box.sum(axis=(1, 2))
    assert inside.min() >= 0.5 and inside.mean() >= 0.8, f"inside the box: {inside.round(2)}"
    assert cover.mean() >= 0.3, f"share of the box covered: {cover.round(2)}"  # not a speck


def test_live_webcam_shows_masked_frames_and_latency(browser_run):
    assert "fps" in browser_run.live_stats, browser_run.live_stats
    for stage in ("flow", "inference", "overlay"):
        assert stage in browser_run.live_stats, browser_run.live_stats
    assert browser_run.live_frame is not None and browser_run.live_frame.shape[2] == 3


def test_screenshot_saved(browser_run):
    img = cv2.imread(str(browser_run.screenshot))
    assert img is not None and img.shape[0] > 600 and img.shape[1] >= 1280
