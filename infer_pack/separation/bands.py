"""Multi-band spectrograms of UVR5's VR models (the model-params JSON: STFT bands, crops, filters).

A stereo wave at the top band's rate is resampled down band by band; each band's STFT is cropped to
its bin range and the crops are stacked into one spectrogram of `bins + 1` rows, which the network
masks. The way back inverts each band, filters its edges, resamples it up and sums the bands.
Everything here is linear in the spectrogram except the high-end mirroring, so the stems computed
as X*m and X - X*m invert to waves that sum to the inversion of X.

The resamplers are RVC's (branch 20240604, commit d60cd3d0, `lib_v5/spec_utils.py` and
`modules/uvr5/vr.py`), each called as librosa 0.9.1's `resample` calls it: going down, each band's
`res_type` from the params JSON ("polyphase": `scipy.signal.resample_poly`); going up, "sinc_fastest"
from the first band to the second (the identity: both run at 7350 Hz) and "scipy"
(`scipy.signal.resample`, FFT) above. The STFTs pad with zeros, as librosa 0.9.1's do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

# librosa `res_type` names that RVC's VR code uses and that we implement (with scipy, as librosa does).
Resampler = Literal["polyphase", "scipy", "sinc_fastest"]


def synthesis_resampler(index: int) -> Resampler:
    """How RVC's `cmb_spectrogram_to_wave` brings band `index`'s running sum up to the next band's rate."""
    return "sinc_fastest" if index == 0 else "scipy"


@dataclass(frozen=True)
class Band:
    """One STFT band of a model-params file (UVR's keys: sr, hl, n_fft, crop_*, lpf_*, hpf_*)."""

    sample_rate: int
    hop_length: int
    n_fft: int
    crop_start: int
    crop_stop: int
    lpf_start: int = 0  # 0: no low-pass on the way back
    lpf_stop: int = 0
    hpf_start: int = 0  # 0: no high-pass on the way back
    hpf_stop: int = 0
    res_type: Resampler = "polyphase"  # how this band is made from the one above it (JSON "res_type")

    @property
    def height(self) -> int:
        return self.crop_stop - self.crop_start


@dataclass(frozen=True)
class BandParams:
    """A whole model-params file: bands low to high, stacked height `bins`, the high-end pre-filter."""

    name: str
    bands: tuple[Band, ...]
    bins: int
    pre_filter_start: int
    pre_filter_stop: int

    @property
    def sample_rate(self) -> int:
        return self.bands[-1].sample_rate

    @property
    def n_fft(self) -> int:
        """What the network is built with (`CascadedASPPNet(n_fft)`): twice the stacked bins."""
        return self.bins * 2

    @property
    def split_bin(self) -> int:
        """Aggressiveness is applied 3x softer below this row (the first band's top)."""
        return self.bands[0].crop_stop

    def validate(self) -> BandParams:
        stacked = sum(b.height for b in self.bands)
        if stacked > self.bins:
            raise ValueError(f"model params {self.name}: the bands stack {stacked} rows, more than bins={self.bins}")
        for b in self.bands:
            if not 0 <= b.crop_start < b.crop_stop <= b.n_fft // 2 + 1:
                raise ValueError(f"model params {self.name}: crop {b.crop_start}:{b.crop_stop} outside n_fft {b.n_fft}")
        for index in range(len(self.bands) - 1):
            lower, upper = self.bands[index], self.bands[index + 1]
            if synthesis_resampler(index) == "sinc_fastest" and lower.sample_rate != upper.sample_rate:
                raise ValueError(f"model params {self.name}: RVC joins the first two bands with libsamplerate's "
                                 f"sinc_fastest, which is only supported here between equal rates (got "
                                 f"{lower.sample_rate} and {upper.sample_rate} Hz)")  # fmt: skip
        return self


def _band(sr: int, hl: int, n_fft: int, crop: tuple[int, int], lpf: tuple[int, int] = (0, 0),
          hpf: tuple[int, int] = (0, 0), res_type: Resampler = "polyphase") -> Band:  # fmt: skip
    return Band(sr, hl, n_fft, crop[0], crop[1], lpf[0], lpf[1], hpf[0], hpf[1], res_type)


# RVC's lib_v5/modelparams/4band_v2.json, used for every non-DeEcho file of uvr5_weights (HP2, HP3, HP5).
# The top band's res_type there ("kaiser_fast") only resamples the file as it is loaded; our input
# arrives at 44.1 kHz already, so it does not apply here.
PARAMS_4BAND_V2 = BandParams(
    name="4band_v2",
    bands=(
        _band(7350, 80, 640, (0, 85), lpf=(25, 53)),
        _band(7350, 80, 320, (4, 87), lpf=(31, 62), hpf=(25, 12)),
        _band(14700, 160, 512, (17, 216), lpf=(139, 210), hpf=(48, 24)),
        _band(44100, 480, 960, (78, 383), hpf=(130, 86)),
    ),
    bins=672,
    pre_filter_start=668,
    pre_filter_stop=672,
).validate()


def resample(wave: np.ndarray, source_rate: int, target_rate: int, res_type: Resampler) -> np.ndarray:
    """[C, T] -> [C, ceil(T * target / source)], as librosa 0.9.1's `resample(res_type=..., fix=True,
    scale=False)`: the same scipy call, then zero-padded or cut to librosa's length, in the input's dtype."""
    if source_rate == target_rate:
        return wave  # librosa returns its input untouched, whatever the res_type
    import scipy.signal

    size = int(np.ceil(wave.shape[-1] * (float(target_rate) / source_rate)))  # librosa's float arithmetic
    if res_type == "polyphase":
        g = math.gcd(source_rate, target_rate)
        out = scipy.signal.resample_poly(wave, target_rate // g, source_rate // g, axis=-1)
    elif res_type == "scipy":
        out = scipy.signal.resample(wave, size, axis=-1)
    else:  # validate() keeps sinc_fastest between equal rates
        raise ValueError(f"resampler {res_type!r} between {source_rate} and {target_rate} Hz needs libsamplerate")
    return fix_length(out, size).astype(wave.dtype)


def fix_length(wave: np.ndarray, size: int) -> np.ndarray:
    """[C, T] -> [C, size]: cut, or padded with zeros at the end (librosa's `util.fix_length`)."""
    if wave.shape[-1] >= size:
        return wave[..., :size]
    return np.pad(wave, [(0, 0)] * (wave.ndim - 1) + [(0, size - wave.shape[-1])])


def whole_hop_length(samples: int, params: BandParams) -> int:
    """How many samples the bands give back for an input of `samples`: up to the last whole hop of the
    top band in the frames every band has (RVC's output length: 440,640 for 441,000)."""
    length = samples
    frames = 1 + length // params.bands[-1].hop_length
    for upper, lower in zip(reversed(params.bands[1:]), reversed(params.bands[:-1])):
        if upper.sample_rate != lower.sample_rate:
            length = int(np.ceil(length * (float(lower.sample_rate) / upper.sample_rate)))
        frames = min(frames, 1 + length // lower.hop_length)
    return params.bands[-1].hop_length * (frames - 1)


def stft(wave: np.ndarray, n_fft: int, hop_length: int) -> np.ndarray:
    """[C, T] float -> complex64 [C, n_fft//2 + 1, 1 + T//hop] (Hann, centred, zero padded)."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
    window = torch.hann_window(n_fft)
    if x.shape[1] <= n_fft // 2:  # torch refuses a centred frame longer than the padded signal
        x = torch.nn.functional.pad(x, (0, n_fft // 2 + 1 - x.shape[1]))
    spec = torch.stft(x, n_fft, hop_length, window=window, center=True, pad_mode="constant", return_complex=True)
    return spec.numpy()


def istft(spec: np.ndarray, hop_length: int) -> np.ndarray:
    """complex [C, F, frames] -> float32 [C, hop * (frames - 1)] (the inverse of `stft`)."""
    import torch

    n_fft = (spec.shape[1] - 1) * 2
    x = torch.from_numpy(np.ascontiguousarray(spec, dtype=np.complex64))
    window = torch.hann_window(n_fft)
    length = hop_length * (spec.shape[2] - 1)
    return torch.istft(x, n_fft, hop_length, window=window, center=True, length=length).numpy()


def band_waves(wave: np.ndarray, params: BandParams) -> list[np.ndarray]:
    """Stereo float32 [2, T] at `params.sample_rate` -> the wave of each band, low band first; each band
    is resampled from the one above it with its own `res_type`, as RVC does."""
    waves: list[np.ndarray] = [np.asarray(wave, dtype=np.float32)]
    for lower, upper in zip(reversed(params.bands[:-1]), reversed(params.bands[1:])):
        waves.append(resample(waves[-1], upper.sample_rate, lower.sample_rate, lower.res_type))
    waves.reverse()
    return waves


def band_spectrograms(wave: np.ndarray, params: BandParams) -> list[np.ndarray]:
    """Stereo [2, T] at `params.sample_rate` -> each band's full STFT, low band first."""
    return [stft(w, b.n_fft, b.hop_length) for w, b in zip(band_waves(wave, params), params.bands)]


def combine(specs: list[np.ndarray], params: BandParams) -> np.ndarray:
    """Band STFTs -> stacked complex64 [2, bins + 1, frames] (crops + the gentle high-end pre-filter)."""
    frames = min(s.shape[2] for s in specs)
    out = np.zeros((2, params.bins + 1, frames), dtype=np.complex64)
    offset = 0
    for spec, band in zip(specs, params.bands):
        out[:, offset : offset + band.height] = spec[:, band.crop_start : band.crop_stop, :frames]
        offset += band.height
    if params.pre_filter_start > 0:
        if len(params.bands) == 1:
            _lowpass(out, params.pre_filter_start, params.pre_filter_stop)
        else:
            previous = 1.0
            for row in range(params.pre_filter_start + 1, params.pre_filter_stop):
                gain = math.pow(10, -(row - params.pre_filter_start) * (3.5 - previous) / 20.0)
                previous = gain
                out[:, row] *= gain
    return out


def _lowpass(spec: np.ndarray, start: int, stop: int) -> None:
    """In place: a linear fade over rows start..stop, silence above."""
    gain = 1.0
    for row in range(start, stop):
        gain -= 1 / (stop - start)
        spec[:, row] *= gain
    spec[:, stop:] = 0


def _highpass(spec: np.ndarray, start: int, stop: int) -> None:
    """In place: a linear fade from row `start` down to `stop`, silence at and below `stop`."""
    gain = 1.0
    for row in range(start, stop, -1):
        gain -= 1 / (start - stop)
        spec[:, row] *= gain
    spec[:, : stop + 1] = 0


def high_end_rows(params: BandParams) -> int:
    """How many rows below the top band's Nyquist the stack does not carry (restored by mirroring)."""
    top = params.bands[-1]
    return (top.n_fft // 2 - top.crop_stop) + (params.pre_filter_stop - params.pre_filter_start)


def input_high_end(top_spec: np.ndarray, params: BandParams) -> np.ndarray:
    """The top band's rows that `high_end_rows` names, taken from the input's STFT."""
    nyquist = params.bands[-1].n_fft // 2
    return top_spec[:, nyquist - high_end_rows(params) : nyquist]


def mirror_high_end(stem: np.ndarray, high_end: np.ndarray, params: BandParams) -> np.ndarray:
    """UVR's "mirroring": the stem's magnitudes just below the cut, flipped, with the input's phase;
    per cell the smaller of that and the input's own high end."""
    rows = high_end.shape[1]
    stop = params.pre_filter_start - 10
    mirror = np.flip(np.abs(stem[:, stop - rows : stop]), 1) * np.exp(1.0j * np.angle(high_end))
    return np.where(np.abs(high_end) <= np.abs(mirror), high_end, mirror)


def to_wave(spec: np.ndarray, params: BandParams, high_end: np.ndarray | None = None) -> np.ndarray:
    """Stacked spectrogram [2, bins + 1, frames] -> stereo float32 [2, hop * (frames - 1)] at
    `params.sample_rate` (top band's hop).

    `high_end` (from `mirror_high_end`) fills the top band's rows above the stack.
    """
    frames = spec.shape[2]
    wave: np.ndarray | None = None
    offset = 0
    last = len(params.bands) - 1
    for index, band in enumerate(params.bands):
        # Zeros where the stack and the high end put nothing. RVC allocates this with np.ndarray and so
        # leaves the top band's Nyquist row uninitialised (it can add a 22.05 kHz tone); we write zeros.
        full = np.zeros((2, band.n_fft // 2 + 1, frames), dtype=np.complex64)
        full[:, band.crop_start : band.crop_stop] = spec[:, offset : offset + band.height]
        offset += band.height
        if index == last:
            if high_end is not None:
                nyquist = band.n_fft // 2
                full[:, nyquist - high_end.shape[1] : nyquist] = high_end
            if band.hpf_start > 0:
                _highpass(full, band.hpf_start, band.hpf_stop - 1)
            piece = istft(full, band.hop_length)
            wave = piece if wave is None else wave + piece
            break
        if index > 0:
            _highpass(full, band.hpf_start, band.hpf_stop - 1)
        _lowpass(full, band.lpf_start, band.lpf_stop)
        piece = istft(full, band.hop_length)
        wave = piece if wave is None else wave + piece
        upper = params.bands[index + 1]
        wave = resample(wave, band.sample_rate, upper.sample_rate, synthesis_resampler(index))
        # RVC adds the next band as is (its lengths agree for its params); this keeps other params aligned
        wave = fix_length(wave, upper.hop_length * (frames - 1))
    assert wave is not None
    return wave
