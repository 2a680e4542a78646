"""Data preparation killed with SIGKILL (preprocess 2a, pitch and features 2b), then run again.

Each test runs the real API step in a child process, kills its whole process group at a point
chosen deterministically (files or state on disk, or a hook that pauses the real writer), reruns
the step in this process and compares with a clean run: nothing lost, nothing done twice that was
recorded as done, no half-written file where the next step would read it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile
from conftest import reference_file, synthetic_voice
from fault_helpers import digests, file_ids, leftovers, start_driver

from infer_pack.audio import write_wav
from train.experiment import Experiment

N_SOURCES = 8
EXP = "voice"


def _make_dataset(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for i in range(N_SOURCES):
        write_wav(folder / f"take{i:02d}.wav", synthetic_voice(3.0, 44100, f0_hz=120.0 + 15 * i, seed=i), 44100, "PCM_16")
    return folder


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _make_dataset(tmp_path_factory.mktemp("faults-data") / "recordings")


@pytest.fixture(scope="module")
def clean_preprocessed(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Experiment:
    """The same dataset preprocessed by one uninterrupted run (in this process)."""
    from tools.api.dataset import preprocess_dataset

    root = tmp_path_factory.mktemp("clean-project")
    result = preprocess_dataset(project=root, experiment=EXP, dataset_dir=dataset, sample_rate_tag="40k", n_processes=1)
    assert result.preprocess.processed == N_SOURCES and not result.preprocess.failed
    return Experiment(root / "logs" / EXP)


def _done_sources(experiment: Experiment) -> dict[str, dict]:
    path = experiment.preprocess_state_path
    if not path.exists():
        return {}
    state = json.loads(path.read_text(encoding="utf-8"))  # written atomically: always whole
    return {name: rec for name, rec in state.get("sources", {}).items() if rec.get("status") == "done"}


def _assert_same_as_clean(experiment: Experiment, clean: Experiment) -> None:
    for folder, clean_folder in ((experiment.gt_wavs_dir, clean.gt_wavs_dir), (experiment.wavs16k_dir, clean.wavs16k_dir)):
        assert leftovers(folder) == [], f"partial/temporary files left in {folder}"
        assert digests(folder) == digests(clean_folder), f"{folder.name} differs from a clean run"
        for wav in folder.iterdir():
            assert soundfile.info(str(wav)).frames > 0


PREPROCESS_DRIVER = """
import train.preprocess as pp
{hooks}
from tools.api.dataset import preprocess_dataset
preprocess_dataset(project={root!r}, experiment={exp!r}, dataset_dir={data!r}, sample_rate_tag="40k", n_processes=2)
touch({root!r} + "/finished")
"""


def test_preprocess_killed_between_files_resumes_without_redoing_recorded_sources(
    dataset: Path, clean_preprocessed: Experiment, tmp_path: Path
) -> None:
    from tools.api.dataset import preprocess_dataset

    root = tmp_path / "project"
    experiment = Experiment(root / "logs" / EXP)
    # The state is saved after every file here (the default is once a second), and each piece
    # takes 0.3 s longer, so the run is surely still going when 3 sources are recorded.
    hooks = "pp.STATE_SAVE_INTERVAL_S = 0.0\nslow_down(pp, 'resample_16k', 0.3)"
    driver = start_driver(tmp_path, "preprocess", PREPROCESS_DRIVER.format(hooks=hooks, root=str(root), exp=EXP, data=str(dataset)))
    driver.wait_until(lambda: len(_done_sources(experiment)) >= 3, "3 sources recorded as done")
    driver.kill()

    recorded = _done_sources(experiment)
    assert 3 <= len(recorded) < N_SOURCES, "the kill came after the run had finished"
    kept = [p for rec in recorded.values() for s in rec["segments"] for p in (experiment.gt_wav_path(s), experiment.wav16k_path(s))]
    before = file_ids(kept)

    result = preprocess_dataset(project=root, experiment=EXP, dataset_dir=dataset, sample_rate_tag="40k", n_processes=1)
    assert result.preprocess.reused == len(recorded)
    assert result.preprocess.processed == N_SOURCES - len(recorded) and not result.preprocess.failed
    assert file_ids(kept) == before, "pieces of sources recorded as done were written again"
    _assert_same_as_clean(experiment, clean_preprocessed)
    assert result.preprocess.segments_total == len(clean_preprocessed.segment_names())
    assert len(_done_sources(experiment)) == N_SOURCES


def test_preprocess_killed_mid_piece_write_leaves_no_partial_file(
    dataset: Path, clean_preprocessed: Experiment, tmp_path: Path
) -> None:
    from tools.api.dataset import preprocess_dataset

    root = tmp_path / "project"
    experiment = Experiment(root / "logs" / EXP)
    marker = tmp_path / "paused"
    # Pause the worker writing the first piece of the third source after its temp file is complete,
    # before the rename: the kill then lands in the middle of an atomic write.
    hooks = f"block_on_replace(lambda dst: dst.endswith('/0_gt_wavs/2_0.wav'), {str(marker)!r})"
    driver = start_driver(tmp_path, "preprocess", PREPROCESS_DRIVER.format(hooks=hooks, root=str(root), exp=EXP, data=str(dataset)))
    driver.wait_until(marker.exists, "write of 2_0.wav paused before its rename")
    driver.kill()

    assert not experiment.gt_wav_path("2_0").exists()
    assert any(name.startswith(".2_0.wav.") for name in leftovers(experiment.gt_wavs_dir)), "kill point missed"
    # What a reader would take as a clip is whole, even before the rerun.
    for wav in experiment.gt_wavs_dir.glob("*.wav"):
        assert soundfile.info(str(wav)).frames > 0
    json.loads(experiment.metadata_path.read_text(encoding="utf-8"))

    result = preprocess_dataset(project=root, experiment=EXP, dataset_dir=dataset, sample_rate_tag="40k", n_processes=1)
    assert result.preprocess.processed + result.preprocess.reused == N_SOURCES and not result.preprocess.failed
    _assert_same_as_clean(experiment, clean_preprocessed)


# -- step 2b ---------------------------------------------------------------------------------------
@pytest.fixture
def prepared_project(clean_preprocessed: Experiment, reference: Path, tmp_path: Path) -> Path:
    """A project whose experiment is preprocessed (a copy of the clean run) with the tiny HuBERT as hubert_base.pt."""
    root = tmp_path / "project"
    shutil.copytree(clean_preprocessed.root, root / "logs" / EXP)
    shutil.copyfile(reference_file(reference, "tiny_hubert.pt"), root / "hubert_base.pt")
    return root


@pytest.fixture(scope="module")
def clean_extracted(clean_preprocessed: Experiment, reference: Path, tmp_path_factory: pytest.TempPathFactory) -> Experiment:
    """Pitch (pm) and v2 features of the clean experiment, from one uninterrupted run."""
    from tools.api.dataset import extract_features

    root = tmp_path_factory.mktemp("clean-extract")
    shutil.copytree(clean_preprocessed.root, root / "logs" / EXP)
    shutil.copyfile(reference_file(reference, "tiny_hubert.pt"), root / "hubert_base.pt")
    extract_features(project=root, experiment=EXP, version="v2", use_f0=True, f0_method="pm", device="cpu", n_processes=1)
    return Experiment(root / "logs" / EXP)


EXTRACT_DRIVER = """
import train.extract_f0 as ef
import train.extract_features as ex
{hooks}
from tools.api.dataset import extract_features
extract_features(project={root!r}, experiment={exp!r}, version="v2", use_f0=True, f0_method="pm", device="cpu", n_processes=2)
touch({root!r} + "/finished")
"""


def _complete_pitch(experiment: Experiment) -> list[str]:
    return [n for n in experiment.wavs16k_names() if experiment.f0_hz_path(n).exists() and experiment.f0_coarse_path(n).exists()]


def _features(experiment: Experiment) -> list[Path]:
    folder = experiment.feature_dir("v2")
    return sorted(folder.glob("*.npy")) if folder.is_dir() else []


def _assert_outputs_match_clean(experiment: Experiment, clean: Experiment) -> None:
    names = clean.wavs16k_names()
    assert experiment.wavs16k_names() == names
    for name in names:
        np.testing.assert_array_equal(np.load(experiment.f0_hz_path(name)), np.load(clean.f0_hz_path(name)))
        np.testing.assert_array_equal(np.load(experiment.f0_coarse_path(name)), np.load(clean.f0_coarse_path(name)))
        np.testing.assert_allclose(
            np.load(experiment.feature_path(name, "v2")), np.load(clean.feature_path(name, "v2")), atol=1e-5
        )
    for folder in (experiment.f0_hz_dir, experiment.f0_coarse_dir, experiment.feature_dir("v2")):
        for path in folder.glob("*.npy"):
            np.load(path, allow_pickle=False)  # every array present loads
    lines = experiment.filelist_path.read_text(encoding="utf-8").split("\n")
    assert len(lines) == len(names) + 2


def test_extract_killed_during_pitch_keeps_finished_pairs(
    prepared_project: Path, clean_extracted: Experiment, tmp_path: Path
) -> None:
    from tools.api.dataset import extract_features

    experiment = Experiment(prepared_project / "logs" / EXP)
    total = len(experiment.wavs16k_names())
    hooks = "slow_down(ef, 'save_npy', 0.1)"
    driver = start_driver(tmp_path, "extract", EXTRACT_DRIVER.format(hooks=hooks, root=str(prepared_project), exp=EXP))
    driver.wait_until(lambda: len(_complete_pitch(experiment)) >= 3, "3 pitch pairs written")
    driver.kill()

    done = _complete_pitch(experiment)
    assert 3 <= len(done) < total, "the kill came after the pitch step had finished"
    kept = [p for n in done for p in (experiment.f0_hz_path(n), experiment.f0_coarse_path(n))]
    before = file_ids(kept)

    result = extract_features(project=prepared_project, experiment=EXP, f0_method="pm", device="cpu", n_processes=1)
    assert result.f0 is not None and result.f0.reused == len(done) and result.f0.done == total - len(done)
    assert not result.f0.failed and not result.features.failed and result.features.done == total
    assert file_ids(kept) == before, "pitch files finished before the kill were written again"
    _assert_outputs_match_clean(experiment, clean_extracted)


def test_extract_killed_mid_feature_write_keeps_finished_features(
    prepared_project: Path, clean_extracted: Experiment, tmp_path: Path
) -> None:
    from tools.api.dataset import extract_features

    experiment = Experiment(prepared_project / "logs" / EXP)
    total = len(experiment.wavs16k_names())
    marker = tmp_path / "paused"
    # The 4th feature file: its temp file is complete, the rename has not happened.
    folder = str(experiment.feature_dir("v2")) + "/"  # not logs/mute/3_feature768/mute.npy
    hooks = f"block_on_replace(lambda dst: dst.startswith({folder!r}), {str(marker)!r}, nth=4)"
    driver = start_driver(tmp_path, "extract", EXTRACT_DRIVER.format(hooks=hooks, root=str(prepared_project), exp=EXP))
    driver.wait_until(marker.exists, "4th feature write paused before its rename")
    driver.kill()

    finished = _features(experiment)
    assert len(finished) == 3
    assert leftovers(experiment.feature_dir("v2")), "kill point missed: no temp file of the 4th feature"
    before = file_ids(finished)

    result = extract_features(project=prepared_project, experiment=EXP, f0_method="pm", device="cpu", n_processes=1)
    assert result.f0 is not None and result.f0.reused == total  # the pitch step had finished
    assert result.features.reused == 3 and result.features.done == total - 3 and not result.features.failed
    assert file_ids(finished) == before, "features finished before the kill were written again"
    _assert_outputs_match_clean(experiment, clean_extracted)
    # A temp file left by the killed write is never taken for data (hidden, not *.npy).
    from train.index import list_feature_files

    assert [p.name for p in list_feature_files(experiment.feature_dir("v2"))] == [p.name for p in _features(experiment)]
