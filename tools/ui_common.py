"""Widgets' data shared by the tabs that convert (Convert, Batch, Realtime): voice and index lists, picks -> paths."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from infer_pack.errors import UserInputError
from tools.labels import label

if TYPE_CHECKING:
    from tools.web import AppContext

NO_INDEX = ""


def voice_choices(ctx: AppContext) -> list[tuple[str, str]]:
    """(shown name, file name) for each voice in weights/."""
    return [(p.stem, p.name) for p in ctx.project.list_voices()]


def index_choices(ctx: AppContext) -> list[tuple[str, str]]:
    root = ctx.project.root
    return [(label("convert.no_index"), NO_INDEX)] + [
        (str(p.relative_to(root)), str(p.relative_to(root))) for p in ctx.project.list_indexes()
    ]


def match_index(ctx: AppContext, voice_file: str | None) -> str:
    """The index that belongs to a voice: one in logs/<voice>/ or whose name carries the voice name."""
    if not voice_file:
        return NO_INDEX
    stem = Path(voice_file).stem
    root = ctx.project.root
    indexes = ctx.project.list_indexes()
    for path in indexes:
        if path.parent.name == stem:
            return str(path.relative_to(root))
    for path in indexes:
        if f"_{stem}_" in path.name or path.stem == stem:
            return str(path.relative_to(root))
    return NO_INDEX


def voice_path(ctx: AppContext, voice_file: str | None) -> Path:
    """The voice picked in a tab's Voice list (a name in weights/)."""
    if not voice_file:
        raise UserInputError("no voice selected; pick one in the Voice list (voices live in weights/)")
    return ctx.project.resolve_voice(voice_file)


def index_path_of(ctx: AppContext, index: str | None) -> Path | None:
    """The index picked in a tab's Index list (a path inside the project), or None for no index."""
    return ctx.project.confine(index, "index file") if index else None
