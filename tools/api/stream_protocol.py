"""The streaming API's messages (the app's WebSocket `/stream/ws`, served by `tools.stream_ws`), without a server.

A client connects and sends one JSON text message:

    {"voice": "alice", "index": "logs/alice/added_IVF.index", "sample_rate": 48000,
     "format": "pcm_s16le", "channels": 1, "f0_method": "pm", "pitch_semitones": 0, "block_time_s": 0.25}

`voice` is a name in weights/ (or a .pth path inside the project), `index` optional, `format`
"pcm_s16le" or "pcm_f32le" (little-endian, interleaved when `channels` is 2), `sample_rate` a
multiple of 100 Hz; any StreamSettings field (`tools.cli realtime --help` lists them) is checked
against the same ranges as the command line and the Realtime tab. The server answers
`{"ready": true, "block_samples": N, "sample_rate": ..., "latency_s": ..., "delay_samples": ...}`
or `{"error": "..."}` and closes. Then binary messages of PCM of any length go in (at most
`MAX_MESSAGE_S` seconds each); each whole converted block comes back as binary PCM in the same
format, rate and channel count (the mono result on every channel). The output lags the input by
`delay_samples` (the engine's seam handling) plus the block the chunks must first fill. A text
message `{"stats": true}` gets `{"stats": {...}}` (blocks, late blocks, median and last compute ms).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infer_pack.errors import UserInputError
from infer_pack.stream_params import StreamSettings, stream_param_specs
from tools.api.common import project_of
from tools.project import Project

if TYPE_CHECKING:
    from infer_pack.cache import ModelCache
    from tools.api.realtime import ChunkStream

FORMATS: dict[str, str] = {"pcm_s16le": "<i2", "pcm_f32le": "<f4"}  # name -> numpy dtype
MAX_MESSAGE_S = 10.0  # the most audio one binary message may carry
MAX_STREAMS = 4  # streams an app converts at once (each holds a voice and a CPU thread)
MIN_RATE, MAX_RATE = 8000, 96000
CONNECTION_FIELDS = ("voice", "index", "sample_rate", "format", "channels")
CREDENTIAL_FIELDS = ("user", "password")


class MessageTooBigError(UserInputError):
    """A binary message longer than `MAX_MESSAGE_S` of audio."""


@dataclass(frozen=True)
class StreamRequest:
    """The start message, checked: which voice, the PCM layout both ways, the stream's settings."""

    voice: str
    index: str | None
    sample_rate: int
    format: str
    channels: int
    settings: StreamSettings

    @property
    def frame_bytes(self) -> int:
        """Bytes of one sample on every channel (the dtype string ends in the sample's size: "<i2", "<f4")."""
        return int(FORMATS[self.format][-1]) * self.channels


def read_json(text: str) -> dict[str, Any]:
    """A text message as a JSON object, or UserInputError saying what was expected."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserInputError(f"text messages must be JSON objects ({exc.msg} at character {exc.pos})") from None
    if not isinstance(value, dict):
        raise UserInputError(f"text messages must be JSON objects, got {type(value).__name__}")
    return value


def _whole_number(fields: dict[str, Any], name: str, default: int) -> int:
    value = fields.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise UserInputError(f"{name} must be a whole number, got {value!r}")
    return int(value)


def parse_start(fields: dict[str, Any]) -> StreamRequest:
    """The start message's fields -> StreamRequest; UserInputError names the field and what it takes."""
    specs = stream_param_specs()
    unknown = sorted(set(fields) - set(CONNECTION_FIELDS) - set(CREDENTIAL_FIELDS) - set(specs))
    if unknown:
        raise UserInputError(
            f"unknown field(s) {', '.join(unknown)}; the start message takes {', '.join(CONNECTION_FIELDS)} "
            f"and the stream settings {', '.join(specs)}"
        )
    voice, index = fields.get("voice"), fields.get("index")
    if not isinstance(voice, str) or not voice.strip():
        raise UserInputError('the start message needs "voice": a voice name in weights/ (e.g. "alice") or a .pth path')
    if index is not None and not isinstance(index, str):
        raise UserInputError(f'"index" must be a path to a .index file inside the project, got {index!r}')
    rate = _whole_number(fields, "sample_rate", 48000)
    if rate % 100 or not MIN_RATE <= rate <= MAX_RATE:
        raise UserInputError(f"sample_rate {rate} Hz: use a multiple of 100 between {MIN_RATE} and {MAX_RATE} (48000, 44100)")
    kind = fields.get("format", "pcm_s16le")
    if kind not in FORMATS:
        raise UserInputError(f"format {kind!r} is not supported; use one of {', '.join(FORMATS)}")
    channels = _whole_number(fields, "channels", 1)
    if channels not in (1, 2):
        raise UserInputError(f"channels must be 1 or 2, got {channels}")
    for name in ("f0_method", "match", "preset"):
        if name in fields and not isinstance(fields[name], str):
            raise UserInputError(f"{name} must be one of {', '.join(specs[name].choices)}, got {fields[name]!r}")
    settings = StreamSettings(**{name: value for name, value in fields.items() if name in specs}).validated()
    return StreamRequest(voice.strip(), index or None, rate, str(kind), channels, settings)


class PcmStream:
    """One connection's stream: PCM bytes of any length in, PCM bytes of whole converted blocks out."""

    def __init__(self, chunks: ChunkStream, request: StreamRequest, delay_samples: int) -> None:
        self.chunks = chunks
        self.request = request
        self.delay_samples = delay_samples
        self.max_bytes = int(MAX_MESSAGE_S * request.sample_rate) * request.frame_bytes

    def ready(self) -> dict[str, Any]:
        """The answer to a good start message."""
        r = self.request
        return {
            "ready": True, "block_samples": self.chunks.stream.block_size, "sample_rate": r.sample_rate,
            "format": r.format, "channels": r.channels, "latency_s": round(self.chunks.stream.latency_s, 6),
            "delay_samples": self.delay_samples,
        }

    def decode(self, data: bytes) -> Any:
        """PCM bytes -> [frames] or [frames, channels] samples (int16 or float32)."""
        import numpy as np

        r = self.request
        if len(data) > self.max_bytes:
            raise MessageTooBigError(
                f"a binary message holds at most {MAX_MESSAGE_S:g} s of audio ({self.max_bytes} bytes at "
                f"{r.sample_rate} Hz, {r.format}, {r.channels} channel(s)); got {len(data)} bytes: send smaller chunks"
            )
        if len(data) % r.frame_bytes:
            raise UserInputError(
                f"a binary message must hold whole frames of {r.frame_bytes} bytes ({r.format}, {r.channels} "
                f"channel(s)); got {len(data)} bytes"
            )
        samples = np.frombuffer(data, dtype=FORMATS[r.format]).astype(FORMATS[r.format][1:])
        if r.format == "pcm_f32le" and not np.isfinite(samples).all():
            raise UserInputError("pcm_f32le samples must be finite numbers (no NaN or infinity)")
        return samples.reshape(-1, r.channels) if r.channels > 1 else samples

    def push(self, data: bytes) -> bytes:
        """Convert what `data` completes; the converted whole blocks as PCM bytes (possibly none)."""
        import numpy as np

        samples = self.decode(data)
        r = self.request
        converted = self.chunks.push_pcm16(samples) if r.format == "pcm_s16le" else self.chunks.push(samples)
        if r.channels > 1:
            converted = np.repeat(converted[:, None], r.channels, axis=1)
        return np.ascontiguousarray(converted, dtype=FORMATS[r.format]).tobytes()

    def stats(self) -> dict[str, Any]:
        times = self.chunks.stats.times
        return {
            "blocks": len(times), "late_blocks": self.chunks.stats.late_blocks,
            "median_compute_ms": round(statistics.median(times) * 1000, 3) if times else None,
            "last_compute_ms": round(times[-1] * 1000, 3) if times else None,
            "block_ms": round(self.chunks.stats.block_s * 1000, 3),
        }


def open_pcm_stream(
    *, project: Project | str | Path, request: StreamRequest, cache: ModelCache | None = None, device: str = "auto",
) -> PcmStream:
    """The stream a start message asks for: the voice and index resolved inside the project, the engine opened."""
    from infer_pack.realtime import stream_delay_frames
    from tools.api.realtime import start_chunk_stream

    proj = project_of(project)
    model = proj.resolve_voice(request.voice)
    index = proj.confine(request.index, "index file") if request.index else None
    chunks = start_chunk_stream(project=proj, model=model, settings=request.settings, sample_rate=request.sample_rate,
                                index_path=index, device=device, cache=cache)  # fmt: skip
    delay = stream_delay_frames(chunks.stream.geometry) * (request.sample_rate // 100)
    return PcmStream(chunks, request, delay)
