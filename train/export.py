"""Model tools on voice files: describe, change the info text, merge two voices, extract a small
voice model from a training checkpoint (RVC's `savee` format, written by infer_pack.checkpoint)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from configs import CONTENT_DIM, SAMPLE_RATE_TAGS, SampleRateTag, Version, load_config
from infer_pack.checkpoint import (
    POSTERIOR_PREFIX,
    TRAINED_SPEAKERS_KEY,
    VoiceModel,
    load_voice,
    rvc_config_list,
    save_voice,
    state_mismatch,
    voice_from_state_dict,
)
from infer_pack.errors import ModelFileError, UserInputError
from infer_pack.progress import CancelToken, ProgressCallback
from infer_pack.torchio import safe_torch_load
from train.experiment import Experiment

if TYPE_CHECKING:
    import torch

# config positions that may differ between two voices of the same architecture:
# 1 = segment size (training only), 15 = speaker count (emb_g rows, truncated when merging)
_CONFIG_FREE_SLOTS = {1, 15}


@dataclass(frozen=True)
class VoiceSummary:
    path: Path
    version: Version
    sample_rate_tag: str
    sample_rate: int
    use_f0: bool
    info: str
    speaker_count: int  # emb_g rows (109 in RVC's configs, whatever was trained)
    parameter_count: int
    file_size_bytes: int
    config: list[Any]
    extra_keys: list[str]
    trained_speakers: tuple[int, ...] | None = None  # ids recorded by voices made here; None: unknown

    def speakers_text(self) -> str:
        rows = f"{self.speaker_count} embedding rows"
        if self.trained_speakers is None:
            return f"speakers: not recorded in this file ({rows})"
        count = len(self.trained_speakers)
        ids = ", ".join(str(i) for i in self.trained_speakers)
        return f"speakers: {count} trained speaker{'s' if count != 1 else ''} (id {ids}) of {rows}"

    def to_text(self) -> str:
        lines = [
            f"file: {self.path.name} ({self.file_size_bytes / 1e6:.1f} MB)",
            f"version: {self.version}  sample rate: {self.sample_rate_tag} ({self.sample_rate} Hz)",
            f"pitch guidance (f0): {'yes' if self.use_f0 else 'no'}",
            self.speakers_text(),
            f"parameters: {self.parameter_count:,}",
            f"info: {self.info}",
        ]
        if self.extra_keys:
            lines.append(f"extra entries: {', '.join(self.extra_keys)}")
        return "\n".join(lines)


def describe_voice(path: str | Path) -> VoiceSummary:
    path = Path(path)
    voice = load_voice(path)
    return VoiceSummary(
        path=path,
        version=voice.version,
        sample_rate_tag=voice.sample_rate_tag,
        sample_rate=voice.sample_rate,
        use_f0=voice.use_f0,
        info=voice.info,
        speaker_count=voice.speaker_count,
        parameter_count=voice.parameter_count,
        file_size_bytes=path.stat().st_size,
        config=list(voice.config),
        extra_keys=[str(k) for k in voice.extra],
        trained_speakers=voice.trained_speakers,
    )


def change_voice_info(
    path: str | Path, info: str, output: str | Path | None = None
) -> Path:
    """Rewrite the `info` text (atomically; in place unless `output` is given). Everything else is kept."""
    voice = load_voice(path)
    voice.info = info
    return save_voice(Path(output) if output is not None else Path(path), voice)


def _architecture(voice: VoiceModel) -> str:
    return f"{voice.version} {voice.sample_rate_tag} {'with' if voice.use_f0 else 'without'} pitch"


def _check_mergeable(a: VoiceModel, b: VoiceModel) -> None:
    fix = "merge two voices of the same version, sample rate and pitch setting"
    differences = []
    if (a.version, a.sample_rate_tag, a.use_f0) != (
        b.version,
        b.sample_rate_tag,
        b.use_f0,
    ):
        differences.append(f"A is {_architecture(a)}, B is {_architecture(b)}")
    slots = [
        i
        for i in range(len(a.config))
        if i not in _CONFIG_FREE_SLOTS and a.config[i] != b.config[i]
    ]
    if slots:
        differences.append(
            "configs differ at "
            + ", ".join(f"[{i}] {a.config[i]!r} vs {b.config[i]!r}" for i in slots)
        )
    if not differences:
        expected = {k: v for k, v in a.weights.items() if k != "emb_g.weight"}
        other = {k: v for k, v in b.weights.items() if k != "emb_g.weight"}
        problem = state_mismatch(expected, other)
        if problem:
            differences.append(problem)
        elif a.weights["emb_g.weight"].shape[1] != b.weights["emb_g.weight"].shape[1]:
            differences.append("speaker embedding widths differ")
    if differences:
        raise ModelFileError(
            b.path or "B",
            "the model architectures are not the same: " + "; ".join(differences),
            fix,
        )


def merge_voices(
    path_a: str | Path,
    path_b: str | Path,
    ratio_a: float,
    output: str | Path,
    *,
    info: str = "",
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> Path:
    """weight = ratio_a * A + (1 - ratio_a) * B for every tensor, in float32, stored as fp16 (RVC's merge).

    The speaker table is cut to the smaller row count if the two differ. The result keeps A's
    config, version, rate and pitch setting.
    """

    if not 0.0 <= ratio_a <= 1.0:
        raise UserInputError(
            f"merge ratio {ratio_a} must lie between 0 and 1 (weight of model A)"
        )
    a = load_voice(path_a)
    b = load_voice(path_b)
    _check_mergeable(a, b)
    merged: dict[str, torch.Tensor] = {}
    total = len(a.weights)
    for i, (key, wa) in enumerate(a.weights.items()):
        if cancel is not None:
            cancel.check()
        wb = b.weights[key]
        if key == "emb_g.weight" and wa.shape[0] != wb.shape[0]:
            rows = min(wa.shape[0], wb.shape[0])
            wa, wb = wa[:rows], wb[:rows]
        merged[key] = (ratio_a * wa.float() + (1 - ratio_a) * wb.float()).half()
        if progress is not None and (i % 50 == 0 or i == total - 1):
            progress(i + 1, total, "merging weights")
    result = VoiceModel(
        weights=merged,
        config=list(a.config),
        info=info
        or f"merge of {Path(path_a).stem} ({ratio_a:g}) and {Path(path_b).stem} ({1 - ratio_a:g})",
        sample_rate_tag=a.sample_rate_tag,
        use_f0=a.use_f0,
        version=a.version,
    )
    if a.trained_speakers is not None and b.trained_speakers is not None:
        result.extra[TRAINED_SPEAKERS_KEY] = sorted(set(a.trained_speakers) | set(b.trained_speakers))
    return save_voice(output, result)


@dataclass(frozen=True)
class TrainingLayout:
    version: Version
    sample_rate_tag: SampleRateTag
    use_f0: bool


def _fits(
    state: Mapping[str, Any], version: Version, tag: SampleRateTag, use_f0: bool
) -> bool:
    import torch

    from infer_pack.models import Synthesizer

    has_posterior = any(k.startswith(POSTERIOR_PREFIX) for k in state)
    with torch.device("meta"):
        net = Synthesizer.from_rvc_config(
            load_config(version, tag), use_f0, posterior=has_posterior
        )
    expected = net.state_dict()
    # The speaker table may have any row count.
    expected = {k: v for k, v in expected.items() if k != "emb_g.weight"}
    return (
        state_mismatch(
            expected, {k: v for k, v in state.items() if k != "emb_g.weight"}
        )
        is None
    )


def detect_training_layout(
    state: Mapping[str, Any],
    path: str | Path,
    *,
    version: Version | None = None,
    sample_rate_tag: SampleRateTag | None = None,
    use_f0: bool | None = None,
) -> TrainingLayout:
    """Which (version, rate, pitch) network a generator state dict belongs to; given values are checked."""
    phone = state.get("enc_p.emb_phone.weight")
    if phone is None or "emb_g.weight" not in state:
        raise ModelFileError(
            path,
            "not a generator checkpoint (no enc_p / emb_g weights); a D_*.pth cannot be exported",
        )
    dim = int(phone.shape[1])
    found_version: Version = "v1" if dim == CONTENT_DIM["v1"] else "v2"
    if dim not in CONTENT_DIM.values():
        raise ModelFileError(path, f"unknown content feature size {dim}")
    if version is not None and version != found_version:
        raise ModelFileError(
            path,
            f"version mismatch: the weights are a {found_version} model, not {version}",
        )
    found_f0 = "enc_p.emb_pitch.weight" in state
    if use_f0 is not None and use_f0 != found_f0:
        what = "a pitch (f0) model" if found_f0 else "a model without pitch guidance"
        raise ModelFileError(path, f"f0 mismatch: the weights are {what}")
    tags = [sample_rate_tag] if sample_rate_tag is not None else list(SAMPLE_RATE_TAGS)
    matches = [tag for tag in tags if _fits(state, found_version, tag, found_f0)]
    if not matches:
        wanted = (
            f"{found_version} {sample_rate_tag}"
            if sample_rate_tag
            else f"any {found_version} configuration"
        )
        raise ModelFileError(
            path,
            f"the weights do not fit {wanted}",
            "check the sample rate chosen for extraction",
        )
    if len(matches) > 1:
        raise UserInputError(
            f"{path}: the weights fit {', '.join(matches)} alike; choose the sample rate the model was trained at"
        )
    return TrainingLayout(found_version, matches[0], found_f0)  # type: ignore[arg-type]


def extract_small_model(
    checkpoint_path: str | Path,
    output: str | Path,
    *,
    sample_rate_tag: SampleRateTag | None = None,
    use_f0: bool | None = None,
    version: Version | None = None,
    info: str = "",
) -> tuple[Path, TrainingLayout]:
    """Write the voice model (fp16, no enc_q, RVC's 18-value config) of a G_*.pth checkpoint.

    Version, rate and pitch setting are read from the weights where possible; values given are checked.
    """
    checkpoint_path = Path(checkpoint_path)
    obj = safe_torch_load(checkpoint_path)
    if isinstance(obj, Mapping) and "weight" in obj and "config" in obj:
        raise ModelFileError(
            checkpoint_path, "this is already a small voice model", "use it as it is"
        )
    state = obj.get("model", obj) if isinstance(obj, Mapping) else None
    if not isinstance(state, Mapping):
        raise ModelFileError(
            checkpoint_path, "not a training checkpoint (no 'model' state dict)"
        )
    state = {str(k).removeprefix("module."): v for k, v in state.items()}
    layout = detect_training_layout(
        state,
        checkpoint_path,
        version=version,
        sample_rate_tag=sample_rate_tag,
        use_f0=use_f0,
    )
    cfg = load_config(layout.version, layout.sample_rate_tag)
    config = rvc_config_list(cfg)
    config[15] = int(state["emb_g.weight"].shape[0])
    # A checkpoint inside its experiment folder: the filelist says which speakers it was trained on.
    speakers = Experiment(checkpoint_path.parent).filelist_speaker_ids(layout.use_f0)
    voice = voice_from_state_dict(
        state,
        config,
        layout.use_f0,
        info or "Extracted model.",
        layout.version,
        layout.sample_rate_tag,
        trained_speakers=speakers,
    )
    return save_voice(output, voice), layout
