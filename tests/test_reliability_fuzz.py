"""Random and mutated files fed to the audio loader and the voice-file parser.

Whatever the bytes, the loaders return a result or raise our error class (AudioLoadError /
ModelFileError); they never hang, crash the process or leak a library exception.
"""

from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import missing_reference, reference_dir, synthetic_voice
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st

from infer_pack.errors import AudioLoadError, ModelFileError

FUZZ = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _mutate(original: bytes, data: st.DataObject, hot_region: int = 512) -> bytes:
    """Flip bytes, cut, splice garbage in, or hit the header (where parsers decide sizes) hard."""
    mutated = bytearray(original)
    kind = data.draw(st.sampled_from(["flip", "cut", "splice", "header", "zero-run"]), label="mutation")
    if kind == "flip":
        for _ in range(data.draw(st.integers(1, 24))):
            mutated[data.draw(st.integers(0, len(mutated) - 1))] = data.draw(st.integers(0, 255))
    elif kind == "cut":
        mutated = mutated[: data.draw(st.integers(1, len(mutated) - 1))]
    elif kind == "splice":
        at = data.draw(st.integers(0, len(mutated)))
        mutated[at:at] = data.draw(st.binary(min_size=1, max_size=256))
    elif kind == "header":
        end = min(len(mutated), hot_region)
        for _ in range(data.draw(st.integers(1, 8))):
            at = data.draw(st.integers(0, end - 1))
            mutated[at] = data.draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80, data.draw(st.integers(0, 255))]))
    else:
        at = data.draw(st.integers(0, len(mutated) - 1))
        length = data.draw(st.integers(1, 64))
        mutated[at : at + length] = bytes(min(length, len(mutated) - at))
    return bytes(mutated)


# --- audio --------------------------------------------------------------------------------------------

from infer_pack import audio  # noqa: E402 - the strategies above are the module's first part

_VALID_AUDIO: dict[str, bytes] = {}


def valid_audio_files() -> dict[str, bytes]:
    """Small valid files of each format this libsndfile writes (made once, kept in memory)."""
    import tempfile

    import soundfile

    if _VALID_AUDIO:
        return _VALID_AUDIO
    folder = Path(tempfile.mkdtemp(prefix="valid-audio-"))
    signal = synthetic_voice(0.6, 22050, seed=3)
    stereo = np.stack([signal, signal[::-1]], axis=1)
    made: dict[str, bytes] = {}
    for name, data, kwargs in (
        ("pcm16.wav", signal, {"subtype": "PCM_16"}),
        ("float.wav", stereo, {"subtype": "FLOAT"}),
        ("clip.flac", signal, {}),
        ("clip.ogg", stereo, {}),
        ("clip.mp3", signal, {}),
    ):
        path = folder / name
        try:
            soundfile.write(str(path), data, 22050, **kwargs)
        except (RuntimeError, TypeError, soundfile.LibsndfileError):
            continue  # this libsndfile cannot write the format
        made[name] = path.read_bytes()
        path.unlink()
    folder.rmdir()
    assert {"pcm16.wav", "float.wav", "clip.flac"} <= set(made)
    _VALID_AUDIO.update(made)
    return _VALID_AUDIO


def _check_audio_result(path: Path) -> None:
    try:
        result = audio.load_audio(path, 16000)
    except AudioLoadError as exc:
        assert str(path) in str(exc)
        return
    assert isinstance(result, np.ndarray) and result.dtype == np.float32 and result.ndim == 1 and result.size > 0
    assert np.all(np.isfinite(result))


def test_huge_float_samples_come_out_finite(tmp_path: Path) -> None:
    import soundfile

    samples = np.zeros(22050, dtype=np.float32)
    samples[1000:1010] = 3e38
    path = tmp_path / "huge.wav"
    soundfile.write(str(path), samples, 22050, subtype="FLOAT")
    assert np.all(np.isfinite(audio.load_audio(path, 16000)))


def test_valid_files_load(tmp_path: Path) -> None:
    for name, content in valid_audio_files().items():
        path = tmp_path / name
        path.write_bytes(content)
        result = audio.load_audio(path, 16000)
        assert abs(result.size - int(0.6 * 16000)) < 0.05 * 16000, name


@pytest.mark.timeout(120)
@FUZZ
@given(content=st.binary(min_size=1, max_size=6000), suffix=st.sampled_from([".wav", ".mp3", ".flac", ".ogg", ""]))
def test_random_bytes_never_escape_audio_load_error(tmp_path: Path, content: bytes, suffix: str) -> None:
    path = tmp_path / f"random{suffix}"
    path.write_bytes(content)
    _check_audio_result(path)


@pytest.mark.timeout(180)
@settings(FUZZ, max_examples=200)
@given(data=st.data())
def test_mutated_audio_files_never_escape_audio_load_error(tmp_path: Path, data: st.DataObject) -> None:
    files = valid_audio_files()
    name = data.draw(st.sampled_from(sorted(files)), label="format")
    path = tmp_path / name
    path.write_bytes(_mutate(files[name], data))
    _check_audio_result(path)


def test_riff_header_claiming_huge_data_is_refused_quickly(tmp_path: Path) -> None:
    import struct

    path = tmp_path / "liar.wav"
    fmt = struct.pack("<HHIIHH", 1, 1, 16000, 32000, 2, 16)
    body = b"\x01\x00" * 1600
    header = b"RIFF" + struct.pack("<I", 0xFFFFFFF0) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
    path.write_bytes(header + b"data" + struct.pack("<I", 0x7FFFFFF0) + body)
    with pytest.raises(AudioLoadError, match="cut short|truncated"):
        audio.load_audio(path, 16000)


# --- voice files --------------------------------------------------------------------------------------


def _checkpoint_module():  # type: ignore[no-untyped-def]
    from infer_pack import checkpoint

    return checkpoint


def reference_voice() -> bytes:
    found = reference_dir()
    path = None if found is None else found / "ref_v1_32k_nof0_slim.pth"
    if path is None or not path.is_file():
        missing_reference("reference voice ref_v1_32k_nof0_slim.pth is absent")
    return path.read_bytes()


def _split_zip(content: bytes) -> tuple[list[zipfile.ZipInfo], dict[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        infos = archive.infolist()
        return infos, {info.filename: archive.read(info.filename) for info in infos}


def _rebuild_zip(infos: list[zipfile.ZipInfo], members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for info in infos:
            archive.writestr(info, members[info.filename])
    return buffer.getvalue()


def test_reference_voice_loads(tmp_path: Path) -> None:
    checkpoint = _checkpoint_module()
    path = tmp_path / "voice.pth"
    path.write_bytes(reference_voice())
    voice = checkpoint.load_voice(path)
    assert voice.version == "v1" and voice.use_f0 is False and voice.sample_rate_tag == "32k"


# safe_torch_load itself still leaks some exception types for broken files (see test_security.py);
# the voice-parser fuzzing below sets those inputs aside so that it tests what load_voice adds.
TORCHIO_ESCAPING = (OSError, IndexError, struct.error, TypeError, AssertionError)


def _torchio_escapes(path: Path) -> bool:
    from infer_pack.torchio import safe_torch_load

    try:
        safe_torch_load(path)
    except ModelFileError:
        return False
    except TORCHIO_ESCAPING:
        return True
    return False


def test_random_bytes_give_model_file_error_in_load_voice(tmp_path: Path) -> None:
    checkpoint = _checkpoint_module()
    path = tmp_path / "random.pth"
    path.write_bytes(b"\x86\xe7\x1b\xc1u\xd8\xb07e")
    with pytest.raises(ModelFileError):
        checkpoint.load_voice(path)


@pytest.mark.timeout(120)
@settings(FUZZ, suppress_health_check=list(HealthCheck))
@given(content=st.binary(min_size=1, max_size=4000))
def test_random_bytes_never_escape_model_file_error_in_load_voice(tmp_path: Path, content: bytes) -> None:
    checkpoint = _checkpoint_module()
    path = tmp_path / "random.pth"
    path.write_bytes(content)
    assume(not _torchio_escapes(path))
    with pytest.raises(ModelFileError):
        checkpoint.load_voice(path)


@pytest.mark.timeout(180)
@settings(FUZZ, max_examples=30, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_mutated_voice_files_never_escape_model_file_error(tmp_path: Path, data: st.DataObject) -> None:
    """Mutations of the pickle (structure, config, names) and cuts of the whole file."""
    checkpoint = _checkpoint_module()
    original = reference_voice()
    path = tmp_path / "mutated.pth"
    if data.draw(st.booleans(), label="cut whole file"):
        path.write_bytes(original[: data.draw(st.integers(1, len(original) - 1))])
    else:
        infos, members = _split_zip(original)
        pickle_name = next(name for name in members if name.endswith("data.pkl"))
        members[pickle_name] = _mutate(members[pickle_name], data, hot_region=len(members[pickle_name]))
        path.write_bytes(_rebuild_zip(infos, members))
    assume(not _torchio_escapes(path))
    try:
        voice = checkpoint.load_voice(path)
    except ModelFileError as exc:
        assert str(path) in str(exc)
        return
    assert voice.version in ("v1", "v2") and voice.sample_rate_tag in ("32k", "40k", "48k")
