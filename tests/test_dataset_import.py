"""Audio files uploaded through the app become an experiment's dataset folder inside the project."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

from infer_pack.errors import UserInputError
from tools.api.dataset import DATASETS_DIR_NAME, import_dataset_files


def _wav(path: Path, seconds: float = 0.5) -> Path:
    t = np.arange(int(16000 * seconds)) / 16000
    soundfile.write(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000)
    return path


def test_files_are_copied_into_the_experiments_dataset_folder(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    a = _wav(uploads / "take 1.wav")
    b = _wav(uploads / "b.flac")
    notes = uploads / "notes.txt"
    notes.write_text("not audio")
    empty = uploads / "empty.wav"
    empty.write_bytes(b"")

    result = import_dataset_files(project=project, experiment="singer", files=[a, b, notes, empty])
    folder = project / DATASETS_DIR_NAME / "singer"
    assert result.folder == folder
    assert sorted(p.name for p in folder.iterdir()) == ["b.flac", "take 1.wav"]
    assert (folder / "take 1.wav").read_bytes() == a.read_bytes()
    assert [name for name, _ in result.skipped] == ["notes.txt", "empty.wav"]
    assert "2 file(s) added" in result.summary() and "notes.txt" in result.summary()

    # a second upload of the same names never replaces the first files
    again = import_dataset_files(project=project, experiment="singer", files=[a, a])
    assert [p.name for p in again.added] == ["take 1-2.wav", "take 1-3.wav"]
    assert len(list(folder.iterdir())) == 4


def test_hostile_names_stay_inside_the_folder(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    source = _wav(tmp_path / "x.wav")
    names = ["../../escape.wav", "..\\..\\win.wav", ".hidden.wav", "a|b?.wav"]
    result = import_dataset_files(project=project, experiment="e", files=[source] * 4, original_names=names)
    folder = project / DATASETS_DIR_NAME / "e"
    assert all(p.parent == folder for p in result.added)
    assert sorted(p.name for p in result.added) == ["ab.wav", "escape.wav", "hidden.wav", "win.wav"]
    assert not (tmp_path / "escape.wav").exists() and not (project / "escape.wav").exists()


def test_bad_experiment_names_and_nothing_usable_are_refused(tmp_path: Path) -> None:
    source = _wav(tmp_path / "x.wav")
    with pytest.raises(UserInputError, match="experiment name"):
        import_dataset_files(project=tmp_path, experiment="../up", files=[source])
    text = tmp_path / "readme.txt"
    text.write_text("x")
    with pytest.raises(UserInputError, match="readme.txt"):
        import_dataset_files(project=tmp_path, experiment="ok", files=[text])
    with pytest.raises(UserInputError, match="no files"):
        import_dataset_files(project=tmp_path, experiment="ok", files=[])


def test_a_full_disk_keeps_the_files_already_copied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import shutil

    from infer_pack.errors import DiskFullError

    project = tmp_path / "project"
    project.mkdir()
    first, second = _wav(tmp_path / "one.wav"), _wav(tmp_path / "two.wav")
    (tmp_path / "folder.wav").mkdir()  # named like audio, but no file: skipped with the reason
    real_copy = shutil.copyfile

    def copy(source: Path, target: Path) -> Path:
        if Path(source).name == "two.wav":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_copy(source, target)

    monkeypatch.setattr(shutil, "copyfile", copy)
    folder = project / DATASETS_DIR_NAME / "e"
    with pytest.raises(DiskFullError, match="free some disk space"):
        import_dataset_files(project=project, experiment="e", files=[first, tmp_path / "folder.wav", second])
    assert sorted(p.name for p in folder.iterdir()) == ["one.wav"]  # no half-written two.wav either
