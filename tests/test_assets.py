"""Asset catalogue and downloader against a local fake hub (no network)."""

from __future__ import annotations

import errno
import hashlib
import http.server
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from infer_pack.errors import (
    AssetMissingError,
    CancelledError,
    DiskFullError,
    UserInputError,
)
from infer_pack.progress import CancelToken
from tools import assets
from tools.api import assets as api
from tools.assets import (
    AssetBusyError,
    AssetChecksumError,
    AssetDownloadError,
    AssetFile,
    RemoteStream,
    TransportError,
)
from tools.project import Project

REPO_PREFIX = f"/{assets.REPO_ID}/resolve/{assets.REVISION}/"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _payload(size: int, seed: int) -> bytes:
    return bytes((i * 31 + seed * 7 + (i >> 8)) % 251 for i in range(size))


class FakeHub:
    """A Transport serving bytes from memory, with Range support and injectable faults."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.requests: list[tuple[str, int]] = []
        self.cut_after: int | None = None  # drop the connection after this many bytes (once)
        self.ignore_range = False
        self.offline = False

    def fetch(self, url: str, start: int) -> RemoteStream:
        self.requests.append((url, start))
        if self.offline:
            raise TransportError("cannot reach huggingface.co: [Errno -3] name resolution failed", offline=True)
        repo_path = url.split(REPO_PREFIX, 1)[1]
        if repo_path not in self.files:
            raise TransportError(f"HTTP 404 from {url}", offline=False)
        data = self.files[repo_path]
        offset = 0 if self.ignore_range else start
        cut, self.cut_after = self.cut_after, None

        def chunks() -> Iterator[bytes]:
            sent = 0
            for begin in range(offset, len(data), 1000):
                piece = data[begin : begin + 1000]
                if cut is not None and sent + len(piece) > cut:
                    yield piece[: cut - sent]
                    raise TransportError("connection lost: peer closed", offline=False)
                sent += len(piece)
                yield piece

        return RemoteStream(offset=offset, total_size=len(data), chunks=chunks())


@pytest.fixture
def small_catalogue(monkeypatch: pytest.MonkeyPatch) -> dict[str, bytes]:
    """Replace the catalogue with three small files whose real hashes we know."""
    files = {
        "hubert_base.pt": _payload(25_000, 1),
        "rmvpe.pt": _payload(12_345, 2),
        "pretrained_v2/f0G40k.pth": _payload(7_000, 3),
    }
    catalogue = (
        AssetFile("hubert", "hubert_base.pt", len(files["hubert_base.pt"]), _sha(files["hubert_base.pt"]), "hubert"),
        AssetFile("rmvpe", "rmvpe.pt", None, _sha(files["rmvpe.pt"]), "rmvpe"),
        AssetFile(
            "pretrained-v2-40k", "pretrained_v2/f0G40k.pth", len(files["pretrained_v2/f0G40k.pth"]),
            _sha(files["pretrained_v2/f0G40k.pth"]), "pretrained", "v2", "40k", True, "G",
        ),
    )
    from tools import asset_catalogue

    monkeypatch.setattr(asset_catalogue, "CATALOGUE", catalogue)  # the owner, which files_for and status read
    monkeypatch.setattr(assets, "CATALOGUE", catalogue)  # the re-export
    return files


# --- catalogue ------------------------------------------------------------------------------------


def test_catalogue_covers_every_official_file_once() -> None:
    paths = [item.repo_path for item in assets.CATALOGUE]
    assert len(paths) == len(set(paths)) == 2 + 2 * 3 * 4
    for version, folder in (("v1", "pretrained"), ("v2", "pretrained_v2")):
        for tag in ("32k", "40k", "48k"):
            group = [i for i in assets.CATALOGUE if i.group == f"pretrained-{version}-{tag}"]
            assert sorted(i.repo_path for i in group) == sorted(
                f"{folder}/{n}{tag}.pth" for n in ("f0G", "f0D", "G", "D")
            )
    for item in assets.CATALOGUE:
        assert item.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", item.sha256), item
        assert item.size is None or item.size > 1_000_000
    hashes = [i.sha256 for i in assets.CATALOGUE if i.sha256]
    assert len(hashes) == len(set(hashes))


def test_local_paths_come_from_project(project_root: Path) -> None:
    project = Project.at(project_root)
    by_path = {item.repo_path: item.local_path(project) for item in assets.CATALOGUE}
    assert by_path["hubert_base.pt"] == project.hubert_path
    assert by_path["rmvpe.pt"] == project.rmvpe_path
    assert by_path["pretrained/G32k.pth"] == project.pretrained_path("v1", "32k", False, "G")
    assert by_path["pretrained_v2/f0D48k.pth"] == project.pretrained_path("v2", "48k", True, "D")
    assert by_path["pretrained_v2/f0D48k.pth"] == project.root / "pretrained_v2" / "f0D48k.pth"


def test_group_names_and_unknown_name() -> None:
    assert set(assets.GROUP_NAMES) == {
        "all", "hubert", "rmvpe", *(f"pretrained-{v}-{t}" for v in ("v1", "v2") for t in ("32k", "40k", "48k"))
    }
    assert len(assets.files_for(["all"])) == len(assets.CATALOGUE)
    assert [i.repo_path for i in assets.files_for(["RMVPE"])] == ["rmvpe.pt"]
    with pytest.raises(UserInputError, match="pretrained-v2-40k"):
        assets.files_for(["pretrained-v3-40k"])


def test_missing_asset_error_names_the_download_command(project_root: Path) -> None:
    project = Project.at(project_root)
    with pytest.raises(AssetMissingError) as info:
        assets.require_asset(project, project.pretrained_path("v2", "40k", True, "G"))
    assert "python -m tools.cli download pretrained-v2-40k" in str(info.value)
    assert str(project.root / "pretrained_v2" / "f0G40k.pth") in str(info.value)
    assert ".venv/bin/python -m tools.cli download hubert" in str(assets.missing_asset_error(project, project.hubert_path))


# --- downloader -----------------------------------------------------------------------------------


def test_download_verifies_and_places_files(project_root: Path, small_catalogue: dict[str, bytes]) -> None:
    hub = FakeHub(small_catalogue)
    seen: list[tuple[int, int, str]] = []
    result = api.download_assets(["all"], project_root, lambda d, t, m: seen.append((d, t, m)), transport=hub)
    assert result.ok and sorted(result.downloaded) == sorted(small_catalogue)
    project = Project.at(project_root)
    assert project.hubert_path.read_bytes() == small_catalogue["hubert_base.pt"]
    assert project.pretrained_path("v2", "40k", True, "G").read_bytes() == small_catalogue["pretrained_v2/f0G40k.pth"]
    assert not list(project_root.rglob("*.part"))
    assert (25_000, 25_000, "[1/3] hubert_base.pt") in seen  # byte progress reaches the total

    again = api.download_assets(["all"], project_root, transport=hub)
    assert again.ok and sorted(again.present) == sorted(small_catalogue) and not again.downloaded
    assert len(hub.requests) == 3  # verified files are not fetched again


def test_interrupted_download_resumes_from_the_partial_file(
    project_root: Path, small_catalogue: dict[str, bytes]
) -> None:
    hub = FakeHub(small_catalogue)
    hub.cut_after = 10_500
    project = Project.at(project_root)
    item = assets.files_for(["hubert"])[0]
    with pytest.raises(AssetDownloadError, match="10,500 bytes kept for resuming"):
        assets.download_file(item, project, transport=hub)
    part = assets.partial_path(project.hubert_path)
    assert part.stat().st_size == 10_500 and not project.hubert_path.exists()

    assert assets.download_file(item, project, transport=hub) == "downloaded"
    assert hub.requests[-1][1] == 10_500  # the second request asked for the remaining bytes only
    assert project.hubert_path.read_bytes() == small_catalogue["hubert_base.pt"]
    assert not part.exists()


def test_server_ignoring_range_restarts_cleanly(project_root: Path, small_catalogue: dict[str, bytes]) -> None:
    hub = FakeHub(small_catalogue)
    project = Project.at(project_root)
    part = assets.partial_path(project.rmvpe_path)
    part.write_bytes(small_catalogue["rmvpe.pt"][:5000])
    hub.ignore_range = True
    assert assets.download_file(assets.files_for(["rmvpe"])[0], project, transport=hub) == "downloaded"
    assert project.rmvpe_path.read_bytes() == small_catalogue["rmvpe.pt"]


def test_cancel_keeps_partial_for_resume(project_root: Path, small_catalogue: dict[str, bytes]) -> None:
    hub = FakeHub(small_catalogue)
    token = CancelToken()

    def cancel_midway(done: int, total: int, message: str) -> None:
        if done >= 8_000:
            token.cancel()

    with pytest.raises(CancelledError):
        api.download_assets(["hubert"], project_root, cancel_midway, token, transport=hub)
    part = assets.partial_path(Project.at(project_root).hubert_path)
    assert 8_000 <= part.stat().st_size < 25_000
    assert api.download_assets(["hubert"], project_root, transport=hub).downloaded == ["hubert_base.pt"]


def test_checksum_mismatch_never_replaces_a_good_file(project_root: Path, small_catalogue: dict[str, bytes]) -> None:
    project = Project.at(project_root)
    good = small_catalogue["pretrained_v2/f0G40k.pth"]
    target = project.pretrained_path("v2", "40k", True, "G")
    target.parent.mkdir(parents=True)
    target.write_bytes(good[:-1] + b"\x00")  # right size, wrong content: must be replaced by a good copy
    tampered = bytearray(good)
    tampered[100] ^= 0xFF
    hub = FakeHub({**small_catalogue, "pretrained_v2/f0G40k.pth": bytes(tampered)})

    result = api.download_assets(["pretrained-v2-40k"], project_root, transport=hub)
    assert not result.ok and "sha256" in result.failed["pretrained_v2/f0G40k.pth"]
    assert target.read_bytes() == good[:-1] + b"\x00"  # untouched
    assert not assets.partial_path(target).exists()  # the bad download is discarded, not resumed

    target.write_bytes(good)
    hub.files["pretrained_v2/f0G40k.pth"] = bytes(tampered)
    assert assets.download_file(assets.files_for(["pretrained-v2-40k"])[0], project, transport=hub) == "present"
    assert target.read_bytes() == good

    target.write_bytes(b"corrupt")
    hub.files["pretrained_v2/f0G40k.pth"] = good
    assert api.download_assets(["pretrained-v2-40k"], project_root, transport=hub).downloaded
    assert target.read_bytes() == good


def test_wrong_size_is_rejected_before_hashing(project_root: Path, small_catalogue: dict[str, bytes]) -> None:
    hub = FakeHub({**small_catalogue, "hubert_base.pt": small_catalogue["hubert_base.pt"] + b"extra"})
    project = Project.at(project_root)
    with pytest.raises(AssetChecksumError, match="25,005 bytes instead of 25,000"):
        assets.download_file(assets.files_for(["hubert"])[0], project, transport=hub)
    assert not project.hubert_path.exists()


def test_disk_full_keeps_the_partial_and_the_old_file(
    project_root: Path, small_catalogue: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from infer_pack.errors import DiskFullError

    project = Project.at(project_root)
    project.rmvpe_path.write_bytes(b"older copy")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    real_fsync = assets.os.fsync
    monkeypatch.setattr(assets.os, "fsync", full)
    with pytest.raises(DiskFullError):
        assets.download_file(assets.files_for(["rmvpe"])[0], project, transport=FakeHub(small_catalogue))
    assert project.rmvpe_path.read_bytes() == b"older copy"
    assert assets.partial_path(project.rmvpe_path).stat().st_size == len(small_catalogue["rmvpe.pt"])
    monkeypatch.setattr(assets.os, "fsync", real_fsync)
    assert assets.download_file(assets.files_for(["rmvpe"])[0], project, transport=FakeHub(small_catalogue)) == "downloaded"
    assert project.rmvpe_path.read_bytes() == small_catalogue["rmvpe.pt"]


def test_offline_gives_instructions_and_stops_trying(project_root: Path, small_catalogue: dict[str, bytes]) -> None:
    hub = FakeHub(small_catalogue)
    hub.offline = True
    result = api.download_assets(None, project_root, transport=hub)
    assert not result.ok and len(result.failed) == 3
    assert len(hub.requests) == 1  # unreachable hub: the other files are not retried one by one
    first = result.failed["hubert_base.pt"]
    assert "https://huggingface.co/lj1995/VoiceConversionWebUI/resolve/main/hubert_base.pt" in first
    assert str(Project.at(project_root).hubert_path) in first
    assert ".venv/bin/python -m tools.cli download hubert" in first
    assert "rmvpe.pt" in result.help_text and str(Project.at(project_root).rmvpe_path) in result.help_text
    status = api.asset_status(project_root)
    assert status.missing_groups == ["hubert", "rmvpe", "pretrained-v2-40k"] and not status.can_convert
    assert "python -m tools.cli download hubert rmvpe pretrained-v2-40k" in status.summary()


def test_hf_hub_offline_env_is_respected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(TransportError) as info:
        assets.HubTransport().fetch("https://huggingface.co/x", 0)
    assert info.value.offline


def test_status_reports_partial_and_bad_checksum(project_root: Path, small_catalogue: dict[str, bytes]) -> None:
    project = Project.at(project_root)
    project.hubert_path.write_bytes(b"\x00" * 25_000)  # right size, wrong bytes
    assets.partial_path(project.rmvpe_path).write_bytes(b"x" * 300)
    quick = {s.repo_path: s for s in api.asset_status(project_root).assets}
    assert quick["hubert_base.pt"].present and quick["hubert_base.pt"].verified is None
    assert quick["rmvpe.pt"].partial_bytes == 300 and not quick["rmvpe.pt"].present
    full = api.asset_status(project_root, verify=True)
    assert {s.repo_path: s.verified for s in full.assets}["hubert_base.pt"] is False
    assert "hubert" in full.missing_groups


def test_offline_download_says_what_to_fetch_and_where(
    project_root: Path, small_catalogue: dict[str, bytes]
) -> None:
    """What `tools.cli download` prints without a network: the URL and the place of each missing file."""
    hub = FakeHub(small_catalogue)
    hub.offline = True
    result = api.download_assets(["rmvpe"], project_root, transport=hub)
    assert not result.ok
    text = result.summary()
    assert "resolve/main/rmvpe.pt" in text and str(Project.at(project_root).rmvpe_path) in text
    with pytest.raises(UserInputError, match="unknown asset name"):
        api.download_assets(["nonsense"], project_root, transport=hub)
    hub.offline = False
    result = api.download_assets(["rmvpe"], project_root, transport=hub)
    assert result.ok and result.downloaded == ["rmvpe.pt"]


def test_cli_download_offline_prints_the_instructions(project_root: Path) -> None:
    """The one command line, offline (as on a machine without internet): exit 1, the manual steps on stderr."""
    done = subprocess.run(
        [sys.executable, "-m", "tools.cli", "--root", str(project_root), "--quiet", "download", "rmvpe"],
        cwd=str(Path(__file__).resolve().parents[1]), capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "rmvpe.pt" in output and str(Project.at(project_root).rmvpe_path) in output, output
    assert "Traceback" not in output


# --- one downloader per file (lock beside the target) ---------------------------------------------


class GatedHub(FakeHub):
    """A FakeHub whose streams pause after their first chunk until `gate` is set.

    `started[repo_path]` is set once that first chunk has been handed over, so a test knows the
    download is under way (lock taken, partial file open) before it starts a second one.
    """

    def __init__(self, files: dict[str, bytes]) -> None:
        super().__init__(files)
        self.gate = threading.Event()
        self.started = {path: threading.Event() for path in files}

    def fetch(self, url: str, start: int) -> RemoteStream:
        stream = super().fetch(url, start)
        started = self.started[url.split(REPO_PREFIX, 1)[1]]

        def gated() -> Iterator[bytes]:
            for index, chunk in enumerate(stream.chunks):
                yield chunk
                if index == 0:
                    started.set()
                    if not self.gate.wait(timeout=20):
                        raise TransportError("the test never opened the gate", offline=False)

        return RemoteStream(offset=stream.offset, total_size=stream.total_size, chunks=gated())


class Background:
    """Runs `call` in a thread and keeps its result or exception."""

    def __init__(self, call: Callable[[], object]) -> None:
        self.result: object = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(call,), daemon=True)
        self._thread.start()

    def _run(self, call: Callable[[], object]) -> None:
        try:
            self.result = call()
        except BaseException as exc:  # noqa: BLE001 (kept for the assertions)
            self.error = exc

    def join(self) -> object:
        self._thread.join(timeout=30)
        assert not self._thread.is_alive(), "the background download did not finish"
        if self.error is not None:
            raise self.error
        return self.result


def _dead_pid() -> int:
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    return finished.pid


def test_second_download_of_the_same_file_is_refused(project_root: Path, small_catalogue: dict[str, bytes]) -> None:
    hub = GatedHub(small_catalogue)
    project = Project.at(project_root)
    item = assets.files_for(["hubert"])[0]
    lock = assets.lock_path(project.hubert_path)
    part = assets.partial_path(project.hubert_path)
    first = Background(lambda: assets.download_file(item, project, transport=hub))
    try:
        assert hub.started["hubert_base.pt"].wait(timeout=20)
        assert lock.read_text().split() == [str(os.getpid()), socket.gethostname()]

        with pytest.raises(AssetBusyError) as info:
            assets.download_file(item, project, transport=hub)
        message = str(info.value)
        assert str(project.hubert_path) in message and f"process {os.getpid()}" in message
        assert "wait for it to finish" in message and f"remove {str(lock)!r} if no download is running" in message
        assert isinstance(info.value, UserInputError)

        # The web app's button pressed twice: the file is reported as busy, with no manual steps.
        result = api.download_assets(["hubert"], project_root, transport=hub)
        assert "wait for it to finish" in result.failed[item.repo_path] and result.help_text == ""
        assert len(hub.requests) == 1  # the refused downloads never opened a stream
    finally:
        hub.gate.set()
    assert first.join() == "downloaded"
    assert project.hubert_path.read_bytes() == small_catalogue["hubert_base.pt"]
    assert not lock.exists() and not part.exists()


def test_lock_of_a_live_process_is_respected(project_root: Path, small_catalogue: dict[str, bytes]) -> None:
    project = Project.at(project_root)
    item = assets.files_for(["rmvpe"])[0]
    lock = assets.lock_path(project.rmvpe_path)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        lock.write_text(f"{sleeper.pid} {socket.gethostname()}\n")
        hub = FakeHub(small_catalogue)
        with pytest.raises(AssetBusyError, match=f"process {sleeper.pid} on {re.escape(socket.gethostname())}"):
            assets.download_file(item, project, transport=hub)
        assert lock.read_text().split()[0] == str(sleeper.pid) and not hub.requests
        # Asked for several files, the others are fetched; the busy one is reported.
        result = api.download_assets(["hubert", "rmvpe"], project_root, transport=hub)
        assert result.downloaded == [assets.files_for(["hubert"])[0].repo_path]
        assert list(result.failed) == [item.repo_path] and "wait for it to finish" in result.failed[item.repo_path]
        again = api.download_assets(["hubert", "rmvpe"], project_root, transport=hub)
        assert again.present == [assets.files_for(["hubert"])[0].repo_path] and list(again.failed) == [item.repo_path]
    finally:
        sleeper.kill()
        sleeper.wait()


def test_lock_held_on_another_host_is_respected(project_root: Path, small_catalogue: dict[str, bytes]) -> None:
    project = Project.at(project_root)
    lock = assets.lock_path(project.rmvpe_path)
    lock.write_text(f"{_dead_pid()} some-other-host.example\n")  # its pid cannot be checked from here
    with pytest.raises(AssetBusyError, match="some-other-host.example"):
        assets.download_file(assets.files_for(["rmvpe"])[0], project, transport=FakeHub(small_catalogue))
    assert lock.exists()


def test_stale_lock_of_a_dead_process_is_taken_over(project_root: Path, small_catalogue: dict[str, bytes]) -> None:
    project = Project.at(project_root)
    item = assets.files_for(["hubert"])[0]
    lock = assets.lock_path(project.hubert_path)
    lock.write_text(f"{_dead_pid()} {socket.gethostname()}\n")  # left by a killed download
    assets.partial_path(project.hubert_path).write_bytes(small_catalogue["hubert_base.pt"][:4_000])
    hub = FakeHub(small_catalogue)
    holders: list[list[str]] = []

    def progress(done: int, total: int, message: str) -> None:
        holders.append(lock.read_text().split())

    assert assets.download_file(item, project, transport=hub, progress=progress) == "downloaded"
    assert holders and all(h == [str(os.getpid()), socket.gethostname()] for h in holders)
    assert hub.requests[0][1] == 4_000  # the dead run's partial file is resumed
    assert project.hubert_path.read_bytes() == small_catalogue["hubert_base.pt"]
    assert not lock.exists()


def test_lock_without_hard_links_uses_exclusive_create(
    project_root: Path, small_catalogue: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(src: object, dst: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")  # what FAT and some network mounts answer

    monkeypatch.setattr(os, "link", no_links)
    project = Project.at(project_root)
    lock = assets.download_lock(project.rmvpe_path)
    with lock:
        assert lock.path.read_text().split() == [str(os.getpid()), socket.gethostname()]
        with pytest.raises(AssetBusyError, match=f"process {os.getpid()}"):
            assets.download_file(assets.files_for(["rmvpe"])[0], project, transport=FakeHub(small_catalogue))
    assert not lock.path.exists() and not list(project_root.rglob("*.locktmp"))


@dataclass
class FailingRun:
    """What a failure scenario may change before the download starts."""

    hub: FakeHub
    monkeypatch: pytest.MonkeyPatch
    cancel_at_bytes: int | None = None


def _fail_by_checksum(run: FailingRun) -> type[BaseException]:
    run.hub.files["rmvpe.pt"] = run.hub.files["rmvpe.pt"][:-1] + b"\x00"
    return AssetChecksumError


def _fail_by_cancel(run: FailingRun) -> type[BaseException]:
    run.cancel_at_bytes = 5_000
    return CancelledError


def _fail_by_disk_full(run: FailingRun) -> type[BaseException]:
    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    run.monkeypatch.setattr(assets.os, "fsync", full)
    return DiskFullError


def _fail_by_lost_connection(run: FailingRun) -> type[BaseException]:
    run.hub.cut_after = 3_000
    return AssetDownloadError


def _fail_by_bug(run: FailingRun) -> type[BaseException]:
    def broken(*args: object) -> None:
        raise RuntimeError("unexpected failure while writing")

    run.monkeypatch.setattr(assets, "_write_stream", broken)
    return RuntimeError


@pytest.mark.parametrize(
    "make_it_fail",
    [_fail_by_checksum, _fail_by_cancel, _fail_by_disk_full, _fail_by_lost_connection, _fail_by_bug],
    ids=["checksum", "cancel", "disk-full", "connection-lost", "exception"],
)
def test_lock_is_released_on_every_way_out(
    project_root: Path,
    small_catalogue: dict[str, bytes],
    monkeypatch: pytest.MonkeyPatch,
    make_it_fail: Callable[[FailingRun], type[BaseException]],
) -> None:
    project = Project.at(project_root)
    item = assets.files_for(["rmvpe"])[0]
    lock = assets.lock_path(project.rmvpe_path)
    run = FailingRun(FakeHub(dict(small_catalogue)), monkeypatch)
    expected = make_it_fail(run)
    token = CancelToken()
    held: list[bool] = []

    def watch(done: int, total: int, message: str) -> None:
        held.append(lock.read_text().split()[0] == str(os.getpid()))
        if run.cancel_at_bytes is not None and done >= run.cancel_at_bytes:
            token.cancel()

    with pytest.raises(expected):
        assets.download_file(item, project, transport=run.hub, progress=watch, cancel=token)
    assert held and all(held)  # the lock was there while the download ran ...
    assert not lock.exists()  # ... and is gone after the failure
    monkeypatch.undo()
    assert assets.download_file(item, project, transport=FakeHub(small_catalogue)) == "downloaded"
    assert project.rmvpe_path.read_bytes() == small_catalogue["rmvpe.pt"] and not lock.exists()


def test_two_different_files_download_at_once(project_root: Path, small_catalogue: dict[str, bytes]) -> None:
    hub = GatedHub(small_catalogue)
    project = Project.at(project_root)
    hubert, rmvpe = assets.files_for(["hubert"])[0], assets.files_for(["rmvpe"])[0]
    first = Background(lambda: assets.download_file(hubert, project, transport=hub))
    second = Background(lambda: assets.download_file(rmvpe, project, transport=hub))
    try:  # both streams are open at the same moment: neither lock blocks the other
        assert hub.started["hubert_base.pt"].wait(timeout=20) and hub.started["rmvpe.pt"].wait(timeout=20)
        assert assets.lock_path(project.hubert_path).exists() and assets.lock_path(project.rmvpe_path).exists()
    finally:
        hub.gate.set()
    assert first.join() == second.join() == "downloaded"
    assert project.hubert_path.read_bytes() == small_catalogue["hubert_base.pt"]
    assert project.rmvpe_path.read_bytes() == small_catalogue["rmvpe.pt"]
    assert not list(project_root.rglob(".*.lock")) and not list(project_root.rglob("*.part"))


# --- the real HTTP transport against a local server -----------------------------------------------


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    files: ClassVar[dict[str, bytes]] = {}
    cut_first_response_at: ClassVar[list[int]] = []
    seen_ranges: ClassVar[list[str | None]] = []

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path.startswith(REPO_PREFIX):  # like the hub: /resolve/ redirects to a storage host
            self.send_response(302)
            self.send_header("Location", "/cdn/" + path.removeprefix(REPO_PREFIX))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = self.files.get(path.removeprefix("/cdn/"))
        self.seen_ranges.append(self.headers.get("Range"))
        if data is None:
            self.send_error(404)
            return
        start = 0
        header = self.headers.get("Range")
        if header:
            start = int(header.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.cut_first_response_at:
            self.wfile.write(body[: self.cut_first_response_at.pop()])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_http_transport_resumes_with_range_requests(project_root: Path, small_catalogue: dict[str, bytes]) -> None:
    import httpx

    _RangeHandler.files = dict(small_catalogue)
    _RangeHandler.cut_first_response_at = [9_000]
    _RangeHandler.seen_ranges = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    client = httpx.Client(trust_env=False)
    transport = assets.HubTransport(client=client, timeout_s=5.0)
    project = Project.at(project_root)
    item = assets.files_for(["hubert"])[0]
    try:
        with pytest.raises(AssetDownloadError):
            assets.download_file(item, project, transport=transport, endpoint=endpoint)
        assert assets.partial_path(project.hubert_path).stat().st_size == 9_000
        assert assets.download_file(item, project, transport=transport, endpoint=endpoint) == "downloaded"
        assert _RangeHandler.seen_ranges == [None, "bytes=9000-"]
        assert project.hubert_path.read_bytes() == small_catalogue["hubert_base.pt"]

        # a complete partial file left behind (killed before the move): 416 -> verify and move
        project.hubert_path.unlink()
        assets.partial_path(project.hubert_path).write_bytes(small_catalogue["hubert_base.pt"])
        assert assets.download_file(item, project, transport=transport, endpoint=endpoint) == "downloaded"
        assert project.hubert_path.read_bytes() == small_catalogue["hubert_base.pt"]

        missing = AssetFile("rmvpe", "not-there.pt", 10, None, "rmvpe")
        with pytest.raises(AssetDownloadError, match="HTTP 404"):
            assets.download_file(missing, project, transport=transport, endpoint=endpoint)
    finally:
        server.shutdown()
        server.server_close()
        client.close()


def test_unreachable_host_is_reported_as_offline(project_root: Path, small_catalogue: dict[str, bytes]) -> None:
    import socket

    import httpx

    with socket.socket() as sock:  # a port with nothing listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = httpx.Client(trust_env=False)
    try:
        with pytest.raises(AssetDownloadError) as info:
            assets.download_file(
                assets.files_for(["rmvpe"])[0], Project.at(project_root),
                transport=assets.HubTransport(client=client, timeout_s=3.0), endpoint=f"http://127.0.0.1:{port}",
            )
    finally:
        client.close()
    assert isinstance(info.value.__cause__, TransportError) and info.value.__cause__.offline
    assert "copy it to" in str(info.value)


# --- every AssetMissingError names a real download ------------------------------------------------

# (file, asset argument as written) known to name no download group (reported; delete an entry once fixed).
KNOWN_BAD_ASSET_NAMES = {
    ("train/training_setup.py", 'f"pretrained {what}"'),
    ("tools/api/training.py", 'f"pretrained {kind}"'),
}


def _asset_name_violations() -> set[tuple[str, str]]:
    """Call sites of AssetMissingError whose asset argument cannot be one of assets.GROUP_NAMES."""
    import ast

    from conftest import REPO_ROOT

    found: set[tuple[str, str]] = set()
    for folder in ("infer_pack", "train", "tools"):
        for path in sorted((REPO_ROOT / folder).rglob("*.py")):
            source = path.read_text(encoding="utf-8")
            tree = ast.parse(source)
            constants = {
                target.id: node.value.value
                for node in tree.body
                if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
                for target in node.targets
                if isinstance(target, ast.Name)
            }
            for node in ast.walk(tree):
                if not (isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "AssetMissingError"):
                    continue
                if len(node.args) < 2:
                    continue
                arg = node.args[1]
                if isinstance(arg, ast.Constant):
                    ok = arg.value in assets.GROUP_NAMES
                elif isinstance(arg, ast.Name) and arg.id in constants:
                    ok = constants[arg.id] in assets.GROUP_NAMES
                elif isinstance(arg, ast.JoinedStr):
                    head = arg.values[0].value if arg.values and isinstance(arg.values[0], ast.Constant) else ""
                    ok = any(name.startswith(str(head)) and name != str(head) for name in assets.GROUP_NAMES)
                else:
                    continue  # computed elsewhere (e.g. item.group): checked by the tests of that code
                if not ok:
                    found.add((str(path.relative_to(REPO_ROOT)), ast.get_source_segment(source, arg) or ""))
    return found


def test_asset_missing_errors_name_a_real_download_group() -> None:
    violations = _asset_name_violations()
    new = violations - KNOWN_BAD_ASSET_NAMES
    assert not new, f"AssetMissingError(path, NAME) must use one of {assets.GROUP_NAMES}: {sorted(new)}"
