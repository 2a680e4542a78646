"""The second UVR5 "VR" network: RVC's uvr5_weights VR-DeEcho* files (UVR's nets_new / layers_new layout).

Attribute names and nesting ARE the file format. Unlike `vr_nets.CascadedASPPNet` the LSTM layers
fix the number of frequency rows, so a file only fits the spectrogram size it was trained with
(`n_fft = 4 * nin_lstm`, read from the file). RVC ignores the aggressiveness for these models; so do we.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from infer_pack.separation.vr_nets import Conv2DBNActiv, crop_center


class Encoder(nn.Module):
    """The stride sits in the first convolution here (the other layout strides the second)."""

    def __init__(self, nin: int, nout: int, ksize: int = 3, stride: int = 1, pad: int = 1) -> None:
        super().__init__()
        self.conv1 = Conv2DBNActiv(nin, nout, ksize, stride, pad, activ=nn.LeakyReLU)
        self.conv2 = Conv2DBNActiv(nout, nout, ksize, 1, pad, activ=nn.LeakyReLU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class Decoder(nn.Module):
    def __init__(self, nin: int, nout: int, ksize: int = 3, stride: int = 1, pad: int = 1) -> None:
        super().__init__()
        self.conv1 = Conv2DBNActiv(nin, nout, ksize, 1, pad)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        if skip is not None:
            x = torch.cat([x, crop_center(skip, x)], dim=1)
        return self.conv1(x)


class ASPPModule(nn.Module):
    def __init__(self, nin: int, nout: int, dilations: tuple[tuple[int, int], ...]) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.AdaptiveAvgPool2d((1, None)), Conv2DBNActiv(nin, nout, 1, 1, 0))
        self.conv2 = Conv2DBNActiv(nin, nout, 1, 1, 0)
        # (frequency, time) dilations as padding and dilation alike, as the file's training code
        self.conv3 = Conv2DBNActiv(nin, nout, 3, 1, dilations[0], dilations[0])  # type: ignore[arg-type]
        self.conv4 = Conv2DBNActiv(nin, nout, 3, 1, dilations[1], dilations[1])  # type: ignore[arg-type]
        self.conv5 = Conv2DBNActiv(nin, nout, 3, 1, dilations[2], dilations[2])  # type: ignore[arg-type]
        self.bottleneck = Conv2DBNActiv(nout * 5, nout, 1, 1, 0)
        self.dropout = nn.Dropout2d(0.1)  # inactive in eval; kept because training used it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, h, w = x.shape
        pooled = F.interpolate(self.conv1(x), size=(h, w), mode="bilinear", align_corners=True)
        out = torch.cat((pooled, self.conv2(x), self.conv3(x), self.conv4(x), self.conv5(x)), dim=1)
        return self.dropout(self.bottleneck(out))


class LSTMModule(nn.Module):
    """A 1-channel squeeze of the features, a bidirectional LSTM over frames, back to one channel of rows."""

    def __init__(self, nin_conv: int, nin_lstm: int, nout_lstm: int) -> None:
        super().__init__()
        self.conv = Conv2DBNActiv(nin_conv, 1, 1, 1, 0)
        self.lstm = nn.LSTM(input_size=nin_lstm, hidden_size=nout_lstm // 2, bidirectional=True)
        self.dense = nn.Sequential(nn.Linear(nout_lstm, nin_lstm), nn.BatchNorm1d(nin_lstm), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, rows, frames = x.shape
        h = self.conv(x)[:, 0].permute(2, 0, 1)  # [frames, N, rows]
        h, _ = self.lstm(h)
        h = self.dense(h.reshape(-1, h.shape[-1]))  # [frames * N, rows]
        return h.reshape(frames, n, 1, rows).permute(1, 2, 3, 0)  # [N, 1, rows, frames]


class BaseNet(nn.Module):
    def __init__(self, nin: int, nout: int, nin_lstm: int, nout_lstm: int,
                 dilations: tuple[tuple[int, int], ...] = ((4, 2), (8, 4), (12, 6))) -> None:  # fmt: skip
        super().__init__()
        self.enc1 = Conv2DBNActiv(nin, nout, 3, 1, 1)
        self.enc2 = Encoder(nout, nout * 2, 3, 2, 1)
        self.enc3 = Encoder(nout * 2, nout * 4, 3, 2, 1)
        self.enc4 = Encoder(nout * 4, nout * 6, 3, 2, 1)
        self.enc5 = Encoder(nout * 6, nout * 8, 3, 2, 1)
        self.aspp = ASPPModule(nout * 8, nout * 8, dilations)
        self.dec4 = Decoder(nout * (6 + 8), nout * 6, 3, 1, 1)
        self.dec3 = Decoder(nout * (4 + 6), nout * 4, 3, 1, 1)
        self.dec2 = Decoder(nout * (2 + 4), nout * 2, 3, 1, 1)
        self.lstm_dec2 = LSTMModule(nout * 2, nin_lstm, nout_lstm)
        self.dec1 = Decoder(nout * (1 + 2) + 1, nout * 1, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        e4 = self.enc4(e3)
        e5 = self.enc5(e4)
        h = self.aspp(e5)
        h = self.dec4(h, e4)
        h = self.dec3(h, e3)
        h = self.dec2(h, e2)
        h = torch.cat([h, self.lstm_dec2(h)], dim=1)
        return self.dec1(h, e1)


class CascadedNet(nn.Module):
    """Low/high half bands twice, then the full band; a sigmoid mask of the stem the file was trained on."""

    offset = 64  # frames of context dropped on each side of a window

    def __init__(self, n_fft: int, nout: int = 32, nout_lstm: int = 128) -> None:
        super().__init__()
        self.max_bin = n_fft // 2
        self.output_bin = n_fft // 2 + 1
        self.nin_lstm = self.max_bin // 2
        self.stg1_low_band_net = nn.Sequential(
            BaseNet(2, nout // 2, self.nin_lstm // 2, nout_lstm), Conv2DBNActiv(nout // 2, nout // 4, 1, 1, 0)
        )
        self.stg1_high_band_net = BaseNet(2, nout // 4, self.nin_lstm // 2, nout_lstm // 2)
        self.stg2_low_band_net = nn.Sequential(
            BaseNet(nout // 4 + 2, nout, self.nin_lstm // 2, nout_lstm), Conv2DBNActiv(nout, nout // 2, 1, 1, 0)
        )
        self.stg2_high_band_net = BaseNet(nout // 4 + 2, nout // 2, self.nin_lstm // 2, nout_lstm // 2)
        self.stg3_full_band_net = BaseNet(3 * nout // 4 + 2, nout, self.nin_lstm, nout_lstm)
        self.out = nn.Conv2d(nout, 2, 1, bias=False)
        self.aux_out = nn.Conv2d(3 * nout // 4, 2, 1, bias=False)  # training-only head, in the files

    def mask(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, : self.max_bin]
        half = x.shape[2] // 2
        l1_in, h1_in = x[:, :, :half], x[:, :, half:]
        l1 = self.stg1_low_band_net(l1_in)
        h1 = self.stg1_high_band_net(h1_in)
        aux1 = torch.cat([l1, h1], dim=2)
        l2 = self.stg2_low_band_net(torch.cat([l1_in, l1], dim=1))
        h2 = self.stg2_high_band_net(torch.cat([h1_in, h1], dim=1))
        aux2 = torch.cat([l2, h2], dim=2)
        f3 = self.stg3_full_band_net(torch.cat([x, aux1, aux2], dim=1))
        mask = torch.sigmoid(self.out(f3))
        return F.pad(mask, (0, 0, 0, self.output_bin - mask.shape[2]), mode="replicate")

    def forward(self, x: torch.Tensor, aggressiveness: float = 0.0, split_bin: int = 0) -> torch.Tensor:
        """Masked magnitude; the aggressiveness arguments are accepted and unused, as in RVC."""
        return self.mask(x) * x


def layout_of(state: dict[str, torch.Tensor]) -> tuple[int, int, int]:
    """(n_fft, nout, nout_lstm) of a file in this layout, from its tensor shapes."""
    lstm = state["stg3_full_band_net.lstm_dec2.lstm.weight_ih_l0"]  # [4 * nout_lstm / 2, nin_lstm]
    return 4 * int(lstm.shape[1]), int(state["out.weight"].shape[1]), int(lstm.shape[0]) // 2
