"""Functions that tests run as jobs in child processes (importable by name from a spawned interpreter)."""

from __future__ import annotations

import ctypes
import logging
import os
import time
from pathlib import Path
from typing import Any

from infer_pack.errors import UserInputError
from infer_pack.progress import CancelToken, ProgressCallback


def count(
    *, items: int, delay_s: float = 0.0, pid_file: str | None = None, progress: ProgressCallback,
    cancel: CancelToken, on_metrics: Any,
) -> dict[str, int]:
    """Report `items` steps (sleeping `delay_s` each), logging and recording a metric per step."""
    if pid_file:
        Path(pid_file).write_text(str(os.getpid()))
    logging.getLogger("tests.jobproc").info("counting to %d in pid %d", items, os.getpid())
    for i in range(items):
        cancel.check()
        on_metrics(i, "loss", 1.0 / (i + 1))
        progress(i + 1, items, f"step {i + 1}/{items}")
        time.sleep(delay_s)
    return {"items": items, "pid": os.getpid()}


def ignore_cancel(*, seconds: float, progress: ProgressCallback) -> str:
    """A step that never checks its cancel token (a hang, as far as Stop can tell)."""
    progress(0, 1, "hanging")
    time.sleep(seconds)
    return "woke up"


def crash(*, progress: ProgressCallback) -> None:
    """Die in native code (segmentation fault)."""
    progress(0, 1, "about to crash")
    ctypes.string_at(0)


def refuse(*, progress: ProgressCallback) -> None:
    raise UserInputError("the input was refused: give another file")


def allocate(*, megabytes: int, progress: ProgressCallback) -> int:
    """Hold `megabytes` of touched memory for the length of the job."""
    block = bytearray(megabytes * 1024 * 1024)
    for offset in range(0, len(block), 4096):
        block[offset] = 1
    progress(1, 1, "allocated")
    return len(block)
