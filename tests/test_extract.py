"""Step 2b: pitch files (2a_f0, 2b-f0nsf), content features (3_feature*), and the API end to end."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import reference_file
from scipy.io import wavfile

from infer_pack.f0 import f0_to_coarse
from train.experiment import Experiment, ExperimentMetadata
from train.extract_f0 import extract_f0

RATE_16K = 16000


def tone16k(seconds: float, f0: float = 200.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE_16K)) / RATE_16K
    return (0.3 * sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 6))).astype(np.float32)


def _segment(exp: Experiment, name: str, audio_16k: np.ndarray) -> None:
    exp.wavs16k_dir.mkdir(parents=True, exist_ok=True)
    exp.gt_wavs_dir.mkdir(parents=True, exist_ok=True)
    wavfile.write(exp.wav16k_path(name), RATE_16K, audio_16k)
    gt = np.interp(np.arange(audio_16k.size * 2.5) / 2.5, np.arange(audio_16k.size), audio_16k).astype(np.float32)
    wavfile.write(exp.gt_wav_path(name), 40000, gt)


@pytest.fixture
def experiment(tmp_path: Path) -> Experiment:
    exp = Experiment(tmp_path / "logs" / "e")
    exp.write_metadata(ExperimentMetadata(sample_rate_tag="40k"))
    gap = np.concatenate([tone16k(1.0), np.zeros(RATE_16K // 2, np.float32), tone16k(1.0, 300.0)])
    _segment(exp, "0_0", gap)
    _segment(exp, "0_1", tone16k(2.2, 150.0))
    rng = np.random.default_rng(0)
    _segment(exp, "1_0", (1e-4 * rng.standard_normal(RATE_16K)).astype(np.float32))  # no voice at all
    return exp


def test_pm_pitch_files_rvc_format_with_interpolation(experiment: Experiment) -> None:
    result = extract_f0(experiment, "pm", n_workers=2)
    assert (result.total, result.done, result.reused) == (3, 2, 0)
    assert result.skipped == [("1_0", "no voiced frame (silence or noise only)")] and not result.failed
    hz = np.load(experiment.f0_hz_path("0_0"))
    coarse = np.load(experiment.f0_coarse_path("0_0"))
    assert hz.dtype == np.float64 and np.issubdtype(coarse.dtype, np.integer)
    assert hz.shape == coarse.shape == (40000 // 160,)  # pm: samples // 160, as RVC's training extractor
    assert np.all(hz > 0)  # unvoiced frames filled
    np.testing.assert_array_equal(coarse, f0_to_coarse(hz))
    assert np.median(hz[20:80]) == pytest.approx(200.0, rel=0.02)
    assert np.median(hz[180:230]) == pytest.approx(300.0, rel=0.02)
    gap = hz[110:140]  # inside the 0.5 s pause: a straight line from ~200 to ~300 Hz
    assert np.all(np.diff(gap) >= -1e-9) and 195 < gap[0] < gap[-1] < 305
    assert not experiment.f0_hz_path("1_0").exists() and not experiment.f0_coarse_path("1_0").exists()

    again = extract_f0(experiment, "pm", n_workers=2)
    assert (again.done, again.reused, len(again.skipped)) == (0, 2, 1)


def test_raw_pitch_keeps_zeros_when_interpolation_is_off(experiment: Experiment) -> None:
    result = extract_f0(experiment, "pm", interpolate_unvoiced=False, n_workers=1)
    assert result.done == 3 and not result.skipped
    hz = np.load(experiment.f0_hz_path("0_0"))
    coarse = np.load(experiment.f0_coarse_path("0_0"))
    assert np.all(hz[115:135] == 0) and np.all(coarse[115:135] == 1)
    assert not np.load(experiment.f0_hz_path("1_0")).any()


def test_parallel_and_in_process_pitch_are_identical(experiment: Experiment, tmp_path: Path) -> None:
    other = Experiment(tmp_path / "logs" / "copy")
    shutil.copytree(experiment.root, other.root)
    extract_f0(experiment, "pm", n_workers=2)
    extract_f0(other, "pm", n_workers=1)
    for name in ("0_0", "0_1"):
        np.testing.assert_array_equal(np.load(experiment.f0_hz_path(name)), np.load(other.f0_hz_path(name)))


def test_a_broken_segment_is_reported_and_the_rest_done(experiment: Experiment) -> None:
    experiment.wav16k_path("0_5").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk")
    result = extract_f0(experiment, "pm", n_workers=2)
    assert [name for name, _ in result.failed] == ["0_5"]
    assert result.done == 2
    assert not any(p.name.endswith(".tmp") for p in experiment.f0_hz_dir.iterdir())


# -- content features -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_encoder(reference: Path):  # type: ignore[no-untyped-def]
    from infer_pack import hubert

    return hubert.load_content_encoder(reference_file(reference, "tiny_hubert.pt"))


def test_features_shape_dtype_resume_and_mute(experiment: Experiment, tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    import torch

    from train.extract_features import extract_features

    result = extract_features(experiment, "v2", tiny_encoder)
    assert (result.done, result.reused, result.failed) == (3, 0, [])
    _, audio = wavfile.read(experiment.wav16k_path("0_1"))
    features = np.load(experiment.feature_path("0_1", "v2"))
    expected = tiny_encoder.extract(torch.from_numpy(audio)[None], "v2")[0].numpy()
    assert features.dtype == np.float32 and features.shape == expected.shape
    assert features.shape[0] == (audio.size - 400) // 320 + 1  # 50 frames per second
    np.testing.assert_allclose(features, expected, atol=1e-5)
    mute = np.load(experiment.mute_feature_path("v2"))
    assert mute.shape[0] == 149 and mute.dtype == np.float32 and np.abs(mute).sum() > 0
    assert extract_features(experiment, "v2", tiny_encoder).reused == 3
    v1 = extract_features(experiment, "v1", tiny_encoder)
    assert v1.done == 3 and experiment.feature_path("0_0", "v1").parent.name == "3_feature256"


def test_api_end_to_end_prepares_a_folder_training_accepts(tmp_path: Path, reference: Path) -> None:
    from conftest import synthetic_voice

    from infer_pack.audio import write_wav
    from tools.api.dataset import extract_features, preprocess_dataset

    root = tmp_path / "project"
    root.mkdir()
    shutil.copy(reference_file(reference, "tiny_hubert.pt"), root / "hubert_base.pt")
    data = tmp_path / "my_voice"
    data.mkdir()
    for i in range(2):
        write_wav(data / f"take{i}.wav", synthetic_voice(6.0, 44100, seed=i), 44100, "PCM_16")
    (data / "readme.txt").write_text("x", encoding="utf-8")

    pre = preprocess_dataset(project=root, experiment="voice", dataset_dir=data, sample_rate_tag="40k", speaker_id=2, n_processes=2)
    assert pre.preprocess.processed == 2 and pre.health.files_ok == 2
    assert pre.health.files_skipped == [("readme.txt", "not an audio file")]
    assert "2 processed" in pre.summary()
    clips = pre.preprocess.segments_total
    assert clips >= 4

    out = extract_features(project=root, experiment="voice", version="v2", use_f0=True, f0_method="pm", device="cpu", n_processes=2)
    assert out.examples == clips and out.features.done == clips and out.f0 is not None and out.f0.done == clips
    lines = out.filelist_path.read_text(encoding="utf-8").split("\n")
    assert len(lines) == clips + 2 and all(line.endswith("|2") and len(line.split("|")) == 5 for line in lines)
    meta = Experiment(root / "logs" / "voice").read_metadata()
    assert meta is not None and (meta.version, meta.use_f0, meta.f0_method, meta.speaker_id) == ("v2", True, "pm", 2)
    assert out.config_path.is_file()
    again = extract_features(project=root, experiment="voice", f0_method="pm", device="cpu")
    assert again.features.reused == clips and again.f0 is not None and again.f0.reused == clips
    assert again.features.done == 0 and again.version == "v2" and again.use_f0

    # Our training reads every line of it (the tiny encoder gives 64 values, not 768: shapes only matter here).
    from configs import load_config
    from train import data as data_module
    from train import mel as mel_module

    exp = Experiment(root / "logs" / "voice")
    mel = mel_module.MelTransform.from_data_section(load_config("v2", "40k").data)
    dataset = data_module.TrainingDataset(exp.read_filelist(use_f0=True), mel, use_f0=True)
    for i in range(len(dataset)):
        sample = dataset[i]
        assert sample.pitch is not None and sample.pitch.shape[0] == sample.phone.shape[0] == sample.spec.shape[1]


def test_a_folder_rvc_prepared_is_accepted(tmp_path: Path) -> None:
    """RVC's recipe output (names with its gaps, int32 coarse pitch as RVC on Windows writes, raw f0 with
    zeros as classic RVC saves), no experiment.json: metadata is inferred, the filelist written, and our
    training loader reads every line."""
    from conftest import synthetic_voice

    from bench.bench_preprocess import rvc_single_process
    from configs import load_config
    from infer_pack.audio import write_wav
    from infer_pack.f0 import estimate_f0
    from train import data as data_module
    from train import mel as mel_module
    from train.experiment import save_npy

    source = tmp_path / "src"
    source.mkdir()
    write_wav(source / "a.wav", synthetic_voice(9.0, 40000, seed=3), 40000, "PCM_16")
    exp = Experiment(tmp_path / "logs" / "rvc_exp")
    assert rvc_single_process(source, exp.root) >= 2
    for name in exp.wavs16k_names():
        _, audio = wavfile.read(exp.wav16k_path(name))
        hz = estimate_f0(audio, "pm", n_frames=audio.size // 160)
        save_npy(exp.f0_hz_path(name), hz)
        save_npy(exp.f0_coarse_path(name), f0_to_coarse(hz).astype(np.int32))
        frames = (audio.size - 400) // 320 + 1
        save_npy(exp.feature_path(name, "v2"), np.random.default_rng(0).standard_normal((frames, 768)).astype(np.float32))
    save_npy(exp.mute_feature_path("v2"), np.zeros((149, 768), np.float32))
    meta = exp.infer_metadata()
    assert (meta.sample_rate_tag, meta.version, meta.use_f0) == ("40k", "v2", True)
    entries = exp.write_filelist(meta.version, meta.use_f0, 0)
    assert len(entries) == len(exp.segment_names()) + 2
    mel = mel_module.MelTransform.from_data_section(load_config("v2", "40k").data)
    dataset = data_module.TrainingDataset(exp.read_filelist(use_f0=True), mel, use_f0=True)
    for i in range(len(dataset)):
        sample = dataset[i]
        assert sample.phone.shape[1] == 768 and sample.pitch is not None
        assert sample.pitch.shape[0] == sample.spec.shape[1] > 0
