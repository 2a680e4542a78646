"""RVC's realtime algorithm on our networks: what `realtime_gui.py` and `infer/rtrvc.py` do per block.

Transcribed from RVC main at commit 4338f12c3c28c80b3ac015e2d0df66c41592746d (2026-07-23):
`GUI.start_vc` (buffer sizes, resamplers, fade window), `GUI.audio_callback` (gate, input
resampling, inference, output resampling, loudness envelope, SOLA) and `RVC.infer` / `RVC.get_f0`
(content encoder, index blend on the frames after `skip_head // 2`, f0 of the newest block + 50 ms
into a 1024-frame pitch cache that starts at 0, the synthesiser's `infer(skip_head, return_length,
return_length2)`). The parts RVC takes from other libraries are re-derived: torchaudio's
`Resample` (`infer_pack.sinc_resample`), librosa's `feature.rms` and `amplitude_to_db`.

It runs at one device rate (RVC's `samplerate`: in and out alike), on `VoiceConverter`'s networks.
`StreamSettings.deterministic` zeroes RVC's random draws (prior noise, excitation noise); otherwise
they come from a generator seeded with `settings.seed`. Where ours differs on purpose, see
`infer_pack.realtime`; `StreamSettings.match="rvc"` selects this engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from infer_pack.decoder_int8 import stream_decoder
from infer_pack.encoder_int8 import int8_encoder
from infer_pack.errors import UserInputError
from infer_pack.pipeline import RETRIEVAL_K
from infer_pack.sinc_resample import SincResampler
from infer_pack.stream_params import StreamSettings
from infer_pack.stream_stages import BlockTimes, timed_block

if TYPE_CHECKING:
    import torch

    from infer_pack.pipeline import VoiceConverter

RVC_COMMIT = "4338f12c3c28c80b3ac015e2d0df66c41592746d"
PITCH_CACHE_FRAMES = 1024
PM_FLOOR_HZ = 65.0  # rtrvc's pm: floor 65 Hz, padding ceil(1.5 / 65 * 16000) = 370 (+1 on the right)
PM_CEILING_HZ = 1100.0
COARSE_MIN_HZ, COARSE_MAX_HZ = 50.0, 1100.0
FLOW_CONTEXT_FRAMES = 24  # frames the flow sees before skip_head (its receptive half-width)
PRIOR_NOISE_SCALE = 0.66666


def librosa_rms(audio: np.ndarray, frame_length: int, hop_length: int) -> np.ndarray:
    """librosa.feature.rms(y, frame_length, hop_length) with its defaults (centred, zero padded): [1, F]."""
    padded = np.pad(audio, frame_length // 2)
    frames = np.lib.stride_tricks.sliding_window_view(padded, frame_length)[::hop_length]  # [F, frame_length]
    return np.sqrt(np.mean(np.abs(frames) ** 2, axis=-1))[None]


def librosa_amplitude_to_db(amplitude: np.ndarray, top_db: float = 80.0) -> np.ndarray:
    """librosa.amplitude_to_db(S, ref=1.0): 10 log10(max(1e-10, S^2)), clipped to max - top_db."""
    log_spec = 10.0 * np.log10(np.maximum(1e-10, np.abs(amplitude) ** 2))
    return np.maximum(log_spec, log_spec.max() - top_db)


def fill_unvoiced(f0: np.ndarray) -> np.ndarray:
    """rtrvc's get_f0: unvoiced frames interpolated between voiced ones, edges hold the nearest value."""
    uv = f0 == 0
    if np.any(~uv):
        f0[uv] = np.interp(np.where(uv)[0], np.where(~uv)[0], f0[~uv])
    return f0


def rvc_pm(audio_16k: np.ndarray) -> np.ndarray:
    """rtrvc's pm: Praat autocorrelation, floor 65 Hz, 370 / 371 zeros of padding, len // 160 + 1 frames."""
    import parselmouth

    frames = audio_16k.shape[0] // 160 + 1
    left = int(np.ceil(1.5 / PM_FLOOR_HZ * 16000))
    sound = parselmouth.Sound(np.pad(audio_16k, (left, left + 1)), 16000)
    pitch = sound.to_pitch_ac(time_step=0.01, voicing_threshold=0.6, pitch_floor=PM_FLOOR_HZ, pitch_ceiling=PM_CEILING_HZ)
    f0 = np.asarray(pitch.selected_array["frequency"])
    if f0.shape[0] < frames:
        f0 = np.pad(f0, (0, frames - f0.shape[0]))
    return f0[:frames]


def rvc_coarse(f0: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """rtrvc's get_f0_post (float32 torch arithmetic): Hz -> (coarse long [T], Hz float32 [T])."""
    import torch

    hz = torch.from_numpy(np.asarray(f0)).float().squeeze()
    mel_min = 1127 * np.log(1 + COARSE_MIN_HZ / 700)
    mel_max = 1127 * np.log(1 + COARSE_MAX_HZ / 700)
    mel = 1127 * torch.log(1 + hz / 700)
    voiced = mel > 0
    mel[voiced] = (mel[voiced] - mel_min) * 254 / (mel_max - mel_min) + 1
    mel[mel <= 1] = 1
    mel[mel > 255] = 255
    return torch.round(mel).long(), hz


class RVCRealtimeStream:
    """Blocks of `block_size` samples at `input_rate` in, blocks of the same size out (RVC's callback)."""

    def __init__(
        self,
        converter: VoiceConverter,
        settings: StreamSettings,
        *,
        input_rate: int,
        output_rate: int | None = None,
        rmvpe_path: str | None = None,
    ) -> None:
        import torch

        from infer_pack.realtime import StreamGeometry

        self.settings = settings.validated()
        if output_rate not in (None, input_rate):
            raise UserInputError(f"RVC's realtime algorithm runs in and out at one rate; got {input_rate} and {output_rate} Hz")
        if input_rate < 8000 or input_rate % 100:
            raise UserInputError(f"the sample rate must be a multiple of 100 Hz from 8000 up, got {input_rate}")
        self.converter = converter
        self.rmvpe_path = rmvpe_path if rmvpe_path is not None else converter.rmvpe_path
        self.encoder = int8_encoder(converter.encoder) if self.settings.encoder_int8 else converter.encoder
        self.decode = stream_decoder(converter, self.settings)  # (z, har, g) -> audio; float32 or int8 graph
        self.geometry = g = StreamGeometry.of(self.settings)
        self.input_rate = self.output_rate = int(input_rate)
        zc = self._in_hop = self._out_hop = self.input_rate // 100
        self.block_frame = g.block * zc
        self.block_frame_16k = 160 * g.block
        self.sola_buffer_frame = g.fade * zc
        self.sola_search_frame = g.search * zc
        self.extra_frame = g.extra * zc
        self.window_frame = (g.extra + g.crossfade + g.search + g.block) * zc
        self.skip_head = g.extra
        self.return_length = g.returned
        self.tgt_sr = converter.sample_rate
        self.fade_in_window = torch.sin(0.5 * np.pi * torch.linspace(0.0, 1.0, steps=self.sola_buffer_frame)) ** 2
        self.fade_out_window = 1 - self.fade_in_window
        self.resampler = SincResampler(self.input_rate, 16000)
        self.resampler2 = SincResampler(self.tgt_sr, self.input_rate) if self.tgt_sr != self.input_rate else None
        self.formant_resamplers: dict[int, SincResampler] = {}
        self.last_times = BlockTimes()
        self.reset()

    @property
    def block_size(self) -> int:
        return self.block_frame

    @property
    def output_block_size(self) -> int:
        return self.block_frame

    @property
    def latency_s(self) -> float:
        return self.geometry.algorithmic_latency_s

    def state_nbytes(self) -> int:
        buffers = (self.input_wav, self.input_wav_res, self.sola_buffer, self.cache_pitch, self.cache_pitchf)
        return int(sum(b.element_size() * b.nelement() for b in buffers)) + self.rms_buffer.nbytes

    def reset(self) -> None:
        import torch

        self.input_wav = torch.zeros(self.window_frame)
        self.input_wav_res = torch.zeros(160 * self.window_frame // self._in_hop)
        self.rms_buffer = np.zeros(4 * self._in_hop, dtype=np.float32)
        self.sola_buffer = torch.zeros(self.sola_buffer_frame)
        self.cache_pitch = torch.zeros(PITCH_CACHE_FRAMES, dtype=torch.long)
        self.cache_pitchf = torch.zeros(PITCH_CACHE_FRAMES, dtype=torch.float32)
        self.generator = torch.Generator(device=self.converter.device).manual_seed(self.settings.seed)
        self.blocks_done = 0

    # -- GUI.audio_callback ------------------------------------------------------------------

    def process(self, block: np.ndarray) -> np.ndarray:
        """One block of device samples -> one converted block (float32, same length)."""
        import torch

        indata = np.asarray(block, dtype=np.float32).reshape(-1)
        if indata.shape[0] != self.block_frame:
            raise UserInputError(f"a block must hold {self.block_frame} samples, got {indata.shape[0]}")
        zc = self._in_hop
        times = BlockTimes()
        with timed_block(times):
            with times.stage("gate"):
                if self.settings.silence_threshold_db > -60:
                    indata = self._gate(indata)
            with times.stage("resample_in"):
                self.input_wav[: -self.block_frame] = self.input_wav[self.block_frame :].clone()
                self.input_wav[-indata.shape[0] :] = torch.from_numpy(indata)
                self.input_wav_res[: -self.block_frame_16k] = self.input_wav_res[self.block_frame_16k :].clone()
                resample_input = self.input_wav[-indata.shape[0] - 2 * zc :]
                self.input_wav_res[-160 * (indata.shape[0] // zc + 1) :] = self.resampler(resample_input)[160:]
            infer_wav = self._infer(times)
            with times.stage("resample_out"):
                if self.resampler2 is not None:
                    infer_wav = self.resampler2(infer_wav)
            with times.stage("envelope"):
                if self.settings.rms_mix_rate < 1:
                    infer_wav = self._envelope(infer_wav)
            with times.stage("sola"):
                out = self._sola(infer_wav)
        self.blocks_done += 1
        self.last_times = times
        return out

    def _gate(self, indata: np.ndarray) -> np.ndarray:
        """The silence threshold: 10 ms frames whose 40 ms RMS is below it are zeroed (2 frames re-gated)."""
        zc = self._in_hop
        indata = np.append(self.rms_buffer, indata)
        rms = librosa_rms(indata, 4 * zc, zc)[:, 2:]
        self.rms_buffer[:] = indata[-4 * zc :]
        indata = indata[2 * zc - zc // 2 :]
        quiet = librosa_amplitude_to_db(rms)[0] < self.settings.silence_threshold_db
        for i in range(quiet.shape[0]):
            if quiet[i]:
                indata[i * zc : (i + 1) * zc] = 0
        return indata[zc // 2 :]

    def _envelope(self, infer_wav: torch.Tensor) -> torch.Tensor:
        import torch
        import torch.nn.functional as F

        zc = self._in_hop
        input_wav = self.input_wav[self.extra_frame :]
        size = infer_wav.shape[0] + 1
        rms1 = torch.from_numpy(librosa_rms(input_wav[: infer_wav.shape[0]].numpy(), 4 * zc, zc))
        rms1 = F.interpolate(rms1.unsqueeze(0), size=size, mode="linear", align_corners=True)[0, 0, :-1]
        rms2 = torch.from_numpy(librosa_rms(infer_wav[:].numpy(), 4 * zc, zc))
        rms2 = F.interpolate(rms2.unsqueeze(0), size=size, mode="linear", align_corners=True)[0, 0, :-1]
        rms2 = torch.max(rms2, torch.zeros_like(rms2) + 1e-3)
        return infer_wav * torch.pow(rms1 / rms2, 1.0 - self.settings.rms_mix_rate)

    def _sola(self, infer_wav: torch.Tensor) -> np.ndarray:
        """SOLA (from DDSP-SVC, as RVC): best offset in the search range, then a sin^2 crossfade."""
        import torch
        import torch.nn.functional as F

        conv_input = infer_wav[None, None, : self.sola_buffer_frame + self.sola_search_frame]
        cor_nom = F.conv1d(conv_input, self.sola_buffer[None, None, :])
        cor_den = torch.sqrt(F.conv1d(conv_input**2, torch.ones(1, 1, self.sola_buffer_frame)) + 1e-8)
        offset = int(torch.argmax(cor_nom[0, 0] / cor_den[0, 0]))
        infer_wav = infer_wav[offset:].clone()
        infer_wav[: self.sola_buffer_frame] *= self.fade_in_window
        infer_wav[: self.sola_buffer_frame] += self.sola_buffer * self.fade_out_window
        self.sola_buffer[:] = infer_wav[self.block_frame : self.block_frame + self.sola_buffer_frame]
        return infer_wav[: self.block_frame].numpy().astype(np.float32)

    # -- RVC.infer ---------------------------------------------------------------------------

    def _infer(self, times: BlockTimes) -> torch.Tensor:
        import torch
        import torch.nn.functional as F

        conv = self.converter
        settings = self.settings
        skip_head, return_length = self.skip_head, self.return_length
        with times.stage("content"), torch.inference_mode():
            feats = self.encoder.extract(self.input_wav_res.view(1, -1), conv.voice.version).float().cpu()  # [1, T50, C]
            feats = torch.cat((feats, feats[:, -1:, :]), 1)
        with times.stage("index"):
            if conv.index is not None and settings.index_rate != 0:
                npy = feats[0][skip_head // 2 :].numpy().astype("float32")
                feats[0][skip_head // 2 :] = torch.from_numpy(conv.index.blend(npy, settings.index_rate, k=RETRIEVAL_K))
        p_len = self.input_wav_res.shape[0] // 160
        factor = pow(2, settings.formant_semitones / 12)
        return_length2 = int(np.ceil(return_length * factor))
        cache_pitch = cache_pitchf = None
        if conv.use_f0:
            with times.stage("f0"):
                pitch, pitchf = self._f0(settings.pitch_semitones - settings.formant_semitones)
                shift = self.block_frame_16k // 160
                self.cache_pitch[:-shift] = self.cache_pitch[shift:].clone()
                self.cache_pitchf[:-shift] = self.cache_pitchf[shift:].clone()
                self.cache_pitch[4 - pitch.shape[0] :] = pitch[3:-1]
                self.cache_pitchf[4 - pitch.shape[0] :] = pitchf[3:-1]
                cache_pitch = self.cache_pitch[None, -p_len:]
                cache_pitchf = self.cache_pitchf[None, -p_len:] * return_length2 / return_length
        feats = F.interpolate(feats.permute(0, 2, 1), scale_factor=2).permute(0, 2, 1)[:, :p_len, :]  # [1, T, C]
        audio = self._synthesize(feats, p_len, cache_pitch, cache_pitchf, return_length2, times)  # [1, samples]
        with times.stage("resample_out"):
            hop = self.tgt_sr // 100
            upp_res = int(np.floor(factor * self.tgt_sr // 100))
            if upp_res != hop:
                resampler = self.formant_resamplers.setdefault(upp_res, SincResampler(upp_res, hop))
                audio = resampler(audio[:, : return_length * upp_res])
        return audio.squeeze()

    def _f0(self, key: float) -> tuple[torch.Tensor, torch.Tensor]:
        from infer_pack.f0 import estimate_f0

        frames = self.block_frame_16k + 800
        method = self.settings.f0_method
        if method == "rmvpe":
            frames = 5120 * ((frames - 1) // 5120 + 1) - 160
        x = self.input_wav_res[-frames:].numpy()
        if method == "pm":
            f0 = rvc_pm(x)
        else:
            conv = self.converter
            f0 = estimate_f0(x, method, rmvpe_path=self.rmvpe_path, cache=conv.cache, device=conv.device)
        f0 = fill_unvoiced(f0)
        f0 *= pow(2, key / 12)
        return rvc_coarse(f0)

    def _synthesize(
        self, feats: torch.Tensor, p_len: int, pitch: torch.Tensor | None, pitchf: torch.Tensor | None,
        return_length2: int, times: BlockTimes,
    ) -> torch.Tensor:
        """Synthesizer.infer(skip_head, return_length, return_length2) of RVC main's models.py."""
        import torch
        import torch.nn.functional as F

        conv = self.converter
        net = conv.synthesizer
        device = torch.device(conv.device)
        head, length = self.skip_head, self.return_length
        random = not self.settings.deterministic
        with torch.inference_mode():
            with times.stage("prior"):
                phone = feats.to(device, conv.dtype)
                lengths = torch.tensor([p_len], dtype=torch.long, device=device)
                sid = torch.tensor([self.settings.speaker_id], dtype=torch.long, device=device)
                g = net.emb_g(sid).unsqueeze(-1)  # [1, gin, 1]
                flow_head = max(head - FLOW_CONTEXT_FRAMES, 0)
                dec_head = head - flow_head
                m_p, logs_p, x_mask = net.enc_p(phone, None if pitch is None else pitch.to(device), lengths)
                m_p, logs_p, x_mask = m_p[:, :, flow_head:], logs_p[:, :, flow_head:], x_mask[:, :, flow_head:]
                noise = torch.randn(m_p.shape, dtype=m_p.dtype, device=device, generator=self.generator) if random else 0.0
                z_p = (m_p + torch.exp(logs_p) * noise * PRIOR_NOISE_SCALE) * x_mask
                z = net.flow(z_p, x_mask, g=g, reverse=True)[:, :, dec_head : dec_head + length]
                x_mask = x_mask[:, :, dec_head : dec_head + length]
            with times.stage("decoder"):
                har = None
                if pitchf is not None:
                    nsff0 = pitchf[:, head : head + length].to(device)
                    har = net.dec.excitation(nsff0, excitation_noise=random, generator=self.generator)  # [1, 1, length*upp]
                    if return_length2 * net.dec.upp != har.shape[-1]:
                        har = F.interpolate(har, size=return_length2 * net.dec.upp, mode="linear")
                x = z * x_mask
                if return_length2 != x.shape[-1]:
                    x = F.interpolate(x, size=return_length2, mode="linear")
                audio = self.decode(x, har, g)  # [1, 1, return_length2 * upp]
        return audio.squeeze(1).float().cpu()

