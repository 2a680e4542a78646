"""Assets panel: which of hubert_base.pt, rmvpe.pt and the pretrained G/D are present, and a download button."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import gradio as gr

from tools.jobproc import JobCall
from tools.labels import label
from tools.ui_jobs import job_panel

if TYPE_CHECKING:
    from tools.web import AppContext


def status_html(ctx: AppContext) -> str:
    """One row per download group (hubert, rmvpe, pretrained-v2-40k, ...): files present and missing.

    Rows carry data-asset / data-present attributes so tests and scripts can read them.
    """
    from tools import api

    status = api.asset_status(ctx.project.root)
    groups: dict[str, list[Any]] = {}
    for state in status.assets:
        groups.setdefault(state.group, []).append(state)
    rows = []
    for group, states in groups.items():
        missing = [s for s in states if not s.present and s.size_bytes is None]
        # A file of another size is not the published one (a fine-tuned encoder, or a cut-short copy).
        other = [s for s in states if not s.present and s.size_bytes is not None]
        present = not missing and not other
        parts = [f"{label('assets.missing')}: " + ", ".join(s.path.name for s in missing)] if missing else []
        parts += [f"{label('assets.other')}: " + ", ".join(s.path.name for s in other)] if other else []
        mark = "; ".join(parts) or label("assets.present")
        css = "rvc-present" if present else "rvc-missing"
        where = html.escape(str(states[0].path.parent if len(states) > 1 else states[0].path))
        rows.append(
            f'<tr data-asset="{html.escape(group)}" data-present="{str(present).lower()}">'
            f"<td>{html.escape(group)}</td><td>{len(states) - len(missing)}/{len(states)} files</td>"
            f'<td><span class="{css}">{html.escape(mark)}</span></td><td><code>{where}</code></td></tr>'
        )
    return (f'<div class="rvc-assets"><p>{html.escape(status.summary())}</p><table>{"".join(rows)}</table>'
            f"{separation_html(ctx)}</div>")


def _size(size_bytes: int) -> str:
    return f"{size_bytes / 1e6:,.1f} MB"


def separation_html(ctx: AppContext) -> str:
    """The separation models: one row per download name, with its files' sizes on disk or "missing"."""
    from tools.api.assets import separation_status

    status = separation_status(ctx.project.root)
    rows = []
    for state in status.assets:
        there = state.size_bytes is not None
        mark = _size(state.size_bytes) if state.size_bytes is not None else label("assets.missing")
        rows.append(
            f'<tr data-asset="{html.escape(state.group)}" data-present="{str(there).lower()}">'
            f"<td>{html.escape(state.group)}</td><td>{html.escape(state.path.name)}</td>"
            f'<td><span class="{"rvc-present" if there else "rvc-missing"}">{html.escape(mark)}</span></td></tr>'
        )
    return (f'<p>{html.escape(label("assets.separation"))}</p>'
            f'<table class="rvc-separation-assets">{"".join(rows)}</table>')


def heading(ctx: AppContext, version: str = "v2", sample_rate_tag: str = "40k") -> str:
    """The panel's title: what the default settings (v2, 40k, rmvpe) still lack, readable while it is closed."""
    from tools import api
    from tools.api.assets import assets_for_training

    status = api.asset_status(ctx.project.root)
    if not status.missing_groups:
        return f"{label('assets.heading')}: {label('assets.all_present')}"
    wanted = assets_for_training(version, sample_rate_tag)
    parts = []
    for state, text in (("missing", label("assets.missing")), ("unverified", label("assets.other"))):
        names = [name for name in wanted if status.group_state(name) == state]
        if names:
            parts.append(f"{text}: {', '.join(names)}")
    others = len([g for g in status.absent_groups if g not in wanted])
    if others:
        parts.append(f"{label('assets.missing')}: {others} {label('assets.other_sets')}")
    return f"{label('assets.heading')} - {'; '.join(parts)}"


def asset_sets() -> list[tuple[str, str]]:
    """(shown text, "v2-40k") for each version and rate: the download names a training at those settings needs."""
    from tools.api.assets import assets_for_training

    return [
        (f"{label('assets.set_for')} {version}-{tag}: {', '.join(assets_for_training(version, tag))}", f"{version}-{tag}")
        for version in ("v2", "v1") for tag in ("40k", "48k", "32k")
    ]


def set_selection(ctx: AppContext, chosen_set: str | None) -> list[str]:
    """The missing download names of a set ("v2-40k"); all of them when none is missing (a re-check is cheap)."""
    from tools import api
    from tools.api.assets import assets_for_training

    if not chosen_set:
        return []
    version, tag = chosen_set.split("-", 1)
    names = assets_for_training(version, tag)
    missing = api.asset_status(ctx.project.root).missing_groups
    return [name for name in names if name in missing] or names


def group_choices(ctx: AppContext) -> list[tuple[str, str]]:
    """(shown text, download name) per group, marking the ones with files missing."""
    from tools import api
    from tools.api.assets import GROUP_NAMES, SEPARATION_GROUP_NAMES, separation_status

    status = api.asset_status(ctx.project.root)
    separation = separation_status(ctx.project.root)
    marks = {"missing": f" ({label('assets.missing')})", "unverified": f" ({label('assets.other')})", "present": ""}
    choices = [(f"{name}{marks[status.group_state(name)]}", name) for name in GROUP_NAMES if name != "all"]
    # separation models after the training assets ("uvr5" = all of them)
    return choices + [(f"{name}{marks[separation.group_state(name)]}" if name != "uvr5" else name, name)
                      for name in SEPARATION_GROUP_NAMES]


def build_status_panel(ctx: AppContext) -> None:
    with gr.Accordion(heading(ctx), open=False, elem_id="assets-panel") as accordion:
        table = gr.HTML(status_html(ctx), elem_id="assets-table")
        with gr.Row():
            chosen_set = gr.Dropdown(asset_sets(), value="v2-40k", label=label("assets.set"), scale=2,
                                     elem_id="assets-set")
            chosen = gr.CheckboxGroup(group_choices(ctx), value=set_selection(ctx, "v2-40k"),
                                      label=label("assets.choose"), scale=3, elem_id="assets-choice")
        with gr.Row():
            refresh = gr.Button(label("assets.refresh"), size="sm")
            download = gr.Button(label("assets.download"), size="sm", variant="primary", elem_id="assets-download")
        panel = job_panel(ctx.jobs, extra_outputs=[table, accordion],
                          render_extra=lambda _s: [status_html(ctx), gr.Accordion(label=heading(ctx))],
                          log_lines=8, elem_id="assets-job")

        def start_download(names: list[str] | None) -> tuple[str, Any, None]:
            """Download the ticked groups (files already in place are only checked)."""
            from infer_pack.errors import UserInputError

            if not names:
                raise UserInputError("no asset ticked; tick the ones to download, or pick a set above the list")
            wanted = list(names)

            work = JobCall("download_assets", dict(names=wanted, root=ctx.project.root))
            return "download", work, None

        def reload_panel() -> list[Any]:
            return [gr.Accordion(label=heading(ctx)), status_html(ctx),
                    gr.CheckboxGroup(choices=group_choices(ctx), value=set_selection(ctx, "v2-40k"))]

        chosen_set.change(lambda s: set_selection(ctx, s), [chosen_set], [chosen], api_name=False)
        refresh.click(lambda: status_html(ctx), outputs=[table], api_name="asset_status").then(
            lambda: gr.Accordion(label=heading(ctx)), outputs=[accordion], api_name=False)
        panel.bind(download, start_download, [chosen], api_name="download_assets")
        gr.on(None, reload_panel, inputs=None, outputs=[accordion, table, chosen], api_name=False,
              show_progress="hidden")
        panel.attach_on_load(("download",))
