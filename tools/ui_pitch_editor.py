"""The Convert tab's "Edit pitch" accordion: see the input's pitch curve over its spectrogram, edit it, convert with it.

The editor itself is plain JavaScript on a <canvas> (tools/static/pitch_editor.js, run once on page load;
no download, works offline). Python hands it the extracted curve and the pictures as JSON in a hidden
textbox; "Save curve" and "Convert with this curve" read the edited pitch file object back from it and
write it with `save_pitch_curve`, and the conversion takes that file as its pitch file (`f0_file`).
Playback uses the URLs Gradio already serves: the input's upload and the tab's output audio (no file of our own).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr

from infer_pack.errors import RVCError, UserInputError
from tools.jobproc import JobCall

if TYPE_CHECKING:
    from tools.api.pitch import PitchFileResult
    from tools.web import AppContext

SCRIPT = Path(__file__).with_name("static") / "pitch_editor.js"

# name -> (button text, tooltip); the script binds each by its id "pitch-btn-<name>".
BUTTONS: tuple[tuple[str, str, str], ...] = (
    ("octave-up", "Octave up", "selection x2"), ("octave-down", "Octave down", "selection /2"),
    ("unvoice", "Unvoiced", "no pitch in the selection"),
    ("voice", "Voiced", "pitch for the unvoiced frames, from the voiced ones around them"),
    ("flatten", "Flatten", "selection on its median pitch (vibrato out)"),
    ("smooth", "Smooth", "selection smoothed over 150 ms"),
    ("keep", "Keep original", "selection back to the extracted pitch"),
    ("draw", "Draw", "freehand: drag to draw a stretch"),
    ("undo", "Undo", "Ctrl+Z"), ("redo", "Redo", "Ctrl+Y"), ("reset", "Reset", "everything back to the extracted curve"),
    ("zoom-in", "Zoom in", "+"), ("zoom-out", "Zoom out", "-"), ("fit", "Whole input", "show the whole input"),
)
# Playback, one <audio id="pitch-audio"> for both files; "play-output" is enabled once a conversion of the loaded
# input exists (this editor's or the Convert tab's last result).
PLAY_BUTTONS: tuple[tuple[str, str, str], ...] = (
    ("play-input", "Play input", "Space: play / pause the input from the selection or the view's left edge"),
    ("play-output", "Play last conversion", "Shift+Space: play / pause the last conversion of this input"),
)
HELP = (
    "Drag across the curve to select a stretch; drag the selection up or down to move it by semitones (Alt: "
    "10 cents). Keys (click the picture first): Left/Right move the selection (Shift: 10 frames, Alt: resize), "
    "Up/Down shift it by a semitone (Shift: octave, Alt: 10 cents), +/- zoom, PageUp/PageDown scroll, Ctrl+Z / "
    "Ctrl+Y undo / redo, Space play / pause the input (Shift+Space: the last conversion) from the play cursor, "
    "else from the selection's start, else from the view's left edge; Escape stops playback (when stopped: "
    "clears the selection). A click on the waveform strip moves the play cursor. Mouse wheel zooms, Shift+wheel "
    "scrolls. The curve is in absolute pitch (after transpose): extract again after changing the transpose or "
    "the method."
)


def _buttons(specs: Sequence[tuple[str, str, str]], disabled: Sequence[str] = ()) -> str:
    return "".join(
        f'<button type="button" id="pitch-btn-{name}" class="pitch-btn" title="{tip}"'
        f'{" disabled" if name in disabled else ""}>{text}</button>'
        for name, text, tip in specs
    )


def editor_html() -> str:
    return (
        "<style>#pitch-editor .pitch-btn{margin:2px;padding:3px 8px;border:1px solid #888;border-radius:4px;"
        "background:var(--button-secondary-background-fill);color:var(--body-text-color);cursor:pointer}"
        "#pitch-editor .pitch-btn.active{background:#c73;color:#fff}#pitch-editor .pitch-btn:disabled{opacity:.45;"
        "cursor:default}"
        "#pitch-canvas{width:100%;height:420px;display:block;outline:none;border-radius:4px}"
        "#pitch-canvas:focus{box-shadow:0 0 0 2px #59f}</style>"
        f'<div class="pitch-toolbar">{_buttons(BUTTONS)}</div>'
        f'<div class="pitch-toolbar">{_buttons(PLAY_BUTTONS, disabled=("play-output",))}'
        '<audio id="pitch-audio" preload="auto"></audio></div>'
        '<canvas id="pitch-canvas" tabindex="0" width="900" height="420" '
        'aria-label="pitch curve editor: arrow keys select and shift, space plays"></canvas>'
        '<div id="pitch-status" style="font-size:12px;margin-top:4px">Extract the pitch to start editing.</div>'
        f'<div style="font-size:12px;opacity:.8">{HELP}</div>'
    )


def build(
    ctx: AppContext,
    *,
    audio: gr.components.Component,
    voice: gr.components.Component,
    index: gr.components.Component,
    params: Sequence[gr.components.Component],
    form_kwargs: Callable[..., dict[str, Any]],
    convert: Callable[..., tuple[str | None, str | None, str]],
    outputs: Sequence[gr.components.Component],
) -> None:
    """The accordion, under the Convert tab's form. `params`: the conversion widgets (FORM_PARAMS order) and
    `form_kwargs` their values -> API keywords; `convert(audio, voice, index, f0_file, *values, progress=,
    cancel=)` runs the tab's conversion; `outputs`: its output audio, download and result text."""
    with gr.Accordion("Edit pitch", open=False, elem_id="pitch-accordion"):
        with gr.Row():
            extract = gr.Button("Extract pitch of the input", elem_id="pitch-extract", scale=3)
            save_format = gr.Radio([("JSON with edits", "json"), ("time_s,hz text", "txt")], value="json",
                                   label="Save as", scale=2, elem_id="pitch-format")
            save = gr.Button("Save curve", elem_id="pitch-save", scale=1)
        gr.HTML(editor_html(), elem_id="pitch-editor")
        loaded = gr.Textbox(visible=False, elem_id="pitch-data")  # Python -> editor: {curve, view}
        edited = gr.Textbox(visible=False, elem_id="pitch-edited")  # editor -> Python: the pitch file object
        run = gr.Button("Convert with this curve", variant="primary", elem_id="pitch-convert")
        with gr.Row():
            saved_file = gr.File(label="Saved pitch curve", interactive=False, elem_id="pitch-file")
            info = gr.Textbox(label="Pitch", lines=2, interactive=False, elem_id="pitch-info")

    def on_extract(audio_path: str | None, *values: Any) -> tuple[str, str]:
        try:
            if not audio_path:
                raise UserInputError("no input audio: upload a file or record one first")
            result = ctx.convert(JobCall("extract_pitch_curve", dict(
                project=ctx.project, input_path=Path(audio_path), max_duration_s=ctx.max_input_s,
                **form_kwargs(*values),
            ), inject=("cache", "progress", "cancel")))
        except RVCError as exc:
            raise gr.Error(str(exc), duration=None, print_exception=False) from None
        return result.editor_json(), result.summary()

    def on_save(curve: str, output_format: str) -> tuple[str, str]:
        saved = _save(ctx, curve, output_format)
        return str(saved.path), saved.summary()

    read_editor = "(curve, ...rest) => [window.rvcPitch ? window.rvcPitch.fileJson() : '', ...rest]"
    # The editor plays the files by the URLs Gradio already serves them at: the input the curve was extracted from
    # (its upload) and the Convert tab's output audio (either button's result, the same input only).
    extract.click(on_extract, inputs=[audio, *params], outputs=[loaded, info], api_name=False).then(
        None, inputs=[loaded, audio], outputs=None, api_name=False,
        js="(text, input) => { window.rvcPitch && window.rvcPitch.load(text, input); }")
    result_audio = outputs[0]
    assert isinstance(result_audio, gr.Audio), "outputs[0] is the tab's output audio"
    result_audio.change(None, inputs=[result_audio, audio], outputs=None, api_name=False,
                        js="(output, input) => { window.rvcPitch && window.rvcPitch.conversion(output, input); }")
    save.click(on_save, inputs=[edited, save_format], outputs=[saved_file, info], js=read_editor, api_name=False)

    # The curve, then the same inputs as the tab's /convert endpoint (explicit parameters: Gradio injects the
    # request and the progress bar only into named parameters after them).
    def convert_with_curve(
        curve: str, audio_path: str | None, voice_file: str | None, index_name: str | None,
        v1: Any, v2: Any, v3: Any, v4: Any, v5: Any, v6: Any, v7: Any, v8: Any, v9: Any, v10: Any,
        request: gr.Request, progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> tuple[str | None, str | None, str, str | None]:
        saved = _save(ctx, curve, "json")
        with ctx.stop_token(request.session_hash if request is not None else None) as cancel:
            output, download, text = convert(audio_path, voice_file, index_name, str(saved.path), v1, v2, v3, v4, v5,
                                             v6, v7, v8, v9, v10, progress=progress, cancel=cancel)
        return output, download, f"{text}\n{saved.summary()}", str(saved.path)

    assert len(params) == 10, "convert_with_curve takes the ten conversion values"
    run.click(convert_with_curve, inputs=[edited, audio, voice, index, *params], outputs=[*outputs, saved_file],
              js=read_editor, api_name="convert_with_pitch_curve")
    gr.on(None, None, inputs=None, outputs=None, js="() => {\n" + SCRIPT.read_text(encoding="utf-8") + "\n}")


def _save(ctx: AppContext, curve: str, output_format: str) -> PitchFileResult:
    """The editor's curve as a file under outputs/pitch/; a missing or broken curve is a notice, not a traceback."""
    from tools import api

    try:
        if not curve:
            raise UserInputError("no pitch curve yet: press 'Extract pitch of the input' first")
        return api.save_pitch_curve(project=ctx.project, curve=curve,
                                    output_format="txt" if output_format == "txt" else "json")
    except RVCError as exc:
        raise gr.Error(str(exc), duration=None, print_exception=False) from None
