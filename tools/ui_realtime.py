"""Realtime tab: the browser's microphone streamed through a voice and played back.

The browser sends microphone chunks every `STREAM_EVERY_S`; the stream event hands each to the
session's `tools.api.start_background_chunk_stream` and returns within milliseconds with the audio
converted since the previous chunk, while the session's worker thread converts whole blocks (Gradio's
frontend keeps only the latest chunk while an event is busy: converting inside the event made the
browser drop microphone audio). A new recording, stopping one, and the end of the browser session
close the worker; it also ends on its own after a few seconds without input. Browser streaming adds its own buffering
(about a second), so for the lowest latency use `python -m tools.cli realtime` with sound devices.
Only connections from this machine (loopback) are served unless the app was started with
`--realtime-remote`: the stream holds a model per session and sends live audio, which a shared
server should not offer to every visitor.

The streams run in their own concurrency group (`STREAM_CONCURRENCY_ID`), so jobs and panel polls
never hold them up. A session keeps at most `MAX_BACKLOG_BLOCKS` blocks waiting for its worker and
drops older input; when it cannot keep up, the status line says so (compute per block against the
block length, late and dropped blocks), names the jobs running beside it and what to change.
"""

from __future__ import annotations

import ipaddress
import time
from typing import TYPE_CHECKING, Any

import gradio as gr

from infer_pack.errors import RVCError
from tools.api.realtime_background import close_stream
from tools.api.specs import stream_param_specs
from tools.labels import label
from tools.ui_common import (
    index_choices,
    index_path_of,
    mark_missing_models,
    match_index,
    spec_value,
    spec_widget,
    voice_choices,
    voice_path,
)

if TYPE_CHECKING:
    from tools.web import AppContext

STREAM_EVERY_S = 0.1
# Whole blocks of microphone input a session may have waiting; older ones are dropped, so a machine that
# cannot keep up plays with gaps at a bounded latency instead of an ever-growing delay.
MAX_BACKLOG_BLOCKS = 2
# The streams' own concurrency group: no other event (jobs, panels, timers) shares its slots, and up to
# this many browser sessions stream at once instead of waiting behind one another.
STREAM_CONCURRENCY_ID = "realtime-stream"
MAX_STREAMS = 4
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


def running_jobs(ctx: AppContext) -> list[str]:
    """The jobs running now, each as "job <id> (<its latest message>)" (the id names the kind), for the stream's status."""
    named = []
    for job in ctx.jobs.running():
        message = " ".join(job.message.split())
        message = message if len(message) <= 80 else message[:79] + "…"
        named.append(f"job {job.job_id} ({message})" if message else f"job {job.job_id}")
    return named


def end_session_stream(stream: Any) -> None:
    """Close the session's stream (its worker thread and model reference go); the session holds none after."""
    close_stream(stream)


# The stream settings the tab offers, in the order of its controls after the pitch method.
SETTINGS = ("pitch_semitones", "formant_semitones", "index_rate", "block_time_s", "crossfade_time_s", "extra_time_s",
            "silence_threshold_db", "match", "preset")


def build(ctx: AppContext, tab: gr.Tab) -> None:
    from tools import api
    from tools.api.realtime import stream_settings

    specs = stream_param_specs()

    def setting(name: str, key: str, elem_id: str) -> Any:
        return spec_widget(specs[name], label(key), elem_id=elem_id)

    gr.Markdown(label("realtime.intro"))
    with gr.Row():
        voice = gr.Dropdown(voice_choices(ctx), value=None, label=label("convert.voice"), scale=3, elem_id="rt-voice")
        if ctx.voice_lists is not None:
            ctx.voice_lists.add(voice, "file")
        index = gr.Dropdown(index_choices(ctx), value="", label=label("convert.index"), scale=4, elem_id="rt-index")
    with gr.Row():
        f0_method = gr.Radio(mark_missing_models(ctx, F0_CHOICES),
                             value="pm", label=label("convert.f0_method"), info=specs["f0_method"].help,
                             elem_id="rt-f0")
        transpose = setting("pitch_semitones", "convert.transpose", "rt-transpose")
        formant = setting("formant_semitones", "realtime.formant", "rt-formant")
        index_rate = setting("index_rate", "convert.index_rate", "rt-index-rate")
    with gr.Row():
        block_time = setting("block_time_s", "realtime.block_time", "rt-block")
        crossfade = setting("crossfade_time_s", "realtime.crossfade", "rt-crossfade")
        extra_time = setting("extra_time_s", "realtime.extra_time", "rt-extra")
        silence = setting("silence_threshold_db", "realtime.silence", "rt-silence")
    with gr.Row():
        engine = spec_widget(specs["match"], specs["match"].label, elem_id="rt-match")
        preset = spec_widget(specs["preset"], specs["preset"].label, elem_id="rt-preset")
    with gr.Row():
        mic = gr.Audio(sources=["microphone"], streaming=True, type="numpy", label=label("realtime.input"), elem_id="rt-mic")
        out = gr.Audio(streaming=True, autoplay=True, interactive=False, label=label("realtime.output"), elem_id="rt-out")
    status = gr.Textbox(label=label("realtime.status"), interactive=False, elem_id="rt-status")
    session = gr.State(None, delete_callback=close_stream)  # the browser session ended: its worker ends too

    def on_chunk(chunk: Any, stream: Any, voice_file: str | None, index_file: str | None, f0: str,
                 semitones: float, formant_st: float, rate_of_index: float, block_s: float, fade_s: float,
                 extra_s: float, silence_db: float, engine_name: str, preset_name: str, request: gr.Request) -> tuple[Any, Any, Any]:  # fmt: skip
        if not realtime_allowed(ctx, request):
            raise gr.Error(label("realtime.loopback_only"))
        # `stream` is the session's tools.api.realtime_background.BackgroundChunkStream (Gradio reads these
        # hints: no forward refs); a closed one (idle timeout, or a new recording) is replaced.
        if chunk is None:
            return gr.skip(), stream, gr.skip()
        sample_rate, samples = chunk
        try:
            if stream is None or stream.closed:
                chosen = dict(zip(SETTINGS, (semitones, formant_st, rate_of_index, block_s, fade_s, extra_s,
                                             silence_db, engine_name, preset_name)))
                values = {name: spec_value(specs[name], value) for name, value in chosen.items()}
                values["crossfade_time_s"] = min(values["crossfade_time_s"], values["block_time_s"])
                settings = stream_settings(f0_method=f0, **values)
                stream = api.start_background_chunk_stream(
                    project=ctx.project, model=voice_path(ctx, voice_file), index_path=index_path_of(ctx, index_file),
                    settings=settings, sample_rate=int(sample_rate), cache=ctx.cache,
                    max_backlog_blocks=MAX_BACKLOG_BLOCKS, clock=time.monotonic)  # fmt: skip
            converted = stream.push_pcm16(samples)
        except RVCError as exc:
            raise gr.Error(str(exc)) from exc
        played = (stream.sample_rate, converted) if converted.size else gr.skip()
        return played, stream, stream.status(running_jobs(ctx))

    controls = [voice, index, f0_method, transpose, formant, index_rate, block_time, crossfade, extra_time, silence,
                engine, preset]
    mic.stream(on_chunk, inputs=[mic, session, *controls], outputs=[out, session, status],
               stream_every=STREAM_EVERY_S, time_limit=None, concurrency_limit=MAX_STREAMS,
               concurrency_id=STREAM_CONCURRENCY_ID, show_progress="hidden", api_name=False)  # fmt: skip
    # A new recording (or changed settings) starts a fresh stream with the current settings; stopping ends the worker.
    mic.start_recording(end_session_stream, inputs=[session], outputs=[session], api_name=False)
    mic.stop_recording(end_session_stream, inputs=[session], outputs=[session], api_name=False)
    voice.change(lambda v: gr.Dropdown(choices=index_choices(ctx), value=match_index(ctx, v)), inputs=[voice],
                 outputs=[index], api_name=False)  # fmt: skip
    tab.select(lambda: gr.Dropdown(choices=voice_choices(ctx)), outputs=[voice], api_name=False)  # new voices show up
