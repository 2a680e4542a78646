"""The project folder: where voices, experiments and downloadable assets live, and name checks.

This module is the one owner of the project-level layout (RVC's names):
  <root>/hubert_base.pt, <root>/rmvpe.pt, <root>/pretrained/, <root>/pretrained_v2/,
  <root>/weights/<voice>.pth, <root>/logs/<experiment>/ (layout owned by train.experiment).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from infer_pack.errors import UserInputError
from train.experiment import MUTE

_NAME_RE = re.compile(r"^[\w][\w .\-()\[\]+]{0,99}$", re.UNICODE)
GeneratorOrDiscriminator = Literal["G", "D"]


def validate_name(name: str, what: str = "name") -> str:
    """Accept a file-system-safe experiment/voice name; refuse traversal and separators."""
    cleaned = name.strip()
    if (
        not cleaned
        or cleaned in {".", ".."}
        or "/" in cleaned
        or "\\" in cleaned
        or "\x00" in cleaned
        or ".." in cleaned
        or cleaned.lower() == MUTE
        or not _NAME_RE.match(cleaned)
    ):
        raise UserInputError(
            f"invalid {what} {name!r}: use letters, digits, spaces, '-', '_', '.', at most 100 characters, "
            f"no path separators, and not the reserved name {MUTE!r}"
        )
    return cleaned


# Linux's limits: PATH_MAX bytes for a whole path, NAME_MAX bytes for one of its names.
PATH_MAX_BYTES = 4096
NAME_MAX_BYTES = 255


def _short(text: str | Path, keep: int = 80) -> str:
    value = str(text)
    return repr(value if len(value) <= keep else value[:keep] + f"... ({len(value)} characters)")


def check_typed_path(typed_path: str | Path, what: str = "path") -> None:
    """Refuse a typed path the file system cannot take (NUL byte, over-long), naming the field."""
    text = str(typed_path)
    if "\x00" in text:
        raise UserInputError(f"{what} {_short(text)} contains a NUL byte; type a plain folder or file path")
    encoded = os.fsencode(text)
    if len(encoded) > PATH_MAX_BYTES or any(len(part) > NAME_MAX_BYTES for part in encoded.split(b"/")):
        raise UserInputError(
            f"{what} {_short(text)} is too long for the file system (at most {PATH_MAX_BYTES} bytes in all and "
            f"{NAME_MAX_BYTES} per name); type a shorter path"
        )


@dataclass(frozen=True)
class Project:
    root: Path
    extra_allowed: tuple[Path, ...] = field(default=())

    @classmethod
    def at(cls, root: str | Path, extra_allowed: tuple[str | Path, ...] = ()) -> Project:
        return cls(Path(root).resolve(), tuple(Path(p).resolve() for p in extra_allowed))

    @property
    def weights_dir(self) -> Path:
        return self.root / "weights"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def hubert_path(self) -> Path:
        return self.root / "hubert_base.pt"

    @property
    def rmvpe_path(self) -> Path:
        return self.root / "rmvpe.pt"

    def pretrained_dir(self, version: str) -> Path:
        return self.root / ("pretrained" if version == "v1" else "pretrained_v2")

    def pretrained_path(self, version: str, sample_rate_tag: str, use_f0: bool, kind: GeneratorOrDiscriminator) -> Path:
        """RVC's names: pretrained[_v2]/f0G40k.pth, G40k.pth, f0D40k.pth, D40k.pth."""
        return self.pretrained_dir(version) / f"{'f0' if use_f0 else ''}{kind}{sample_rate_tag}.pth"

    def experiment_dir(self, name: str) -> Path:
        return self.logs_dir / validate_name(name, "experiment name")

    def voice_path(self, name: str) -> Path:
        stem = name[:-4] if name.endswith(".pth") else name
        return self.weights_dir / f"{validate_name(stem, 'voice name')}.pth"

    def resolve_voice(self, typed: str | Path | None, what: str = "voice", *, confined: bool = True) -> Path:
        """A voice typed as a name in weights/ (`alice`, `alice.pth`) or as a path to a `.pth` file.

        `confined` (the web app): a path must lie inside the project or an allowed folder. Without it
        (the command line) any path is taken, and a bare `name.pth` that exists in the working folder
        is that file. A folder is refused with what is expected instead.
        """
        text = str(typed or "").strip()
        if not text:
            raise UserInputError(f"no {what} given; pick a voice from weights/ or type a .pth path")
        check_typed_path(text, what)
        is_path = "/" in text or "\\" in text
        if not is_path and not confined and text.endswith(".pth") and Path(text).is_file():
            return Path(text)
        if not is_path:
            path = self.voice_path(text)
        elif confined:
            path = self.confine(text, what)
        else:
            path = Path(text).expanduser()
        if path.is_dir():
            raise UserInputError(
                f"{what} {str(path)!r} is a folder; give a voice model file (.pth), e.g. weights/<name>.pth, "
                "or a voice's name"
            )
        return path

    def list_voices(self) -> list[Path]:
        if not self.weights_dir.is_dir():
            return []
        return sorted(p for p in self.weights_dir.iterdir() if p.suffix == ".pth" and p.is_file())

    def list_experiments(self) -> list[str]:
        if not self.logs_dir.is_dir():
            return []
        return sorted(p.name for p in self.logs_dir.iterdir() if p.is_dir() and p.name != MUTE)

    def list_indexes(self) -> list[Path]:
        """Every .index under logs/ (one level of experiments) and weights/."""
        found: list[Path] = []
        for folder in (self.logs_dir, self.weights_dir):
            if folder.is_dir():
                found.extend(p for p in folder.rglob("*.index") if "trained_" not in p.name)
        return sorted(found)

    def confine(self, typed_path: str | Path, what: str = "path") -> Path:
        """Resolve a path typed by a user; it must lie inside the project or an allowed folder."""
        check_typed_path(typed_path, what)
        raw = Path(typed_path).expanduser()
        try:
            resolved = (raw if raw.is_absolute() else self.root / raw).resolve()
        except (OSError, RuntimeError) as exc:  # e.g. a symlink loop
            raise UserInputError(f"{what} {_short(typed_path)} cannot be resolved ({exc}); type another path") from None
        for allowed in (self.root, *self.extra_allowed):
            if resolved == allowed or allowed in resolved.parents:
                return resolved
        raise UserInputError(
            f"{what} {str(typed_path)!r} is outside the project folder {str(self.root)!r}; move the files "
            "inside it or start the app with --allow-path FOLDER"
        )
