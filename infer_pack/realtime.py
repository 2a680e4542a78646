"""Streaming voice conversion: fixed-size input blocks in, converted blocks of the same duration out.

The stages are the offline pipeline's (content encoder, f0 estimator, retrieval blend, synthesiser);
what differs is how much of the signal each block sees. The recipe is RVC's realtime one
(`gui_v1.py` + `rtrvc.py`), in 10 ms frames:

    window (16 kHz) = extra context | crossfade | SOLA search | block      (newest samples last)
    returned frames = block + fade + SOLA search, starting after the extra context

  1. the input block (any device rate) is optionally gated (10 ms frames quieter than the silence
     threshold are zeroed), resampled to 16 kHz and pushed into the window;
  2. the content encoder runs over the whole window (context matters to its attention), the
     retrieval blend only over the frames the synthesiser will return;
  3. f0 runs over the newest block + 50 ms only; estimates go into a pitch cache that slides with
     the window (the last two frames of the previous block are re-estimated with more right context);
  4. the synthesiser's prior encoder sees the whole window, its flow the frames from 24 before the
     returned ones (its receptive field, so exact), the excitation and the decoder only the
     returned frames plus `decoder_context_frames` (RVC's `skip_head`: the sine starts there);
  5. the returned audio is resampled to the output rate, aligned with the previous block's tail by
     SOLA (the offset within the search range where the normalised cross-correlation peaks) and
     joined to it by a sin^2 crossfade.

Algorithmic latency (a duplex callback stream): one block to fill the input, one block until the
output callback plays it, plus the fade and the search region that lie beyond the played block:
`2 * block + crossfade + sola_search` (RVC's defaults: 0.25 s, 0.05 s, 0.01 s -> 0.56 s).

Every buffer has a size fixed by the settings, so neither memory nor per-block work grows with the
stream's length. The prior noise of the synthesiser is drawn once per frame of the stream and slides
with the window, so overlapping frames of consecutive blocks get the same draw (steadier seams than
a fresh draw per block); `deterministic=True` drops all randomness.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from infer_pack.decoder_int8 import stream_decoder
from infer_pack.encoder_int8 import int8_encoder
from infer_pack.errors import UserInputError
from infer_pack.pipeline import RETRIEVAL_K, SAMPLE_RATE, WINDOW, protect_unvoiced
from infer_pack.progress import CancelToken, ProgressCallback, check, report
from infer_pack.stream_params import FRAME_S, SILENCE_OFF_DB, StreamSettings
from infer_pack.stream_params import STREAM_F0_METHODS as STREAM_F0_METHODS
from infer_pack.stream_stages import BlockTimes, timed_block

if TYPE_CHECKING:
    import torch

    from infer_pack.pipeline import VoiceConverter
    from infer_pack.rvc_realtime import RVCRealtimeStream

F0_TAIL_SAMPLES = 800  # f0 sees the newest block plus 50 ms (RVC: block_frame_16k + 800)
RMVPE_STEP = 5120  # rmvpe's input is padded to multiples of 32 mel frames; RVC sizes its tail to fit
PRIOR_NOISE_SCALE = 0.66666
GATE_WINDOW_FRAMES = 4  # the silence gate's RMS window: 40 ms, as RVC's realtime GUI
FLOW_CONTEXT_FRAMES = 24  # the flow's receptive half-width (4 couplings x 3 layers x kernel 5): exact beyond it


def _frames(seconds: float) -> int:
    return max(0, round(seconds / FRAME_S))


@dataclass(frozen=True)
class StreamGeometry:
    """Sizes in 10 ms frames derived from the settings (RVC's realtime names in comments)."""

    block: int  # block_frame
    crossfade: int  # crossfade_frame: context between the extra part and the search region
    fade: int  # sola_buffer_frame = min(crossfade, 40 ms): the length of the sin^2 fade
    search: int  # sola_search_frame
    extra: int  # extra_frame = skip_head

    @classmethod
    def of(cls, settings: StreamSettings) -> StreamGeometry:
        crossfade = max(1, _frames(settings.crossfade_time_s))
        return cls(
            block=max(2, _frames(settings.block_time_s)),
            crossfade=crossfade,
            fade=min(crossfade, GATE_WINDOW_FRAMES),
            search=_frames(settings.sola_search_s),
            extra=_frames(settings.extra_time_s),
        )

    @property
    def window(self) -> int:
        """Frames the content encoder and the synthesiser's encoder see per block."""
        return self.extra + self.crossfade + self.search + self.block

    @property
    def returned(self) -> int:
        """Frames decoded per block (return_length)."""
        return self.block + self.fade + self.search

    @property
    def algorithmic_latency_s(self) -> float:
        """Input fill + output wait (one block each) + fade/search region (see the module doc)."""
        return (2 * self.block + self.crossfade + self.search) * FRAME_S


def fade_in_window(n: int) -> np.ndarray:
    """sin^2 from 0 to 1 over n samples (the fade-out is 1 minus it, so the two sum to 1)."""
    return (np.sin(0.5 * np.pi * np.linspace(0.0, 1.0, n)) ** 2).astype(np.float32)


def sola_offset(head: np.ndarray, tail: np.ndarray) -> int:
    """Offset (0..len(head)-len(tail)) where `tail` best matches `head` (normalised cross-correlation).

    `head` is the start of the new block (fade + search samples), `tail` the previous block's
    continuation (fade samples). RVC: argmax of conv(head, tail) / sqrt(conv(head^2, ones) + 1e-8).
    """
    n = tail.shape[0]
    positions = head.shape[0] - n + 1
    if positions <= 1:
        return 0
    windows = np.lib.stride_tricks.sliding_window_view(head.astype(np.float64), n)[:positions]  # [P, n]
    numerator = windows @ tail.astype(np.float64)
    energy = np.sqrt((windows * windows).sum(axis=1) + 1e-8)
    return int(np.argmax(numerator / energy))


def frame_rms(audio: np.ndarray, hop: int, frame: int) -> np.ndarray:
    """RMS of `frame`-sample windows centred every `hop` samples (zero padded), one per hop + 1."""
    padded = np.pad(np.asarray(audio, dtype=np.float64), frame // 2)
    squares = np.concatenate(([0.0], np.cumsum(padded * padded)))
    starts = np.arange(audio.shape[0] // hop + 1) * hop
    return np.sqrt(np.maximum(squares[starts + frame] - squares[starts], 0.0) / frame)


def envelope_mix(source: np.ndarray, source_hop: int, output: np.ndarray, output_hop: int, rate: float) -> np.ndarray:
    """RVC realtime's loudness mix: output * (rms_in / max(rms_out, 1e-3))^(1 - rate) on 40 ms windows."""
    n = output.shape[0]
    positions = np.linspace(0.0, 1.0, n)
    rms_in = frame_rms(source, source_hop, 4 * source_hop)
    rms_out = frame_rms(output, output_hop, 4 * output_hop)
    env_in = np.interp(positions, np.linspace(0.0, 1.0, rms_in.shape[0]), rms_in)
    env_out = np.maximum(np.interp(positions, np.linspace(0.0, 1.0, rms_out.shape[0]), rms_out), 1e-3)
    return (output * np.power(env_in / env_out, 1.0 - rate)).astype(np.float32)


def _resample_exact(audio: np.ndarray, source_rate: int, target_rate: int, length: int) -> np.ndarray:
    """soxr resampling cut or zero-padded to exactly `length` samples (block sizes must not drift)."""
    if source_rate == target_rate:
        out = np.asarray(audio, dtype=np.float32)
    else:
        import soxr

        out = soxr.resample(np.asarray(audio, dtype=np.float32), source_rate, target_rate, quality="HQ")
    if out.shape[0] >= length:
        return np.ascontiguousarray(out[:length], dtype=np.float32)
    return np.pad(out, (0, length - out.shape[0])).astype(np.float32)


def _stretch(values: np.ndarray, length: int, *, nearest: bool = False) -> np.ndarray:
    """Frames [T, ...] resampled to `length` frames along the first axis (linear, or nearest)."""
    source = values.shape[0]
    positions = (np.arange(length) + 0.5) * source / length - 0.5
    if nearest:
        return values[np.clip(np.round(positions).astype(np.int64), 0, source - 1)]
    positions = np.clip(positions, 0.0, source - 1)
    left = np.floor(positions).astype(np.int64)
    right = np.minimum(left + 1, source - 1)
    frac = (positions - left).reshape((-1,) + (1,) * (values.ndim - 1))
    return (values[left] * (1.0 - frac) + values[right] * frac).astype(values.dtype)


class StreamingConverter:
    """Converts a stream block by block with the stages of a `VoiceConverter`.

    `input_rate`/`output_rate` are the audio device's rates in Hz (multiples of 100). Each call of
    `process` takes exactly `block_size` input samples and returns exactly `output_block_size`
    samples. In the joined output, sample i holds input sample i - `stream_delay_frames` (crossfade
    + search); the two blocks more of `latency_s` are the sound card's buffering in and out.
    """

    def __init__(
        self,
        converter: VoiceConverter,
        settings: StreamSettings,
        *,
        input_rate: int = SAMPLE_RATE,
        output_rate: int | None = None,
        rmvpe_path: str | None = None,
    ) -> None:
        self.settings = settings.validated()
        if settings.speaker_id >= converter.voice.speaker_count:
            raise UserInputError(
                f"speaker id {settings.speaker_id} does not exist in this voice (it has {converter.voice.speaker_count}); use 0"
            )
        for name, rate in (("input", input_rate), ("output", output_rate or input_rate)):
            if rate < 8000 or rate % 100:
                raise UserInputError(f"the {name} sample rate must be a multiple of 100 Hz from 8000 up, got {rate}")
        self.converter = converter
        self.geometry = StreamGeometry.of(self.settings)
        self.input_rate = int(input_rate)
        self.output_rate = int(output_rate or input_rate)
        self.model_rate = converter.sample_rate
        self.rmvpe_path = rmvpe_path if rmvpe_path is not None else converter.rmvpe_path
        self.encoder = int8_encoder(converter.encoder) if self.settings.encoder_int8 else converter.encoder
        self.decode = stream_decoder(converter, self.settings)  # (z, har, g) -> audio; float32 or int8 graph
        self.last_times = BlockTimes()
        self.blocks_done = 0
        g = self.geometry
        self._in_hop = self.input_rate // 100
        self._out_hop = self.output_rate // 100
        self._model_hop = self.model_rate // 100
        self._fade_in = fade_in_window(g.fade * self._out_hop)
        self._fade_out = 1.0 - self._fade_in
        self.reset()

    # -- sizes -----------------------------------------------------------------------------

    @property
    def block_size(self) -> int:
        """Input samples per block at the input rate."""
        return self.geometry.block * self._in_hop

    @property
    def output_block_size(self) -> int:
        """Output samples per block at the output rate."""
        return self.geometry.block * self._out_hop

    @property
    def latency_s(self) -> float:
        return self.geometry.algorithmic_latency_s

    def state_nbytes(self) -> int:
        """Bytes held between blocks (all fixed by the settings)."""
        arrays = (self._window16, self._input_tail, self._gate_history, self._coarse, self._hz, self._sola_tail)
        total = sum(a.nbytes for a in arrays)
        if self._noise is not None:
            total += self._noise.element_size() * self._noise.nelement()
        return total

    def reset(self) -> None:
        """Start a new stream: silence in every buffer."""
        import torch

        g = self.geometry
        self._window16 = np.zeros(g.window * WINDOW, dtype=np.float32)
        self._input_tail = np.zeros(2 * self._in_hop, dtype=np.float32)  # for the 16 kHz resampler's edge
        self._gate_history = np.zeros((GATE_WINDOW_FRAMES - 1) * self._in_hop, dtype=np.float32)
        self._coarse = np.ones(g.window, dtype=np.int64)  # coarse pitch 1 = unvoiced
        self._hz = np.zeros(g.window, dtype=np.float32)
        self._sola_tail = np.zeros(g.fade * self._out_hop, dtype=np.float32)
        self._generator = torch.Generator().manual_seed(self.settings.seed)  # prior noise, drawn on the CPU
        # The NSF excitation's noise is drawn where the synthesiser runs.
        self._device_generator = torch.Generator(device=self.converter.device).manual_seed(self.settings.seed + 1)
        self._noise: torch.Tensor | None = None
        if not self.settings.deterministic:
            inter = self.converter.synthesizer.inter_channels
            self._noise = torch.randn(inter, g.window, generator=self._generator)  # [inter, window frames]
        self.blocks_done = 0

    # -- one block -------------------------------------------------------------------------

    def process(self, block: np.ndarray) -> np.ndarray:
        """One input block (mono, `block_size` samples) -> one output block (`output_block_size`)."""
        block = np.asarray(block, dtype=np.float32).reshape(-1)
        if block.shape[0] != self.block_size:
            raise UserInputError(f"a block must hold {self.block_size} samples, got {block.shape[0]}")
        if not np.isfinite(block).all():
            block = np.nan_to_num(block, nan=0.0, posinf=0.0, neginf=0.0)
        times = BlockTimes()
        with timed_block(times):
            with times.stage("gate"):
                block = self._gate(block)
            with times.stage("resample_in"):
                self._push_input(block)
            audio = self._convert_window(times)  # [returned frames * out hop] at the output rate
            with times.stage("sola"):
                out = self._join(audio)
        self.blocks_done += 1
        self.last_times = times
        return out

    def _gate(self, block: np.ndarray) -> np.ndarray:
        """Zero the 10 ms frames whose 40 ms RMS (ending at the frame) is below the threshold."""
        history = np.concatenate((self._gate_history, block))
        self._gate_history = history[-self._gate_history.shape[0] :].copy() if self._gate_history.size else self._gate_history
        if self.settings.silence_threshold_db <= SILENCE_OFF_DB:
            return block
        hop = self._in_hop
        frames = np.lib.stride_tricks.sliding_window_view(history, GATE_WINDOW_FRAMES * hop)[::hop]  # [block frames, 4 hop]
        rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1))
        quiet = 20.0 * np.log10(np.maximum(rms, 1e-10)) < self.settings.silence_threshold_db
        gated = block.copy()
        gated.reshape(-1, hop)[quiet] = 0.0
        return gated

    def _push_input(self, block: np.ndarray) -> None:
        """Slide the 16 kHz window by one block; RVC's resampling trick rewrites the last 10 ms too.

        The block is resampled together with the 20 ms before it; the first 10 ms of the result
        (edge effects) are dropped and the next 10 ms replace the previous block's last 10 ms,
        which were resampled without right context.
        """
        n16 = self.geometry.block * WINDOW
        source = np.concatenate((self._input_tail, block))
        self._input_tail = source[-self._input_tail.shape[0] :].copy()
        resampled = _resample_exact(source, self.input_rate, SAMPLE_RATE, source.shape[0] // self._in_hop * WINDOW)
        window = self._window16
        window[:-n16] = window[n16:]
        window[-(n16 + WINDOW) :] = resampled[WINDOW:]

    def _convert_window(self, times: BlockTimes) -> np.ndarray:
        import torch

        g = self.geometry
        conv = self.converter
        settings = self.settings
        with times.stage("content"):
            wave = torch.from_numpy(self._window16)[None]  # [1, N16]
            with torch.inference_mode():
                encoded = self.encoder.extract(wave, conv.voice.version)  # [1, T50, C]
            features = encoded.detach().to("cpu", torch.float32)[0].numpy()
            features = np.concatenate((features, features[-1:]))  # RVC repeats the last frame (window edge)
        with times.stage("index"):
            first = g.extra // 2  # only the returned frames (and the ones after) need the blend
            unblended = features.copy() if conv.use_f0 and settings.protect < 0.5 else None
            if conv.index is not None and settings.index_rate > 0.0:
                features[first:] = conv.index.blend(features[first:], settings.index_rate, k=RETRIEVAL_K)
            phone = np.repeat(features, 2, axis=0)[: g.window]  # [T, C] at 100 frames/s

        coarse = hz = None
        if conv.use_f0:
            with times.stage("f0"):
                coarse, hz = self._update_pitch()
                if unblended is not None:
                    phone = protect_unvoiced(phone, np.repeat(unblended, 2, axis=0)[: g.window], hz, settings.protect)

        audio = self._synthesize(phone, coarse, hz, times)  # [returned * model hop]
        with times.stage("envelope"):
            if settings.rms_mix_rate < 1.0:
                source = self._window16[g.extra * WINDOW : (g.extra + g.returned) * WINDOW]
                audio = envelope_mix(source, WINDOW, audio, self._model_hop, settings.rms_mix_rate)
        with times.stage("resample_out"):
            audio = _resample_exact(audio, self.model_rate, self.output_rate, g.returned * self._out_hop)
        return audio

    def _update_pitch(self) -> tuple[np.ndarray, np.ndarray]:
        """f0 of the newest samples into the sliding pitch cache (RVC's cache_pitch/cache_pitchf)."""
        from infer_pack.f0 import estimate_f0, f0_to_coarse, shift_f0

        g = self.geometry
        tail = g.block * WINDOW + F0_TAIL_SAMPLES
        if self.settings.f0_method == "rmvpe":
            tail = RMVPE_STEP * ((tail - 1) // RMVPE_STEP + 1) - WINDOW
        tail = min(tail, self._window16.shape[0])
        conv = self.converter
        f0 = estimate_f0(
            self._window16[-tail:], self.settings.f0_method, rmvpe_path=self.rmvpe_path, cache=conv.cache, device=conv.device
        )  # [tail // 160 + 1]; frame i centred on sample 160 i of the tail
        f0 = shift_f0(f0, self.settings.pitch_semitones - self.settings.formant_semitones)
        # Frames 3..-2 are centred on the last (len - 4) frame centres of the window: the window's
        # frame j is centred on sample 160 j, the tail's last-but-one frame on the window's last one.
        fresh = f0[3:-1]
        shift = g.block
        for cache, values in ((self._coarse, f0_to_coarse(fresh)), (self._hz, fresh.astype(np.float32))):
            cache[:-shift] = cache[shift:].copy()
            cache[-values.shape[0] :] = values[-cache.shape[0] :]
        return self._coarse.copy(), self._hz.copy()

    def _synthesize(
        self, phone: np.ndarray, coarse: np.ndarray | None, hz: np.ndarray | None, times: BlockTimes
    ) -> np.ndarray:
        """Decode the returned frames (with the formant shift: stretched frames, squeezed audio).

        The prior encoder sees the whole window (its attention needs the context); the flow runs
        from its receptive field (24 frames) before the decoded frames, and the excitation and the
        decoder only over the decoded frames (plus `decoder_context_frames` on each side), as RVC's
        `skip_head` / `return_length`: the sine's phase starts at the first decoded frame.
        """
        import torch

        g = self.geometry
        conv = self.converter
        net = conv.synthesizer
        noise = self._slide_noise()  # [inter, window] or None
        first, count = g.extra, g.returned
        factor = 2.0 ** (self.settings.formant_semitones / 12.0)
        if factor != 1.0:
            # Formant shift: the synthesiser speaks `factor` times slower at the pitch lowered by
            # the formant shift (done in _update_pitch); squeezing its audio back to the block's
            # duration raises pitch and formants by `factor`, giving the chosen pitch again.
            length = round(g.window * factor)
            phone = _stretch(phone, length)
            coarse = None if coarse is None else _stretch(coarse, length, nearest=True)
            hz = None if hz is None else _stretch(hz, length)
            noise = None if noise is None else torch.from_numpy(_stretch(noise.numpy().T, length, nearest=True).T.copy())
            first, count = round(first * factor), min(math.ceil(count * factor), length - round(first * factor))
        device = torch.device(conv.device)
        frames = phone.shape[0]
        context = net.dec.context_frames
        if self.settings.decoder_context_frames is not None:
            context = min(context, self.settings.decoder_context_frames)
        lo, hi = max(0, first - context), min(frames, first + count + context)  # decoded frames
        flow_lo = max(0, lo - FLOW_CONTEXT_FRAMES)
        with torch.inference_mode():
            with times.stage("prior"):
                phone_t = torch.from_numpy(np.ascontiguousarray(phone, dtype=np.float32))[None].to(device, conv.dtype)  # [1, T, C]
                lengths = torch.tensor([frames], dtype=torch.long, device=device)
                sid = torch.tensor([self.settings.speaker_id], dtype=torch.long, device=device)
                gvec = net.emb_g(sid).unsqueeze(-1)  # [1, gin, 1]
                pitch_t = None
                if coarse is not None:
                    pitch_t = torch.from_numpy(np.ascontiguousarray(coarse, dtype=np.int64))[None].to(device)  # [1, T]
                m_p, logs_p, x_mask = net.enc_p(phone_t, pitch_t, lengths)  # [1, inter, T]
                m_p, logs_p, x_mask = m_p[:, :, flow_lo:], logs_p[:, :, flow_lo:], x_mask[:, :, flow_lo:]
                z_p = m_p
                if noise is not None:
                    z_p = m_p + torch.exp(logs_p) * noise[None, :, flow_lo:].to(device, conv.dtype) * PRIOR_NOISE_SCALE
                z = net.flow(z_p * x_mask, x_mask, g=gvec, reverse=True)[:, :, lo - flow_lo : hi - flow_lo]  # [1, inter, hi-lo]
                z = z * x_mask[:, :, lo - flow_lo : hi - flow_lo]
            with times.stage("decoder"):
                har = None
                if hz is not None:
                    pitchf_t = torch.from_numpy(np.ascontiguousarray(hz[lo:hi], dtype=np.float32))[None].to(device)  # [1, hi-lo]
                    har = net.dec.excitation(
                        pitchf_t, excitation_noise=not self.settings.deterministic, generator=self._device_generator
                    )  # [1, 1, (hi-lo)*upp]
                upp = net.dec.upp
                decoded = self.decode(z, har, gvec)[0, 0, (first - lo) * upp : (first - lo + count) * upp]
                audio: np.ndarray = decoded.to("cpu", torch.float32).numpy()
        if factor != 1.0:
            audio = _resample_exact(audio, count * 100, g.returned * 100, g.returned * self._model_hop)
        return audio

    def _slide_noise(self) -> torch.Tensor | None:
        """The prior noise per frame of the stream: old frames keep their draw, new frames get one."""
        import torch

        if self._noise is None:
            return None
        shift = self.geometry.block
        fresh = torch.randn(self._noise.shape[0], shift, generator=self._generator)
        self._noise = torch.cat((self._noise[:, shift:], fresh), dim=1)
        return self._noise

    def _join(self, audio: np.ndarray) -> np.ndarray:
        """SOLA-align the new audio to the previous block's tail and crossfade over the fade length."""
        fade = self._sola_tail.shape[0]
        search = self.geometry.search * self._out_hop
        block = self.output_block_size
        offset = sola_offset(audio[: fade + search], self._sola_tail) if self.blocks_done else 0
        audio = audio[offset:]
        out = audio[:block].copy()
        if self.blocks_done:
            out[:fade] = out[:fade] * self._fade_in + self._sola_tail * self._fade_out
        else:
            out[:fade] *= self._fade_in  # the stream starts from silence
        self._sola_tail = audio[block : block + fade].copy()
        return out


@dataclass
class StreamRun:
    """A whole signal pushed through a `StreamingConverter` block by block."""

    audio: np.ndarray  # float32 at the output rate, blocks joined, the start delayed by `delay_samples`
    sample_rate: int
    blocks: int
    block_seconds: list[float] = field(default_factory=list)  # wall time per block
    delay_samples: int = 0  # output sample i corresponds to input sample i - delay (at the output rate)


def iter_blocks(audio: np.ndarray, block_size: int) -> Iterator[np.ndarray]:
    """The signal cut into blocks, the last one zero-padded; then enough silence to flush the stream."""
    for start in range(0, audio.shape[0], block_size):
        piece = audio[start : start + block_size]
        yield piece if piece.shape[0] == block_size else np.pad(piece, (0, block_size - piece.shape[0]))


def open_engine(
    converter: VoiceConverter,
    settings: StreamSettings,
    *,
    input_rate: int = SAMPLE_RATE,
    output_rate: int | None = None,
    rmvpe_path: str | None = None,
) -> StreamingConverter | RVCRealtimeStream:
    """The engine `settings.match` names: ours (`StreamingConverter`) or RVC's realtime algorithm."""
    if settings.match == "rvc":
        from infer_pack.rvc_realtime import RVCRealtimeStream

        return RVCRealtimeStream(converter, settings, input_rate=input_rate, output_rate=output_rate, rmvpe_path=rmvpe_path)
    return StreamingConverter(converter, settings, input_rate=input_rate, output_rate=output_rate, rmvpe_path=rmvpe_path)


def convert_stream(
    stream: StreamingConverter | RVCRealtimeStream,
    audio: np.ndarray,
    *,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> StreamRun:
    """Feed `audio` (at the stream's input rate) block by block, as a sound card would.

    The result is trimmed to the input's duration after removing the stream's delay, so sample i of
    the output lines up with sample i of the input (what a test or an offline comparison needs).
    """
    delay_frames = stream_delay_frames(stream.geometry)
    flush = math.ceil(delay_frames * stream._in_hop / stream.block_size) + 1
    signal = np.concatenate((np.asarray(audio, dtype=np.float32), np.zeros(flush * stream.block_size, np.float32)))
    total = math.ceil(signal.shape[0] / stream.block_size)
    pieces: list[np.ndarray] = []
    seconds: list[float] = []
    for number, block in enumerate(iter_blocks(signal, stream.block_size)):
        check(cancel)
        pieces.append(stream.process(block))
        seconds.append(stream.last_times.total)
        report(progress, number + 1, total, f"block {number + 1}/{total}")
    out = np.concatenate(pieces)
    delay = delay_frames * stream._out_hop
    n_out = round(audio.shape[0] * stream.output_rate / stream.input_rate)
    return StreamRun(out[delay : delay + n_out], stream.output_rate, len(pieces), seconds, delay)


def stream_delay_frames(g: StreamGeometry) -> int:
    """Frames between an input sample and its converted output in the joined output signal.

    The output of block k starts at the window position `extra` (plus the SOLA offset), i.e.
    `crossfade + search + block` frames before the window's end, while it is emitted as the stream's
    samples `block * k ...`: the output lags the input by `crossfade + search` frames within the
    stream (the other `block` of latency is the sound card's buffering, not in this signal).
    """
    return g.crossfade + g.search
