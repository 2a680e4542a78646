"""RVC's multi-period discriminator (training only). Attribute names are the D checkpoint keys."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from infer_pack.commons import apply_weight_norm, get_padding
from infer_pack.modules import LRELU_SLOPE

# Periods of the DiscriminatorP members; index 0 of `discriminators` is always the DiscriminatorS.
PERIODS: dict[str, tuple[int, ...]] = {
    "v1": (2, 3, 5, 7, 11, 17),
    "v2": (2, 3, 5, 7, 11, 17, 23, 37),
}

FeatureMaps = list[torch.Tensor]


def _norm(module: nn.Module, use_spectral_norm: bool) -> nn.Module:
    if use_spectral_norm:
        return nn.utils.spectral_norm(module)
    return apply_weight_norm(module)


class DiscriminatorS(nn.Module):
    """Scale discriminator on the raw waveform: grouped strided 1-D convolutions."""

    def __init__(self, use_spectral_norm: bool = False) -> None:
        super().__init__()
        specs = [  # (in, out, kernel, stride, groups, padding)
            (1, 16, 15, 1, 1, 7),
            (16, 64, 41, 4, 4, 20),
            (64, 256, 41, 4, 16, 20),
            (256, 1024, 41, 4, 64, 20),
            (1024, 1024, 41, 4, 256, 20),
            (1024, 1024, 5, 1, 1, 2),
        ]
        self.convs = nn.ModuleList(
            _norm(nn.Conv1d(i, o, k, s, groups=g, padding=p), use_spectral_norm)
            for i, o, k, s, g, p in specs
        )
        self.conv_post = _norm(nn.Conv1d(1024, 1, 3, 1, padding=1), use_spectral_norm)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, FeatureMaps]:
        # x: [B, 1, T]
        fmap: FeatureMaps = []
        for layer in self.convs:
            x = F.leaky_relu(layer(x), LRELU_SLOPE)
            fmap.append(x)
        x = self.conv_post(x)
        fmap.append(x)
        return torch.flatten(x, 1, -1), fmap


class DiscriminatorP(nn.Module):
    """Period discriminator: the waveform folded into [T/period, period] and 2-D convolved."""

    def __init__(
        self,
        period: int,
        kernel_size: int = 5,
        stride: int = 3,
        use_spectral_norm: bool = False,
    ) -> None:
        super().__init__()
        self.period = period
        pad = (get_padding(kernel_size, 1), 0)
        channels = [1, 32, 128, 512, 1024, 1024]
        convs = []
        for i in range(5):
            step = (stride, 1) if i < 4 else 1
            convs.append(
                _norm(
                    nn.Conv2d(
                        channels[i],
                        channels[i + 1],
                        (kernel_size, 1),
                        step,
                        padding=pad,
                    ),
                    use_spectral_norm,
                )
            )
        self.convs = nn.ModuleList(convs)
        self.conv_post = _norm(
            nn.Conv2d(1024, 1, (3, 1), 1, padding=(1, 0)), use_spectral_norm
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, FeatureMaps]:
        fmap: FeatureMaps = []
        b, c, t = x.shape
        if t % self.period != 0:
            n_pad = self.period - (t % self.period)
            x = F.pad(x, (0, n_pad), "reflect")
            t = t + n_pad
        x = x.view(b, c, t // self.period, self.period)  # [B, 1, T/p, p]
        for layer in self.convs:
            x = F.leaky_relu(layer(x), LRELU_SLOPE)
            fmap.append(x)
        x = self.conv_post(x)
        fmap.append(x)
        return torch.flatten(x, 1, -1), fmap


class MultiPeriodDiscriminator(nn.Module):
    """RVC's MultiPeriodDiscriminator (v1) / MultiPeriodDiscriminatorV2 (v2)."""

    def __init__(
        self, version: Literal["v1", "v2"] = "v2", use_spectral_norm: bool = False
    ) -> None:
        super().__init__()
        if version not in PERIODS:
            raise ValueError(
                f"unknown model version {version!r}; expected 'v1' or 'v2'"
            )
        self.version = version
        discs: list[nn.Module] = [DiscriminatorS(use_spectral_norm=use_spectral_norm)]
        discs += [
            DiscriminatorP(p, use_spectral_norm=use_spectral_norm)
            for p in PERIODS[version]
        ]
        self.discriminators = nn.ModuleList(discs)

    def forward(
        self, y: torch.Tensor, y_hat: torch.Tensor
    ) -> tuple[
        list[torch.Tensor], list[torch.Tensor], list[FeatureMaps], list[FeatureMaps]
    ]:
        """Real and generated waveforms [B, 1, T] -> (y_d_rs, y_d_gs, fmap_rs, fmap_gs)."""
        y_d_rs, y_d_gs, fmap_rs, fmap_gs = [], [], [], []
        for d in self.discriminators:
            y_d_r, fmap_r = d(y)
            y_d_g, fmap_g = d(y_hat)
            y_d_rs.append(y_d_r)
            y_d_gs.append(y_d_g)
            fmap_rs.append(fmap_r)
            fmap_gs.append(fmap_g)
        return y_d_rs, y_d_gs, fmap_rs, fmap_gs
