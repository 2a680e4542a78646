"""The conversion and index user actions on a small project folder.

The project's hubert_base.pt is the tiny reference HuBERT; the encoder the API would load from it
is replaced, in the model cache, by that HuBERT followed by a FIXED RANDOM PROJECTION to 256 dims
(the v1 voice's content width). See tests/test_pipeline.py for why.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile
from conftest import reference_file, synthetic_voice

from infer_pack.cache import ModelCache, file_key
from infer_pack.errors import AssetMissingError, UserInputError
from infer_pack.progress import CancelToken
from tools.api.convert import batch_output_names, convert_batch, convert_voice
from tools.api.index import train_index
from tools.project import Project


@pytest.fixture(scope="module")
def project(reference: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Project, ModelCache]:
    from test_pipeline import ProjectedEncoder

    root = tmp_path_factory.mktemp("convert-project")
    project = Project.at(root)
    project.weights_dir.mkdir()
    (project.weights_dir / "slim.pth").symlink_to(reference_file(reference, "ref_v1_32k_nof0_slim.pth"))
    shutil.copyfile(reference_file(reference, "tiny_hubert.pt"), project.hubert_path)
    cache = ModelCache()
    encoder = ProjectedEncoder(project.hubert_path, 256)
    cache.get_or_load(("hubert", file_key(project.hubert_path), "cpu"), lambda: encoder)
    inputs = root / "in"
    inputs.mkdir()
    soundfile.write(str(inputs / "a.wav"), synthetic_voice(0.5, 22050, seed=1), 22050)
    (inputs / "broken.wav").write_bytes(b"RIFF....WAVEfmt junk")
    (inputs / "notes.txt").write_text("not audio")
    return project, cache


def test_convert_one_file(project: tuple[Project, ModelCache]) -> None:
    proj, cache = project
    messages: list[str] = []
    result = convert_voice(
        project=proj, model=proj.voice_path("slim"), input_path=proj.root / "in" / "a.wav", f0_method="pm",
        output_format="flac", device="cpu", cache=cache, progress=lambda d, t, m: messages.append(m),
    )  # fmt: skip
    assert result.output_path == proj.root / "outputs" / "a_slim_pm.flac"  # input, voice, pitch method
    info = soundfile.info(str(result.output_path))
    assert info.samplerate == 32000 == result.sample_rate and info.format == "FLAC"
    # 0.5 s in; RVC's length: pad 1 s each side, HuBERT frames x 2 x hop, minus the padding.
    padded = 8000 + 2 * 16000
    assert info.frames == 2 * ((padded - 400) // 320 + 1) * 320 - 2 * 32000
    assert result.input_seconds == pytest.approx(0.5, abs=1e-3)
    assert messages and messages[-1] == "done"
    # Converting it again keeps the first result; a transpose is part of the name.
    again = convert_voice(project=proj, model=proj.voice_path("slim"), input_path=proj.root / "in" / "a.wav",
                          f0_method="pm", output_format="flac", device="cpu", cache=cache)
    assert again.output_path.name == "a_slim_pm-2.flac" and result.output_path.is_file()
    up = convert_voice(project=proj, model=proj.voice_path("slim"), input_path=proj.root / "in" / "a.wav",
                       f0_method="pm", pitch_semitones=-3, output_format="flac", device="cpu", cache=cache)
    assert up.output_path.name == "a_slim_pm_-3st.flac"
    assert "real time" in result.summary()


def test_batch_goes_on_after_a_bad_file(project: tuple[Project, ModelCache], tmp_path: Path) -> None:
    proj, cache = project
    seen: list[tuple[int, int]] = []
    result = convert_batch(
        project=proj, model=proj.voice_path("slim"), input_dir=proj.root / "in", output_dir=tmp_path / "out",
        f0_method="pm", device="cpu", cache=cache, progress=lambda d, t, m: seen.append((d, t)),
    )  # fmt: skip
    assert [p.name for p in result.converted] == ["a.wav"], "<stem>.<format>, not a.wav.wav"
    assert [path.name for path, _ in result.failed] == ["broken.wav"]
    assert "broken.wav" in result.failed[0][1]
    assert seen[-1] == (2, 2)
    data, rate = soundfile.read(str(result.converted[0]), dtype="int16")
    assert rate == 32000 and data.size > 0
    assert "1 failed" in result.summary()

    token = CancelToken()
    token.cancel()
    from infer_pack.errors import CancelledError

    with pytest.raises(CancelledError):
        convert_batch(project=proj, model=proj.voice_path("slim"), input_dir=proj.root / "in",
                      output_dir=tmp_path / "out2", f0_method="pm", device="cpu", cache=cache, cancel=token)  # fmt: skip


def test_batch_output_names_are_stems_and_unique() -> None:
    names = batch_output_names([Path("in/a.wav"), Path("in/a.mp3"), Path("up/1/a.wav"), Path("in/b.flac"),
                                Path("in/A.ogg"), Path("in/a-wav.m4a")], "wav")
    assert names == ["a-wav.wav", "a-mp3.wav", "a-wav-2.wav", "b.wav", "A-ogg.wav", "a-wav-3.wav"]
    assert len({n.lower() for n in names}) == len(names), "unique even on a case-insensitive disk"
    assert batch_output_names([Path("song.mp3")], "flac") == ["song.flac"]


def test_batch_of_uploads_with_one_stem_and_its_zip(project: tuple[Project, ModelCache], tmp_path: Path) -> None:
    """a.wav and a.flac both convert (neither overwrites the other) and the zip holds exactly the results."""
    import zipfile

    proj, cache = project
    flac = tmp_path / "up" / "a.flac"
    flac.parent.mkdir()
    data, rate = soundfile.read(str(proj.root / "in" / "a.wav"))
    soundfile.write(str(flac), data, rate)
    out = tmp_path / "out"
    result = convert_batch(
        project=proj, model=proj.voice_path("slim"), input_paths=[proj.root / "in" / "a.wav", flac,
                                                                   proj.root / "in" / "broken.wav"],
        output_dir=out, output_format="flac", f0_method="pm", device="cpu", cache=cache, zip_results=True,
    )  # fmt: skip
    assert [p.name for p in result.converted] == ["a-wav.flac", "a-flac.flac"]
    assert result.zip_path is not None and result.zip_path.parent == out and result.zip_path.suffix == ".zip"
    with zipfile.ZipFile(result.zip_path) as archive:
        assert sorted(archive.namelist()) == ["a-flac.flac", "a-wav.flac"]
        assert archive.read("a-wav.flac") == (out / "a-wav.flac").read_bytes()
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "the zip is written atomically (no temp left)"
    assert result.zip_path.name in result.summary()
    plain = convert_batch(project=proj, model=proj.voice_path("slim"), input_paths=[flac], output_dir=tmp_path / "o2",
                          f0_method="pm", device="cpu", cache=cache)  # fmt: skip
    assert plain.zip_path is None and [p.name for p in plain.converted] == ["a.wav"]


def test_errors_name_the_problem(project: tuple[Project, ModelCache], tmp_path: Path) -> None:
    proj, cache = project
    with pytest.raises(UserInputError, match="not found"):
        convert_voice(project=proj, model=proj.weights_dir / "none.pth", input_path=proj.root / "in" / "a.wav",
                      device="cpu", cache=cache)  # fmt: skip
    with pytest.raises(UserInputError, match="output format"):
        convert_voice(project=proj, model=proj.voice_path("slim"), input_path=proj.root / "in" / "a.wav",
                      output_format="ogg", device="cpu", cache=cache)  # type: ignore[arg-type]  # fmt: skip
    with pytest.raises(AssetMissingError, match="hubert"):
        convert_voice(project=Project.at(tmp_path), model=proj.voice_path("slim"),
                      input_path=proj.root / "in" / "a.wav", device="cpu")  # fmt: skip
    with pytest.raises(UserInputError, match="no audio files"):
        empty = tmp_path / "empty"
        empty.mkdir()
        convert_batch(project=proj, model=proj.voice_path("slim"), input_dir=empty, output_dir=tmp_path / "o")


def test_train_index_action(tmp_path: Path) -> None:
    proj = Project.at(tmp_path)
    folder = proj.experiment_dir("voice") / "3_feature256"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        np.save(folder / f"0_{i}.npy", rng.standard_normal((300, 256)).astype(np.float32))
    result = train_index(project=proj, experiment="voice")
    n_list = min(int(16 * 900**0.5), 900 // 39)
    assert result.added_path == proj.experiment_dir("voice") / f"added_IVF{n_list}_Flat_nprobe_1_voice_v1.index"
    assert result.added_path in proj.list_indexes()
    assert "900 feature frames" in result.summary()
    with pytest.raises(UserInputError, match="index kind"):
        train_index(project=proj, experiment="voice", kind="pq")


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3", "m4a"])
def test_output_formats_decode_back(fmt: str, tmp_path: Path) -> None:
    from infer_pack.audio import load_audio
    from tools.api.convert import write_audio

    tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(32000) / 32000)).astype(np.float32)
    path = tmp_path / f"out.{fmt}"
    write_audio(path, tone, 32000, fmt)
    back = load_audio(path, 32000)
    assert abs(back.size - tone.size) < 4096  # encoders may add priming samples
    assert np.sqrt(np.mean(back**2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.1)
    assert not list(tmp_path.glob(".*.tmp"))


def test_conversion_parameters_are_written_once() -> None:
    """ConversionParams' fields are the one source: the API's keywords, the CLI's flags and the tab's widgets."""
    import argparse

    from infer_pack.params import PARAM_SPECS, ConversionParams
    from tools.api.convert import ConversionOptions
    from tools.cli import _add_conversion_flags
    from tools.ui_convert import FORM_PARAMS, conversion_kwargs

    assert set(ConversionOptions.__annotations__) == set(PARAM_SPECS)
    assert set(FORM_PARAMS) <= set(PARAM_SPECS)
    defaults = ConversionParams()
    parser = argparse.ArgumentParser()
    _add_conversion_flags(parser)
    parsed = parser.parse_args([])
    for name, spec in PARAM_SPECS.items():
        assert spec.default == getattr(defaults, name), name
        assert getattr(parsed, name) == (None if name == "f0_method" else spec.default), name
    assert parser.parse_args(["--transpose", "12", "--rms-mix", "0.5"]).pitch_semitones == 12.0
    assert conversion_kwargs(0, 12, "pm", 0.5, 3, 0, 0.25, 0.33) == {
        "speaker_id": 0, "pitch_semitones": 12.0, "f0_method": "pm", "index_rate": 0.5, "filter_radius": 3,
        "resample_hz": 0, "rms_mix_rate": 0.25, "protect": 0.33,
    }
    with pytest.raises(UserInputError, match="the Transpose .semitones. box is empty"):
        conversion_kwargs(0, None)


def test_unknown_conversion_keywords_are_refused(project: tuple[Project, ModelCache]) -> None:
    proj, cache = project
    with pytest.raises(UserInputError, match="unknown conversion parameter.s. index_ratio"):
        convert_voice(project=proj, model=proj.voice_path("slim"), input_path=proj.root / "in" / "a.wav",
                      cache=cache, index_ratio=0.5)  # type: ignore[call-arg]


def test_stereo_44k_input_through_both_decoders(
    project: tuple[Project, ModelCache], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 44.1 kHz stereo file with equal channels: the "rvc" decode (the default) hands the pipeline
    0.7071 * (L + R) = sqrt(2) x the "soxr" decode's channel mean, resampled by FFmpeg instead of soxr;
    everything else (length, rate, parameters) is the same, and the converted audio follows its input."""
    from infer_pack.pipeline import VoiceConverter

    proj, cache = project
    mono = 0.2 * synthetic_voice(1.0, 44100, seed=4)
    source = tmp_path / "stereo.wav"
    soundfile.write(str(source), np.stack([mono, mono], axis=1), 44100, subtype="FLOAT")
    seen: list[np.ndarray] = []
    original = VoiceConverter.convert

    def recording(self: VoiceConverter, audio: np.ndarray, *args: object, **kwargs: object) -> tuple[np.ndarray, int]:
        seen.append(audio.copy())
        return original(self, audio, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(VoiceConverter, "convert", recording)
    outputs = {}
    for decoder in ("default", "rvc", "soxr"):
        options = {} if decoder == "default" else {"decoder": decoder}
        result = convert_voice(project=proj, model=proj.voice_path("slim"), input_path=source,
                               output_path=tmp_path / f"{decoder}.wav", f0_method="pm", device="cpu", cache=cache,
                               **options)  # type: ignore[arg-type]  # fmt: skip
        outputs[decoder] = soundfile.read(str(result.output_path), dtype="float32")[0]
    default, rvc, soxr_mean = seen
    np.testing.assert_array_equal(default, rvc)  # "rvc" is the default
    np.testing.assert_array_equal(outputs["default"], outputs["rvc"])
    assert rvc.shape == soxr_mean.shape == (16000,)
    middle = slice(1600, 14400)  # away from the resamplers' edges
    # Equal channels: only the mixing gain (sqrt 2) and the resampler differ (their cut-offs near 8 kHz differ
    # on the file's noise floor: 0.4 % of the peak measured; a gain error would show as 29 %).
    ratio = np.sqrt(np.mean(rvc[middle] ** 2) / np.mean(soxr_mean[middle] ** 2))
    assert ratio == pytest.approx(np.sqrt(2), rel=2e-3)
    assert np.abs(rvc[middle] - np.sqrt(2) * soxr_mean[middle]).max() < 0.01 * np.abs(rvc).max()
    assert outputs["rvc"].shape == outputs["soxr"].shape
    assert np.abs(outputs["rvc"] - outputs["soxr"]).max() > 1e-3  # the level reaches the features: not the same
