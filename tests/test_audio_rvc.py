"""The "rvc" decode gives the samples of the ffmpeg command line RVC runs; "soxr" averages and uses soxr.

RVC decodes every input with `ffmpeg -i <file> -f f32le -acodec pcm_f32le -ac 1 -ar <rate> -`
(`infer/lib/audio.py`, release 20240604). The reference here is that command run with Debian's
ffmpeg binary (FFmpeg 5.1), independent of the FFmpeg that PyAV bundles (8.x).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile

from infer_pack.audio import iter_audio_chunks, load_audio

# Largest difference allowed between our decode and the binary's: float rounding of two FFmpeg builds
# (the WAV/FLAC/MP3 cases measure 0.0, Vorbis/Opus/AAC decoders 1.8e-7 at most).
FLOAT_NOISE = 1e-6
SQRT_HALF = np.float32(np.sqrt(0.5))


def ffmpeg_decode(binary: str, path: Path, sample_rate: int) -> np.ndarray:
    """RVC's command line, run by the real ffmpeg: mono float32 [T] at `sample_rate`."""
    done = subprocess.run(
        [binary, "-nostdin", "-threads", "0", "-i", str(path), "-f", "f32le", "-acodec", "pcm_f32le", "-ac", "1",
         "-ar", str(sample_rate), "-"],
        capture_output=True, check=True,
    )  # fmt: skip
    return np.frombuffer(done.stdout, dtype=np.float32)


def speech_like(sample_rate: int, channels: int, seconds: float = 1.3, seed: int = 0) -> np.ndarray:
    """[T, channels] float32: a different modulated tone per channel plus noise up to the Nyquist rate."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    rows = [0.4 * np.sin(2 * np.pi * (180 + 170 * c) * t) * np.sin(2 * np.pi * 1.1 * t)
            + 0.05 * rng.standard_normal(t.size) for c in range(channels)]  # fmt: skip
    return np.stack(rows, axis=1).astype(np.float32)


def _assert_same(ours: np.ndarray, reference: np.ndarray) -> float:
    assert ours.dtype == np.float32 and ours.shape == reference.shape
    worst = float(np.abs(ours - reference).max())
    assert worst <= FLOAT_NOISE, worst
    return worst


@pytest.mark.parametrize("target", [16000, 40000])
@pytest.mark.parametrize("subtype", ["PCM_16", "FLOAT"])
@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000])
def test_wav_decodes_as_the_ffmpeg_command_line(
    ffmpeg_binary: str, tmp_path: Path, rate: int, channels: int, subtype: str, target: int
) -> None:
    path = tmp_path / "in.wav"
    soundfile.write(str(path), speech_like(rate, channels), rate, subtype=subtype)
    reference = ffmpeg_decode(ffmpeg_binary, path, target)
    assert reference.size == round(1.3 * target)
    _assert_same(load_audio(path, target), reference)
    _assert_same(load_audio(path, target, decoder="rvc"), reference)


@pytest.mark.parametrize("target", [16000, 40000])
@pytest.mark.parametrize(("suffix", "codec"), [("flac", "flac"), ("ogg", "libvorbis"), ("mp3", "libmp3lame")])
def test_compressed_formats_decode_as_the_ffmpeg_command_line(
    ffmpeg_binary: str, tmp_path: Path, suffix: str, codec: str, target: int
) -> None:
    source = tmp_path / "src.wav"
    soundfile.write(str(source), speech_like(44100, 2, seconds=2.0), 44100, subtype="FLOAT")
    path = tmp_path / f"in.{suffix}"
    subprocess.run([ffmpeg_binary, "-nostdin", "-y", "-i", str(source), "-c:a", codec, str(path)],
                   capture_output=True, check=True)  # fmt: skip
    _assert_same(load_audio(path, target), ffmpeg_decode(ffmpeg_binary, path, target))


@pytest.mark.parametrize("channels", [3, 4, 6, 8])
def test_surround_layouts_use_ffmpegs_downmix(ffmpeg_binary: str, tmp_path: Path, channels: int) -> None:
    path = tmp_path / f"c{channels}.wav"
    soundfile.write(str(path), speech_like(48000, channels, seconds=0.5), 48000, subtype="FLOAT")
    reference = ffmpeg_decode(ffmpeg_binary, path, 16000)
    _assert_same(load_audio(path, 16000), reference)
    # FFmpeg's matrix is not the channel mean: the two decoders differ by more than resampling noise here.
    assert np.abs(load_audio(path, 16000, decoder="soxr") - reference).max() > 0.05


def test_identical_channels_mix_to_0_7071_times_their_sum(tmp_path: Path) -> None:
    mono = speech_like(16000, 1, seconds=0.5)[:, 0]
    path = tmp_path / "twin.wav"
    soundfile.write(str(path), np.stack([mono, mono], axis=1), 16000, subtype="FLOAT")
    rvc = load_audio(path, 16000, decoder="rvc")
    np.testing.assert_allclose(rvc, SQRT_HALF * 2 * mono, rtol=0, atol=2e-7)
    assert float(np.abs(rvc).max() / np.abs(mono).max()) == pytest.approx(np.sqrt(2), rel=1e-6)
    np.testing.assert_array_equal(load_audio(path, 16000, decoder="soxr"), mono)  # (L + R) / 2


def test_streaming_gives_the_same_samples(tmp_path: Path) -> None:
    path = tmp_path / "s.wav"
    soundfile.write(str(path), speech_like(44100, 2, seconds=2.0), 44100, subtype="PCM_16")
    whole = load_audio(path, 40000, decoder="rvc")
    chunks = list(iter_audio_chunks(path, 40000, chunk_seconds=0.3, decoder="rvc"))
    assert [c.size for c in chunks[:-1]] == [12000] * (len(chunks) - 1)
    np.testing.assert_array_equal(np.concatenate(chunks), whole)


@pytest.mark.parametrize("channels", [9, 64])
def test_channels_ffmpeg_cannot_mix_are_averaged(tmp_path: Path, channels: int) -> None:
    """The ffmpeg binary refuses these ("Rematrix is needed ... not enough information"); we average."""
    data = speech_like(16000, channels, seconds=0.5)
    path = tmp_path / f"c{channels}.wav"
    soundfile.write(str(path), data, 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path, 16000), data.mean(axis=1), atol=1e-7)
    resampled = load_audio(path, 40000)
    assert resampled.shape == (20000,) and np.all(np.isfinite(resampled))


def test_non_finite_samples_do_not_spread_through_the_resampler(tmp_path: Path) -> None:
    stereo = np.full((16000, 2), 0.1, dtype=np.float32)
    stereo[100, 0], stereo[8000, 1] = np.nan, np.inf
    path = tmp_path / "nan.wav"
    soundfile.write(str(path), stereo, 16000, subtype="FLOAT")
    audio = load_audio(path, 40000)
    assert np.isfinite(audio).all()
    assert np.abs(audio[5000:15000] - 0.2 * SQRT_HALF).max() < 1e-5  # far from the broken samples: untouched


def test_unknown_decoder_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.wav"
    soundfile.write(str(path), np.zeros(160, dtype=np.float32), 16000)
    with pytest.raises(ValueError, match="decoder"):
        load_audio(path, 16000, decoder="sox")  # type: ignore[arg-type]
