"""Building blocks of the voice model: LayerNorm, WaveNet stack, HiFi-GAN residual blocks, flow layers.

Attribute names are the state-dict key names of RVC voice files; do not rename them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from infer_pack.commons import (
    apply_weight_norm,
    fused_add_tanh_sigmoid_multiply,
    get_padding,
    remove_weight_norm,
)

LRELU_SLOPE = 0.1


class LayerNorm(nn.Module):
    """LayerNorm over the channel axis of a [B, C, T] tensor (keys `gamma`, `beta`)."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.channels = channels
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.transpose(1, -1)  # [B, T, C]
        x = F.layer_norm(x, (self.channels,), self.gamma, self.beta, self.eps)
        return x.transpose(1, -1)  # [B, C, T]


class WN(nn.Module):
    """Non-causal WaveNet stack with gated activations and optional global conditioning."""

    def __init__(
        self,
        hidden_channels: int,
        kernel_size: int,
        dilation_rate: int,
        n_layers: int,
        gin_channels: int = 0,
        p_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        assert kernel_size % 2 == 1
        self.hidden_channels = hidden_channels
        self.n_layers = n_layers
        self.gin_channels = gin_channels
        # Registration order = parameter order in RVC files: in_layers, res_skip_layers, cond_layer.
        self.in_layers = nn.ModuleList()
        self.res_skip_layers = nn.ModuleList()
        self.drop = nn.Dropout(p_dropout)
        if gin_channels != 0:
            self.cond_layer = apply_weight_norm(
                nn.Conv1d(gin_channels, 2 * hidden_channels * n_layers, 1)
            )
        for i in range(n_layers):
            dilation = dilation_rate**i
            padding = (kernel_size * dilation - dilation) // 2
            self.in_layers.append(
                apply_weight_norm(
                    nn.Conv1d(
                        hidden_channels,
                        2 * hidden_channels,
                        kernel_size,
                        dilation=dilation,
                        padding=padding,
                    )
                )
            )
            # The last layer only feeds the skip output.
            res_skip_channels = (
                2 * hidden_channels if i < n_layers - 1 else hidden_channels
            )
            self.res_skip_layers.append(
                apply_weight_norm(nn.Conv1d(hidden_channels, res_skip_channels, 1))
            )

    def forward(
        self, x: torch.Tensor, x_mask: torch.Tensor, g: torch.Tensor | None = None
    ) -> torch.Tensor:
        # x: [B, H, T], x_mask: [B, 1, T], g: [B, gin, 1]
        output = torch.zeros_like(x)
        hidden = self.hidden_channels
        if g is not None:
            g = self.cond_layer(g)  # [B, 2H * n_layers, 1]
        for i in range(self.n_layers):
            x_in = self.in_layers[i](x)  # [B, 2H, T]
            if g is not None:
                g_l = g[:, i * 2 * hidden : (i + 1) * 2 * hidden, :]
                acts = fused_add_tanh_sigmoid_multiply(x_in, g_l, hidden)
            else:
                acts = torch.tanh(x_in[:, :hidden]) * torch.sigmoid(x_in[:, hidden:])
            acts = self.drop(acts)
            res_skip_acts = self.res_skip_layers[i](acts)
            if i < self.n_layers - 1:
                x = (x + res_skip_acts[:, :hidden]) * x_mask
                output = output + res_skip_acts[:, hidden:]
            else:
                output = output + res_skip_acts
        return output * x_mask

    def remove_weight_norm(self) -> None:
        if self.gin_channels != 0:
            remove_weight_norm(self.cond_layer)
        for layer in [*self.in_layers, *self.res_skip_layers]:
            remove_weight_norm(layer)


def _dilated_convs(channels: int, kernel_size: int, dilations: tuple[int, ...]) -> nn.ModuleList:
    """Weight-normed same-length Conv1d layers, one per dilation (HiFi-GAN residual blocks)."""
    return nn.ModuleList(
        apply_weight_norm(
            nn.Conv1d(channels, channels, kernel_size, 1, dilation=d, padding=get_padding(kernel_size, d))
        )
        for d in dilations
    )


class ResBlock1(nn.Module):
    """HiFi-GAN residual block type 1: three (dilated conv, conv) pairs."""

    def __init__(
        self, channels: int, kernel_size: int = 3, dilation: tuple[int, ...] = (1, 3, 5)
    ) -> None:
        super().__init__()
        self.convs1 = _dilated_convs(channels, kernel_size, dilation[:3])
        self.convs2 = _dilated_convs(channels, kernel_size, (1, 1, 1))

    def forward(
        self, x: torch.Tensor, x_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        for c1, c2 in zip(self.convs1, self.convs2):
            xt = F.leaky_relu(x, LRELU_SLOPE)
            if x_mask is not None:
                xt = xt * x_mask
            xt = c1(xt)
            xt = F.leaky_relu(xt, LRELU_SLOPE)
            if x_mask is not None:
                xt = xt * x_mask
            xt = c2(xt)
            x = xt + x
        if x_mask is not None:
            x = x * x_mask
        return x

    def remove_weight_norm(self) -> None:
        for layer in [*self.convs1, *self.convs2]:
            remove_weight_norm(layer)


class ResBlock2(nn.Module):
    """HiFi-GAN residual block type 2: two dilated convs."""

    def __init__(
        self, channels: int, kernel_size: int = 3, dilation: tuple[int, ...] = (1, 3)
    ) -> None:
        super().__init__()
        self.convs = _dilated_convs(channels, kernel_size, dilation[:2])

    def forward(
        self, x: torch.Tensor, x_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        for conv in self.convs:
            xt = F.leaky_relu(x, LRELU_SLOPE)
            if x_mask is not None:
                xt = xt * x_mask
            x = conv(xt) + x
        if x_mask is not None:
            x = x * x_mask
        return x

    def remove_weight_norm(self) -> None:
        for layer in self.convs:
            remove_weight_norm(layer)


class Flip(nn.Module):
    """Reverses the channel order so the next coupling layer transforms the other half."""

    def forward(
        self,
        x: torch.Tensor,
        x_mask: torch.Tensor,
        g: torch.Tensor | None = None,
        reverse: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = torch.flip(x, [1])
        if reverse:
            return x, None
        return x, torch.zeros(x.size(0), dtype=x.dtype, device=x.device)


class ResidualCouplingLayer(nn.Module):
    """Affine coupling (mean-only in RVC): the second half is shifted by a WaveNet of the first."""

    def __init__(
        self,
        channels: int,
        hidden_channels: int,
        kernel_size: int,
        dilation_rate: int,
        n_layers: int,
        p_dropout: float = 0.0,
        gin_channels: int = 0,
        mean_only: bool = True,
    ) -> None:
        super().__init__()
        assert channels % 2 == 0, "channels should be divisible by 2"
        self.half_channels = channels // 2
        self.mean_only = mean_only
        self.pre = nn.Conv1d(self.half_channels, hidden_channels, 1)
        self.enc = WN(
            hidden_channels,
            kernel_size,
            dilation_rate,
            n_layers,
            gin_channels=gin_channels,
            p_dropout=p_dropout,
        )
        self.post = nn.Conv1d(
            hidden_channels, self.half_channels * (2 - int(mean_only)), 1
        )
        # Zero init makes a fresh flow the identity.
        self.post.weight.data.zero_()
        self.post.bias.data.zero_()

    def forward(
        self,
        x: torch.Tensor,
        x_mask: torch.Tensor,
        g: torch.Tensor | None = None,
        reverse: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        x0, x1 = torch.split(x, [self.half_channels] * 2, 1)  # [B, C/2, T] each
        h = self.pre(x0) * x_mask
        h = self.enc(h, x_mask, g=g)
        stats = self.post(h) * x_mask
        if self.mean_only:
            m = stats
            logs = None
        else:
            m, logs = torch.split(stats, [self.half_channels] * 2, 1)
        if not reverse:
            x1 = (
                m + x1 * torch.exp(logs) * x_mask
                if logs is not None
                else m + x1 * x_mask
            )
            logdet = (
                torch.sum(logs, [1, 2])
                if logs is not None
                else torch.zeros(x.size(0), dtype=x.dtype, device=x.device)
            )
            return torch.cat([x0, x1], 1), logdet
        x1 = (
            (x1 - m) * torch.exp(-logs) * x_mask
            if logs is not None
            else (x1 - m) * x_mask
        )
        return torch.cat([x0, x1], 1), None

    def remove_weight_norm(self) -> None:
        self.enc.remove_weight_norm()
