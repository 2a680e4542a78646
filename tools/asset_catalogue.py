"""The catalogue of downloadable assets: RVC's official files, their groups, sizes and hashes.

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

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from infer_pack.errors import AssetMissingError, UserInputError
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
