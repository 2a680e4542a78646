"""Jobs in their own processes: a crash, an out-of-memory kill or a hang ends that job, never the server.

A `JobCall` names an API function of `tools.api` and its keyword arguments; it is picklable, so the
server can run it in a child process started with `spawn` (a fresh interpreter: no copy of the
server's memory, no inherited locks or threads). The child reports over a pipe:

    child -> server   ("progress", done, total, message) | ("log", line) | ("metric", step, name, value)
                      then exactly one of ("result", value) | ("cancelled",) | ("failed", message)
    server -> child   ("cancel",)

and exits, which hands all of its memory back to the system. When the pipe closes without one of the
final messages, the child died: `death_cause` turns its exit status into a sentence (signal name, the
cgroup's out-of-memory counter). Stop is the cooperative cancel first; a child that has not stopped
after its grace period is terminated, then killed.

`ConversionWorkers` keeps a few long-lived children for single conversions: each holds its own model
cache, answers one request at a time, and is replaced when it dies or exceeds its time limit.

CPU priority: the server (the UI, the Realtime tab's streams) comes first. A job's process (training,
separation, preprocessing, batch conversion, index building) lowers its own priority by `JOB_NICENESS`
(nice +10) as it starts, a conversion worker by `CONVERSION_NICENESS` (+5: a single conversion is
waited for, a job runs in the background). On a busy machine the live stream and the pages keep the
CPU they need; the jobs take the rest and run as fast as ever on an idle one.
"""

from __future__ import annotations

import importlib
import logging
import os
import pickle
import queue
import signal
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infer_pack.errors import CancelledError, RVCError
from infer_pack.progress import CancelToken

# Job-side arguments a call may ask for by name (the API functions' own parameter names).
INJECTABLE = frozenset({"progress", "cancel", "on_metrics", "cache"})
DEFAULT_GRACE_S = 60.0
KILL_AFTER_TERMINATE_S = 5.0
# A child whose server went away stops its work (cancel) and exits at the latest after this.
ORPHAN_EXIT_S = 30.0
_CGROUP_EVENTS = Path("/sys/fs/cgroup/memory.events")
JOB_NICENESS = 10
CONVERSION_NICENESS = 5


class JobProcessError(RVCError):
    """A job's or a worker's process died or was ended; the message names the cause."""


class RemoteJobError(RVCError):
    """The call failed inside its process (bad input, missing file ...); the message is the original one."""


@dataclass(frozen=True)
class JobCall:
    """`tools.api.<function>(**kwargs, <injected job arguments>)`, described so that it can be pickled.

    `function`: an action of `tools.api` by name, or "module:function" for any importable function.

    `inject`: which of progress / cancel / on_metrics / cache the function receives from the job.
    `grace_s`: after Stop, how long the job may take to stop by itself before its process is ended.
    """

    function: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    inject: tuple[str, ...] = ("progress", "cancel")
    grace_s: float = DEFAULT_GRACE_S

    def __post_init__(self) -> None:
        unknown = set(self.inject) - INJECTABLE
        if unknown:
            raise ValueError(f"cannot inject {sorted(unknown)}; choose from {sorted(INJECTABLE)}")
        module, _, name = self.function.rpartition(":")
        if not name.isidentifier() or not all(part.isidentifier() for part in module.split(".") if module):
            raise ValueError(f"not a function name: {self.function!r}")

    def resolve(self) -> Callable[..., Any]:
        module, _, name = self.function.rpartition(":")
        if module:
            return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]
        api = importlib.import_module("tools.api")
        if name not in getattr(api, "__all__", ()):
            raise ValueError(f"tools.api has no action {name!r}")
        return getattr(api, name)  # type: ignore[no-any-return]

    def invoke(
        self,
        *,
        progress: Callable[[int, int, str], None],
        cancel: CancelToken,
        on_metrics: Callable[[int, str, float], None],
        cache: Any,
    ) -> Any:
        """Run the call here, in this process and thread."""
        available = {"progress": progress, "cancel": cancel, "on_metrics": on_metrics, "cache": cache}
        extra = {name: available[name] for name in self.inject}
        return self.resolve()(**dict(self.kwargs), **extra)


@dataclass(frozen=True)
class TextResult:
    """Stands in for a result that cannot be pickled: its summary and whether it succeeded."""

    text: str
    ok: bool = True

    def summary(self) -> str:
        return self.text


def _picklable(result: Any) -> Any:
    try:
        pickle.dumps(result)
        return result
    except Exception:  # noqa: BLE001 - any pickling failure: send what the UI needs instead
        summary = getattr(result, "summary", None)
        text = str(summary()) if callable(summary) else repr(result)
        return TextResult(text, bool(getattr(result, "ok", True)))


def _spawn() -> Any:
    import multiprocessing

    return multiprocessing.get_context("spawn")


_START_LOCK = threading.Lock()


def _start(process: Any) -> None:
    """Start a spawned process without re-running the parent's main script in it.

    `spawn` normally imports the parent's `__main__` again in the child (a script without an
    `if __name__ == "__main__"` guard would then start its work a second time). Everything a job
    needs is importable by module name, so the child is told that its main module is `__main__`
    itself, which multiprocessing skips.
    """
    import sys
    from importlib.machinery import ModuleSpec

    main = sys.modules.get("__main__")
    with _START_LOCK:
        saved = getattr(main, "__spec__", None)
        try:
            if main is not None:
                main.__spec__ = ModuleSpec("__main__", None)
            process.start()
        finally:
            if main is not None:
                main.__spec__ = saved


# ---------------------------------------------------------------------------------------------- child side


# Loggers whose INFO lines are a library's own start-up chatter, not news about the step: faiss reports
# every CPU variant it tries ("Could not load library with AVX512 support due to: ModuleNotFoundError"),
# which reads like a failure in a job's log. Their warnings still come through.
LIBRARY_CHATTER = ("faiss.loader",)


def is_chatter(record: logging.LogRecord) -> bool:
    return record.levelno < logging.WARNING and record.name.startswith(LIBRARY_CHATTER)


class _PipeLogHandler(logging.Handler):
    def __init__(self, send: Callable[[tuple[Any, ...]], None]) -> None:
        super().__init__(level=logging.INFO)
        self._send = send
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self.addFilter(lambda record: not is_chatter(record))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._send(("log", self.format(record)))
        except Exception:  # noqa: BLE001 - a closed pipe must not break the work that logged
            self.handleError(record)


def _child_sender(conn: Any) -> Callable[[tuple[Any, ...]], None]:
    lock = threading.Lock()

    def send(message: tuple[Any, ...]) -> None:
        with lock:
            conn.send(message)

    return send


def _listen_for_cancel(conn: Any, token: CancelToken) -> None:
    """Set the token on ("cancel",); when the server is gone, cancel and exit soon after."""
    try:
        while True:
            message = conn.recv()
            if message and message[0] == "cancel":
                token.cancel()
    except (EOFError, OSError):
        token.cancel()
        timer = threading.Timer(ORPHAN_EXIT_S, os._exit, args=(3,))
        timer.daemon = True
        timer.start()


def _quiet_child_logging(send: Callable[[tuple[Any, ...]], None]) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(_PipeLogHandler(send))
    root.setLevel(logging.INFO)


def lower_priority(increment: int) -> None:
    """Make this process `increment` steps nicer than it started (no-op where the OS has no nice values)."""
    if hasattr(os, "nice"):
        try:
            os.nice(increment)
        except OSError as exc:
            logging.getLogger(__name__).warning("could not lower this process's CPU priority: %s", exc)


def child_main(call: JobCall, conn: Any) -> None:
    """Entry point of a job's process: run `call`, report over `conn`, exit."""
    from infer_pack.cache import ModelCache

    lower_priority(JOB_NICENESS)
    send = _child_sender(conn)
    _quiet_child_logging(send)
    token = CancelToken()
    threading.Thread(target=_listen_for_cancel, args=(conn, token), name="cancel-listener", daemon=True).start()
    try:
        result = call.invoke(
            progress=lambda done, total, message: send(("progress", int(done), int(total), str(message))),
            cancel=token,
            on_metrics=lambda step, name, value: send(("metric", int(step), str(name), float(value))),
            cache=ModelCache(max_items=4),
        )
    except CancelledError as exc:
        send(("cancelled", _picklable(exc.result) if exc.result is not None else None))
    except RVCError as exc:
        send(("failed", str(exc)))
    except MemoryError:
        send(("failed", "out of memory: the step needed more memory than the machine had; free memory "
                        "(stop other jobs, use a smaller batch size or shorter files) and rerun"))
    except Exception as exc:  # noqa: BLE001 - reported to the server as one line, traceback in the log
        send(("log", traceback.format_exc()))
        send(("failed", f"{type(exc).__name__}: {exc}"))
    else:
        send(("result", _picklable(result)))
    finally:
        conn.close()


# --------------------------------------------------------------------------------------------- server side


def oom_kill_count() -> int | None:
    """The cgroup's out-of-memory kill counter (cgroup v2), None where it cannot be read."""
    try:
        for line in _CGROUP_EVENTS.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == "oom_kill":
                return int(value)
    except (OSError, ValueError):
        return None
    return None


def death_cause(exitcode: int | None, *, oom_before: int | None = None, oom_after: int | None = None) -> str:
    """A sentence for a process that ended without reporting a result."""
    if exitcode is None:
        return "did not exit"
    if exitcode >= 0:
        return f"exited with status {exitcode} without reporting a result"
    number = -exitcode
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = f"signal {number}"
    oom = oom_before is not None and oom_after is not None and oom_after > oom_before
    if number == signal.SIGKILL and oom:
        return ("was killed by the system for lack of memory (out-of-memory killer, SIGKILL); free memory (stop other "
                "jobs, use a smaller batch size or shorter files) and rerun: finished items are kept")
    if number == signal.SIGKILL:
        return ("was killed (SIGKILL) by another process or by the system's out-of-memory killer; rerun it: "
                "finished items are kept")
    if number in (signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGABRT):
        return (f"crashed in native code ({name}); the server and other jobs go on. The log above shows the last "
                "step; try another input file or method, and report the crash with the input if it repeats")
    if number == signal.SIGXFSZ:
        return "was ended by the file-size limit (SIGXFSZ): a file grew past the allowed size; raise `ulimit -f`"
    return f"was ended by {name}"


class ChildJob:
    """The server's handle on one job process: start it, read its messages, stop it."""

    def __init__(self, call: JobCall) -> None:
        context = _spawn()
        self.call = call
        self._conn, child_conn = context.Pipe(duplex=True)
        self.process = context.Process(target=child_main, args=(call, child_conn), name="rvc-job", daemon=True)
        self._oom_before = oom_kill_count()
        _start(self.process)
        child_conn.close()
        self._cancel_sent_at: float | None = None
        self._terminated_at: float | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def request_stop(self) -> float:
        """Send the cooperative cancel once; returns the time by which the process will be ended."""
        if self._cancel_sent_at is None:
            self._cancel_sent_at = time.time()
            try:
                self._conn.send(("cancel",))
            except OSError:
                pass
        return self._cancel_sent_at + self.call.grace_s

    def enforce_deadline(self) -> str | None:
        """Terminate, then kill, a child that outlived its grace after Stop; returns a log line when it acts."""
        if self._cancel_sent_at is None or not self.process.is_alive():
            return None
        now = time.time()
        if self._terminated_at is None and now >= self._cancel_sent_at + self.call.grace_s:
            self._terminated_at = now
            self.process.terminate()
            return f"did not stop within {self.call.grace_s:.0f} s of Stop; ending its process"
        if self._terminated_at is not None and now >= self._terminated_at + KILL_AFTER_TERMINATE_S:
            self.process.kill()
        return None

    @property
    def ended_by_us(self) -> bool:
        return self._terminated_at is not None

    def messages(self, poll_s: float = 0.2) -> Any:
        """Yield messages until the pipe closes (child finished or died); yields None on idle polls."""
        while True:
            try:
                ready = self._conn.poll(poll_s)
            except (EOFError, OSError):
                return
            if not ready:
                yield None
                continue
            try:
                yield self._conn.recv()
            except (EOFError, OSError):
                return
            except Exception as exc:  # noqa: BLE001 - an unreadable message: report it, keep reading
                yield ("log", f"unreadable message from the job process: {type(exc).__name__}: {exc}")

    def finish(self) -> str:
        """Reap the process; returns why it died (meaningful only when no final message came)."""
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=5)
        self._conn.close()
        return death_cause(self.process.exitcode, oom_before=self._oom_before, oom_after=oom_kill_count())


# ------------------------------------------------------------------------------------------ conversion workers


def worker_main(conn: Any, cancel_event: Any = None) -> None:
    """Entry point of a conversion worker: answer requests until the pipe closes."""
    from infer_pack.cache import ModelCache

    lower_priority(CONVERSION_NICENESS)
    logging.getLogger().setLevel(logging.WARNING)
    cache = ModelCache(max_items=4)
    token = CancelToken(cancel_event)  # the server's Stop sets the shared event
    while True:
        try:
            call: JobCall = conn.recv()
        except (EOFError, OSError):
            return
        def progress(done: int, total: int, message: str) -> None:
            conn.send(("progress", int(done), int(total), str(message)))

        try:
            result = call.invoke(progress=progress, cancel=token, on_metrics=lambda *_: None, cache=cache)
        except CancelledError as exc:
            reply: tuple[Any, ...] = ("cancelled", str(exc))
        except RVCError as exc:
            reply = ("failed", str(exc))
        except MemoryError:
            reply = ("failed", "out of memory while converting; try a shorter file or free memory")
        except Exception as exc:  # noqa: BLE001 - the request fails, the worker stays
            reply = ("failed", f"{type(exc).__name__}: {exc}")
        else:
            reply = ("result", _picklable(result))
        try:
            conn.send(reply)
        except (EOFError, OSError):
            return


class _Worker:
    def __init__(self) -> None:
        context = _spawn()
        self.conn, child_conn = context.Pipe(duplex=True)
        self.cancel_event = context.Event()  # Stop of the request being served
        self.process = context.Process(target=worker_main, args=(child_conn, self.cancel_event),
                                       name="rvc-convert-worker", daemon=True)
        self._oom_before = oom_kill_count()
        _start(self.process)
        child_conn.close()

    def alive(self) -> bool:
        return self.process.is_alive()

    def stop(self) -> None:
        self.conn.close()
        self.process.join(timeout=2)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=5)

    def cause(self) -> str:
        self.process.join(timeout=5)
        return death_cause(self.process.exitcode, oom_before=self._oom_before, oom_after=oom_kill_count())


class ConversionWorkers:
    """A small pool of conversion processes; `call()` runs one request in a free worker and returns its result.

    A worker that dies (native crash, out of memory) fails only the request it was serving, with the
    cause; a worker that takes longer than `timeout_s` is ended. The next request gets a fresh worker.
    """

    def __init__(self, size: int = 2, timeout_s: float = 1800.0) -> None:
        self._idle: queue.LifoQueue[_Worker | None] = queue.LifoQueue()
        for _ in range(max(1, size)):
            self._idle.put(None)  # started on first use
        self.timeout_s = float(timeout_s)
        self._lock = threading.Lock()
        self._all: list[_Worker] = []

    def pids(self) -> list[int]:
        with self._lock:
            return [w.process.pid for w in self._all if w.alive() and w.process.pid is not None]

    def call(
        self,
        call: JobCall,
        timeout_s: float | None = None,
        on_progress: Callable[[int, int, str], None] | None = None,
        cancel: CancelToken | None = None,
    ) -> Any:
        """Run `call` in a free worker. `cancel` set while it runs stops the call at its next check
        (CancelledError here); progress messages go to `on_progress` as they come."""
        worker = self._idle.get()
        try:
            if worker is None or not worker.alive():
                worker = _Worker()
                with self._lock:
                    self._all = [w for w in self._all if w.alive()] + [worker]
            return self._ask(worker, call, self.timeout_s if timeout_s is None else timeout_s, on_progress, cancel)
        except JobProcessError:
            worker = None  # replaced by a fresh one on the next request
            raise
        finally:
            self._idle.put(worker)

    def _ask(
        self,
        worker: _Worker,
        call: JobCall,
        timeout_s: float,
        on_progress: Callable[[int, int, str], None] | None,
        cancel: CancelToken | None,
    ) -> Any:
        deadline = time.monotonic() + timeout_s
        worker.cancel_event.clear()
        try:
            worker.conn.send(call)
            while True:
                if cancel is not None and cancel.cancelled:
                    worker.cancel_event.set()
                left = deadline - time.monotonic()
                if left <= 0:
                    worker.process.kill()
                    raise JobProcessError(
                        f"the conversion took longer than {timeout_s:.0f} s and was ended; try a shorter file "
                        "(or start the app with a larger --convert-timeout)"
                    )
                if not worker.conn.poll(min(left, 0.2)):
                    continue
                reply = worker.conn.recv()
                if reply[0] != "progress":
                    break
                if on_progress is not None:
                    on_progress(reply[1], reply[2], reply[3])
        except (EOFError, OSError):
            raise JobProcessError(
                f"the conversion's worker process {worker.cause()}; the next conversion starts a new one"
            ) from None
        if reply[0] == "cancelled":
            raise CancelledError(str(reply[1]))
        if reply[0] == "failed":
            raise RemoteJobError(str(reply[1]))
        return reply[1]

    def close(self) -> None:
        with self._lock:
            workers, self._all = self._all, []
        for worker in workers:
            worker.stop()
