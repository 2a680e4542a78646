"""Voice conversion: 16 kHz input audio -> audio in the voice's sample rate.

The steps and their windows follow RVC's offline pipeline, so a voice sounds the same here:
  1. peak-normalise loud input to 0.95, high-pass at 48 Hz (5th-order Butterworth, forward-backward);
  2. long input (> x_max s) is cut near every x_center s, at the quietest 10 ms window within
     +-x_query s (a moving-sum search), so chunk seams fall into pauses;
  3. the whole input is reflect-padded by x_pad s; f0 is estimated once on it (10 ms frames),
     transposed, optionally replaced by a user f0 file, turned into coarse pitch;
  4. per chunk (with x_pad s of context on each side): HuBERT features at 50 frames/s (v1: layer 9
     + final_proj -> 256, v2: layer 12 -> 768), retrieval blend with the voice's index, nearest 2x
     upsampling to 100 frames/s, "protect" mixing for unvoiced frames, synthesis, trimming of the
     context;
  5. the chunks are joined; the input's loudness envelope is mixed in (rms_mix_rate), the result
     resampled (resample_hz) and scaled down when its peak exceeds 0.99.
Only one chunk's tensors exist at a time, so memory does not grow with the input length beyond
the audio arrays themselves (a 10-minute input at 40 kHz is about 100 MB of float32 output).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np

from infer_pack.errors import UserInputError

# Re-exported: the conversion parameters are defined in infer_pack.params (imported from here by older code).
from infer_pack.params import F0_METHOD_NAMES as F0_METHOD_NAMES
from infer_pack.params import PARAM_SPECS as PARAM_SPECS
from infer_pack.params import PITCH_GAP_MODES as PITCH_GAP_MODES
from infer_pack.params import ConversionParams as ConversionParams
from infer_pack.params import ParamSpec as ParamSpec
from infer_pack.progress import CancelToken, ProgressCallback, check, report

if TYPE_CHECKING:
    import torch

    from configs import Version
    from infer_pack.cache import ModelCache
    from infer_pack.checkpoint import VoiceModel
    from infer_pack.models import Synthesizer
    from infer_pack.onnx_engine import OnnxSynthesizer
    from infer_pack.retrieval import FeatureIndex

SAMPLE_RATE = 16000  # HuBERT and f0 input rate
WINDOW = 160  # samples per 10 ms frame at 16 kHz
HIGH_PASS_HZ = 48
INPUT_PEAK = 0.95  # RVC scales louder input down to this peak before converting
OUTPUT_PEAK = 0.99  # ... and louder output down to this one
RETRIEVAL_K = 8
MIN_INPUT_SAMPLES = 1600  # 0.1 s


class ContentEncoderLike(Protocol):
    """What the pipeline needs from `infer_pack.hubert.ContentEncoder`."""

    def extract(self, wave_16k: torch.Tensor, version: Version) -> torch.Tensor: ...


# -- parameters --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Windows:
    """RVC's chunking windows in seconds: context pad, cut search radius, cut spacing, no-cut limit.

    RVC uses whole seconds; x_pad may also be a multiple of 0.01 s (shorter context, faster tests).
    """

    x_pad: float
    x_query: int
    x_center: int
    x_max: int

    def __post_init__(self) -> None:
        if self.x_pad <= 0 or abs(self.x_pad * 100 - round(self.x_pad * 100)) > 1e-9:
            raise UserInputError(f"x_pad must be a positive multiple of 0.01 s, got {self.x_pad}")
        if not 0 < self.x_query < self.x_center < self.x_max:
            raise UserInputError(f"need 0 < x_query < x_center < x_max, got {self}")

    @property
    def pad_frames(self) -> int:
        """Context frames (10 ms) added on each side."""
        return round(self.x_pad * 100)

    def pad_samples(self, sample_rate: int) -> int:
        return self.pad_frames * sample_rate // 100

    @classmethod
    def for_device(cls, device: str, half: bool) -> Windows:
        # RVC: CPU / fp32 uses the small windows, a half-precision GPU the large ones.
        return GPU_HALF_WINDOWS if half and device != "cpu" else CPU_WINDOWS


# Frames (10 ms) the decoder handles at once: its activations for 10 s of audio take about 1 GB.
DECODE_WINDOW_FRAMES = 1000

CPU_WINDOWS = Windows(x_pad=1, x_query=6, x_center=38, x_max=41)
GPU_HALF_WINDOWS = Windows(x_pad=3, x_query=10, x_center=60, x_max=65)


@dataclass
class ConversionTimes:
    """Seconds spent per stage (like RVC's 'npy / f0 / infer' line)."""

    features: float = 0.0
    f0: float = 0.0
    synthesis: float = 0.0
    chunks: int = 0
    extra: dict[str, float] = field(default_factory=dict)


# -- signal helpers (pure numpy; RVC's numerics) --------------------------------------------------


def normalise_input_peak(audio: np.ndarray) -> np.ndarray:
    """Scale down so the peak is at most 0.95 (RVC does this to every input)."""
    peak = float(np.abs(audio).max()) / INPUT_PEAK if audio.size else 0.0
    return audio / peak if peak > 1.0 else audio


def high_pass(audio: np.ndarray) -> np.ndarray:
    """RVC's 48 Hz, 5th-order Butterworth high-pass, applied forward and backward (float64)."""
    from scipy import signal

    b, a = signal.butter(N=5, Wn=HIGH_PASS_HZ, btype="high", fs=SAMPLE_RATE)
    return signal.filtfilt(b, a, np.asarray(audio, dtype=np.float64))


def split_points(audio: np.ndarray, windows: Windows) -> list[int]:
    """Where to cut long input: near every x_center s, at the quietest 10 ms window within +-x_query s.

    "Quietest" is RVC's `audio_sum`: the sum of absolute sample values over the 160 samples starting
    at each position of the input reflect-padded by 80 samples. (The absolute value of a plain sum
    would call a loud tone quiet wherever its samples cancel out.) Each region's sums are added tap
    by tap in RVC's order, so ties between equally quiet places break the same way.
    """
    t_query = SAMPLE_RATE * windows.x_query
    t_center = SAMPLE_RATE * windows.x_center
    t_max = SAMPLE_RATE * windows.x_max
    n = audio.shape[0]
    if n + WINDOW <= t_max:
        return []
    magnitude = np.abs(np.pad(np.asarray(audio, dtype=np.float64), (WINDOW // 2, WINDOW // 2), mode="reflect"))
    points: list[int] = []
    for t in range(t_center, n, t_center):
        lo, hi = t - t_query, min(t + t_query, n)
        loudness = np.zeros(hi - lo, dtype=np.float64)  # [hi - lo]
        for tap in range(WINDOW):
            loudness += magnitude[lo + tap : hi + tap]
        points.append(lo + int(np.argmin(loudness)))
    return points


def _frame_rms(audio: np.ndarray, frame_length: int, hop_length: int) -> np.ndarray:
    """librosa.feature.rms(center=True, zero padding): sqrt(mean(x^2)) per frame."""
    padded = np.pad(np.asarray(audio, dtype=np.float64), frame_length // 2)
    n_frames = 1 + (padded.shape[0] - frame_length) // hop_length
    squares = np.concatenate(([0.0], np.cumsum(padded * padded)))
    starts = np.arange(n_frames) * hop_length
    return np.sqrt(np.maximum(squares[starts + frame_length] - squares[starts], 0.0) / frame_length)


def _linear_resize(values: np.ndarray, size: int, start: int, stop: int) -> np.ndarray:
    """Samples start..stop of `values` stretched to `size` points (torch linear, align_corners=False)."""
    scale = values.shape[0] / size
    src = np.maximum((np.arange(start, stop, dtype=np.float64) + 0.5) * scale - 0.5, 0.0)
    left = np.minimum(src.astype(np.int64), values.shape[0] - 1)
    right = np.minimum(left + 1, values.shape[0] - 1)
    frac = src - left
    return values[left] * (1.0 - frac) + values[right] * frac


def mix_rms(source_16k: np.ndarray, output: np.ndarray, output_rate: int, rate: float, block: int = 1 << 20) -> np.ndarray:
    """RVC's volume-envelope mix: output * rms_in^(1-rate) * rms_out^(rate-1), envelopes on 0.5 s frames."""
    rms_in = _frame_rms(source_16k, SAMPLE_RATE // 2 * 2, SAMPLE_RATE // 2)
    rms_out = _frame_rms(output, output_rate // 2 * 2, output_rate // 2)
    mixed = np.empty(output.shape[0], dtype=np.float32)
    for start in range(0, output.shape[0], block):
        stop = min(start + block, output.shape[0])
        env_in = _linear_resize(rms_in, output.shape[0], start, stop)
        env_out = np.maximum(_linear_resize(rms_out, output.shape[0], start, stop), 1e-6)
        gain = np.power(env_in, 1.0 - rate) * np.power(env_out, rate - 1.0)
        mixed[start:stop] = output[start:stop] * gain
    return mixed


def resample(audio: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """High-quality soxr resampling (what librosa.resample uses by default)."""
    import soxr

    return soxr.resample(np.asarray(audio, dtype=np.float32), source_rate, target_rate, quality="HQ").astype(np.float32)


def limit_peak(audio: np.ndarray) -> np.ndarray:
    """Scale down so the peak is at most 0.99; quieter audio is left as it is."""
    peak = float(np.abs(audio).max()) / OUTPUT_PEAK if audio.size else 0.0
    return (audio / peak).astype(np.float32) if peak > 1.0 else audio.astype(np.float32, copy=False)


def output_rate(model_rate: int, resample_sr: int) -> int:
    """RVC: resample only when resample_sr >= 16000 and differs from the model's rate."""
    return resample_sr if model_rate != resample_sr >= SAMPLE_RATE else model_rate


def protect_unvoiced(blended: np.ndarray, original: np.ndarray, hz: np.ndarray, protect: float) -> np.ndarray:
    """RVC's consonant protection: unvoiced frames (f0 < 1 Hz) take `protect` of the blended features
    and the rest from the original ones; voiced frames keep the blended features. [T, C] each."""
    keep = np.where(np.asarray(hz) < 1.0, np.float32(protect), np.float32(1.0))[:, None]  # [T, 1]
    return blended * keep + original * (1.0 - keep)


# -- f0 --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PitchTrack:
    coarse: np.ndarray  # int64 [frames] 1..255
    hz: np.ndarray  # float32 [frames], 0 = unvoiced


def pitch_curve(
    audio_pad: np.ndarray,
    n_frames: int,
    params: ConversionParams,
    windows: Windows,
    *,
    rmvpe_path: str | Path | None = None,
    cache: ModelCache | None = None,
    device: str = "cpu",
) -> np.ndarray:
    """RVC's get_f0 on the padded input up to coarse pitch: estimate, filter (harvest), fill gaps (optional),
    transpose, override. float64 [n_frames], 0 = unvoiced."""
    from infer_pack.f0 import apply_f0_file, estimate_f0, fill_pitch_gaps, median_filter_f0, shift_f0

    f0 = estimate_f0(audio_pad, params.f0_method, n_frames=n_frames, rmvpe_path=rmvpe_path, cache=cache, device=device)
    if params.f0_method == "harvest":
        f0 = median_filter_f0(f0, params.filter_radius)
    # Gaps are filled on the estimator's track (the training extractor uses the same helper);
    # a user's f0 file then overrides frames as given.
    f0 = fill_pitch_gaps(f0, params.pitch_gaps)
    f0 = shift_f0(f0, params.pitch_semitones)
    if params.f0_override_path is not None:
        f0 = apply_f0_file(f0, params.f0_override_path, frame_offset=windows.pad_frames)
    return np.asarray(f0[:n_frames], dtype=np.float64)


def pitch_track(
    audio_pad: np.ndarray,
    n_frames: int,
    params: ConversionParams,
    windows: Windows,
    *,
    rmvpe_path: str | Path | None = None,
    cache: ModelCache | None = None,
    device: str = "cpu",
) -> PitchTrack:
    """`pitch_curve` and its coarse pitch: what the synthesiser gets."""
    from infer_pack.f0 import f0_to_coarse

    f0 = pitch_curve(audio_pad, n_frames, params, windows, rmvpe_path=rmvpe_path, cache=cache, device=device)
    return PitchTrack(coarse=f0_to_coarse(f0), hz=f0.astype(np.float32))


def prepared_input(audio_16k: np.ndarray, windows: Windows) -> np.ndarray:
    """The input as conversion sees it: peak-normalised, high-passed, reflect-padded by x_pad. float64 [N + 2 pad]."""
    t_pad = windows.pad_samples(SAMPLE_RATE)
    audio = np.nan_to_num(np.asarray(audio_16k, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    audio = high_pass(normalise_input_peak(audio))
    return np.pad(audio, (t_pad, t_pad), mode="reflect")


def input_pitch_curve(
    audio_16k: np.ndarray,
    params: ConversionParams,
    windows: Windows,
    *,
    rmvpe_path: str | Path | None = None,
    cache: ModelCache | None = None,
    device: str = "cpu",
) -> np.ndarray:
    """The pitch a conversion with `params` and `windows` uses, on the input's own frames: float64 [N // 160].

    Frame k is at k * 10 ms of the input (the padded track's frame `windows.pad_frames + k`); a pitch
    file holding this curve (`infer_pack.pitch_file`) reproduces it exactly.
    """
    audio_pad = prepared_input(audio_16k, windows)
    n_frames = audio_pad.shape[0] // WINDOW
    f0 = pitch_curve(audio_pad, n_frames, params, windows, rmvpe_path=rmvpe_path, cache=cache, device=device)
    pad = windows.pad_frames
    return f0[pad : n_frames - pad]


# -- the converter ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Chunk:
    """One piece of the padded input: samples [start, stop) and f0 frames [frame_start, frame_stop)."""

    start: int
    stop: int
    frame_start: int
    frame_stop: int


def plan_chunks(n_padded: int, points: Sequence[int], windows: Windows) -> list[Chunk]:
    """RVC's chunk boundaries on the padded input, given the cut points found on the unpadded one."""
    t_pad2 = 2 * windows.pad_samples(SAMPLE_RATE)
    chunks: list[Chunk] = []
    start = 0
    for point in points:
        cut = point // WINDOW * WINDOW
        chunks.append(Chunk(start, cut + t_pad2 + WINDOW, start // WINDOW, (cut + t_pad2) // WINDOW))
        start = cut
    chunks.append(Chunk(start, n_padded, start // WINDOW, n_padded // WINDOW))
    return chunks


class VoiceConverter:
    """A voice ready to convert: synthesiser + content encoder (+ optional feature index).

    `synthesizer` may be passed already built (the application caches it in a ModelCache);
    otherwise it is built from `voice` on `device` in `dtype` (float32 on CPU, float16 on CUDA).
    `decode_window` bounds the frames decoded at once (None: a whole chunk); it changes memory, not samples.
    """

    def __init__(
        self,
        voice: VoiceModel,
        encoder: ContentEncoderLike,
        index: FeatureIndex | None = None,
        device: str = "cpu",
        *,
        synthesizer: Synthesizer | None = None,
        dtype: torch.dtype | None = None,
        windows: Windows | None = None,
        rmvpe_path: str | Path | None = None,
        cache: ModelCache | None = None,
        engine: Literal["torch", "onnx"] = "torch",
        onnx_cache_dir: str | Path | None = None,
        decode_window: int | None = DECODE_WINDOW_FRAMES,
    ) -> None:
        import torch

        from infer_pack.checkpoint import build_synthesizer

        if engine not in ("torch", "onnx"):
            raise UserInputError(f"unknown engine {engine!r}; use 'torch' or 'onnx'")
        if index is not None and index.dim != voice.content_dim:
            from infer_pack.errors import IndexFileError

            raise IndexFileError(
                index.path or "<index>",
                f"it holds {index.dim}-dim features but this {voice.version} voice uses {voice.content_dim}-dim ones",
                "pick the index trained with this voice (its file name ends in _v1 or _v2)",
            )
        self.voice = voice
        self.encoder = encoder
        self.index = index
        self.device = str(device)
        if dtype is None:
            dtype = torch.float16 if self.device.startswith("cuda") else torch.float32
        self.dtype = dtype
        self.synthesizer = synthesizer if synthesizer is not None else build_synthesizer(voice, device, dtype)
        half = dtype in (torch.float16, torch.bfloat16)
        self.windows = windows or Windows.for_device(self.device, half)
        self.rmvpe_path = rmvpe_path
        self.cache = cache
        self.last_times = ConversionTimes()
        self.engine = engine
        # The decoder works on at most this many frames at a time (same samples; bounded memory).
        self.decode_window = decode_window
        # engine="onnx": the decoder runs in ONNX Runtime (CPU, float32; infer_pack/onnx_engine.py).
        self._onnx: OnnxSynthesizer | None = None
        if engine == "onnx":
            from infer_pack.onnx_engine import OnnxSynthesizer

            self._onnx = OnnxSynthesizer(self.synthesizer, cache_dir=onnx_cache_dir)

    @property
    def sample_rate(self) -> int:
        return self.voice.sample_rate

    @property
    def use_f0(self) -> bool:
        return self.voice.use_f0

    def expected_length(self, audio_16k: np.ndarray | int) -> int:
        """Output samples (at the voice's rate, before resampling) for this 16 kHz input.

        Given only a sample count, the result is exact for input that is not split (up to x_max s);
        split input needs the audio, whose quiet places decide the cuts.
        """
        windows = self.windows
        t_pad = windows.pad_samples(SAMPLE_RATE)
        t_pad_tgt = windows.pad_samples(self.sample_rate)
        hop = self.sample_rate // 100
        if isinstance(audio_16k, np.ndarray):
            n_input = audio_16k.shape[0]
            points = split_points(high_pass(normalise_input_peak(audio_16k.astype(np.float32))), windows)
        else:
            n_input = int(audio_16k)
            points = split_points(np.zeros(n_input), windows)
        total = 0
        for chunk in plan_chunks(n_input + 2 * t_pad, points, windows):
            n = chunk.stop - chunk.start
            frames = 2 * ((n - 400) // 320 + 1)
            frames = min(frames, n // WINDOW)
            total += frames * hop - 2 * t_pad_tgt
        return total

    def convert(
        self,
        audio_16k: np.ndarray,
        params: ConversionParams,
        progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> tuple[np.ndarray, int]:
        """Convert mono 16 kHz float audio; returns (float32 audio, sample rate in Hz)."""
        import time

        params = params.validated()
        audio = np.asarray(audio_16k, dtype=np.float32)
        if audio.ndim != 1:
            raise UserInputError(f"expected mono audio [samples], got shape {audio.shape}")
        if audio.shape[0] < MIN_INPUT_SAMPLES:
            raise UserInputError(f"the input is too short ({audio.shape[0] / SAMPLE_RATE:.3f} s); give at least 0.1 s")
        if not np.isfinite(audio).all():
            audio = np.nan_to_num(audio, nan=0.0, posinf=0.0, neginf=0.0)
        if params.speaker_id >= self.voice.speaker_count:
            raise UserInputError(
                f"speaker id {params.speaker_id} does not exist in this voice (it has {self.voice.speaker_count}); use 0"
            )
        times = ConversionTimes()
        windows = self.windows
        t_pad = windows.pad_samples(SAMPLE_RATE)

        audio = high_pass(normalise_input_peak(audio))  # float64 [N]
        chunks = plan_chunks(audio.shape[0] + 2 * t_pad, split_points(audio, windows), windows)
        total_steps = len(chunks) + 2
        report(progress, 0, total_steps, "estimating pitch" if self.use_f0 else "preparing")
        audio_pad = np.pad(audio, (t_pad, t_pad), mode="reflect")
        n_frames = audio_pad.shape[0] // WINDOW
        pitch: PitchTrack | None = None
        if self.use_f0:
            started = time.perf_counter()
            pitch = pitch_track(
                audio_pad, n_frames, params, windows, rmvpe_path=self.rmvpe_path, cache=self.cache, device=self.device
            )
            times.f0 = time.perf_counter() - started
        report(progress, 1, total_steps, f"pitch done; converting {len(chunks)} chunk(s)")

        pieces: list[np.ndarray] = []
        for number, chunk in enumerate(chunks):
            check(cancel)
            pieces.append(self._convert_chunk(audio_pad, chunk, pitch, params, number, times))
            report(progress, 2 + number, total_steps, f"converted chunk {number + 1}/{len(chunks)}")
        check(cancel)
        out = np.concatenate(pieces) if len(pieces) > 1 else pieces[0]
        del pieces
        if params.rms_mix_rate != 1.0:
            out = mix_rms(audio, out, self.sample_rate, params.rms_mix_rate)
        rate = output_rate(self.sample_rate, params.resample_hz)
        if rate != self.sample_rate:
            out = resample(out, self.sample_rate, rate)
        times.chunks = len(chunks)
        self.last_times = times
        report(progress, total_steps, total_steps, "done")
        return limit_peak(out), rate

    def _convert_chunk(
        self,
        audio_pad: np.ndarray,
        chunk: Chunk,
        pitch: PitchTrack | None,
        params: ConversionParams,
        number: int,
        times: ConversionTimes,
    ) -> np.ndarray:
        import time

        import torch

        started = time.perf_counter()
        segment = audio_pad[chunk.start : chunk.stop]
        wave = torch.from_numpy(np.ascontiguousarray(segment, dtype=np.float32))[None]  # [1, N]
        encoded = self.encoder.extract(wave, self.voice.version)  # [1, T50, C] float32
        features = encoded.detach().to("cpu", torch.float32)[0].numpy()  # [T50, C]
        protect = self.use_f0 and pitch is not None and params.protect < 0.5
        unblended = features if protect else None
        if self.index is not None and params.index_rate > 0.0:
            features = self.index.blend(features, params.index_rate, k=RETRIEVAL_K)
        # Nearest 2x upsampling (50 -> 100 frames/s), as F.interpolate(scale_factor=2) does.
        n_frames = min(2 * features.shape[0], (chunk.stop - chunk.start) // WINDOW)
        phone = np.repeat(features, 2, axis=0)[:n_frames]  # [T, C]
        coarse = hz = None
        if pitch is not None:
            coarse = pitch.coarse[chunk.frame_start : chunk.frame_stop][:n_frames]
            hz = pitch.hz[chunk.frame_start : chunk.frame_stop][:n_frames]
            n_frames = min(n_frames, coarse.shape[0])
            phone = phone[:n_frames]
        if protect and unblended is not None and hz is not None:
            phone = protect_unvoiced(phone, np.repeat(unblended, 2, axis=0)[:n_frames], hz, params.protect)
        times.features += time.perf_counter() - started

        started = time.perf_counter()
        # The context padding is cut from the output (RVC decodes it and then drops it): decode only
        # the kept frames plus the decoder's receptive field, which gives the same samples.
        pad = self.windows.pad_frames
        audio = self._synthesize(phone, coarse, hz, params, number, keep=(pad, n_frames - pad))
        times.synthesis += time.perf_counter() - started
        return audio

    def _synthesize(
        self,
        phone: np.ndarray,
        coarse: np.ndarray | None,
        hz: np.ndarray | None,
        params: ConversionParams,
        number: int,
        keep: tuple[int, int] | None = None,
    ) -> np.ndarray:
        import torch

        device = torch.device(self.device)
        phone_t = torch.from_numpy(np.ascontiguousarray(phone, dtype=np.float32))[None].to(device, self.dtype)  # [1, T, C]
        lengths = torch.tensor([phone.shape[0]], dtype=torch.long, device=device)
        sid = torch.tensor([params.speaker_id], dtype=torch.long, device=device)
        pitch_t = pitchf_t = None
        if coarse is not None and hz is not None:
            pitch_t = torch.from_numpy(np.ascontiguousarray(coarse, dtype=np.int64))[None].to(device)  # [1, T]
            pitchf_t = torch.from_numpy(np.ascontiguousarray(hz, dtype=np.float32))[None].to(device)  # [1, T] Hz
        generator = None
        if params.seed is not None:
            # A generator of its own per chunk (not torch's global one): the same input and seed give
            # the same output in any process, also while other threads draw random numbers.
            generator = torch.Generator(device=device).manual_seed(int(params.seed) + number)
        if self._onnx is not None:
            return self._onnx.infer(
                phone_t, lengths, pitch_t, pitchf_t, sid, generator=generator, keep=keep, window=self.decode_window
            )
        with torch.inference_mode():
            out = self.synthesizer.infer(
                phone_t, lengths, pitch_t, pitchf_t, sid, generator=generator, keep=keep, window=self.decode_window
            )[0]  # [1, 1, T*hop]
        return out[0, 0].to("cpu", torch.float32).numpy()
