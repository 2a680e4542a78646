"""Training items as RVC builds them: x2 feature repeat, 900-frame cap, cut to the shortest, spec cache."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.io import wavfile

from infer_pack.errors import AudioLoadError
from train.data import TrainingDataset, bucket_length, collate
from train.experiment import FilelistEntry
from train.mel import MelTransform

RATE, HOP = 32000, 320


def mel(mode: str = "head") -> MelTransform:
    return MelTransform(RATE, 1024, HOP, 1024, 80, mode=mode)  # type: ignore[arg-type]


def write_item(folder: Path, name: str, seconds: float, feature_frames: int, pitch_frames: int) -> FilelistEntry:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(name))
    wav = folder / f"{name}.wav"
    wavfile.write(wav, RATE, (0.1 * rng.standard_normal(int(seconds * RATE))).astype(np.float32))
    feature = folder / f"{name}.npy"
    np.save(feature, np.arange(feature_frames * 4, dtype=np.float32).reshape(feature_frames, 4))
    coarse, hz = folder / f"{name}.coarse.npy", folder / f"{name}.hz.npy"
    np.save(coarse, np.full(pitch_frames, 7, dtype=np.int32))
    np.save(hz, np.full(pitch_frames, 220.0))
    return FilelistEntry(wav, feature, coarse, hz, 3)


def test_item_lengths_follow_rvc(tmp_path: Path) -> None:
    # 1 s -> 100 spectrogram frames; 60 feature frames -> 120 after x2; 101 pitch frames
    entry = write_item(tmp_path, "a", 1.0, 60, 101)
    sample = TrainingDataset([entry], mel(), use_f0=True)[0]
    assert sample.spec.shape == (513, 100)
    assert sample.phone.shape == (100, 4) and sample.pitch is not None and sample.pitch.shape == (100,)
    assert sample.wave.shape == (1, 100 * HOP)
    # features are repeated frame by frame: rows 0,0,1,1,2,2,...
    assert torch.equal(sample.phone[0], sample.phone[1]) and sample.phone[2, 0] == 4.0
    assert sample.pitch.dtype == torch.int64 and sample.pitchf is not None and float(sample.pitchf[0]) == 220.0
    assert sample.speaker_id == 3
    # long items keep at most 900 frames (9 s)
    long = write_item(tmp_path, "long", 10.0, 500, 1001)
    sample = TrainingDataset([long], mel(), use_f0=True)[0]
    assert sample.phone.shape[0] == sample.spec.shape[1] == 900 and sample.wave.shape[1] == 900 * HOP


def test_bucket_length_is_rvc_file_size_proxy(tmp_path: Path) -> None:
    entry = write_item(tmp_path, "b", 1.5, 75, 151)
    assert bucket_length(entry.gt_wav, HOP) == os.path.getsize(entry.gt_wav) // (3 * HOP)
    assert TrainingDataset([entry], mel(), use_f0=True).lengths == [200]


def test_spec_cache_carries_the_epsilons_and_follows_the_wav(tmp_path: Path) -> None:
    entry = write_item(tmp_path, "c", 0.5, 25, 51)
    head = TrainingDataset([entry], mel("head"), use_f0=True)
    classic = TrainingDataset([entry], mel("classic"), use_f0=True)
    head_spec = head[0].spec
    classic_spec = classic[0].spec
    assert head.spec_cache_path(entry.gt_wav) != classic.spec_cache_path(entry.gt_wav)
    assert head.spec_cache_path(entry.gt_wav).exists() and classic.spec_cache_path(entry.gt_wav).exists()
    assert not torch.equal(head_spec, classic_spec)
    assert torch.equal(head[0].spec, head_spec)  # read back from the cache
    # the wav changes (re-preprocessed): the cache is older and is recomputed
    wavfile.write(entry.gt_wav, RATE, np.zeros(int(0.5 * RATE), dtype=np.float32))
    cache = head.spec_cache_path(entry.gt_wav)
    os.utime(cache, ns=(1, 1))
    assert float(head[0].spec.max()) < 1e-2


def test_wrong_sample_rate_names_the_file(tmp_path: Path) -> None:
    entry = write_item(tmp_path, "d", 0.5, 25, 51)
    wavfile.write(entry.gt_wav, 16000, np.zeros(8000, dtype=np.float32))
    with pytest.raises(AudioLoadError) as info:
        TrainingDataset([entry], mel(), use_f0=True)[0]
    assert "d.wav" in str(info.value) and "16000" in str(info.value)


def test_collate_sorts_longest_first_and_pads(tmp_path: Path) -> None:
    short = write_item(tmp_path, "s", 0.5, 25, 51)
    long = write_item(tmp_path, "l", 1.0, 50, 101)
    dataset = TrainingDataset([short, long], mel(), use_f0=True)
    batch = collate([dataset[0], dataset[1]])
    assert batch.spec_lengths.tolist() == [100, 50]
    assert batch.spec.shape == (2, 513, 100) and batch.wave.shape == (2, 1, 100 * HOP)
    assert batch.phone.shape == (2, 100, 4) and batch.pitch is not None and batch.pitch.shape == (2, 100)
    assert float(batch.spec[1, :, 50:].abs().sum()) == 0.0
    no_f0 = TrainingDataset([FilelistEntry(short.gt_wav, short.feature, None, None, 0)], mel(), use_f0=False)
    batch = collate([no_f0[0]])
    assert batch.pitch is None and batch.pitchf is None
