"""Assets panel: which of hubert_base.pt, rmvpe.pt and the pretrained G/D are present, and a download button."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import gradio as gr

from tools.jobs import JobContext
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
    return f'<div class="rvc-assets"><p>{html.escape(status.summary())}</p><table>{"".join(rows)}</table></div>'


def build_status_panel(ctx: AppContext) -> None:
    with gr.Accordion(label("assets.heading"), open=False, elem_id="assets-panel"):
        table = gr.HTML(status_html(ctx), elem_id="assets-table")
        with gr.Row():
            refresh = gr.Button(label("assets.refresh"), size="sm")
            download = gr.Button(label("assets.download"), size="sm", variant="primary")
        panel = job_panel(ctx.jobs, extra_outputs=[table], render_extra=lambda _s: [status_html(ctx)], log_lines=5,
                          elem_id="assets-job")

        def start_download() -> tuple[str, Any, None]:
            """Download every group with a missing file."""
            from tools import api

            missing = api.asset_status(ctx.project.root).missing_groups

            def work(job: JobContext) -> Any:
                result = api.download_assets(missing, ctx.project.root, progress=job.progress, cancel=job.cancel)
                job.log(result.summary())
                return result

            return "download", work, None

        refresh.click(lambda: status_html(ctx), outputs=[table], api_name="asset_status")
        panel.bind(download, start_download, [], api_name="download_assets")
        panel.attach_on_load(("download",))

