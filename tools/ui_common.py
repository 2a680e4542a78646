"""Widgets' data shared by the tabs that convert (Convert, Batch, Realtime): voice and index lists, picks -> paths."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from infer_pack.errors import UserInputError
from tools.labels import label

if TYPE_CHECKING:
    from tools.api.specs import ParamSpec
    from tools.web import AppContext

# Shown names of the pitch estimators; the values are the pipeline's method names.
F0_CHOICES = [("RMVPE (best)", "rmvpe"), ("PM (fast)", "pm"), ("Harvest", "harvest"), ("DIO", "dio"), ("Swift", "swift")]

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


VOICE_POLL_SECONDS = 5.0


def voices_signature(ctx: AppContext) -> str:
    """Changes when a voice appears, disappears or is rewritten in weights/ (names, sizes, times)."""
    parts = []
    for path in ctx.project.list_voices():
        try:
            stat = path.stat()
        except OSError:
            continue
        parts.append(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}")
    return "|".join(parts)


class VoiceLists:
    """Every voice list of the page, re-read on page load and soon after weights/ changes.

    A voice made by a training, an extraction or a merge (in any tab, by any page, or copied in by hand)
    shows up in every tab within VOICE_POLL_SECONDS, without a click.
    """

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self._lists: list[tuple[Any, Literal["file", "stem"]]] = []

    def add(self, dropdown: Any, shows: Literal["file", "stem"]) -> Any:
        """Register a dropdown whose choices are (name, file) pairs ("file") or plain names ("stem")."""
        self._lists.append((dropdown, shows))
        return dropdown

    def _choices(self) -> list[Any]:
        import gradio as gr

        by_file = voice_choices(self.ctx)
        stems = [name for name, _file in by_file]
        return [gr.Dropdown(choices=by_file if shows == "file" else stems) for _dropdown, shows in self._lists]

    def wire(self) -> None:
        """Call once, after every tab registered its lists."""
        import gradio as gr

        if not self._lists:
            return
        seen = gr.State("")
        timer = gr.Timer(VOICE_POLL_SECONDS, active=True)
        outputs = [seen, *(dropdown for dropdown, _ in self._lists)]

        def poll(last: str) -> list[Any]:
            now = voices_signature(self.ctx)
            if now == last:
                return [gr.skip() for _ in outputs]
            return [now, *self._choices()]

        timer.tick(poll, inputs=[seen], outputs=outputs, api_name=False, show_progress="hidden")


def mark_missing_models(ctx: AppContext, choices: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Pitch-method choices (shown, value) with the ones whose model file is absent marked as such."""
    if ctx.project.rmvpe_path.is_file():
        return list(choices)
    return [(f"{shown} - rmvpe.pt missing" if value == "rmvpe" else shown, value) for shown, value in choices]


def spec_widget(spec: ParamSpec, text: str, *, elem_id: str | None = None, slider_max: float | None = None,
                **extra: Any) -> Any:
    """The widget a parameter spec asks for: a checkbox, a radio of its choices, a slider over its range
    (up to `slider_max` when the range is too wide to drag) or a number box; its default and help come with it."""
    import gradio as gr

    value = extra.pop("value", spec.default)
    if value is None and spec.optional and spec.value_type in (int, float) and (spec.minimum or 0) > 0:
        value = 0  # "not given" shown as 0 (spec_value reads it back as None); a box with a value keeps API
        # clients that leave it out working (gradio_client needs a default for every input it is not given)
    common: dict[str, Any] = {"label": text, "info": spec.help, "elem_id": elem_id, "value": value, **extra}
    if spec.value_type is bool:
        return gr.Checkbox(**common)
    if spec.choices:
        return gr.Radio(list(spec.choices), **common)
    if spec.value_type in (int, float) and spec.minimum is not None and spec.maximum is not None and not spec.optional:
        top = min(spec.maximum, slider_max) if slider_max is not None else spec.maximum
        return gr.Slider(spec.minimum, top, step=spec.step, **common)
    if spec.value_type in (int, float):
        # An optional number's box may be emptied (the browser then sends 0 or nothing): no range check by
        # Gradio there, spec_value reads it as "not given".
        return gr.Number(precision=0 if spec.value_type is int else None,
                         minimum=None if spec.optional else spec.minimum,
                         maximum=None if spec.optional else spec.maximum, **common)
    return gr.Textbox(**{**common, "value": value or ""})


def spec_value(spec: ParamSpec, value: Any) -> Any:
    """A widget's value as the request wants it: an emptied optional box is None (the request's default),
    numbers get the spec's type and range (UserInputError naming the field otherwise)."""
    if spec.value_type is bool:
        return bool(value)
    emptied = value is None or (isinstance(value, str) and not value.strip())
    if spec.optional and value == 0 and spec.minimum is not None and spec.minimum > 0:
        emptied = True  # an emptied number box arrives as 0 where 0 is not a valid value
    if emptied:
        if spec.optional:
            return None
        if spec.value_type in (int, float):
            raise UserInputError(f"the {spec.label} box is empty; type a number ({spec.default} is the usual value)")
        return spec.default
    if spec.value_type in (int, float) and spec.minimum is not None:
        # the type and the lower bound here; the request's own validation applies its upper bounds
        # (a speaker id may exceed the widget's range)
        return spec.checked(value, upper=False)
    return value
