"""Jobs in child processes (tools.jobproc): a crash, a kill or a hang ends one job, never the runner."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tools.jobproc import (
    ConversionWorkers,
    JobCall,
    JobProcessError,
    RemoteJobError,
    death_cause,
)
from tools.jobs import JobRunner

COUNT = "jobproc_targets:count"
ALL = ("progress", "cancel", "on_metrics")


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _wait_for(predicate, timeout_s: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.time() + timeout_s
    while not predicate():
        assert time.time() < deadline, "condition not met in time"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped) counts as gone.
    return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"


def test_a_call_runs_in_its_own_process_and_reports_like_a_thread_job() -> None:
    runner = JobRunner(isolate=True)
    job = runner.start("count", JobCall(COUNT, {"items": 4}, inject=ALL))
    snap = runner.wait(job.job_id, timeout=60)
    assert snap.state == "done", snap.error
    assert snap.result["items"] == 4 and snap.result["pid"] != os.getpid()
    assert snap.pid == snap.result["pid"]
    assert (snap.done, snap.total) == (4, 4)
    assert [p.value for p in snap.metrics] == pytest.approx([1.0, 0.5, 1 / 3, 0.25])
    assert any(f"counting to 4 in pid {snap.pid}" in line for line in snap.log), snap.log
    assert not _alive(snap.pid), "the job's process must be gone once the job ended"


def test_the_same_call_runs_in_a_thread_when_not_isolating() -> None:
    runner = JobRunner(isolate=False)
    snap = runner.wait(runner.start("count", JobCall(COUNT, {"items": 2}, inject=ALL)).job_id, timeout=30)
    assert snap.state == "done" and snap.result["pid"] == os.getpid() and snap.pid is None


def test_a_native_crash_fails_only_that_job() -> None:
    runner = JobRunner(isolate=True)
    survivor = runner.start("count", JobCall(COUNT, {"items": 30, "delay_s": 0.1}, inject=ALL))
    crashed = runner.wait(runner.start("crash", JobCall("jobproc_targets:crash", {}, inject=("progress",))).job_id, 60)
    assert crashed.state == "failed"
    assert "crash job's process crashed in native code (SIGSEGV)" in str(crashed.error), crashed.error
    assert any("about to crash" in line for line in crashed.log)
    assert runner.wait(survivor.job_id, timeout=60).state == "done"


def test_kill_9_of_a_job_process_ends_that_job_with_the_cause() -> None:
    runner = JobRunner(isolate=True)
    other = runner.start("count", JobCall(COUNT, {"items": 40, "delay_s": 0.1}, inject=ALL))
    victim = runner.start("count", JobCall(COUNT, {"items": 10_000, "delay_s": 0.05}, inject=ALL))
    _wait_for(lambda: victim.snapshot().done > 0)
    os.kill(victim.snapshot().pid, signal.SIGKILL)  # type: ignore[arg-type]
    snap = runner.wait(victim.job_id, timeout=30)
    assert snap.state == "failed"
    assert "was killed (SIGKILL)" in str(snap.error), snap.error
    assert runner.wait(other.job_id, timeout=60).state == "done"


def test_errors_inside_the_process_arrive_as_the_original_message() -> None:
    runner = JobRunner(isolate=True)
    snap = runner.wait(runner.start("refuse", JobCall("jobproc_targets:refuse", {}, inject=("progress",))).job_id, 60)
    assert snap.state == "failed" and snap.error == "the input was refused: give another file"


def test_stop_cancels_cooperatively() -> None:
    runner = JobRunner(isolate=True)
    job = runner.start("count", JobCall(COUNT, {"items": 10_000, "delay_s": 0.02}, inject=ALL, grace_s=30))
    _wait_for(lambda: job.snapshot().done > 3)
    started = time.time()
    assert runner.cancel(job.job_id)
    snap = runner.wait(job.job_id, timeout=30)
    assert snap.state == "cancelled" and time.time() - started < 10
    assert snap.stop_deadline is not None
    assert any("its process is ended at" in line for line in snap.log), snap.log
    assert not any("did not stop within" in line for line in snap.log)


def test_stop_ends_a_job_that_ignores_it_after_the_grace_period() -> None:
    runner = JobRunner(isolate=True)
    call = JobCall("jobproc_targets:ignore_cancel", {"seconds": 300}, inject=("progress",), grace_s=1.5)
    job = runner.start("hang", call)
    _wait_for(lambda: job.snapshot().message == "hanging")
    started = time.time()
    runner.cancel(job.job_id)
    snap = runner.wait(job.job_id, timeout=30)
    waited = time.time() - started
    assert snap.state == "cancelled"
    assert 1.4 <= waited < 10, waited
    assert any("did not stop within 2 s of Stop; ending its process" in line for line in snap.log), snap.log
    assert not _alive(snap.pid)  # type: ignore[arg-type]


def test_memory_of_a_job_goes_back_when_it_ends() -> None:
    """A job holding 400 MB: the runner's process does not grow, and the child's memory is released."""
    runner = JobRunner(isolate=True)
    before = _rss_kib(os.getpid())
    snap = runner.wait(
        runner.start("alloc", JobCall("jobproc_targets:allocate", {"megabytes": 400}, inject=("progress",))).job_id, 60
    )
    assert snap.state == "done" and snap.result == 400 * 1024 * 1024
    assert _rss_kib(os.getpid()) - before < 50 * 1024  # the 400 MB were never in this process
    assert not _alive(snap.pid)  # type: ignore[arg-type]


def test_death_causes_read_like_sentences() -> None:
    assert "lack of memory" in death_cause(-signal.SIGKILL, oom_before=2, oom_after=3)
    assert "lack of memory" not in death_cause(-signal.SIGKILL, oom_before=3, oom_after=3)
    assert "crashed in native code (SIGSEGV)" in death_cause(-signal.SIGSEGV)
    assert "SIGXFSZ" in death_cause(-signal.SIGXFSZ)
    assert "exited with status 3" in death_cause(3)


def test_job_calls_name_known_functions_only() -> None:
    with pytest.raises(ValueError, match="cannot inject"):
        JobCall("convert_voice", {}, inject=("secrets",))
    with pytest.raises(ValueError, match="not a function name"):
        JobCall("os.system('x')")
    with pytest.raises(ValueError, match="no action"):
        JobCall("not_an_action").resolve()


def test_conversion_worker_survives_errors_and_is_replaced_after_a_crash() -> None:
    workers = ConversionWorkers(size=1, timeout_s=60)
    try:
        first = workers.call(JobCall(COUNT, {"items": 1}, inject=ALL))
        with pytest.raises(RemoteJobError, match="the input was refused"):
            workers.call(JobCall("jobproc_targets:refuse", {}, inject=("progress",)))
        # A request error keeps the worker (and its loaded models).
        assert workers.call(JobCall(COUNT, {"items": 1}, inject=ALL))["pid"] == first["pid"]
        with pytest.raises(JobProcessError, match=r"crashed in native code \(SIGSEGV\)"):
            workers.call(JobCall("jobproc_targets:crash", {}, inject=("progress",)))
        after = workers.call(JobCall(COUNT, {"items": 1}, inject=ALL))
        assert after["pid"] != first["pid"]
    finally:
        workers.close()


def test_conversion_worker_that_hangs_is_ended_at_its_time_limit() -> None:
    workers = ConversionWorkers(size=1, timeout_s=60)
    try:
        with pytest.raises(JobProcessError, match="longer than 2 s"):
            workers.call(JobCall("jobproc_targets:ignore_cancel", {"seconds": 300}, inject=("progress",)), timeout_s=2)
        assert workers.call(JobCall(COUNT, {"items": 1}, inject=ALL))["items"] == 1
    finally:
        workers.close()


def test_a_conversion_in_a_worker_stops_at_its_next_check_and_the_worker_stays() -> None:
    from infer_pack.errors import CancelledError
    from infer_pack.progress import CancelToken

    workers = ConversionWorkers(size=1, timeout_s=60)
    try:
        first = workers.call(JobCall(COUNT, {"items": 1}, inject=ALL))
        cancel = CancelToken()
        seen: list[int] = []

        def on_progress(done: int, total: int, message: str) -> None:
            seen.append(done)
            if done >= 3:
                cancel.cancel()  # the page's Stop, pressed while the worker converts

        started = time.time()
        with pytest.raises(CancelledError):
            workers.call(JobCall(COUNT, {"items": 10_000, "delay_s": 0.02}, inject=ALL), on_progress=on_progress,
                         cancel=cancel)
        assert time.time() - started < 10 and 3 <= max(seen) < 10_000
        # The same worker (and its loaded models) serves the next request, which is not stopped.
        again = workers.call(JobCall(COUNT, {"items": 2}, inject=ALL))
        assert again["pid"] == first["pid"] and again["items"] == 2
    finally:
        workers.close()


def test_the_app_stops_only_the_conversion_of_the_page_that_asked(tmp_path: Path) -> None:
    from tools.web import AppContext

    ctx = AppContext.create(tmp_path)
    try:
        with ctx.stop_token("page-a") as a, ctx.stop_token("page-b") as b:
            assert ctx.stop_conversion("page-a") and a.cancelled and not b.cancelled
        assert not ctx.stop_conversion("page-a"), "a finished conversion has nothing to stop"
    finally:
        ctx.close()


def test_job_processes_run_at_a_lower_cpu_priority_than_the_server() -> None:
    from tools.jobproc import CONVERSION_NICENESS, JOB_NICENESS

    server = os.getpriority(os.PRIO_PROCESS, 0)
    runner = JobRunner(isolate=True)
    job = runner.start("count", JobCall(COUNT, {"items": 200, "delay_s": 0.05}, inject=ALL))
    try:
        _wait_for(lambda: job.snapshot().done >= 1, timeout_s=60)  # the child's own code is running
        assert job.pid is not None
        assert os.getpriority(os.PRIO_PROCESS, job.pid) == min(19, server + JOB_NICENESS) != server
    finally:
        runner.cancel(job.job_id)
        runner.wait(job.job_id, timeout=60)
    workers = ConversionWorkers(size=1, timeout_s=60)
    try:
        pid = workers.call(JobCall(COUNT, {"items": 1}, inject=ALL))["pid"]
        assert os.getpriority(os.PRIO_PROCESS, pid) == min(19, server + CONVERSION_NICENESS) != server
        assert os.getpriority(os.PRIO_PROCESS, 0) == server, "the server keeps its own priority"
    finally:
        workers.close()
