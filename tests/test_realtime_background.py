"""The Realtime tab's stream converts in a worker thread: a push never waits for a conversion, every input
sample comes out converted or counted as dropped, errors reach the next push, the worker ends with the session.
"""

from __future__ import annotations

import gc
import threading
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_realtime_busy import RATE, FakeEngine

from infer_pack.errors import AssetMissingError
from tools.api.realtime import ChunkStream
from tools.api.realtime_background import BackgroundChunkStream, StreamClosedError, close_stream

WAIT_S = 30.0  # an upper bound for a worker that is not stuck; the tests wait on events, not on time
TENTH = RATE // 10  # the browser's chunk: 0.1 s


class GatedEngine(FakeEngine):
    """The fake engine of a slow machine: each block waits until the test opens the gate."""

    def __init__(self, block_frames: int) -> None:
        super().__init__(block_frames)
        self.gate = threading.Event()
        self.entered = threading.Event()

    def process(self, block: np.ndarray) -> np.ndarray:
        self.entered.set()
        if not self.gate.wait(WAIT_S):
            raise TimeoutError("the test never opened the gate")
        return super().process(block)


class FailingEngine(FakeEngine):
    def process(self, block: np.ndarray) -> np.ndarray:
        raise AssetMissingError("assets/rmvpe/rmvpe.pt", "rmvpe")


def _background(engine: Any, **kwargs: Any) -> BackgroundChunkStream:
    return BackgroundChunkStream(ChunkStream(engine, max_backlog_blocks=2), **kwargs)


def test_a_push_returns_while_the_worker_converts_and_every_sample_is_accounted_for() -> None:
    engine = GatedEngine(block_frames=25)  # 0.25 s blocks of 12000 samples
    size = engine.block_size
    stream = _background(engine)
    audio = (np.arange(40 * TENTH, dtype=np.float32) / 1e6).astype(np.float32)  # 4 s, 16 whole blocks
    chunks = [audio[i : i + TENTH] for i in range(0, audio.size, TENTH)]
    try:
        outputs = [stream.push(chunk) for chunk in chunks[:3]]  # 0.3 s: the first block is ready to convert
        assert engine.entered.wait(WAIT_S)  # the worker converts it, held up at the gate
        # While the engine is held up, pushes return at once with nothing converted yet (a push that waited for
        # the conversion would never return before the gate opens: the engine would raise TimeoutError).
        outputs += [stream.push(chunk) for chunk in chunks[3:20]]
        assert not engine.gate.is_set() and all(o.size == 0 for o in outputs)
        assert stream.stats.blocks == 0 and stream.stats.dropped_blocks == 5  # 7 blocks queued beyond the first, 2 kept
        engine.gate.set()
        for chunk in chunks[20:]:  # a machine that keeps up: the worker converts each block before the next one
            outputs.append(stream.push(chunk))
            assert stream.flush(WAIT_S)
        outputs.append(stream.push(np.zeros(0, dtype=np.float32)))
    finally:
        engine.gate.set()
        stream.close()
    out = np.concatenate(outputs)
    # In order, whole input blocks, identical to what the engine converted (an identity engine here).
    np.testing.assert_array_equal(out, np.concatenate(engine.blocks_in))
    starts = [int(round(block[0] * 1e6)) for block in engine.blocks_in]
    assert starts == sorted(starts) and all(s % size == 0 for s in starts)
    for start, block in zip(starts, engine.blocks_in):
        np.testing.assert_array_equal(block, audio[start : start + size])
    converted_blocks, dropped = len(engine.blocks_in), stream.stats.dropped_blocks
    assert converted_blocks == stream.stats.blocks
    assert converted_blocks + dropped == audio.size // size == 16  # converted + dropped = every whole block
    assert dropped == 5 and set(range(16)) - {s // size for s in starts} == {1, 2, 3, 4, 5}  # the oldest waiting ones


def test_an_engine_error_reaches_the_next_push_and_ends_the_worker() -> None:
    stream = _background(FailingEngine(block_frames=10))
    assert stream.push(np.zeros(RATE // 5, dtype=np.float32)).size == 0  # two blocks for the worker
    assert stream.join(WAIT_S)  # the worker stops at the error
    for _ in range(2):  # every later push says what went wrong (the tab shows it as gr.Error)
        with pytest.raises(AssetMissingError, match="rmvpe"):
            stream.push(np.zeros(TENTH, dtype=np.float32))
    assert not stream.closed  # failed, not closed: the tab does not silently replace it


def test_close_and_an_idle_timeout_end_the_worker() -> None:
    engine = FakeEngine(block_frames=10)
    stream = _background(engine, idle_timeout_s=WAIT_S)
    assert stream.worker_alive and not stream.closed
    close_stream(stream)
    assert stream.join(WAIT_S) and stream.closed and not stream.worker_alive
    with pytest.raises(StreamClosedError, match=r"ended \(closed\); start recording again"):
        stream.push(np.zeros(TENTH, dtype=np.float32))
    close_stream(None)  # a session that never streamed

    idle_engine = FakeEngine(block_frames=10)
    engine_ref = weakref.ref(idle_engine)
    idle = _background(idle_engine, idle_timeout_s=0.05)
    del idle_engine
    assert idle.join(WAIT_S) and idle.closed  # nobody pushed: the worker ended on its own
    gc.collect()
    assert engine_ref() is None  # and the session's stream no longer holds the engine (and its voice)
    with pytest.raises(StreamClosedError, match="no input for"):
        idle.push(np.zeros(TENTH, dtype=np.float32))

    with pytest.raises(ValueError, match="idle_timeout_s must be positive"):
        _background(engine, idle_timeout_s=0)


def test_the_status_line_and_pcm_output_match_the_synchronous_stream() -> None:
    engine = FakeEngine(block_frames=5)
    stream = _background(engine)
    try:
        stream.push_pcm16(np.full(2 * engine.block_size, 0.5, dtype=np.float32))
        assert stream.flush(WAIT_S)
        pcm = stream.push_pcm16(np.zeros(0, dtype=np.float32))
    finally:
        stream.close()
    assert pcm.dtype == np.int16 and pcm.size == 2 * engine.block_size and set(pcm.tolist()) == {16383}
    assert stream.status().startswith("2 blocks of 50 ms") and stream.status() == stream.stats.status()


def test_the_tab_ends_the_worker_with_the_recording_and_the_session() -> None:
    from tools import web
    from tools.ui_realtime import end_session_stream

    app = web.build_app(web.AppContext.create(Path(__file__).resolve().parents[1]))
    by_name = [fn for fn in app.fns.values() if fn.name in ("on_chunk", "end_session_stream")]
    stream_event = next(fn for fn in by_name if fn.name == "on_chunk")
    mic_id, session = stream_event.targets[0][0], stream_event.inputs[1]
    assert session.delete_callback is close_stream  # the browser session's end closes its stream
    enders = {event for fn in by_name if fn.name == "end_session_stream" for (_, event) in fn.targets}
    assert enders == {"start_recording", "stop_recording"}
    assert all(fn.inputs == [session] and fn.outputs == [session] and fn.targets[0][0] == mic_id
               for fn in by_name if fn.name == "end_session_stream")  # fmt: skip

    stream = _background(FakeEngine(block_frames=10), idle_timeout_s=WAIT_S)
    assert end_session_stream(stream) is None  # the session holds no stream after
    assert stream.join(WAIT_S) and stream.closed


def test_the_worker_opens_the_stream_so_the_first_chunks_return_at_once() -> None:
    engine = FakeEngine(block_frames=10)  # 0.1 s blocks of 4800 samples
    release, called = threading.Event(), threading.Event()

    def opener() -> ChunkStream:  # loading a voice (or preparing its int8 decoder) takes a while
        called.set()
        if not release.wait(WAIT_S):
            raise TimeoutError("the test never released the opener")
        return ChunkStream(engine, max_backlog_blocks=2)

    stream = BackgroundChunkStream(opener, sample_rate=RATE)
    try:
        assert called.wait(WAIT_S)
        tenths = [np.full(TENTH, i, dtype=np.float32) for i in range(15)]  # 1.5 s pushed while opening
        outputs = [stream.push(chunk) for chunk in tenths]
        assert not release.is_set() and all(o.size == 0 for o in outputs)  # returned while the opener waits
        assert "opening the stream" in stream.status() and stream.stats is None
        release.set()
        assert stream.flush(WAIT_S)
        out = stream.push(np.zeros(0, dtype=np.float32))
    finally:
        release.set()
        stream.close()
    # Only the newest second of early input waited (chunks 5..14); the backlog bound then keeps 2 blocks of it.
    assert stream.stats is not None and stream.stats.blocks == len(engine.blocks_in) == 2
    assert [int(block[0]) for block in engine.blocks_in] == [13, 14]
    np.testing.assert_array_equal(out, np.concatenate(engine.blocks_in))
    assert stream.stats.dropped_blocks == 8


def test_an_error_while_opening_reaches_the_next_push() -> None:
    def opener() -> ChunkStream:
        raise AssetMissingError("assets/hubert/hubert_base.pt", "hubert")

    stream = BackgroundChunkStream(opener, sample_rate=RATE)
    assert stream.join(WAIT_S)
    with pytest.raises(AssetMissingError, match="hubert"):
        stream.push(np.zeros(TENTH, dtype=np.float32))
    with pytest.raises(ValueError, match="sample_rate"):
        BackgroundChunkStream(opener)
