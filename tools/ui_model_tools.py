"""Model tools tab: show/change a voice's info, merge two voices, extract a small model, export ONNX."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import gradio as gr

from infer_pack.errors import RVCError, UserInputError
from tools.labels import label
from tools.project import validate_name

if TYPE_CHECKING:
    from configs import SampleRateTag, Version
    from tools.web import AppContext

AUTO = "auto"  # read the value from the checkpoint's weights


def render(result: Any) -> str:
    """A result as text: its `summary()` when it has one, else its fields."""
    from dataclasses import fields, is_dataclass

    summary = getattr(result, "summary", None)
    if callable(summary):
        return str(summary())
    if is_dataclass(result) and not isinstance(result, type):
        return "\n".join(f"{f.name}: {getattr(result, f.name)}" for f in fields(result))
    return str(result)


def guarded(fn: Callable[..., Any]) -> Callable[..., str]:
    """Run an action; an expected error becomes a one-line message in the result box."""

    def wrapper(*values: Any) -> str:
        try:
            return render(fn(*values))
        except RVCError as exc:
            return f"error: {exc}"

    return wrapper


class ModelTools:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    def voice(self, typed: str | None, what: str = "voice") -> Path:
        """A voice given as a name in weights/ or as a path inside the project / allowed folders."""
        return self.ctx.project.resolve_voice(typed, what)

    def show(self, model: str) -> Any:
        from tools import api

        path = self.voice(model)
        return api.show_voice_info(path=path)

    def change(self, model: str, info: str, save_as: str) -> Any:
        from tools import api

        target = self.ctx.project.voice_path(validate_name(save_as, "voice name")) if save_as.strip() else None
        source = self.voice(model)
        return api.change_voice_info(path=source, info=info, output_path=target)

    def merge(self, model_a: str, model_b: str, ratio: float, name: str, info: str) -> Any:
        from tools import api

        path_a, path_b = self.voice(model_a, "voice A"), self.voice(model_b, "voice B")
        output_path = self.ctx.project.voice_path(validate_name(name, "voice name"))
        return api.merge_voices(path_a=path_a, path_b=path_b, ratio_a=float(ratio), output_path=output_path, info=info)

    def extract(self, checkpoint: str, name: str, sample_rate: str, version: str, use_f0: str, info: str) -> Any:
        from tools import api

        if not checkpoint.strip():
            raise UserInputError("no checkpoint given; type logs/<experiment>/G_<step>.pth")
        checkpoint_path = self.ctx.project.confine(checkpoint.strip(), "checkpoint")
        output_path = self.ctx.project.voice_path(validate_name(name, "voice name"))
        return api.extract_small_model(
            checkpoint_path=checkpoint_path, output_path=output_path,
            sample_rate_tag=None if sample_rate == AUTO else cast("SampleRateTag", sample_rate),  # a dropdown's choice
            version=None if version == AUTO else cast("Version", version),
            use_f0=None if use_f0 == AUTO else use_f0 == "yes", info=info,
        )

    def onnx(self, model: str, output: str) -> Any:
        from tools import api

        target = self.ctx.project.confine(output.strip(), "ONNX output") if output.strip() else None
        source = self.voice(model)
        return api.export_onnx(path=source, output_path=target)


def build(ctx: AppContext, tab: gr.Tab) -> None:
    """The tab's widgets; voice lists refresh each time `tab` is selected."""
    tools = ModelTools(ctx)
    voices = [p.stem for p in ctx.project.list_voices()]
    dropdowns: list[gr.Dropdown] = []

    def voice_box(key: str, elem_id: str) -> gr.Dropdown:
        dropdown = gr.Dropdown(voices, value=None, label=label(key), allow_custom_value=True, elem_id=elem_id)
        dropdowns.append(dropdown)
        if ctx.voice_lists is not None:
            ctx.voice_lists.add(dropdown, "stem")
        return dropdown

    with gr.Accordion(label("tools.info_heading"), open=True):
        with gr.Row():
            model = voice_box("tools.model_path", "tools-info-model")
            show = gr.Button(label("tools.show_info"))
        with gr.Row():
            new_info = gr.Textbox(label=label("tools.new_info"))
            save_as = gr.Textbox(label=label("tools.save_name"))
            change = gr.Button(label("tools.change_info"))
        info_out = gr.Textbox(label=label("tools.result"), lines=6, interactive=False, elem_id="tools-info-out")
        show.click(guarded(tools.show), [model], [info_out], api_name="show_info")
        change.click(guarded(tools.change), [model, new_info, save_as], [info_out], api_name="change_info")

    with gr.Accordion(label("tools.merge_heading"), open=False):
        with gr.Row():
            model_a = voice_box("tools.model_a", "tools-merge-a")
            model_b = voice_box("tools.model_b", "tools-merge-b")
            ratio = gr.Slider(0, 1, value=0.5, step=0.01, label=label("tools.ratio"))
        with gr.Row():
            merge_name = gr.Textbox(label=label("tools.merge_name"))
            merge_info = gr.Textbox(label=label("tools.merge_info"))
            merge = gr.Button(label("tools.merge"))
        merge_out = gr.Textbox(label=label("tools.result"), lines=4, interactive=False)
        merge.click(guarded(tools.merge), [model_a, model_b, ratio, merge_name, merge_info], [merge_out],
                    api_name="merge")

    with gr.Accordion(label("tools.extract_heading"), open=False):
        with gr.Row():
            checkpoint = gr.Textbox(label=label("tools.checkpoint"))
            extract_name = gr.Textbox(label=label("tools.extract_name"))
        with gr.Row():
            sr = gr.Radio([AUTO, "32k", "40k", "48k"], value=AUTO, label=label("train.sample_rate"))
            ver = gr.Radio([AUTO, "v1", "v2"], value=AUTO, label=label("train.version"))
            f0 = gr.Radio([AUTO, "yes", "no"], value=AUTO, label=label("tools.use_f0"))
            extract_info = gr.Textbox(label=label("tools.new_info"))
            extract = gr.Button(label("tools.extract"))
        extract_out = gr.Textbox(label=label("tools.result"), lines=4, interactive=False)
        extract.click(guarded(tools.extract), [checkpoint, extract_name, sr, ver, f0, extract_info], [extract_out],
                      api_name="extract_model")

    with gr.Accordion(label("tools.onnx_heading"), open=False):
        with gr.Row():
            onnx_model = voice_box("tools.model_path", "tools-onnx-model")
            onnx_output = gr.Textbox(label=label("tools.onnx_output"))
            export = gr.Button(label("tools.export"))
        onnx_out = gr.Textbox(label=label("tools.result"), lines=4, interactive=False)
        export.click(guarded(tools.onnx), [onnx_model, onnx_output], [onnx_out], api_name="export_onnx")

    def refresh() -> list[Any]:
        names = [p.stem for p in ctx.project.list_voices()]
        return [gr.Dropdown(choices=names) for _ in dropdowns]

    tab.select(refresh, outputs=dropdowns, api_name=False)
