"""A job panel shared by the tabs: progress bar, live log, Stop button, and a poll timer.

A Start button runs a handler that starts a job (tools.jobs) and returns its id; a timer then polls
the job's snapshot once a second and renders it, until the job finishes. Stop cancels the job's token,
so the step stops at its next check and keeps what it finished.

Jobs live in the server, not in the page: a refused start (the experiment is busy) keeps following the
job that runs, a page load reattaches a panel to the running job it shows (`JobPanel.attach_on_load`),
and `running_jobs_panel` lists every running job with its own Stop button.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import gradio as gr

from infer_pack.errors import RVCError
from tools.jobproc import JobCall
from tools.jobs import JobContext, JobRunner, JobSnapshot
from tools.labels import label

POLL_SECONDS = 1.0
# Renders extra outputs (plots, reports, results) from a snapshot; returns one value per extra output.
ExtraRenderer = Callable[[JobSnapshot | None], list[Any]]
# Validates the form values and returns the work to run plus the experiment key (None = no lock).
JobStarter = Callable[..., tuple[str, "JobCall | Callable[[JobContext], Any]", str | None]]


def progress_html(snapshot: JobSnapshot | None, error: str | None = None) -> str:
    """A progress bar with the job's state and message (data attributes make it testable).

    With both: `error` refused a new start while `snapshot`'s job goes on (its state, the error's text).
    """
    state: str
    if error is not None and snapshot is not None:
        state, fraction, text = snapshot.state, snapshot.fraction, f"error: {error}"
    elif error is not None:
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
            outcome = getattr(snapshot.result, "outcome", None)
            note = str(outcome()) if callable(outcome) else ""
            if note:  # e.g. a batch whose files did not all convert: "done, 1 of 3 failed"
                text = f"{snapshot.kind}: done, {note} ({snapshot.elapsed_s:.1f} s)"
        else:
            message = snapshot.message if snapshot.message.startswith(snapshot.kind) else f"{snapshot.kind}: {snapshot.message}"
            text = f"{message}{counter} - {snapshot.elapsed_s:.0f} s"
            if snapshot.stop_deadline is not None:
                text += f" - stopping: {stop_note(snapshot.stop_deadline, step_seconds(snapshot))}"
    percent = round(100.0 * fraction, 1)
    job = html.escape(snapshot.job_id) if snapshot is not None else ""
    return (
        f'<div class="rvc-progress" data-job="{job}" data-state="{state}" data-fraction="{fraction:.3f}" role="progressbar" '
        f'aria-valuenow="{percent}" aria-valuemin="0" aria-valuemax="100">'
        f'<div class="bar" style="width:{percent}%"></div>'
        f'<div class="text">{html.escape(text)}</div></div>'
    )


def step_seconds(snapshot: JobSnapshot) -> float | None:
    """The latest time per step a training job reported (its live "step_time_s"), if any."""
    times = [point.value for point in snapshot.metrics if point.name == "step_time_s"]
    return times[-1] if times else None


def stop_note(deadline: float, step_s: float | None = None) -> str:
    """What Stop will do by when: the step stops at its next check, or its process is ended at `deadline`.

    With a training's time per step: the step in progress is finished (and kept), then the checkpoint saved."""
    import time

    left = max(0.0, deadline - time.time())
    latest = f"at the latest at {time.strftime('%H:%M:%S', time.localtime(deadline))} ({left:.0f} s)"
    if step_s is not None:
        return (f"waiting for the step in progress (about {step_s:.0f} s a step; it is kept, not redone), "
                f"then a checkpoint is saved; {latest}")
    return f"ends at its next check, {latest}"


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

    @property
    def outputs(self) -> list[Any]:
        """What `attach` returns values for: the job id, the timer, the bar, the log and the extra outputs."""
        return [self.job_id, self.timer, self.progress, self.log, *self.extra_outputs]

    def _render(self, snapshot: JobSnapshot | None, error: str | None = None) -> list[Any]:
        return [progress_html(snapshot, error), log_text(snapshot), *self.render_extra(snapshot)]

    def attach(self, snapshot: JobSnapshot | None) -> list[Any]:
        """Values for `outputs` that make the panel follow `snapshot`'s job (polling while it runs)."""
        if snapshot is None:
            return [gr.skip() for _ in self.outputs]
        return [snapshot.job_id, gr.Timer(active=not snapshot.finished), *self._render(snapshot)]

    def _refused(self, current: str, key: str | None, message: str) -> list[Any]:
        """A start that raised: show the whole message, and keep following a job that still runs.

        The job to follow is the one holding the experiment (a second click on a busy experiment) or
        the one the panel showed; its log gets the refusal so the reason stays visible while it polls.
        """
        gr.Warning(message, duration=20)
        busy = self.jobs.running(key) if key else []
        followed = self.jobs.get(busy[-1].job_id if busy else current)
        if followed is not None and not followed.wait(0):
            followed.append_log(f"not started: {message}")
            snapshot = followed.snapshot()
            job_id, timer, _bar, *rest = self.attach(snapshot)
            return [job_id, timer, progress_html(snapshot, message), *rest]
        return ["", gr.Timer(active=False), progress_html(None, message), f"error: {message}", *self.render_extra(None)]

    def bind(self, button: gr.Button, starter: JobStarter, inputs: Sequence[Any], api_name: str) -> None:
        """On click: `starter(*values)` -> (kind, work, key); start it and begin polling."""

        def start(current: str, *values: Any) -> list[Any]:
            key: str | None = None
            try:
                kind, work, key = starter(*values)
                job = self.jobs.start(kind, work, key=key, form=values)
            except RVCError as exc:
                return self._refused(current, key, str(exc))
            return self.attach(job.snapshot())

        # The current job id is a State input: hidden from API clients, which keep their own session.
        button.click(start, inputs=[self.job_id, *inputs], outputs=self.outputs, api_name=api_name)

    def attach_on_load(self, kinds: Collection[str]) -> None:
        """When a page loads, follow the newest running job of these kinds (started by any page)."""

        def attach() -> list[Any]:
            return self.attach(newest_running(self.jobs, kinds))

        gr.on(None, attach, inputs=None, outputs=self.outputs, api_name=False, show_progress="hidden")


def newest_running(jobs: JobRunner, kinds: Collection[str], key: str | None = None) -> JobSnapshot | None:
    """The most recently started running job of `kinds` (and of experiment `key` when given)."""
    found = [s for s in jobs.running(key) if s.kind in kinds]
    return max(found, key=lambda s: s.started_at) if found else None


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
        if snapshot is not None and snapshot.state == "failed":
            # The last poll of a job: the bar holds one line, so the whole reason goes to a notice too.
            gr.Warning(f"{snapshot.kind} failed: {snapshot.error}", duration=20)
        return [gr.Timer(active=still_running), *panel._render(snapshot)]

    def stop_job(current: str) -> list[Any]:
        jobs.cancel(current)
        return panel._render(jobs.snapshot(current))

    timer.tick(poll, inputs=[job_id], outputs=[timer, progress, log, *extra_outputs], show_progress="hidden", api_name=False)
    stop.click(stop_job, inputs=[job_id], outputs=[progress, log, *extra_outputs], api_name=False)
    return panel


RUNNING_POLL_SECONDS = 3.0


RECENT_SECONDS = 600.0


def running_jobs_html(jobs: JobRunner) -> str:
    """A table of the running jobs, then those that failed or stopped in the last minutes with their reason.

    Rows carry data-job and data-state so tests and scripts can read them; data-count counts running jobs.
    """
    running = sorted(jobs.running(), key=lambda s: s.started_at)
    ended = [s for s in jobs.recently_finished(RECENT_SECONDS) if s.state in ("failed", "cancelled")]
    rows = "".join(
        f'<tr data-job="{html.escape(s.job_id)}" data-kind="{html.escape(s.kind)}" data-state="running">'
        f"<td><code>{html.escape(s.job_id)}</code></td><td>{html.escape(s.key or '')}</td>"
        f"<td>{html.escape(s.message)}"
        + (f" ({html.escape(stop_note(s.stop_deadline, step_seconds(s)))})" if s.stop_deadline is not None else "")
        + f"</td><td>{round(100 * s.fraction)}%</td><td>{s.elapsed_s:.0f} s</td></tr>"
        for s in running
    )
    rows += "".join(
        f'<tr data-job="{html.escape(s.job_id)}" data-kind="{html.escape(s.kind)}" data-state="{s.state}" '
        f'class="rvc-ended"><td><code>{html.escape(s.job_id)}</code></td><td>{html.escape(s.key or "")}</td>'
        f"<td>{html.escape(s.state)}{': ' + html.escape(s.error) if s.error else ''}</td>"
        f"<td>{round(100 * s.fraction)}%</td>"
        f"<td>ended {time.strftime('%H:%M:%S', time.localtime(s.finished_at or time.time()))}</td></tr>"
        for s in ended
    )
    if not running and not ended:
        return f'<div class="rvc-running" data-count="0"><p>{html.escape(label("jobs.none"))}</p></div>'
    none = "" if running else f"<p>{html.escape(label('jobs.none'))}</p>"
    return f'<div class="rvc-running" data-count="{len(running)}">{none}<table>{rows}</table></div>'


def running_jobs_heading(jobs: JobRunner) -> str:
    count = len(jobs.running())
    return f"{label('jobs.heading')} ({count})" if count else label("jobs.heading")


def running_jobs_panel(jobs: JobRunner) -> None:
    """Every running job, whichever page started it, with a Stop button; refreshed every few seconds."""
    with gr.Accordion(running_jobs_heading(jobs), open=False, elem_id="running-jobs") as accordion:
        table = gr.HTML(running_jobs_html(jobs), elem_id="running-jobs-table")
        with gr.Row():
            chosen = gr.Dropdown([], value=None, label=label("jobs.choose"), scale=3, elem_id="running-jobs-choice")
            stop = gr.Button(label("jobs.stop"), variant="stop", scale=1, min_width=100, elem_id="running-jobs-stop")
    timer = gr.Timer(RUNNING_POLL_SECONDS, active=True)

    def refresh(current: str | None = None) -> list[Any]:
        ids = [s.job_id for s in sorted(jobs.running(), key=lambda s: s.started_at)]
        keep = current if current in ids else (ids[-1] if ids else None)
        return [gr.Accordion(label=running_jobs_heading(jobs)), running_jobs_html(jobs),
                gr.Dropdown(choices=ids, value=keep)]

    def stop_chosen(current: str | None) -> list[Any]:
        if current:
            jobs.cancel(current)
        return refresh(current)

    outputs = [accordion, table, chosen]
    gr.on(None, refresh, inputs=None, outputs=outputs, api_name=False, show_progress="hidden")
    timer.tick(refresh, inputs=[chosen], outputs=outputs, api_name=False, show_progress="hidden")
    stop.click(stop_chosen, inputs=[chosen], outputs=outputs, api_name=False)
