"""Band-limited resampling as torchaudio's `transforms.Resample` does it (RVC's realtime resampler).

torchaudio does not load beside our torch, so this is a re-derivation of its default method
("sinc_interp_hann", lowpass_filter_width 6, rolloff 0.99): a windowed-sinc polyphase filter bank
of `new` phases, applied by a strided convolution. Both rates are divided by their gcd first, the
kernel is computed in the dtype RVC asks for (float32), the input is zero padded by `width` on the
left and `width + orig` on the right, and the output is cut to ceil(len * new / orig) samples.
RVC's realtime GUI builds `Resample(orig_freq, new_freq, dtype=torch.float32)`; so do we.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

LOWPASS_FILTER_WIDTH = 6
ROLLOFF = 0.99


class SincResampler:
    """`orig_rate` -> `new_rate` (Hz, integers); call with a float tensor [..., T] or a numpy array [T]."""

    def __init__(self, orig_rate: int, new_rate: int) -> None:
        import torch

        if orig_rate <= 0 or new_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {orig_rate} and {new_rate}")
        gcd = math.gcd(int(orig_rate), int(new_rate))
        self.orig = int(orig_rate) // gcd  # input samples per output period
        self.new = int(new_rate) // gcd  # output samples (filter phases) per period
        base = min(self.orig, self.new) * ROLLOFF  # cut-off in units of the reduced rates
        self.width = math.ceil(LOWPASS_FILTER_WIDTH * self.orig / base)
        dtype = torch.float32
        taps = torch.arange(-self.width, self.width + self.orig, dtype=dtype)[None, None] / self.orig  # [1, 1, K]
        t = torch.arange(0, -self.new, -1, dtype=dtype)[:, None, None] / self.new + taps  # [new, 1, K]
        t *= base
        t = t.clamp_(-LOWPASS_FILTER_WIDTH, LOWPASS_FILTER_WIDTH)
        window = torch.cos(t * math.pi / LOWPASS_FILTER_WIDTH / 2) ** 2  # Hann over +-6 zero crossings
        t *= math.pi
        sinc = torch.where(t == 0, torch.tensor(1.0, dtype=dtype), t.sin() / t)
        self.kernel = sinc * window * (base / self.orig)  # [new, 1, K] float32

    def output_length(self, length: int) -> int:
        return math.ceil(self.new * length / self.orig)

    def __call__(self, audio: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        if self.orig == self.new:
            return audio
        shape = audio.shape
        flat = audio.reshape(-1, shape[-1])  # [N, T]
        padded = F.pad(flat, (self.width, self.width + self.orig))
        out = F.conv1d(padded[:, None], self.kernel.to(flat.dtype), stride=self.orig)  # [N, new, periods]
        out = out.transpose(1, 2).reshape(flat.shape[0], -1)[:, : self.output_length(shape[-1])]
        return out.reshape(*shape[:-1], out.shape[-1]) if len(shape) > 1 else out[0]

    def numpy(self, audio: np.ndarray) -> np.ndarray:
        """float32 numpy [T] -> float32 numpy [ceil(T * new / orig)]."""
        import torch

        return self(torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))).numpy()
