"""Transformer encoder of the content path: relative-position multi-head attention + conv FFN.

Attribute names are RVC's state-dict keys (enc_p.encoder.*).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from infer_pack.commons import building_on_meta
from infer_pack.modules import LayerNorm


class Encoder(nn.Module):
    def __init__(
        self,
        hidden_channels: int,
        filter_channels: int,
        n_heads: int,
        n_layers: int,
        kernel_size: int = 1,
        p_dropout: float = 0.0,
        window_size: int = 10,
    ) -> None:
        super().__init__()
        self.n_layers = n_layers
        self.drop = nn.Dropout(p_dropout)
        self.attn_layers = nn.ModuleList()
        self.norm_layers_1 = nn.ModuleList()
        self.ffn_layers = nn.ModuleList()
        self.norm_layers_2 = nn.ModuleList()
        for _ in range(n_layers):
            self.attn_layers.append(
                MultiHeadAttention(
                    hidden_channels,
                    hidden_channels,
                    n_heads,
                    p_dropout=p_dropout,
                    window_size=window_size,
                )
            )
            self.norm_layers_1.append(LayerNorm(hidden_channels))
            self.ffn_layers.append(
                FFN(
                    hidden_channels,
                    hidden_channels,
                    filter_channels,
                    kernel_size,
                    p_dropout=p_dropout,
                )
            )
            self.norm_layers_2.append(LayerNorm(hidden_channels))

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor) -> torch.Tensor:
        # x: [B, H, T], x_mask: [B, 1, T]
        attn_mask = x_mask.unsqueeze(2) * x_mask.unsqueeze(-1)  # [B, 1, T, T]
        x = x * x_mask
        for i in range(self.n_layers):
            y = self.drop(self.attn_layers[i](x, x, attn_mask))
            x = self.norm_layers_1[i](x + y)
            y = self.drop(self.ffn_layers[i](x, x_mask))
            x = self.norm_layers_2[i](x + y)
        return x * x_mask


class MultiHeadAttention(nn.Module):
    """Self-attention with learned relative-position embeddings shared by all heads (window ±window_size)."""

    def __init__(
        self,
        channels: int,
        out_channels: int,
        n_heads: int,
        p_dropout: float = 0.0,
        window_size: int | None = None,
    ) -> None:
        super().__init__()
        assert channels % n_heads == 0
        self.n_heads = n_heads
        self.window_size = window_size
        self.k_channels = channels // n_heads
        self.conv_q = nn.Conv1d(channels, channels, 1)
        self.conv_k = nn.Conv1d(channels, channels, 1)
        self.conv_v = nn.Conv1d(channels, channels, 1)
        self.conv_o = nn.Conv1d(channels, out_channels, 1)
        self.drop = nn.Dropout(p_dropout)
        if window_size is not None:
            shape = (
                1,
                window_size * 2 + 1,
                self.k_channels,
            )  # one table shared by all heads
            self.emb_rel_k = nn.Parameter(torch.empty(shape))
            self.emb_rel_v = nn.Parameter(torch.empty(shape))
            if not building_on_meta():
                rel_stddev = self.k_channels**-0.5
                nn.init.normal_(self.emb_rel_k, std=rel_stddev)
                nn.init.normal_(self.emb_rel_v, std=rel_stddev)
        nn.init.xavier_uniform_(self.conv_q.weight)
        nn.init.xavier_uniform_(self.conv_k.weight)
        nn.init.xavier_uniform_(self.conv_v.weight)

    def forward(
        self, x: torch.Tensor, c: torch.Tensor, attn_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        q = self.conv_q(x)
        k = self.conv_k(c)
        v = self.conv_v(c)
        return self.conv_o(self.attention(q, k, v, mask=attn_mask))

    def attention(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        b, d, t_s = key.size()
        t_t = query.size(2)
        query = query.view(b, self.n_heads, self.k_channels, t_t).transpose(
            2, 3
        )  # [B, h, Tt, k]
        key = key.view(b, self.n_heads, self.k_channels, t_s).transpose(
            2, 3
        )  # [B, h, Ts, k]
        value = value.view(b, self.n_heads, self.k_channels, t_s).transpose(
            2, 3
        )  # [B, h, Ts, k]

        query = query / math.sqrt(self.k_channels)
        scores = torch.matmul(query, key.transpose(-2, -1))  # [B, h, Tt, Ts]
        if self.window_size is not None:
            key_rel = self._get_relative_embeddings(self.emb_rel_k, t_s)  # [1, 2T-1, k]
            rel_logits = torch.matmul(
                query, key_rel.unsqueeze(0).transpose(-2, -1)
            )  # [B, h, T, 2T-1]
            scores = scores + self._relative_position_to_absolute_position(rel_logits)
        if mask is not None:
            scores = scores.masked_fill(mask == 0, -1e4)
        p_attn = self.drop(F.softmax(scores, dim=-1))  # [B, h, Tt, Ts]
        output = torch.matmul(p_attn, value)  # [B, h, Tt, k]
        if self.window_size is not None:
            relative_weights = self._absolute_position_to_relative_position(
                p_attn
            )  # [B, h, T, 2T-1]
            value_rel = self._get_relative_embeddings(self.emb_rel_v, t_s)
            output = output + torch.matmul(relative_weights, value_rel.unsqueeze(0))
        return output.transpose(2, 3).contiguous().view(b, d, t_t)  # [B, C, Tt]

    def _get_relative_embeddings(
        self, relative_embeddings: torch.Tensor, length: int
    ) -> torch.Tensor:
        """The 2*length-1 embeddings for offsets -(length-1)..(length-1); zero beyond the window.

        Padding by `length` on both sides works for every length without a data-dependent branch,
        so traced/exported graphs stay valid for any number of frames.
        """
        window = self.window_size
        assert window is not None
        padded = F.pad(relative_embeddings, [0, 0, length, length])  # [1, 2w+1+2L, k]
        # Offset 0 sits at row window + length; keep rows for offsets -(L-1)..(L-1).
        return padded[:, window + 1 : window + 2 * length]

    @staticmethod
    def _relative_position_to_absolute_position(x: torch.Tensor) -> torch.Tensor:
        # [B, h, T, 2T-1] -> [B, h, T, T] by the pad-and-reshape skew trick.
        batch, heads, length, _ = x.size()
        x = F.pad(x, [0, 1])
        x_flat = x.view(batch, heads, length * 2 * length)
        x_flat = F.pad(x_flat, [0, length - 1])
        return x_flat.view(batch, heads, length + 1, 2 * length - 1)[
            :, :, :length, length - 1 :
        ]

    @staticmethod
    def _absolute_position_to_relative_position(x: torch.Tensor) -> torch.Tensor:
        # [B, h, T, T] -> [B, h, T, 2T-1]
        batch, heads, length, _ = x.size()
        x = F.pad(x, [0, length - 1])
        x_flat = x.view(batch, heads, length**2 + length * (length - 1))
        x_flat = F.pad(x_flat, [length, 0])
        return x_flat.view(batch, heads, length, 2 * length)[:, :, :, 1:]


class FFN(nn.Module):
    """Two 'same'-padded convolutions with ReLU, masked before each conv."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        filter_channels: int,
        kernel_size: int,
        p_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.conv_1 = nn.Conv1d(in_channels, filter_channels, kernel_size)
        self.conv_2 = nn.Conv1d(filter_channels, out_channels, kernel_size)
        self.drop = nn.Dropout(p_dropout)

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel_size == 1:
            return x
        return F.pad(x, [(self.kernel_size - 1) // 2, self.kernel_size // 2])

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv_1(self._pad(x * x_mask)))
        x = self.drop(x)
        x = self.conv_2(self._pad(x * x_mask))
        return x * x_mask
