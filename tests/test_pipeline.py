"""The conversion pipeline with the reference voice models.

Content encoder: the tiny reference HuBERT (64-dim outputs) followed by a FIXED RANDOM PROJECTION
to the voice's content width (256 for v1, 768 for v2). The real hubert_base.pt cannot be shipped;
the projection only makes the shapes fit, so these tests check the pipeline's mechanics (lengths,
rates, chunking, pitch, retrieval, determinism), not the sound of a trained voice.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import reference_file, synthetic_voice

from infer_pack.errors import UserInputError
from infer_pack.pipeline import (
    CPU_WINDOWS,
    ConversionParams,
    VoiceConverter,
    Windows,
    limit_peak,
    mix_rms,
    output_rate,
    plan_chunks,
    protect_unvoiced,
    resample,
    split_points,
)

SHORT_WINDOWS = Windows(x_pad=0.1, x_query=6, x_center=38, x_max=41)  # less context: faster tests


class ProjectedEncoder:
    """tiny_hubert.pt's last layer times a fixed random [64, dim] matrix (seeded)."""

    def __init__(self, path: Path, dim: int) -> None:
        from infer_pack.hubert import load_content_encoder

        self.encoder = load_content_encoder(path)
        generator = torch.Generator().manual_seed(1234)
        self.projection = torch.randn(self.encoder.feature_dim("v2"), dim, generator=generator) / 8.0

    def extract(self, wave_16k: torch.Tensor, version: str) -> torch.Tensor:
        return self.encoder.extract(wave_16k, "v2") @ self.projection  # [B, T, dim]


def tone(seconds: float, f0_hz: float = 150.0) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    phase = 2 * np.pi * f0_hz * t
    return (0.2 * sum(np.sin(k * phase) / k for k in range(1, 9))).astype(np.float32)


@pytest.fixture(scope="module")
def v1_converter(reference: Path) -> VoiceConverter:
    from infer_pack.checkpoint import load_voice

    voice = load_voice(reference_file(reference, "ref_v1_32k_nof0_slim.pth"))
    encoder = ProjectedEncoder(reference_file(reference, "tiny_hubert.pt"), 256)
    return VoiceConverter(voice, encoder, windows=SHORT_WINDOWS)


@pytest.fixture(scope="module")
def v2_converter(reference: Path) -> VoiceConverter:
    from infer_pack.checkpoint import load_voice

    voice = load_voice(reference_file(reference, "ref_v2_40k_f0.pth"))
    encoder = ProjectedEncoder(reference_file(reference, "tiny_hubert.pt"), 768)
    return VoiceConverter(voice, encoder, windows=SHORT_WINDOWS)


@pytest.fixture(scope="module")
def v1_output(v1_converter: VoiceConverter) -> tuple[np.ndarray, np.ndarray, int]:
    audio = synthetic_voice(0.6, 16000, seed=3)
    out, rate = v1_converter.convert(audio, ConversionParams(f0_method="pm", seed=0))
    return audio, out, rate


def test_output_length_and_rate_follow_rvc(v1_converter: VoiceConverter, v1_output: tuple) -> None:
    audio, out, rate = v1_output
    assert rate == 32000 and out.dtype == np.float32
    # RVC: pad x_pad each side, HuBERT frames (N - 400) // 320 + 1, x2, x hop 320, minus x_pad each side.
    padded = audio.size + 2 * 1600
    expected = 2 * ((padded - 400) // 320 + 1) * 320 - 2 * 3200
    assert out.size == expected == v1_converter.expected_length(audio.size)
    assert np.abs(out).max() <= 0.99 + 1e-6 and np.abs(out).max() > 1e-3
    # RVC's CPU windows by default: 1 s of context on each side.
    default = VoiceConverter(v1_converter.voice, v1_converter.encoder, synthesizer=v1_converter.synthesizer)
    assert default.windows == CPU_WINDOWS
    padded = 160000 + 2 * 16000
    assert default.expected_length(160000) == 2 * ((padded - 400) // 320 + 1) * 320 - 2 * 32000


def test_same_seed_same_output_other_seed_differs(v1_converter: VoiceConverter, v1_output: tuple) -> None:
    audio, out, _ = v1_output
    again, _ = v1_converter.convert(audio, ConversionParams(f0_method="pm", seed=0))
    np.testing.assert_array_equal(again, out)
    other, _ = v1_converter.convert(audio, ConversionParams(f0_method="pm", seed=1))
    assert np.abs(other - out).max() > 1e-4


def test_index_rate_zero_leaves_features_alone(v1_converter: VoiceConverter, v1_output: tuple, tmp_path: Path) -> None:
    from infer_pack.retrieval import load_index
    from train.index import build_index_from_features

    rng = np.random.default_rng(0)
    result = build_index_from_features(rng.standard_normal((400, 256)).astype(np.float32), tmp_path, "t", "v1")
    index = load_index(result.added_path)
    audio, out, _ = v1_output
    with_index = VoiceConverter(
        v1_converter.voice, v1_converter.encoder, index, synthesizer=v1_converter.synthesizer, windows=SHORT_WINDOWS
    )
    assert with_index.windows == v1_converter.windows
    same, _ = with_index.convert(audio, ConversionParams(f0_method="pm", seed=0, index_rate=0.0))
    np.testing.assert_array_equal(same, out)


def test_transpose_up_an_octave_doubles_output_f0(v2_converter: VoiceConverter) -> None:
    from scipy import signal

    from infer_pack.f0 import estimate_f0

    audio = tone(0.6, 150.0)
    band = signal.butter(4, [60, 1000], btype="band", fs=16000)
    medians, peaks = [], []
    for semitones in (0, 12):
        params = ConversionParams(f0_method="pm", pitch_semitones=semitones, index_rate=0.0, rms_mix_rate=1.0)
        out, rate = v2_converter.convert(audio, params)
        assert rate == 40000 and out.size == v2_converter.expected_length(audio.size)
        out_16k = signal.filtfilt(*band, resample(out, rate, 16000))
        f0 = estimate_f0(out_16k, "pm")
        voiced = f0[f0 > 0]
        assert voiced.size > 20, "pm found no pitch in the output"
        medians.append(float(np.median(voiced)))
        spectrum = np.abs(np.fft.rfft(out_16k * np.hanning(out_16k.size)))
        peaks.append(float(np.argmax(spectrum) * 16000 / out_16k.size))
    # The random-weight decoder leaves a strong 100 Hz frame-rate pattern, so the waveform's period is
    # that of gcd(f0, 100 Hz): pm reads 50 Hz for 150 Hz and 100 Hz for 300 Hz. The ratio is what
    # transposing must change; the spectral peak shows the fundamental itself.
    assert medians[1] / medians[0] == pytest.approx(2.0, rel=0.05)
    assert peaks[0] == pytest.approx(150.0, rel=0.05) and peaks[1] == pytest.approx(300.0, rel=0.05)


def test_long_input_is_cut_in_quiet_places() -> None:
    rng = np.random.default_rng(0)
    audio = 0.3 * rng.standard_normal(16000 * 100)
    quiet = [(35, 36), (77, 78)]  # seconds; each lies within x_query of a 38 s multiple
    for lo, hi in quiet:
        audio[lo * 16000 : hi * 16000] = 0.0
    points = split_points(audio, CPU_WINDOWS)
    assert len(points) == 2
    for point, (lo, hi) in zip(points, quiet):
        assert lo * 16000 <= point < hi * 16000
    # The chunks cover the padded input with 2 x_pad of overlap between neighbours.
    n_padded = audio.size + 2 * 16000
    chunks = plan_chunks(n_padded, points, CPU_WINDOWS)
    assert chunks[0].start == 0 and chunks[-1].stop == n_padded
    for left, right in itertools.pairwise(chunks):
        assert left.stop == right.start + 2 * 16000 + 160
    assert split_points(audio[: 16000 * 30], CPU_WINDOWS) == []
    # A 10-minute input is worked on in pieces of at most x_center + x_query + 2 x_pad seconds.
    ten_minutes = 16000 * 600
    chunks = plan_chunks(ten_minutes + 2 * 16000, split_points(np.zeros(ten_minutes), CPU_WINDOWS), CPU_WINDOWS)
    assert len(chunks) == 600 // 38 + 1
    assert max(c.stop - c.start for c in chunks) <= 16000 * (38 + 6 + 2) + 160


def rvc_split_points(audio: np.ndarray, windows: Windows) -> list[int]:
    """RVC's own cut search (Pipeline.pipeline's audio_sum loop), written out literally."""
    window, t_query, t_center, t_max = 160, 16000 * windows.x_query, 16000 * windows.x_center, 16000 * windows.x_max
    audio_pad = np.pad(audio, (window // 2, window // 2), mode="reflect")
    opt_ts: list[int] = []
    if audio_pad.shape[0] > t_max:
        audio_sum = np.zeros_like(audio)
        for i in range(window):
            audio_sum += np.abs(audio_pad[i : i - window])
        for t in range(t_center, audio.shape[0], t_center):
            region = audio_sum[t - t_query : t + t_query]
            opt_ts.append(t - t_query + int(np.where(region == region.min())[0][0]))
    return opt_ts


def test_split_search_matches_rvcs_audio_sum() -> None:
    rng = np.random.default_rng(1)
    audio = rng.standard_normal(16000 * 80)
    audio[16000 * 37 + 5000 : 16000 * 37 + 9000] *= 0.01
    assert split_points(audio, CPU_WINDOWS) == rvc_split_points(audio, CPU_WINDOWS)
    # Exact ties (digital silence) break towards the first quiet sample, as RVC's np.where(...)[0][0].
    audio[16000 * 34 : 16000 * 36] = 0.0
    audio[16000 * 73 : 16000 * 74] = 0.0
    points = split_points(audio, CPU_WINDOWS)
    assert points == rvc_split_points(audio, CPU_WINDOWS)
    assert points[0] == 16000 * 34 + 80 and points[1] == 16000 * 73 + 80


def test_loud_tone_is_cut_in_its_pause_not_where_its_samples_cancel() -> None:
    """A sustained 100 Hz tone sums to ~0 over every 10 ms window (one period), so a search on the
    absolute value of the plain sum finds 'silence' anywhere in the tone. RVC sums absolute values."""
    t = np.arange(16000 * 50) / 16000
    audio = 0.37 * np.sin(2 * np.pi * 100.0 * t)  # RMS 0.26
    pause = slice(int(16000 * 35.2), int(16000 * 35.7))
    audio[pause] = 0.0009 * np.random.default_rng(2).standard_normal(pause.stop - pause.start)
    points = split_points(audio, CPU_WINDOWS)
    assert len(points) == 1
    assert pause.start <= points[0] and points[0] + 160 <= pause.stop, f"cut at {points[0] / 16000:.2f} s"
    assert points == rvc_split_points(audio, CPU_WINDOWS)


@pytest.mark.parametrize("seed", range(4))
def test_cut_lands_in_the_quietest_window_for_signals_with_an_offset(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 16000 * 45
    offset = rng.uniform(-0.4, 0.4)
    envelope = np.repeat(rng.uniform(0.05, 1.0, n // 1600 + 1), 1600)[:n]
    audio = offset + envelope * rng.standard_normal(n) * 0.2
    # Samples alternating +a/-a are loud but cancel in a plain sum.
    loud = slice(16000 * 36, 16000 * 37)
    audio[loud] = 0.8 * np.where(np.arange(loud.stop - loud.start) % 2 == 0, 1.0, -1.0)
    (point,) = split_points(audio, CPU_WINDOWS)
    padded = np.abs(np.pad(audio, (80, 80), mode="reflect"))
    loudness = np.lib.stride_tricks.sliding_window_view(padded, 160).sum(axis=-1)[:n]  # independent brute force
    lo, hi = 16000 * 32, 16000 * 44
    assert lo <= point < hi
    assert loudness[point] == pytest.approx(loudness[lo:hi].min(), rel=1e-9, abs=1e-12)
    assert not (loud.start - 160 <= point < loud.stop)


def test_protect_keeps_unvoiced_frames_from_the_unblended_features() -> None:
    blended = np.full((4, 3), 2.0, np.float32)
    original = np.zeros((4, 3), np.float32)
    hz = np.array([0.0, 150.0, 0.5, 220.0])
    out = protect_unvoiced(blended, original, hz, 0.25)
    np.testing.assert_allclose(out[:, 0], [0.5, 2.0, 0.5, 2.0])


def test_rms_mix_resample_and_peak() -> None:
    src = synthetic_voice(2.0, 16000, seed=1).astype(np.float64)
    out = np.random.default_rng(0).standard_normal(80000).astype(np.float32) * 0.1
    np.testing.assert_allclose(mix_rms(src, out, 40000, 1.0), out, rtol=1e-5, atol=1e-7)
    mixed = mix_rms(src, out, 40000, 0.0)  # takes the input's envelope
    half = 20000
    src_rms = np.sqrt(np.mean(src[8000 : 8000 + 8000] ** 2))
    assert np.sqrt(np.mean(mixed[half : half + 20000] ** 2)) == pytest.approx(src_rms, rel=0.35)
    assert output_rate(40000, 0) == 40000 and output_rate(40000, 8000) == 40000 and output_rate(40000, 44100) == 44100
    assert resample(out, 40000, 44100).size == 88200
    loud = np.array([0.0, 2.0, -1.0], np.float32)
    np.testing.assert_allclose(limit_peak(loud), loud / (2.0 / 0.99))
    quiet = np.array([0.5, -0.2], np.float32)
    np.testing.assert_array_equal(limit_peak(quiet), quiet)


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(UserInputError, match="index_rate"):
        ConversionParams(index_rate=1.5).validated()
    with pytest.raises(UserInputError, match="f0 method"):
        ConversionParams(f0_method="crepe").validated()
    with pytest.raises(UserInputError, match="f0 file"):
        ConversionParams(f0_override_path=Path("/nonexistent/f0.txt")).validated()
    assert ConversionParams(pitch_semitones=12, filter_radius=5).validated().filter_radius == 5


def gapped_tone(seconds: float = 1.2) -> np.ndarray:
    """A 150 Hz voice with two silent gaps (unvoiced frames) and a faint noise floor."""
    audio = tone(seconds, 150.0)
    audio[int(0.35 * 16000) : int(0.5 * 16000)] = 0.0
    audio[int(0.8 * 16000) : int(0.9 * 16000)] = 0.0
    return audio + 1e-4 * np.random.default_rng(5).standard_normal(audio.size).astype(np.float32)


def test_pitch_gaps_keep_leaves_zeros_interpolate_fills_them() -> None:
    from infer_pack.pipeline import pitch_track

    audio = np.pad(gapped_tone().astype(np.float64), 1600, mode="reflect")
    n_frames = audio.size // 160
    kept = pitch_track(audio, n_frames, ConversionParams(f0_method="pm"), SHORT_WINDOWS)
    filled = pitch_track(audio, n_frames, ConversionParams(f0_method="pm", pitch_gaps="interpolate"), SHORT_WINDOWS)
    gaps = kept.hz == 0
    assert gaps.sum() > 20 and (~gaps).sum() > 40
    assert (filled.hz > 100).all() and (filled.coarse > 1).all()
    np.testing.assert_array_equal(filled.hz[~gaps], kept.hz[~gaps])
    assert (kept.coarse[gaps] == 1).all()
    with pytest.raises(UserInputError, match="pitch gaps"):
        ConversionParams(pitch_gaps="fill").validated()


def test_protect_acts_only_when_pitch_gaps_are_kept(v2_converter: VoiceConverter, tmp_path: Path) -> None:
    from infer_pack.retrieval import load_index
    from train.index import build_index_from_features

    features = np.random.default_rng(0).standard_normal((400, 768)).astype(np.float32)
    index = load_index(build_index_from_features(features, tmp_path, "t", "v2").added_path)
    converter = VoiceConverter(v2_converter.voice, v2_converter.encoder, index, synthesizer=v2_converter.synthesizer,
                               windows=SHORT_WINDOWS)
    audio = gapped_tone()
    outputs = {}
    for gaps in ("keep", "interpolate"):
        for protect in (0.33, 0.5):
            params = ConversionParams(f0_method="pm", index_rate=0.75, protect=protect, pitch_gaps=gaps, seed=0)
            outputs[gaps, protect] = converter.convert(audio, params)[0]
    assert np.abs(outputs["keep", 0.33] - outputs["keep", 0.5]).max() > 1e-3
    np.testing.assert_array_equal(outputs["interpolate", 0.33], outputs["interpolate", 0.5])
    assert np.abs(outputs["keep", 0.5] - outputs["interpolate", 0.5]).max() > 1e-3


def test_training_and_conversion_fill_gaps_with_one_helper(monkeypatch: pytest.MonkeyPatch) -> None:
    import infer_pack.f0 as f0lib
    from infer_pack.pipeline import pitch_track
    from train.extract_f0 import f0_for_segment

    calls: list[str] = []
    real = f0lib.fill_pitch_gaps

    def spy(f0: np.ndarray, mode: str) -> np.ndarray:
        calls.append(mode)
        return real(f0, mode)  # type: ignore[arg-type]

    monkeypatch.setattr(f0lib, "fill_pitch_gaps", spy)
    audio = gapped_tone().astype(np.float64)
    result = f0_for_segment(audio, "pm")
    assert result is not None and (result[0] > 0).all()
    f0_for_segment(audio, "pm", interpolate_unvoiced=False)
    pitch_track(audio, audio.size // 160, ConversionParams(f0_method="pm", pitch_gaps="interpolate"), SHORT_WINDOWS)
    assert calls == ["interpolate", "keep", "interpolate"]
