"""RVC's RMVPE network: E2E(n_blocks=4, n_gru=1, kernel_size=(2, 2)), a deep U-Net, a BiGRU and a
360-bin pitch salience head.

The attribute names and the nesting of the modules below ARE the rmvpe.pt format (a bare
state_dict): `unet.encoder.layers.0.conv.0.conv.0.weight`, `fc.0.gru.weight_ih_l0`, ...
"""

from __future__ import annotations

import torch
from torch import nn

N_MELS = 128
N_BINS = 360
BN_MOMENTUM = 0.01  # only matters in training; eval uses running statistics


class ConvBlockRes(nn.Module):
    """(conv3x3 -> BN -> ReLU) x 2 plus a residual (1x1 conv with bias when channels change)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(out_channels, momentum=BN_MOMENTUM),
            nn.ReLU(),
            nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(out_channels, momentum=BN_MOMENTUM),
            nn.ReLU(),
        )
        if in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C_in, T, F] -> [B, C_out, T, F]
        residual = self.shortcut(x) if hasattr(self, "shortcut") else x
        return self.conv(x) + residual


class ResEncoderBlock(nn.Module):
    """n_blocks ConvBlockRes, then an average pooling when `kernel_size` is given."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int] | None, n_blocks: int):
        super().__init__()
        self.conv = nn.ModuleList([ConvBlockRes(in_channels, out_channels)])
        for _ in range(n_blocks - 1):
            self.conv.append(ConvBlockRes(out_channels, out_channels))
        self.pool = nn.AvgPool2d(kernel_size=kernel_size) if kernel_size is not None else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for block in self.conv:
            x = block(x)
        if self.pool is None:
            return x, x
        return x, self.pool(x)  # skip [B, C, T, F], pooled [B, C, T/2, F/2]


class Encoder(nn.Module):
    def __init__(
        self, in_channels: int, n_encoders: int, kernel_size: tuple[int, int], n_blocks: int, out_channels: int = 16
    ):
        super().__init__()
        self.bn = nn.BatchNorm2d(in_channels, momentum=BN_MOMENTUM)
        self.layers = nn.ModuleList()
        for _ in range(n_encoders):
            self.layers.append(ResEncoderBlock(in_channels, out_channels, kernel_size, n_blocks))
            in_channels = out_channels
            out_channels *= 2
        self.out_channel = out_channels  # twice the last block's width, as RVC defines it

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.bn(x)
        skips: list[torch.Tensor] = []
        for layer in self.layers:
            skip, x = layer(x)
            skips.append(skip)
        return x, skips


class Intermediate(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, n_inters: int, n_blocks: int):
        super().__init__()
        self.layers = nn.ModuleList([ResEncoderBlock(in_channels, out_channels, None, n_blocks)])
        for _ in range(n_inters - 1):
            self.layers.append(ResEncoderBlock(out_channels, out_channels, None, n_blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)[1]
        return x


class ResDecoderBlock(nn.Module):
    """Transposed conv (x2 up-sampling) -> BN -> ReLU, concatenate the skip, n_blocks ConvBlockRes."""

    def __init__(self, in_channels: int, out_channels: int, stride: tuple[int, int], n_blocks: int):
        super().__init__()
        out_padding = (0, 1) if stride == (1, 2) else (1, 1)
        self.conv1 = nn.Sequential(
            nn.ConvTranspose2d(
                in_channels, out_channels, (3, 3), stride, (1, 1), output_padding=out_padding, bias=False
            ),
            nn.BatchNorm2d(out_channels, momentum=BN_MOMENTUM),
            nn.ReLU(),
        )
        self.conv2 = nn.ModuleList([ConvBlockRes(out_channels * 2, out_channels)])
        for _ in range(n_blocks - 1):
            self.conv2.append(ConvBlockRes(out_channels, out_channels))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)  # [B, C_out, 2T, 2F]
        x = torch.cat((x, skip), dim=1)  # [B, 2 C_out, 2T, 2F]
        for block in self.conv2:
            x = block(x)
        return x


class Decoder(nn.Module):
    def __init__(self, in_channels: int, n_decoders: int, stride: tuple[int, int], n_blocks: int):
        super().__init__()
        self.layers = nn.ModuleList()
        for _ in range(n_decoders):
            out_channels = in_channels // 2
            self.layers.append(ResDecoderBlock(in_channels, out_channels, stride, n_blocks))
            in_channels = out_channels

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        for index, layer in enumerate(self.layers):
            x = layer(x, skips[-1 - index])
        return x


class DeepUnet(nn.Module):
    def __init__(
        self,
        kernel_size: tuple[int, int],
        n_blocks: int,
        en_de_layers: int = 5,
        inter_layers: int = 4,
        in_channels: int = 1,
        en_out_channels: int = 16,
    ):
        super().__init__()
        self.encoder = Encoder(in_channels, en_de_layers, kernel_size, n_blocks, en_out_channels)
        self.intermediate = Intermediate(
            self.encoder.out_channel // 2, self.encoder.out_channel, inter_layers, n_blocks
        )
        self.decoder = Decoder(self.encoder.out_channel, en_de_layers, kernel_size, n_blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, 1, T, 128] -> [B, 16, T, 128]
        x, skips = self.encoder(x)
        x = self.intermediate(x)
        return self.decoder(x, skips)


class BiGRU(nn.Module):
    def __init__(self, input_features: int, hidden_features: int, num_layers: int):
        super().__init__()
        self.gru = nn.GRU(input_features, hidden_features, num_layers=num_layers, batch_first=True, bidirectional=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, F] -> [B, T, 2H]
        return self.gru(x)[0]


class E2E(nn.Module):
    """log-mel [B, 128, T] (T a multiple of 32) -> pitch salience [B, T, 360] in 0..1."""

    def __init__(
        self,
        n_blocks: int = 4,
        n_gru: int = 1,
        kernel_size: tuple[int, int] = (2, 2),
        en_de_layers: int = 5,
        inter_layers: int = 4,
        in_channels: int = 1,
        en_out_channels: int = 16,
    ):
        super().__init__()
        self.unet = DeepUnet(kernel_size, n_blocks, en_de_layers, inter_layers, in_channels, en_out_channels)
        self.cnn = nn.Conv2d(en_out_channels, 3, (3, 3), padding=(1, 1))
        self.fc = nn.Sequential(
            BiGRU(3 * N_MELS, 256, n_gru),
            nn.Linear(512, N_BINS),
            nn.Dropout(0.25),
            nn.Sigmoid(),
        )

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = mel.transpose(-1, -2).unsqueeze(1)  # [B, 1, T, 128]
        x = self.cnn(self.unet(x))  # [B, 3, T, 128]
        x = x.transpose(1, 2).flatten(-2)  # [B, T, 384]
        return self.fc(x)  # [B, T, 360]
