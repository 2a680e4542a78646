"""HuBERT content encoder (RVC's `hubert_base.pt`), implemented here without fairseq.

The module tree mirrors fairseq's `HubertModel`, so `state_dict()` names and shapes are those of
the checkpoint (`feature_extractor.conv_layers.0.2.weight`, `encoder.pos_conv.0.weight_g`, ...).
Evaluation only: no masking, no dropout, no padding mask (RVC passes an all-false one).

The forward pass is rearranged for speed without changing the function:
* the conv stack runs time-major ([B, T, C]) as matrix products per kernel tap on strided views
  (no im2col copies), kernel-3 / stride-2 layers with Winograd's F(2,2) on their even samples;
* the GroupNorm after the first conv is folded into that conv: its per-channel mean and variance
  over time follow exactly from the mean and covariance of the input windows, so the stack has no
  global step left and runs in chunks of frames (bounded memory for long inputs);
* the 128-tap positional conv is evaluated by FFT overlap-save (about 1/30 of the multiplies);
* attention uses fused scaled-dot-product attention; GELUs and residual adds work in place;
* layers after the one requested are never run.

`ContentEncoder.extract(wave_16k, version)` gives what RVC feeds its synthesizer: v1 = layer 9
then `final_proj` (256 dims), v2 = layer 12 (768 dims), at 50 frames/s.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from infer_pack.errors import AssetMissingError, ModelFileError, UserInputError
from infer_pack.hubert_format import HubertArch, HubertCheckpoint, read_hubert

Version = Literal["v1", "v2"]
SAMPLE_RATE = 16000
# fairseq's output_layer (1-based) that RVC asks for, per voice model version.
OUTPUT_LAYER: dict[str, int] = {"v1": 9, "v2": 12}
# Frames of conv features computed at once (about 10 s): keeps the 512-channel activations
# of the first convs (about 70 MB) from growing with the input length.
CONV_CHUNK_FRAMES = 512
GROUP_NORM_EPS = 1e-5


def _gelu_(x: torch.Tensor) -> torch.Tensor:
    """Exact (erf) GELU in place: the activations are large and used once."""
    return torch.ops.aten.gelu_(x)


def _derived(owner: nn.Module, key: str, sources: tuple[torch.Tensor, ...], make: Callable[[], Any]) -> Any:
    """A value computed from parameters (re-laid-out or transformed weights), reused across calls.

    Recomputed when a source tensor is modified in place (`load_state_dict`), moved or cast.
    """
    stamp = tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in sources)
    cache: dict[str, tuple[tuple[Any, ...], Any]] = owner.__dict__.setdefault("_derived_cache", {})
    hit = cache.get(key)
    if hit is None or hit[0] != stamp:
        hit = (stamp, make())
        cache[key] = hit
    return hit[1]


class ConvFeatureExtractor(nn.Module):
    """fairseq's "default" extractor: conv -> (GroupNorm on the first layer only) -> GELU.

    Attribute layout `conv_layers.N.{0: conv, 1: dropout, 2: norm or GELU, 3: GELU}` is the file
    format.
    """

    def __init__(self, layers: tuple[tuple[int, int, int], ...], conv_bias: bool) -> None:
        super().__init__()
        self.layers = layers
        self.conv_layers = nn.ModuleList()
        in_channels = 1
        for index, (channels, kernel, stride) in enumerate(layers):
            conv = nn.Conv1d(in_channels, channels, kernel, stride=stride, bias=conv_bias)
            block: list[nn.Module] = [conv, nn.Dropout(0.0)]
            if index == 0:
                block.append(nn.GroupNorm(channels, channels, eps=GROUP_NORM_EPS, affine=True))
            block.append(nn.GELU())
            self.conv_layers.append(nn.Sequential(*block))
            in_channels = channels

    @property
    def hop_samples(self) -> int:
        return math.prod(stride for _, _, stride in self.layers)

    @property
    def receptive_field(self) -> int:
        field = 1
        for _, kernel, stride in reversed(self.layers):
            field = (field - 1) * stride + kernel
        return field

    def _first_layer_affine(self, wave: torch.Tensor) -> torch.Tensor:
        """[B, k + 1, C]: conv 1 followed by its GroupNorm as one affine map of each window.

        GroupNorm with one channel per group normalises each channel over time. Channel c of conv 1
        is w_c . x_t over the input windows x_t, so its mean is w_c . mu and its (biased) variance
        w_c^T Sigma w_c, with mu / Sigma the mean / covariance of the windows (float64 here).
        The last row is the bias, applied through a column of ones appended to the windows.
        """
        conv: nn.Conv1d = self.conv_layers[0][0]  # type: ignore[assignment,index]
        norm: nn.GroupNorm = self.conv_layers[0][2]  # type: ignore[assignment,index]
        _, kernel, stride = self.layers[0]
        precise = torch.float32 if wave.device.type == "mps" else torch.float64  # MPS has no float64
        windows = wave.to(precise).unfold(1, kernel, stride)  # [B, T0, k]
        mean = windows.mean(dim=1)  # [B, k]
        centred = windows - mean[:, None, :]
        covariance = centred.transpose(1, 2) @ centred / windows.shape[1]  # [B, k, k]
        weight = conv.weight.to(precise)[:, 0, :]  # [C, k]
        channel_mean = mean @ weight.t()  # [B, C]
        channel_var = torch.einsum("ck,bkj,cj->bc", weight, covariance, weight).clamp_min(0.0)  # [B, C]
        scale = norm.weight.to(precise) * torch.rsqrt(channel_var + norm.eps)  # [B, C]
        fused_weight = weight.t()[None] * scale[:, None, :]  # [B, k, C]
        fused_bias = norm.bias.to(precise) - channel_mean * scale  # [B, C]; a conv bias cancels out
        return torch.cat([fused_weight, fused_bias[:, None, :]], dim=1).to(conv.weight.dtype)

    def _taps(self, index: int) -> torch.Tensor:
        """Conv `index` weight as [k, C_in, C_out]: one contiguous matrix per kernel tap."""
        conv: nn.Conv1d = self.conv_layers[index][0]  # type: ignore[assignment,index]
        return _derived(self, f"taps{index}", (conv.weight,), lambda: conv.weight.permute(2, 1, 0).contiguous())

    def _conv(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Conv `index` + GELU, time-major: [T, C_in] -> [T', C_out]."""
        conv: nn.Conv1d = self.conv_layers[index][0]  # type: ignore[assignment,index]
        _, kernel, stride = self.layers[index]
        taps = self._taps(index)  # [k, C_in, C_out]
        frames = (x.shape[0] - kernel) // stride + 1
        if kernel == stride:
            # Windows do not overlap: the input reshaped to [T', k * C_in] is the im2col matrix.
            windows = x[: frames * kernel].reshape(frames, kernel * x.shape[1])
            out = windows @ taps.reshape(kernel * x.shape[1], -1)
        elif (kernel, stride) == (3, 2) and frames >= 2:
            out = self._conv3_stride2(index, x, frames)
        else:
            span = stride * (frames - 1) + 1
            # out[t] = sum_j x[stride*t + j] @ W_j: strided row views, so no im2col copy.
            out = x[0:span:stride] @ taps[0]
            for tap in range(1, kernel):
                out.addmm_(x[tap : tap + span : stride], taps[tap])
        if conv.bias is not None:
            out += conv.bias
        return _gelu_(out)

    def _conv3_stride2(self, index: int, x: torch.Tensor, frames: int) -> torch.Tensor:
        """Kernel 3 / stride 2 conv (no bias, no GELU) with 5 matrix products per 2 outputs instead of 6.

        y[t] = x[2t] W0 + x[2t+1] W1 + x[2t+2] W2. The even samples form a kernel-2 stride-1 conv
        (W0, W2), computed pairwise with Winograd's F(2,2): with d0, d1, d2 = x[4p], x[4p+2], x[4p+4],
          y[2p]   = (d0 - d1) W0 + d1 (W0 + W2) + x[4p+1] W1
          y[2p+1] = (d2 - d1) W2 + d1 (W0 + W2) + x[4p+3] W1.
        """
        conv: nn.Conv1d = self.conv_layers[index][0]  # type: ignore[assignment,index]
        taps = self._taps(index)  # [3, C_in, C_out]
        summed = _derived(self, f"winograd{index}", (conv.weight,), lambda: taps[0] + taps[2])  # [C_in, C_out]
        pairs = frames // 2
        out = x.new_empty(frames, taps.shape[2])  # [T', C_out]
        torch.mm(x[1 : 4 * pairs : 2], taps[1], out=out[: 2 * pairs])  # odd samples, all 2P outputs
        middle = x[2 : 4 * pairs + 1 : 4]  # d1 [P, C_in]
        shared = middle @ summed  # [P, C_out]
        out[0 : 2 * pairs : 2].addmm_(x[0 : 4 * pairs - 3 : 4] - middle, taps[0])
        out[1 : 2 * pairs : 2].addmm_(x[4 : 4 * pairs + 1 : 4] - middle, taps[2])
        out[: 2 * pairs].view(pairs, 2, -1).add_(shared[:, None, :])  # both outputs of each pair
        if frames % 2:
            last = frames - 1
            out[last] = x[2 * last : 2 * last + 3].reshape(1, -1) @ taps.reshape(-1, taps.shape[2])
        return out

    def _run_stretch(self, wave: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
        """Conv stack on one stretch of samples of one item: [N] -> [T, C]."""
        _, kernel, stride = self.layers[0]
        windows = wave.unfold(0, kernel, stride)  # [T0, k]
        windows = torch.cat([windows, windows.new_ones(windows.shape[0], 1)], dim=1)  # [T0, k + 1]
        x = _gelu_(windows @ first)  # [T0, C]
        for index in range(1, len(self.layers)):
            x = self._conv(index, x)
        return x

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """[B, N] waveform -> [B, T, C] features, T = (N - 400) // 320 + 1 for HuBERT Base."""
        hop, field = self.hop_samples, self.receptive_field
        total = (wave.shape[1] - field) // hop + 1
        first = self._first_layer_affine(wave)  # [B, k + 1, C]
        outputs = []
        for item in range(wave.shape[0]):
            chunks = []
            # Frame f sees samples [hop*f, hop*f + field): every layer's stride divides hop, so a
            # stretch starting at hop*f gives exactly frames f, f+1, ... of the whole input.
            for start in range(0, total, CONV_CHUNK_FRAMES):
                stop = min(start + CONV_CHUNK_FRAMES, total)
                samples = wave[item, hop * start : hop * (stop - 1) + field]
                chunks.append(self._run_stretch(samples, first[item]))
            outputs.append(torch.cat(chunks) if len(chunks) > 1 else chunks[0])
        return torch.stack(outputs)


class PositionalConv(nn.Module):
    """Weight-normed grouped conv (magnitude over dim 2) with fairseq's SamePad for even kernels.

    Holds `weight_g` / `weight_v` directly (the old `torch.nn.utils.weight_norm` names in the file).
    Evaluated by FFT overlap-save: the kernel (128 taps) is long, so multiplying spectra per
    frequency costs a small fraction of the direct convolution.
    """

    def __init__(self, channels: int, kernel: int, groups: int) -> None:
        super().__init__()
        self.kernel = kernel
        self.groups = groups
        self.bias = nn.Parameter(torch.zeros(channels))  # first: weight_norm re-registers g / v after it
        self.weight_g = nn.Parameter(torch.ones(1, 1, kernel))
        self.weight_v = nn.Parameter(torch.zeros(channels, channels // groups, kernel))

    def weight(self) -> torch.Tensor:
        """weight_g * weight_v / ||weight_v|| in float64 on the CPU, the norm taken over dims 0 and 1 per tap."""
        v = self.weight_v.detach().cpu().double()
        norm = torch.linalg.vector_norm(v, dim=(0, 1), keepdim=True)  # [1, 1, K]
        return v * (self.weight_g.detach().cpu().double() / norm)

    def _block_size(self) -> int:
        """FFT length: a power of two of at least twice the kernel."""
        return 1 << max(8, (2 * self.kernel - 1).bit_length())

    def _spectrum(self) -> torch.Tensor:
        """[G, F, C_out/G, C_in/G] conjugate kernel spectrum (complex64), cached."""

        def make() -> torch.Tensor:
            weight = self.weight()  # [C, C/G, K] float64
            channels, group_in, _ = weight.shape
            spectrum = torch.fft.rfft(weight, n=self._block_size(), dim=-1).conj()  # [C, C/G, F]
            spectrum = spectrum.view(self.groups, channels // self.groups, group_in, -1)
            return spectrum.permute(0, 3, 1, 2).to(torch.complex64).contiguous().to(self.weight_v.device)

        return _derived(self, "spectrum", (self.weight_g, self.weight_v), make)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, T] -> [B, C, T]: y[t] = sum_j w[j] x[t + j - K//2] (zero outside the input).

        With padding K//2 an even kernel yields one extra step, which fairseq's SamePad drops;
        computing exactly T outputs is the same thing.
        """
        batch, channels, frames = x.shape
        size = self._block_size()
        valid = size - self.kernel + 1  # outputs per block free of circular wrap-around
        blocks = -(-frames // valid)
        left = self.kernel // 2
        right = blocks * valid + self.kernel - 1 - frames - left
        padded = F.pad(x.float(), (left, right))  # [B, C, blocks * valid + K - 1]
        spectra = torch.fft.rfft(padded.unfold(2, size, valid), dim=-1)  # [B, C, blocks, F]
        bins = spectra.shape[-1]
        group_in = channels // self.groups
        spectra = spectra.view(batch, self.groups, group_in, blocks, bins).permute(0, 1, 4, 2, 3)  # [B, G, F, Ci, n]
        product = torch.matmul(self._spectrum(), spectra)  # [B, G, F, Co, n]
        product = product.permute(0, 1, 3, 4, 2).reshape(batch, channels, blocks, bins)
        y = torch.fft.irfft(product, n=size, dim=-1)[..., :valid]  # [B, C, blocks, valid]
        y = y.reshape(batch, channels, blocks * valid)[:, :, :frames]
        return (y + self.bias.float()[:, None]).to(x.dtype)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.q_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, E] -> [B, T, E]; no mask (RVC's padding mask is all false)."""
        batch, frames, dim = x.shape
        head_dim = dim // self.heads

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, frames, self.heads, head_dim).transpose(1, 2)  # [B, H, T, D]

        q = heads(self.q_proj(x))
        k = heads(self.k_proj(x))
        v = heads(self.v_proj(x))
        # fairseq scales q by D^-0.5 before q.k; SDPA applies the same scale.
        attended = F.scaled_dot_product_attention(q, k, v)  # [B, H, T, D]
        return self.out_proj(attended.transpose(1, 2).reshape(batch, frames, dim))


class EncoderLayer(nn.Module):
    """Post-LN transformer layer (fairseq `layer_norm_first=False`)."""

    def __init__(self, dim: int, ffn_dim: int, heads: int, eps: float) -> None:
        super().__init__()
        self.self_attn = SelfAttention(dim, heads)
        self.self_attn_layer_norm = nn.LayerNorm(dim, eps=eps)
        self.fc1 = nn.Linear(dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, dim)
        self.final_layer_norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, E] -> [B, T, E]."""
        x = self.self_attn_layer_norm(self.self_attn(x).add_(x))
        hidden = _gelu_(self.fc1(x))  # [B, T, F]
        return self.final_layer_norm(self.fc2(hidden).add_(x))


class TransformerEncoder(nn.Module):
    def __init__(self, arch: HubertArch) -> None:
        super().__init__()
        self.pos_conv = nn.Sequential(PositionalConv(arch.embed_dim, arch.conv_pos, arch.conv_pos_groups))
        self.layers = nn.ModuleList(
            EncoderLayer(arch.embed_dim, arch.ffn_dim, arch.attention_heads, arch.layer_norm_eps)
            for _ in range(arch.encoder_layers)
        )
        self.layer_norm = nn.LayerNorm(arch.embed_dim, eps=arch.layer_norm_eps)

    def forward(self, x: torch.Tensor, output_layer: int) -> torch.Tensor:
        """[B, T, E] -> output of layer `output_layer` (1-based; capped at the layer count)."""
        position = _gelu_(self.pos_conv(x.transpose(1, 2)))  # [B, E, T]
        x = x + position.transpose(1, 2)
        x = self.layer_norm(x)  # post-LN models normalise before the first layer
        for layer in self.layers[: max(0, output_layer)]:
            x = layer(x)
        return x


class HubertModel(nn.Module):
    """fairseq HubertModel at inference. Registration order = the checkpoint's state_dict order."""

    def __init__(self, arch: HubertArch) -> None:
        super().__init__()
        self.arch = arch
        self.mask_emb = nn.Parameter(torch.zeros(arch.embed_dim))  # training only
        if arch.label_rows > 0:
            self.label_embs_concat = nn.Parameter(torch.zeros(arch.label_rows, arch.label_dim))  # training only
        self.feature_extractor = ConvFeatureExtractor(arch.conv_layers, arch.conv_bias)
        # fairseq adds the projection only when the widths differ.
        self.post_extract_proj = nn.Linear(arch.conv_dim, arch.embed_dim) if arch.conv_dim != arch.embed_dim else None
        self.encoder = TransformerEncoder(arch)
        self.layer_norm = nn.LayerNorm(arch.conv_dim, eps=arch.layer_norm_eps)
        self.final_proj = nn.Linear(arch.embed_dim, arch.final_proj_dim) if arch.final_proj_dim > 0 else None

    def forward(self, wave: torch.Tensor, output_layer: int) -> torch.Tensor:
        """[B, N] 16 kHz waveform -> [B, T, E] output of layer `output_layer` (fairseq semantics)."""
        features = self.layer_norm(self.feature_extractor(wave))  # [B, T, C]
        if self.post_extract_proj is not None:
            features = self.post_extract_proj(features)  # [B, T, E]
        return self.encoder(features, output_layer)


class ContentEncoder:
    """A loaded HuBERT in eval mode, ready to turn 16 kHz audio into RVC content features."""

    def __init__(self, model: HubertModel, device: str | torch.device, dtype: torch.dtype, source: str = "") -> None:
        self.model = model.eval()
        self.device = torch.device(device)
        self.dtype = dtype
        self.source = source

    @property
    def arch(self) -> HubertArch:
        return self.model.arch

    def feature_dim(self, version: Version) -> int:
        if version == "v1":
            return self.arch.final_proj_dim
        return self.arch.embed_dim

    def output_layer(self, version: Version) -> int:
        """The layer RVC reads (9 for v1, 12 for v2), capped at the model's layer count as fairseq does."""
        if version not in OUTPUT_LAYER:
            raise UserInputError(f"unknown model version {version!r}; use 'v1' or 'v2'")
        return min(OUTPUT_LAYER[version], self.arch.encoder_layers)

    def extract(self, wave_16k: torch.Tensor, version: Version) -> torch.Tensor:
        """[B, N] float waveform at 16 kHz -> float32 features [B, frames, 256 | 768] at 50 frames/s.

        The waveform is used as given (no normalisation), as RVC does at inference.
        """
        layer = self.output_layer(version)
        if version == "v1" and self.model.final_proj is None:
            raise ModelFileError(
                self.source or "content encoder",
                "this HuBERT has no final_proj, which v1 voice models need",
                "use RVC's hubert_base.pt or a folder that includes final_proj",
            )
        if wave_16k.dim() == 1:
            wave_16k = wave_16k[None]
        if wave_16k.dim() != 2:
            raise UserInputError(f"expected a [batch, samples] waveform, got shape {tuple(wave_16k.shape)}")
        if wave_16k.shape[1] < self.arch.receptive_field:
            raise UserInputError(
                f"audio too short for the content encoder: {wave_16k.shape[1]} samples at 16 kHz, "
                f"need at least {self.arch.receptive_field}"
            )
        with torch.inference_mode():
            wave = wave_16k.to(device=self.device, dtype=self.dtype)
            features = self.model(wave, layer)  # [B, T, E]
            if version == "v1":
                assert self.model.final_proj is not None
                features = self.model.final_proj(features)  # [B, T, 256]
            return features.float()


def build_model(checkpoint: HubertCheckpoint) -> HubertModel:
    """A HubertModel holding the checkpoint's weights (float32); shape mismatches name the file."""
    model = HubertModel(checkpoint.arch)
    expected = model.state_dict()
    state = dict(checkpoint.state)
    # Training-only tensors may be absent (transformers folders drop them); keep the zeros.
    for optional in ("mask_emb", "label_embs_concat"):
        if optional in expected and optional not in state:
            state[optional] = expected[optional]
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(name for name in set(expected) & set(state) if tuple(state[name].shape) != tuple(expected[name].shape))
    if missing or unexpected or wrong:
        details = "; ".join(
            f"{label}: {', '.join(names[:4])}{' ...' if len(names) > 4 else ''}"
            for label, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
            if names
        )
        raise ModelFileError(checkpoint.source, f"weights do not fit the configured HuBERT ({details})")
    model.load_state_dict({name: tensor.float() for name, tensor in state.items()}, strict=True)
    return model


def load_content_encoder(
    path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> ContentEncoder:
    """`hubert_base.pt` (fairseq) or a transformers `hubert_base/` folder -> ContentEncoder.

    float16 weights are upcast; `dtype=torch.bfloat16` runs the network in bfloat16 (the first-layer
    statistics stay in float64).
    """
    path = Path(path)
    if not path.exists():
        raise AssetMissingError(path, "hubert")
    checkpoint = read_hubert(path)
    try:
        model = build_model(checkpoint)
    except ModelFileError as exc:
        raise ModelFileError(path, exc.reason) from None
    model.requires_grad_(False)
    model.to(device=device, dtype=dtype)
    return ContentEncoder(model, device, dtype, source=str(path))
