"""The RVC voice synthesizer: one class for v1/v2 (content_dim 256/768) with or without pitch (use_f0).

It computes the same function as RVC's SynthesizerTrnMs{256,768}NSFsid[_nono] and has the same
state-dict keys, shapes and parameter order, so RVC voice files, pretrained G files and training
checkpoints (whose optimizer state is indexed by parameter position) load unchanged.

Sub-module attribute names (enc_p, dec, flow, enc_q, emb_g, ...) ARE the file format.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from infer_pack import attentions, modules
from infer_pack.commons import (
    apply_weight_norm,
    embedding,
    rand_slice_segments,
    remove_weight_norm,
    sequence_mask,
    slice_segments,
)
from infer_pack.nsf import SourceModuleHnNSF

if TYPE_CHECKING:
    from configs import RVCConfig

SAMPLE_RATE_TAGS_HZ = {"32k": 32000, "40k": 40000, "48k": 48000}
PRIOR_NOISE_SCALE = 0.66666  # RVC's fixed temperature of the prior sample at inference


def sample_rate_to_hz(sr: int | str) -> int:
    """RVC passes the rate as "40k" to training classes and as 40000 (config[-1]) at inference."""
    if isinstance(sr, str):
        if sr in SAMPLE_RATE_TAGS_HZ:
            return SAMPLE_RATE_TAGS_HZ[sr]
        return int(sr)
    return int(sr)


class TextEncoder(nn.Module):
    """Prior encoder: content features (+ coarse pitch embedding) -> mean and log-std per frame."""

    def __init__(
        self,
        content_dim: int,
        out_channels: int,
        hidden_channels: int,
        filter_channels: int,
        n_heads: int,
        n_layers: int,
        kernel_size: int,
        p_dropout: float,
        use_f0: bool = True,
    ) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.hidden_channels = hidden_channels
        self.emb_phone = nn.Linear(content_dim, hidden_channels)
        self.lrelu = nn.LeakyReLU(0.1, inplace=True)
        if use_f0:
            self.emb_pitch = embedding(256, hidden_channels)  # coarse pitch 1..255
        self.encoder = attentions.Encoder(
            hidden_channels, filter_channels, n_heads, n_layers, kernel_size, p_dropout
        )
        self.proj = nn.Conv1d(hidden_channels, out_channels * 2, 1)

    def forward(
        self, phone: torch.Tensor, pitch: torch.Tensor | None, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # phone: [B, T, content_dim], pitch: [B, T] int, lengths: [B]
        x = self.emb_phone(phone)
        if pitch is not None:
            x = x + self.emb_pitch(pitch)
        x = self.lrelu(x * math.sqrt(self.hidden_channels))  # [B, T, H]
        x = torch.transpose(x, 1, -1)  # [B, H, T]
        x_mask = torch.unsqueeze(sequence_mask(lengths, x.size(2)), 1).to(
            x.dtype
        )  # [B, 1, T]
        x = self.encoder(x * x_mask, x_mask)
        stats = self.proj(x) * x_mask  # [B, 2*out, T]
        m, logs = torch.split(stats, self.out_channels, dim=1)
        return m, logs, x_mask


class PosteriorEncoder(nn.Module):
    """Training-only encoder of the linear spectrogram (enc_q); voice files do not contain it."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden_channels: int,
        kernel_size: int,
        dilation_rate: int,
        n_layers: int,
        gin_channels: int = 0,
    ) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.pre = nn.Conv1d(in_channels, hidden_channels, 1)
        self.enc = modules.WN(
            hidden_channels,
            kernel_size,
            dilation_rate,
            n_layers,
            gin_channels=gin_channels,
        )
        self.proj = nn.Conv1d(hidden_channels, out_channels * 2, 1)

    def forward(
        self, x: torch.Tensor, x_lengths: torch.Tensor, g: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        # x: [B, spec_channels, T]
        x_mask = torch.unsqueeze(sequence_mask(x_lengths, x.size(2)), 1).to(
            x.dtype
        )  # [B, 1, T]
        x = self.pre(x) * x_mask
        x = self.enc(x, x_mask, g=g)
        stats = self.proj(x) * x_mask
        m, logs = torch.split(stats, self.out_channels, dim=1)
        z = (m + torch.randn_like(m) * torch.exp(logs)) * x_mask
        return z, m, logs, x_mask

    def remove_weight_norm(self) -> None:
        self.enc.remove_weight_norm()


class ResidualCouplingBlock(nn.Module):
    """Normalising flow between posterior latent z and prior latent z_p: 4 x (coupling, flip)."""

    def __init__(
        self,
        channels: int,
        hidden_channels: int,
        kernel_size: int,
        dilation_rate: int,
        n_layers: int,
        n_flows: int = 4,
        gin_channels: int = 0,
    ) -> None:
        super().__init__()
        self.flows = nn.ModuleList()
        for _ in range(n_flows):
            self.flows.append(
                modules.ResidualCouplingLayer(
                    channels,
                    hidden_channels,
                    kernel_size,
                    dilation_rate,
                    n_layers,
                    gin_channels=gin_channels,
                    mean_only=True,
                )
            )
            self.flows.append(modules.Flip())

    def forward(
        self,
        x: torch.Tensor,
        x_mask: torch.Tensor,
        g: torch.Tensor | None = None,
        reverse: bool = False,
    ) -> torch.Tensor:
        flows = reversed(self.flows) if reverse else self.flows
        for flow in flows:
            x, _ = flow(x, x_mask, g=g, reverse=reverse)
        return x

    def remove_weight_norm(self) -> None:
        for flow in self.flows[::2]:
            flow.remove_weight_norm()


def _conv_reach(conv: nn.Conv1d) -> int:
    """Input samples on either side of an output sample that a stride-1 Conv1d reads (the larger side)."""
    span = (conv.kernel_size[0] - 1) * conv.dilation[0]
    pad = int(conv.padding[0]) if isinstance(conv.padding, tuple) else 0
    return max(pad, span - pad)


def decoder_context_frames(dec: Generator) -> int:
    """Receptive half-width of `dec` in frames, rounded up, plus one frame of safety."""
    reach = _conv_reach(dec.conv_pre)  # frames
    rate = 1  # samples per frame at the current stage
    for i, up in enumerate(dec.ups):
        k, u, p = up.kernel_size[0], up.stride[0], up.padding[0]
        reach += math.ceil(max(k - 1 - p, p) / u) + 1  # in the stage's input units
        rate *= u
        blocks = dec.resblocks[i * dec.num_kernels : (i + 1) * dec.num_kernels]
        block_reach = max(
            sum(_conv_reach(m) for m in block.modules() if isinstance(m, nn.Conv1d)) for block in blocks
        )
        reach = reach * u + block_reach  # now in samples of this stage
    reach += _conv_reach(dec.conv_post)
    return math.ceil(reach / rate) + 1


class Generator(nn.Module):
    """HiFi-GAN decoder; with `sampling_rate` set it is RVC's NSF variant driven by a sine at f0."""

    def __init__(
        self,
        initial_channel: int,
        resblock: str,
        resblock_kernel_sizes: Sequence[int],
        resblock_dilation_sizes: Sequence[Sequence[int]],
        upsample_rates: Sequence[int],
        upsample_initial_channel: int,
        upsample_kernel_sizes: Sequence[int],
        gin_channels: int = 0,
        sampling_rate: int | None = None,
    ) -> None:
        super().__init__()
        self.num_kernels = len(resblock_kernel_sizes)
        self.num_upsamples = len(upsample_rates)
        self.upp = int(math.prod(upsample_rates))  # output samples per frame
        self.use_nsf = sampling_rate is not None
        # Registration order follows RVC (m_source, noise_convs, conv_pre, ups, resblocks, conv_post, cond).
        if sampling_rate is not None:
            self.m_source = SourceModuleHnNSF(sampling_rate, harmonic_num=0)
            self.noise_convs = nn.ModuleList()
        self.conv_pre = nn.Conv1d(
            initial_channel, upsample_initial_channel, 7, 1, padding=3
        )
        block_cls = modules.ResBlock1 if str(resblock) == "1" else modules.ResBlock2

        self.ups = nn.ModuleList()
        for i, (u, k) in enumerate(zip(upsample_rates, upsample_kernel_sizes)):
            c_cur = upsample_initial_channel // (2 ** (i + 1))
            self.ups.append(
                apply_weight_norm(
                    nn.ConvTranspose1d(
                        upsample_initial_channel // (2**i),
                        c_cur,
                        k,
                        u,
                        padding=(k - u) // 2,
                    )
                )
            )
            if sampling_rate is not None:
                # Brings the sample-rate excitation down to this stage's rate.
                if i + 1 < len(upsample_rates):
                    stride_f0 = int(math.prod(upsample_rates[i + 1 :]))
                    self.noise_convs.append(
                        nn.Conv1d(
                            1,
                            c_cur,
                            kernel_size=stride_f0 * 2,
                            stride=stride_f0,
                            padding=stride_f0 // 2,
                        )
                    )
                else:
                    self.noise_convs.append(nn.Conv1d(1, c_cur, kernel_size=1))

        self.resblocks = nn.ModuleList()
        ch = upsample_initial_channel
        for i in range(len(self.ups)):
            ch = upsample_initial_channel // (2 ** (i + 1))
            for k, d in zip(resblock_kernel_sizes, resblock_dilation_sizes):
                self.resblocks.append(block_cls(ch, k, tuple(d)))
        self.conv_post = nn.Conv1d(ch, 1, 7, 1, padding=3, bias=False)
        if gin_channels != 0:
            self.cond = nn.Conv1d(gin_channels, upsample_initial_channel, 1)

    def excitation(
        self,
        f0: torch.Tensor,
        *,
        excitation_noise: bool = True,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """NSF sine excitation at the output rate: f0 [B, T] Hz -> [B, 1, T*upp] float32."""
        if not self.use_nsf:
            raise ValueError("this generator has no NSF source (a model without pitch)")
        return self.m_source(f0, self.upp, noise=excitation_noise, generator=generator).transpose(1, 2)

    def decode(
        self, x: torch.Tensor, har_source: torch.Tensor | None, g: torch.Tensor | None
    ) -> torch.Tensor:
        """The convolution stack: x [B, inter, T] (+ excitation [B, 1, T*upp]) -> audio [B, 1, T*upp]."""
        if self.use_nsf and har_source is None:
            raise ValueError("this generator needs the excitation (pitch model)")
        if har_source is not None:
            har_source = har_source.to(x.dtype)
        x = self.conv_pre(x)  # [B, C0, T]
        if g is not None:
            x = x + self.cond(g)
        for i in range(self.num_upsamples):
            x = F.leaky_relu(x, modules.LRELU_SLOPE)
            x = self.ups[i](x)  # [B, C_i, T * prod(rates[:i+1])]
            if har_source is not None:
                x = x + self.noise_convs[i](har_source)
            xs = self.resblocks[i * self.num_kernels](x)
            for j in range(1, self.num_kernels):
                xs = xs + self.resblocks[i * self.num_kernels + j](x)
            x = xs / self.num_kernels
        x = F.leaky_relu(x)  # default slope 0.01 here, as in RVC
        x = self.conv_post(x)
        return torch.tanh(x)

    def forward(
        self,
        x: torch.Tensor,
        f0: torch.Tensor | None = None,
        g: torch.Tensor | None = None,
        *,
        excitation_noise: bool = True,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        # x: [B, inter, T], f0: [B, T] Hz (NSF only), g: [B, gin, 1] -> [B, 1, T*upp]
        har_source = None
        if self.use_nsf:
            if f0 is None:
                raise ValueError("this generator needs f0 (pitch model)")
            har_source = self.excitation(f0, excitation_noise=excitation_noise, generator=generator)
        return self.decode(x, har_source, g)

    @property
    def context_frames(self) -> int:
        """Frames on each side that can influence an output frame (the decoder's receptive half-width).

        Decoding a window of frames widened by this much on both sides gives the window's own
        samples exactly as decoding the whole input does (same excitation, sliced).
        """
        return decoder_context_frames(self)

    def remove_weight_norm(self) -> None:
        for layer in self.ups:
            remove_weight_norm(layer)
        for block in self.resblocks:
            block.remove_weight_norm()


class Synthesizer(nn.Module):
    """RVC's generator network. The 18 positional arguments are the stored `config` list."""

    def __init__(
        self,
        spec_channels: int,
        segment_size: int,
        inter_channels: int,
        hidden_channels: int,
        filter_channels: int,
        n_heads: int,
        n_layers: int,
        kernel_size: int,
        p_dropout: float,
        resblock: str,
        resblock_kernel_sizes: Sequence[int],
        resblock_dilation_sizes: Sequence[Sequence[int]],
        upsample_rates: Sequence[int],
        upsample_initial_channel: int,
        upsample_kernel_sizes: Sequence[int],
        spk_embed_dim: int,
        gin_channels: int,
        sr: int | str,
        *,
        content_dim: int = 768,
        use_f0: bool = True,
        posterior: bool = True,
    ) -> None:
        super().__init__()
        if content_dim not in (256, 768):
            raise ValueError(
                f"content_dim must be 256 (v1) or 768 (v2), not {content_dim}"
            )
        self.content_dim = content_dim
        self.use_f0 = use_f0
        self.sampling_rate = sample_rate_to_hz(sr)
        self.segment_size = segment_size
        self.inter_channels = inter_channels
        self.hop_length = int(math.prod(upsample_rates))
        self.config: list = [
            spec_channels,
            segment_size,
            inter_channels,
            hidden_channels,
            filter_channels,
            n_heads,
            n_layers,
            kernel_size,
            p_dropout,
            resblock,
            [int(k) for k in resblock_kernel_sizes],
            [[int(d) for d in ds] for ds in resblock_dilation_sizes],
            [int(u) for u in upsample_rates],
            upsample_initial_channel,
            [int(k) for k in upsample_kernel_sizes],
            spk_embed_dim,
            gin_channels,
            self.sampling_rate,
        ]

        def make_enc_p() -> TextEncoder:
            return TextEncoder(
                content_dim, inter_channels, hidden_channels, filter_channels, n_heads, n_layers, kernel_size,
                float(p_dropout), use_f0=use_f0,
            )  # fmt: skip

        # RVC's 768 classes build their parent and then re-create enc_p, so in v2 the prior
        # encoder's parameters come last; training checkpoints index optimizer state by position.
        if content_dim == 256:
            self.enc_p = make_enc_p()
        self.dec = Generator(
            inter_channels, resblock, resblock_kernel_sizes, resblock_dilation_sizes, upsample_rates,
            upsample_initial_channel, upsample_kernel_sizes, gin_channels=gin_channels,
            sampling_rate=self.sampling_rate if use_f0 else None,
        )  # fmt: skip
        if posterior:
            self.enc_q = PosteriorEncoder(
                spec_channels,
                inter_channels,
                hidden_channels,
                5,
                1,
                16,
                gin_channels=gin_channels,
            )
        self.flow = ResidualCouplingBlock(
            inter_channels, hidden_channels, 5, 1, 3, gin_channels=gin_channels
        )
        self.emb_g = embedding(spk_embed_dim, gin_channels)
        if content_dim != 256:
            self.enc_p = make_enc_p()

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def from_config_list(
        cls, config: Sequence, *, content_dim: int, use_f0: bool, posterior: bool = True
    ) -> Synthesizer:
        """From a voice file's 18-value `config` list (callers override config[-3] from emb_g first)."""
        if len(config) != 18:
            raise ValueError(
                f"a voice config has 18 values, this one has {len(config)}"
            )
        return cls(*config, content_dim=content_dim, use_f0=use_f0, posterior=posterior)

    @classmethod
    def from_rvc_config(
        cls, cfg: RVCConfig, use_f0: bool, *, posterior: bool = True
    ) -> Synthesizer:
        """The training network RVC builds for this configuration."""
        m = cfg.model
        return cls(
            cfg.spec_channels, cfg.segment_frames, m.inter_channels, m.hidden_channels, m.filter_channels,
            m.n_heads, m.n_layers, m.kernel_size, m.p_dropout, m.resblock, m.resblock_kernel_sizes,
            m.resblock_dilation_sizes, m.upsample_rates, m.upsample_initial_channel, m.upsample_kernel_sizes,
            m.spk_embed_dim, m.gin_channels, cfg.sample_rate, content_dim=cfg.content_dim, use_f0=use_f0,
            posterior=posterior,
        )  # fmt: skip

    @property
    def version(self) -> str:
        return "v1" if self.content_dim == 256 else "v2"

    def rvc_config_list(self) -> list:
        """The 18-value config as stored in voice files (index 1 is literally 32 there, like RVC)."""
        config = [*self.config]
        config[1] = 32
        return config

    def remove_weight_norm(self) -> None:
        """Fold weight-normalised layers into plain weights (faster inference). The state dict then no
        longer has the file layout, so do this only on a model used for inference/export."""
        self.dec.remove_weight_norm()
        self.flow.remove_weight_norm()
        if hasattr(self, "enc_q"):
            self.enc_q.remove_weight_norm()

    # -- training ---------------------------------------------------------------------------
    def forward(
        self,
        phone: torch.Tensor,
        phone_lengths: torch.Tensor,
        pitch: torch.Tensor | None,
        pitchf: torch.Tensor | None,
        y: torch.Tensor,
        y_lengths: torch.Tensor,
        ds: torch.Tensor,
    ) -> tuple[
        torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]
    ]:
        """Training step. phone [B,T,D], pitch [B,T] int, pitchf [B,T] Hz, y spec [B,spec,T], ds speaker [B]."""
        if not hasattr(self, "enc_q"):
            raise RuntimeError(
                "this Synthesizer was built without the posterior encoder (inference only)"
            )
        g = self.emb_g(ds).unsqueeze(-1)  # [B, gin, 1]
        m_p, logs_p, x_mask = self.enc_p(
            phone, pitch if self.use_f0 else None, phone_lengths
        )
        z, m_q, logs_q, y_mask = self.enc_q(y, y_lengths, g=g)
        z_p = self.flow(z, y_mask, g=g)
        z_slice, ids_slice = rand_slice_segments(
            z, y_lengths, self.segment_size
        )  # [B, inter, S]
        if self.use_f0:
            assert pitchf is not None
            pitchf_slice = slice_segments(
                pitchf, ids_slice, self.segment_size
            )  # [B, S]
            o = self.dec(z_slice, pitchf_slice, g=g)
        else:
            o = self.dec(z_slice, g=g)
        return o, ids_slice, x_mask, y_mask, (z, z_p, m_p, logs_p, m_q, logs_q)

    # -- inference --------------------------------------------------------------------------
    def infer(
        self,
        phone: torch.Tensor,
        phone_lengths: torch.Tensor,
        pitch: torch.Tensor | None,
        pitchf: torch.Tensor | None,
        sid: torch.Tensor,
        noise_scale: float = PRIOR_NOISE_SCALE,
        *,
        noise: torch.Tensor | None = None,
        excitation_noise: bool = True,
        generator: torch.Generator | None = None,
        keep: tuple[int, int] | None = None,
        window: int | None = None,
        decode: DecodeFn | None = None,
        decode_context: int | None = None,
    ) -> tuple[
        torch.Tensor,
        torch.Tensor,
        tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    ]:
        """Content features -> audio [B, 1, T*hop].

        `noise` ([B, inter_channels, T]) replaces the random prior draw (then scaled by
        noise_scale); `noise_scale=0` skips it. `excitation_noise=False` removes the random part
        of the NSF excitation. With both, the output is deterministic. `generator` (optional) makes
        the random draws from it instead of torch's global generator (repeatable beside other threads).

        `keep=(start, stop)` returns only the audio of frames start..stop-1 ([B, 1, (stop-start)*hop]),
        equal to that part of the full output: the encoder, the flow and the excitation still see
        every frame, but the decoder runs only on the window plus its receptive field.
        `window=n` decodes at most n frames at a time (bounded memory for long inputs), same samples.
        `decode` replaces `self.dec.decode` (the ONNX engine runs the decoder in ONNX Runtime).
        `decode_context` (frames) narrows the context decoded around `keep` below the receptive field
        (cheaper; samples near the edges then differ): streaming crossfades those edges anyway.
        """
        g = self.emb_g(sid).unsqueeze(-1)  # [B, gin, 1]
        if self.use_f0 and (pitch is None or pitchf is None):
            raise ValueError(
                "this voice model uses pitch: pass pitch (coarse) and pitchf (Hz)"
            )
        m_p, logs_p, x_mask = self.enc_p(
            phone, pitch if self.use_f0 else None, phone_lengths
        )  # [B, inter, T]
        if noise is not None:
            z_p = (m_p + torch.exp(logs_p) * noise * noise_scale) * x_mask
        elif noise_scale != 0:
            z_p = (
                m_p
                + torch.exp(logs_p)
                * torch.randn(m_p.shape, dtype=m_p.dtype, device=m_p.device, generator=generator)
                * noise_scale
            ) * x_mask
        else:
            z_p = m_p * x_mask
        z = self.flow(z_p, x_mask, g=g, reverse=True)
        zm = z * x_mask
        har = None
        if self.use_f0:
            har = self.dec.excitation(pitchf, excitation_noise=excitation_noise, generator=generator)
        o = decode_frames(
            decode or self.dec.decode, zm, har, g, upp=self.dec.upp,
            context=self.dec.context_frames if decode_context is None else min(decode_context, self.dec.context_frames),
            keep=keep, window=window,
        )
        return o, x_mask, (z, z_p, m_p, logs_p)


DecodeFn = Callable[[torch.Tensor, "torch.Tensor | None", torch.Tensor], torch.Tensor]


def decode_frames(
    decode: DecodeFn,
    z: torch.Tensor,
    har: torch.Tensor | None,
    g: torch.Tensor,
    *,
    upp: int,
    context: int,
    keep: tuple[int, int] | None = None,
    window: int | None = None,
) -> torch.Tensor:
    """Audio of frames keep[0]..keep[1]-1 of z [B, inter, T] (all frames when keep is None).

    `decode(z_part, har_part, g)` is the decoder (torch or ONNX Runtime). It runs on pieces of at
    most `window` frames (one piece when None), each widened by `context` frames on both sides, so
    every sample equals the whole-input result. The excitation `har` [B, 1, T*upp] is made for the
    whole input first and sliced, keeping its running phase and random draws.
    """
    frames = z.shape[-1]
    first, last = (0, frames) if keep is None else (int(keep[0]), int(keep[1]))
    if not 0 <= first < last <= frames:
        raise ValueError(f"keep={keep} must satisfy 0 <= start < stop <= {frames}")
    if window is not None and window < 1:
        raise ValueError(f"window must be at least 1 frame, got {window}")
    step = window or (last - first)
    pieces = []
    for start in range(first, last, step):
        stop = min(last, start + step)
        lo, hi = max(0, start - context), min(frames, stop + context)
        part = decode(z[:, :, lo:hi], None if har is None else har[:, :, lo * upp : hi * upp], g)
        pieces.append(part[:, :, (start - lo) * upp : (stop - lo) * upp])
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=-1)
