"""Chromium drives the Convert tab's pitch editor: select a stretch with the mouse, shift it up two semitones
with the keyboard, convert with the curve; exactly those frames move by 2 semitones in the saved curve and in
the synthesiser's pitch input. The saved file then converts through the command line to the same audio.
Playback: the input plays from the selection with a cursor on the audio's clock; the last conversion plays the
file the conversion wrote.

Uses Debian's /usr/bin/chromium through Playwright (no browser download); skipped when it is absent. With
RVC_UPDATE_SCREENSHOTS=1 the editor's screenshot is written to docs/pitch-editor.png (the README's picture).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
from conftest import REPO_ROOT
from helpers_app import (
    CHROMIUM,
    app_in_thread,
    click_when_uploaded,
    make_project,
    shared_test_hubert,
    write_test_wav,
)
from test_pitch_api import record_synth_pitch

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is absent (Debian: apt-get install chromium)"),
]
TIMEOUT_MS = 60_000
CONVERT_TIMEOUT_MS = 300_000
PAD = 100  # CPU context padding: the input's frame 0 is the synthesiser's frame 100
TWO_SEMITONES = 2.0 ** (2.0 / 12.0)
LEFT = 46  # the editor's note-name margin in canvas pixels (tools/static/pitch_editor.js)


@pytest.fixture(scope="module")
def served(reference: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any, Path]]:
    base = tmp_path_factory.mktemp("pitch-browser")
    root = make_project(base / "project", reference, shared_test_hubert(tmp_path_factory, reference))
    write_test_wav(root / "inputs" / "song.wav", seconds=3.0, f0_hz=200.0)
    with app_in_thread(root) as (url, ctx):
        yield url, ctx, root


def _select_frames(page: Any, first: int, last: int) -> None:
    """Drag across the canvas from frame `first` to frame `last` (the whole 3 s input is shown: 300 frames)."""
    page.locator("#pitch-canvas").scroll_into_view_if_needed()
    box = page.locator("#pitch-canvas").bounding_box()
    scale = box["width"] / page.evaluate("document.getElementById('pitch-canvas').width")
    per_frame = (box["width"] - LEFT * scale) / 300
    y = box["y"] + 40
    page.mouse.move(box["x"] + LEFT * scale + first * per_frame, y)
    page.mouse.down()
    page.mouse.move(box["x"] + LEFT * scale + (first + last) / 2 * per_frame, y + 5, steps=4)
    page.mouse.move(box["x"] + LEFT * scale + last * per_frame, y, steps=4)
    page.mouse.up()


def _playback(page: Any) -> dict[str, Any]:
    """The audio element's state and where the editor drew the cursor (canvas pixels, and for which time)."""
    return dict(page.evaluate("""() => {
        const a = document.getElementById('pitch-audio'), c = document.getElementById('pitch-canvas');
        const st = window.rvcPitch.state;
        return {time: a.currentTime, playing: a.dataset.playing === '1', source: a.dataset.source || '',
                src: a.currentSrc || a.src, x: c.dataset.cursorX, drawn: c.dataset.cursorTime, start: st.start,
                visible: st.visible, width: c.width};
    }"""))


def _wait_paused(page: Any) -> None:
    """Until the audio is paused and the editor has handled its pause event (buttons, cursor)."""
    page.wait_for_function("() => { const a = document.getElementById('pitch-audio');"
                           " return a.paused && a.dataset.playing !== '1'; }")


def _cursor_x(state: dict[str, Any], seconds: float) -> float:
    """Where `seconds` lies on the canvas in the editor's view (frame k at k * 10 ms)."""
    per_frame = (state["width"] - LEFT) / state["visible"]
    return LEFT + (seconds * 100 - state["start"]) * per_frame


def _wait_playing_past(page: Any, seconds: float) -> dict[str, Any]:
    page.wait_for_function(
        "(t) => { const a = document.getElementById('pitch-audio'), c = document.getElementById('pitch-canvas');"
        " return !a.paused && a.currentSrc === a.src && c.dataset.cursorTime !== ''"
        " && parseFloat(c.dataset.cursorTime) > t; }",
        arg=seconds)
    state = _playback(page)
    assert state["x"] and state["drawn"], f"no cursor drawn in the view while playing: {state}"
    return state


def _check_input_playback(page: Any, sel_start: int) -> None:
    """Play input from the selection: the cursor follows currentTime through the view; Space pauses, Escape stops."""
    assert page.locator("#pitch-btn-play-output").is_disabled()  # no conversion yet
    page.locator("#pitch-btn-play-input").click()
    first = _wait_playing_past(page, sel_start / 100 + 0.1)
    second = _wait_playing_past(page, first["time"] + 0.2)
    assert first["source"] == "input" and first["src"].split("/")[-1] == "song.wav", first
    assert sel_start / 100 <= float(first["drawn"]) < 3.0, first  # started at the selection, not at 0
    for state in (first, second):
        assert state["playing"] and state["visible"] == 300 and state["start"] == 0, state
        assert abs(float(state["x"]) - _cursor_x(state, float(state["drawn"]))) < 1.0, state
        # the cursor shows a reading of the audio's clock: never ahead of the reading taken after it was drawn
        assert float(state["drawn"]) <= state["time"] + 1e-4, state
    # ... and a fresh one: later than the clock read before it was drawn
    assert float(second["drawn"]) > first["time"] + 0.2 and float(second["x"]) > float(first["x"]) + 20, (first, second)

    page.keyboard.press("Space")  # the button gave the focus back to the canvas
    _wait_paused(page)
    paused = _playback(page)
    page.wait_for_timeout(300)
    assert _playback(page)["time"] == paused["time"] and not paused["playing"]
    assert abs(float(paused["x"]) - _cursor_x(paused, paused["time"])) < 0.5, paused
    assert page.locator("#pitch-btn-play-input").inner_text() == "Play input"
    page.keyboard.press("Escape")
    stopped = _playback(page)
    assert stopped["x"] == "" and stopped["drawn"] == "", stopped
    assert page.locator("#pitch-status").get_attribute("data-sel-start") == str(sel_start)  # selection kept

    # A click on the waveform strip puts the cursor there; playback starts from it.
    box = page.locator("#pitch-canvas").bounding_box()
    scale = box["width"] / stopped["width"]
    page.mouse.click(box["x"] + _cursor_x(stopped, 0.5) * scale, box["y"] + 420 - 18 - 20)
    seeked = _playback(page)
    assert abs(float(seeked["drawn"]) - 0.5) < 0.02, seeked
    page.keyboard.press("Space")
    resumed = _wait_playing_past(page, 0.5)
    assert float(resumed["drawn"]) < sel_start / 100, resumed  # from the cursor, not the selection
    page.keyboard.press("Escape")
    _wait_paused(page)

    # Zoomed in (75 frames shown around the middle), the view pages along once the cursor passes its right edge.
    page.keyboard.press("+")
    page.keyboard.press("+")
    zoomed = _playback(page)
    assert zoomed["visible"] == 75 and zoomed["start"] + 75 < 200, zoomed
    page.keyboard.press("Space")
    followed = _wait_playing_past(page, (zoomed["start"] + 75) / 100 + 0.15)
    assert followed["start"] > zoomed["start"] + 70 and followed["visible"] == 75, followed
    assert LEFT <= float(followed["x"]) <= followed["width"], followed
    assert abs(float(followed["x"]) - _cursor_x(followed, float(followed["drawn"]))) < 1.0, followed
    page.keyboard.press("Escape")
    page.locator("#pitch-btn-fit").click()


def _check_conversion_playback(page: Any, base_url: str, result: Path) -> None:
    """Play last conversion plays the file the conversion wrote, with the cursor on its clock."""
    button = page.locator("#pitch-btn-play-output")
    page.wait_for_function("(b) => !b.disabled", arg=button.element_handle())
    button.click()
    state = _wait_playing_past(page, 0.2)  # from the selection's start (1.2 s)
    assert state["source"] == "conversion" and state["src"].split("/")[-1] == result.name, state
    assert abs(float(state["x"]) - _cursor_x(state, float(state["drawn"]))) < 1.0, state
    assert button.inner_text() == "Pause conversion"
    url = state["src"] if state["src"].startswith("http") else base_url.rstrip("/") + state["src"]
    with urllib.request.urlopen(url, timeout=30) as served_file:
        assert served_file.read() == result.read_bytes()
    button.click()
    _wait_paused(page)


def test_shift_a_selection_two_semitones_and_convert(
    page: Any, served: tuple[str, Any, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, ctx, root = served
    monkeypatch.setattr(ctx, "isolate", False)  # the spy lives in this process only
    seen = record_synth_pitch(monkeypatch)

    page.locator("#convert-voice input").click()
    page.get_by_role("option", name="ref").click()
    page.locator("#convert-audio input[type=file]").set_input_files(str(root / "inputs" / "song.wav"))
    page.locator("#convert-audio").get_by_text("Drop Audio Here").wait_for(state="hidden")
    pm = page.locator("#convert-f0 input[value='pm']")
    for _ in range(20):  # the page's load handler may set the method again after a first click
        page.locator("#convert-f0").get_by_text("PM (fast)").click()
        page.wait_for_timeout(500)
        if pm.is_checked():
            break
    assert pm.is_checked()
    page.locator("#pitch-accordion").get_by_text("Edit pitch").click()
    click_when_uploaded(page, "#pitch-extract")
    status = page.locator("#pitch-status")
    status.filter(has_text="loaded song.wav").wait_for()
    assert ", pm, transpose 0" in page.locator("#pitch-info textarea").input_value()

    _select_frames(page, 120, 200)
    start, end = int(status.get_attribute("data-sel-start")), int(status.get_attribute("data-sel-end"))
    assert abs(start - 120) <= 2 and abs(end - 200) <= 2, (start, end)
    page.keyboard.press("ArrowUp")  # the canvas has the focus since the drag
    page.keyboard.press("ArrowUp")
    assert status.get_attribute("data-position") == "2"
    _check_input_playback(page, start)
    shot = tmp_path / "pitch-editor.png"
    page.locator("#pitch-accordion").screenshot(path=str(shot))
    if os.environ.get("RVC_UPDATE_SCREENSHOTS") == "1":
        (REPO_ROOT / "docs").mkdir(exist_ok=True)
        page.locator("#pitch-accordion").screenshot(path=str(REPO_ROOT / "docs" / "pitch-editor.png"))

    page.locator("#pitch-convert").click()
    info = page.locator("#convert-info textarea")
    page.wait_for_function(
        "el => el.value.length > 0 || document.querySelector('.toast-body') !== null",
        arg=info.element_handle(), timeout=CONVERT_TIMEOUT_MS,
    )
    assert page.locator(".toast-body").count() == 0, page.locator(".toast-body").all_inner_texts()
    assert "converted 3.0 s of audio" in info.input_value(), info.input_value()

    # The saved curve: two one-semitone shifts of exactly the selected frames.
    saved = root / "outputs" / "pitch" / "song-pitch.json"
    data = json.loads(saved.read_text())
    assert data["edits"] == [{"op": "shift", "start": start, "end": end, "semitones": 1.0}] * 2
    extracted, edited = np.array(data["extracted_hz"]), np.array(data["edited_hz"])
    assert extracted.size == 300 and (extracted[start:end] > 0).sum() > 20
    voiced = extracted > 0
    ratio = np.divide(edited, extracted, out=np.ones_like(edited), where=voiced)
    moved = np.flatnonzero(np.abs(ratio - 1.0) > 1e-9)
    assert moved.tolist() == [k for k in range(start, end) if voiced[k]]
    np.testing.assert_allclose(ratio[start:end][voiced[start:end]], TWO_SEMITONES, rtol=1e-12)
    np.testing.assert_array_equal(edited[~voiced], 0.0)

    # The synthesiser's pitch input (one chunk): the edited curve, frame for frame.
    assert len(seen) == 1
    synth = seen[0][PAD : PAD + 300].astype(np.float64)
    moved_synth = np.flatnonzero(voiced & (np.abs(np.divide(synth, extracted, out=np.ones(300), where=voiced) - 1) > 1e-6))
    assert moved_synth.tolist() == moved.tolist()
    np.testing.assert_array_equal(synth, edited.astype(np.float32))

    # What the editor draws for every kind of edit is what Python replays.
    from infer_pack.pitch_edit import edit_from_dict, replay

    edits = [{"op": "octave", "start": 10, "end": 60, "up": True}, {"op": "unvoice", "start": 50, "end": 70},
             {"op": "voice", "start": 0, "end": 300}, {"op": "flatten", "start": 100, "end": 180, "mode": "median",
             "window_frames": 15}, {"op": "flatten", "start": 200, "end": 290, "mode": "smooth", "window_frames": 15},
             {"op": "restore", "start": 150, "end": 160}, {"op": "shift", "start": 0, "end": 40, "semitones": -0.3},
             {"op": "draw", "points": [[3.5, 150.0], [20.0, 300.0], [12.0, 180.0]]}]
    drawn = np.array(page.evaluate("(edits) => window.rvcPitch.replayed(edits)", edits))
    np.testing.assert_allclose(drawn, replay(extracted, [edit_from_dict(e) for e in edits]), rtol=1e-12)

    # The command line converts with the saved file to the same audio as the app.
    app_output = Path(page.locator("#convert-download a").first.get_attribute("download") or "")
    outputs = sorted((root / "outputs").glob("song_ref_pm*.wav"), key=lambda p: p.stat().st_mtime)
    assert outputs, sorted(p.name for p in (root / "outputs").iterdir())
    app_wav = outputs[-1]
    assert not app_output.name or app_output.name == app_wav.name
    _check_conversion_playback(page, url, app_wav)
    cli_wav = tmp_path / "cli.wav"
    done = subprocess.run(
        [sys.executable, "-m", "tools.cli", "--root", str(root), "--quiet", "convert", "--model", "ref",
         "--input", str(root / "inputs" / "song.wav"), "--f0-method", "pm", "--f0-file", str(saved),
         "--output", str(cli_wav)],
        cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=600,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    app_audio, app_rate = soundfile.read(str(app_wav), dtype="int16")
    cli_audio, cli_rate = soundfile.read(str(cli_wav), dtype="int16")
    assert app_rate == cli_rate == 40000
    assert np.abs(app_audio).max() > 100
    assert cli_audio.shape == app_audio.shape
    # Same samples up to one 16-bit step: the CLI process runs with other thread counts, which changes the
    # order of float sums in the decoder (the pitch input itself is identical, checked above).
    difference = np.abs(cli_audio.astype(np.int32) - app_audio.astype(np.int32))
    assert difference.max() <= 1 and (difference > 0).mean() < 0.01, (difference.max(), (difference > 0).mean())

    # The tab's own Convert button (no curve): its new result becomes the editor's "last conversion".
    before = info.input_value()
    page.locator("#convert-run").click()
    page.wait_for_function(
        "([el, old]) => (el.value.length > 0 && el.value !== old) || document.querySelector('.toast-body') !== null",
        arg=[info.element_handle(), before], timeout=CONVERT_TIMEOUT_MS,
    )
    assert page.locator(".toast-body").count() == 0, page.locator(".toast-body").all_inner_texts()
    newest = max((root / "outputs").glob("song_ref_pm*.wav"), key=lambda p: p.stat().st_mtime)
    assert newest != app_wav
    page.wait_for_function(  # the output player is filled after the info box: the editor follows the player
        "(name) => { const o = window.rvcPitch.state.lastOutput; return !!o && o.url.endsWith('/' + name); }",
        arg=newest.name, timeout=CONVERT_TIMEOUT_MS)
    _check_conversion_playback(page, url, newest)
