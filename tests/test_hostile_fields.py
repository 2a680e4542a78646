"""Typed fields that the file system cannot take, and model names that must not probe the server's disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from infer_pack.errors import UserInputError
from tools.api.separate import resolve_model
from tools.project import Project


@pytest.fixture
def project(tmp_path: Path) -> Project:
    root = tmp_path / "project"
    (root / "uvr5_weights").mkdir(parents=True)
    return Project.at(root)


@pytest.mark.parametrize("what", ["pretrained G", "checkpoint", "input folder", "dataset folder"])
def test_a_5000_character_path_is_refused_naming_the_field(project: Project, what: str) -> None:
    typed = "datasets/" + "a" * 5000
    with pytest.raises(UserInputError, match=f"^{what} 'datasets/a+\\.\\.\\. \\(5009 characters\\)' is too long") as info:
        project.confine(typed, what)
    assert "Errno" not in str(info.value) and len(str(info.value)) < 400


def test_a_name_over_255_bytes_is_refused_too(project: Project) -> None:
    with pytest.raises(UserInputError, match="255 per name"):
        project.confine("é" * 200, "batch output folder")  # 400 bytes in UTF-8


def test_a_nul_byte_in_a_separation_model_name_is_our_error(project: Project) -> None:
    for confined in (True, False):
        with pytest.raises(UserInputError, match="separation model 'HP5\\\\x00.pth' contains a NUL byte"):
            resolve_model(project, "HP5\x00.pth", confined=confined)


def test_the_web_apps_model_field_does_not_tell_which_server_paths_exist(project: Project) -> None:
    existing, missing = "/etc/passwd", "/etc/definitely-not-here"
    messages = []
    for typed in (existing, missing):
        with pytest.raises(UserInputError) as info:
            resolve_model(project, typed, confined=True)
        messages.append(str(info.value).replace(typed, "PATH"))
    assert messages[0] == messages[1], messages
    assert "outside the project folder" in messages[0]


def test_relative_model_names_are_read_against_the_project_not_the_working_folder(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    (elsewhere / "stray.onnx").write_bytes(b"x")
    monkeypatch.chdir(elsewhere)
    with pytest.raises(UserInputError, match="not found"):
        resolve_model(project, "stray.onnx", confined=True)
    assert resolve_model(project, "stray.onnx") == Path("stray.onnx")  # the command line may name it
    (project.root / "uvr5_weights" / "mine.onnx").write_bytes(b"x")
    assert resolve_model(project, "mine.onnx", confined=True) == project.root / "uvr5_weights" / "mine.onnx"


def test_one_way_from_a_typed_voice_to_its_file(project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    weights = project.root / "weights"
    weights.mkdir()
    (weights / "alice.pth").write_bytes(b"x")
    assert project.resolve_voice("alice") == weights / "alice.pth"
    assert project.resolve_voice("alice.pth") == weights / "alice.pth"
    assert project.resolve_voice("weights/alice.pth") == (weights / "alice.pth").resolve()
    with pytest.raises(UserInputError, match="outside the project folder"):
        project.resolve_voice(str(tmp_path / "elsewhere.pth"))
    assert project.resolve_voice(str(tmp_path / "elsewhere.pth"), confined=False) == tmp_path / "elsewhere.pth"
    with pytest.raises(UserInputError, match=r"is a folder; give a voice model file \(\.pth\)"):
        project.resolve_voice("weights/")
    with pytest.raises(UserInputError, match="no voice given"):
        project.resolve_voice("  ")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "here.pth").write_bytes(b"x")
    assert project.resolve_voice("here.pth", confined=False) == Path("here.pth")  # the command line's working folder
    assert project.resolve_voice("here.pth") == weights / "here.pth"  # the app: names are voices in weights/


def test_cli_says_a_folder_given_as_model_is_a_folder(tmp_path: Path) -> None:
    import subprocess
    import sys

    from conftest import REPO_ROOT

    (tmp_path / "voices").mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "tools.cli", "--root", str(tmp_path), "info", "--model", str(tmp_path / "voices")],
        capture_output=True, text=True, timeout=120, cwd=str(REPO_ROOT), check=False,
    )
    assert done.returncode != 0
    assert "is a folder; give a voice model file (.pth)" in done.stderr, done.stderr
