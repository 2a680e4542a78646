"""Background jobs for the app: one thread per long step, progress, live log, cancel, metrics.

A job runs `work(ctx)` in a daemon thread. `ctx` carries the progress callback, the cancel token,
a log function and a metric function; the API functions receive `ctx.progress` / `ctx.cancel`.
Log records emitted (through `logging`) by the job's thread are copied into the job's log, so
library code needs no knowledge of the UI. Steps on one experiment are exclusive: a second start
for the same key raises `TrainingLockedError` instead of racing on the same folder.

The UI polls `JobRunner.snapshot(job_id)` to render a progress bar, the log and the loss curve;
the Stop button calls `JobRunner.cancel(job_id)`, which sets the token the step checks between items.
A result whose `ok` is False (some of its items failed) ends the job as failed, its summary kept.

Work given as a `JobCall` (tools.jobproc) runs in its own process when the runner isolates jobs (the
web app): a native crash, an out-of-memory kill or a hang of that job ends only that job, with the
cause in its error, and its memory goes back to the system when it ends. Stop then means the
cooperative cancel, and the process is ended if the step has not stopped after the call's grace period.
Plain callables (scripts, tests) run in a thread of this process as before.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from infer_pack.errors import CancelledError, RVCError, TrainingLockedError
from infer_pack.progress import CancelToken
from tools.jobproc import ChildJob, JobCall, is_chatter

JobState = Literal["running", "done", "failed", "cancelled"]
FINISHED: frozenset[str] = frozenset({"done", "failed", "cancelled"})


@dataclass(frozen=True)
class MetricPoint:
    step: int
    name: str
    value: float


@dataclass(frozen=True)
class JobSnapshot:
    """A consistent copy of a job's state, safe to render from another thread."""

    job_id: str
    kind: str
    key: str | None
    state: JobState
    done: int
    total: int
    message: str
    log: tuple[str, ...]
    metrics: tuple[MetricPoint, ...]
    error: str | None
    result: Any
    started_at: float
    finished_at: float | None
    form: tuple[Any, ...] = ()  # the form values the job was started with (a reloaded page shows them again)
    pid: int | None = None  # the job's own process (None: runs in a thread of the server)
    stop_deadline: float | None = None  # after Stop: when the job's process is ended if still running

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    @property
    def fraction(self) -> float:
        """Progress in 0..1; 1 once finished, 0 while the total is unknown."""
        if self.state == "done":
            return 1.0
        return min(1.0, self.done / self.total) if self.total > 0 else 0.0

    @property
    def elapsed_s(self) -> float:
        return (self.finished_at or time.time()) - self.started_at


class JobContext:
    """What a job's work function receives: progress/cancel to pass on, plus log and metric sinks."""

    def __init__(self, job: Job) -> None:
        self._job = job
        self.cancel: CancelToken = job.cancel_token

    def progress(self, done: int, total: int, message: str) -> None:
        self._job.on_progress(done, total, message)

    def log(self, line: str) -> None:
        self._job.append_log(line)

    def metric(self, step: int, name: str, value: float) -> None:
        self._job.add_metric(MetricPoint(int(step), str(name), float(value)))


class Job:
    """Mutable job state behind a lock; read it through `snapshot()`."""

    def __init__(self, job_id: str, kind: str, key: str | None, max_log_lines: int, form: tuple[Any, ...] = ()) -> None:
        self.job_id = job_id
        self.kind = kind
        self.key = key
        self.form = form
        self.cancel_token = CancelToken()
        self._lock = threading.Lock()
        self._state: JobState = "running"
        self._done = 0
        self._total = 0
        self._message = "starting"
        self._log: deque[str] = deque(maxlen=max_log_lines)
        self._metrics: list[MetricPoint] = []
        self._error: str | None = None
        self._result: Any = None
        self._started_at = time.time()
        self._finished_at: float | None = None
        self._finished = threading.Event()
        self.thread: threading.Thread | None = None
        self.pid: int | None = None
        self.grace_s: float | None = None  # set for jobs in their own process
        self.stop_deadline: float | None = None

    def on_progress(self, done: int, total: int, message: str) -> None:
        with self._lock:
            changed = message != self._message
            self._done, self._total, self._message = int(done), int(total), message
        # Per-item counters ("3/10") would flood the log; keep only messages that say something new.
        if changed and message and not _is_counter_only(message):
            self.append_log(message)

    def append_log(self, line: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        with self._lock:
            for part in str(line).splitlines() or [""]:
                self._log.append(f"{stamp} {part}")

    def add_metric(self, point: MetricPoint) -> None:
        with self._lock:
            self._metrics.append(point)

    def finish(self, state: JobState, result: Any = None, error: str | None = None) -> None:
        with self._lock:
            self._state, self._result, self._error = state, result, error
            self._finished_at = time.time()
            if state == "done" and self._total > 0:
                self._done = self._total
        self.append_log({"done": "finished", "failed": f"failed: {error}", "cancelled": "stopped"}[state])
        self._finished.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._finished.wait(timeout)

    def snapshot(self) -> JobSnapshot:
        with self._lock:
            return JobSnapshot(
                job_id=self.job_id,
                kind=self.kind,
                key=self.key,
                state=self._state,
                done=self._done,
                total=self._total,
                message=self._message,
                log=tuple(self._log),
                metrics=tuple(self._metrics),
                error=self._error,
                result=self._result,
                started_at=self._started_at,
                finished_at=self._finished_at,
                form=self.form,
                pid=self.pid,
                stop_deadline=self.stop_deadline,
            )


def _is_counter_only(message: str) -> bool:
    tail = message.rsplit(" ", 1)[-1]
    head, _, rest = tail.partition("/")
    return head.isdigit() and rest.isdigit() and message.count(" ") <= 3 and not message.endswith("/0")


class _ThreadLogRouter(logging.Handler):
    """Copies log records to the job whose thread emitted them."""

    def __init__(self, runner: JobRunner) -> None:
        super().__init__(level=logging.INFO)
        self._runner = runner
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if is_chatter(record):
            return
        job = self._runner.job_for_thread(record.thread)
        if job is not None:
            try:
                job.append_log(self.format(record))
            except Exception:  # noqa: BLE001 - a broken record must never break the job that logged it
                self.handleError(record)


class JobRunner:
    """Starts, tracks and cancels jobs. One instance per app; pass it to whoever starts work."""

    def __init__(
        self, max_log_lines: int = 2000, keep_finished: int = 50, *, isolate: bool = False, cache: Any = None
    ) -> None:
        """`isolate`: run `JobCall` work in child processes; `cache`: the model cache in-thread calls share."""
        self.isolate = isolate
        self.cache = cache
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._by_thread: dict[int, Job] = {}
        self._ids = itertools.count(1)
        self._max_log_lines = max_log_lines
        self._keep_finished = keep_finished
        self._log_handler: _ThreadLogRouter | None = None

    def install_log_capture(self, logger: logging.Logger | None = None) -> None:
        """Route INFO+ records from job threads into their logs (idempotent; call at app start)."""
        if self._log_handler is not None:
            return
        target = logger or logging.getLogger()
        if target.getEffectiveLevel() > logging.INFO:
            target.setLevel(logging.INFO)
        self._log_handler = _ThreadLogRouter(self)
        target.addHandler(self._log_handler)

    def remove_log_capture(self, logger: logging.Logger | None = None) -> None:
        if self._log_handler is not None:
            (logger or logging.getLogger()).removeHandler(self._log_handler)
            self._log_handler = None

    def job_for_thread(self, thread_id: int | None) -> Job | None:
        if thread_id is None:
            return None
        with self._lock:
            return self._by_thread.get(thread_id)

    def start(
        self,
        kind: str,
        work: Callable[[JobContext], Any] | JobCall,
        *,
        key: str | None = None,
        form: Sequence[Any] = (),
    ) -> Job:
        """Run `work(ctx)` in a new thread, or a `JobCall` in its own process when isolating.

        `key` (an experiment name) allows one running job per key. `form`: the values of the form that
        started it, kept for pages that load while it runs.
        """
        with self._lock:
            if key is not None:
                for other in self._jobs.values():
                    if other.key == key and not other.wait(0):
                        raise TrainingLockedError(
                            f"experiment {key!r} is busy with a running '{other.kind}' step; "
                            "wait for it to finish or press Stop first"
                        )
            job = Job(f"{kind}-{next(self._ids)}", kind, key, self._max_log_lines, tuple(form))
            self._jobs[job.job_id] = job
            self._forget_old_locked()
        if isinstance(work, JobCall) and self.isolate:
            job.grace_s = work.grace_s
            thread = threading.Thread(target=self._supervise, args=(job, work), name=f"job:{job.job_id}", daemon=True)
        else:
            body = self._in_thread(work) if isinstance(work, JobCall) else work
            thread = threading.Thread(target=self._run, args=(job, body), name=f"job:{job.job_id}", daemon=True)
        job.thread = thread
        thread.start()
        return job

    def _in_thread(self, call: JobCall) -> Callable[[JobContext], Any]:
        def work(ctx: JobContext) -> Any:
            return call.invoke(progress=ctx.progress, cancel=ctx.cancel, on_metrics=ctx.metric, cache=self.cache)

        return work

    def _supervise(self, job: Job, call: JobCall) -> None:
        """Run `call` in a child process and mirror its messages into `job` until it ends or dies."""
        try:
            child = ChildJob(call)
        except Exception as exc:  # noqa: BLE001 - e.g. no memory or process slots left to start it
            job.finish("failed", error=f"could not start the job's process: {type(exc).__name__}: {exc}")
            return
        job.pid = child.pid
        job.append_log(f"running in its own process (pid {child.pid})")
        outcome: tuple[Any, ...] | None = None
        for message in child.messages():
            if job.cancel_token.cancelled:
                job.stop_deadline = child.request_stop()
            note = child.enforce_deadline()
            if note:
                job.append_log(note)
            if message is None:
                continue
            tag = message[0]
            if tag == "progress":
                job.on_progress(message[1], message[2], message[3])
            elif tag == "log":
                job.append_log(message[1])
            elif tag == "metric":
                job.add_metric(MetricPoint(message[1], message[2], message[3]))
            elif tag in ("result", "cancelled", "failed"):
                outcome = message
        cause = child.finish()
        if outcome is None:
            if child.ended_by_us:
                job.finish("cancelled")
            else:
                job.finish("failed", error=f"the {job.kind} job's process {cause}")
        elif outcome[0] == "result":
            self._finish_with(job, outcome[1])
        elif outcome[0] == "cancelled":
            self._finish_cancelled(job, outcome[1] if len(outcome) > 1 else None)
        else:
            job.finish("failed", error=str(outcome[1]))

    def _run(self, job: Job, work: Callable[[JobContext], Any]) -> None:
        ident = threading.get_ident()
        with self._lock:
            self._by_thread[ident] = job
        try:
            result = work(JobContext(job))
        except CancelledError as exc:
            self._finish_cancelled(job, exc.result)
        except RVCError as exc:
            job.finish("failed", error=str(exc))
        except Exception as exc:  # shown to the user as one line; the log keeps the type for diagnosis
            logging.getLogger(__name__).exception("job %s crashed", job.job_id)
            job.finish("failed", error=f"{type(exc).__name__}: {exc}")
        else:
            self._finish_with(job, result)
        finally:
            with self._lock:
                self._by_thread.pop(ident, None)

    @staticmethod
    def _finish_cancelled(job: Job, result: Any) -> None:
        summary = getattr(result, "summary", None)
        if callable(summary):
            job.append_log(str(summary()))
        job.finish("cancelled", result=result)

    @staticmethod
    def _finish_with(job: Job, result: Any) -> None:
        summary = getattr(result, "summary", None)
        text = str(summary()) if callable(summary) else ""
        if text:
            job.append_log(text)
        if job.cancel_token.cancelled:
            job.finish("cancelled", result=result)
        elif getattr(result, "ok", True) is False:
            # A result that counts failed items (downloads) is no success: say so with the line naming them.
            lines = text.splitlines()
            error = next((line.strip() for line in lines if "failed" in line), lines[0] if lines else "")
            job.finish("failed", result=result, error=error or "some items failed; see the log")
        else:
            job.finish("done", result=result)

    def _forget_old_locked(self) -> None:
        finished = [j for j in self._jobs.values() if j.wait(0)]
        for job in finished[: max(0, len(finished) - self._keep_finished)]:
            del self._jobs[job.job_id]

    def get(self, job_id: str | None) -> Job | None:
        if not job_id:
            return None
        with self._lock:
            return self._jobs.get(job_id)

    def snapshot(self, job_id: str | None) -> JobSnapshot | None:
        job = self.get(job_id)
        return job.snapshot() if job is not None else None

    def cancel(self, job_id: str | None) -> bool:
        """Ask a job to stop at its next check; True when a running job was found."""
        job = self.get(job_id)
        if job is None or job.wait(0):
            return False
        job.cancel_token.cancel()
        if job.grace_s is not None:
            deadline = time.strftime("%H:%M:%S", time.localtime(time.time() + job.grace_s))
            job.append_log(
                f"stop requested; finishing the current item (its process is ended at {deadline}, "
                f"{job.grace_s:.0f} s from now, if it has not stopped by then)"
            )
        else:
            job.append_log("stop requested; finishing the current item")
        return True

    def running(self, key: str | None = None) -> list[JobSnapshot]:
        with self._lock:
            jobs = list(self._jobs.values())
        return [j.snapshot() for j in jobs if not j.wait(0) and (key is None or j.key == key)]

    def recently_finished(self, seconds: float) -> list[JobSnapshot]:
        """Jobs that ended within the last `seconds`, oldest first."""
        with self._lock:
            jobs = list(self._jobs.values())
        since = time.time() - seconds
        ended = [j.snapshot() for j in jobs if j.wait(0)]
        return sorted((s for s in ended if (s.finished_at or 0) >= since), key=lambda s: s.finished_at or 0)

    def wait(self, job_id: str, timeout: float | None = None) -> JobSnapshot:
        job = self.get(job_id)
        if job is None:
            raise KeyError(job_id)
        job.wait(timeout)
        return job.snapshot()

    def cancel_all(self, timeout: float = 5.0) -> None:
        """Cancel every running job and wait briefly for them (app shutdown)."""
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            job.cancel_token.cancel()
        deadline = time.time() + timeout
        for job in jobs:
            job.wait(max(0.0, deadline - time.time()))
