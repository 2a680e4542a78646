"""User action: build the feature index of an experiment (Train tab, "Train feature index")."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from configs import Version
from infer_pack.errors import UserInputError
from infer_pack.progress import CancelToken, ProgressCallback
from tools.project import Project

if TYPE_CHECKING:
    from train.experiment import Experiment
    from train.index import IndexKind, IndexResult


@dataclass(frozen=True)
class IndexRequest:
    experiment: str
    version: Version | None = None  # None: what the experiment was prepared for
    kind: str = "ivf_flat"  # see train.index.INDEX_KINDS (labels and costs for the UI)
    seed: int = 0


@dataclass(frozen=True)
class TrainIndexResult:
    experiment_dir: Path
    index: IndexResult

    @property
    def added_path(self) -> Path:
        return self.index.added_path

    def summary(self) -> str:
        """The index's file, kind, size, measured recall, build time and warnings, one per line."""
        return self.index.message()


def _prepared_version(exp: Experiment) -> Version:
    """The version the experiment's features were extracted for (metadata first, then the folders)."""
    from infer_pack.errors import ExperimentError

    try:
        return exp.infer_metadata().version
    except ExperimentError:
        for version in ("v2", "v1"):
            folder = exp.feature_dir(version)  # type: ignore[arg-type]
            if folder.is_dir() and any(folder.glob("*.npy")):
                return version  # type: ignore[return-value]
        raise


def index_kind_choices() -> list[tuple[str, str]]:
    """(label, kind) pairs for a dropdown; each kind's help text is in train.index.INDEX_KINDS."""
    from train.index import INDEX_KINDS, RECOMMENDED_KIND

    return [(info.label + (" (recommended)" if name == RECOMMENDED_KIND else ""), name) for name, info in INDEX_KINDS.items()]


def index_kind_help() -> str:
    """The text shown under the index-type choice: the recommended kind's and RVC's measured help."""
    from train.index import INDEX_KINDS, RECOMMENDED_KIND

    recommended = INDEX_KINDS[RECOMMENDED_KIND]
    rvc = INDEX_KINDS["ivf_flat"]
    return f"Recommended: {recommended.label}. {recommended.help} {rvc.label}: {rvc.help}"


def train_index(
    *,
    project: Project | str | Path,
    experiment: str,
    version: Version | None = None,
    kind: str = "ivf_flat",
    seed: int = 0,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> TrainIndexResult:
    """Build the experiment's index into `logs/<experiment>/` (file name from train.index.index_file_name;
    `ivf_flat` is RVC's `added_IVF<n>_Flat_nprobe_1_<experiment>_<version>.index`). The result's summary
    carries the diagnostics measured on the built index."""
    from train.experiment import Experiment
    from train.index import INDEX_KINDS, build_index

    request = IndexRequest(experiment, version, kind, seed)
    if request.kind not in INDEX_KINDS:
        raise UserInputError(f"unknown index kind {request.kind!r}; choose one of {', '.join(INDEX_KINDS)}")
    proj = project if isinstance(project, Project) else Project.at(project)
    exp = Experiment(proj.experiment_dir(request.experiment))
    chosen: Version = request.version or _prepared_version(exp)
    kind_name: IndexKind = request.kind  # type: ignore[assignment]
    result = build_index(exp, chosen, progress, cancel, kind=kind_name, seed=request.seed)
    return TrainIndexResult(experiment_dir=exp.root, index=result)
