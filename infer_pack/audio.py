"""Audio input and output: decode anything FFmpeg reads (through PyAV), mono, resampled with soxr.

What `load_audio` returns, compared with RVC:
* RVC decodes with FFmpeg to mono at the requested rate (`-ac 1 -ar <sr>`) and hands out float32.
  Depending on the release the samples pass through 16-bit integers on the way (FFmpeg's
  normalised downmix then `/ 32768`), which quantises them to 1/32768 (about -96 dB).
* Here the decoded samples stay float32 from the decoder to the result: integer formats are scaled
  to -1..1 the usual way (s16 / 32768, s32 / 2**31, u8 centred), channels are averaged (which is
  what FFmpeg's normalised stereo -> mono matrix computes: (L + R) / 2), and the rate is converted
  with soxr "HQ". The difference to RVC's int16 path is below the 16-bit quantisation step plus the
  resampler's passband ripple; nothing downstream (pitch, HuBERT) can tell them apart, and float
  files keep their full precision.
* Float files may hold samples beyond -1..1: they are kept (not clipped) so that no information is
  lost; the conversion pipeline normalises the level itself, as RVC's does. NaN and +-Inf samples
  (broken float files) become 0.
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
from infer_pack.params import MAX_INPUT_SECONDS

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


def _frame_to_mono(frame: Any) -> np.ndarray:
    """A decoded frame already converted to packed float32 ("flt") -> mono float32 [n].

    Packed (interleaved) samples live in one buffer whatever the channel count. Planar frames keep one
    buffer per channel, and FFmpeg stores the ninth channel on in a separate array (`extended_data`)
    that PyAV's `to_ndarray` does not reach: reading a planar frame of 8 or more channels that way
    crashed the process. So every frame is converted to packed first and split here.
    """
    packed = np.asarray(frame.to_ndarray(), dtype=np.float32).reshape(-1)  # [n * channels]
    samples = int(frame.samples)
    channels = packed.size // samples if samples else 1
    if channels <= 1:
        return _finite(packed[:samples])
    frames = packed[: samples * channels].reshape(samples, channels)  # [n, channels]
    with np.errstate(over="ignore", invalid="ignore"):  # overflowing garbage becomes 0 just below
        mono = frames.mean(axis=1, dtype=np.float32)
    return _finite(mono)


def _decode_mono_blocks(path: Path, sample_rate: int | None, *, keep_partial: bool = False) -> Iterator[np.ndarray]:
    """Decode the first audio stream to mono float32 blocks, resampled to `sample_rate` when given.

    Memory stays bounded by one decoded frame plus the resampler's state. A decoding error after
    some audio came out raises, unless `keep_partial` (then the audio decoded so far is kept).
    """
    import av
    import soxr

    container, stream = _open(path)
    converter = av.AudioResampler(format="flt")  # any sample format -> packed float32, same rate/layout
    resampler: Any = None  # created from the first frame's rate; False when no conversion is needed

    def to_target(frame: Any) -> np.ndarray:
        nonlocal resampler
        mono = _frame_to_mono(frame)
        if resampler is None:
            source_rate = int(frame.sample_rate)
            _refuse_rate(path, source_rate)
            resampler = (
                soxr.ResampleStream(source_rate, sample_rate, 1, dtype="float32", quality=_RESAMPLE_QUALITY)
                if sample_rate is not None and source_rate != sample_rate
                else False
            )
        return _finite(resampler.resample_chunk(mono)) if resampler else mono

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
        if resampler:
            tail = _finite(resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
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
) -> np.ndarray:
    """Decode `path` to mono float32 at `sample_rate` Hz (see the module notes for the exact semantics).

    Raises AudioLoadError for a missing, empty (0 bytes or 0 samples), corrupt or non-audio file,
    for a file longer than `max_duration_s` (use `iter_audio_chunks` for those), and for a file
    whose decodable part is clearly shorter than its header says (a cut download) unless
    `allow_truncated`.
    """
    _check_rate(sample_rate)
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
    for block in _decode_mono_blocks(path, sample_rate, keep_partial=allow_truncated):
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


def iter_audio_chunks(path: str | Path, sample_rate: int, chunk_seconds: float = 30.0) -> Iterator[np.ndarray]:
    """Yield consecutive mono float32 chunks of `chunk_seconds` (the last may be shorter) at `sample_rate`.

    Concatenating the chunks gives the same samples as `load_audio` without holding the whole file.
    """
    _check_rate(sample_rate)
    if chunk_seconds <= 0:
        raise ValueError(f"chunk_seconds must be positive, got {chunk_seconds}")
    path = Path(path)
    _check_file(path)
    chunk = max(1, round(chunk_seconds * sample_rate))
    pending: list[np.ndarray] = []
    pending_size = 0
    produced = 0
    for block in _decode_mono_blocks(path, sample_rate):
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
