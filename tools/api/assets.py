"""User actions on downloadable assets: see what is there, download what is missing.

Download names: all, hubert, rmvpe, pretrained-v1-32k, pretrained-v1-40k, pretrained-v1-48k,
pretrained-v2-32k, pretrained-v2-40k, pretrained-v2-48k (see tools.assets).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from infer_pack.errors import (
    AssetMissingError,
    DiskFullError,
    MissingAssetsError,
    ModelFileError,
)
from infer_pack.progress import CancelToken, ProgressCallback
from tools import assets
from tools.assets import GROUP_NAMES as GROUP_NAMES  # the download groups, for the Assets panel
from tools.assets import SEPARATION_GROUP_NAMES as SEPARATION_GROUP_NAMES
from tools.assets import AssetDownloadError, AssetFile, AssetState, Transport
from tools.project import Project

AssetGroupState = Literal["missing", "unverified", "present"]
# The one wording for a file that is there but is not the published one (every tab and the CLI use it).
UNVERIFIED = "present, not the published file"


@dataclass(frozen=True)
class AssetStatus:
    root: Path
    assets: list[AssetState]

    @property
    def missing_groups(self) -> list[str]:
        """Download names with at least one file absent (or, after a hash check, corrupt)."""
        groups = [s.group for s in self.assets if not s.present or s.verified is False]
        return list(dict.fromkeys(groups))

    def group_ready(self, group: str) -> bool:
        return group not in self.missing_groups

    @property
    def absent_groups(self) -> list[str]:
        """Download names with at least one file not on disk: "missing"."""
        return list(dict.fromkeys(s.group for s in self.assets if s.size_bytes is None))

    @property
    def unverified_groups(self) -> list[str]:
        """Download names whose files are all on disk but one is not the published file (another size, or a
        hash check failed): "present, not the published file". Steps use such a file as it is."""
        absent = set(self.absent_groups)
        return [g for g in self.missing_groups if g not in absent]

    @property
    def unpublished_paths(self) -> set[Path]:
        """Files on disk that are not the published ones (see unverified_groups)."""
        return {s.path for s in self.assets if s.size_bytes is not None and (not s.present or s.verified is False)}

    def group_state(self, group: str) -> AssetGroupState:
        """The one wording of a group's state: "missing", "unverified" (present, not the published file), "present"."""
        if group in self.absent_groups:
            return "missing"
        return "unverified" if group in self.unverified_groups else "present"

    @property
    def can_convert(self) -> bool:
        """Conversion needs the content encoder; rmvpe only for the rmvpe pitch method."""
        return self.group_ready("hubert")

    def summary(self) -> str:
        missing = self.missing_groups
        if not missing:
            return f"all {len(self.assets)} asset files are in place"
        parts = [f"missing: {', '.join(self.absent_groups)}"] if self.absent_groups else []
        if self.unverified_groups:
            parts.append(f"{UNVERIFIED}: {', '.join(self.unverified_groups)} (used as they are)")
        return (
            f"{'; '.join(parts)}; run `.venv/bin/python -m tools.cli download {' '.join(missing)}` "
            "or use the download button to get the published files"
        )


@dataclass(frozen=True)
class DownloadResult:
    downloaded: list[str] = field(default_factory=list)  # repository paths fetched now
    present: list[str] = field(default_factory=list)  # already there and verified
    failed: dict[str, str] = field(default_factory=dict)  # repository path -> what went wrong
    help_text: str = ""  # where to get the failed files by hand, and where to put them

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        parts = [f"{len(self.downloaded)} downloaded", f"{len(self.present)} already present"]
        if self.failed:
            parts.append(f"{len(self.failed)} failed")
        text = ", ".join(parts)
        if not self.failed:
            return text
        reasons = "\n".join(f"- {repo_path}: {reason}" for repo_path, reason in self.failed.items())
        return f"{text}:\n{reasons}\n{self.help_text}"


def asset_status(root: str | Path = ".", *, verify: bool = False) -> AssetStatus:
    """What is in place under `root` (no network). `verify` also checks every sha256 (reads ~2 GB)."""
    project = Project.at(root)
    return AssetStatus(root=project.root, assets=assets.status(project, hash_check=verify))


def separation_status(root: str | Path = ".") -> AssetStatus:
    """The separation models (UVR5 VR, MDX-Net, RoFormer) under `root`'s uvr5_weights/: which are there, no network.

    They are not part of "all" (only users who separate songs need them); each downloads by its own name."""
    project = Project.at(root)
    return AssetStatus(root=project.root, assets=assets.status(project, catalogue=assets.SEPARATION_CATALOGUE))


def download_assets(
    names: Sequence[str] | None = None,
    root: str | Path = ".",
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    *,
    transport: Transport | None = None,
    endpoint: str | None = None,
) -> DownloadResult:
    """Download the named assets (default: all) that are absent or corrupt, verifying each.

    Per-file failures are collected and the rest carries on; once the hub is unreachable the remaining
    files are not tried again. Cancelling keeps partial files so the next call resumes them.
    """
    project = Project.at(root)
    items = assets.files_for(names or ["all"])
    result = DownloadResult()
    offline_reason = ""
    failed_items: list[AssetFile] = []
    for index, item in enumerate(items, 1):
        if offline_reason:
            result.failed[item.repo_path] = offline_reason
            failed_items.append(item)
            continue
        label = f"[{index}/{len(items)}] {item.repo_path}"
        try:
            outcome = assets.download_file(
                item, project, transport=transport, endpoint=endpoint, progress=progress, cancel=cancel, label=label
            )
        except AssetDownloadError as exc:
            cause = exc.__cause__
            if isinstance(cause, assets.TransportError) and cause.offline:
                offline_reason = f"not tried: the hub is unreachable ({exc.reason})"
            result.failed[item.repo_path] = str(exc)
            failed_items.append(item)
            continue
        except assets.AssetBusyError as exc:
            # Another download of this file is running: the others go on; no manual steps to show.
            result.failed[item.repo_path] = str(exc)
            continue
        except (AssetMissingError, ModelFileError, DiskFullError) as exc:
            result.failed[item.repo_path] = str(exc)
            failed_items.append(item)
            continue
        (result.downloaded if outcome == "downloaded" else result.present).append(item.repo_path)
    if failed_items:
        result = DownloadResult(
            downloaded=result.downloaded,
            present=result.present,
            failed=result.failed,
            help_text=assets.offline_instructions(failed_items, project, endpoint),
        )
    return result


Step = Literal["extract", "train"]
FROM_SCRATCH_HINT = (
    "or train without pretrained G/D: tick 'From scratch' in the Train tab (CLI: --no-pretrained); "
    "a start from scratch needs far more epochs"
)


@dataclass(frozen=True)
class NeededAsset:
    """A file a step needs: its download name, where it belongs, and what it is for."""

    asset: str
    path: Path
    purpose: str

    @property
    def present(self) -> bool:
        return self.path.is_file()


def default_f0_method(root: Project | str | Path = ".") -> str:
    """The pitch method to offer first: rmvpe when rmvpe.pt is in place, else swift (its model ships in its package)."""
    project = root if isinstance(root, Project) else Project.at(root)
    return "rmvpe" if project.rmvpe_path.is_file() else "swift"


def assets_for_training(version: str, sample_rate_tag: str) -> list[str]:
    """Download names a v1/v2 model at one rate needs end to end: the encoder, rmvpe and its pretrained G/D."""
    return ["hubert", "rmvpe", assets.pretrained_group(version, sample_rate_tag)]


def needed_assets(
    root: Project | str | Path = ".",
    *,
    steps: Sequence[Step] = ("extract", "train"),
    version: str = "v2",
    sample_rate_tag: str = "40k",
    use_f0: bool = True,
    f0_method: str = "rmvpe",
    use_pretrained: bool = True,
    pretrained_g: str | Path | None = None,
    pretrained_d: str | Path | None = None,
) -> list[NeededAsset]:
    """Every file the steps need for this configuration, present or not (no network, nothing loaded).

    Explicit pretrained paths are confined to the project (or an allowed folder) like the training step does.
    """
    project = root if isinstance(root, Project) else Project.at(root)
    needed: list[NeededAsset] = []
    if "extract" in steps:
        needed.append(NeededAsset("hubert", project.hubert_path, "content features"))
        if use_f0 and f0_method == "rmvpe":
            needed.append(NeededAsset("rmvpe", project.rmvpe_path, "rmvpe pitch extraction"))
    if "train" in steps and use_pretrained:
        group = assets.pretrained_group(version, sample_rate_tag)
        for kind, explicit in (("G", pretrained_g), ("D", pretrained_d)):
            path = (project.confine(str(explicit), f"pretrained {kind}") if explicit
                    else project.pretrained_path(version, sample_rate_tag, use_f0, kind))  # type: ignore[arg-type]
            needed.append(NeededAsset(group, path, f"pretrained {kind}"))
    return needed


def missing_assets(root: Project | str | Path = ".", **config: Any) -> list[NeededAsset]:
    """The files of `needed_assets(root, **config)` that are absent (what the UI shows before a start)."""
    return [item for item in needed_assets(root, **config) if not item.present]


def check_assets(root: Project | str | Path = ".", **config: Any) -> None:
    """Raise MissingAssetsError naming every absent file before a step starts any work."""
    missing = missing_assets(root, **config)
    if missing:
        pretrained = any(item.purpose.startswith("pretrained") for item in missing)
        raise MissingAssetsError([(item.path, item.asset) for item in missing], FROM_SCRATCH_HINT if pretrained else "")
