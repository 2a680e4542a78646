"""Small helpers every user action shares: the project argument and the "auto" compute device."""

from __future__ import annotations

from pathlib import Path

from tools.project import Project


def project_of(project: Project | str | Path) -> Project:
    """A Project as given, or the project at a folder path."""
    return project if isinstance(project, Project) else Project.at(project)


def compute_device(device: str) -> str:
    """`auto` -> "cuda" when a CUDA device is present, else "cpu"; any other name as given."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
