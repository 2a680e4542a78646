"""RVC's realtime algorithm (`infer_pack.rvc_realtime`) against a straight-line transcription of
RVC main's `GUI.audio_callback` + `RVC.infer` (commit 4338f12c3c28c80b3ac015e2d0df66c41592746d),
written here independently: the resampler from its definition (a Hann-windowed sinc sum per output
sample, float64), librosa's rms as an explicit loop, SOLA with numpy correlation, the synthesiser
through its whole-decoder forward. Both are fed the same blocks with every random draw off.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import parselmouth
import pytest
import torch
from conftest import reference_file
from test_realtime import tiny_voice

from infer_pack.pipeline import VoiceConverter, Windows
from infer_pack.realtime import StreamSettings
from infer_pack.rvc_realtime import RVCRealtimeStream
from infer_pack.sinc_resample import SincResampler


@pytest.fixture(scope="module")
def converter(reference: Path) -> VoiceConverter:
    from test_pipeline import ProjectedEncoder

    encoder = ProjectedEncoder(reference_file(reference, "tiny_hubert.pt"), 768)
    return VoiceConverter(tiny_voice(), encoder, windows=Windows(x_pad=1, x_query=6, x_center=38, x_max=41))


def resample_by_definition(x: np.ndarray, orig: int, new: int) -> np.ndarray:
    """y[j] = sum_i x[i] h(i / orig - j / new), h a sinc cut at 0.99 of the lower Nyquist, Hann over 6 zeros."""
    g = math.gcd(orig, new)
    orig, new = orig // g, new // g
    base = min(orig, new) * 0.99
    reach = math.ceil(6 * orig / base) + orig + 1
    out = np.empty(math.ceil(new * x.shape[0] / orig))
    for j in range(out.shape[0]):
        centre = j * orig // new
        i = np.arange(max(0, centre - reach), min(x.shape[0], centre + reach + 1))
        t = np.clip((i / orig - j / new) * base, -6, 6)
        sinc = np.sinc(t)
        out[j] = np.sum(x[i] * sinc * np.cos(t * np.pi / 12) ** 2) * base / orig
    return out.astype(np.float32)


def rms_loop(y: np.ndarray, frame: int, hop: int) -> np.ndarray:
    padded = np.concatenate((np.zeros(frame // 2), y, np.zeros(frame // 2)))
    count = 1 + (padded.shape[0] - frame) // hop
    return np.array([math.sqrt(np.mean(padded[k * hop : k * hop + frame] ** 2)) for k in range(count)])


def interp_align_corners(values: np.ndarray, size: int) -> np.ndarray:
    return np.interp(np.linspace(0, values.shape[0] - 1, size), np.arange(values.shape[0]), values)


def coarse_of(hz: np.ndarray) -> np.ndarray:
    mel = 1127 * np.log(1 + hz.astype(np.float32) / 700)
    lo, hi = 1127 * np.log(1 + 50 / 700), 1127 * np.log(1 + 1100 / 700)
    mel = np.where(mel > 0, (mel - lo) * 254 / (hi - lo) + 1, mel)
    return np.rint(np.clip(mel, 1, 255)).astype(np.int64)


def rvc_callback_by_hand(conv: VoiceConverter, s: StreamSettings, rate: int, blocks: list[np.ndarray]) -> np.ndarray:
    """RVC's start_vc sizes, then one audio_callback per block (pm, no index, no formant, noise off)."""
    zc = rate // 100
    block = round(s.block_time_s * 100) * zc
    crossfade = round(s.crossfade_time_s * 100) * zc
    sola_buffer_frame, sola_search = min(crossfade, 4 * zc), zc
    extra = round(s.extra_time_s * 100) * zc
    input_wav = np.zeros(extra + crossfade + sola_search + block, np.float32)
    input_res = np.zeros(160 * input_wav.shape[0] // zc, np.float32)
    rms_buffer = np.zeros(4 * zc, np.float32)
    sola_buffer = np.zeros(sola_buffer_frame, np.float32)
    cache_pitch, cache_pitchf = np.zeros(1024, np.int64), np.zeros(1024, np.float32)
    skip_head, return_length = extra // zc, (block + sola_buffer_frame + sola_search) // zc
    fade_in = np.sin(0.5 * np.pi * np.linspace(0.0, 1.0, sola_buffer_frame)) ** 2
    net, tgt_sr = conv.synthesizer, conv.sample_rate
    outputs = []
    for indata in blocks:
        if s.silence_threshold_db > -60:
            indata = np.append(rms_buffer, indata)
            rms = rms_loop(indata, 4 * zc, zc)[2:]
            rms_buffer = indata[-4 * zc :].copy()
            indata = indata[2 * zc - zc // 2 :].copy()
            db = 20 * np.log10(np.maximum(rms, 1e-5))
            db = np.maximum(db, db.max() - 80)
            for i in np.nonzero(db < s.silence_threshold_db)[0]:
                indata[i * zc : (i + 1) * zc] = 0
            indata = indata[zc // 2 :]
        input_wav = np.concatenate((input_wav[block:], np.zeros(block, np.float32)))
        input_wav[-indata.shape[0] :] = indata
        input_res = np.concatenate((input_res[160 * block // zc :], np.zeros(160 * block // zc, np.float32)))
        fresh = resample_by_definition(input_wav[-indata.shape[0] - 2 * zc :].astype(np.float64), rate, 16000)
        input_res[-160 * (indata.shape[0] // zc + 1) :] = fresh[160:]
        with torch.inference_mode():
            feats = conv.encoder.extract(torch.from_numpy(input_res)[None], "v2")[0].numpy()
        feats = np.concatenate((feats, feats[-1:]))
        p_len = input_res.shape[0] // 160
        x = input_res[-(160 * block // zc + 800) :]
        left = math.ceil(1.5 / 65 * 16000)
        pitch = parselmouth.Sound(np.pad(x.astype(np.float64), (left, left + 1)), 16000).to_pitch_ac(
            time_step=0.01, voicing_threshold=0.6, pitch_floor=65, pitch_ceiling=1100)
        f0 = pitch.selected_array["frequency"]
        f0 = np.pad(f0, (0, max(0, x.shape[0] // 160 + 1 - f0.shape[0])))[: x.shape[0] // 160 + 1]
        voiced = np.nonzero(f0)[0]
        if voiced.size:
            f0 = np.interp(np.arange(f0.shape[0]), voiced, f0[voiced])
        f0 = f0 * 2 ** (s.pitch_semitones / 12)
        shift = block // zc
        cache_pitch = np.concatenate((cache_pitch[shift:], cache_pitch[-shift:]))
        cache_pitchf = np.concatenate((cache_pitchf[shift:], cache_pitchf[-shift:]))
        cache_pitch[4 - f0.shape[0] :] = coarse_of(f0)[3:-1]
        cache_pitchf[4 - f0.shape[0] :] = f0[3:-1]
        phone = np.repeat(feats, 2, axis=0)[:p_len]
        with torch.inference_mode():
            g = net.emb_g(torch.tensor([0])).unsqueeze(-1)
            m_p, _, mask = net.enc_p(torch.from_numpy(phone)[None], torch.from_numpy(cache_pitch[-p_len:])[None],
                                     torch.tensor([p_len]))
            flow_head = max(skip_head - 24, 0)
            z = net.flow(m_p[:, :, flow_head:] * mask[:, :, flow_head:], mask[:, :, flow_head:], g=g, reverse=True)
            z = z[:, :, skip_head - flow_head : skip_head - flow_head + return_length]
            nsff0 = torch.from_numpy(cache_pitchf[-p_len:][skip_head : skip_head + return_length].copy())[None]
            audio = net.dec(z, nsff0, g=g, excitation_noise=False)[0, 0].numpy()
        infer_wav = resample_by_definition(audio.astype(np.float64), tgt_sr, rate) if tgt_sr != rate else audio
        if s.rms_mix_rate < 1:
            n = infer_wav.shape[0]
            rms1 = interp_align_corners(rms_loop(input_wav[extra:][:n].astype(np.float64), 4 * zc, zc), n + 1)[:-1]
            rms2 = interp_align_corners(rms_loop(infer_wav.astype(np.float64), 4 * zc, zc), n + 1)[:-1]
            infer_wav = infer_wav * (rms1 / np.maximum(rms2, 1e-3)) ** (1 - s.rms_mix_rate)
        head = infer_wav[: sola_buffer_frame + sola_search].astype(np.float64)
        nom = np.correlate(head, sola_buffer.astype(np.float64), mode="valid")
        den = np.sqrt(np.correlate(head**2, np.ones(sola_buffer_frame), mode="valid") + 1e-8)
        offset = int(np.argmax(nom / den))
        infer_wav = infer_wav[offset:].astype(np.float64)
        infer_wav[:sola_buffer_frame] = infer_wav[:sola_buffer_frame] * fade_in + sola_buffer * (1 - fade_in)
        sola_buffer = infer_wav[block : block + sola_buffer_frame].astype(np.float32)
        outputs.append(infer_wav[:block])
    return np.concatenate(outputs)


def speech_like(seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    f0 = 140 * (1 + 0.1 * np.sin(2 * np.pi * 0.7 * t))
    phase = 2 * np.pi * np.cumsum(f0) / rate
    envelope = np.clip(np.sin(2 * np.pi * 1.3 * t), 0, None)  # pauses: unvoiced stretches and gating
    return (0.3 * envelope * sum(np.sin(k * phase) / k for k in range(1, 6))).astype(np.float32)


@pytest.mark.parametrize(
    ("rate", "overrides"),
    [
        (48000, {}),
        (48000, {"silence_threshold_db": -35.0, "rms_mix_rate": 0.3, "pitch_semitones": 3.0}),
        (32000, {"block_time_s": 0.1, "crossfade_time_s": 0.08, "rms_mix_rate": 0.0}),
    ],
)
def test_engine_equals_rvc_callback_transcription(converter: VoiceConverter, rate: int, overrides: dict[str, Any]) -> None:
    values: dict[str, Any] = {"block_time_s": 0.25, "crossfade_time_s": 0.05, "extra_time_s": 0.5, "f0_method": "pm",
                              "deterministic": True}  # fmt: skip
    settings = StreamSettings(**(values | overrides))
    stream = RVCRealtimeStream(converter, settings, input_rate=rate)
    audio = speech_like(2.4, rate)
    blocks = [audio[i : i + stream.block_size] for i in range(0, audio.shape[0] - stream.block_size + 1, stream.block_size)]
    ours = np.concatenate([stream.process(b) for b in blocks])
    expected = rvc_callback_by_hand(converter, settings, rate, blocks)
    assert np.abs(expected).max() > 0.01  # the voice speaks
    snr = 10 * np.log10(np.sum(expected.astype(np.float64) ** 2) / np.sum((ours - expected) ** 2))
    assert snr > 80, f"SNR {snr:.1f} dB"


def test_sinc_resampler_matches_its_definition() -> None:
    x = np.random.default_rng(3).standard_normal(997)
    for orig, new in ((48000, 16000), (40000, 48000), (359, 320), (44100, 16000)):
        got = SincResampler(orig, new).numpy(x.astype(np.float32))
        want = resample_by_definition(x, orig, new)
        assert got.shape == want.shape == (math.ceil(new * 997 / orig),)
        assert np.abs(got - want).max() < 1e-4  # float32 kernel phases (torchaudio computes it in float32 too)


def test_our_synthesis_equals_rvcs_on_the_same_features_and_pitch(converter: VoiceConverter) -> None:
    """Ours decodes as RVC's skip_head / return_length does (flow from 24 frames before, excitation from
    the first returned frame): with no decoder context the same features and pitch give the same audio."""
    from infer_pack.realtime import StreamingConverter
    from infer_pack.stream_stages import BlockTimes

    settings = StreamSettings(extra_time_s=0.5, f0_method="pm", deterministic=True, decoder_context_frames=0)
    ours = StreamingConverter(converter, settings, input_rate=16000)
    rvc = RVCRealtimeStream(converter, settings, input_rate=16000)
    g = ours.geometry
    rng = np.random.default_rng(5)
    phone = rng.standard_normal((g.window, 768)).astype(np.float32)
    hz = np.where(rng.random(g.window) < 0.8, 120 + 60 * rng.random(g.window), 0).astype(np.float32)
    from infer_pack.f0 import f0_to_coarse

    coarse = f0_to_coarse(hz)
    a = ours._synthesize(phone, coarse, hz, BlockTimes())
    b = rvc._synthesize(torch.from_numpy(phone)[None], g.window, torch.from_numpy(coarse)[None],
                        torch.from_numpy(hz)[None], g.returned, BlockTimes())[0].numpy()  # fmt: skip
    assert a.shape == b.shape == (g.returned * converter.sample_rate // 100,)
    assert np.abs(a - b).max() < 1e-6


def test_match_and_preset_choose_the_engine_and_settings(converter: VoiceConverter) -> None:
    from infer_pack.errors import UserInputError
    from infer_pack.realtime import StreamingConverter, open_engine

    assert isinstance(open_engine(converter, StreamSettings(f0_method="pm", match="rvc"), input_rate=48000), RVCRealtimeStream)
    assert isinstance(open_engine(converter, StreamSettings(f0_method="pm"), input_rate=48000), StreamingConverter)
    fast = StreamSettings(extra_time_s=2.5, preset="fast").validated()
    assert (fast.extra_time_s, fast.encoder_int8, fast.decoder_int8, fast.decoder_context_frames) == (1.0, True, True, 0)
    int8 = StreamSettings(extra_time_s=2.5, preset="int8").validated()
    assert (int8.extra_time_s, int8.encoder_int8, int8.decoder_int8, int8.decoder_context_frames) == (2.5, True, True, 0)
    assert StreamSettings(decoder_context_frames=None, preset="int8").validated().decoder_context_frames is None
    with pytest.raises(UserInputError, match="match"):
        StreamSettings(match="other").validated()
    with pytest.raises(UserInputError, match="one rate"):
        RVCRealtimeStream(converter, StreamSettings(f0_method="pm"), input_rate=48000, output_rate=44100)


def test_int8_encoder_is_close_to_float32(reference: Path) -> None:
    from infer_pack.encoder_int8 import int8_encoder
    from infer_pack.hubert import load_content_encoder

    encoder = load_content_encoder(reference_file(reference, "tiny_hubert.pt"))
    quantized = int8_encoder(encoder)
    assert quantized is not encoder and quantized.model is not encoder.model
    wave = torch.from_numpy(speech_like(1.0, 16000))[None]
    a, b = encoder.extract(wave, "v2"), quantized.extract(wave, "v2")
    relative = float((a - b).norm() / a.norm())
    assert 0 < relative < 0.1, relative
