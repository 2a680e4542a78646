"""User actions for realtime conversion: list sound devices, run a live stream, stream a file.

The live stream is a PortAudio duplex stream (sounddevice) whose callback converts each block in
place, as RVC's realtime GUI does: a block that takes longer than its own duration makes the sound
card drop or repeat audio (counted as overruns), it never queues up, so latency cannot grow with
the running time. `stream_file` pushes a file through the same engine block by block (no sound
hardware needed) and reports the per-block times.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infer_pack.errors import AudioDeviceError, UserInputError
from infer_pack.params import DEFAULT_DECODER, Decoder
from infer_pack.progress import CancelToken, ProgressCallback
from tools.api.common import compute_device, project_of
from tools.api.convert import load_converter
from tools.project import Project

if TYPE_CHECKING:
    import numpy as np

    from infer_pack.cache import ModelCache
    from infer_pack.realtime import StreamingConverter, StreamSettings
    from infer_pack.rvc_realtime import RVCRealtimeStream

    Engine = StreamingConverter | RVCRealtimeStream

PORTAUDIO_FIX = (
    "install PortAudio: `sudo apt-get install libportaudio2` (Debian/Ubuntu; `make setup` does it), "
    "`brew install portaudio` (macOS); then `pip install sounddevice`"
)


def _sounddevice() -> Any:
    """The sounddevice module, or AudioDeviceError naming the fix when it or PortAudio is missing."""
    try:
        import sounddevice
    except ImportError as exc:
        raise AudioDeviceError(f"the sounddevice package is missing ({exc}); {PORTAUDIO_FIX}") from exc
    except OSError as exc:  # sounddevice raises OSError when libportaudio cannot be loaded
        raise AudioDeviceError(f"PortAudio could not be loaded ({exc}); {PORTAUDIO_FIX}") from exc
    return sounddevice


# -- devices ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AudioDevice:
    index: int
    name: str
    host_api: str
    input_channels: int
    output_channels: int
    default_sample_rate: int


@dataclass(frozen=True)
class DeviceList:
    devices: list[AudioDevice]
    default_input: int | None
    default_output: int | None

    def summary(self) -> str:
        if not self.devices:
            return "no audio devices found (PortAudio sees no sound card; connect one or check the sound server)"
        lines = []
        for d in self.devices:
            marks = ("<in " if d.index == self.default_input else "") + ("out>" if d.index == self.default_output else "")
            lines.append(
                f"{d.index:>3} {d.name} ({d.host_api}; in {d.input_channels}, out {d.output_channels}; "
                f"{d.default_sample_rate} Hz) {marks}".rstrip()
            )
        return "\n".join(lines)


def list_audio_devices(*, kind: str = "all") -> DeviceList:
    """The sound devices PortAudio sees (index, name, channels, default rate), and the defaults.

    `kind` "input" or "output" keeps only the devices with channels of that direction.
    """
    if kind not in ("all", "input", "output"):
        raise UserInputError(f"unknown device kind {kind!r}; choose all, input or output")
    sd = _sounddevice()
    apis = [api["name"] for api in sd.query_hostapis()]
    devices = [
        AudioDevice(
            index=i,
            name=str(info["name"]),
            host_api=apis[int(info["hostapi"])] if apis else "",
            input_channels=int(info["max_input_channels"]),
            output_channels=int(info["max_output_channels"]),
            default_sample_rate=int(info["default_samplerate"]),
        )
        for i, info in enumerate(sd.query_devices())
        if kind == "all" or info[f"max_{kind}_channels"] > 0
    ]
    default_in, default_out = (int(v) for v in sd.default.device)
    return DeviceList(devices, default_in if default_in >= 0 else None, default_out if default_out >= 0 else None)


def _resolve_device(devices: DeviceList, wanted: int | str | None, kind: str) -> AudioDevice:
    """A device by index, by (part of its) name, or the default one; errors list what exists."""
    channels = "input_channels" if kind == "input" else "output_channels"
    usable = [d for d in devices.devices if getattr(d, channels) > 0]
    if wanted is None or wanted == "":
        default = devices.default_input if kind == "input" else devices.default_output
        found = [d for d in usable if d.index == default] or usable[:1]
    elif isinstance(wanted, int) or str(wanted).isdigit():
        found = [d for d in usable if d.index == int(wanted)]
    else:
        found = [d for d in usable if str(wanted).lower() in d.name.lower()]
    if not found:
        names = ", ".join(f"{d.index} {d.name}" for d in usable) or "none"
        what = f"matches {wanted!r}" if wanted not in (None, "") else "is available"
        raise AudioDeviceError(
            f"no {kind} device {what}; {kind} devices: {names} (see `.venv/bin/python -m tools.cli realtime --list-devices`)"
        )
    return found[0]


# -- the engine for a voice ------------------------------------------------------------------


def stream_settings(**values: Any) -> StreamSettings:
    """StreamSettings from keyword values (None = the default), validated."""
    from infer_pack.realtime import StreamSettings

    return StreamSettings(**{k: v for k, v in values.items() if v is not None}).validated()


def open_stream(
    *,
    project: Project | str | Path,
    model: Path | str,
    settings: StreamSettings,
    index_path: Path | str | None = None,
    input_rate: int = 48000,
    output_rate: int | None = None,
    device: str = "auto",
    cache: ModelCache | None = None,
) -> Engine:
    """The stream engine `settings.match` names for a voice (models from the cache, or loaded into it)."""
    from infer_pack.cache import ModelCache
    from infer_pack.errors import AssetMissingError
    from infer_pack.realtime import open_engine

    proj = project_of(project)
    cache = cache if cache is not None else ModelCache()
    converter = load_converter(
        proj, Path(model), Path(index_path) if index_path else None, compute_device(device), cache, engine="torch"
    )
    if converter.use_f0 and settings.f0_method == "rmvpe" and not proj.rmvpe_path.is_file():
        raise AssetMissingError(proj.rmvpe_path, "rmvpe")
    return open_engine(converter, settings, input_rate=input_rate, output_rate=output_rate)


# How many of the latest blocks decide whether a stream keeps up now (a slow first block, while the
# models warm up, must not mark the whole stream as behind).
RECENT_BLOCKS = 20


def _say_opening(settings: StreamSettings, progress: ProgressCallback | None) -> None:
    """Tell a caller that waits: a voice's first int8 stream prepares its int8 decoder (calibration, once)."""
    if progress is not None and settings.validated().decoder_int8:
        progress(0, 0, "opening the stream (a voice's first int8 stream prepares its int8 decoder: up to a minute, once)")


@dataclass
class StreamStats:
    """Per-block compute times of a stream (seconds) against the block's own duration.

    `dropped_blocks`: input blocks thrown away so that the latency stays bounded (a stream that falls
    behind its microphone); `last_drop_block`: how many blocks had been converted at the latest drop.
    """

    block_s: float
    latency_s: float
    times: list[float] = field(default_factory=list)
    dropped_blocks: int = 0
    last_drop_block: int | None = None

    @property
    def blocks(self) -> int:
        return len(self.times)

    @property
    def late_blocks(self) -> int:
        return sum(t > self.block_s for t in self.times)

    def record_drop(self, blocks: int) -> None:
        if blocks > 0:
            self.dropped_blocks += blocks
            self.last_drop_block = self.blocks

    def keeps_up(self) -> bool:
        """False while the latest blocks take longer than a block (median) or input was dropped lately."""
        recent = self.times[-RECENT_BLOCKS:]
        if recent and statistics.median(recent) > self.block_s:
            return False
        return self.last_drop_block is None or self.blocks - self.last_drop_block > RECENT_BLOCKS

    def line(self) -> str:
        if not self.times:
            return f"block {self.block_s * 1000:.0f} ms, latency {self.latency_s * 1000:.0f} ms, no blocks"
        ordered = sorted(self.times)
        p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
        return (
            f"{self.blocks} blocks of {self.block_s * 1000:.0f} ms; algorithmic latency {self.latency_s * 1000:.0f} ms; "
            f"compute per block median {statistics.median(self.times) * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms; "
            f"{self.late_blocks} block(s) took longer than a block"
        )

    def behind_line(self, busy_with: Sequence[str] = ()) -> str:
        """Why the stream falls behind and what to do; `busy_with` names the jobs running beside it."""
        recent = self.times[-RECENT_BLOCKS:]
        timing = (
            f"a block takes {statistics.median(recent) * 1000:.0f} ms to convert (median; last "
            f"{recent[-1] * 1000:.0f} ms) but lasts {self.block_s * 1000:.0f} ms"
            if recent else f"no block of {self.block_s * 1000:.0f} ms converted yet"
        )
        text = (
            f"This machine cannot keep up: {timing}; {self.late_blocks} late block(s), {self.dropped_blocks} "
            "block(s) of input dropped to keep the latency bounded (the output has gaps)."
        )
        remedy = "a larger Block time, the fast Preset or less Extra context"
        if busy_with:
            return f"{text} Running beside the stream: {'; '.join(busy_with)}. Stop it or wait for it to end, or choose {remedy}."
        return f"{text} Choose {remedy}."

    def status(self, busy_with: Sequence[str] = ()) -> str:
        """`line`; while the stream falls behind, a second line says why and what to do (`busy_with`: the
        jobs running beside it, named)."""
        if self.keeps_up():
            return self.line()
        return f"{self.line()}\n{self.behind_line(busy_with)}"


# -- a file through the stream ---------------------------------------------------------------


@dataclass(frozen=True)
class StreamFileResult:
    output_path: Path
    sample_rate: int
    input_seconds: float
    stats: StreamStats

    def summary(self) -> str:
        return f"streamed {self.input_seconds:.1f} s -> {self.output_path} at {self.sample_rate} Hz\n{self.stats.line()}"


def stream_file(
    *,
    project: Project | str | Path,
    model: Path | str,
    input_path: Path | str,
    output_path: Path | str,
    settings: StreamSettings,
    index_path: Path | str | None = None,
    sample_rate: int = 48000,
    device: str = "auto",
    decoder: Decoder = DEFAULT_DECODER,
    cache: ModelCache | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> StreamFileResult:
    """Convert a file as the live stream would (block by block at `sample_rate`); write a WAV.

    `decoder`: how the file becomes mono at `sample_rate` ("rvc": as RVC's ffmpeg call; "soxr"; see
    `infer_pack.audio`).
    """
    from infer_pack.audio import load_audio, write_wav
    from infer_pack.realtime import convert_stream

    _say_opening(settings, progress)
    stream = open_stream(project=project, model=model, settings=settings, index_path=index_path,
                         input_rate=sample_rate, device=device, cache=cache)  # fmt: skip
    audio = load_audio(Path(input_path), sample_rate, decoder=decoder)
    run = convert_stream(stream, audio, progress=progress, cancel=cancel)
    target = Path(output_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_wav(target, run.audio, run.sample_rate, subtype="PCM_16")
    stats = StreamStats(stream.geometry.block / 100, stream.latency_s, run.block_seconds)
    return StreamFileResult(target, run.sample_rate, audio.shape[0] / sample_rate, stats)


# -- the live stream -------------------------------------------------------------------------


class DuplexCallback:
    """The sound card callback: mono mix of the input block -> converted block on every output channel.

    Counts the sound card's overflow/underflow flags (blocks that came too late) and keeps the
    per-block compute times; an exception inside the engine stops the stream and is re-raised by
    `run_realtime` (a callback must not raise into PortAudio's thread).
    """

    def __init__(self, stream: Engine, passthrough: bool = False) -> None:
        self.stream = stream
        self.passthrough = passthrough
        self.stats = StreamStats(stream.geometry.block / 100, stream.latency_s)
        self.overruns = 0
        self.error: BaseException | None = None
        self.failed = threading.Event()

    def __call__(self, indata: np.ndarray, outdata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        if status:
            self.overruns += 1
        if self.error is not None:
            outdata.fill(0)
            return
        try:
            block = indata.mean(axis=1) if indata.ndim == 2 else indata
            started = time.perf_counter()
            out = block if self.passthrough else self.stream.process(block)
            self.stats.times.append(time.perf_counter() - started)
            outdata[:] = out[:, None]
        except Exception as exc:  # noqa: BLE001 - raising into PortAudio's thread would kill the stream silently
            outdata.fill(0)
            self.error = exc
            self.failed.set()


@dataclass(frozen=True)
class RealtimeResult:
    input_device: str
    output_device: str
    sample_rate: int
    seconds: float
    overruns: int
    stats: StreamStats

    def summary(self) -> str:
        return (
            f"streamed {self.seconds:.1f} s from {self.input_device!r} to {self.output_device!r} at {self.sample_rate} Hz; "
            f"{self.overruns} overrun(s)\n{self.stats.line()}"
        )


def _should_stop(handler: DuplexCallback, started: float, duration_s: float | None, cancel: CancelToken | None) -> bool:
    """Wait up to a second for the callback to fail; True when the stream should end."""
    if duration_s is not None and time.perf_counter() - started >= duration_s:
        return True
    if cancel is not None and cancel.cancelled:
        return True
    return handler.failed.wait(timeout=1.0)


def run_realtime(
    *,
    project: Project | str | Path,
    model: Path | str,
    settings: StreamSettings,
    input_device: int | str | None = None,
    output_device: int | str | None = None,
    index_path: Path | str | None = None,
    sample_rate: int | None = None,
    duration_s: float | None = None,
    device: str = "auto",
    cache: ModelCache | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> RealtimeResult:
    """Live conversion from a microphone to a speaker until `cancel` (or `duration_s`).

    Devices by index or name part (None: the system's default); `sample_rate` None takes the input
    device's default. The progress callback gets one report per second with the latest block time.
    """
    sd = _sounddevice()
    devices = list_audio_devices()
    source = _resolve_device(devices, input_device, "input")
    sink = _resolve_device(devices, output_device, "output")
    rate = int(sample_rate or source.default_sample_rate)
    if rate % 100:
        raise UserInputError(f"sample rate {rate} Hz is not a multiple of 100 Hz; pass --sample-rate 48000 or 44100")
    _say_opening(settings, progress)
    stream = open_stream(project=project, model=model, settings=settings, index_path=index_path,
                         input_rate=rate, device=device, cache=cache)  # fmt: skip
    handler = DuplexCallback(stream)
    if progress is not None:
        progress(0, 0, f"converting {source.name} -> {sink.name}; stop with Ctrl-C")
    started = time.perf_counter()
    try:
        with sd.Stream(
            samplerate=rate, blocksize=stream.block_size, device=(source.index, sink.index),
            channels=(1, min(2, sink.output_channels)), dtype="float32", latency="low", callback=handler,
        ):  # fmt: skip
            try:
                while not _should_stop(handler, started, duration_s, cancel):
                    if progress is not None and handler.stats.times:
                        last = handler.stats.times[-1] * 1000
                        elapsed = time.perf_counter() - started
                        progress(handler.stats.blocks, 0, f"{elapsed:.0f} s, last block {last:.0f} ms, {handler.overruns} overruns")
            except KeyboardInterrupt:
                pass  # Ctrl-C is the way to stop a live stream: report it like a finished one
    except sd.PortAudioError as exc:
        raise AudioDeviceError(
            f"the sound devices refused the stream ({exc}); try another --sample-rate or device "
            "(`.venv/bin/python -m tools.cli realtime --list-devices`)"
        ) from exc
    if handler.error is not None:
        raise handler.error
    return RealtimeResult(source.name, sink.name, rate, time.perf_counter() - started, handler.overruns, handler.stats)


# -- the browser tab: microphone chunks of any size in, converted samples out ------------------------


class ChunkStream:
    """A stream fed with chunks of any length (what a browser sends), converted in whole blocks.

    `push` returns every converted sample ready so far (possibly none); the output lags the input by
    at most one block more than `latency_s` (the chunks must first fill a block) as long as each block
    converts faster than it lasts.

    `max_backlog_blocks` (None: off, every sample is converted): when more than that many whole blocks
    wait, the oldest are dropped (counted in `stats.dropped_blocks`), so a stream that falls behind keeps
    a bounded latency instead of one that grows with the running time. `clock` (seconds; None: off)
    counts the input that never arrived as dropped too: a sender that replaces the chunks it could not
    deliver while `push` was busy (Gradio keeps only the latest chunk of a streaming event) sends less
    audio than the time that passed. Only for senders that send without pauses.
    """

    def __init__(self, stream: Engine, *, max_backlog_blocks: int | None = None,
                 clock: Callable[[], float] | None = None) -> None:  # fmt: skip
        import numpy as np

        if max_backlog_blocks is not None and max_backlog_blocks < 1:
            raise ValueError(f"max_backlog_blocks must be at least 1 (or None for no bound), got {max_backlog_blocks}")
        self.stream = stream
        self.sample_rate = stream.input_rate
        self.max_backlog_blocks = max_backlog_blocks
        self.stats = StreamStats(stream.geometry.block / 100, stream.latency_s)
        self._pending = np.zeros(0, dtype=np.float32)
        self._clock = clock
        self._last_push_at: float | None = None
        self._missing_s = 0.0  # time passed minus audio received, not yet counted as dropped blocks

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Mono or [samples, channels] audio, float in -1..1 or int16 -> converted float32 samples."""
        import numpy as np

        self.accept(samples)
        pieces = []
        while (block := self.next_block()) is not None:
            started = time.perf_counter()
            pieces.append(self.stream.process(block))
            self.stats.times.append(time.perf_counter() - started)
        return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)

    def accept(self, samples: np.ndarray) -> None:
        """Queue a chunk (as `push` takes it) without converting: input that never arrived is counted, and
        whole blocks beyond `max_backlog_blocks` are dropped, oldest first."""
        import numpy as np

        audio = np.asarray(samples)
        if audio.dtype.kind == "i":
            audio = audio.astype(np.float32) / float(np.iinfo(audio.dtype).max)
        audio = audio.astype(np.float32, copy=False)
        if audio.ndim == 2:
            audio = audio.mean(axis=1)
        self._count_missing_input(audio.shape[0])
        self._pending = np.concatenate((self._pending, audio))
        size = self.stream.block_size
        waiting = self._pending.shape[0] // size
        if self.max_backlog_blocks is not None and waiting > self.max_backlog_blocks:
            dropped = waiting - self.max_backlog_blocks
            self._pending = self._pending[dropped * size :]
            self.stats.record_drop(dropped)

    @property
    def waiting_blocks(self) -> int:
        """Whole blocks queued and not converted yet."""
        return int(self._pending.shape[0] // self.stream.block_size)

    def next_block(self) -> np.ndarray | None:
        """The oldest whole waiting block, taken off the queue; None while less than a block waits."""
        size = self.stream.block_size
        if self._pending.shape[0] < size:
            return None
        block, self._pending = self._pending[:size], self._pending[size:]
        return block

    def _count_missing_input(self, samples: int) -> None:
        """Time passed since the last chunk minus the audio it brought; whole blocks of it beyond one block
        count as dropped. A surplus (a first chunk holding what was recorded while the stream started)
        covers at most one block of later shortfall, so it cannot hide input lost afterwards."""
        if self._clock is None:
            return
        now = self._clock()
        if self._last_push_at is not None:
            block_s = self.stats.block_s
            self._missing_s = max(-block_s, self._missing_s + (now - self._last_push_at) - samples / self.sample_rate)
            # One block of slack for the jitter of chunk arrivals (1e-9: float sums of tenths of a second).
            missed = int((self._missing_s - block_s) / block_s + 1e-9) if self._missing_s > block_s else 0
            if missed:
                self.stats.record_drop(missed)
                self._missing_s -= missed * block_s
        self._last_push_at = now

    def push_pcm16(self, samples: np.ndarray) -> np.ndarray:
        """`push`, the result as 16-bit PCM (what a browser plays without a conversion warning)."""
        return pcm16(self.push(samples))

    def status(self, busy_with: Sequence[str] = ()) -> str:
        """See `StreamStats.status`."""
        return self.stats.status(busy_with)


def pcm16(audio: np.ndarray) -> np.ndarray:
    """Float samples in -1..1 (clipped) as 16-bit PCM."""
    import numpy as np

    return (np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16)


def start_chunk_stream(
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
) -> ChunkStream:
    """A stream for chunks of any size at `sample_rate` (a browser's microphone), output at the same rate.

    `max_backlog_blocks`, `clock`: see `ChunkStream` (None: convert every sample however late)."""
    if sample_rate % 100:
        raise UserInputError(f"the microphone's sample rate {sample_rate} Hz is not a multiple of 100 Hz; choose 48000 or 44100")
    stream = open_stream(project=project, model=model, settings=settings, index_path=index_path,
                         input_rate=sample_rate, device=device, cache=cache)  # fmt: skip
    return ChunkStream(stream, max_backlog_blocks=max_backlog_blocks, clock=clock)
