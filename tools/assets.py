"""Downloading assets: a verifying, resumable downloader over the catalogue in `tools.asset_catalogue`.

A download streams into `.<name>.part` beside the target. An interrupted or cancelled download
keeps that file and the next run continues it with an HTTP Range request. The sha256 (and the
size) are checked before the file is moved into place with os.replace, so a corrupt or tampered
download never replaces a good file.

While a file downloads, `.<name>.lock` beside it holds the downloader's "<pid> <host>". A second
download of the same file (another thread, the CLI beside the web app) is refused with
AssetBusyError instead of writing into the same partial file; a lock left by a process that died
on this host is taken over.

The command line is `tools.cli download` / `tools.cli assets` (through `tools.api.download_assets`).
The catalogue's names are re-exported here for the code that imported them from this module.
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal, Protocol

from infer_pack.errors import (
    AssetMissingError,
    DiskFullError,
    ModelFileError,
    UserInputError,
)
from infer_pack.fileio import LockHolder, PidLockFile
from infer_pack.progress import CancelToken, ProgressCallback, check, report
from tools import asset_catalogue
from tools.asset_catalogue import (
    CATALOGUE,
    CHUNK_BYTES,
    GROUP_NAMES,
    REPO_ID,
    REVISION,
    ROFORMER_FILES,
    ROFORMER_GROUP,
    SAMPLE_RATE_TAGS,
    SEPARATION_CATALOGUE,
    SEPARATION_GROUP_NAMES,
    VERSIONS,
    AssetFile,
    asset_for_path,
    files_for,
    missing_asset_error,
    pretrained_group,
    require_asset,
    uvr5_dir,
)
from tools.project import Project

__all__ = [
    "CATALOGUE", "CHUNK_BYTES", "GROUP_NAMES", "REPO_ID", "REVISION", "ROFORMER_FILES", "ROFORMER_GROUP",
    "SAMPLE_RATE_TAGS", "SEPARATION_CATALOGUE", "SEPARATION_GROUP_NAMES", "VERSIONS", "AssetBusyError",
    "AssetChecksumError", "AssetDownloadError", "AssetFile", "AssetState", "HubTransport", "RemoteStream",
    "Transport", "TransportError", "asset_for_path", "download_file", "download_lock", "file_matches", "files_for",
    "hub_offline", "lock_path", "missing_asset_error", "offline_instructions", "partial_path", "pretrained_group",
    "require_asset", "sha256_of", "status", "uvr5_dir",
]


def _is_hub_url(url: str) -> bool:
    """False for files published elsewhere (GitHub): they get no Hugging Face token."""
    from urllib.parse import urlsplit

    direct_hosts = {urlsplit(item.source_url).hostname for item in SEPARATION_CATALOGUE if item.source_url}
    return urlsplit(url).hostname not in direct_hosts



# --- errors -------------------------------------------------------------------------------------


class AssetDownloadError(AssetMissingError):
    """A download could not complete (offline, server error, interrupted); the asset is still missing."""

    def __init__(self, item: AssetFile, path: Path, reason: str, endpoint: str | None = None) -> None:
        super().__init__(path, item.group)
        self.reason = reason
        checksum = f", sha256 {item.sha256}" if item.sha256 else ""
        size = f"{item.size:,} bytes" if item.size is not None else "size unknown"
        message = (
            f"could not download {item.repo_path} ({reason}). Without internet access: download "
            f"{item.url(endpoint)} ({size}{checksum}) on another computer and copy it to {str(path)!r}; "
            f"or run `{self.command}` again once online (a partial download is resumed)"
        )
        self.args = (message,)


class AssetChecksumError(ModelFileError):
    """A downloaded file does not match the catalogue; it was discarded and nothing was replaced."""


class AssetBusyError(UserInputError):
    """Another thread or process is downloading the same file right now."""

    def __init__(self, target: Path, lock: Path, holder: LockHolder | None) -> None:
        self.path = str(target)
        self.lock_path = str(lock)
        self.holder = holder
        who = holder.describe() if holder else "another process (starting)"
        super().__init__(
            f"{str(target)!r} is already being downloaded by {who}; wait for it to finish, "
            f"or remove {str(lock)!r} if no download is running"
        )


class TransportError(OSError):
    """The remote end could not be reached (`offline`) or refused the request."""

    def __init__(self, message: str, *, offline: bool) -> None:
        super().__init__(message)
        self.offline = offline


# --- transport ----------------------------------------------------------------------------------


@dataclass
class RemoteStream:
    """An open download: `offset` is where `chunks` start in the file (0 when a Range was ignored)."""

    offset: int
    total_size: int | None
    chunks: Iterable[bytes]
    close: Callable[[], None] = field(default=lambda: None)


class Transport(Protocol):
    """Fetches `url` from byte `start` on. Raises TransportError when it cannot."""

    def fetch(self, url: str, start: int) -> RemoteStream: ...


def hub_offline() -> bool:
    """True when the user asked huggingface_hub to stay offline (HF_HUB_OFFLINE=1)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


class HubTransport:
    """HTTP GET with Range through huggingface_hub's configured session (proxy, token, user agent)."""

    def __init__(self, client: object | None = None, timeout_s: float = 30.0) -> None:
        self._client = client
        self.timeout_s = timeout_s

    def fetch(self, url: str, start: int) -> RemoteStream:
        import httpx
        from huggingface_hub.utils import build_hf_headers, get_session

        if hub_offline():
            raise TransportError("HF_HUB_OFFLINE is set", offline=True)
        client: httpx.Client = self._client if isinstance(self._client, httpx.Client) else get_session()
        headers = dict(build_hf_headers() if _is_hub_url(url) else build_hf_headers(token=False))
        if start > 0:
            headers["Range"] = f"bytes={start}-"
        timeout = httpx.Timeout(self.timeout_s, connect=min(self.timeout_s, 15.0))
        try:
            request = client.build_request("GET", url, headers=headers, timeout=timeout)
            response = client.send(request, stream=True, follow_redirects=True)
        except (httpx.ConnectError, httpx.TimeoutException, httpx.NetworkError) as exc:
            raise TransportError(f"cannot reach {httpx.URL(url).host}: {exc}", offline=True) from exc
        except httpx.HTTPError as exc:
            raise TransportError(f"request failed: {exc}", offline=False) from exc

        status = response.status_code
        if status == 416:  # the partial file already holds every byte
            response.close()
            total = _total_from_content_range(response.headers.get("content-range"))
            return RemoteStream(offset=start, total_size=total, chunks=())
        if status not in (200, 206):
            response.close()
            raise TransportError(f"HTTP {status} from {url}", offline=False)
        if status == 206:
            offset = _start_from_content_range(response.headers.get("content-range"), start)
            total = _total_from_content_range(response.headers.get("content-range"))
        else:
            offset = 0
            length = response.headers.get("content-length")
            total = int(length) if length and length.isdigit() else None
        return RemoteStream(offset=offset, total_size=total, chunks=_iter_http(response), close=response.close)


def _iter_http(response: object) -> Iterator[bytes]:
    import httpx

    assert isinstance(response, httpx.Response)
    try:
        yield from response.iter_bytes()  # as received, so an interruption loses nothing already sent
    except (httpx.TransportError, httpx.StreamError) as exc:
        raise TransportError(f"connection lost: {exc}", offline=False) from exc


def _total_from_content_range(value: str | None) -> int | None:
    """`bytes 100-199/200` or `bytes */200` -> 200."""
    if not value or "/" not in value:
        return None
    total = value.rsplit("/", 1)[1].strip()
    return int(total) if total.isdigit() else None


def _start_from_content_range(value: str | None, default: int) -> int:
    if not value:
        return default
    try:
        return int(value.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return default


# --- verification -------------------------------------------------------------------------------


def sha256_of(path: Path, cancel: CancelToken | None = None) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK_BYTES), b""):
            check(cancel)
            digest.update(block)
    return digest.hexdigest()


def file_matches(item: AssetFile, path: Path, *, hash_check: bool = True, cancel: CancelToken | None = None) -> bool:
    """True when `path` exists and has the catalogue's size (and sha256 when `hash_check`)."""
    if not path.is_file():
        return False
    if item.size is not None and path.stat().st_size != item.size:
        return False
    if hash_check and item.sha256 is not None:
        return sha256_of(path, cancel) == item.sha256
    return True


def partial_path(target: Path) -> Path:
    """Where an unfinished download of `target` is kept (hidden, beside it, same file system)."""
    return target.with_name(f".{target.name}.part")


def lock_path(target: Path) -> Path:
    """The lock file held while `target` is being downloaded (hidden, beside it)."""
    return target.with_name(f".{target.name}.lock")


def download_lock(target: Path) -> PidLockFile:
    """The per-file download lock of `target`; acquiring a taken one raises AssetBusyError."""
    return PidLockFile(lock_path(target), lambda lock, holder: AssetBusyError(target, lock, holder))


# --- download -----------------------------------------------------------------------------------

DownloadOutcome = Literal["downloaded", "present"]


def download_file(
    item: AssetFile,
    project: Project,
    *,
    transport: Transport | None = None,
    endpoint: str | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    label: str = "",
) -> DownloadOutcome:
    """Fetch one catalogue file into the project, resuming a partial download; verify, then move into place.

    Raises AssetDownloadError (network), AssetChecksumError (wrong bytes; the partial file is deleted and
    an existing target is untouched), DiskFullError, CancelledError (the partial file is kept),
    AssetBusyError (another thread or process is downloading the same file). The download lock is
    released on every way out.
    """
    target = item.local_path(project)
    label = label or item.repo_path
    checked = _identity(target)
    if file_matches(item, target, cancel=cancel):
        return "present"
    target.parent.mkdir(parents=True, exist_ok=True)
    with download_lock(target):
        # Another downloader may have moved a good file into place since the check above.
        if _identity(target) != checked and file_matches(item, target, cancel=cancel):
            return "present"
        _fetch_into_place(item, project, target, transport or HubTransport(), endpoint, progress, cancel, label)
    return "downloaded"


def _identity(path: Path) -> tuple[int, int, int] | None:
    """(inode, size, mtime) of `path`, None when absent: tells whether a file was replaced since."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    return info.st_ino, info.st_size, info.st_mtime_ns


def _fetch_into_place(
    item: AssetFile,
    project: Project,
    target: Path,
    transport: Transport,
    endpoint: str | None,
    progress: ProgressCallback | None,
    cancel: CancelToken | None,
    label: str,
) -> None:
    """Resume or start `.<name>.part`, verify it, move it onto `target`. The caller holds the lock."""
    part = partial_path(target)
    start = part.stat().st_size if part.is_file() else 0
    if item.size is not None and start > item.size:
        part.unlink()
        start = 0
    digest = hashlib.sha256()
    if start:
        with open(part, "rb") as handle:
            for block in iter(lambda: handle.read(CHUNK_BYTES), b""):
                digest.update(block)

    url = item.url(endpoint)
    total = item.size
    try:
        stream = transport.fetch(url, start)
    except TransportError as exc:
        raise AssetDownloadError(item, target, str(exc), endpoint) from exc
    try:
        if stream.offset not in (start, 0):
            raise TransportError(f"the server sent bytes from {stream.offset:,} when asked for {start:,}", offline=False)
        if stream.offset != start:  # the server ignored the Range: begin again from byte 0
            start = 0
            digest = hashlib.sha256()
        total = item.size if item.size is not None else stream.total_size
        done = start
        report(progress, done, total or 0, label)
        with open(part, "ab" if start else "wb") as handle:
            _write_stream(stream.chunks, handle, digest, part, done, total, label, progress, cancel)
    except TransportError as exc:
        have = part.stat().st_size if part.is_file() else 0
        raise AssetDownloadError(item, target, f"{exc}; {have:,} bytes kept for resuming", endpoint) from exc
    finally:
        stream.close()

    received = part.stat().st_size
    if total is not None and received < total:
        raise AssetDownloadError(
            item, target, f"the server sent {received:,} of {total:,} bytes; the partial file is kept", endpoint
        )
    _verify_or_discard(item, part, received, digest.hexdigest(), project)
    os.replace(part, target)


def _write_stream(
    chunks: Iterable[bytes],
    handle: IO[bytes],
    digest: hashlib._Hash,
    part: Path,
    done: int,
    total: int | None,
    label: str,
    progress: ProgressCallback | None,
    cancel: CancelToken | None,
) -> None:
    try:
        for chunk in chunks:
            check(cancel)
            handle.write(chunk)
            digest.update(chunk)
            done += len(chunk)
            report(progress, done, total or 0, label)
        handle.flush()
        os.fsync(handle.fileno())
    except OSError as exc:
        if exc.errno == errno.ENOSPC:  # keep what arrived; the rerun resumes once space is freed
            raise DiskFullError(part) from exc
        raise


def _verify_or_discard(item: AssetFile, part: Path, received: int, sha256: str, project: Project) -> None:
    problem = ""
    if item.size is not None and received != item.size:
        problem = f"{received:,} bytes instead of {item.size:,}"
    elif item.sha256 is not None and sha256 != item.sha256:
        problem = f"sha256 {sha256} instead of {item.sha256}"
    if problem:
        part.unlink(missing_ok=True)
        raise AssetChecksumError(
            item.local_path(project),
            f"the downloaded {item.repo_path} does not match the catalogue ({problem}); it was discarded "
            "and any existing file was left as it was",
            f"retry `.venv/bin/python -m tools.cli download {item.group}`; if it fails again the mirror serves a different file",
        )


# --- status -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AssetState:
    group: str
    repo_path: str
    path: Path
    present: bool  # file there with the expected size (when known)
    verified: bool | None  # sha256 checked and equal; None when not checked
    size_bytes: int | None  # local size, None when absent
    expected_size: int | None
    partial_bytes: int  # bytes of an unfinished download waiting to be resumed
    verification: str  # how a download of this file is checked


def status(
    project: Project, *, hash_check: bool = False, catalogue: Sequence[AssetFile] | None = None
) -> list[AssetState]:
    """What is there, without network access. `hash_check` reads every present file (slow: ~2 GB in all)."""
    catalogue = asset_catalogue.CATALOGUE if catalogue is None else catalogue  # read at call time (tests swap it)
    states: list[AssetState] = []
    for item in catalogue:
        path = item.local_path(project)
        exists = path.is_file()
        size = path.stat().st_size if exists else None
        present = exists and (item.size is None or size == item.size)
        verified = file_matches(item, path) if (hash_check and present and item.sha256) else None
        part = partial_path(path)
        states.append(
            AssetState(
                group=item.group,
                repo_path=item.repo_path,
                path=path,
                present=present,
                verified=verified,
                size_bytes=size,
                expected_size=item.size,
                partial_bytes=part.stat().st_size if part.is_file() else 0,
                verification=item.verification,
            )
        )
    return states


def offline_instructions(items: Sequence[AssetFile], project: Project, endpoint: str | None = None) -> str:
    """What to download by hand, from where, and where to put it."""
    lines = ["Download these files and place them at the paths shown:"]
    for item in items:
        digest = f" sha256 {item.sha256}" if item.sha256 else " (no published sha256)"
        lines.append(f"  {item.url(endpoint)}\n    -> {item.local_path(project)}{digest}")
    return "\n".join(lines)
