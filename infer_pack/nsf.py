"""Neural source-filter excitation: a sine at f0 (plus noise) that drives the pitch-aware generator.

The phase arithmetic follows RVC exactly (float32 cumulative sums at frame rate, linear
interpolation of the wrapped phase to find the sample where it wraps, then a float32 running sum
over all output samples), because the audio of a pitch model is sensitive to phase drift.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class SineGen(nn.Module):
    """f0 per frame [B, T] -> sine excitation [B, T*upp, harmonics+1] (no parameters)."""

    def __init__(
        self,
        sampling_rate: int,
        harmonic_num: int = 0,
        sine_amp: float = 0.1,
        noise_std: float = 0.003,
        voiced_threshold: float = 0.0,
    ) -> None:
        super().__init__()
        self.sampling_rate = sampling_rate
        self.harmonic_num = harmonic_num
        self.dim = harmonic_num + 1
        self.sine_amp = sine_amp
        self.noise_std = noise_std
        self.voiced_threshold = voiced_threshold
        # False: RVC's float32 phase arithmetic (bit-for-bit its numbers). True: a float64 running
        # phase reduced mod 1, equal within float32 noise; used for ONNX, where another runtime's
        # interpolation rounding makes RVC's wrap detection fire spuriously and the float32 sum drift.
        self.exact_phase = False

    def _rvc_sine(self, rad_values: torch.Tensor, upp: int) -> torch.Tensor:
        """rad_values [B, T, dim] cycles per sample -> sine [B, T*upp, dim] (RVC's algorithm)."""
        # Phase at frame boundaries (in cycles), interpolated to samples; only used to find the
        # samples where the wrapped phase restarts, so the float32 running sum stays small.
        tmp_over_one = torch.cumsum(rad_values, 1) * upp  # [B, T, dim]
        tmp_over_one = F.interpolate(
            tmp_over_one.transpose(2, 1),
            scale_factor=float(upp),
            mode="linear",
            align_corners=True,
        ).transpose(2, 1)  # [B, T*upp, dim]
        rad_values = F.interpolate(
            rad_values.transpose(2, 1), scale_factor=float(upp), mode="nearest"
        ).transpose(1, 2)
        tmp_over_one = tmp_over_one % 1
        wraps = (tmp_over_one[:, 1:, :] - tmp_over_one[:, :-1, :]) < 0
        cumsum_shift = F.pad(
            wraps.to(rad_values.dtype) * -1.0, [0, 0, 1, 0]
        )  # -1 where the phase wraps
        return (
            torch.sin(torch.cumsum(rad_values + cumsum_shift, dim=1) * 2 * math.pi)
            * self.sine_amp
        )

    def _exact_sine(self, rad_values: torch.Tensor, upp: int) -> torch.Tensor:
        rad_values = F.interpolate(
            rad_values.transpose(2, 1), scale_factor=float(upp), mode="nearest"
        ).transpose(1, 2)
        phase = (torch.cumsum(rad_values.double(), dim=1) % 1).to(
            rad_values.dtype
        )  # [B, T*upp, dim]
        return torch.sin(phase * 2 * math.pi) * self.sine_amp

    def forward(
        self, f0: torch.Tensor, upp: int, *, noise: bool = True, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (sine_waves, uv, noise) all [B, T*upp, dim]. `noise=False` gives the exact noise-free excitation.

        `generator` (optional) supplies the random draws instead of torch's global generator."""
        with torch.no_grad():
            f0 = f0.float().unsqueeze(-1)  # [B, T, 1]
            harmonics = torch.arange(1, self.dim + 1, dtype=f0.dtype, device=f0.device)
            f0_buf = f0 * harmonics  # [B, T, dim]
            rad_values = (
                f0_buf / self.sampling_rate
            ) % 1  # cycles per sample, [B, T, dim]
            if self.dim > 1:
                # Random initial phase for the overtones only; the fundamental starts at phase 0.
                rand_ini = torch.rand(f0_buf.shape[0], self.dim, device=f0.device, generator=generator)
                rand_ini[:, 0] = 0
                rad_values[:, 0, :] = rad_values[:, 0, :] + rand_ini
            if self.exact_phase:
                sine_waves = self._exact_sine(rad_values, upp)
            else:
                sine_waves = self._rvc_sine(rad_values, upp)
            uv = (f0 > self.voiced_threshold).to(f0.dtype)  # [B, T, 1]
            uv = F.interpolate(
                uv.transpose(2, 1), scale_factor=float(upp), mode="nearest"
            ).transpose(2, 1)
            if noise:
                noise_amp = uv * self.noise_std + (1 - uv) * self.sine_amp / 3
                noise_values = noise_amp * torch.randn(
                    sine_waves.shape, dtype=sine_waves.dtype, device=sine_waves.device, generator=generator
                )
            else:
                noise_values = torch.zeros_like(sine_waves)
            sine_waves = sine_waves * uv + noise_values
        return sine_waves, uv, noise_values


class SourceModuleHnNSF(nn.Module):
    """Merges the harmonics with a linear layer + tanh into one excitation channel (key `l_linear`)."""

    def __init__(
        self,
        sampling_rate: int,
        harmonic_num: int = 0,
        sine_amp: float = 0.1,
        add_noise_std: float = 0.003,
        voiced_threshold: float = 0.0,
    ) -> None:
        super().__init__()
        self.l_sin_gen = SineGen(
            sampling_rate, harmonic_num, sine_amp, add_noise_std, voiced_threshold
        )
        self.l_linear = nn.Linear(harmonic_num + 1, 1)
        self.l_tanh = nn.Tanh()

    def forward(
        self, f0: torch.Tensor, upp: int, *, noise: bool = True, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """f0 [B, T] Hz -> excitation [B, T*upp, 1]."""
        sine_wavs, _, _ = self.l_sin_gen(f0, upp, noise=noise, generator=generator)
        sine_wavs = sine_wavs.to(self.l_linear.weight.dtype)
        return self.l_tanh(self.l_linear(sine_wavs))
