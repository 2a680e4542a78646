"""RoFormer separation (band-split RoPE transformers; MSST's `bs_roformer` and `mel_band_roformer` checkpoints).

The checkpoint is a state dict whose names ARE the file format (`band_split.to_features.K.*`,
`layers.I.{0: time, 1: frequency}.layers.J.{0: attention, 1: feed-forward}.*`, `mask_estimators.S.to_freqs.K.0.*`;
BS-RoFormer ends in `final_norm.gamma`, Mel-band RoFormer has a `norm.gamma` per transformer instead and
overlapping mel bands whose masks are averaged). The model's YAML (beside it, same name) gives the STFT and
chunking; without it the sizes are read from the tensors and MSST's usual STFT (n_fft 2048, hop 441, 44.1 kHz)
is assumed. The stem the YAML names (vocals, usually) comes from a complex mask on the STFT; the other
stem is the mixture minus it, so the two always add up to the input.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from infer_pack.errors import ModelFileError
from infer_pack.progress import CancelToken, ProgressCallback, check, report
from infer_pack.separation.vr import StemPair

MODEL_SUFFIXES = (".ckpt",)


@dataclass(frozen=True)
class RoformerConfig:
    """The `model:` section of an MSST BS-RoFormer YAML (only what inference needs) plus its chunking."""

    dim: int
    depth: int
    freqs_per_bands: tuple[int, ...] = ()  # BS-RoFormer: STFT bins per band, summing to n_fft // 2 + 1
    stereo: bool = True
    num_stems: int = 1
    time_transformer_depth: int = 1
    freq_transformer_depth: int = 1
    linear_transformer_depth: int = 0
    dim_head: int = 64
    heads: int = 8
    ff_mult: int = 4
    mask_estimator_depth: int = 2
    mlp_expansion_factor: int = 4
    stft_n_fft: int = 2048
    stft_hop_length: int = 441
    stft_win_length: int = 2048
    sample_rate: int = 44100
    chunk_size: int = 352800  # samples per model call (8 s)
    num_overlap: int = 4  # chunks overlap by 1 - 1/num_overlap
    instruments: tuple[str, ...] = ("vocals", "other")  # the YAML's training.instruments
    target_instrument: str | None = "vocals"  # one-stem models: what the stem is
    num_bands: int = 0  # > 0: a Mel-band RoFormer with this many mel bands (freqs_per_bands unused)
    # Zero the DC bin of the masked spectrogram before the inverse STFT: MSST's default for both models since
    # its commit of 2025-09-23 (ccc011a, models/bs_roformer/*.py); a YAML's `zero_dc:` is honoured.
    zero_dc: bool = True

    @property
    def vocals_stem(self) -> tuple[int, bool]:
        """(index of the stem to use, whether that stem is the vocals); else it is the accompaniment."""
        if self.num_stems == 1:
            return 0, (self.target_instrument or self.instruments[0]) == "vocals"
        if "vocals" in self.instruments[: self.num_stems]:
            return self.instruments.index("vocals"), True
        return 0, False

    @property
    def channels(self) -> int:
        return 2 if self.stereo else 1


class RMSNorm(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1) * self.scale * self.gamma


class RotaryEmbedding(nn.Module):
    """RoPE with interleaved pairs (rotary_embedding_torch's layout: one `freqs` vector per module)."""

    def __init__(self, dim: int, theta: float = 10000.0) -> None:
        super().__init__()
        self.freqs = nn.Parameter(1.0 / (theta ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim)),
                                  requires_grad=False)  # fmt: skip

    def rotate(self, t: torch.Tensor) -> torch.Tensor:
        """[..., n, d] rotated by position n."""
        n = t.shape[-2]
        angles = torch.arange(n, device=t.device, dtype=torch.float32)[:, None] * self.freqs.float()[None]
        angles = angles.repeat_interleave(2, dim=-1)  # [n, d]: each frequency for a pair of features
        pairs = t.float().unflatten(-1, (-1, 2))
        rotated_half = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
        return (t.float() * angles.cos() + rotated_half * angles.sin()).to(t.dtype)


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        self.net = nn.Sequential(RMSNorm(dim), nn.Linear(dim, dim * mult), nn.GELU(), nn.Dropout(0.0),
                                 nn.Linear(dim * mult, dim), nn.Dropout(0.0))  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, rotary_embed: RotaryEmbedding) -> None:
        super().__init__()
        self.heads = heads
        self.rotary_embed = rotary_embed  # shared by every attention of one axis; stored under each
        self.norm = RMSNorm(dim)
        self.to_qkv = nn.Linear(dim, heads * dim_head * 3, bias=False)
        self.to_gates = nn.Linear(dim, heads)
        self.to_out = nn.Sequential(nn.Linear(heads * dim_head, dim, bias=False), nn.Dropout(0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)  # [B, n, dim]
        q, k, v = self.to_qkv(x).unflatten(-1, (3, self.heads, -1)).permute(2, 0, 3, 1, 4)  # each [B, h, n, d]
        q, k = self.rotary_embed.rotate(q), self.rotary_embed.rotate(k)
        out = F.scaled_dot_product_attention(q, k, v)
        out = out * self.to_gates(x).transpose(1, 2)[..., None].sigmoid()  # a learned gate per head and position
        return self.to_out(out.transpose(1, 2).flatten(2))


class Transformer(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, dim_head: int, ff_mult: int,
                 rotary_embed: RotaryEmbedding, norm_output: bool = False) -> None:  # fmt: skip
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList([Attention(dim, heads, dim_head, rotary_embed), FeedForward(dim, ff_mult)])
            for _ in range(depth)
        )
        self.norm = RMSNorm(dim) if norm_output else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            attention, feed_forward = cast(nn.ModuleList, layer)
            x = attention(x) + x
            x = feed_forward(x) + x
        return self.norm(x)


class BandSplit(nn.Module):
    def __init__(self, dim: int, dim_inputs: tuple[int, ...]) -> None:
        super().__init__()
        self.dim_inputs = dim_inputs
        self.to_features = nn.ModuleList(nn.Sequential(RMSNorm(d), nn.Linear(d, dim)) for d in dim_inputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = x.split(self.dim_inputs, dim=-1)
        return torch.stack([net(part) for part, net in zip(parts, self.to_features)], dim=-2)  # [B, T, bands, dim]


def _mlp(dim_in: int, dim_out: int, dim_hidden: int, depth: int) -> nn.Sequential:
    dims = (dim_in, *((dim_hidden,) * (depth - 1)), dim_out)
    layers: list[nn.Module] = []
    for index, (a, b) in enumerate(itertools.pairwise(dims)):
        layers.append(nn.Linear(a, b))
        if index < len(dims) - 2:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


class MaskEstimator(nn.Module):
    def __init__(self, dim: int, dim_inputs: tuple[int, ...], depth: int, expansion: int) -> None:
        super().__init__()
        self.to_freqs = nn.ModuleList(
            nn.Sequential(_mlp(dim, d * 2, dim * expansion, depth), nn.GLU(dim=-1)) for d in dim_inputs
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([net(band) for band, net in zip(x.unbind(dim=-2), self.to_freqs)], dim=-1)


def _slaney_hz_edges(sample_rate: int, n_mels: int) -> np.ndarray:
    """librosa's default (Slaney) mel scale from 0 to Nyquist: the n_mels + 2 triangle corners in Hz.
    Must agree with train.mel.slaney_mel_filterbank (a test checks it; infer_pack cannot import train)."""
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    top = min_log_mel + np.log((sample_rate / 2) / min_log_hz) / logstep
    mels = np.linspace(0.0, top, n_mels + 2)
    return np.where(mels >= min_log_mel, min_log_hz * np.exp(logstep * (mels - min_log_mel)), f_sp * mels)


def mel_band_membership(sample_rate: int, n_fft: int, num_bands: int) -> np.ndarray:
    """bool [bands, n_fft//2 + 1]: the bins where each mel triangle is positive, first and last bin forced in
    (MSST's Mel-band RoFormer binarises librosa's filter bank the same way)."""
    freqs = np.fft.rfftfreq(n_fft, d=1.0 / sample_rate)
    edges = _slaney_hz_edges(sample_rate, num_bands)
    member = (freqs[None, :] > edges[:-2, None]) & (freqs[None, :] < edges[2:, None])
    member[0, 0] = True
    member[-1, -1] = True
    return member


class BSRoformer(nn.Module):
    """Inference-only RoFormer: STFT -> band split -> time/frequency transformers -> complex masks -> iSTFT.

    With `config.num_bands` > 0 it is the Mel-band variant: bands are overlapping mel ranges gathered
    from the STFT, and each bin's mask is the average of the bands covering it.
    """

    freq_indices: torch.Tensor  # buffers of the Mel-band variant (register_buffer)
    bands_per_freq: torch.Tensor

    def __init__(self, config: RoformerConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        mel = c.num_bands > 0
        time_rotary, freq_rotary = RotaryEmbedding(c.dim_head), RotaryEmbedding(c.dim_head)
        self.layers = nn.ModuleList(
            nn.ModuleList([
                Transformer(c.dim, c.time_transformer_depth, c.heads, c.dim_head, c.ff_mult, time_rotary, mel),
                Transformer(c.dim, c.freq_transformer_depth, c.heads, c.dim_head, c.ff_mult, freq_rotary, mel),
            ])
            for _ in range(c.depth)
        )  # fmt: skip
        if mel:
            member = torch.from_numpy(mel_band_membership(c.sample_rate, c.stft_n_fft, c.num_bands))
            bins = torch.arange(member.shape[1])[None].expand_as(member)[member]  # band by band, ascending
            indices = (bins[:, None] * c.channels + torch.arange(c.channels)).flatten()  # both channels per bin
            self.register_buffer("freq_indices", indices, persistent=False)
            self.register_buffer("bands_per_freq", member.sum(0).repeat_interleave(c.channels), persistent=False)
            band_sizes = member.sum(1).tolist()
        else:
            self.final_norm = RMSNorm(c.dim)
            band_sizes = list(c.freqs_per_bands)
        dim_inputs = tuple(2 * f * c.channels for f in band_sizes)
        self.band_split = BandSplit(c.dim, dim_inputs)
        self.mask_estimators = nn.ModuleList(
            MaskEstimator(c.dim, dim_inputs, c.mask_estimator_depth, c.mlp_expansion_factor) for _ in range(c.num_stems)
        )

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """[B, channels, T] -> the stems [B, stems, channels, T]."""
        c = self.config
        batch, channels, length = audio.shape
        window = torch.hann_window(c.stft_win_length, device=audio.device)
        stft = torch.stft(audio.reshape(-1, length), c.stft_n_fft, c.stft_hop_length, c.stft_win_length, window,
                          return_complex=True)  # fmt: skip  # [B*ch, F, T']
        spec = torch.view_as_real(stft).unflatten(0, (batch, channels))  # [B, ch, F, T', 2]
        spec = spec.permute(0, 2, 1, 3, 4).flatten(1, 2)  # [B, F*ch, T', 2]: channels interleaved per bin
        mel = self.config.num_bands > 0
        bands_in = spec[:, self.freq_indices] if mel else spec  # mel: overlapping bins gathered band by band
        x = self.band_split(bands_in.permute(0, 2, 1, 3).flatten(2))  # [B, T', bands, dim]
        for layer in self.layers:
            time_transformer, freq_transformer = cast(nn.ModuleList, layer)
            frames, bands = x.shape[1], x.shape[2]
            x = time_transformer(x.transpose(1, 2).reshape(batch * bands, frames, -1))  # along time, per band
            x = x.reshape(batch, bands, frames, -1).transpose(1, 2)
            x = freq_transformer(x.reshape(batch * frames, bands, -1)).reshape(batch, frames, bands, -1)
        if not mel:
            x = self.final_norm(x)
        mask = torch.stack([estimator(x) for estimator in self.mask_estimators], dim=1)  # [B, S, T', bins*2]
        mask = torch.view_as_complex(mask.unflatten(-1, (-1, 2)).transpose(2, 3).contiguous())  # [B, S, bins, T']
        complex_spec = torch.view_as_complex(spec.contiguous())  # [B, F*ch, T']
        if mel:  # average the masks of the bands that share a bin
            index = self.freq_indices[None, None, :, None].expand(batch, mask.shape[1], -1, mask.shape[-1])
            summed = torch.zeros(batch, mask.shape[1], *complex_spec.shape[1:], dtype=mask.dtype, device=mask.device)
            mask = summed.scatter_add_(2, index, mask) / self.bands_per_freq[:, None].clamp(min=1)
        masked = complex_spec[:, None] * mask
        masked = masked.unflatten(2, (-1, channels)).transpose(2, 3)  # [B, S, ch, F, T']
        if c.zero_dc:
            masked = masked.index_fill(3, torch.tensor(0, device=masked.device), 0.0)  # the DC bin
        out = torch.istft(masked.flatten(0, 2), c.stft_n_fft, c.stft_hop_length, c.stft_win_length, window,
                          length=length)  # fmt: skip
        return out.reshape(batch, len(self.mask_estimators), channels, length)


_LAYER_KEY = re.compile(r"^layers\.(\d+)\.(\d+)\.layers\.(\d+)\.")


def is_mel_band(state: Mapping[str, Any]) -> bool:
    return "final_norm.gamma" not in state and "layers.0.0.norm.gamma" in state


def config_from_state(state: Mapping[str, torch.Tensor], base: RoformerConfig | None = None) -> RoformerConfig:
    """Sizes read from the tensors; the STFT and chunking from `base` (a YAML) or MSST's usual values."""
    dim = int(state["band_split.to_features.0.1.weight"].shape[0])
    band_inputs: list[int] = []
    while f"band_split.to_features.{len(band_inputs)}.0.gamma" in state:
        band_inputs.append(int(state[f"band_split.to_features.{len(band_inputs)}.0.gamma"].shape[0]))
    depth = time_depth = freq_depth = 0
    for key in state:
        found = _LAYER_KEY.match(key)
        if found:
            layer, axis, index = (int(g) for g in found.groups())
            depth = max(depth, layer + 1)
            if axis == 0:
                time_depth = max(time_depth, index + 1)
            elif axis == 1:
                freq_depth = max(freq_depth, index + 1)
            else:
                raise ValueError("a linear-attention transformer (linear_transformer_depth > 0) is not supported")
    heads = int(state["layers.0.0.layers.0.0.to_gates.weight"].shape[0])
    dim_head = int(state["layers.0.0.layers.0.0.to_qkv.weight"].shape[0]) // (3 * heads)
    stems = 0
    while f"mask_estimators.{stems}.to_freqs.0.0.0.weight" in state:
        stems += 1
    mask_linears = [k for k in state if k.startswith("mask_estimators.0.to_freqs.0.0.") and k.endswith(".weight")]
    channels = base.channels if base else (2 if all(d % 4 == 0 for d in band_inputs) else 1)
    defaults = base or RoformerConfig(dim=dim, depth=depth, freqs_per_bands=())
    n_fft = 2 * (sum(d // (2 * channels) for d in band_inputs) - 1)
    values: dict[str, Any] = {f.name: getattr(defaults, f.name) for f in fields(RoformerConfig)}
    values.update(
        dim=dim, depth=depth, stereo=channels == 2, num_stems=stems, time_transformer_depth=time_depth,
        freq_transformer_depth=freq_depth, dim_head=dim_head, heads=heads,
        freqs_per_bands=tuple(d // (2 * channels) for d in band_inputs),
        ff_mult=int(state["layers.0.0.layers.0.1.net.1.weight"].shape[0]) // dim,
        mask_estimator_depth=len(mask_linears),
        mlp_expansion_factor=int(state["mask_estimators.0.to_freqs.0.0.0.weight"].shape[0]) // dim,
    )  # fmt: skip
    if is_mel_band(state):
        # mel bands overlap, so the bin count is not their sum: the STFT comes from the YAML or the defaults
        values.update(num_bands=len(band_inputs), freqs_per_bands=())
    elif base is None:
        values.update(stft_n_fft=n_fft, stft_win_length=n_fft)
    return RoformerConfig(**values)


def _yaml_loader() -> Any:
    import yaml

    class Loader(yaml.SafeLoader):
        """SafeLoader plus MSST's `!!python/tuple` (a list here): nothing else is constructed."""

    Loader.add_constructor("tag:yaml.org,2002:python/tuple", lambda loader, node: loader.construct_sequence(node))
    return Loader


def read_yaml_config(path: Path) -> RoformerConfig:
    """The MSST YAML's `model`, `audio` and `inference` values that inference uses."""
    import yaml

    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_yaml_loader())  # a SafeLoader subclass
    except (OSError, UnicodeError, yaml.YAMLError) as exc:
        raise ModelFileError(path, f"not a readable model YAML ({str(exc).splitlines()[0][:200]})") from None
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise ModelFileError(path, "it has no `model:` section", "use the YAML that came with the checkpoint")
    model, audio, inference = data["model"], data.get("audio") or {}, data.get("inference") or {}
    training = data.get("training") or {}
    names = {f.name for f in fields(RoformerConfig)}
    values = {k: v for k, v in model.items() if k in names}
    if "freqs_per_bands" in values:
        values["freqs_per_bands"] = tuple(int(v) for v in values["freqs_per_bands"])
    for key in ("chunk_size", "sample_rate"):
        if key in audio:
            values[key] = int(audio[key])
    if "num_overlap" in inference:
        values["num_overlap"] = int(inference["num_overlap"])
    if isinstance(training.get("instruments"), list) and training["instruments"]:
        values["instruments"] = tuple(str(name) for name in training["instruments"])
    if "target_instrument" in training:
        values["target_instrument"] = training["target_instrument"]
    try:
        return RoformerConfig(**values)
    except TypeError as exc:
        raise ModelFileError(path, f"its model section lacks a size ({exc})",
                             "use the YAML that came with the checkpoint") from None  # fmt: skip


class RoformerSeparator:
    """A loaded BS-RoFormer; `separate(stereo)` runs MSST's overlap-add over `chunk_size` pieces."""

    kind = "roformer"

    def __init__(self, net: BSRoformer, path: Path, device: str) -> None:
        self.net = net
        self.path = path
        self.device = device
        self.config = net.config

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    def separate(self, stereo: np.ndarray, progress: ProgressCallback | None = None,
                 cancel: CancelToken | None = None) -> StemPair:  # fmt: skip
        c = self.config
        mix = np.ascontiguousarray(stereo if c.stereo else stereo.mean(axis=0, keepdims=True), dtype=np.float32)
        length = mix.shape[1]
        chunk = c.chunk_size
        step = max(1, chunk // c.num_overlap)
        fade = max(1, chunk // 10)
        border = chunk - step
        # Reflect the edges so the first and last chunks see audio on both sides (MSST's padding).
        pad = border if length > 2 * border and border > 0 else 0
        padded = np.pad(mix, ((0, 0), (pad, pad)), mode="reflect") if pad else mix
        total_length = padded.shape[1]
        starts = list(range(0, total_length, step))  # MSST goes on while a chunk starts inside the audio
        result = np.zeros_like(padded)
        weight = np.zeros(total_length, dtype=np.float32)
        ramp = np.ones(chunk, dtype=np.float32)
        ramp[:fade] = np.linspace(0, 1, fade)
        ramp[-fade:] *= np.linspace(1, 0, fade)
        dtype = next(self.net.parameters()).dtype
        stem_index, is_vocals = c.vocals_stem
        with torch.inference_mode():
            for number, start in enumerate(starts):
                check(cancel)
                piece = padded[:, start : start + chunk]
                n = piece.shape[1]
                if n < chunk:  # the last piece: pad to a whole chunk, reflecting when there is enough audio
                    if n > chunk // 2 + 1:
                        piece = np.pad(piece, ((0, 0), (0, chunk - n)), mode="reflect")
                    else:
                        piece = np.pad(piece, ((0, 0), (0, chunk - n)), mode="constant")
                stems = self.net(torch.from_numpy(piece[None]).to(self.device, dtype))  # [1, S, ch, chunk]
                out = stems[0, stem_index].float().cpu().numpy()
                window = ramp.copy()
                if number == 0:
                    window[:fade] = 1
                if start + step >= total_length:
                    window[-fade:] = 1
                result[:, start : start + n] += out[:, :n] * window[:n]
                weight[start : start + n] += window[:n]
                report(progress, number + 1, len(starts), f"chunk {number + 1}/{len(starts)}")
        stem = (result / np.maximum(weight, 1e-8))[:, pad : pad + length]
        if not c.stereo:  # a mono model hears the channel average; its stem goes to both channels
            stem = np.repeat(stem, 2, axis=0)
        stem = np.ascontiguousarray(stem, dtype=np.float32)
        rest = np.ascontiguousarray(stereo, dtype=np.float32) - stem
        vocals, instrumental = (stem, rest) if is_vocals else (rest, stem)
        return StemPair(vocals=vocals, instrumental=instrumental, sample_rate=c.sample_rate)


def load_roformer_separator(
    path: str | Path, *, device: str = "cpu", config_path: str | Path | None = None
) -> RoformerSeparator:
    """Load an MSST BS-RoFormer checkpoint (+ its YAML beside it, `<name>.yaml`, when present)."""
    from infer_pack.torchio import safe_torch_load

    path = Path(path)
    state = safe_torch_load(path)
    for wrapper in ("state_dict", "model"):  # some trainers nest the weights
        if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping):
            state = state[wrapper]
    if not isinstance(state, Mapping) or "band_split.to_features.0.0.gamma" not in state or not (
        "final_norm.gamma" in state or is_mel_band(state)
    ):
        raise ModelFileError(path, "it is not a RoFormer checkpoint (no band_split and final norm weights)",
                             "pick an MSST bs_roformer or mel_band_roformer .ckpt")  # fmt: skip
    yaml_path = Path(config_path) if config_path else path.with_suffix(".yaml")
    base = read_yaml_config(yaml_path) if yaml_path.is_file() else None
    try:
        config = config_from_state(state, base)
        net = BSRoformer(config)
    except (KeyError, ValueError, ZeroDivisionError, RuntimeError) as exc:
        raise ModelFileError(path, f"its tensors do not describe a BS-RoFormer ({exc})") from None
    if config.num_bands == 0 and sum(config.freqs_per_bands) != config.stft_n_fft // 2 + 1:
        raise ModelFileError(path, f"its bands cover {sum(config.freqs_per_bands)} STFT bins, n_fft {config.stft_n_fft} "
                             f"gives {config.stft_n_fft // 2 + 1}",
                             "use the YAML that came with the checkpoint")  # fmt: skip
    expected = net.state_dict()
    kind = "Mel-band RoFormer" if config.num_bands else "BS-RoFormer"
    rotary = [k for k in expected if k.endswith("rotary_embed.freqs")]
    missing = [k for k in expected if k not in state and k not in rotary]  # RoPE frequencies are fixed anyway
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise ModelFileError(path, f"it does not have the {kind} layout: {len(missing)} key(s) missing "
                             f"(e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})")  # fmt: skip
    for key, ref in expected.items():
        if key in state and tuple(state[key].shape) != tuple(ref.shape):
            raise ModelFileError(path, f"{key} has shape {tuple(state[key].shape)}, this {kind} config needs "
                                 f"{tuple(ref.shape)}", "use the YAML that came with the checkpoint")  # fmt: skip
    loaded = {k: state.get(k, ref).float() for k, ref in expected.items()}
    broken = next((k for k, t in loaded.items() if not bool(torch.isfinite(t).all())), None)
    if broken is not None:
        raise ModelFileError(path, f"{broken} holds NaN or infinite values")
    net.load_state_dict(loaded, strict=True)
    return RoformerSeparator(net.eval().to(device), path, device)
