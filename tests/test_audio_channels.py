"""Decoding any channel count (1..64) and sample layout without a native crash.

FFmpeg keeps the planes of channel 9 on outside the frame's first eight data pointers, and reading a
planar frame of 8 or more channels through PyAV's `to_ndarray` crashed the process (segfault). These
files cover packed integer/float/double PCM (WAV, FLAC) and planar float (Vorbis, AAC) decoders.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

from infer_pack.audio import load_audio, probe

RATE = 48_000
SECONDS = 0.5
STANDARD_LAYOUTS = {1: "mono", 2: "stereo", 8: "7.1"}


def _channels(count: int) -> np.ndarray:
    """[T, count] float32: channel c is a 220 Hz sine of amplitude 0.4 / (c + 1)."""
    t = np.arange(int(RATE * SECONDS)) / RATE
    return np.stack([0.4 / (c + 1) * np.sin(2 * np.pi * 220.0 * t) for c in range(count)], axis=1).astype(np.float32)


def _expected_mono(count: int) -> np.ndarray:
    return _channels(count).mean(axis=1)


def _transcode_to_m4a(src: Path, dst: Path) -> None:
    """WAV -> AAC in MP4, all inside FFmpeg (no planar frame goes through numpy on the way)."""
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w", format="ipod") as out:
        source = inp.streams.audio[0]
        layout = STANDARD_LAYOUTS[source.channels]
        stream = out.add_stream("aac", rate=source.rate, layout=layout)
        stream.format = "fltp"
        converter = av.AudioResampler(format="fltp", layout=layout, rate=source.rate)
        for frame in inp.decode(source):
            frame.pts = None
            for converted in converter.resample(frame):
                for packet in stream.encode(converted):
                    out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def _write(tmp_path: Path, container: str, subtype: str, count: int) -> Path:
    data = _channels(count)
    if container == "wav":
        path = tmp_path / f"c{count}_{subtype}.wav"
        soundfile.write(str(path), data, RATE, subtype=subtype, format="WAV")
    elif container == "flac":
        path = tmp_path / f"c{count}_{subtype}.flac"
        soundfile.write(str(path), data, RATE, subtype=subtype, format="FLAC")
    elif container == "ogg":
        path = tmp_path / f"c{count}.ogg"
        soundfile.write(str(path), data, RATE, subtype="VORBIS", format="OGG")
    else:
        wav = tmp_path / f"c{count}_src.wav"
        soundfile.write(str(wav), data, RATE, subtype="PCM_16", format="WAV")
        path = tmp_path / f"c{count}.m4a"
        _transcode_to_m4a(wav, path)
    return path


# (container, libsndfile subtype, the decoder's sample format, channel counts the encoder supports)
CASES = [
    ("wav", "PCM_16", "s16", (1, 2, 3, 8, 9, 16, 64)),
    ("wav", "PCM_32", "s32", (1, 2, 8, 9, 64)),
    ("wav", "FLOAT", "flt", (1, 2, 8, 9, 16, 64)),
    ("wav", "DOUBLE", "dbl", (1, 8, 64)),
    ("flac", "PCM_16", "s16", (1, 2, 8)),
    ("flac", "PCM_24", "s32", (2, 8)),
    ("ogg", "VORBIS", "fltp", (1, 2, 8, 9, 16, 64)),
    ("m4a", "AAC", "fltp", (1, 2, 8)),
]
PARAMS = [
    pytest.param(container, subtype, fmt, count, id=f"{container}-{fmt}-{count}ch")
    for container, subtype, fmt, counts in CASES
    for count in counts
]


@pytest.mark.parametrize(("container", "subtype", "sample_format", "count"), PARAMS)
def test_any_channel_count_decodes_with_both_decoders(
    tmp_path: Path, container: str, subtype: str, sample_format: str, count: int
) -> None:
    """"rvc" mixes with FFmpeg's matrix (test_audio_rvc.py compares it with the ffmpeg binary): no crash,
    finite, the file's length and tone; unnamed layouts FFmpeg cannot mix (9, 64 channels) are averaged."""
    path = _write(tmp_path, container, subtype, count)
    mono = load_audio(path, RATE, decoder="rvc")
    expected = _expected_mono(count)
    assert np.all(np.isfinite(mono))
    if container in ("wav", "flac"):
        assert mono.shape == expected.shape
        if count in (1, 9, 64):
            tolerance = 1e-6 if subtype in ("FLOAT", "DOUBLE") else 2e-4
            np.testing.assert_allclose(mono, expected, atol=tolerance)
    else:
        assert abs(mono.size - expected.size) < RATE // 10
    spectrum = np.abs(np.fft.rfft(mono))
    assert np.argmax(spectrum) * RATE / mono.size == pytest.approx(220.0, abs=4.0)
    assert np.all(np.isfinite(load_audio(path, 16_000, decoder="rvc")))


@pytest.mark.parametrize(("container", "subtype", "sample_format", "count"), PARAMS)
def test_any_channel_count_decodes_to_the_channel_mean(
    tmp_path: Path, container: str, subtype: str, sample_format: str, count: int
) -> None:
    import av

    path = _write(tmp_path, container, subtype, count)
    with av.open(str(path)) as handle:  # the file really has the layout this case is about
        stream = handle.streams.audio[0]
        assert stream.channels == count
        assert stream.format.name == sample_format
    assert probe(path).channels == count

    mono = load_audio(path, RATE, decoder="soxr")
    expected = _expected_mono(count)
    if container in ("wav", "flac"):  # lossless: the channel mean, within the integer formats' quantisation
        tolerance = 1e-6 if subtype in ("FLOAT", "DOUBLE") else 2e-4
        assert mono.shape == expected.shape
        np.testing.assert_allclose(mono, expected, atol=tolerance)
    else:  # lossy codecs add delay and noise: the same tone at the same level
        assert abs(mono.size - expected.size) < RATE // 10
        n = min(mono.size, expected.size)
        rms = float(np.sqrt(np.mean(mono[: n] ** 2)))
        want = float(np.sqrt(np.mean(expected[:n] ** 2)))
        assert rms == pytest.approx(want, rel=0.15), (rms, want)
        spectrum = np.abs(np.fft.rfft(mono[:n]))
        assert np.argmax(spectrum) * RATE / n == pytest.approx(220.0, abs=4.0)


def test_many_channels_resampled_as_the_conversion_reads_them(tmp_path: Path) -> None:
    """The 8-channel WAV that crashed `/convert`: decoded and resampled to 16 kHz like any input."""
    path = _write(tmp_path, "wav", "FLOAT", 8)
    for decoder in ("rvc", "soxr"):
        mono = load_audio(path, 16_000, decoder=decoder)
        assert mono.shape == (int(16_000 * SECONDS),)
        assert np.all(np.isfinite(mono))
    assert float(np.max(np.abs(mono))) == pytest.approx(float(np.max(np.abs(_expected_mono(8)))), rel=0.02)
