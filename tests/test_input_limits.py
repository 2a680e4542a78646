"""Inputs are refused from their header, before decoding or loading a model: rates, durations, bad files."""

from __future__ import annotations

import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT

from infer_pack.audio import MIN_SOURCE_RATE, check_input, load_audio
from infer_pack.errors import AudioLoadError


def _wav_header_only(path: Path, sample_rate: int, samples: int) -> Path:
    """A 16-bit mono WAV whose header says `sample_rate` (libsndfile refuses to write absurd rates)."""
    data = (np.sin(np.arange(samples)) * 1000).astype("<i2").tobytes()
    header = b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE"
    header += b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
    header += b"data" + struct.pack("<I", len(data))
    path.write_bytes(header + data)
    return path


def test_a_1_hz_file_is_refused_from_its_header_in_under_a_second(tmp_path: Path) -> None:
    """244 bytes announcing 100 s at 1 Hz once kept a conversion worker busy for over 11 minutes."""
    path = _wav_header_only(tmp_path / "one hertz.wav", 1, 100)
    assert path.stat().st_size == 244
    started = time.perf_counter()
    with pytest.raises(AudioLoadError, match=r"sample rate is 1 Hz, outside the 4000\.\.768000 Hz") as info:
        load_audio(path, 16000)
    assert time.perf_counter() - started < 1.0
    assert "one hertz.wav" in str(info.value) and "re-export it" in str(info.value)
    with pytest.raises(AudioLoadError, match="sample rate is 1 Hz"):
        check_input(path)


def test_the_lowest_accepted_rate_still_loads(tmp_path: Path) -> None:
    path = _wav_header_only(tmp_path / "low.wav", MIN_SOURCE_RATE, MIN_SOURCE_RATE)
    assert load_audio(path, 16000).shape == (16000,)


def test_durations_over_the_limit_are_refused_before_decoding(tmp_path: Path) -> None:
    import soundfile as sf

    path = tmp_path / "long.wav"
    sf.write(str(path), np.zeros(16000 * 90, dtype=np.float32), 16000)
    assert check_input(path, max_duration_s=120).duration_s == pytest.approx(90)
    with pytest.raises(AudioLoadError, match=r"lasts 1 min 30 s, more than the 1 min 00 s allowed here"):
        check_input(path, max_duration_s=60)
    with pytest.raises(AudioLoadError, match="--max-audio-minutes"):
        load_audio(path, 16000, max_duration_s=60)


def test_conversion_refuses_a_bad_input_before_loading_the_voice(tmp_path: Path) -> None:
    """The voice file is not even valid: the input's check must come first, and fast."""
    from tools import api

    (tmp_path / "weights").mkdir()
    voice = tmp_path / "weights" / "broken.pth"
    voice.write_bytes(b"not a model")
    bad = _wav_header_only(tmp_path / "in.wav", 1, 100)
    started = time.perf_counter()
    with pytest.raises(AudioLoadError, match="sample rate is 1 Hz"):
        api.convert_voice(project=tmp_path, model=voice, input_path=bad, f0_method="pm")
    assert time.perf_counter() - started < 1.0
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").iterdir())


@pytest.mark.parametrize(("name", "content", "message"), [
    ("missing.wav", None, "file not found"),
    ("empty.wav", b"", "the file is empty"),
    ("text.wav", b"hello, this is not audio" * 10, "not a readable audio file"),
])
def test_cli_convert_checks_its_input_before_loading_models(
    tmp_path: Path, name: str, content: bytes | None, message: str
) -> None:
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "v.pth").write_bytes(b"not a model either")
    source = tmp_path / name
    if content is not None:
        source.write_bytes(content)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "tools.cli", "--root", str(tmp_path), "convert", "--model", "v", "--input", str(source),
         "--output", str(tmp_path / "out.wav"), "--f0-method", "pm"],
        capture_output=True, text=True, timeout=120, cwd=str(REPO_ROOT), check=False,
    )
    elapsed = time.perf_counter() - started
    assert done.returncode != 0
    assert message in done.stderr and name in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert elapsed < 20, f"took {elapsed:.1f} s: models were loaded before the input was checked"
