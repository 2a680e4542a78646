"""The Separate tab: split songs into vocals and accompaniment with a UVR5 / MDX model, as a job
(progress, log, Stop). The work is `tools.api.separate_audio`; this module only parses and renders."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr

from infer_pack.errors import UserInputError
from tools.jobproc import JobCall
from tools.jobs import JobSnapshot
from tools.labels import label
from tools.ui_jobs import JobStarter, job_panel

if TYPE_CHECKING:
    from tools.web import AppContext

DEFAULT_OUTPUT_DIR = "outputs/separated"  # tools.api.separate's OUTPUT_DIR_NAME, served for download


def model_choices(ctx: AppContext) -> list[tuple[str, str]]:
    """(shown, value) per model: the catalogued ones not on disk say so and name their download."""
    from tools.api.assets import separation_status
    from tools.api.separate import model_choices as choices

    absent = {state.path.name: state.group for state in separation_status(ctx.project.root).assets
              if state.size_bytes is None}
    shown = []
    for name in choices(ctx.project):
        group = absent.get(name)
        shown.append((f"{name} ({label('separate.missing')} {group})" if group else name, name))
    return shown


def _starter(ctx: AppContext) -> JobStarter:
    def starter(model: str | None, input_dir: str, output_dir: str, out_format: str, aggressiveness: float,
                uploads: list[Any] | None) -> tuple[str, JobCall, None]:  # fmt: skip
        from tools.api.separate import resolve_model

        if not str(model or "").strip():
            raise UserInputError(
                "choose a separation model first: download one under Assets (Separation models), or type the path "
                "of a model file you already have (.pth / .onnx / .ckpt), or put it in uvr5_weights/"
            )
        # Refused at once when absent (the message names the download), not after the job started.
        model_path = resolve_model(ctx.project, str(model).strip(), confined=True)
        # Uploads live in Gradio's own upload folder, so they are not confined to the project; a typed folder is.
        files = [Path(str(f)) for f in (uploads or [])]
        if not files and not str(input_dir or "").strip():
            raise UserInputError("give an input folder or upload the songs to separate")
        src = None if files else ctx.project.confine(input_dir.strip(), "input folder")
        dst = ctx.project.confine((output_dir or DEFAULT_OUTPUT_DIR).strip(), "output folder")

        work = JobCall("separate_audio", dict(
            project=ctx.project, model=model_path, input_dir=src, input_paths=files or None, output_dir=dst,
            output_format=out_format, aggressiveness=int(aggressiveness),
        ), inject=("progress", "cancel", "cache"))
        return "separate", work, None

    return starter


def downloads(ctx: AppContext, snapshot: JobSnapshot | None) -> Any:
    """The finished job's stems for the download box (only those under the folders the app serves)."""
    if snapshot is None or snapshot.kind != "separate":
        return gr.skip()
    result = snapshot.result
    if not snapshot.finished or result is None:
        return None
    served = [Path(d).resolve() for d in ctx.served_dirs()]
    files = [p for f in result.separated for p in (f.vocals_path, f.instrumental_path)]
    shown = [str(p) for p in files if any(p.resolve().is_relative_to(d) for d in served)]
    return shown or None


def build(ctx: AppContext, tab: gr.Tab) -> None:
    """The tab's widgets; the model list refreshes each time `tab` is selected."""
    from tools.api.specs import separation_param_specs
    from tools.ui_common import spec_widget

    specs = separation_param_specs()

    gr.Markdown(label("separate.intro"))
    with gr.Row():
        model = gr.Dropdown(model_choices(ctx), value=None, label=label("separate.model"), scale=4,
                            allow_custom_value=True, elem_id="separate-model")  # fmt: skip
        refresh = gr.Button(label("separate.refresh"), scale=1, min_width=120)
    with gr.Row():
        input_dir = gr.Textbox(label=label("batch.input_dir"), elem_id="separate-input-dir")
        uploads = gr.File(file_count="multiple", type="filepath", label=label("separate.files"),
                          elem_id="separate-files")  # fmt: skip
    with gr.Row():
        output_dir = gr.Textbox(DEFAULT_OUTPUT_DIR, label=label("batch.output_dir"), elem_id="separate-output-dir")
        out_format = spec_widget(specs["output_format"], label("batch.format"), elem_id="separate-format")
        aggressiveness = spec_widget(specs["aggressiveness"], label("separate.aggressiveness"),
                                     elem_id="separate-aggressiveness")
    run = gr.Button(label("separate.run"), variant="primary", elem_id="separate-run")
    results = gr.File(None, file_count="multiple", interactive=False, render=False, label=label("separate.results"),
                      elem_id="separate-results")  # fmt: skip
    panel = job_panel(ctx.jobs, extra_outputs=[results], render_extra=lambda s: [downloads(ctx, s)],
                      elem_id="separate-panel")  # fmt: skip
    results.render()
    panel.bind(run, _starter(ctx), [model, input_dir, output_dir, out_format, aggressiveness, uploads],
               api_name="separate")  # fmt: skip
    panel.attach_on_load(("separate",))

    def on_refresh() -> Any:
        return gr.Dropdown(choices=model_choices(ctx))

    refresh.click(on_refresh, outputs=[model], api_name=False)
    tab.select(on_refresh, outputs=[model], api_name=False)
