"""tools.jobs: background jobs report progress, capture logs, stop on cancel, lock an experiment."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from infer_pack.errors import TrainingLockedError, UserInputError
from infer_pack.progress import track
from tools.jobs import JobContext, JobRunner


def test_job_reports_progress_logs_and_result() -> None:
    runner = JobRunner()
    runner.install_log_capture()
    try:
        def work(ctx: JobContext) -> int:
            logging.getLogger("train.demo").info("hello from the job thread")
            for i in track(range(5), 5, "items", ctx.progress, ctx.cancel):
                ctx.metric(i, "loss", 1.0 / (i + 1))
            return 42

        snap = runner.wait(runner.start("demo", work).job_id, timeout=10)
    finally:
        runner.remove_log_capture()
    assert snap.state == "done" and snap.result == 42
    assert (snap.done, snap.total, snap.fraction) == (5, 5, 1.0)
    assert any("hello from the job thread" in line for line in snap.log)
    assert [p.value for p in snap.metrics] == pytest.approx([1.0, 0.5, 1 / 3, 0.25, 0.2])


def test_log_capture_ignores_other_threads() -> None:
    runner = JobRunner()
    runner.install_log_capture()
    release = threading.Event()
    try:
        job = runner.start("wait", lambda ctx: release.wait(5))
        logging.getLogger("elsewhere").warning("not from the job")
        release.set()
        snap = runner.wait(job.job_id, timeout=10)
    finally:
        runner.remove_log_capture()
    assert not any("not from the job" in line for line in snap.log)


def test_cancel_stops_a_running_job_between_items() -> None:
    runner = JobRunner()
    started = threading.Event()
    seen: list[int] = []

    def work(ctx: JobContext) -> None:
        for i in track(range(1000), 1000, "slow", ctx.progress, ctx.cancel):
            seen.append(i)
            started.set()
            time.sleep(0.01)

    job = runner.start("slow", work, key="exp")
    assert started.wait(5)
    assert runner.cancel(job.job_id)
    snap = runner.wait(job.job_id, timeout=10)
    assert snap.state == "cancelled"
    assert 0 < len(seen) < 1000
    assert not runner.cancel(job.job_id), "a finished job cannot be cancelled again"


def test_one_running_job_per_experiment() -> None:
    runner = JobRunner()
    release = threading.Event()
    first = runner.start("train", lambda ctx: release.wait(5), key="voice-a")
    with pytest.raises(TrainingLockedError, match="voice-a"):
        runner.start("extract", lambda ctx: None, key="voice-a")
    other = runner.start("train", lambda ctx: None, key="voice-b")  # another experiment is fine
    assert runner.wait(other.job_id, timeout=5).state == "done"
    release.set()
    assert runner.wait(first.job_id, timeout=5).state == "done"
    again = runner.start("extract", lambda ctx: None, key="voice-a")  # free once finished
    assert runner.wait(again.job_id, timeout=5).state == "done"


def test_errors_become_one_line_messages() -> None:
    runner = JobRunner()

    def bad(ctx: JobContext) -> None:
        raise UserInputError("dataset folder 'x' is empty; add audio files")

    snap = runner.wait(runner.start("bad", bad).job_id, timeout=5)
    assert snap.state == "failed"
    assert snap.error == "dataset folder 'x' is empty; add audio files"
    assert "Traceback" not in snap.error


def test_a_result_with_failed_items_ends_the_job_as_failed() -> None:
    from dataclasses import dataclass

    @dataclass
    class Counted:
        failed: int

        @property
        def ok(self) -> bool:
            return not self.failed

        def summary(self) -> str:
            return f"fetched 3 file(s)\n{self.failed} file(s) failed:\n  a.pt: offline" if self.failed else "fetched 3"

    runner = JobRunner()
    bad = runner.wait(runner.start("download", lambda ctx: Counted(1)).job_id, timeout=5)
    assert bad.state == "failed" and bad.error == "1 file(s) failed:" and bad.result == Counted(1)
    assert any("a.pt: offline" in line for line in bad.log), "the whole summary stays in the log"
    good = runner.wait(runner.start("download", lambda ctx: Counted(0)).job_id, timeout=5)
    assert good.state == "done"


def test_library_loader_chatter_stays_out_of_the_job_log() -> None:
    """faiss's 'Could not load library with AVX512 support due to: ModuleNotFoundError' read like a failure."""
    runner = JobRunner()
    runner.install_log_capture()
    try:
        def work(ctx: JobContext) -> None:
            logging.getLogger("faiss.loader").info("Could not load library with AVX512 support due to: ModuleNotFoundError")
            logging.getLogger("faiss.loader").warning("faiss could not be loaded at all")
            logging.getLogger("train.index").info("index built")

        snap = runner.wait(runner.start("index", work).job_id, timeout=10)
    finally:
        runner.remove_log_capture()
    text = "\n".join(snap.log)
    assert "ModuleNotFoundError" not in text
    assert "faiss could not be loaded at all" in text and "index built" in text
