"""The Gradio app: an `AppContext` (project, jobs, model cache), `build_app(ctx)` and `launch(args)`.

Each tab lives in its own `tools/ui_*.py` module; this module assembles them, adds the asset panel
and owns the server settings (bind address, login, upload limit, allowed folders).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infer_pack.cache import ModelCache
from infer_pack.errors import UserInputError
from infer_pack.progress import CancelToken
from tools.jobproc import ConversionWorkers, JobCall
from tools.jobs import JobRunner
from tools.project import Project

if TYPE_CHECKING:
    import gradio as gr

LOOPBACK = "127.0.0.1"
ALL_INTERFACES = "0.0.0.0"
DEFAULT_PORT = 7865
DEFAULT_MAX_AUDIO_MINUTES = 30.0
DEFAULT_CONVERT_TIMEOUT_S = 1800.0


@dataclass
class AppContext:
    """Everything a tab needs, passed explicitly (no module-level state).

    `isolate`: long jobs run in child processes and single conversions in worker processes, so that
    no job or input can take the server down (the app's setting). Off, everything runs in the server's
    own process (tests that replace API functions in this process).
    """

    project: Project
    jobs: JobRunner = field(default_factory=lambda: JobRunner(isolate=True))
    cache: ModelCache = field(default_factory=lambda: ModelCache(max_items=4))
    realtime_remote: bool = False  # serve the Realtime tab to other machines too (--realtime-remote)
    workers: ConversionWorkers = field(default_factory=ConversionWorkers)
    isolate: bool = True
    voice_lists: Any = None  # tools.ui_common.VoiceLists of the app being built (build_app sets it)
    max_input_s: float = DEFAULT_MAX_AUDIO_MINUTES * 60.0  # longest input a conversion accepts (--max-audio-minutes)
    _stops: dict[str, CancelToken] = field(default_factory=dict, repr=False)  # per page: its running conversion
    _stops_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        if self.jobs.cache is None:
            self.jobs.cache = self.cache
        self.jobs.isolate = self.isolate

    def set_isolation(self, isolate: bool) -> None:
        self.isolate = isolate
        self.jobs.isolate = isolate

    def convert(
        self,
        call: JobCall,
        on_progress: Callable[[int, int, str], None] | None = None,
        cancel: CancelToken | None = None,
    ) -> Any:
        """Run one short API call (a single conversion) in a worker process, or here when not isolating."""
        report = on_progress or (lambda *_: None)
        if self.isolate:
            return self.workers.call(call, on_progress=report, cancel=cancel)
        return call.invoke(progress=report, cancel=cancel or CancelToken(), on_metrics=lambda *_: None,
                           cache=self.cache)

    @contextlib.contextmanager
    def stop_token(self, session: str | None) -> Iterator[CancelToken]:
        """A Stop token for the conversion a page (Gradio session) runs now; `stop_conversion` sets it."""
        token = CancelToken()
        key = session or ""
        with self._stops_lock:
            self._stops[key] = token
        try:
            yield token
        finally:
            with self._stops_lock:
                if self._stops.get(key) is token:
                    del self._stops[key]

    def stop_conversion(self, session: str | None) -> bool:
        """Stop the conversion the page `session` runs; False when it runs none."""
        with self._stops_lock:
            token = self._stops.get(session or "")
        if token is None:
            return False
        token.cancel()
        return True

    def close(self) -> None:
        self.jobs.cancel_all()
        self.workers.close()

    @classmethod
    def create(
        cls, root: str | Path, allow_paths: tuple[str | Path, ...] = (), realtime_remote: bool = False
    ) -> AppContext:
        return cls(project=Project.at(root, extra_allowed=allow_paths), realtime_remote=realtime_remote)

    def served_dirs(self) -> list[str]:
        """Folders whose files the browser may fetch: only where single conversions are written."""
        from tools.api.convert import OUTPUT_DIR_NAME

        return [str(self.project.root / OUTPUT_DIR_NAME)]


OPEN_SERVER_RISKS = (
    "anyone who can reach this machine could, without a login: read and overwrite the voices, experiments and "
    "outputs under the project folder, start trainings and conversions that use its CPU, GPU, memory and disk, "
    "download the project's audio results, and stream through the Realtime tab"
)


def check_open_server(host: str, auth: tuple[str, str] | None, no_auth: bool) -> str | None:
    """Refuse to serve other machines without a login unless asked to; returns a warning to print, if any."""
    if auth is not None or host in (LOOPBACK, "localhost", "::1"):
        return None
    if not no_auth:
        raise UserInputError(
            f"--listen serves the app to other machines; {OPEN_SERVER_RISKS}. Add --auth user:password "
            "(recommended), or --no-auth to serve it open on purpose"
        )
    return f"warning: serving on {host} without a login (--no-auth): {OPEN_SERVER_RISKS}"


@dataclass(frozen=True)
class ServerSettings:
    host: str = LOOPBACK
    port: int = DEFAULT_PORT
    auth: tuple[str, str] | None = None
    max_upload_mb: int = 500


def parse_auth(text: str | None) -> tuple[str, str] | None:
    """'user:password' -> (user, password); the password may itself contain ':'."""
    if text is None:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise UserInputError(f"invalid --auth {text!r}: give it as user:password (both non-empty)")
    return user, password


def settings_from_args(args: argparse.Namespace) -> ServerSettings:
    host = ALL_INTERFACES if getattr(args, "listen", False) else getattr(args, "host", LOOPBACK)
    port = int(args.port)
    if not 0 < port < 65536:
        raise UserInputError(f"invalid --port {port}: use a number between 1 and 65535")
    if args.max_upload_mb <= 0:
        raise UserInputError(f"invalid --max-upload-mb {args.max_upload_mb}: use a positive number")
    return ServerSettings(host=host, port=port, auth=parse_auth(args.auth), max_upload_mb=int(args.max_upload_mb))


def _theme() -> gr.themes.Base:
    import gradio as gr

    # System fonts only: the app must look right on machines without internet access.
    return gr.themes.Soft(
        primary_hue="indigo",
        font=["ui-sans-serif", "system-ui", "Segoe UI", "Helvetica", "Arial", "sans-serif"],
        font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"],
    )


CSS = """
.rvc-progress { position: relative; min-height: 26px; border-radius: 6px; background: var(--block-background-fill);
  border: 1px solid var(--border-color-primary); overflow: hidden; }
.rvc-progress .bar { position: absolute; inset: 0 auto 0 0; background: var(--color-accent-soft); transition: width .4s; }
.rvc-progress[data-state=failed] .bar { background: #f4c7c3; }
.rvc-progress[data-state=cancelled] .bar { background: #f6e3b4; }
.rvc-progress .text { position: relative; padding: 0 10px; line-height: 26px; font-size: 14px; white-space: nowrap;
  overflow: hidden; text-overflow: ellipsis; }
.rvc-progress[data-state=failed] .text { white-space: normal; overflow-wrap: anywhere; }
.rvc-running table { width: 100%; }
.rvc-running td { padding: 2px 8px; }
.rvc-running tr.rvc-ended td { color: #b3261e; }
.rvc-assets table { width: 100%; }
.rvc-assets td { padding: 2px 8px; }
.rvc-missing { color: #b3261e; font-weight: 600; overflow-wrap: anywhere; }
.rvc-present { color: #1e7a34; font-weight: 600; }
"""


def build_app(ctx: AppContext) -> gr.Blocks:
    """Assemble the tabs into one Blocks app (not launched)."""
    import gradio as gr

    from tools import ui_assets, ui_convert, ui_jobs, ui_model_tools, ui_realtime, ui_separate, ui_train
    from tools.labels import label
    from tools.ui_common import VoiceLists

    ctx.voice_lists = VoiceLists(ctx)

    with gr.Blocks(title=label("app.title"), theme=_theme(), css=CSS, analytics_enabled=False) as app:
        gr.Markdown(f"## {label('app.title')}\n{label('app.subtitle')}")
        ui_assets.build_status_panel(ctx)
        ui_jobs.running_jobs_panel(ctx.jobs)
        with gr.Tabs():
            with gr.Tab(label("tab.convert"), id="convert") as convert_tab:
                ui_convert.build(ctx, convert_tab)
            with gr.Tab(label("tab.train"), id="train"):
                ui_train.build(ctx)
            with gr.Tab(label("tab.model_tools"), id="model_tools") as tools_tab:
                ui_model_tools.build(ctx, tools_tab)
            with gr.Tab(label("tab.separate"), id="separate") as separate_tab:
                ui_separate.build(ctx, separate_tab)
            with gr.Tab(label("tab.realtime"), id="realtime") as realtime_tab:
                ui_realtime.build(ctx, realtime_tab)
        # Scripts (gradio_client) follow a job started by a button through these two endpoints.
        def status_endpoint(job_id: str) -> dict:
            return job_status(ctx, job_id)

        def stop_endpoint(job_id: str) -> bool:
            return ctx.jobs.cancel(job_id)

        def running_endpoint() -> list[dict]:
            return [job_status(ctx, s.job_id) for s in ctx.jobs.running()]

        ctx.voice_lists.wire()
        gr.api(status_endpoint, api_name="job_status")
        gr.api(stop_endpoint, api_name="stop_job")
        gr.api(running_endpoint, api_name="running_jobs")
    return app


def job_status(ctx: AppContext, job_id: str) -> dict[str, object]:
    """A job's state as plain JSON: state, done, total, message, error, the last log lines."""
    snapshot = ctx.jobs.snapshot(job_id)
    if snapshot is None:
        return {"job_id": job_id, "state": "unknown"}
    return {
        "job_id": snapshot.job_id, "kind": snapshot.kind, "experiment": snapshot.key, "state": snapshot.state,
        "done": snapshot.done, "total": snapshot.total, "message": snapshot.message, "error": snapshot.error,
        "elapsed_s": round(snapshot.elapsed_s, 3), "log": list(snapshot.log[-50:]),
        "last_metrics": {p.name: p.value for p in snapshot.metrics},
        "pid": snapshot.pid,
        "outcome": _outcome(snapshot.result),
    }


def _outcome(result: object) -> str:
    """A finished job's few words beyond its state ("1 of 3 failed"), or ""."""
    outcome = getattr(result, "outcome", None)
    return str(outcome()) if callable(outcome) else ""


def _disconnect_types() -> tuple[type[BaseException], ...]:
    """Exceptions that only mean a browser went away mid-request (closed tab, reload, lost network)."""
    import asyncio

    found: list[type[BaseException]] = [ConnectionResetError, BrokenPipeError, asyncio.CancelledError]
    try:
        import anyio

        found += [anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream]
    except ImportError:
        pass
    try:
        from starlette.requests import ClientDisconnect

        found.append(ClientDisconnect)
    except ImportError:
        pass
    return tuple(found)


class DisconnectFilter(logging.Filter):
    """Turns a logged traceback whose cause is a client disconnect into one line: a closed tab is not an error
    of the server. Any other exception keeps its traceback."""

    def __init__(self) -> None:
        super().__init__()
        self.types = _disconnect_types()

    def _is_disconnect(self, exc: BaseException | None) -> bool:
        seen = 0
        while exc is not None and seen < 10:  # the cause chain (bounded: chains can loop)
            if isinstance(exc, self.types):
                return True
            if isinstance(exc, BaseExceptionGroup) and any(self._is_disconnect(e) for e in exc.exceptions):
                return True
            exc = exc.__cause__ or exc.__context__
            seen += 1
        return False

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and self._is_disconnect(record.exc_info[1]):
            name = type(record.exc_info[1]).__name__
            record.msg, record.args = f"a client disconnected during a request ({name})", ()
            record.exc_info, record.exc_text, record.levelno, record.levelname = None, None, logging.INFO, "INFO"
        return True


def install_disconnect_filter() -> None:
    """On the root handlers and on the web server's own loggers (which may have handlers of their own)."""
    disconnects = DisconnectFilter()
    for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.addFilter(disconnects)
        for handler in logger.handlers:
            handler.addFilter(disconnects)


def launch(args: argparse.Namespace, *, block: bool = True) -> int:
    """Start the server from parsed command-line flags; returns an exit status."""
    import sys

    try:
        settings = settings_from_args(args)
        root = Path(args.root).expanduser()
        if not root.is_dir():
            raise UserInputError(f"project folder {str(root)!r} does not exist; create it or pass --root FOLDER")
        allow = tuple(Path(p).expanduser() for p in args.allow_path)
        for folder in allow:
            if not folder.is_dir():
                raise UserInputError(f"--allow-path {str(folder)!r} is not a folder")
        warning = check_open_server(settings.host, settings.auth, bool(getattr(args, "no_auth", False)))
        max_minutes = float(getattr(args, "max_audio_minutes", DEFAULT_MAX_AUDIO_MINUTES))
        timeout_s = float(getattr(args, "convert_timeout", DEFAULT_CONVERT_TIMEOUT_S))
        if max_minutes <= 0 or timeout_s <= 0:
            raise UserInputError("--max-audio-minutes and --convert-timeout must be positive numbers")
    except UserInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if warning:
        print(warning, file=sys.stderr)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    install_disconnect_filter()
    ctx = AppContext.create(root, allow, realtime_remote=bool(getattr(args, "realtime_remote", False)))
    ctx.max_input_s = max_minutes * 60.0
    ctx.workers.timeout_s = timeout_s
    ctx.jobs.install_log_capture()
    app = build_app(ctx)
    serve(app, settings, ctx.served_dirs(), block=block, ctx=ctx)
    return 0


def serve(
    app: gr.Blocks, settings: ServerSettings, served_dirs: list[str], *, block: bool = True,
    ctx: AppContext | None = None,
) -> None:
    """Queue and launch `app` with the server settings (no share links, no SSR, no telemetry).

    With `ctx`, the same server also offers the streaming API (`tools.stream_ws`, path /stream/ws).
    """
    from tools.stream_ws import stream_routes

    app.queue(default_concurrency_limit=2)
    app.launch(
        app_kwargs={"routes": stream_routes(ctx, settings.auth)} if ctx is not None else None,
        allowed_paths=served_dirs,
        server_name=settings.host,
        server_port=settings.port,
        auth=settings.auth,
        max_file_size=f"{settings.max_upload_mb}mb",
        share=False,
        ssr_mode=False,
        show_error=True,
        prevent_thread_lock=not block,
        inbrowser=False,
        quiet=not block,
        mcp_server=False,
    )
