"""Audio loading/writing on files made here with PyAV's encoders and soundfile."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

from infer_pack.audio import iter_audio_chunks, load_audio, probe, write_wav
from infer_pack.errors import AudioLoadError
from infer_pack.params import Decoder


def _tone(sample_rate: int, seconds: float = 1.0, hz: float = 440.0, channels: int = 2) -> np.ndarray:
    """[channels, samples] float32; channel c has amplitude 0.5 / (c + 1)."""
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    return np.stack([0.5 / (c + 1) * np.sin(2 * np.pi * hz * t) for c in range(channels)]).astype(np.float32)


def _encode(path: Path, planes: np.ndarray, sample_rate: int, codec: str, fmt: str, layout: str) -> Path:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=sample_rate, layout=layout, options={"strict": "experimental"})
        stream.format = fmt
        data = planes if fmt.endswith("p") else planes.T.reshape(1, -1).copy()
        frame = av.AudioFrame.from_ndarray(data, format=fmt, layout=layout)
        frame.sample_rate = sample_rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def _expected_mono(planes: np.ndarray) -> np.ndarray:
    return planes.mean(axis=0)


def _sine_fit_amplitude(audio: np.ndarray, sample_rate: int, hz: float) -> float:
    t = np.arange(audio.size) / sample_rate
    basis = np.stack([np.sin(2 * np.pi * hz * t), np.cos(2 * np.pi * hz * t)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, audio.astype(np.float64), rcond=None)
    return float(np.hypot(*coef))


@pytest.mark.parametrize(
    ("suffix", "codec", "fmt", "rate", "tolerance"),
    [
        ("wav", "pcm_s16le", "s16", 44100, 1e-3),
        ("flac", "flac", "s16", 48000, 1e-3),
        ("mp3", "libmp3lame", "fltp", 44100, 0.02),
        ("ogg", "vorbis", "fltp", 44100, 0.03),
        ("opus", "libopus", "flt", 48000, 0.03),
    ],
)
@pytest.mark.parametrize(("decoder", "amplitude"), [("rvc", 0.75 * np.sqrt(0.5)), ("soxr", 0.375)])
def test_formats_decode_to_mono_16k(
    tmp_path: Path, suffix: str, codec: str, fmt: str, rate: int, tolerance: float, decoder: Decoder, amplitude: float
) -> None:
    planes = _tone(rate)
    data = (planes * 32767).astype(np.int16) if fmt == "s16" else planes
    path = _encode(tmp_path / f"tone.{suffix}", data, rate, codec, fmt, "stereo")
    audio = load_audio(path, 16000, decoder=decoder)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(audio.size - 16000) < 1300  # codec priming/padding only
    # stereo 0.5 and 0.25 at 440 Hz -> rvc (FFmpeg's matrix): 0.7071 * 0.75 = 0.530; soxr (mean): 0.375
    middle = audio[2000:12000]
    scaled = tolerance * amplitude / 0.375  # the tolerances are the codecs' level errors on the 0.375 mean
    assert _sine_fit_amplitude(middle, 16000, 440.0) == pytest.approx(amplitude, abs=scaled)


def test_wav_matches_average_of_channels_and_soxr(tmp_path: Path) -> None:
    import soxr

    planes = _tone(44100, hz=300.0)
    pcm = (planes * 32767).astype(np.int16)
    path = _encode(tmp_path / "s.wav", pcm, 44100, "pcm_s16le", "s16", "stereo")
    expected = soxr.resample((pcm.astype(np.float32) / 32768).mean(axis=0), 44100, 16000, quality="HQ")
    audio = load_audio(path, 16000, decoder="soxr")
    assert audio.shape == expected.shape
    np.testing.assert_allclose(audio, expected, atol=2e-5)


@pytest.mark.parametrize("rate", [8000, 22050, 192000])
@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "FLOAT", "DOUBLE", "PCM_U8"])
def test_rates_and_sample_formats(tmp_path: Path, rate: int, subtype: str) -> None:
    mono = _tone(rate, seconds=0.5, hz=200.0, channels=1)[0]
    path = tmp_path / f"x_{rate}_{subtype}.wav"
    soundfile.write(path, mono, rate, subtype=subtype)
    audio = load_audio(path, 16000)
    assert audio.size == 8000
    precision = 0.02 if subtype == "PCM_U8" else 1e-3
    assert _sine_fit_amplitude(audio[800:7200], 16000, 200.0) == pytest.approx(0.5, abs=precision)
    assert probe(path).sample_rate == rate


def test_multichannel_is_averaged(tmp_path: Path) -> None:
    planes = _tone(16000, seconds=0.5, hz=250.0, channels=6)  # 5.1
    path = tmp_path / "six.wav"
    soundfile.write(path, planes.T, 16000, subtype="FLOAT")
    audio = load_audio(path, 16000, decoder="soxr")  # "rvc" uses FFmpeg's 5.1 matrix (test_audio_rvc.py)
    np.testing.assert_allclose(audio, planes.mean(axis=0), atol=1e-6)
    info = probe(path)
    assert info.channels == 6 and info.duration_s == pytest.approx(0.5)


def test_same_rate_is_bit_exact_and_float_not_clipped(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    mono = (rng.standard_normal(4000) * 0.8).astype(np.float32)
    mono[10] = 1.7
    path = tmp_path / "f.wav"
    soundfile.write(path, mono, 16000, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(path, 16000), mono)


def test_nan_and_inf_samples_become_zero(tmp_path: Path) -> None:
    mono = np.full(16000, 0.1, dtype=np.float32)
    mono[100], mono[200], mono[300] = np.nan, np.inf, -np.inf
    path = tmp_path / "nan.wav"
    soundfile.write(path, mono, 16000, subtype="FLOAT")
    audio = load_audio(path, 16000)
    assert np.isfinite(audio).all()
    assert audio[100] == 0 and audio[200] == 0 and audio[300] == 0 and audio[400] == pytest.approx(0.1)
    assert np.isfinite(load_audio(path, 40000)).all()


def test_unicode_and_spaces_in_names(tmp_path: Path) -> None:
    path = tmp_path / "dossier été" / "voix 声音 🎤.wav"
    path.parent.mkdir()
    soundfile.write(path, np.zeros(1600, dtype=np.float32), 16000)
    assert load_audio(path, 16000).size == 1600
    assert load_audio(str(path), 32000).size == 3200


def _expect_error(path: Path, *words: str) -> AudioLoadError:
    with pytest.raises(AudioLoadError) as info:
        load_audio(path, 16000)
    message = str(info.value)
    assert str(path) in message
    for word in words:
        assert word in message
    return info.value


def test_errors_name_the_file_and_the_fix(tmp_path: Path) -> None:
    _expect_error(tmp_path / "missing.wav", "not found")
    (tmp_path / "folder.wav").mkdir()
    _expect_error(tmp_path / "folder.wav", "folder")
    (tmp_path / "zero.wav").write_bytes(b"")
    _expect_error(tmp_path / "zero.wav", "empty")
    (tmp_path / "text.wav").write_text("this is not audio at all\n" * 20)
    _expect_error(tmp_path / "text.wav", "not a readable audio file", "re-export")
    (tmp_path / "noise.mp3").write_bytes(np.random.default_rng(1).bytes(4000))
    _expect_error(tmp_path / "noise.mp3", "not a readable audio file")
    soundfile.write(tmp_path / "nosamples.wav", np.zeros(0, dtype=np.float32), 16000)
    _expect_error(tmp_path / "nosamples.wav", "no audio samples")


def test_truncated_files(tmp_path: Path) -> None:
    planes = (_tone(44100) * 32767).astype(np.int16)
    for suffix, codec in (("wav", "pcm_s16le"), ("flac", "flac")):
        whole = _encode(tmp_path / f"whole.{suffix}", planes, 44100, codec, "s16", "stereo").read_bytes()
        cut = tmp_path / f"cut.{suffix}"
        cut.write_bytes(whole[: len(whole) // 2])
        error = _expect_error(cut, "re-download")
        assert "truncated" in error.reason or "cut short" in error.reason
    assert 7000 < load_audio(tmp_path / "cut.wav", 16000, allow_truncated=True).size < 9000
    assert 4000 < load_audio(tmp_path / "cut.flac", 16000, allow_truncated=True).size < 9000


def test_too_long_is_refused_and_streaming_matches(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    mono = (0.1 * rng.standard_normal(44100 * 3)).astype(np.float32)
    path = tmp_path / "long.wav"
    soundfile.write(path, mono, 44100, subtype="FLOAT")
    with pytest.raises(AudioLoadError, match="iter_audio_chunks"):
        load_audio(path, 16000, max_duration_s=2.0)
    whole = load_audio(path, 16000)
    chunks = list(iter_audio_chunks(path, 16000, chunk_seconds=0.7))
    assert [c.size for c in chunks[:-1]] == [11200] * (len(chunks) - 1)
    np.testing.assert_array_equal(np.concatenate(chunks), whole)


def test_write_wav_atomic_float_and_pcm16(tmp_path: Path) -> None:
    audio = np.array([0.0, 0.5, -0.5, 1.5, -2.0, np.nan], dtype=np.float32)
    target = tmp_path / "sub" / "out.wav"
    write_wav(target, audio, 40000)
    data, rate = soundfile.read(target, dtype="float32")
    assert rate == 40000 and soundfile.info(target).subtype == "FLOAT"
    np.testing.assert_array_equal(data, [0.0, 0.5, -0.5, 1.5, -2.0, 0.0])
    write_wav(target, audio, 16000, subtype="PCM_16")
    data, _ = soundfile.read(target, dtype="int16")
    assert soundfile.info(target).subtype == "PCM_16"
    np.testing.assert_array_equal(data, [0, 16384, -16384, 32767, -32768, 0])
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.wav"]  # no temp files left
    with pytest.raises(ValueError):
        write_wav(tmp_path / "bad.wav", np.zeros((2, 2, 2)), 16000)
    assert not (tmp_path / "bad.wav").exists()


def test_probe_reports_codec_and_duration(tmp_path: Path) -> None:
    planes = _tone(44100)
    path = _encode(tmp_path / "p.mp3", planes, 44100, "libmp3lame", "fltp", "stereo")
    info = probe(path)
    assert info.codec.startswith("mp3") and info.channels == 2 and info.sample_rate == 44100
    assert info.duration_s == pytest.approx(1.0, abs=0.1)
    with pytest.raises(AudioLoadError):
        probe(tmp_path / "nothing.flac")
