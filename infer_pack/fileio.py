"""Atomic file writes (temporary file beside the target, fsync, os.replace) and pid lock files."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from infer_pack.errors import DiskFullError

log = logging.getLogger(__name__)


def _current_umask() -> int:
    """The process umask, read without changing it where the OS allows (os.umask is racy across threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success it replaces `target` atomically.

    On any error the temporary file is removed and `target` keeps its previous content.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp creates 0600 files; give the result the permissions a plain open() would have.
    os.chmod(tmp, 0o666 & ~_current_umask())
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno == errno.ENOSPC:
            raise DiskFullError(target) from exc
        if exc.errno == errno.EFBIG:
            raise DiskFullError(target, file_size_limit=True) from exc
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(target: str | Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(target: str | Path, text: str) -> None:
    atomic_write_bytes(target, text.encode("utf-8"))


def atomic_write_with(target: str | Path, writer: Callable[[Path], None]) -> None:
    """Call `writer(tmp_path)` and move the result onto `target` atomically."""
    with atomic_path(target) as tmp:
        writer(tmp)


def claim_new_file(folder: str | Path, base: str, extension: str) -> Path:
    """`<folder>/<base>.<extension>`, or `<base>-2`, `-3`, ... when taken: the name is claimed by creating
    the (empty) file exclusively, so two writers at the same moment never get the same one; the caller
    then replaces it atomically with the content. Never overwrites an earlier result."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    number = 1
    while True:
        name = f"{base}.{extension}" if number == 1 else f"{base}-{number}.{extension}"
        try:
            os.close(os.open(folder / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            number += 1
            continue
        return folder / name


def remove_stale_temporaries(folder: str | Path) -> int:
    """Delete leftovers of atomic writes cut short by a killed run (".<name>.<random>.tmp").

    Call it only where no other writer is active (a step that owns the folder, under its lock).
    Returns the number of files removed.
    """
    folder = Path(folder)
    removed = 0
    if folder.is_dir():
        for path in folder.iterdir():
            if path.name.startswith(".") and path.name.endswith(".tmp") and path.is_file():
                path.unlink(missing_ok=True)
                removed += 1
    return removed


# --- lock files: one holder at a time across threads and processes ---------------------------------

# A lock file that stays empty or unreadable this long was left by a writer that died mid-write.
UNREADABLE_LOCK_GRACE_S = 10.0
# errno values of file systems without hard links (FAT, some network mounts): fall back to O_EXCL.
_NO_HARD_LINKS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK})


@dataclass(frozen=True)
class LockHolder:
    """Who holds a lock file: its process id and the host it runs on ("" when the file names none)."""

    pid: int
    host: str

    @staticmethod
    def current() -> LockHolder:
        return LockHolder(os.getpid(), socket.gethostname())

    def describe(self) -> str:
        return f"process {self.pid} on {self.host or 'this machine'}"

    def is_alive(self) -> bool:
        """False only when the holder is on this host and its process is gone; another host is assumed alive."""
        if self.host and self.host != socket.gethostname():
            return True
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # exists, owned by another user
            return True
        return True


# Builds the error for a lock that is taken: (lock path, holder or None while the holder is unknown).
LockRefusal = Callable[[Path, "LockHolder | None"], Exception]


class PidLockFile:
    """A lock file holding "<pid> <host>"; a lock left by a dead process on this host is taken over.

    The file appears with its content in one step (hard link of a filled temporary file, or
    O_CREAT|O_EXCL where the file system has no hard links), so two threads or processes never
    both hold it. A holder in this same process (another thread) counts as alive: it is refused too.
    `refuse(path, holder)` builds the error raised when the lock is taken; `holder` is None when the
    file does not (yet) name its holder.
    """

    def __init__(self, path: str | Path, refuse: LockRefusal) -> None:
        self.path = Path(path)
        self.owned = False
        self._refuse = refuse

    def holder(self) -> LockHolder | None:
        """The process named in the lock file, or None when it is absent, empty or unreadable."""
        try:
            pid_text, _, host = self.path.read_text(encoding="utf-8").strip().partition(" ")
            return LockHolder(int(pid_text), host.strip())
        except (OSError, ValueError):
            return None

    def _payload(self) -> bytes:
        me = LockHolder.current()
        return f"{me.pid} {me.host}\n".encode()

    def _try_create(self) -> bool:
        """Create the lock with its content in one step; False when it already exists."""
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{threading.get_ident()}.locktmp")
        tmp.write_bytes(self._payload())
        try:
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno not in _NO_HARD_LINKS:
                raise
            return self._try_create_exclusive()
        finally:
            tmp.unlink(missing_ok=True)

    def _try_create_exclusive(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as handle:
            handle.write(self._payload())
        return True

    def _is_stale(self, holder: LockHolder | None) -> bool:
        """True when the existing lock may be removed: its holder is dead, or it stayed unreadable too long."""
        if holder is not None:
            return not holder.is_alive()
        try:
            age_s = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return True  # released meanwhile: just try again
        return age_s >= UNREADABLE_LOCK_GRACE_S  # younger: its writer may still be filling it

    def acquire(self) -> None:
        """Take the lock or raise the `refuse` error naming the holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            if self._try_create():
                self.owned = True
                return
            holder = self.holder()
            if not self._is_stale(holder):
                raise self._refuse(self.path, holder)
            if self.path.exists() and self.holder() == holder:  # not replaced by a new holder meanwhile
                log.warning("taking over the stale lock %s (holder %s is gone)", self.path, holder)
                self.path.unlink(missing_ok=True)
        raise self._refuse(self.path, self.holder())

    def release(self) -> None:
        """Remove the lock if this object took it and the file still names this process."""
        if self.owned and self.holder() == LockHolder.current():
            self.path.unlink(missing_ok=True)
        self.owned = False

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
