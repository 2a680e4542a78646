"""Progress reporting and cooperative cancellation for long steps: one job shape, one cancel rule.

The shape: every long function (an API action the app runs as a job) takes keyword arguments plus
`progress: ProgressCallback | None` and `cancel: CancelToken | None`, calls `progress(done, total,
message)` per item or step, returns a result with a `summary()` (and `ok` when items can fail), and
checks `cancel.check()` between items.

The cancel rule: a step that sees its token set stops at that check by raising `CancelledError`.
Everything it finished stays on disk and a rerun resumes. A step with something to report at the stop
(training: the checkpoint and voice it saves) raises `CancelledError(message, result=...)`. The job
runner ends the job as *cancelled* (keeping the result), and the command line prints it and exits 130.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from infer_pack.errors import CancelledError

T = TypeVar("T")

# (items done, items in total, human message); total may be 0 when unknown.
ProgressCallback = Callable[[int, int, str], None]


class CancelToken:
    """Thread-safe flag; `check()` raises CancelledError once `cancel()` was called.

    `event`: share the flag with another process by passing a `multiprocessing` Event (the server sets
    it, the worker's step checks it); by default a thread Event.
    """

    def __init__(self, event: Any = None) -> None:
        self._event = event if event is not None else threading.Event()

    def cancel(self) -> None:
        self._event.set()

    def reset(self) -> None:
        self._event.clear()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise CancelledError("cancelled by the user; finished items are kept and a rerun resumes")


def no_progress(done: int, total: int, message: str) -> None:
    """A progress callback that ignores everything."""


def report(progress: ProgressCallback | None, done: int, total: int, message: str) -> None:
    if progress is not None:
        progress(done, total, message)


def check(cancel: CancelToken | None) -> None:
    if cancel is not None:
        cancel.check()


def track(
    items: Iterable[T],
    total: int,
    label: str,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> Iterator[T]:
    """Yield items, checking `cancel` before each and reporting after each."""
    done = 0
    report(progress, 0, total, label)
    for item in items:
        check(cancel)
        yield item
        done += 1
        report(progress, done, total, f"{label} {done}/{total}")
