"""A job panel shared by the tabs: progress bar, live log, Stop button, and a poll timer.

A Start button runs a handler that starts a job (tools.jobs) and returns its id; a timer then polls
the job's snapshot once a second and renders it, until the job finishes. Stop cancels the job's token,
so the step stops at its next check and keeps what it finished.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gradio as gr

from infer_pack.errors import RVCError
from tools.jobs import JobContext, JobRunner, JobSnapshot
from tools.labels import label

POLL_SECONDS = 1.0
# Renders extra outputs (plots, reports, results) from a snapshot; returns one value per extra output.
ExtraRenderer = Callable[[JobSnapshot | None], list[Any]]
# Validates the form values and returns the work to run plus the experiment key (None = no lock).
JobStarter = Callable[..., tuple[str, Callable[[JobContext], Any], str | None]]


def progress_html(snapshot: JobSnapshot | None, error: str | None = None) -> str:
    """A progress bar with the job's state and message (data attributes make it testable)."""
    if error is not None:
        state, fraction, text = "failed", 0.0, f"error: {error}"
    elif snapshot is None:
        state, fraction, text = "idle", 0.0, label("job.idle")
    else:
        state, fraction = snapshot.state, snapshot.fraction
        counter = f" ({snapshot.done}/{snapshot.total})" if snapshot.total > 0 else ""
        if snapshot.state == "failed":
            text = f"{snapshot.kind}: failed: {snapshot.error}"
        elif snapshot.state == "cancelled":
            text = f"{snapshot.kind}: stopped after {snapshot.elapsed_s:.1f} s"
        elif snapshot.state == "done":
            text = f"{snapshot.kind}: done in {snapshot.elapsed_s:.1f} s"
        else:
            message = snapshot.message if snapshot.message.startswith(snapshot.kind) else f"{snapshot.kind}: {snapshot.message}"
            text = f"{message}{counter} - {snapshot.elapsed_s:.0f} s"
    percent = round(100.0 * fraction, 1)
    job = html.escape(snapshot.job_id) if snapshot is not None else ""
    return (
        f'<div class="rvc-progress" data-job="{job}" data-state="{state}" data-fraction="{fraction:.3f}" role="progressbar" '
        f'aria-valuenow="{percent}" aria-valuemin="0" aria-valuemax="100">'
        f'<div class="bar" style="width:{percent}%"></div>'
        f'<div class="text">{html.escape(text)}</div></div>'
    )


def log_text(snapshot: JobSnapshot | None) -> str:
    return "\n".join(snapshot.log) if snapshot is not None else ""


@dataclass
class JobPanel:
    """The widgets of one panel; `bind` wires a Start button to it."""

    jobs: JobRunner
    job_id: gr.State
    progress: gr.HTML
    log: gr.Textbox
    stop: gr.Button
    timer: gr.Timer
    extra_outputs: Sequence[gr.components.Component]
    render_extra: ExtraRenderer

    def _render(self, snapshot: JobSnapshot | None, error: str | None = None) -> list[Any]:
        return [progress_html(snapshot, error), log_text(snapshot), *self.render_extra(snapshot)]

    def bind(self, button: gr.Button, starter: JobStarter, inputs: Sequence[Any], api_name: str) -> None:
        """On click: `starter(*values)` -> (kind, work, key); start it and begin polling."""

        def start(*values: Any) -> list[Any]:
            try:
                kind, work, key = starter(*values)
                job = self.jobs.start(kind, work, key=key)
            except RVCError as exc:
                return ["", gr.Timer(active=False), *self._render(None, str(exc))]
            return [job.job_id, gr.Timer(active=True), *self._render(job.snapshot())]

        button.click(
            start,
            inputs=list(inputs),
            outputs=[self.job_id, self.timer, self.progress, self.log, *self.extra_outputs],
            api_name=api_name,
        )


def job_panel(
    jobs: JobRunner,
    extra_outputs: Sequence[gr.components.Component] = (),
    render_extra: ExtraRenderer | None = None,
    log_lines: int = 10,
    elem_id: str | None = None,
) -> JobPanel:
    """Create the widgets (in the current layout) and wire the timer and the Stop button."""
    job_id = gr.State("")
    with gr.Column(elem_id=elem_id, elem_classes=["rvc-job"]):
        with gr.Row(equal_height=True):
            with gr.Column(scale=5):
                progress = gr.HTML(progress_html(None), elem_classes=["rvc-progress-box"])
            stop = gr.Button(label("job.stop"), variant="stop", scale=1, min_width=100, elem_classes=["rvc-stop"])
        log = gr.Textbox(
            label=label("job.log"), lines=log_lines, max_lines=log_lines, interactive=False, autoscroll=True,
            elem_classes=["rvc-log"],
        )
    timer = gr.Timer(POLL_SECONDS, active=False)
    panel = JobPanel(jobs, job_id, progress, log, stop, timer, extra_outputs, render_extra or (lambda _s: []))

    def poll(current: str) -> list[Any]:
        snapshot = jobs.snapshot(current)
        still_running = snapshot is not None and not snapshot.finished
        return [gr.Timer(active=still_running), *panel._render(snapshot)]

    def stop_job(current: str) -> list[Any]:
        jobs.cancel(current)
        return panel._render(jobs.snapshot(current))

    timer.tick(poll, inputs=[job_id], outputs=[timer, progress, log, *extra_outputs], show_progress="hidden", api_name=False)
    stop.click(stop_job, inputs=[job_id], outputs=[progress, log, *extra_outputs], api_name=False)
    return panel
