"""Realtime tab: the browser's microphone streamed through a voice and played back.

The browser sends microphone chunks every `STREAM_EVERY_S`; `tools.api.start_chunk_stream` converts
them in whole blocks and the converted audio streams back. Browser streaming adds its own buffering
(about a second), so for the lowest latency use `python -m tools.cli realtime` with sound devices.
Only connections from this machine (loopback) are served unless the app was started with
`--realtime-remote`: the stream holds a model per session and sends live audio, which a shared
server should not offer to every visitor.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any

import gradio as gr

from infer_pack.errors import RVCError
from tools.labels import label
from tools.ui_common import (
    index_choices,
    index_path_of,
    mark_missing_models,
    match_index,
    voice_choices,
    voice_path,
)

if TYPE_CHECKING:
    from tools.web import AppContext

STREAM_EVERY_S = 0.1
F0_CHOICES = [("PM (fast)", "pm"), ("Swift", "swift"), ("RMVPE", "rmvpe")]


def realtime_allowed(ctx: AppContext, request: gr.Request | None) -> bool:
    """Loopback browsers always; others only when the app was started with --realtime-remote."""
    return ctx.realtime_remote or is_loopback(request)


def is_loopback(request: gr.Request | None) -> bool:
    """True when the browser runs on this machine (127.0.0.0/8, ::1)."""
    host = getattr(getattr(request, "client", None), "host", None) if request is not None else None
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build(ctx: AppContext, tab: gr.Tab) -> None:
    from tools import api
    from tools.api.realtime import stream_settings

    gr.Markdown(label("realtime.intro"))
    with gr.Row():
        voice = gr.Dropdown(voice_choices(ctx), value=None, label=label("convert.voice"), scale=3, elem_id="rt-voice")
        if ctx.voice_lists is not None:
            ctx.voice_lists.add(voice, "file")
        index = gr.Dropdown(index_choices(ctx), value="", label=label("convert.index"), scale=4, elem_id="rt-index")
    with gr.Row():
        f0_method = gr.Radio(mark_missing_models(ctx, F0_CHOICES), value="pm", label=label("convert.f0_method"),
                             elem_id="rt-f0")
        transpose = gr.Number(0, precision=0, minimum=-24, maximum=24, label=label("convert.transpose"), elem_id="rt-transpose")
        formant = gr.Slider(-12, 12, value=0, step=0.5, label=label("realtime.formant"), elem_id="rt-formant")
        index_rate = gr.Slider(0, 1, value=0, step=0.01, label=label("convert.index_rate"), elem_id="rt-index-rate")
    with gr.Row():
        block_time = gr.Slider(0.05, 1.0, value=0.25, step=0.01, label=label("realtime.block_time"), elem_id="rt-block")
        crossfade = gr.Slider(0.01, 0.15, value=0.05, step=0.01, label=label("realtime.crossfade"), elem_id="rt-crossfade")
        extra_time = gr.Slider(0.0, 5.0, value=2.5, step=0.1, label=label("realtime.extra_time"), elem_id="rt-extra")
        silence = gr.Slider(-60, 0, value=-60, step=1, label=label("realtime.silence"), elem_id="rt-silence")
    with gr.Row():
        mic = gr.Audio(sources=["microphone"], streaming=True, type="numpy", label=label("realtime.input"), elem_id="rt-mic")
        out = gr.Audio(streaming=True, autoplay=True, interactive=False, label=label("realtime.output"), elem_id="rt-out")
    status = gr.Textbox(label=label("realtime.status"), interactive=False, elem_id="rt-status")
    session = gr.State(None)

    def on_chunk(chunk: Any, stream: Any, voice_file: str | None, index_file: str | None, f0: str,
                 semitones: float, formant_st: float, rate_of_index: float, block_s: float, fade_s: float,
                 extra_s: float, silence_db: float, request: gr.Request) -> tuple[Any, Any, Any]:  # fmt: skip
        if not realtime_allowed(ctx, request):
            raise gr.Error(label("realtime.loopback_only"))
        # `stream` is the session's tools.api.realtime.ChunkStream (Gradio reads these hints: no forward refs).
        if chunk is None:
            return gr.skip(), stream, gr.skip()
        sample_rate, samples = chunk
        try:
            if stream is None:
                settings = stream_settings(
                    block_time_s=float(block_s), crossfade_time_s=min(float(fade_s), float(block_s)),
                    extra_time_s=float(extra_s), silence_threshold_db=float(silence_db), f0_method=f0,
                    pitch_semitones=float(semitones or 0), formant_semitones=float(formant_st),
                    index_rate=float(rate_of_index),
                )  # fmt: skip
                stream = api.start_chunk_stream(project=ctx.project, model=voice_path(ctx, voice_file),
                                                index_path=index_path_of(ctx, index_file), settings=settings,
                                                sample_rate=int(sample_rate), cache=ctx.cache)  # fmt: skip
            converted = stream.push_pcm16(samples)
        except RVCError as exc:
            raise gr.Error(str(exc)) from exc
        played = (stream.sample_rate, converted) if converted.size else gr.skip()
        return played, stream, stream.status()

    controls = [voice, index, f0_method, transpose, formant, index_rate, block_time, crossfade, extra_time, silence]
    mic.stream(on_chunk, inputs=[mic, session, *controls], outputs=[out, session, status],
               stream_every=STREAM_EVERY_S, time_limit=None, concurrency_limit=1, show_progress="hidden",
               api_name=False)  # fmt: skip
    # A new recording (or changed settings) starts a fresh stream with the current settings.
    mic.start_recording(lambda: None, outputs=[session], api_name=False)
    voice.change(lambda v: gr.Dropdown(choices=index_choices(ctx), value=match_index(ctx, v)), inputs=[voice],
                 outputs=[index], api_name=False)  # fmt: skip
    tab.select(lambda: gr.Dropdown(choices=voice_choices(ctx)), outputs=[voice], api_name=False)  # new voices show up
