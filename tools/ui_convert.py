"""Convert tab: one file (upload or record) and a Batch sub-tab (folder in, folder out)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr

from infer_pack.errors import CancelledError, RVCError, UserInputError
from infer_pack.progress import CancelToken
from tools import ui_pitch_editor
from tools.jobproc import JobCall
from tools.jobs import JobSnapshot
from tools.labels import label
from tools.ui_common import (
    F0_CHOICES,
    NO_INDEX,
    index_choices,
    index_path_of,
    mark_missing_models,
    match_index,
    spec_value,
    spec_widget,
    voice_choices,
    voice_path,
)
from tools.ui_jobs import JobStarter, job_panel

if TYPE_CHECKING:
    from tools.web import AppContext

# The conversion widgets, in the order the Convert and Batch endpoints take their values (a public interface:
# scripts call `/convert` with them positionally). Types, defaults, ranges and help: ConversionParams.
FORM_PARAMS: tuple[str, ...] = (
    "speaker_id", "pitch_semitones", "f0_method", "index_rate", "filter_radius", "resample_hz", "rms_mix_rate",
    "protect", "pitch_gaps", "decoder",
)
# The batch endpoint takes the uploaded files after the values that existed when it was published (the first
# nine), and the values added since after the files, so that existing scripts keep working.
BATCH_UPLOADS_AT = FORM_PARAMS.index("decoder")


def f0_choices(ctx: AppContext) -> list[tuple[str, str]]:
    """The pitch methods as the tabs show them, those whose model file is absent marked."""
    from tools.api import conversion_param_specs

    shown = {value: text for text, value in F0_CHOICES}
    methods = conversion_param_specs()["f0_method"].choices
    return mark_missing_models(ctx, [(shown.get(name, name), name) for name in methods])


def conversion_kwargs(*values: Any) -> dict[str, Any]:
    """Form values (in FORM_PARAMS order) -> the API's keywords, typed as ConversionParams declares them.

    Numbers arrive from Gradio as floats, an emptied box as None; an omitted trailing value keeps its default.
    """
    from tools.api import conversion_param_specs

    specs = conversion_param_specs()
    if len(values) > len(FORM_PARAMS):
        raise UserInputError(f"{len(values)} conversion values given, at most {len(FORM_PARAMS)} expected")
    return {name: spec_value(specs[name], value) for name, value in zip(FORM_PARAMS, values)}


def conversion_controls(
    prefix: str, f0_default: str | None = None, f0_choices: list[tuple[str, str]] | None = None,
) -> list[gr.components.Component]:
    """The parameter widgets in FORM_PARAMS order (elem ids start with prefix).

    `f0_default` replaces the pitch method's default (rmvpe) when its model file is absent.

    Ranges, steps, defaults (RVC's) and help come from the pipeline's PARAM_SPECS, the one place they live.
    """
    from tools.api import conversion_param_specs

    specs = conversion_param_specs()

    def slider(name: str, key: str) -> gr.Slider:
        widget = spec_widget(specs[name], label(key), elem_id=f"{prefix}-{name}")
        assert isinstance(widget, gr.Slider), f"{name} has no range"
        return widget

    speaker_spec, pitch_spec = specs["speaker_id"], specs["pitch_semitones"]
    shown = {value: text for text, value in F0_CHOICES}
    with gr.Row():
        speaker = gr.Number(label=label("convert.speaker_id"), value=speaker_spec.default, precision=0,
                            minimum=speaker_spec.minimum, info=speaker_spec.help, elem_id=f"{prefix}-speaker")
        transpose = gr.Number(label=label("convert.transpose"), value=pitch_spec.default, precision=0,
                              minimum=pitch_spec.minimum, maximum=pitch_spec.maximum, info=pitch_spec.help,
                              elem_id=f"{prefix}-transpose")
        f0_method = gr.Radio(
            f0_choices or [(shown.get(name, name), name) for name in specs["f0_method"].choices],
            value=f0_default or specs["f0_method"].default, label=label("convert.f0_method"),
            info=specs["f0_method"].help, elem_id=f"{prefix}-f0",
        )
    with gr.Row():
        index_rate = slider("index_rate", "convert.index_rate")
        filter_radius = slider("filter_radius", "convert.filter_radius")
        resample = slider("resample_hz", "convert.resample")
    with gr.Row():
        rms_mix = slider("rms_mix_rate", "convert.rms_mix")
        protect = slider("protect", "convert.protect")
        pitch_gaps = spec_widget(specs["pitch_gaps"], label("convert.pitch_gaps"), elem_id=f"{prefix}-pitch_gaps")
        decoder = spec_widget(specs["decoder"], label("convert.decoder"), elem_id=f"{prefix}-decoder")
    widgets = {"speaker_id": speaker, "pitch_semitones": transpose, "f0_method": f0_method, "index_rate": index_rate,
               "filter_radius": filter_radius, "resample_hz": resample, "rms_mix_rate": rms_mix, "protect": protect,
               "pitch_gaps": pitch_gaps, "decoder": decoder}
    return [widgets[name] for name in FORM_PARAMS]


def run_convert(
    ctx: AppContext, audio_path: str | None, voice_file: str | None, index: str | None, f0_file: str | None,
    *params: Any, progress: Any = None, cancel: CancelToken | None = None,
) -> tuple[str | None, str | None, str]:
    """Convert one uploaded/recorded file; returns (output audio path, download path, result text).

    The conversion runs in one of the app's conversion worker processes (`ctx.convert`): a crash or an
    out-of-memory kill there fails this request with its cause, and the next request gets a new worker.
    `cancel` (the tab's Stop) ends it at its next chunk; nothing is written then.
    """
    try:
        if not audio_path:
            raise UserInputError("no input audio: upload a file or record one first")
        kwargs = conversion_kwargs(*params)
        model, index_path = voice_path(ctx, voice_file), index_path_of(ctx, index)
        result = ctx.convert(JobCall("convert_voice", dict(
            project=ctx.project, model=model, input_path=Path(audio_path), index_path=index_path,
            f0_file=Path(f0_file) if f0_file else None, max_duration_s=ctx.max_input_s, **kwargs,
        ), inject=("cache", "progress", "cancel")), on_progress=_eta_progress(progress), cancel=cancel)
    except CancelledError:
        return None, None, "stopped: the conversion was stopped before it finished; nothing was written"
    except RVCError as exc:
        # The notice stays until closed (the whole reason and its fix, e.g. which file to download).
        raise gr.Error(str(exc), duration=None, print_exception=False) from None
    output = str(result.output_path)
    return output, output, result.summary()


def first_run_guide(ctx: AppContext) -> str:
    """What a new project lacks before a first conversion, and how to get it; "" once nothing is missing."""
    steps = []
    if not ctx.project.hubert_path.is_file():
        steps.append(
            "**Every conversion and training needs the content encoder `hubert_base.pt`.** Download it under "
            "*Assets* above (tick *hubert*), or run `.venv/bin/python -m tools.cli download hubert`, or put RVC's "
            f"`hubert_base.pt` by hand at `{ctx.project.hubert_path}`."
        )
    if not voice_choices(ctx):
        steps.append(
            "**No voice yet.** Train one in the *Train* tab (name it, give the folder of its recordings, press "
            f"*One-click training*), or copy a voice model (`.pth`) made with RVC into `{ctx.project.weights_dir}` "
            "and press *Refresh voices and indexes*."
        )
    return ("### Before your first conversion\n" + "\n\n".join(f"{n}. {text}" for n, text in enumerate(steps, 1))
            if steps else "")


def _eta_progress(progress: Any) -> Any:
    """Relay (done, total, message) to a gr.Progress bar, with the time so far and an estimate of the rest."""
    if progress is None:
        return None
    import time

    started = time.monotonic()

    def report(done: int, total: int, message: str) -> None:
        elapsed = time.monotonic() - started
        eta = f", about {elapsed / done * (total - done):.0f} s left" if 0 < done < total else ""
        progress((done, total) if total > 0 else None, desc=f"{message} ({elapsed:.0f} s{eta})")

    return report


def _batch_starter(ctx: AppContext) -> JobStarter:
    def starter(voice_file: str | None, index: str | None, input_dir: str, output_dir: str, out_format: str,
                *values: Any) -> tuple[str, JobCall, None]:
        """`values`: the conversion parameters with the uploaded files (a list of paths, or None) at
        BATCH_UPLOADS_AT."""
        uploads = values[BATCH_UPLOADS_AT]
        params = (*values[:BATCH_UPLOADS_AT], *values[BATCH_UPLOADS_AT + 1 :])
        voice = voice_path(ctx, voice_file)
        index_path = index_path_of(ctx, index)
        # Uploads live in Gradio's own upload folder, so they are not confined to the project; a typed folder is.
        files = [Path(str(f)) for f in (uploads or [])]
        if not files and not str(input_dir or "").strip():
            raise UserInputError("give an input folder or upload the files to convert")
        if not str(output_dir or "").strip():
            raise UserInputError("give an output folder (inside outputs/ the results can be downloaded here)")
        src = None if files else ctx.project.confine(input_dir.strip(), "input folder")
        dst = ctx.project.confine(output_dir.strip(), "output folder")
        kwargs = conversion_kwargs(*params)

        work = JobCall("convert_batch", dict(
            project=ctx.project, model=voice, input_dir=src, input_paths=files or None, output_dir=dst,
            index_path=index_path, output_format=out_format, zip_results=True, max_duration_s=ctx.max_input_s,
            **kwargs,
        ), inject=("progress", "cancel", "cache"))
        return "batch", work, None

    return starter


def batch_downloads(ctx: AppContext, snapshot: JobSnapshot | None) -> Any:
    """The finished batch's zip and files for the download box; cleared while a batch runs.

    Only files under the folders the app serves (outputs/) can be offered; elsewhere the log says where they are.
    """
    if snapshot is None or snapshot.kind != "batch":
        return gr.skip()
    result = snapshot.result
    if not snapshot.finished or result is None:
        return None
    served = [Path(d).resolve() for d in ctx.served_dirs()]
    files = ([result.zip_path] if result.zip_path is not None else []) + list(result.converted)
    shown = [str(p) for p in files if any(p.resolve().is_relative_to(d) for d in served)]
    return shown or None


def build(ctx: AppContext, tab: gr.Tab) -> None:
    """The tab's widgets; the voice and index lists refresh each time `tab` is selected."""
    from tools.api.assets import default_f0_method
    from tools.api.convert import DEFAULT_BATCH_DIR, OUTPUT_FORMATS

    # Custom values are allowed: the choices are listed when the app starts (and refreshed per browser session),
    # and a voice or index made later (training, merge) must still be accepted from an API client. The
    # handlers validate the names (weights/<name>.pth, paths confined to the project).
    with gr.Row():
        voice = gr.Dropdown(voice_choices(ctx), value=None, label=label("convert.voice"), scale=3,
                            allow_custom_value=True, elem_id="convert-voice")
        if ctx.voice_lists is not None:
            ctx.voice_lists.add(voice, "file")
        index = gr.Dropdown(index_choices(ctx), value=NO_INDEX, label=label("convert.index"), scale=4,
                            allow_custom_value=True, elem_id="convert-index")
        refresh = gr.Button(label("convert.refresh"), scale=1, min_width=120)

    guide_text = first_run_guide(ctx)
    guide = gr.Markdown(guide_text, visible=bool(guide_text), elem_id="convert-guide")

    def on_voice(voice_file: str | None) -> Any:
        return gr.Dropdown(choices=index_choices(ctx), value=match_index(ctx, voice_file))

    def on_guide() -> Any:
        text = first_run_guide(ctx)
        return gr.Markdown(text, visible=bool(text))

    def on_refresh(voice_file: str | None) -> tuple[Any, Any, Any]:
        return gr.Dropdown(choices=voice_choices(ctx)), on_voice(voice_file), on_guide()

    voice.change(on_voice, inputs=[voice], outputs=[index], api_name=False)
    refresh.click(on_refresh, inputs=[voice], outputs=[voice, index, guide], api_name=False)
    tab.select(on_refresh, inputs=[voice], outputs=[voice, index, guide], api_name=False)

    def on_load() -> tuple[Any, Any, Any]:
        """List the voices; a project with a single voice has it picked already (and its index matched)."""
        voices = voice_choices(ctx)
        only = voices[0][1] if len(voices) == 1 else None
        return gr.Dropdown(choices=voices, value=only), on_voice(only), on_guide()

    # The Convert tab is the one shown first, so it is never "selected": list the voices on each page load too.
    gr.on(None, on_load, inputs=None, outputs=[voice, index, guide], api_name=False, show_progress="hidden")

    with gr.Tabs():
        with gr.Tab(label("tab.single"), id="convert_single"):
            with gr.Row():
                audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label=label("convert.audio"),
                                 elem_id="convert-audio")
                f0_file = gr.File(label=label("convert.f0_file"), file_types=[".txt", ".csv", ".json"], type="filepath")
            params = conversion_controls("convert", default_f0_method(ctx.project), f0_choices(ctx))
            with gr.Row():
                run = gr.Button(label("convert.run"), variant="primary", elem_id="convert-run", scale=5)
                stop = gr.Button(label("convert.stop"), variant="stop", elem_id="convert-stop", scale=1, min_width=100)
            with gr.Row():
                output = gr.Audio(label=label("convert.output"), type="filepath", interactive=False,
                                  elem_id="convert-output")
                download = gr.File(label=label("convert.download"), interactive=False, elem_id="convert-download")
            info = gr.Textbox(label=label("convert.info"), lines=3, interactive=False, elem_id="convert-info")

            assert len(params) == len(FORM_PARAMS) == 10, "convert_one takes the ten conversion values"

            # One parameter per input (Gradio injects the request and the progress bar only into named
            # parameters after them, its documented idiom): the input, voice, index, pitch file, then the
            # ten conversion values in FORM_PARAMS order.
            def convert_one(
                audio_path: str | None, voice_file: str | None, index: str | None, f0_file: str | None,
                v1: Any, v2: Any, v3: Any, v4: Any, v5: Any, v6: Any, v7: Any, v8: Any, v9: Any, v10: Any,
                request: gr.Request, progress: gr.Progress = gr.Progress(),  # noqa: B008
            ) -> tuple[str | None, str | None, str]:
                session = request.session_hash if request is not None else None
                with ctx.stop_token(session) as cancel:
                    try:
                        return run_convert(ctx, audio_path, voice_file, index, f0_file, v1, v2, v3, v4, v5, v6, v7,
                                           v8, v9, v10, progress=progress, cancel=cancel)
                    except gr.Error as exc:
                        failed[session or ""] = f"error: {exc.message}"
                        raise

            # The error notice can be closed; its text stays in the Result box until the next conversion.
            failed: dict[str, str] = {}

            def show_failure(request: gr.Request) -> str:
                return failed.pop(request.session_hash or "", "") if request is not None else ""

            def stop_one(request: gr.Request) -> str:
                stopped = ctx.stop_conversion(request.session_hash)
                return "stopping at the next chunk..." if stopped else "no conversion of this page is running"

            stop.click(stop_one, inputs=None, outputs=[info], api_name=False, queue=False)

            run.click(
                convert_one,
                inputs=[audio, voice, index, f0_file, *params],
                outputs=[output, download, info],
                api_name="convert",
            ).failure(show_failure, inputs=None, outputs=[info], api_name=False, queue=False)
            ui_pitch_editor.build(ctx, audio=audio, voice=voice, index=index, params=params,
                                  form_kwargs=conversion_kwargs, outputs=[output, download, info],
                                  convert=lambda *values, **job: run_convert(ctx, *values, **job))
        with gr.Tab(label("tab.batch"), id="convert_batch"):
            with gr.Row():
                input_dir = gr.Textbox(label=label("batch.input_dir"), elem_id="batch-input-dir")
                uploads = gr.File(file_count="multiple", type="filepath", label=label("batch.files"),
                                  elem_id="batch-files")
            with gr.Row():
                output_dir = gr.Textbox(DEFAULT_BATCH_DIR, label=label("batch.output_dir"), elem_id="batch-output-dir")
                out_format = gr.Dropdown(list(OUTPUT_FORMATS), value="wav", label=label("batch.format"))
            batch_params = conversion_controls("batch", default_f0_method(ctx.project), f0_choices(ctx))
            batch_run = gr.Button(label("batch.run"), variant="primary", elem_id="batch-run")
            results = gr.File(None, file_count="multiple", interactive=False, render=False,
                              label=label("batch.results"), elem_id="batch-results")
            panel = job_panel(ctx.jobs, extra_outputs=[results], render_extra=lambda s: [batch_downloads(ctx, s)],
                              elem_id="batch-panel")
            results.render()
            panel.bind(batch_run, _batch_starter(ctx),
                       [voice, index, input_dir, output_dir, out_format, *batch_params[:BATCH_UPLOADS_AT], uploads,
                        *batch_params[BATCH_UPLOADS_AT:]],
                       api_name="convert_batch")
            panel.attach_on_load(("batch",))

    def pitch_method_on_load() -> tuple[Any, Any]:
        """rmvpe.pt may have been downloaded since the app started: offer the method the files allow, and mark
        the methods whose model is missing."""
        method, choices = default_f0_method(ctx.project), f0_choices(ctx)
        return gr.Radio(choices=choices, value=method), gr.Radio(choices=choices, value=method)

    # params / batch_params are in FORM_PARAMS order: the pitch method is the third widget
    gr.on(None, pitch_method_on_load, inputs=None, outputs=[params[2], batch_params[2]], api_name=False,
          show_progress="hidden")
