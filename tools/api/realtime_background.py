"""The browser tab's stream converted off the caller's thread: `push` queues a chunk and returns at once.

Gradio's frontend keeps only the latest microphone chunk while a streaming event is busy, so an event
that converted its blocks itself (0.2-0.4 s for a 0.25 s block on a CPU, called every 0.1 s) made the
browser drop microphone audio even on a machine that keeps up on average. `BackgroundChunkStream`
wraps a `ChunkStream`: `push` hands the chunk over and returns the audio converted since the previous
call (possibly none); a daemon worker thread converts whole blocks as they become available and is
the only user of the engine. Given an opener instead of a ChunkStream, the worker also opens it (loading
the voice, and for the fast preset preparing its int8 decoder once per voice), so the first chunk
returns at once too; the chunks that arrive meanwhile wait (at most `EARLY_SECONDS` of them).
The ChunkStream's backlog bound and its dropped/late accounting apply
unchanged. An exception raised while converting is raised by every later `push`. The worker ends on
`close`, after such an exception, or after `idle_timeout_s` without input (a browser tab that was
closed), and then lets go of the engine and the voice it holds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from infer_pack.errors import RVCError
from tools.api.realtime import ChunkStream, StreamStats, pcm16, start_chunk_stream
from tools.project import Project

if TYPE_CHECKING:
    import numpy as np

    from infer_pack.cache import ModelCache
    from infer_pack.realtime import StreamSettings

# Seconds without a pushed chunk after which the worker ends (a browser sends one every 0.1 s while it records).
IDLE_TIMEOUT_S = 5.0
# Microphone audio kept while the stream opens (the newest; older input is dropped, as a late stream drops it).
EARLY_SECONDS = 1.0
OPENING_STATUS = ("opening the stream: loading the voice (the fast preset prepares the voice's int8 decoder on "
                  "its first use, up to a minute; then it is cached)")


class StreamClosedError(RVCError):
    """`push` on a stream whose worker has ended (closed, or no input for its idle timeout)."""


class BackgroundChunkStream:
    """A `ChunkStream` whose blocks a worker thread converts; `push` never waits for a conversion.

    One lock guards the queued input (the ChunkStream's pending samples and its stats) and the converted
    output that waits for the next `push`; the engine is used by the worker alone, outside the lock.
    """

    def __init__(self, chunks: ChunkStream | Callable[[], ChunkStream], *, sample_rate: int | None = None,
                 idle_timeout_s: float = IDLE_TIMEOUT_S) -> None:  # fmt: skip
        """`chunks`: the stream, or a function that opens it in the worker (then `sample_rate` is required)."""
        if idle_timeout_s <= 0:
            raise ValueError(f"idle_timeout_s must be positive, got {idle_timeout_s}")
        opened = chunks if isinstance(chunks, ChunkStream) else None
        if opened is None and sample_rate is None:
            raise ValueError("a stream opened by the worker needs its sample_rate")
        self.sample_rate = opened.sample_rate if opened is not None else int(sample_rate or 0)
        self.stats: StreamStats | None = opened.stats if opened is not None else None  # None while opening
        self.idle_timeout_s = idle_timeout_s
        self._opener: Callable[[], ChunkStream] | None = None if isinstance(chunks, ChunkStream) else chunks
        self._early: list[np.ndarray] = []  # chunks pushed while the worker opens the stream
        self._chunks: ChunkStream | None = opened  # None while opening and once the worker has ended
        self._changed = threading.Condition(threading.Lock())
        self._ready: list[np.ndarray] = []
        self._converting = False
        self._closing = False
        self._ended_why = ""
        self._error: Exception | None = None
        self._last_push_at = time.monotonic()
        self._worker = threading.Thread(target=self._run, name="chunk-stream", daemon=True)
        self._worker.start()

    # -- the caller's side ---------------------------------------------------------------------

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Queue a chunk (mono or [samples, channels], float in -1..1 or int16); the float32 samples converted
        since the previous push. Raises the worker's exception, or StreamClosedError once the worker ended."""
        import numpy as np

        with self._changed:
            if self._error is not None:
                raise self._error
            if self._closing or (self._chunks is None and self._opener is None):
                raise StreamClosedError(f"the realtime stream has ended ({self._ended_why or 'closed'}); start recording again")
            if self._chunks is None:
                self._keep_early(samples)
            else:
                self._chunks.accept(samples)
            self._last_push_at = time.monotonic()
            ready, self._ready = self._ready, []
            self._changed.notify_all()
        return np.concatenate(ready) if ready else np.zeros(0, dtype=np.float32)

    def push_pcm16(self, samples: np.ndarray) -> np.ndarray:
        """`push`, the result as 16-bit PCM (what a browser plays without a conversion warning)."""
        return pcm16(self.push(samples))

    def status(self, busy_with: Sequence[str] = ()) -> str:
        """See `StreamStats.status`."""
        with self._changed:
            return OPENING_STATUS if self.stats is None else self.stats.status(busy_with)

    @property
    def closed(self) -> bool:
        """True after `close` or an idle timeout (not after an exception: `push` keeps raising that)."""
        with self._changed:
            return self._error is None and (self._closing or (self._chunks is None and self._opener is None))

    @property
    def worker_alive(self) -> bool:
        return self._worker.is_alive()

    def close(self) -> None:
        """Stop the worker after the block it converts now (if any); returns without waiting for it."""
        with self._changed:
            if not self._closing:
                self._closing = True
                self._ended_why = self._ended_why or "closed"
            self._changed.notify_all()

    def join(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for the worker to end; True when it has."""
        self._worker.join(timeout_s)
        return not self._worker.is_alive()

    def flush(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` until every whole block queued so far is converted (or the worker ended);
        True when so. The converted audio comes with the next `push`."""
        with self._changed:
            return self._changed.wait_for(self._drained, timeout_s)

    def _drained(self) -> bool:
        if self._chunks is None:
            return self._opener is None
        return not self._converting and self._chunks.waiting_blocks == 0

    def _keep_early(self, samples: np.ndarray) -> None:
        """Keep a chunk pushed while opening; only the newest EARLY_SECONDS wait."""
        self._early.append(samples)
        kept, total = [], 0
        for chunk in reversed(self._early):
            if total >= EARLY_SECONDS * self.sample_rate:
                break
            kept.append(chunk)
            total += chunk.shape[0]
        self._early = kept[::-1]

    # -- the worker ------------------------------------------------------------------------------

    def _open(self) -> ChunkStream:
        """The stream: the one given, or opened here (outside the lock); the early chunks queued into it."""
        if self._chunks is not None:
            return self._chunks
        assert self._opener is not None
        chunks = self._opener()
        with self._changed:
            self._opener = None
            self.stats = chunks.stats
            for early in self._early:
                chunks.accept(early)
            self._early = []
            self._chunks = chunks
            self._changed.notify_all()
        return chunks

    def _run(self) -> None:
        try:
            chunks = self._open()
            engine = chunks.stream
            while (block := self._next_block(chunks)) is not None:
                started = time.perf_counter()
                converted = engine.process(block)
                elapsed = time.perf_counter() - started
                with self._changed:
                    chunks.stats.times.append(elapsed)
                    self._ready.append(converted)
                    self._converting = False
                    self._changed.notify_all()
        except Exception as exc:  # noqa: BLE001 - the caller's next push raises it; the thread must not die unseen
            with self._changed:
                self._error = exc
        finally:
            with self._changed:
                self._chunks = self._opener = None  # lets go of the engine and the voice it holds
                self._early = []
                self._converting = False
                self._changed.notify_all()

    def _next_block(self, chunks: ChunkStream) -> np.ndarray | None:
        """Wait for a whole block; None once the stream is closed or no chunk came for `idle_timeout_s`."""
        with self._changed:
            while not self._closing:
                block = chunks.next_block()
                if block is not None:
                    self._converting = True
                    return block
                idle_s = time.monotonic() - self._last_push_at
                if idle_s >= self.idle_timeout_s:
                    self._ended_why = f"no input for {idle_s:.0f} s"
                    return None
                self._changed.wait(self.idle_timeout_s - idle_s)
            return None


def close_stream(stream: object) -> None:
    """Close `stream` if it is a BackgroundChunkStream (a session's value, possibly None); for session ends."""
    if isinstance(stream, BackgroundChunkStream):
        stream.close()


def start_background_chunk_stream(
    *,
    project: Project | str | Path,
    model: Path | str,
    settings: StreamSettings,
    sample_rate: int,
    index_path: Path | str | None = None,
    device: str = "auto",
    cache: ModelCache | None = None,
    max_backlog_blocks: int | None = None,
    clock: Callable[[], float] | None = None,
    idle_timeout_s: float = IDLE_TIMEOUT_S,
) -> BackgroundChunkStream:
    """`start_chunk_stream` whose blocks a worker thread converts and which it opens: `push` returns at once
    with whatever is converted (for callers that must not be held up, such as a browser's streaming event).
    Errors of opening (a missing asset, a voice that does not load) are raised by the next `push`."""
    def open_chunks() -> ChunkStream:
        return start_chunk_stream(project=project, model=model, settings=settings, sample_rate=sample_rate,
                                  index_path=index_path, device=device, cache=cache,
                                  max_backlog_blocks=max_backlog_blocks, clock=clock)  # fmt: skip

    if sample_rate % 100:  # the opener would say so only on the next push
        return BackgroundChunkStream(open_chunks(), idle_timeout_s=idle_timeout_s)
    return BackgroundChunkStream(open_chunks, sample_rate=sample_rate, idle_timeout_s=idle_timeout_s)
