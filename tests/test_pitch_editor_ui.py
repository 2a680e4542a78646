"""The pitch editor's page parts (tools/ui_pitch_editor.py) agree with its script (tools/static/pitch_editor.js):
every button has an action bound by its id, playback has its audio element, and the help names its keys."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("gradio")

from tools import ui_pitch_editor  # noqa: E402


def _script_actions() -> set[str]:
    """The names the script's `actions` table binds (to the buttons "pitch-btn-<name>")."""
    script = ui_pitch_editor.SCRIPT.read_text(encoding="utf-8")
    table = script[script.index("const actions = {") : script.index("};", script.index("const actions = {"))]
    return set(re.findall(r'"([a-z-]+)": ', table))


def test_every_button_has_an_action_in_the_script() -> None:
    names = {name for name, _text, _tip in (*ui_pitch_editor.BUTTONS, *ui_pitch_editor.PLAY_BUTTONS)}
    assert {"play-input", "play-output"} <= names
    assert names == _script_actions()


def test_playback_controls_in_the_page() -> None:
    page = ui_pitch_editor.editor_html()
    assert re.search(r'<button type="button" id="pitch-btn-play-input" class="pitch-btn" title="[^"]+">Play input<', page)
    # no conversion of the input exists before the first extraction: the button starts disabled
    assert re.search(r'id="pitch-btn-play-output" class="pitch-btn" title="[^"]+" disabled>Play last conversion<', page)
    assert page.count('<audio id="pitch-audio" preload="auto"></audio>') == 1
    assert page.count("disabled>") == 1


def test_help_names_the_playback_keys() -> None:
    text = ui_pitch_editor.HELP
    for key in ("Space play / pause", "Shift+Space", "Escape stops playback", "waveform strip"):
        assert key in text
    assert text in ui_pitch_editor.editor_html()
