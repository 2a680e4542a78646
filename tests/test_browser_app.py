"""A real headless Chromium clicks through the app: convert an upload or a recording, prepare a dataset, stop a job.

Uses Debian's /usr/bin/chromium through Playwright (no browser download); skipped when it is absent.
Screenshots are written under the test's tmp folder.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers_app import (
    CHROMIUM,
    CHROMIUM_ARGS,
    app_in_thread,
    click_when_uploaded,
    make_project,
    shared_test_hubert,
    write_test_wav,
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is absent (Debian: apt-get install chromium)"),
]
TIMEOUT_MS = 120_000
MANY_FILES = 40
CONVERT_TIMEOUT_MS = 300_000


@pytest.fixture(scope="module")
def served(reference: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any, Path]]:
    base = tmp_path_factory.mktemp("browser")
    hubert = shared_test_hubert(tmp_path_factory, reference)
    root = make_project(base / "project", reference, hubert)
    # A dataset that takes a while to prepare, so it can be stopped half way (hard links: no extra disk).
    take = write_test_wav(base / "long-take.wav", seconds=30.0, f0_hz=140.0)
    (root / "many").mkdir()
    for i in range(MANY_FILES):
        os.link(take, root / "many" / f"take{i:02d}.wav")
    with app_in_thread(root) as (url, ctx):
        yield url, ctx, root



def _progress(page: Any, panel: str) -> Any:
    return page.locator(f"{panel} .rvc-progress")


def _wait_state(page: Any, panel: str, states: tuple[str, ...], timeout_ms: int = TIMEOUT_MS) -> str:
    selector = ", ".join(f'{panel} .rvc-progress[data-state="{s}"]' for s in states)
    page.wait_for_selector(selector, timeout=timeout_ms)
    return str(_progress(page, panel).get_attribute("data-state"))


def test_convert_tab_converts_an_uploaded_file(page: Any, served: tuple[str, Any, Path], tmp_path: Path) -> None:
    _url, _ctx, root = served
    page.locator("#convert-voice input").click()
    page.get_by_role("option", name="ref").click()
    page.locator("#convert-audio input[type=file]").set_input_files(str(root / "inputs" / "b.wav"))
    page.locator("#convert-audio").get_by_text("Drop Audio Here").wait_for(state="hidden")  # upload finished
    page.locator("#convert-f0").get_by_text("PM (fast)").click()
    page.locator("#convert-transpose input").fill("12")
    click_when_uploaded(page, "#convert-run")
    info = page.locator("#convert-info textarea")
    # The result text, or an error toast, within the conversion timeout (CPU only, shared machines).
    page.wait_for_function(
        "el => el.value.length > 0 || document.querySelector('.toast-body') !== null",
        arg=info.element_handle(), timeout=CONVERT_TIMEOUT_MS,
    )
    assert page.locator(".toast-body").count() == 0, page.locator(".toast-body").all_inner_texts()
    text = info.input_value()
    page.screenshot(path=str(tmp_path / "convert.png"), full_page=True)
    assert "error" not in text.lower(), text
    assert "converted 1.0 s of audio" in text and "at 40000 Hz" in text, text
    # The converted file is offered for download and the player has a source.
    link = page.locator("#convert-download a").first
    assert (link.get_attribute("href") or "").endswith(".wav")
    assert page.locator("#convert-output audio, #convert-output [data-testid=waveform-controls]").count() >= 1


def test_convert_tab_stop_ends_a_long_conversion(page: Any, served: tuple[str, Any, Path], tmp_path: Path) -> None:
    """A 60 s input (a minute of work on 2 cores): Stop ends it at the next chunk, and no file is written."""
    _url, _ctx, root = served
    long_input = write_test_wav(tmp_path / "long take.wav", seconds=60.0, f0_hz=200.0)
    before = set((root / "outputs").glob("*")) if (root / "outputs").is_dir() else set()
    page.locator("#convert-voice input").click()
    page.get_by_role("option", name="ref").click()
    page.locator("#convert-audio input[type=file]").set_input_files(str(long_input))
    page.locator("#convert-audio").get_by_text("Drop Audio Here").wait_for(state="hidden")
    page.locator("#convert-f0").get_by_text("PM (fast)").click()
    click_when_uploaded(page, "#convert-run")
    page.wait_for_timeout(3000)  # the worker is converting (loading the voice, estimating pitch)
    started = time.time()
    page.locator("#convert-stop").click()
    info = page.locator("#convert-info textarea")
    page.wait_for_function("el => el.value.startsWith('stopped:')", arg=info.element_handle(), timeout=TIMEOUT_MS)
    page.screenshot(path=str(tmp_path / "convert-stopped.png"), full_page=True)
    assert time.time() - started < 60, "Stop waited for the whole conversion"
    assert "nothing was written" in info.input_value()
    after = set((root / "outputs").glob("*")) if (root / "outputs").is_dir() else set()
    assert after == before, sorted(p.name for p in after - before)


def test_train_tab_prepares_a_dataset_and_shows_the_health_report(
    page: Any, served: tuple[str, Any, Path], tmp_path: Path,
) -> None:
    _url, _ctx, root = served
    page.get_by_role("tab", name="Train").click()
    page.locator("#train-experiment input, #train-experiment textarea").first.fill("browser-voice")
    page.locator("#train-dataset input, #train-dataset textarea").first.fill("inputs")
    page.locator("#train-preprocess").click()
    state = _wait_state(page, "#train-panel", ("done", "failed", "cancelled"))
    page.wait_for_function("el => el.value.includes('training clips')",
                           arg=page.locator("#train-health textarea").element_handle())
    page.screenshot(path=str(tmp_path / "train-preprocess.png"), full_page=True)
    assert state == "done", _progress(page, "#train-panel").inner_text()
    assert "2 processed" in page.locator("#train-health textarea").input_value()
    log = page.locator("#train-panel .rvc-log textarea").input_value()
    assert "preprocessed 2 file(s)" in log
    assert len(list((root / "logs" / "browser-voice" / "0_gt_wavs").glob("*.wav"))) >= 2


def test_stop_button_stops_a_running_step(page: Any, served: tuple[str, Any, Path], tmp_path: Path) -> None:
    _url, ctx, root = served
    page.get_by_role("tab", name="Train").click()
    page.locator("#train-experiment input, #train-experiment textarea").first.fill("stopped-voice")
    page.locator("#train-dataset input, #train-dataset textarea").first.fill("many")
    page.locator("#train-preprocess").click()
    # Wait until at least one file is done, then press Stop.
    page.wait_for_function(
        "() => { const p = document.querySelector('#train-panel .rvc-progress');"
        " return p && p.dataset.state === 'running' && parseFloat(p.dataset.fraction) > 0; }"
    )
    page.locator("#train-panel .rvc-stop").click()
    state = _wait_state(page, "#train-panel", ("cancelled", "done", "failed"))
    page.screenshot(path=str(tmp_path / "train-stopped.png"), full_page=True)
    log = page.locator("#train-panel .rvc-log textarea").input_value()
    experiment = page.locator("#train-experiment input, #train-experiment textarea").first.input_value()
    assert state == "cancelled", f"state {state}, experiment field {experiment!r}, log:\n{log}"
    clips = (root / "logs" / "stopped-voice" / "0_gt_wavs").glob("*.wav")
    sources_done = {clip.name.split("_")[0] for clip in clips}  # clips are named <source>_<piece>.wav
    assert 0 < len(sources_done) < MANY_FILES, sorted(sources_done)
    assert not ctx.jobs.running(), "the worker thread must have ended"


MIC_TONE_HZ = 180.0


def test_convert_tab_converts_a_microphone_recording(
    browser: Any, served: tuple[str, Any, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Record ~2 s from Chromium's fake microphone (fed from a wav of a 180 Hz tone), then convert it."""
    from infer_pack.audio import load_audio
    from infer_pack.f0 import estimate_f0
    from tools import api

    url, _ctx, _root = served
    tone = write_test_wav(tmp_path / "mic-tone.wav", seconds=3.0, sample_rate=48000, f0_hz=MIC_TONE_HZ)
    received: list[Path] = []
    real_convert = api.convert_voice

    def spy(**kwargs: Any) -> Any:  # the app runs in this process: note which file the recording became
        received.append(Path(kwargs["input_path"]))
        return real_convert(**kwargs)

    monkeypatch.setattr(api, "convert_voice", spy)
    monkeypatch.setattr(_ctx, "isolate", False)  # the spy lives in this process only
    mic_args = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={tone}"]
    mic_browser = browser.browser_type.launch(executable_path=str(CHROMIUM), args=[*CHROMIUM_ARGS, *mic_args])
    try:
        context = mic_browser.new_context(viewport={"width": 1400, "height": 1000}, permissions=["microphone"])
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(url)
        page.wait_for_selector("#convert-run")
        page.locator('#convert-audio button[aria-label="Record audio"]').click()
        page.locator("#convert-audio .record-button").click()
        page.wait_for_timeout(2000)
        page.locator("#convert-audio .stop-button").click()
        # The recording is decoded, turned into a wav and uploaded; then the input player shows it.
        page.locator("#convert-audio [data-testid=waveform-controls]").wait_for()
        page.locator("#convert-voice input").click()
        page.get_by_role("option", name="ref").click()
        page.locator("#convert-f0").get_by_text("PM (fast)").click()
        click_when_uploaded(page, "#convert-run")
        info = page.locator("#convert-info textarea")
        page.wait_for_function(
            "el => el.value.length > 0 || document.querySelector('.toast-body') !== null",
            arg=info.element_handle(), timeout=CONVERT_TIMEOUT_MS,
        )
        page.screenshot(path=str(tmp_path / "convert-microphone.png"), full_page=True)
        assert page.locator(".toast-body").count() == 0, page.locator(".toast-body").all_inner_texts()
        text = info.input_value()
        assert page.locator("#convert-output [data-testid=waveform-controls]").count() == 1, "no output player"
        assert (page.locator("#convert-download a").first.get_attribute("href") or "").endswith(".wav")
    finally:
        mic_browser.close()
    seconds = re.search(r"converted (\d+\.\d) s of audio", text)
    assert seconds and 1.0 <= float(seconds.group(1)) <= 4.0, text  # about the 2 s between Record and Stop
    assert "at 40000 Hz" in text, text
    # What reached the converter is the fake microphone's tone, not silence or Chromium's default beep.
    assert len(received) == 1, received
    recorded = load_audio(received[0], 16000)
    f0 = estimate_f0(recorded, "pm")
    voiced = f0[f0 > 0]
    assert voiced.size > 0.3 * f0.size, "the recording is mostly unvoiced"
    assert abs(float(np.median(voiced)) - MIC_TONE_HZ) < 0.2 * MIC_TONE_HZ, float(np.median(voiced))


def test_batch_tab_converts_several_uploads_and_offers_a_zip(
    page: Any, served: tuple[str, Any, Path], tmp_path: Path,
) -> None:
    """Upload two files that share a stem, convert them, and download the zip the page offers."""
    import io
    import shutil
    import zipfile

    _url, _ctx, root = served
    shutil.copy(root / "inputs" / "b.wav", tmp_path / "song.wav")
    write_test_wav(tmp_path / "song.flac.wav", seconds=1.0, f0_hz=200.0)
    flac = tmp_path / "song.flac"
    (tmp_path / "song.flac.wav").rename(flac)  # a wav under a .flac name: decoded by content
    page.locator("#convert-voice input").click()
    page.get_by_role("option", name="ref").click()
    page.get_by_role("tab", name="Batch").click()
    page.locator("#batch-files input[type=file]").set_input_files([str(tmp_path / "song.wav"), str(flac)])
    page.wait_for_function("() => document.querySelectorAll('#batch-files tbody tr').length === 2")  # both uploaded
    page.locator("#batch-f0").get_by_text("PM (fast)").click()
    page.locator("#batch-output-dir input, #batch-output-dir textarea").first.fill("outputs/browser-batch")
    click_when_uploaded(page, "#batch-run")
    state = _wait_state(page, "#batch-panel", ("done", "failed", "cancelled"), timeout_ms=CONVERT_TIMEOUT_MS)
    page.locator("#batch-results a").first.wait_for()
    page.screenshot(path=str(tmp_path / "batch.png"), full_page=True)
    assert state == "done", page.locator("#batch-panel .rvc-log textarea").input_value()
    hrefs = [a.get_attribute("href") or "" for a in page.locator("#batch-results a").all()]
    links = {h.rsplit("/", 1)[-1]: h for h in hrefs}
    names = sorted(links)
    assert names == ["ref-converted.zip", "song-flac.wav", "song-wav.wav"], links
    href = links["ref-converted.zip"]
    body = page.request.get(href if href.startswith("http") else page.url.rstrip("/") + href).body()
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        assert sorted(archive.namelist()) == ["song-flac.wav", "song-wav.wav"]
