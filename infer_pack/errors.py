"""Exception classes. Every message names the file (or thing) at fault and says how to fix it."""

from __future__ import annotations

from pathlib import Path


class RVCError(Exception):
    """Base class of every error this project raises on purpose."""


class UserInputError(RVCError, ValueError):
    """A parameter, name or path given by the user is not acceptable."""


class AudioLoadError(RVCError):
    """An audio file cannot be decoded or holds no usable audio."""

    def __init__(self, path: str | Path, reason: str, fix: str = "") -> None:
        self.path = str(path)
        self.reason = reason
        fix = fix or "check that it is an audio file FFmpeg can play, or re-export it as WAV"
        super().__init__(f"cannot load audio {self.path!r}: {reason}; {fix}")


class ModelFileError(RVCError):
    """A model/checkpoint/index file is unreadable, truncated or does not fit the configuration."""

    def __init__(self, path: str | Path, reason: str, fix: str = "") -> None:
        self.path = str(path)
        self.reason = reason
        fix = fix or "re-download or re-export the file"
        super().__init__(f"cannot use model file {self.path!r}: {reason}; {fix}")


class UnsafeFileError(ModelFileError):
    """A pickle that would run code (or import something unexpected) when loaded."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(
            path,
            f"refused to load it because it is not a plain weights file ({reason})",
            "only load models from sources you trust; re-export it with a standard RVC or this tool",
        )


class AssetMissingError(RVCError, FileNotFoundError):
    """A required downloadable asset (hubert_base.pt, rmvpe.pt, pretrained G/D) is absent."""

    def __init__(self, path: str | Path, asset: str, command: str | None = None) -> None:
        self.path = str(path)
        self.asset = asset
        self.command = command or f".venv/bin/python -m tools.cli download {asset}"
        super().__init__(
            f"missing asset {self.path!r} ({asset}); fetch it with `{self.command}` "
            f"or copy the file to that path"
        )


class MissingAssetsError(AssetMissingError):
    """Several assets a step needs are absent; raised before the step does any work.

    `missing` holds (path, download name) pairs; `hint` adds another way out (e.g. training from scratch).
    """

    def __init__(self, missing: list[tuple[str | Path, str]], hint: str = "") -> None:
        names = list(dict.fromkeys(asset for _path, asset in missing))
        super().__init__(missing[0][0], missing[0][1], f".venv/bin/python -m tools.cli download {' '.join(names)}")
        self.missing = [(str(path), asset) for path, asset in missing]
        files = ", ".join(f"{path} ({asset})" for path, asset in self.missing)
        message = f"missing before starting: {files}; fetch them with `{self.command}` or copy the files to those paths"
        self.args = (f"{message}; {hint}" if hint else message,)


class ExperimentError(RVCError):
    """An experiment folder is missing steps, inconsistent, or locked by another run."""


class TrainingLockedError(ExperimentError):
    """Another training of the same experiment is running."""


class IndexFileError(ModelFileError):
    """A faiss index is unreadable or does not match the voice model."""


class AudioDeviceError(RVCError):
    """The sound system is unusable: PortAudio missing, or a device that does not exist or refuses the settings."""


class CancelledError(RVCError):
    """A long step was cancelled by the user; everything finished so far is kept.

    `result`: what the step had finished when it stopped, for steps that report one (a training's
    checkpoint and voice saved at the stop); None for the others.
    """

    def __init__(self, message: str = "cancelled by the user", result: object | None = None) -> None:
        super().__init__(message)
        self.result = result

    def __reduce__(self) -> tuple[object, ...]:  # travels between processes with its result
        return (type(self), (str(self), self.result))


class DiskFullError(RVCError, OSError):
    """No space left while writing; the previous file is left untouched."""

    def __init__(self, path: str | Path, file_size_limit: bool = False) -> None:
        self.path = str(path)
        if file_size_limit:
            super().__init__(
                f"the file-size limit (ulimit -f) was reached while writing {self.path!r}; raise the limit "
                "(or free some disk space) and retry; the previous file is unchanged"
            )
        else:
            super().__init__(f"no space left on device while writing {self.path!r}; free some disk space and retry")
