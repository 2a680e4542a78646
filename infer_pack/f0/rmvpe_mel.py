"""RMVPE's log-mel front end: 16 kHz, n_fft 1024, hop 160, 128 HTK mel bands 30..8000 Hz.

The filterbank is built here in numpy, following the definition librosa uses for
`librosa.filters.mel(sr=16000, n_fft=1024, n_mels=128, fmin=30, fmax=8000, htk=True)` (HTK mel
scale, triangles on the FFT bin frequencies, Slaney area normalisation), which is what RVC stores in
its MelSpectrogram buffer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

SAMPLE_RATE = 16000
N_FFT = 1024
HOP = 160
N_MELS = 128
F_MIN = 30.0
F_MAX = 8000.0
LOG_FLOOR = 1e-5


def hz_to_mel_htk(hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_to_hz_htk(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(
    sample_rate: int = SAMPLE_RATE,
    n_fft: int = N_FFT,
    n_mels: int = N_MELS,
    f_min: float = F_MIN,
    f_max: float = F_MAX,
) -> np.ndarray:
    """Triangular HTK-mel filters with Slaney area normalisation, float32 [n_mels, n_fft // 2 + 1]."""
    fft_hz = np.fft.rfftfreq(n=n_fft, d=1.0 / sample_rate)  # [n_fft // 2 + 1]
    edges_hz = mel_to_hz_htk(np.linspace(hz_to_mel_htk(f_min), hz_to_mel_htk(f_max), n_mels + 2))  # [n_mels + 2]
    widths = np.diff(edges_hz)
    ramps = np.subtract.outer(edges_hz, fft_hz)  # [n_mels + 2, bins]
    weights = np.zeros((n_mels, fft_hz.size), dtype=np.float32)
    for band in range(n_mels):
        rising = -ramps[band] / widths[band]
        falling = ramps[band + 2] / widths[band + 1]
        weights[band] = np.maximum(0.0, np.minimum(rising, falling))
    # Slaney normalisation: every triangle has the same area (applied to the float32 table, like librosa).
    weights *= (2.0 / (edges_hz[2 : n_mels + 2] - edges_hz[:n_mels]))[:, None]
    return weights


def stft_magnitude(audio: torch.Tensor, *, center: bool = True) -> torch.Tensor:
    """|STFT| with a periodic Hann window: [B, samples] -> [B, 513, frames].

    With `center=True` the signal is reflect-padded by n_fft // 2 at both ends, giving
    `samples // 160 + 1` frames (what RVC uses). `center=False` lets a caller pass a slice of an
    already padded signal and get exactly the same frames.
    """
    import torch

    window = torch.hann_window(N_FFT, device=audio.device, dtype=audio.dtype)
    spec = torch.stft(
        audio,
        n_fft=N_FFT,
        hop_length=HOP,
        win_length=N_FFT,
        window=window,
        center=center,
        pad_mode="reflect",
        return_complex=True,
    )
    return torch.sqrt(spec.real.pow(2) + spec.imag.pow(2))


def log_mel(magnitude: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """natural log of the mel energies, floored at 1e-5: [B, 513, T] -> [B, 128, T]."""
    import torch

    return torch.log(torch.clamp(torch.matmul(basis, magnitude), min=LOG_FLOOR))
