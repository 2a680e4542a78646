"""Audio input and output: decode anything FFmpeg reads (through PyAV) to mono float32 at a given rate.

Two decoders turn a file into mono at the requested rate (`decoder`, one of `DECODERS`):
* "rvc" (the default): what RVC gets from `ffmpeg -i <file> -f f32le -acodec pcm_f32le -ac 1 -ar <sr>`
  (its `load_audio`), reproduced with the FFmpeg inside PyAV: libswresample with its default options,
  float output. Stereo becomes 0.7071 * (L + R) (FFmpeg's mono matrix, not normalised for float
  output); layouts up to 7.1 get FFmpeg's own downmix matrix; the rate is converted by
  libswresample's default filter. Measured against the ffmpeg binary (Debian's 5.1) on 8..48 kHz,
  mono/stereo, int16/float WAV, FLAC, MP3, Vorbis, Opus and AAC: equal to 1.8e-7 at most (bit-exact
  for the WAV, FLAC and MP3 inputs). Files whose channels FFmpeg cannot mix (no known layout, e.g.
  9 or 64 unnamed channels; the ffmpeg binary refuses those) are averaged instead, then resampled
  the same way.
* "soxr": the channels are averaged ((L + R) / 2) and the rate is converted with soxr "HQ" (flatter
  passband, steeper cut-off; 3 dB quieter than "rvc" for stereo files).

Both keep the samples float32 from the decoder to the result: integer formats are scaled to -1..1 the
usual way (s16 / 32768, s32 / 2**31, u8 centred). Float files may hold samples beyond -1..1: they are
kept (not clipped) so that no information is lost; the conversion pipeline normalises the level
itself, as RVC's does. NaN and +-Inf samples (broken float files) become 0. A mono file at the
requested rate comes out unchanged with either decoder.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from infer_pack.errors import AudioLoadError
from infer_pack.fileio import atomic_path
from infer_pack.params import DECODERS, DEFAULT_DECODER, MAX_INPUT_SECONDS, Decoder

# Longest audio `load_audio` decodes into memory; longer files go through `iter_audio_chunks`.
MAX_DURATION_S = MAX_INPUT_SECONDS
MIN_SAMPLE_RATE = 1000
MAX_SAMPLE_RATE = 768_000
# Lowest sample rate accepted in a file (telephone audio is 8 kHz). Lower rates are broken or hostile
# headers: a 244-byte WAV "at 1 Hz" announces 100 s of audio and took a resampler over 10 minutes.
MIN_SOURCE_RATE = 4000
_RESAMPLE_QUALITY = "HQ"
_DECODE_FIX = "check that it is an audio file FFmpeg can play, or re-export it as WAV"

WavSubtype = Literal["FLOAT", "PCM_16", "PCM_24", "PCM_32", "DOUBLE"]


@dataclass(frozen=True)
class AudioInfo:
    """What a file holds, read from its header (duration counted by decoding when the header lacks it)."""

    duration_s: float
    sample_rate: int
    channels: int
    codec: str
    container: str = ""


def _check_rate(sample_rate: int) -> None:
    if not MIN_SAMPLE_RATE <= int(sample_rate) <= MAX_SAMPLE_RATE:
        raise ValueError(f"sample_rate must be between {MIN_SAMPLE_RATE} and {MAX_SAMPLE_RATE} Hz, got {sample_rate}")


def _check_file(path: Path) -> None:
    if not path.exists():
        raise AudioLoadError(path, "file not found", "check the path and the file name")
    if path.is_dir():
        raise AudioLoadError(path, "this is a folder, not a file", "pick an audio file inside it")
    if path.stat().st_size == 0:
        raise AudioLoadError(path, "the file is empty (0 bytes)", "re-export or re-download it")


def _open(path: Path) -> Any:
    """Open a container with PyAV; return (container, first audio stream). Errors name the file."""
    import av

    try:
        container = av.open(str(path), mode="r", metadata_errors="ignore")
    except av.FFmpegError as exc:
        raise AudioLoadError(path, f"not a readable audio file ({_ffmpeg_reason(exc)})", _DECODE_FIX) from None
    except (OSError, UnicodeError, ValueError) as exc:
        raise AudioLoadError(path, f"cannot open it ({exc})", _DECODE_FIX) from None
    if not container.streams.audio:
        container.close()
        raise AudioLoadError(
            path, "the file has no audio stream", "pick a file with sound in it (or extract the audio track)"
        )
    return container, container.streams.audio[0]


def _ffmpeg_reason(exc: Exception) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return str(text).strip() or type(exc).__name__


def _declared_duration_s(container: Any, stream: Any) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return float(container.duration) / 1_000_000.0
    return None


def _stream_number(stream: Any, name: str, codec_name: str) -> int:
    """An audio stream's rate or channel count; 0 where a damaged header leaves it undefined (PyAV then
    raises AttributeError instead of returning 0)."""
    for owner, attribute in ((stream, name), (stream.codec_context, codec_name)):
        try:
            value = getattr(owner, attribute)
        except AttributeError:
            continue
        if value:
            return int(value)
    return 0


def _read_header(path: Path) -> tuple[AudioInfo, float | None]:
    """(header facts, the duration the header announces or None) of an existing, non-empty file.

    `AudioInfo.duration_s` is the announced duration, 0 when the header has none.
    """
    container, stream = _open(path)
    try:
        if stream.codec_context is None:  # a damaged header names no codec FFmpeg has
            raise AudioLoadError(path, "its audio codec is unknown or damaged", _DECODE_FIX)
        rate = _stream_number(stream, "rate", "sample_rate")
        channels = _stream_number(stream, "channels", "channels")
        codec = str(stream.codec_context.name)
        declared = _declared_duration_s(container, stream)
        container_name = str(container.format.name)
    finally:
        container.close()
    info = AudioInfo(duration_s=declared or 0.0, sample_rate=rate, channels=channels, codec=codec,
                     container=container_name)
    return info, declared


def probe(path: str | Path) -> AudioInfo:
    """Header facts of an audio file. Raises AudioLoadError like `load_audio`."""
    path = Path(path)
    _check_file(path)
    info, declared = _read_header(path)
    if declared is None:
        # Raw streams without a header duration: count the samples.
        total = sum(block.size for block in _decode_mono_blocks(path, None))
        info = replace(info, duration_s=total / info.sample_rate if info.sample_rate else 0.0)
    return info


def _refuse_rate(path: Path, rate: int) -> None:
    if rate < MIN_SOURCE_RATE or rate > MAX_SAMPLE_RATE:
        raise AudioLoadError(
            path,
            f"its sample rate is {rate} Hz, outside the {MIN_SOURCE_RATE}..{MAX_SAMPLE_RATE} Hz this tool reads",
            "re-export it at a usual rate (16, 44.1 or 48 kHz)",
        )


_TOO_LONG_FIX = "cut it into shorter files (or raise the limit: the app's --max-audio-minutes)"
_LOAD_TOO_LONG_FIX = (
    "cut it into shorter files, read it piece by piece with iter_audio_chunks, or raise the limit "
    "(the app's --max-audio-minutes)"
)


def _refuse_duration(path: Path, duration_s: float, max_duration_s: float, fix: str = _TOO_LONG_FIX) -> None:
    if duration_s > max_duration_s:
        raise AudioLoadError(
            path, f"it lasts {_clock(duration_s)}, more than the {_clock(max_duration_s)} allowed here", fix
        )


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def check_input(path: str | Path, *, max_duration_s: float | None = MAX_DURATION_S) -> AudioInfo:
    """Refuse a file from its header alone, before any decoding or model loading.

    Checks: it exists and is a non-empty file, FFmpeg opens it and finds an audio stream, its sample
    rate is plausible, and its announced duration is within `max_duration_s` (files without one are
    checked while decoding). Raises AudioLoadError naming the file and the fix.
    """
    path = Path(path)
    _check_file(path)
    info, declared = _read_header(path)
    _refuse_rate(path, info.sample_rate)
    if max_duration_s is not None and declared is not None:
        _refuse_duration(path, declared, max_duration_s)
    return info


def _wav_missing_fraction(path: Path) -> float:
    """For a RIFF/WAVE file, the fraction of the `data` chunk its header announces but the file lacks.

    FFmpeg quietly clamps a cut WAV to the bytes present, so a half-copied file would otherwise load
    as a shorter clip without any warning.
    """
    import struct

    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            head = handle.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return 0.0
            offset = 12
            while offset + 8 <= size:
                handle.seek(offset)
                chunk_id, chunk_size = struct.unpack("<4sI", handle.read(8))
                if chunk_id == b"data":
                    if chunk_size in (0, 0xFFFFFFFF):  # streaming writers leave the size open
                        return 0.0
                    present = size - (offset + 8)
                    return max(0.0, (chunk_size - present) / chunk_size)
                offset += 8 + chunk_size + (chunk_size & 1)
    except OSError:
        return 0.0
    return 0.0


def _finite(block: np.ndarray) -> np.ndarray:
    """Zero NaN/Inf: huge finite samples (about 1e38, broken float files) overflow in the resampler."""
    if np.all(np.isfinite(block)):
        return block
    return np.nan_to_num(block, nan=0.0, posinf=0.0, neginf=0.0)


def _packed_array(frame: Any) -> np.ndarray:
    """A decoded frame already converted to packed float32 ("flt") -> its samples [n, channels].

    Packed (interleaved) samples live in one buffer whatever the channel count. Planar frames keep one
    buffer per channel, and FFmpeg stores the ninth channel on in a separate array (`extended_data`)
    that PyAV's `to_ndarray` does not reach: reading a planar frame of 8 or more channels that way
    crashed the process. So every frame is converted to packed first and split here.
    """
    packed = np.asarray(frame.to_ndarray(), dtype=np.float32).reshape(-1)  # [n * channels]
    samples = int(frame.samples)
    channels = packed.size // samples if samples else 1
    return packed[: samples * channels].reshape(samples, channels)


def _channel_mean(frames: np.ndarray) -> np.ndarray:
    """[n, channels] -> the finite mean of the channels [n]."""
    if frames.shape[1] == 1:
        return _finite(frames[:, 0])
    with np.errstate(over="ignore", invalid="ignore"):  # overflowing garbage becomes 0 just below
        mono = frames.mean(axis=1, dtype=np.float32)
    return _finite(mono)


class _SoxrMono:
    """The "soxr" decoder: channel mean, then soxr "HQ" to the target rate (streaming)."""

    def __init__(self, source_rate: int, sample_rate: int | None) -> None:
        import soxr

        self._stream: Any = (
            soxr.ResampleStream(source_rate, sample_rate, 1, dtype="float32", quality=_RESAMPLE_QUALITY)
            if sample_rate is not None and source_rate != sample_rate
            else None
        )

    def push(self, frame: Any) -> np.ndarray:
        mono = _channel_mean(_packed_array(frame))
        return _finite(self._stream.resample_chunk(mono)) if self._stream is not None else mono

    def flush(self) -> np.ndarray:
        if self._stream is None:
            return np.zeros(0, dtype=np.float32)
        return _finite(self._stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True))


class _SwrMono:
    """The "rvc" decoder: libswresample with its defaults, as `ffmpeg -ac 1 -ar <rate> -f f32le` runs it.

    PyAV's AudioResampler builds the same filter graph the ffmpeg command line does (an `aresample`
    with default options feeding `aformat=flt:mono:<rate>`), so the downmix matrix and the
    resampling filter are FFmpeg's. Frames arrive packed float (see `_packed_array`); a frame holding
    NaN/Inf is rebuilt with zeros there first, so that the resampler does not smear them. When FFmpeg
    cannot build a mono matrix for the layout (unnamed channels beyond what it knows), the channels
    are averaged and only the rate conversion is FFmpeg's.
    """

    def __init__(self, source_rate: int, sample_rate: int | None) -> None:
        self._rate = sample_rate or source_rate
        self._resampler: Any = None
        self._averaging = False

    def _new_resampler(self) -> Any:
        import av

        return av.AudioResampler(format="flt", layout="mono", rate=self._rate)

    def push(self, frame: Any) -> np.ndarray:
        import av

        frames = _packed_array(frame)  # [n, channels]
        if self._averaging:
            return self._resample(self._mono_frame(frame, _channel_mean(frames)))
        if not np.all(np.isfinite(frames)):
            frame = self._rebuilt(frame, _finite(frames))
        if self._resampler is None:
            self._resampler = self._new_resampler()
            try:
                return self._resample(frame)
            except av.ArgumentError:  # "Rematrix is needed ... but there is not enough information"
                self._averaging = True
                self._resampler = self._new_resampler()
                return self._resample(self._mono_frame(frame, _channel_mean(frames)))
        return self._resample(frame)

    def flush(self) -> np.ndarray:
        return self._resample(None) if self._resampler is not None else np.zeros(0, dtype=np.float32)

    def _resample(self, frame: Any) -> np.ndarray:
        if self._resampler is None:
            self._resampler = self._new_resampler()
        blocks = [np.asarray(out.to_ndarray(), dtype=np.float32).reshape(-1) for out in self._resampler.resample(frame)]
        if not blocks:
            return np.zeros(0, dtype=np.float32)
        return _finite(np.concatenate(blocks) if len(blocks) > 1 else blocks[0])  # [m] mono at the target rate

    @staticmethod
    def _rebuilt(frame: Any, frames: np.ndarray) -> Any:
        import av

        rebuilt = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(frames).reshape(1, -1), format="flt", layout=frame.layout
        )  # [1, n * channels]
        rebuilt.sample_rate, rebuilt.pts, rebuilt.time_base = frame.sample_rate, frame.pts, frame.time_base
        return rebuilt

    @staticmethod
    def _mono_frame(frame: Any, mono: np.ndarray) -> Any:
        import av

        out = av.AudioFrame.from_ndarray(np.ascontiguousarray(mono).reshape(1, -1), format="flt", layout="mono")
        out.sample_rate, out.pts, out.time_base = frame.sample_rate, frame.pts, frame.time_base
        return out


def _check_decoder(decoder: str) -> None:
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {', '.join(DECODERS)}, got {decoder!r}")


def _decode_mono_blocks(
    path: Path, sample_rate: int | None, *, keep_partial: bool = False, decoder: Decoder = DEFAULT_DECODER
) -> Iterator[np.ndarray]:
    """Decode the first audio stream to mono float32 blocks, resampled to `sample_rate` when given.

    Memory stays bounded by one decoded frame plus the resampler's state. A decoding error after
    some audio came out raises, unless `keep_partial` (then the audio decoded so far is kept).
    """
    import av

    _check_decoder(decoder)
    container, stream = _open(path)
    converter = av.AudioResampler(format="flt")  # any sample format -> packed float32, same rate/layout
    to_mono: _SoxrMono | _SwrMono | None = None  # made from the first frame's rate

    def to_target(frame: Any) -> np.ndarray:
        nonlocal to_mono
        if to_mono is None:
            source_rate = int(frame.sample_rate)
            _refuse_rate(path, source_rate)
            to_mono = (_SwrMono if decoder == "rvc" else _SoxrMono)(source_rate, sample_rate)
        return to_mono.push(frame)

    try:
        decoded_any = False
        try:
            for frame in container.decode(stream):
                decoded_any = True
                for converted in converter.resample(frame):
                    block = to_target(converted)
                    if block.size:
                        yield block
            for converted in converter.resample(None):
                block = to_target(converted)
                if block.size:
                    yield block
        except av.FFmpegError as exc:
            if not decoded_any:
                raise AudioLoadError(path, f"not decodable audio ({_ffmpeg_reason(exc)})", _DECODE_FIX) from None
            if not keep_partial:
                raise AudioLoadError(
                    path,
                    f"corrupt or truncated audio data ({_ffmpeg_reason(exc)})",
                    "re-export or re-download the file (or accept the part that decodes with allow_truncated=True)",
                ) from None
        if to_mono is not None:
            tail = to_mono.flush()
            if tail.size:
                yield tail
    finally:
        container.close()


def load_audio(
    path: str | Path,
    sample_rate: int,
    *,
    max_duration_s: float | None = MAX_DURATION_S,
    allow_truncated: bool = False,
    decoder: Decoder = DEFAULT_DECODER,
) -> np.ndarray:
    """Decode `path` to mono float32 at `sample_rate` Hz (see the module notes for the exact semantics).

    `decoder`: "rvc" mixes and resamples as RVC's ffmpeg call does, "soxr" averages and uses soxr "HQ".

    Raises AudioLoadError for a missing, empty (0 bytes or 0 samples), corrupt or non-audio file,
    for a file longer than `max_duration_s` (use `iter_audio_chunks` for those), and for a file
    whose decodable part is clearly shorter than its header says (a cut download) unless
    `allow_truncated`.
    """
    _check_rate(sample_rate)
    _check_decoder(decoder)
    path = Path(path)
    _check_file(path)
    missing = _wav_missing_fraction(path)
    if missing > 0.01 and not allow_truncated:
        raise AudioLoadError(
            path,
            f"the file is cut short: {missing:.0%} of the audio its header announces is missing (truncated copy?)",
            "re-export or re-download the file",
        )
    info, declared = _read_header(path)
    # Only these codecs carry an exact length in their header; compressed formats estimate it.
    exact_length = info.codec.startswith("pcm_") or info.codec == "flac"
    _refuse_rate(path, info.sample_rate)
    if max_duration_s is not None and declared is not None:
        _refuse_duration(path, declared, max_duration_s, _LOAD_TOO_LONG_FIX)
    limit = None if max_duration_s is None else math.ceil(max_duration_s * sample_rate) + sample_rate
    blocks: list[np.ndarray] = []
    total = 0
    for block in _decode_mono_blocks(path, sample_rate, keep_partial=allow_truncated, decoder=decoder):
        blocks.append(block)
        total += block.size
        if limit is not None and max_duration_s is not None and total > limit:
            raise AudioLoadError(
                path,
                f"it lasts more than the {_clock(max_duration_s)} allowed here",
                _LOAD_TOO_LONG_FIX,
            )
    if total == 0:
        raise AudioLoadError(path, "it holds no audio samples", "re-export it with some sound in it")
    audio = np.concatenate(blocks) if len(blocks) > 1 else blocks[0]
    decoded_s = total / sample_rate
    if (
        not allow_truncated
        and exact_length
        and declared is not None
        and declared - decoded_s > max(0.5, 0.05 * declared)
    ):
        raise AudioLoadError(
            path,
            f"only {decoded_s:.2f} s of the {declared:.2f} s its header announces could be decoded (truncated file?)",
            "re-export or re-download the file",
        )
    return np.ascontiguousarray(audio, dtype=np.float32)


def iter_audio_chunks(
    path: str | Path, sample_rate: int, chunk_seconds: float = 30.0, *, decoder: Decoder = DEFAULT_DECODER
) -> Iterator[np.ndarray]:
    """Yield consecutive mono float32 chunks of `chunk_seconds` (the last may be shorter) at `sample_rate`.

    Concatenating the chunks gives the same samples as `load_audio` (with the same `decoder`) without
    holding the whole file.
    """
    _check_rate(sample_rate)
    _check_decoder(decoder)
    if chunk_seconds <= 0:
        raise ValueError(f"chunk_seconds must be positive, got {chunk_seconds}")
    path = Path(path)
    _check_file(path)
    chunk = max(1, round(chunk_seconds * sample_rate))
    pending: list[np.ndarray] = []
    pending_size = 0
    produced = 0
    for block in _decode_mono_blocks(path, sample_rate, decoder=decoder):
        pending.append(block)
        pending_size += block.size
        while pending_size >= chunk:
            joined = np.concatenate(pending)
            yield joined[:chunk]
            produced += chunk
            rest = joined[chunk:]
            pending = [rest] if rest.size else []
            pending_size = rest.size
    if pending_size:
        produced += pending_size
        yield np.concatenate(pending)
    if produced == 0:
        raise AudioLoadError(path, "it holds no audio samples", "re-export it with some sound in it")


def write_wav(
    path: str | Path,
    audio: np.ndarray,
    sample_rate: int,
    subtype: WavSubtype = "FLOAT",
) -> None:
    """Write a WAV file atomically. `audio` is [T] or [T, channels], float -1..1.

    "FLOAT" keeps float32 samples as RVC does for `0_gt_wavs` and `1_16k_wavs`; integer subtypes clip
    to -1..1 first (libsndfile would otherwise wrap around on overflow). NaN/Inf are written as 0.
    """
    import soundfile

    _check_rate(sample_rate)
    data = np.asarray(audio)
    if data.ndim not in (1, 2) or data.shape[0] == 0:
        raise ValueError(f"audio must be [T] or [T, channels] with T > 0, got shape {data.shape}")
    data = np.nan_to_num(
        data.astype(np.float64 if subtype == "DOUBLE" else np.float32, copy=False), nan=0.0, posinf=0.0, neginf=0.0
    )
    if subtype != "FLOAT" and subtype != "DOUBLE":
        data = np.clip(data, -1.0, 1.0)

    def _write(tmp: Path) -> None:
        soundfile.write(str(tmp), data, int(sample_rate), subtype=subtype, format="WAV")

    with atomic_path(path) as tmp:
        _write(tmp)


def audio_extension_ok(path: str | Path) -> bool:
    """True for names that look like audio/video files (used to filter folder listings)."""
    return os.path.splitext(str(path))[1].lower() in AUDIO_EXTENSIONS


AUDIO_EXTENSIONS = frozenset(
    {
        ".wav",
        ".flac",
        ".mp3",
        ".ogg",
        ".oga",
        ".opus",
        ".m4a",
        ".aac",
        ".wma",
        ".aiff",
        ".aif",
        ".webm",
        ".mp4",
        ".mkv",
        ".mov",
        ".ac3",
        ".caf",
        ".wv",
        ".ape",
    }
)
