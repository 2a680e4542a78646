"""The UVR5 "VR" network of RVC's uvr5_weights HP2/HP3/HP5 files (UVR's nets_61968KB layout).

Attribute names and nesting ARE the file format: a state dict saved by UVR/RVC loads with
`load_state_dict(strict=True)`. Input is a magnitude spectrogram [B, 2 (stereo), bins + 1, frames],
output the masked magnitude of the stem the model was trained on (same shape).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def crop_center(skip: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cut `skip` [B,C,F,T] to the time length of `target`, centred (encoders can be a frame longer)."""
    extra = skip.shape[3] - target.shape[3]
    if extra == 0:
        return skip
    if extra < 0:
        raise ValueError(f"skip connection shorter than its decoder input: {skip.shape} vs {target.shape}")
    start = extra // 2
    return skip[:, :, :, start : start + target.shape[3]]


class Conv2DBNActiv(nn.Module):
    def __init__(self, nin: int, nout: int, ksize: int = 3, stride: int = 1, pad: int = 1, dilation: int = 1,
                 activ: type[nn.Module] = nn.ReLU) -> None:  # fmt: skip
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(nin, nout, kernel_size=ksize, stride=stride, padding=pad, dilation=dilation, bias=False),
            nn.BatchNorm2d(nout),
            activ(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class SeparableConv2DBNActiv(nn.Module):
    """Depthwise (groups=nin) then pointwise convolution; keys `conv.0`, `conv.1`, `conv.2` (BN)."""

    def __init__(self, nin: int, nout: int, ksize: int = 3, stride: int = 1, pad: int = 1, dilation: int = 1,
                 activ: type[nn.Module] = nn.ReLU) -> None:  # fmt: skip
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(nin, nin, ksize, stride=stride, padding=pad, dilation=dilation, groups=nin, bias=False),
            nn.Conv2d(nin, nout, kernel_size=1, bias=False),
            nn.BatchNorm2d(nout),
            activ(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Encoder(nn.Module):
    def __init__(self, nin: int, nout: int, ksize: int = 3, stride: int = 1, pad: int = 1) -> None:
        super().__init__()
        self.conv1 = Conv2DBNActiv(nin, nout, ksize, 1, pad, activ=nn.LeakyReLU)
        self.conv2 = Conv2DBNActiv(nout, nout, ksize, stride, pad, activ=nn.LeakyReLU)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skip = self.conv1(x)
        return self.conv2(skip), skip


class Decoder(nn.Module):
    def __init__(self, nin: int, nout: int, ksize: int = 3, stride: int = 1, pad: int = 1) -> None:
        super().__init__()
        self.conv = Conv2DBNActiv(nin, nout, ksize, 1, pad)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        if skip is not None:
            x = torch.cat([x, crop_center(skip, x)], dim=1)
        return self.conv(x)


class ASPPModule(nn.Module):
    """Atrous spatial pyramid pooling: a frequency-pooled branch, a 1x1 branch and three dilated ones."""

    def __init__(self, nin: int, nout: int, dilations: tuple[int, int, int] = (4, 8, 16)) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.AdaptiveAvgPool2d((1, None)), Conv2DBNActiv(nin, nin, 1, 1, 0))
        self.conv2 = Conv2DBNActiv(nin, nin, 1, 1, 0)
        self.conv3 = SeparableConv2DBNActiv(nin, nin, 3, 1, dilations[0], dilations[0])
        self.conv4 = SeparableConv2DBNActiv(nin, nin, 3, 1, dilations[1], dilations[1])
        self.conv5 = SeparableConv2DBNActiv(nin, nin, 3, 1, dilations[2], dilations[2])
        self.bottleneck = nn.Sequential(Conv2DBNActiv(nin * 5, nout, 1, 1, 0), nn.Dropout2d(0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, h, w = x.shape
        pooled = F.interpolate(self.conv1(x), size=(h, w), mode="bilinear", align_corners=True)
        out = torch.cat((pooled, self.conv2(x), self.conv3(x), self.conv4(x), self.conv5(x)), dim=1)
        return self.bottleneck(out)


class BaseASPPNet(nn.Module):
    """A 4-level U-Net with ASPP at the bottom; time and frequency both halve per level."""

    def __init__(self, nin: int, ch: int, dilations: tuple[int, int, int] = (4, 8, 16)) -> None:
        super().__init__()
        self.enc1 = Encoder(nin, ch, 3, 2, 1)
        self.enc2 = Encoder(ch, ch * 2, 3, 2, 1)
        self.enc3 = Encoder(ch * 2, ch * 4, 3, 2, 1)
        self.enc4 = Encoder(ch * 4, ch * 8, 3, 2, 1)
        self.aspp = ASPPModule(ch * 8, ch * 16, dilations)
        self.dec4 = Decoder(ch * (8 + 16), ch * 8, 3, 1, 1)
        self.dec3 = Decoder(ch * (4 + 8), ch * 4, 3, 1, 1)
        self.dec2 = Decoder(ch * (2 + 4), ch * 2, 3, 1, 1)
        self.dec1 = Decoder(ch * (1 + 2), ch, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, e1 = self.enc1(x)
        h, e2 = self.enc2(h)
        h, e3 = self.enc3(h)
        h, e4 = self.enc4(h)
        h = self.aspp(h)
        h = self.dec4(h, e4)
        h = self.dec3(h, e3)
        h = self.dec2(h, e2)
        return self.dec1(h, e1)


class CascadedASPPNet(nn.Module):
    """Three cascaded stages (low/high half bands, then full band twice) ending in a sigmoid mask."""

    # Frames dropped on each side of a window: the edges the receptive field cannot see well.
    offset = 128

    def __init__(self, n_fft: int) -> None:
        super().__init__()
        self.stg1_low_band_net = BaseASPPNet(2, 32)
        self.stg1_high_band_net = BaseASPPNet(2, 32)
        self.stg2_bridge = Conv2DBNActiv(34, 16, 1, 1, 0)
        self.stg2_full_band_net = BaseASPPNet(16, 32)
        self.stg3_bridge = Conv2DBNActiv(66, 32, 1, 1, 0)
        self.stg3_full_band_net = BaseASPPNet(32, 64)
        self.out = nn.Conv2d(64, 2, 1, bias=False)
        # Training-only heads, kept because the files hold their weights.
        self.aux1_out = nn.Conv2d(32, 2, 1, bias=False)
        self.aux2_out = nn.Conv2d(32, 2, 1, bias=False)
        self.max_bin = n_fft // 2
        self.output_bin = n_fft // 2 + 1

    def mask(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 2, output_bin, T] magnitude -> sigmoid mask of the same shape."""
        x = x[:, :, : self.max_bin]  # the Nyquist bin is not seen; its mask repeats the last one
        half = x.shape[2] // 2
        aux1 = torch.cat([self.stg1_low_band_net(x[:, :, :half]), self.stg1_high_band_net(x[:, :, half:])], dim=2)
        aux2 = self.stg2_full_band_net(self.stg2_bridge(torch.cat([x, aux1], dim=1)))
        h = self.stg3_full_band_net(self.stg3_bridge(torch.cat([x, aux1, aux2], dim=1)))
        mask = torch.sigmoid(self.out(h))
        return F.pad(mask, (0, 0, 0, self.output_bin - mask.shape[2]), mode="replicate")

    def forward(self, x: torch.Tensor, aggressiveness: float = 0.0, split_bin: int = 0) -> torch.Tensor:
        """Masked magnitude; `aggressiveness` (0..1) sharpens the mask, 3x less below `split_bin`."""
        return sharpen_mask(self.mask(x), aggressiveness, split_bin) * x


def sharpen_mask(mask: torch.Tensor, aggressiveness: float, split_bin: int) -> torch.Tensor:
    """RVC's aggressiveness: mask ** (1 + a/3) below `split_bin`, ** (1 + a) above; a = 0 leaves it."""
    if not aggressiveness:
        return mask
    return torch.cat(
        [mask[:, :, :split_bin] ** (1 + aggressiveness / 3), mask[:, :, split_bin:] ** (1 + aggressiveness)], dim=2
    )
