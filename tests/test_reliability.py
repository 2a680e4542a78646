"""Failure behaviour of the shared modules: full disks, crashes mid-write, concurrent cache use."""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from infer_pack import fileio
from infer_pack.cache import ModelCache, file_key
from infer_pack.errors import DiskFullError
from infer_pack.fileio import (
    atomic_write_bytes,
    atomic_write_text,
    atomic_write_with,
)

OLD = b"previous good content\n" * 100


@pytest.fixture
def target(tmp_path: Path) -> Path:
    path = tmp_path / "folder" / "voice.pth"
    path.parent.mkdir()
    path.write_bytes(OLD)
    return path


def _leftovers(folder: Path, keep: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p != keep]


# --- atomic writes ------------------------------------------------------------------------------


def test_enospc_in_the_writer_raises_disk_full_and_keeps_the_old_file(target: Path) -> None:
    def writer(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            handle.write(b"half of the new con")
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp))

    with pytest.raises(DiskFullError) as info:
        atomic_write_with(target, writer)
    assert str(target) in str(info.value) and "free some disk space" in str(info.value)
    assert target.read_bytes() == OLD
    assert _leftovers(target.parent, target) == []


def test_enospc_while_flushing_to_disk_keeps_the_old_file(target: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fileio.os, "fsync", full_disk)
    with pytest.raises(DiskFullError):
        atomic_write_bytes(target, b"new content that does not fit")
    assert target.read_bytes() == OLD
    assert _leftovers(target.parent, target) == []


@pytest.mark.parametrize("error", [ValueError("bad tensor"), KeyboardInterrupt(), MemoryError()])
def test_exception_mid_write_leaves_the_old_content(target: Path, error: BaseException) -> None:
    def writer(tmp: Path) -> None:
        tmp.write_bytes(b"partial new data")
        raise error

    with pytest.raises(type(error)):
        atomic_write_with(target, writer)
    assert target.read_bytes() == OLD
    assert _leftovers(target.parent, target) == []


def test_other_os_errors_are_not_disguised_as_disk_full(target: Path) -> None:
    def writer(tmp: Path) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp))

    with pytest.raises(PermissionError):
        atomic_write_with(target, writer)
    assert target.read_bytes() == OLD


def test_failed_rename_keeps_the_old_file(target: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_replace(src: object, dst: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(fileio.os, "replace", no_replace)
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == OLD
    assert _leftovers(target.parent, target) == []


def test_success_replaces_and_creates_missing_folders(tmp_path: Path) -> None:
    deep = tmp_path / "a" / "b" / "meta.json"
    atomic_write_text(deep, "{\"ok\": true}")
    assert deep.read_text() == "{\"ok\": true}"
    atomic_write_text(deep, "second")
    assert deep.read_text() == "second" and _leftovers(deep.parent, deep) == []


def test_concurrent_writers_never_mix_contents(target: Path) -> None:
    payloads = [bytes([65 + i]) * 200_000 for i in range(6)]
    errors: list[BaseException] = []

    def write(data: bytes) -> None:
        try:
            for _ in range(5):
                atomic_write_bytes(target, data)
        except BaseException as exc:  # noqa: BLE001 (collected for the assertion below)
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(p,)) for p in payloads]
    stop = threading.Event()
    seen: list[bytes] = []

    def read() -> None:
        while not stop.is_set():
            seen.append(target.read_bytes())

    reader = threading.Thread(target=read)
    reader.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    reader.join()
    assert not errors
    assert target.read_bytes() in payloads
    assert all(content == OLD or content in payloads for content in seen)  # a reader never sees a mix
    assert _leftovers(target.parent, target) == []


def test_atomic_write_keeps_normal_permissions(tmp_path: Path) -> None:
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"x")
    atomic = tmp_path / "atomic.bin"
    atomic_write_bytes(atomic, b"x")
    assert (atomic.stat().st_mode & 0o777) == (plain.stat().st_mode & 0o777)


# --- model cache --------------------------------------------------------------------------------


def test_one_load_per_key_under_contention() -> None:
    cache = ModelCache(max_items=4)
    calls: list[int] = []
    barrier = threading.Barrier(16)
    results: list[object] = []
    lock = threading.Lock()

    def loader() -> object:
        calls.append(1)
        time.sleep(0.05)
        return object()

    def worker() -> None:
        barrier.wait()
        value = cache.get_or_load("hubert", loader)
        with lock:
            results.append(value)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert len(results) == 16 and all(r is results[0] for r in results)


def test_different_keys_load_in_parallel() -> None:
    cache = ModelCache(max_items=8)
    started = time.perf_counter()

    def slow(value: int) -> int:
        time.sleep(0.3)
        return value

    threads = [threading.Thread(target=cache.get_or_load, args=(k, lambda k=k: slow(k))) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert time.perf_counter() - started < 0.9  # 4 x 0.3 s serialised would take 1.2 s
    assert len(cache) == 4


def test_failed_load_is_not_cached_and_does_not_block_others() -> None:
    cache = ModelCache()
    attempts: list[int] = []

    def flaky() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise OSError("disk hiccup")
        return "loaded"

    with pytest.raises(OSError):
        cache.get_or_load("k", flaky)
    assert len(cache) == 0
    assert cache.get_or_load("k", flaky) == "loaded" and len(attempts) == 2
    assert cache.get_or_load("k", flaky) == "loaded" and len(attempts) == 2


def test_eviction_bound_holds_under_concurrent_use() -> None:
    cache = ModelCache(max_items=3)
    errors: list[BaseException] = []

    def worker(offset: int) -> None:
        try:
            for i in range(200):
                key = (offset + i) % 11
                assert cache.get_or_load(key, lambda key=key: key * 10) == key * 10
                assert len(cache) <= 3
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(cache) <= 3


def test_loader_may_use_the_cache_for_another_key() -> None:
    cache = ModelCache()

    def outer() -> str:
        return "outer+" + cache.get_or_load("inner", lambda: "inner")

    done = threading.Event()
    result: list[str] = []
    thread = threading.Thread(target=lambda: (result.append(cache.get_or_load("outer", outer)), done.set()))
    thread.start()
    assert done.wait(5), "nested get_or_load deadlocked"
    assert result == ["outer+inner"]


def test_file_key_changes_when_a_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "voice.pth"
    atomic_write_bytes(path, b"one")
    first = file_key(path)
    time.sleep(0.01)
    atomic_write_bytes(path, b"two!")
    assert file_key(path) != first
    os.utime(path, ns=(first[2], first[2]))
    assert file_key(path) != first  # same mtime but a different size still changes the key


# --- cancellation ---------------------------------------------------------------------------------


def test_cancel_from_another_thread_stops_between_items() -> None:
    from infer_pack.errors import CancelledError
    from infer_pack.progress import CancelToken, track

    token = CancelToken()
    done: list[int] = []
    reports: list[tuple[int, int, str]] = []
    third_started = threading.Event()

    def work() -> None:
        for item in track(range(100), 100, "items", lambda d, t, m: reports.append((d, t, m)), token):
            if item == 2:
                third_started.set()
                time.sleep(0.2)  # the cancel arrives while this item runs; it still finishes
            done.append(item)

    errors: list[BaseException] = []
    thread = threading.Thread(target=lambda: _capture(work, errors))
    thread.start()
    assert third_started.wait(5)
    token.cancel()
    thread.join(5)
    assert len(errors) == 1 and isinstance(errors[0], CancelledError)
    assert done == [0, 1, 2]  # the running item completed, nothing after it started
    assert reports[-1][:2] == (3, 100)
    token.reset()
    assert list(track(range(3), 3, "again", None, token)) == [0, 1, 2]


def _capture(fn: Callable[[], None], errors: list[BaseException]) -> None:
    try:
        fn()
    except BaseException as exc:  # noqa: BLE001 (handed to the test thread)
        errors.append(exc)


# --- the training lock (one training per experiment across processes) ------------------------------


def test_training_lock_refuses_a_live_holder_and_takes_over_a_dead_one(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    from infer_pack.errors import TrainingLockedError
    from train.trainer import TrainingLock

    path = tmp_path / "exp" / "train.lock"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        path.parent.mkdir()
        path.write_text(f"{sleeper.pid} {socket.gethostname()}\n")
        with pytest.raises(TrainingLockedError, match=str(sleeper.pid)):
            TrainingLock(path).acquire()
    finally:
        sleeper.kill()
        sleeper.wait()
    with TrainingLock(path) as lock:  # the holder is gone: its lock is stale
        assert lock.owned and path.read_text().split()[0] == str(os.getpid())
    assert not path.exists()


def test_training_lock_does_not_steal_a_lock_being_written(tmp_path: Path) -> None:
    from infer_pack.errors import TrainingLockedError
    from train.trainer import TrainingLock

    path = tmp_path / "train.lock"
    path.touch()  # another process has just created it and not yet written "<pid> <host>"
    with pytest.raises(TrainingLockedError):
        TrainingLock(path).acquire()
