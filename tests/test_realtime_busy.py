"""The Realtime tab on a busy machine: a bounded backlog, input lost on the way counted, a status line
that says why the stream falls behind (and which job runs beside it), streaming while a separation runs.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from helpers_app import CHROMIUM, app_in_thread, make_project, realtime_page, shared_test_hubert

from tools.api.realtime import RECENT_BLOCKS, ChunkStream

RATE = 48000


class FakeEngine:
    """An identity "voice" with blocks of `block_frames` x 10 ms that takes `compute_s` per block."""

    def __init__(self, block_frames: int, compute_s: float = 0.0) -> None:
        self.input_rate = RATE
        self.geometry = SimpleNamespace(block=block_frames)
        self.block_size = block_frames * RATE // 100
        self.latency_s = 0.05
        self.compute_s = compute_s
        self.blocks_in: list[np.ndarray] = []

    def process(self, block: np.ndarray) -> np.ndarray:
        assert block.shape == (self.block_size,)
        self.blocks_in.append(block.copy())
        if self.compute_s:
            time.sleep(self.compute_s)  # a machine too busy to convert a block within its own duration
        return block


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _ramp(blocks: int, block_size: int, extra: int = 0) -> np.ndarray:
    return (np.arange(blocks * block_size + extra, dtype=np.float32) / 1e6).astype(np.float32)


def test_backlog_beyond_the_bound_drops_the_oldest_blocks_and_counts_them() -> None:
    engine = FakeEngine(block_frames=1)  # 480 samples
    size = engine.block_size
    chunks = ChunkStream(engine, max_backlog_blocks=2)
    audio = _ramp(10, size, extra=100)
    out = chunks.push(audio)
    # Only the newest two whole blocks are converted; the 100 samples after them wait for the next chunk.
    np.testing.assert_array_equal(out, audio[8 * size : 10 * size])
    assert chunks.stats.dropped_blocks == 8 and chunks.stats.blocks == 2
    assert chunks.push(np.zeros(size - 100, dtype=np.float32)).size == size
    assert chunks.stats.dropped_blocks == 8

    unbounded = ChunkStream(FakeEngine(block_frames=1))  # the default: every sample converted, however late
    assert unbounded.push(audio).size == 10 * size and unbounded.stats.dropped_blocks == 0

    with pytest.raises(ValueError, match="max_backlog_blocks must be at least 1"):
        ChunkStream(engine, max_backlog_blocks=0)


def test_input_that_never_arrived_counts_as_dropped_blocks() -> None:
    clock = FakeClock()
    engine = FakeEngine(block_frames=10)  # 100 ms blocks
    chunks = ChunkStream(engine, max_backlog_blocks=2, clock=clock)
    tenth = np.zeros(RATE // 10, dtype=np.float32)
    chunks.push(np.zeros(3 * RATE, dtype=np.float32))  # what was recorded while the stream started
    for _ in range(20):  # chunks of 0.1 s every 0.1 s: nothing lost
        clock.now += 0.1
        chunks.push(tenth)
    assert chunks.stats.dropped_blocks == 28  # only the start's backlog beyond two blocks
    clock.now += 1.0  # the sender replaced the chunks of a whole second while the server was busy
    chunks.push(tenth)
    assert chunks.stats.dropped_blocks == 28 + 8  # 0.9 s missing, less one block of slack for jitter
    # Without a clock (the default) nothing is counted for time that passed.
    plain = ChunkStream(FakeEngine(block_frames=10))
    plain.push(tenth)
    clock.now += 5.0
    plain.push(tenth)
    assert plain.stats.dropped_blocks == 0


def test_status_stays_as_it_is_while_the_stream_keeps_up() -> None:
    clock = FakeClock()
    chunks = ChunkStream(FakeEngine(block_frames=5), max_backlog_blocks=2, clock=clock)
    for _ in range(3):
        chunks.push(_ramp(1, chunks.stream.block_size))
        clock.now += 0.05
    assert chunks.status(["job separate-1 (song.wav: window 3/44)"]) == chunks.stats.line()
    assert "\n" not in chunks.status() and chunks.stats.line().startswith("3 blocks of 50 ms")


def test_status_says_why_a_slow_stream_falls_behind_and_names_the_running_job() -> None:
    clock = FakeClock()
    engine = FakeEngine(block_frames=1, compute_s=0.03)  # 10 ms blocks that take at least 30 ms
    chunks = ChunkStream(engine, max_backlog_blocks=2, clock=clock)
    chunks.push(_ramp(6, engine.block_size))
    for _ in range(3):
        clock.now += 0.05
        chunks.push(_ramp(1, engine.block_size))
    stats = chunks.stats
    assert stats.blocks == 5 and stats.late_blocks == 5
    # 4 from the backlog; each push brings 10 ms for 50 ms passed: 40 ms missing, counted beyond one block of slack
    assert stats.dropped_blocks == 4 + 3 + 4 + 4
    first, second = chunks.status(["job separate-1 (song.wav: window 3/44)"]).split("\n")
    assert first == stats.line()
    last_ms = stats.times[-1] * 1000
    median_ms = float(np.median(stats.times)) * 1000
    assert second.startswith(
        f"This machine cannot keep up: a block takes {median_ms:.0f} ms to convert (median; last {last_ms:.0f} ms) "
        f"but lasts 10 ms; 5 late block(s), 15 block(s) of input dropped"
    ), second
    assert second.endswith(
        "Running beside the stream: job separate-1 (song.wav: window 3/44). Stop it or wait for it to end, "
        "or choose a larger Block time, the fast Preset or less Extra context."
    ), second
    alone = chunks.status().split("\n")[1]
    assert alone.endswith("(the output has gaps). Choose a larger Block time, the fast Preset or less Extra context.")


def test_the_tab_names_the_jobs_that_run() -> None:
    from tools.jobs import JobRunner
    from tools.ui_realtime import running_jobs

    runner = JobRunner()
    release = threading.Event()

    def work(ctx: Any) -> None:
        ctx.progress(3, 44, "song.wav:\nwindow 3/44")
        release.wait(30)

    job = runner.start("separate", work)
    try:
        deadline = time.time() + 10
        while job.snapshot().message != "song.wav:\nwindow 3/44" and time.time() < deadline:
            time.sleep(0.01)
        assert running_jobs(SimpleNamespace(jobs=runner)) == [f"job {job.job_id} (song.wav: window 3/44)"]
    finally:
        release.set()
        runner.wait(job.job_id, timeout=10)
    assert running_jobs(SimpleNamespace(jobs=runner)) == []


def test_streams_have_their_own_concurrency_group() -> None:
    from tools import web
    from tools.ui_realtime import MAX_STREAMS, STREAM_CONCURRENCY_ID

    app = web.build_app(web.AppContext.create(Path(__file__).resolve().parents[1]))
    streams = [fn for fn in app.fns.values() if fn.concurrency_id == STREAM_CONCURRENCY_ID]
    assert [fn.name for fn in streams] == ["on_chunk"]
    assert streams[0].concurrency_limit == MAX_STREAMS > 1  # browser sessions do not wait for one another


# -- end to end: the Realtime tab while a separation job runs in the app ---------------------------------------------

STATUS_TIMEOUT_MS = 45_000


@pytest.fixture(scope="module")
def busy_app(reference: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any]]:
    """The app with a separation job running (a random-weight VR model over a long song)."""
    import soundfile as sf
    from test_separation import stereo_tone, write_vr_file

    from tools.jobproc import JobCall

    root = make_project(tmp_path_factory.mktemp("rt-busy") / "project", reference,
                        shared_test_hubert(tmp_path_factory, reference))  # fmt: skip
    model = write_vr_file(root / "uvr5_weights" / "HP5_random.pth")
    song = root / "songs" / "song.wav"
    song.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(song), stereo_tone(120.0).T, 44100)
    with app_in_thread(root) as (url, ctx):
        call = JobCall("separate_audio", dict(project=ctx.project, model=model, input_paths=[song],
                                              output_dir=root / "outputs" / "separated"),
                       inject=("progress", "cancel", "cache"))  # fmt: skip
        job = ctx.jobs.start("separate", call)
        try:
            deadline = time.time() + 60
            while "window" not in job.snapshot().message:  # the network runs: the CPU is busy from here on
                assert not job.snapshot().finished and time.time() < deadline, job.snapshot()
                time.sleep(0.2)
            yield url, job
        finally:
            ctx.jobs.cancel(job.job_id)


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is absent (Debian: apt-get install chromium)")
def test_the_microphone_streams_while_a_separation_runs(busy_app: tuple[str, Any]) -> None:
    url, job = busy_app
    with realtime_page(url, STATUS_TIMEOUT_MS) as page:
        page.locator("#rt-mic").get_by_role("button", name="Record").click()
        status = page.locator("#rt-status textarea")
        page.wait_for_function("el => /([3-9]|\\d\\d+) blocks of 250 ms/.test(el.value) || "
                               "document.querySelector('.toast-body')", arg=status.element_handle())  # fmt: skip
        assert page.locator(".toast-body").count() == 0, page.locator(".toast-body").all_inner_texts()
        assert not job.snapshot().finished, "the separation must still run while the stream is checked"
        text = status.input_value()
        found = re.match(r"(\d+) blocks of 250 ms; .* compute per block median ([\d.]+) ms", text)
        assert found and "no blocks" not in text, text
        blocks, median_ms = int(found.group(1)), float(found.group(2))
        if median_ms > 250 and blocks <= RECENT_BLOCKS:  # slower than real time: the tab must say so and why
            assert "This machine cannot keep up" in text and f"job {job.job_id} (song.wav" in text, text
        # converted audio reached the page's output player
        page.wait_for_function("() => document.querySelector('#rt-out audio, #rt-out video') !== null")
        page.locator("#rt-mic").get_by_role("button", name="Stop").click()

