"""Step 2a: slicer, pieces, normalisation, the folder run (bad files, resume, cancel) and the health report."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile

from bench.bench_preprocess import _rvc_slice, rvc_single_process
from infer_pack.audio import write_wav
from infer_pack.errors import CancelledError, ExperimentError
from infer_pack.progress import CancelToken
from train.experiment import Experiment
from train.health import build_health_report, read_health_report, write_health_report
from train.preprocess import (
    PreprocessSettings,
    decode_source,
    highpass,
    normalize_piece,
    preprocess_folder,
    read_state,
    resample_16k,
    split_points,
)
from train.slicer import Slicer, SlicerSettings

RATE = 40000


def tone(seconds: float, rate: int = RATE, f0: float = 180.0, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 6))).astype(np.float32)


def silence(seconds: float, rate: int = RATE) -> np.ndarray:
    return np.zeros(int(seconds * rate), np.float32)


# -- slicer ---------------------------------------------------------------------------------------
def test_slicer_cuts_long_silences_only() -> None:
    audio = np.concatenate([tone(2.0), silence(1.0), tone(2.0), silence(0.2), tone(2.0)])
    ranges = Slicer(RATE).slice_ranges(audio)
    assert len(ranges) == 2
    (b0, e0), (b1, e1) = ranges
    assert b0 == 0 and e1 == audio.size
    # The cut lies in the 1 s pause (2.0-3.0 s), keeping at most 0.5 s of silence next to the sound.
    assert 2.0 * RATE <= e0 <= 2.55 * RATE
    assert 2.45 * RATE <= b1 <= 3.0 * RATE
    assert e0 <= b1


def test_slicer_drops_leading_and_trailing_silence() -> None:
    audio = np.concatenate([silence(2.0), tone(3.0), silence(2.0)])
    ranges = Slicer(RATE).slice_ranges(audio)
    assert len(ranges) == 1
    begin, end = ranges[0]
    assert 1.45 * RATE <= begin <= 2.0 * RATE
    assert 5.0 * RATE <= end <= 5.55 * RATE


@pytest.mark.parametrize("seed", range(6))
def test_slicer_matches_rvc_frame_by_frame_loop(seed: int) -> None:
    """Random bursts and gaps of every length: same pieces as RVC's loop (ported in the benchmark)."""
    rng = np.random.default_rng(seed)
    rate = [32000, 40000, 48000][seed % 3]
    parts = []
    for _ in range(25):
        parts.append(rng.uniform(0.05, 0.5) * rng.standard_normal(int(rng.uniform(0.05, 3.0) * rate)))
        parts.append(rng.uniform(0, 0.004) * rng.standard_normal(int(rng.uniform(0.0, 2.0) * rate)))
    if seed % 2:
        parts.insert(0, np.zeros(int(rng.uniform(0.1, 1.5) * rate)))
    audio = np.concatenate(parts)
    ours = Slicer(rate).slice(audio)
    reference = _rvc_slice(audio, rate)
    assert [p.size for p in ours] == [p.size for p in reference]
    for a, b in zip(ours, reference):
        np.testing.assert_array_equal(a, b)


def test_slicer_settings_are_rvc_training_defaults() -> None:
    s = SlicerSettings()
    assert (s.threshold_db, s.min_length_ms, s.min_interval_ms, s.hop_ms, s.max_sil_kept_ms) == (-42, 1500, 400, 15, 500)
    slicer = Slicer(40000)
    assert (slicer.hop, slicer.win, slicer.min_length, slicer.min_interval, slicer.max_sil_kept) == (600, 2400, 100, 27, 33)


# -- pieces and normalisation ---------------------------------------------------------------------
def test_split_points_37s_pieces_03s_overlap_tail_up_to_4s() -> None:
    assert split_points(10 * RATE, RATE) == [(0, 148000), (136000, 284000), (272000, 400000)]
    assert split_points(4 * RATE, RATE) == [(0, 160000)]  # exactly 4.0 s stays whole
    assert split_points(4 * RATE + 1, RATE) == [(0, 148000), (136000, 160001)]
    assert split_points(2 * RATE, RATE) == [(0, 80000)]
    for n in (5 * RATE, 61 * RATE + 17, 7 * 48000):
        pieces = split_points(n, RATE)
        assert pieces[-1][1] == n
        assert all(stop - start == 148000 for start, stop in pieces[:-1])
        assert 0.6 * RATE <= pieces[-1][1] - pieces[-1][0] <= 4.0 * RATE or len(pieces) == 1
        assert all(b[0] - a[0] == 136000 for a, b in itertools.pairwise(pieces))


def test_normalisation_formula() -> None:
    x = np.array([0.1, -0.5, 0.25, 0.0])
    y = normalize_piece(x)
    assert y is not None
    np.testing.assert_allclose(y, x / 0.5 * (0.9 * 0.75) + 0.25 * x)
    assert np.isclose(np.abs(y).max(), 0.9 * 0.75 + 0.25 * 0.5)
    assert normalize_piece(np.array([0.1, 2.6])) is None  # peak above 2.5: dropped
    assert normalize_piece(np.zeros(10)) is None
    assert normalize_piece(np.array([0.1, np.nan])) is None
    assert normalize_piece(np.array([0.1, 2.5])) is not None


def test_highpass_removes_rumble_keeps_voice() -> None:
    t = np.arange(4 * RATE) / RATE
    rumble = np.sin(2 * np.pi * 15 * t)
    voice = np.sin(2 * np.pi * 300 * t)
    assert np.abs(highpass(rumble, RATE)[RATE:]).max() < 0.02
    assert 0.97 < np.abs(highpass(voice, RATE)[RATE:]).max() < 1.03
    assert highpass(rumble.astype(np.float32), RATE).dtype == np.float64  # as RVC: lfilter output


# -- the folder run -------------------------------------------------------------------------------
def _write_source(folder: Path, name: str, audio: np.ndarray, rate: int = RATE) -> Path:
    path = folder / name
    write_wav(path, audio, rate, "PCM_16")
    return path


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    folder = tmp_path / "dataset"
    folder.mkdir()
    _write_source(folder, "a_take.wav", np.concatenate([tone(5.0), silence(1.0), tone(5.0)]))
    _write_source(folder, "b_take.flac", np.concatenate([silence(0.5), tone(9.0, 44100, 220.0)]), 44100)
    (folder / "c_broken.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + os.urandom(200))
    (folder / "d_notes.txt").write_text("lyrics", encoding="utf-8")
    cut = _write_source(folder, "e_cut.wav", tone(4.0))
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])  # a half-copied file
    (folder / ".hidden.wav").write_bytes(b"x")
    (folder / "sub").mkdir()
    _write_source(folder / "sub", "nested.wav", tone(2.0))
    return folder


def test_folder_run_reports_bad_files_and_resumes(dataset: Path, tmp_path: Path) -> None:
    exp = Experiment(tmp_path / "logs" / "voice")
    seen: list[str] = []
    result = preprocess_folder(dataset, exp, "40k", n_workers=2, progress=lambda d, t, m: seen.append(m))
    assert sorted(name for name, _ in result.failed) == ["c_broken.wav", "e_cut.wav"]
    assert "cut short" in dict(result.failed)["e_cut.wav"]
    assert result.processed == 2 and result.n_failed == 2
    assert dict(result.skipped) == {
        ".hidden.wav": "hidden file",
        "d_notes.txt": "not an audio file",
        "sub": "folder (sub-folders are not searched)",
    }
    assert any("c_broken.wav: FAILED" in m for m in seen) and any("a_take.wav" in m for m in seen)
    # Source indexes are positions in the sorted listing (as RVC); pieces are numbered without gaps.
    names = exp.segment_names()
    assert names == exp.wavs16k_names()
    a_pieces = [n for n in names if n.startswith("1_")]  # ".hidden.wav" sorts first -> index 0
    b_pieces = [n for n in names if n.startswith("2_")]
    assert a_pieces == ["1_0", "1_1", "1_2", "1_3"]  # 2 parts of about 5 s -> 2 pieces each
    assert b_pieces == ["2_0", "2_1", "2_2"]  # 9 s -> 3.7 + 3.7 + tail
    assert result.segments_written == 7
    for name in names:
        rate, gt = wavfile.read(exp.gt_wav_path(name))  # RVC's loader
        rate16, k16 = wavfile.read(exp.wav16k_path(name))
        assert (rate, rate16) == (40000, 16000)
        assert gt.dtype == np.float32 and k16.dtype == np.float32
        assert k16.size == -(-gt.size * 2 // 5)  # librosa.resample's length: ceil(n * 16000 / 40000)
        assert np.abs(gt).max() <= 0.9 * 0.75 + 0.25 * 2.5
    meta = exp.read_metadata()
    assert meta is not None and meta.sample_rate_tag == "40k"

    mtimes = {p: p.stat().st_mtime_ns for p in exp.gt_wavs_dir.iterdir()}
    again = preprocess_folder(dataset, exp, "40k", n_workers=2)
    assert again.reused == 2 and again.segments_written == 0 and again.segments_total == 7
    assert sorted(again.failed) == sorted(result.failed)  # broken files are retried and reported again
    assert {p: p.stat().st_mtime_ns for p in exp.gt_wavs_dir.iterdir()} == mtimes

    # A changed source is redone under its old index; its old pieces go away with everything made
    # from them (pitch, features, spectrogram caches), so later steps cannot reuse another audio's.
    derived = [exp.f0_coarse_path("1_0"), exp.f0_hz_path("1_0"), exp.feature_path("1_1", "v2"),
               exp.gt_wavs_dir / "1_0.spec-abc.pt", exp.gt_wavs_dir / "1_0.spec.pt"]  # fmt: skip
    kept = [exp.f0_coarse_path("2_0"), exp.feature_path("2_0", "v2")]
    for path in derived + kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"old")
    assert set(derived) <= set(exp.piece_files("1_0") + exp.piece_files("1_1"))
    _write_source(dataset, "a_take.wav", tone(3.0))
    third = preprocess_folder(dataset, exp, "40k", n_workers=1)
    assert third.reused == 1 and third.segments_written == 1
    assert [n for n in exp.segment_names() if n.startswith("1_")] == ["1_0"]
    assert [p for p in derived if p.exists()] == []
    assert all(p.read_bytes() == b"old" for p in kept)
    with pytest.raises(ExperimentError, match="prepared at 40k"):
        preprocess_folder(dataset, exp, "48k")


def test_new_files_never_take_a_finished_files_index(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    folder.mkdir()
    _write_source(folder, "m.wav", tone(2.0))
    (folder / "x.wav").write_bytes(b"broken")
    exp = Experiment(tmp_path / "logs" / "e")
    preprocess_folder(folder, exp, "40k", n_workers=1)
    assert exp.segment_names() == ["0_0"]
    _write_source(folder, "a.wav", tone(2.5))  # sorts first: RVC would give it index 0 (m.wav's)
    _write_source(folder, "n.wav", tone(3.0))  # sorted position 2: free
    second = preprocess_folder(folder, exp, "40k", n_workers=1)
    assert second.reused == 1 and [name for name, _ in second.failed] == ["x.wav"]
    assert exp.segment_names() == ["0_0", "2_0", "4_0"]  # x.wav keeps index 1 although it failed
    _, first = wavfile.read(exp.gt_wav_path("0_0"))
    assert first.size == 2 * RATE  # still m.wav's piece


def test_cancel_between_files_keeps_finished_work(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    folder.mkdir()
    for i in range(3):
        _write_source(folder, f"{i}.wav", tone(2.0 + i))
    exp = Experiment(tmp_path / "logs" / "e")
    token = CancelToken()

    def progress(done: int, total: int, message: str) -> None:
        if done == 1:
            token.cancel()

    with pytest.raises(CancelledError):
        preprocess_folder(folder, exp, "40k", n_workers=1, progress=progress, cancel=token)
    state = read_state(exp)
    assert [r["status"] for r in state["sources"].values()] == ["done"]
    assert exp.segment_names() == ["0_0"]
    (exp.gt_wavs_dir / ".0_1.wav.123.tmp").write_bytes(b"partial")  # left by a killed run
    token.reset()
    resumed = preprocess_folder(folder, exp, "40k", n_workers=1, cancel=token)
    assert resumed.reused == 1 and resumed.processed == 2
    assert exp.segment_names() == ["0_0", "1_0", "2_0"]
    assert not any(p.name.endswith(".tmp") for p in exp.gt_wavs_dir.iterdir())


def test_same_samples_as_rvc_recipe_without_its_lost_pieces(tmp_path: Path) -> None:
    """Two sounding parts over 4 s: RVC overwrites one piece (3 files from 4 pieces); ours keeps all 4."""
    folder = tmp_path / "d"
    folder.mkdir()
    _write_source(folder, "x.wav", np.concatenate([tone(5.0), silence(1.0), tone(6.0, f0=150.0)]))
    exp = Experiment(tmp_path / "logs" / "ours")
    ours = preprocess_folder(folder, exp, "40k", n_workers=1)
    rvc_dir = tmp_path / "logs" / "rvc"
    written = rvc_single_process(folder, rvc_dir)
    rvc_names = sorted(p.stem for p in (rvc_dir / "0_gt_wavs").iterdir())
    assert written == 4 and rvc_names == ["0_0", "0_2", "0_4"]
    assert exp.segment_names() == ["0_0", "0_1", "0_2", "0_3"] and ours.segments_written == 4
    # Same samples where RVC kept them: its 0_0 = our 0_0, its 0_2 (overwritten by part 2) = our 0_2, 0_4 = our 0_3.
    for theirs, mine in (("0_0", "0_0"), ("0_2", "0_2"), ("0_4", "0_3")):
        for folder_name, tol in (("0_gt_wavs", 1e-7), ("1_16k_wavs", 2e-5)):
            _, a = wavfile.read(rvc_dir / folder_name / f"{theirs}.wav")
            _, b = wavfile.read(exp.root / folder_name / f"{mine}.wav")
            assert a.shape == b.shape
            np.testing.assert_allclose(b, a, atol=tol)


def test_16k_pieces_have_librosas_length() -> None:
    """RVC's librosa.resample pads soxr's output with zeros to ceil(n * 16000 / rate); soxr alone is 1 shorter."""
    import soxr

    piece = tone(1.1)[:40003]  # 40003 * 0.4 = 16001.2 -> 16002 samples, soxr gives 16001
    plain = soxr.resample(piece, RATE, 16000, quality="HQ")
    ours = resample_16k(piece, RATE)
    assert plain.size == 16001 and ours.shape == (16002,) and ours.dtype == np.float32
    np.testing.assert_array_equal(ours[:16001], plain.astype(np.float32))
    assert ours[16001] == 0.0
    assert resample_16k(tone(1.0)[:40000], RATE).size == 16000  # whole multiples are unchanged
    assert resample_16k(tone(1.1, 48000)[:48007], 48000).size == 16003  # 16002.33 -> 16003


def test_a_piece_not_a_multiple_of_5_gets_the_ceil_length(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    folder.mkdir()
    _write_source(folder, "x.wav", np.concatenate([silence(0.5), tone(2.1)[:80003]]))  # sounding to the end
    exp = Experiment(tmp_path / "logs" / "v")
    assert preprocess_folder(folder, exp, "40k", n_workers=1).segments_written == 1
    _, gt = wavfile.read(exp.gt_wav_path("0_0"))
    _, k16 = wavfile.read(exp.wav16k_path("0_0"))
    assert gt.size % 5 != 0 and k16.size == -(-gt.size * 2 // 5)
    rvc_dir = tmp_path / "logs" / "rvc"
    assert rvc_single_process(folder, rvc_dir) == 1
    _, theirs = wavfile.read(rvc_dir / "1_16k_wavs" / "0_1.wav")  # RVC names a part's last piece one on
    assert theirs.shape == k16.shape
    np.testing.assert_allclose(k16, theirs, atol=2e-5)


def test_step_2a_decodes_stereo_as_rvc_unless_told_otherwise(tmp_path: Path) -> None:
    """A 44.1 kHz stereo source: "rvc" (the default) is FFmpeg's 0.7071 * (L + R), "soxr" the mean; a
    change of decoder makes the pieces again."""
    from infer_pack.audio import load_audio

    folder = tmp_path / "d"
    folder.mkdir()
    mono = tone(3.0, 44100)
    write_wav(folder / "s.wav", np.stack([mono, mono], axis=1), 44100, "FLOAT")
    rvc, native = decode_source(folder / "s.wav", RATE)
    soxr_mean, _ = decode_source(folder / "s.wav", RATE, "soxr")
    assert native == 44100
    np.testing.assert_array_equal(rvc, load_audio(folder / "s.wav", RATE, decoder="rvc"))
    assert rvc.size == soxr_mean.size == 3 * RATE
    middle = slice(RATE // 2, 5 * RATE // 2)
    ratio = np.sqrt(np.mean(rvc[middle] ** 2) / np.mean(soxr_mean[middle] ** 2))
    assert ratio == pytest.approx(np.sqrt(2), rel=1e-3)  # identical channels: 2 * 0.7071 vs 1

    exp = Experiment(tmp_path / "logs" / "v")
    first = preprocess_folder(folder, exp, "40k", n_workers=1, settings=PreprocessSettings(RATE, decoder="soxr"))
    assert first.processed == 1 and read_state(exp)["sources"]["s.wav"]["decoder"] == "soxr"
    again = preprocess_folder(folder, exp, "40k", n_workers=1, settings=PreprocessSettings(RATE, decoder="soxr"))
    assert again.reused == 1
    redone = preprocess_folder(folder, exp, "40k", n_workers=1)
    assert redone.reused == 0 and redone.processed == 1
    assert read_state(exp)["sources"]["s.wav"]["decoder"] == "rvc"


# -- health report --------------------------------------------------------------------------------
def test_health_report_values(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    folder.mkdir()
    _write_source(folder, "a.wav", np.concatenate([tone(4.0, 44100), silence(4.0, 44100), tone(2.0, 44100)]), 44100)
    _write_source(folder, "b.wav", tone(3.0, 22050), 22050)
    square = np.sign(np.sin(2 * np.pi * 100 * np.arange(2 * RATE) / RATE)).astype(np.float32)
    _write_source(folder, "c.wav", square)
    (folder / "d.wav").write_bytes(b"not audio at all")
    (folder / "e.txt").write_text("x", encoding="utf-8")
    exp = Experiment(tmp_path / "logs" / "e")
    preprocess_folder(folder, exp, "40k", n_workers=2)
    report = write_health_report(exp)
    import json

    assert json.loads(exp.health_json_path.read_text())["format_version"] == 1
    assert read_health_report(exp) == report
    assert (report.files_total, report.files_ok) == (4, 3)
    assert [name for name, _ in report.files_failed] == ["d.wav"]
    assert report.files_skipped == [("e.txt", "not an audio file")]
    assert report.source_duration_s == pytest.approx(10.0 + 3.0 + 2.0, abs=0.01)
    # About 3 of the 4 silent seconds go (0.5 s is kept on each side of the cut at most).
    assert 3.0 - 0.01 <= report.source_duration_s - report.kept_duration_s <= 4.0
    assert report.silence_ratio == pytest.approx((report.source_duration_s - report.kept_duration_s) / 15.0)
    assert report.sample_rates == {"44100": 1, "22050": 1, "40000": 1}
    assert [name for name, _ in report.clipped_files] == ["c.wav"] and report.clipped_samples > RATE
    assert report.clip_count == len(exp.segment_names())
    text = report.summary_text()
    assert "22.05 kHz x1" in text and "40 kHz x1" in text
    assert any("22.05 kHz" in w for w in report.warnings)
    assert any("clipped" in w for w in report.warnings)
    assert "d.wav" in text and "e.txt" in text
    assert read_health_report(exp) == report
    assert exp.health_text_path.read_text(encoding="utf-8").strip() == text
    assert build_health_report(exp) == report


def test_missing_dataset_folder_is_a_clear_error_and_creates_nothing(tmp_path: Path) -> None:
    from infer_pack.errors import UserInputError

    exp = Experiment(tmp_path / "logs" / "e")
    with pytest.raises(UserInputError, match="does not exist"):
        preprocess_folder(tmp_path / "nope", exp, "40k")
    assert not exp.root.exists()


def test_cancel_with_worker_processes_then_resume(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    folder.mkdir()
    for i in range(8):
        _write_source(folder, f"{i}.wav", tone(2.0))
    exp = Experiment(tmp_path / "logs" / "e")
    token = CancelToken()
    with pytest.raises(CancelledError):
        preprocess_folder(folder, exp, "40k", n_workers=2, cancel=token, progress=lambda d, t, m: d >= 1 and token.cancel())
    finished = [r for r in read_state(exp)["sources"].values() if r["status"] == "done"]
    assert 1 <= len(finished) < 8
    assert len(exp.segment_names()) >= len(finished)
    token.reset()
    resumed = preprocess_folder(folder, exp, "40k", n_workers=2, cancel=token)
    assert resumed.reused == len(finished) and resumed.reused + resumed.processed == 8
    assert exp.segment_names() == [f"{i}_0" for i in range(8)]
