"""Downloadable assets: the catalogue of RVC's official files and a verifying, resumable downloader.

Assets (all from the Hugging Face repository `lj1995/VoiceConversionWebUI`, where RVC publishes them):

    download name        files (local paths come from tools.project.Project)
    hubert               hubert_base.pt                      content encoder (inference and training)
    rmvpe                rmvpe.pt                            RMVPE pitch estimator
    pretrained-v1-32k    pretrained/{f0G,f0D,G,D}32k.pth     base weights for training v1 voices
    pretrained-v1-40k    pretrained/{f0G,f0D,G,D}40k.pth
    pretrained-v1-48k    pretrained/{f0G,f0D,G,D}48k.pth
    pretrained-v2-32k    pretrained_v2/{f0G,f0D,G,D}32k.pth  base weights for training v2 voices
    pretrained-v2-40k    pretrained_v2/{f0G,f0D,G,D}40k.pth
    pretrained-v2-48k    pretrained_v2/{f0G,f0D,G,D}48k.pth
    all                  everything above

`.venv/bin/python -m tools.cli download NAME ...` fetches them; code that needs a missing asset raises
`AssetMissingError(path, NAME)`, whose message names that command.

A download streams into `.<name>.part` beside the target. An interrupted or cancelled download
keeps that file and the next run continues it with an HTTP Range request. The sha256 (and the
size) are checked before the file is moved into place with os.replace, so a corrupt or tampered
download never replaces a good file.

While a file downloads, `.<name>.lock` beside it holds the downloader's "<pid> <host>". A second
download of the same file (another thread, the CLI beside the web app) is refused with
AssetBusyError instead of writing into the same partial file; a lock left by a process that died
on this host is taken over.

Where the catalogue's numbers come from: every sha256 was published for the upstream revision
e6d0c1a17da07c33557852f9dfa2bd44cc75737d; the sizes and hashes of hubert_base.pt, rmvpe.pt and the
twelve with-pitch (f0*) pretrained files agree across several independent public manifests. The
hashes of the twelve pitch-less pretrained files (G*.pth, D*.pth) come from a single public
manifest and their sizes were not found anywhere, so their size is None: they are verified by
sha256 alone. The separation models' hashes are the ones RVC itself checks downloads against
(sha256_uvr5_* in its .env); their sizes are not published, so they too are verified by sha256 alone.
A file the hub serves with a different hash is refused, never installed.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import os
import sys
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
from tools.project import Project

REPO_ID = "lj1995/VoiceConversionWebUI"
REVISION = "main"
CHUNK_BYTES = 1 << 20

AssetKind = Literal["hubert", "rmvpe", "pretrained", "uvr5"]
SAMPLE_RATE_TAGS: tuple[str, ...] = ("32k", "40k", "48k")
VERSIONS: tuple[str, ...] = ("v1", "v2")


@dataclass(frozen=True)
class AssetFile:
    """One downloadable file: where it lives upstream, what it must hash to, where it goes locally."""

    group: str  # the download name, e.g. "pretrained-v2-40k"
    repo_path: str  # path inside the Hugging Face repository
    size: int | None  # bytes; None where no trustworthy figure is known
    sha256: str | None  # lowercase hex; None where no trustworthy figure is known
    kind: AssetKind
    version: str = ""  # pretrained only: "v1" | "v2"
    sample_rate_tag: str = ""  # pretrained only: "32k" | "40k" | "48k"
    use_f0: bool = False  # pretrained only
    net: Literal["G", "D"] = "G"  # pretrained only
    repo_id: str = REPO_ID
    source_url: str | None = None  # a file published outside the Hugging Face repository (no mirror endpoint)

    @property
    def file_name(self) -> str:
        return self.repo_path.rsplit("/", 1)[-1]

    def local_path(self, project: Project) -> Path:
        if self.kind == "hubert":
            return project.hubert_path
        if self.kind == "rmvpe":
            return project.rmvpe_path
        if self.kind == "uvr5":
            return uvr5_dir(project) / self.repo_path.removeprefix(UVR5_REPO_DIR + "/")
        return project.pretrained_path(self.version, self.sample_rate_tag, self.use_f0, self.net)

    def url(self, endpoint: str | None = None) -> str:
        from huggingface_hub import hf_hub_url

        if self.source_url is not None:
            return self.source_url
        return hf_hub_url(self.repo_id, self.repo_path, revision=REVISION, endpoint=endpoint)

    @property
    def verification(self) -> str:
        """How a download of this file is checked, in words."""
        if self.sha256 and self.size is not None:
            return "sha256 and size"
        if self.sha256:
            return "sha256 (size unknown)"
        if self.size is not None:
            return "size only (no published sha256)"
        return "not verified (no published sha256 or size)"


# (repository path, size in bytes or None, sha256)
_PRETRAINED: tuple[tuple[str, int | None, str], ...] = (
    ("pretrained/f0G32k.pth", 72_795_627, "285f524bf48bb692c76ad7bd0bc654c12bd9e5edeb784dddf7f61a789a608574"),
    ("pretrained/f0D32k.pth", 109_978_943, "294db3087236e2c75260d6179056791c9231245daf5d0485545d9e54c4057c77"),
    ("pretrained/G32k.pth", None, "81817645cde7ed2e2d83f23ef883f33dda564924b497e84d792743912eca4c23"),
    ("pretrained/D32k.pth", None, "2ab20645829460fdad0d3c44254f1ab53c32cae50c22a66c926ae5aa30abda6f"),
    ("pretrained/f0G40k.pth", 72_909_665, "9115654aeef1995f7dd3c6fc4140bebbef0ca9760bed798105a2380a34299831"),
    ("pretrained/f0D40k.pth", 109_978_943, "7d4f5a441594b470d67579958b2fd4c6b992852ded28ff9e72eda67abcebe423"),
    ("pretrained/G40k.pth", None, "e428573bda1124b0ae0ae843fd8dcded6027d3993444790b3e9b0100938b2113"),
    ("pretrained/D40k.pth", None, "547f66dbbcd9023b9051ed244d12ab043ba8a4e854b154cc28761ac7c002909b"),
    ("pretrained/f0G48k.pth", 73_008_619, "78bc9cab27e34bcfc194f93029374d871d8b3e663ddedea32a9709e894cc8fe8"),
    ("pretrained/f0D48k.pth", 109_978_943, "1b84c8bf347ad1e539c842e8f2a4c36ecd9e7fb23c16041189e4877e9b07925c"),
    ("pretrained/G48k.pth", None, "3862a67ea6313e8ffefc05cee6bee656ef3e089442e9ecf4a6618d60721f3e95"),
    ("pretrained/D48k.pth", None, "8cc013fa60ed9c3f902f5bd99f48c7e3b9352d763d4d3cd6bc241c37b0bfd9ad"),
    ("pretrained_v2/f0G32k.pth", 73_950_049, "2332611297b8d88c7436de8f17ef5f07a2119353e962cd93cda5806d59a1133d"),
    ("pretrained_v2/f0D32k.pth", 142_875_703, "bd7134e7793674c85474d5145d2d982e3c5d8124fc7bb6c20f710ed65808fa8a"),
    ("pretrained_v2/G32k.pth", None, "869b26a47f75168d6126f64ac39e6de5247017a8658cfd68aca600f7323efb9f"),
    ("pretrained_v2/D32k.pth", None, "d8043378cc6619083d385f5a045de09b83fb3bf8de45c433ca863b71723ac3ca"),
    ("pretrained_v2/f0G40k.pth", 73_106_273, "3b2c44035e782c4b14ddc0bede9e2f4a724d025cd073f736d4f43708453adfcb"),
    ("pretrained_v2/f0D40k.pth", 142_875_703, "6b6ab091e70801b28e3f41f335f2fc5f3f35c75b39ae2628d419644ec2b0fa09"),
    ("pretrained_v2/G40k.pth", None, "a3843da7fde33db1dab176146c70d6c2df06eafe9457f4e3aa10024e9c6a4b69"),
    ("pretrained_v2/D40k.pth", None, "471378e894e7191f89a94eda8288c5947b16bbe0b10c3f1f17efdb7a1d998242"),
    ("pretrained_v2/f0G48k.pth", 75_465_569, "b5d51f589cc3632d4eae36a315b4179397695042edc01d15312e1bddc2b764a4"),
    ("pretrained_v2/f0D48k.pth", 142_875_703, "2269b73c7a4cf34da09aea99274dabf99b2ddb8a42cbfb065fb3c0aa9a2fc748"),
    ("pretrained_v2/G48k.pth", None, "2e2b1581a436d07a76b10b9d38765f64aa02836dc65c7dee1ce4140c11ea158b"),
    ("pretrained_v2/D48k.pth", None, "db01094a93c09868a278e03dafe8bb781bfcc1a5ba8df168c948bf9168c84d82"),
)


def pretrained_group(version: str, sample_rate_tag: str) -> str:
    """The download name holding a version's base G/D for one sample rate, e.g. "pretrained-v2-40k"."""
    return f"pretrained-{version}-{sample_rate_tag}"


def _pretrained_file(repo_path: str, size: int | None, sha256: str) -> AssetFile:
    folder, name = repo_path.split("/")
    version = "v1" if folder == "pretrained" else "v2"
    use_f0 = name.startswith("f0")
    stem = name[2:] if use_f0 else name
    net: Literal["G", "D"] = "G" if stem[0] == "G" else "D"
    tag = stem[1:].removesuffix(".pth")
    return AssetFile(
        group=pretrained_group(version, tag),
        repo_path=repo_path,
        size=size,
        sha256=sha256,
        kind="pretrained",
        version=version,
        sample_rate_tag=tag,
        use_f0=use_f0,
        net=net,
    )


CATALOGUE: tuple[AssetFile, ...] = (
    AssetFile(
        group="hubert",
        repo_path="hubert_base.pt",
        size=189_507_909,
        sha256="f54b40fd2802423a5643779c4861af1e9ee9c1564dc9d32f54f20b5ffba7db96",
        kind="hubert",
    ),
    AssetFile(
        group="rmvpe",
        repo_path="rmvpe.pt",
        size=181_184_272,
        sha256="6d62215f4306e3ca278246188607209f09af3dc77ed4232efdd069798c4ec193",
        kind="rmvpe",
    ),
    *(_pretrained_file(path, size, digest) for path, size, digest in _PRETRAINED),
)

GROUP_NAMES: tuple[str, ...] = (
    "all",
    "hubert",
    "rmvpe",
    *(pretrained_group(v, tag) for v in VERSIONS for tag in SAMPLE_RATE_TAGS),
)

# Vocal/accompaniment separation models (RVC's uvr5_weights). Not part of "all": only users who
# separate songs need them, so each is fetched by its own name (or all of them as "uvr5").
UVR5_REPO_DIR = "uvr5_weights"
UVR5_DIR_NAME = "uvr5_weights"  # <project>/uvr5_weights/, RVC's weight_uvr5_root


def uvr5_dir(project: Project) -> Path:
    """Where separation models live (and where the Separate tab lists them from)."""
    return project.root / UVR5_DIR_NAME


def _uvr5_file(group: str, name: str, sha256: str) -> AssetFile:
    # sha256 as RVC publishes them (its .env, sha256_uvr5_*); sizes are not published.
    return AssetFile(group=group, repo_path=f"{UVR5_REPO_DIR}/{name}", size=None, sha256=sha256, kind="uvr5")


SEPARATION_CATALOGUE: tuple[AssetFile, ...] = (
    _uvr5_file("uvr5-hp2", "HP2_all_vocals.pth",
               "39796caa5db18d7f9382d8ac997ac967bfd85f7761014bb807d2543cc844ef05"),
    _uvr5_file("uvr5-hp3", "HP3_all_vocals.pth",
               "45e6b65199e781b4a6542002699be9f19cd3d1cb7d1558bc2bfbcd84674dfe28"),
    _uvr5_file("uvr5-hp5", "HP5_only_main_vocal.pth",
               "5908891829634926119720241e8573d97cbeb8277110a7512bdb0bd7563258ee"),
    _uvr5_file("uvr5-deecho-normal", "VR-DeEchoNormal.pth",
               "56aba59db3bcdd14a14464e62f3129698ecdea62eee0f003b9360923eb3ac79e"),
    _uvr5_file("uvr5-deecho-aggressive", "VR-DeEchoAggressive.pth",
               "8c8fd1582f9aabc363e47af62ddb88df6cae7e064cae75bbf041a067a5e0aee2"),
    _uvr5_file("uvr5-deecho-dereverb", "VR-DeEchoDeReverb.pth",
               "01376dd2a571bf3cb9cced680732726d2d732609d09216a610b0d110f133febe"),
    _uvr5_file("uvr5-dereverb", "onnx_dereverb_By_FoxJoy/vocals.onnx",
               "233bb5c6aaa365e568659a0a81211746fa881f8f47f82d9e864fce1f7692db80"),
)

# One RoFormer vocal model (2026 RVC separates through MSST's RoFormers): viperx's BS-RoFormer
# (vocals SDR 12.98 on MUSDB18-HQ), as UVR publishes it, with UVR's YAML for it beside it. Both live
# on GitHub, not on the hub; the sha256 and size agree across several independent public manifests.
ROFORMER_GROUP = "bs-roformer-vocals"
_ROFORMER_NAME = "model_bs_roformer_ep_317_sdr_12.9755"
ROFORMER_FILES: tuple[AssetFile, ...] = (
    AssetFile(
        group=ROFORMER_GROUP, repo_path=f"{UVR5_REPO_DIR}/{_ROFORMER_NAME}.ckpt", size=639_331_213,
        sha256="5b84f37e8d444c8cb30c79d77f613a41c05868ff9c9ac6c7049c00aefae115aa", kind="uvr5",
        source_url=f"https://github.com/TRvlvr/model_repo/releases/download/all_public_uvr_models/{_ROFORMER_NAME}.ckpt",
    ),
    AssetFile(
        group=ROFORMER_GROUP, repo_path=f"{UVR5_REPO_DIR}/{_ROFORMER_NAME}.yaml", size=None,
        sha256="2bfdd16c656bd9519aba757cc4f8834b7ede675eb1e00ec4772d74ae1c41af7f", kind="uvr5",
        source_url="https://raw.githubusercontent.com/TRvlvr/application_data/main/mdx_model_data/mdx_c_configs/"
        f"{_ROFORMER_NAME}.yaml",
    ),
)
SEPARATION_CATALOGUE = SEPARATION_CATALOGUE + ROFORMER_FILES
SEPARATION_GROUP_NAMES: tuple[str, ...] = (
    "uvr5", *dict.fromkeys(item.group for item in SEPARATION_CATALOGUE)
)  # fmt: skip


def _is_hub_url(url: str) -> bool:
    """False for files published elsewhere (GitHub): they get no Hugging Face token."""
    from urllib.parse import urlsplit

    direct_hosts = {urlsplit(item.source_url).hostname for item in SEPARATION_CATALOGUE if item.source_url}
    return urlsplit(url).hostname not in direct_hosts


def files_for(names: Iterable[str], catalogue: Sequence[AssetFile] | None = None) -> list[AssetFile]:
    """The catalogue entries behind download names (deduplicated, catalogue order)."""
    catalogue = CATALOGUE if catalogue is None else catalogue
    wanted = {name.strip().lower() for name in names}
    unknown = sorted(wanted - set(GROUP_NAMES) - set(SEPARATION_GROUP_NAMES))
    if unknown:
        raise UserInputError(
            f"unknown asset name(s) {', '.join(unknown)}; "
            f"choose from: {', '.join(GROUP_NAMES + SEPARATION_GROUP_NAMES)}"
        )
    # "uvr5" is RVC's uvr5_weights set; the RoFormer (640 MB) is fetched by its own name only
    separation = [
        item for item in SEPARATION_CATALOGUE
        if item.group in wanted or ("uvr5" in wanted and item.group.startswith("uvr5-"))
    ]  # fmt: skip
    if "all" in wanted:
        return list(catalogue) + separation
    return [item for item in catalogue if item.group in wanted] + separation


def asset_for_path(project: Project, path: str | Path) -> AssetFile | None:
    """The catalogue entry whose local path is `path`, or None."""
    resolved = Path(path).resolve()
    return next(
        (item for item in CATALOGUE + SEPARATION_CATALOGUE if item.local_path(project).resolve() == resolved), None
    )


def missing_asset_error(project: Project, path: str | Path) -> AssetMissingError:
    """The error for a missing catalogue file, naming the download command for its group."""
    item = asset_for_path(project, path)
    return AssetMissingError(path, item.group if item else "all")


def require_asset(project: Project, path: str | Path) -> Path:
    """Return `path` if the file is there, else raise AssetMissingError naming the download command."""
    path = Path(path)
    if not path.is_file():
        raise missing_asset_error(project, path)
    return path


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
    catalogue = CATALOGUE if catalogue is None else catalogue
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


# --- command line -------------------------------------------------------------------------------


class _TqdmProgress:
    """A ProgressCallback drawing one tqdm bar per file (bytes)."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._bar: object | None = None
        self._label = ""

    def __call__(self, done: int, total: int, message: str) -> None:
        from tqdm import tqdm

        if message != self._label or self._bar is None:
            self.close()
            self._label = message
            self._bar = tqdm(
                total=total or None, initial=done, desc=message, unit="B", unit_scale=True,
                unit_divisor=1024, file=self._stream, leave=True,
            )
        bar = self._bar
        assert isinstance(bar, tqdm)
        bar.update(done - bar.n)

    def close(self) -> None:
        from tqdm import tqdm

        if isinstance(self._bar, tqdm):
            self._bar.close()
        self._bar = None


def download_cli(
    names: Sequence[str],
    root: str | Path,
    *,
    transport: Transport | None = None,
    out: IO[str] | None = None,
) -> int:
    """`download NAME...` for a command line: tqdm bars, one line per failure, exit status 0/1/2."""
    out = out or sys.stderr
    project = Project.at(root)
    try:
        items = files_for(names or ["all"])
    except UserInputError as exc:
        print(f"error: {exc}", file=out)
        return 2
    bars = _TqdmProgress(out)
    failed: list[tuple[AssetFile, str]] = []
    busy = 0
    for index, item in enumerate(items, 1):
        label = f"[{index}/{len(items)}] {item.repo_path}"
        try:
            outcome = download_file(item, project, transport=transport, progress=bars, label=label)
        except AssetBusyError as exc:  # another process is fetching this file: leave it to finish
            bars.close()
            busy += 1
            print(f"{label}: {exc}", file=out)
            continue
        except (AssetMissingError, ModelFileError, DiskFullError) as exc:
            bars.close()
            failed.append((item, str(exc)))
            print(f"{label}: {exc}", file=out)
            continue
        bars.close()
        if outcome == "present":
            print(f"{label}: already present and verified ({item.verification})", file=out)
        elif item.sha256 is None:
            print(f"{label}: downloaded; checked by {item.verification}", file=out)
    if failed:
        print(f"\n{len(failed)} of {len(items)} file(s) missing.", file=out)
        print(offline_instructions([item for item, _ in failed], project), file=out)
        return 1
    if busy:
        print(f"\n{busy} of {len(items)} file(s) still being downloaded by another process.", file=out)
        return 1
    print(f"all {len(items)} file(s) in place under {project.root}", file=out)
    return 0


def status_lines(project: Project, hash_check: bool = False) -> list[str]:
    lines = []
    for state in status(project, hash_check=hash_check):
        mark = "ok" if state.present else ("partial" if state.partial_bytes else "missing")
        if state.verified is False:
            mark = "BAD CHECKSUM"
        lines.append(f"{mark:>12}  {state.group:<18} {state.path}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.assets", description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=".", help="project folder (default: current folder)")
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("download", help="download and verify assets")
    fetch.add_argument("names", nargs="*", default=["all"], help=f"any of: {', '.join(GROUP_NAMES + SEPARATION_GROUP_NAMES)}")
    show = sub.add_parser("status", help="list assets and whether they are in place")
    show.add_argument("--verify", action="store_true", help="also check sha256 (reads every file)")
    args = parser.parse_args(argv)
    if args.command == "download":
        return download_cli(args.names, args.root)
    print("\n".join(status_lines(Project.at(args.root), args.verify)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
