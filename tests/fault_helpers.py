"""Running a real step in a child process and killing it with SIGKILL at a chosen point.

No test functions here. A test writes a small driver script (`DRIVER_PRELUDE` + its own code),
starts it in its own process group, waits for a condition that marks the kill point (files on
disk, or a marker file the driver touches from a hook), kills the whole group (the step's worker
processes too) with SIGKILL, then reruns the step in the test process and checks the result.

Hooks the drivers install (`block_on_replace`, `slow_down`) only pause the real code at a known
place; they never replace what it writes.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
TESTS_DIR = Path(__file__).resolve().parent

# Put at the top of every driver: import paths, and the hooks below.
DRIVER_PRELUDE = f'''
import os, sys, time, threading
from pathlib import Path
sys.path[:0] = [{str(REPO_ROOT)!r}, {str(TESTS_DIR)!r}]

def touch(path):
    Path(path).write_text(str(os.getpid()))

def block_on_replace(match, marker, *, after=False, nth=1):
    """Pause forever at the nth os.replace whose destination satisfies `match(dst)`: before the
    rename (the temp file is complete, the target not yet replaced) or, with after=True, just
    after it. Touches `marker` when paused. Counts per process."""
    real = os.replace
    seen = [0]
    def replace(src, dst, *args, **kwargs):
        hit = match(str(dst))
        if hit:
            seen[0] += 1
        if hit and seen[0] == nth and not after:
            touch(marker)
            while True:
                time.sleep(60)
        result = real(src, dst, *args, **kwargs)
        if hit and seen[0] == nth and after:
            touch(marker)
            while True:
                time.sleep(60)
        return result
    os.replace = replace

def slow_down(module, name, seconds):
    """Sleep `seconds` after each call of module.name (the real function still runs)."""
    real = getattr(module, name)
    def slowed(*args, **kwargs):
        result = real(*args, **kwargs)
        time.sleep(seconds)
        return result
    setattr(module, name, slowed)
'''


@dataclass
class Driver:
    """A running driver process (leader of its own process group)."""

    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the driver and every process it started (pool workers), then reap it."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)
        # Workers are reparented, not children of this process: wait until none of the group
        # runs any more, so nothing writes into the experiment after the kill.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _group_running(self.proc.pid):
            time.sleep(0.02)

    def wait_until(self, condition: Callable[[], bool], what: str, timeout_s: float = 90.0) -> None:
        """Poll `condition` until true; fails (killing the driver) if the driver exits first or time runs out."""
        deadline = time.monotonic() + timeout_s
        while True:
            if condition():
                return
            if not self.alive():
                raise AssertionError(
                    f"driver ended (rc {self.proc.returncode}) before the kill point ({what}):\n{self.log()[-3000:]}"
                )
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"kill point not reached in {timeout_s} s ({what}):\n{self.log()[-3000:]}")
            time.sleep(0.01)


def _group_running(pgid: int) -> bool:
    """Whether a process of group `pgid` still runs (zombies waiting for a reaper do not count)."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state, ppid, pgrp, ...
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


def start_driver(tmp_path: Path, name: str, body: str, *, threads: int = 1) -> Driver:
    """Write `DRIVER_PRELUDE + body` to tmp_path/<name>.py and start it in a new session."""
    script = tmp_path / f"{name}.py"
    script.write_text(DRIVER_PRELUDE + body, encoding="utf-8")
    log_path = tmp_path / f"{name}.log"
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"})
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, str(script)],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Driver(proc, log_path)


@dataclass(frozen=True)
class FileId:
    """What changes when a file is written again: atomic writes give a new inode."""

    inode: int
    mtime_ns: int
    size: int


def file_ids(paths: Iterable[Path]) -> dict[Path, FileId]:
    out = {}
    for path in paths:
        st = path.stat()
        out[path] = FileId(st.st_ino, st.st_mtime_ns, st.st_size)
    return out


def digests(folder: Path, pattern: str = "*") -> dict[str, str]:
    """{file name: sha256} of the plain files in `folder` (hidden ones included)."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.glob(pattern))
        if p.is_file()
    }


def leftovers(folder: Path) -> list[str]:
    """Names that look like an interrupted write: hidden or temporary files."""
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or p.name.endswith((".tmp", ".part")))
