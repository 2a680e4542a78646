"""Linear and mel spectrograms exactly as RVC's trainer computes them.

Two epsilon pairs exist in the wild: "head" (current RVC main: magnitude eps 2e-7, log clip 2e-6)
and "classic" (the long-lived 20240604 layout: 1e-6 and 1e-5). They differ by up to 0.8 in
log-mel on quiet bins, so the choice is explicit and travels with every cache.

The Slaney mel filterbank is computed here in numpy (same formula as librosa's default
`filters.mel`: Slaney mel scale, Slaney area normalisation, not HTK).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    import torch

    from configs import DataSection

EpsilonMode = Literal["head", "classic"]
EPSILON_MODES: tuple[EpsilonMode, ...] = ("head", "classic")


@dataclass(frozen=True)
class Epsilons:
    magnitude: float  # added to re^2 + im^2 before the square root
    log_clip: float  # mel energies are clamped to this before the log


EPSILONS: dict[str, Epsilons] = {
    "head": Epsilons(magnitude=2e-7, log_clip=2e-6),
    "classic": Epsilons(magnitude=1e-6, log_clip=1e-5),
}


def epsilons(mode: EpsilonMode) -> Epsilons:
    if mode not in EPSILONS:
        raise ValueError(f"unknown mel epsilon mode {mode!r}; expected one of {EPSILON_MODES}")
    return EPSILONS[mode]


# Slaney mel scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above.
_F_SP = 200.0 / 3.0
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def hz_to_mel(freq_hz: np.ndarray) -> np.ndarray:
    freq_hz = np.asarray(freq_hz, dtype=np.float64)
    mels = freq_hz / _F_SP
    high = freq_hz >= _MIN_LOG_HZ
    mels = np.where(
        high,
        _MIN_LOG_MEL + np.log(np.maximum(freq_hz, 1e-12) / _MIN_LOG_HZ) / _LOGSTEP,
        mels,
    )
    return mels


def mel_to_hz(mels: np.ndarray) -> np.ndarray:
    mels = np.asarray(mels, dtype=np.float64)
    freqs = _F_SP * mels
    high = mels >= _MIN_LOG_MEL
    return np.where(high, _MIN_LOG_HZ * np.exp(_LOGSTEP * (mels - _MIN_LOG_MEL)), freqs)


def slaney_mel_filterbank(
    sample_rate: int,
    n_fft: int,
    n_mels: int,
    fmin: float = 0.0,
    fmax: float | None = None,
) -> np.ndarray:
    """Triangular mel filters, area-normalised: float32 [n_mels, n_fft // 2 + 1]."""
    fmax = sample_rate / 2.0 if fmax is None else float(fmax)
    fft_freqs = np.fft.rfftfreq(n_fft, d=1.0 / sample_rate)  # [F]
    mel_edges = np.linspace(hz_to_mel(np.array(fmin)), hz_to_mel(np.array(fmax)), n_mels + 2)
    hz_edges = mel_to_hz(mel_edges)  # [n_mels + 2]
    widths = np.diff(hz_edges)
    ramps = hz_edges[:, None] - fft_freqs[None, :]  # [n_mels + 2, F]
    # Rows are stored as float32 one by one (as librosa does) before the area normalisation.
    weights = np.zeros((n_mels, fft_freqs.size), dtype=np.float32)
    for i in range(n_mels):
        rising = -ramps[i] / widths[i]
        falling = ramps[i + 2] / widths[i + 1]
        weights[i] = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (hz_edges[2 : n_mels + 2] - hz_edges[:n_mels]))[:, None]
    return weights


@dataclass
class MelTransform:
    """Spectrogram settings of one training configuration, with per-device caches of the
    Hann window and the filterbank (kept on the instance, never at module level)."""

    sample_rate: int
    n_fft: int
    hop_length: int
    win_length: int
    n_mels: int
    fmin: float = 0.0
    fmax: float | None = None
    mode: EpsilonMode = "head"
    _windows: dict[tuple[str, str], torch.Tensor] = field(default_factory=dict, repr=False)
    _bases: dict[tuple[str, str], torch.Tensor] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.eps = epsilons(self.mode)

    @classmethod
    def from_data_section(cls, data: DataSection, mode: EpsilonMode = "head") -> MelTransform:
        return cls(
            sample_rate=data.sampling_rate,
            n_fft=data.filter_length,
            hop_length=data.hop_length,
            win_length=data.win_length,
            n_mels=data.n_mel_channels,
            fmin=data.mel_fmin,
            fmax=data.mel_fmax,
            mode=mode,
        )

    @property
    def cache_tag(self) -> str:
        """Names everything a cached spectrogram depends on."""
        return f"{self.mode}-{self.n_fft}-{self.hop_length}-{self.win_length}"

    def _window(self, like: torch.Tensor) -> torch.Tensor:
        import torch

        key = (str(like.dtype), str(like.device))
        if key not in self._windows:
            self._windows[key] = torch.hann_window(self.win_length, dtype=like.dtype, device=like.device)
        return self._windows[key]

    def mel_basis(self, like: torch.Tensor) -> torch.Tensor:
        import torch

        key = (str(like.dtype), str(like.device))
        if key not in self._bases:
            basis = slaney_mel_filterbank(self.sample_rate, self.n_fft, self.n_mels, self.fmin, self.fmax)
            self._bases[key] = torch.from_numpy(basis).to(dtype=like.dtype, device=like.device)
        return self._bases[key]

    def spectrogram(self, wave: torch.Tensor) -> torch.Tensor:
        """Linear magnitude: wave [B, T] -> [B, n_fft // 2 + 1, T // hop]."""
        import torch

        pad = (self.n_fft - self.hop_length) // 2
        padded = torch.nn.functional.pad(wave.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)  # [B, T + 2 pad]
        stft = torch.stft(
            padded,
            self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=self._window(padded),
            center=False,
            normalized=False,
            onesided=True,
            return_complex=True,
        )  # [B, F, frames]
        return torch.sqrt(stft.real.pow(2) + stft.imag.pow(2) + self.eps.magnitude)

    def mel_from_spectrogram(self, spec: torch.Tensor) -> torch.Tensor:
        """Log mel: spec [B, F, frames] -> [B, n_mels, frames]."""
        import torch

        mel = torch.matmul(self.mel_basis(spec), spec)
        return torch.log(torch.clamp(mel, min=self.eps.log_clip))

    def mel(self, wave: torch.Tensor) -> torch.Tensor:
        """Log mel straight from audio: wave [B, T] -> [B, n_mels, T // hop]."""
        return self.mel_from_spectrogram(self.spectrogram(wave))
