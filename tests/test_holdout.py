"""The held-out set of step 2a: which clips, stored in the experiment, shown in the health report,
and kept out of the training filelist and the feature index."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile
from conftest import synthetic_voice

from train.experiment import Experiment, save_npy
from train.holdout import MAX_SHARE, choose_held_out, read_held_out
from train.preprocess import read_state

RATE = 32000


def _records(files: dict[str, list[str]]) -> dict[str, dict[str, object]]:
    return {name: {"status": "done", "segments": clips, "index": i} for i, (name, clips) in enumerate(files.items())}


def test_whole_files_are_held_out_where_there_are_several() -> None:
    files = {f"take{i:02d}.wav": [f"{i}_{j}" for j in range(4)] for i in range(20)}  # 20 files x 4 clips x 3.7 s
    lengths = {clip: 3.7 for clips in files.values() for clip in clips}
    held = choose_held_out(_records(files), lengths, share_percent=3.0, min_seconds=10.0)
    # 3 % of 296 s is 8.9 s, below the 10 s minimum: one whole file (14.8 s) reaches it
    assert len(held.whole_sources) == 1 and not held.partial_source
    assert set(held.segments) == set(files[held.whole_sources[0]])
    assert held.seconds == pytest.approx(14.8)
    assert choose_held_out(_records(files), lengths, 3.0, 10.0) == held  # the same records, the same choice
    more = choose_held_out(_records(files), lengths, share_percent=10.0, min_seconds=10.0)
    assert more.seconds >= 0.10 * 296 and more.seconds <= MAX_SHARE * 296
    assert set(held.whole_sources) <= set(more.whole_sources)  # a larger share adds files, keeps the first


def test_one_long_file_gives_its_last_clips() -> None:
    clips = [f"0_{j}" for j in range(30)]
    lengths = dict.fromkeys(clips, 3.7)
    lengths["0_29"] = 1.5
    held = choose_held_out(_records({"long.wav": clips}), lengths, share_percent=3.0, min_seconds=10.0)
    assert held.partial_source == "long.wav" and not held.whole_sources
    assert held.segments == ("0_26", "0_27", "0_28", "0_29")  # a contiguous run at the end: 1.5 + 3 x 3.7 s
    assert held.seconds == pytest.approx(12.6)


def test_nothing_held_out_when_off_too_small_or_over_the_cap() -> None:
    clips = [f"0_{j}" for j in range(30)]
    lengths = dict.fromkeys(clips, 3.7)
    assert choose_held_out(_records({"a.wav": clips}), lengths, share_percent=0.0).segments == ()
    small = choose_held_out(_records({"a.wav": clips[:9]}), lengths)
    assert small.segments == () and "fewer than 10" in small.note
    # Two files: the smaller is more than the cap, so clips of the larger are taken instead.
    files = {"a.wav": clips[:12], "b.wav": [f"1_{j}" for j in range(3)]}
    lengths.update(dict.fromkeys(files["b.wav"], 3.7))
    held = choose_held_out(_records(files), lengths, share_percent=3.0, min_seconds=10.0)
    assert held.seconds <= MAX_SHARE * 15 * 3.7 and held.whole_sources == ()
    assert held.partial_source == "a.wav" and held.segments == ("0_10", "0_11")


def _dataset(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for i in range(12):  # twelve takes of 7 s -> 2 clips each
        soundfile.write(folder / f"take{i}.wav", synthetic_voice(7.0, RATE, f0_hz=120.0 + 20 * i, seed=i), RATE)
    return folder


def test_preprocess_stores_the_set_health_shows_it_filelist_and_index_leave_it_out(tmp_path: Path) -> None:
    from tools import api
    from train.index import build_index

    result = api.preprocess_dataset(project=tmp_path, experiment="voice", dataset_dir=_dataset(tmp_path / "data"),
                                    sample_rate_tag="32k", n_processes=1, held_out_percent=10.0)
    exp = Experiment(tmp_path / "logs" / "voice")
    held = read_held_out(exp)
    assert held is not None and held.share_percent == 10.0
    names = exp.segment_names()
    total_s = sum(soundfile.info(str(exp.gt_wav_path(n))).duration for n in names)
    # 10 % of 84 s is under the 10 s minimum; one whole take (7 s) and the last clip of another reach it
    assert len(names) == 24 and len(held.whole_sources) == 1 and held.partial_source
    whole_clips = read_state(exp)["sources"][held.whole_sources[0]]["segments"]
    assert len(whole_clips) == 2 and set(whole_clips) < set(held.segments) and len(held.segments) == 3
    assert 10.0 <= held.seconds <= MAX_SHARE * total_s
    assert result.health.held_out_clips == 3
    assert f"held out for validation: 3 clip(s), {held.seconds:.1f} s" in result.health.summary_text()
    assert held.whole_sources[0] in api.dataset_health(tmp_path, "voice").summary_text()  # type: ignore[union-attr]

    # 2b's outputs for every clip, held-out ones included (as extraction makes them)
    rows = {}
    for i, name in enumerate(names):
        frames = 10 + i
        rows[name] = frames
        save_npy(exp.feature_path(name, "v2"), np.full((frames, 768), i, dtype=np.float32))
        save_npy(exp.f0_coarse_path(name), np.ones(2 * frames, dtype=np.int64))
        save_npy(exp.f0_hz_path(name), np.zeros(2 * frames))
    save_npy(exp.mute_feature_path("v2"), np.zeros((149, 768), dtype=np.float32))
    entries = exp.write_filelist("v2", True, 0, seed=0)
    listed = {entry.gt_wav for entry in exp.read_filelist(True)}
    assert len(entries) == 21 + 2 and not {exp.gt_wav_path(n) for n in held.segments} & listed
    assert {exp.gt_wav_path(n) for n in names if n not in held.segments} <= listed
    assert {e.gt_wav for e in exp.held_out_entries("v2", True, 0)} == {exp.gt_wav_path(n) for n in held.segments}

    index = build_index(exp, "v2")
    assert index.n_rows == sum(frames for name, frames in rows.items() if name not in held.segments)

    # 0 turns it off: a rerun with 0 % holds nothing out and the filelist has every clip again
    again = api.preprocess_dataset(project=tmp_path, experiment="voice", dataset_dir=tmp_path / "data",
                                   sample_rate_tag="32k", n_processes=1, held_out_percent=0.0)
    assert read_held_out(exp).segments == () and again.health.held_out_clips == 0  # type: ignore[union-attr]
    assert "held out for validation: none (turned off)" in again.health.summary_text()
    assert len(exp.write_filelist("v2", True, 0, seed=0)) == 24 + 2
