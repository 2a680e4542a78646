"""The one owner of RVC's model file formats.

* Voice model ("small model", `weights/<name>.pth`): an OrderedDict
  `{"weight": {key: fp16 tensor} without enc_q.*, "config": [18 values], "info": str, "sr": "40k",
  "f0": 0|1, "version": "v1"|"v2", ...extra keys some RVC forks add}`. Old files without `f0` /
  `version` mean a pitch model / v1. Voices made here add `"trained_speakers": [ids]` (RVC ignores
  it): emb_g always has the config's rows (109), so only this says how many speakers were trained.
* Training checkpoint (`logs/<exp>/G_*.pth`, `D_*.pth`): `{"model", "iteration" (the epoch),
  "optimizer", "learning_rate"}`.
* Pretrained G/D (`pretrained{,_v2}/...`): only `["model"]` is read and it must fit the network
  exactly (including enc_q for G).

Every load goes through `safe_torch_load` (weights-only unpickling) and every write is atomic.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from configs import CONTENT_DIM, SAMPLE_RATE_HZ, RVCConfig
from infer_pack.errors import ModelFileError
from infer_pack.torchio import safe_torch_load, torch_save_atomic

if TYPE_CHECKING:
    import torch
    from torch import nn

    from infer_pack.models import Synthesizer

Version = Literal["v1", "v2"]
StateDict = dict[str, "torch.Tensor"]

VOICE_CORE_KEYS = ("weight", "config", "info", "sr", "f0", "version")
CONFIG_LENGTH = 18
POSTERIOR_PREFIX = "enc_q."
TRAINED_SPEAKERS_KEY = "trained_speakers"


@dataclass
class VoiceModel:
    """A loaded voice model file. `weights` are kept as stored (fp16 in RVC files)."""

    weights: dict[str, torch.Tensor]
    config: list[Any]
    info: str
    sample_rate_tag: str
    use_f0: bool
    version: Version
    extra: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def sample_rate(self) -> int:
        """Output rate in Hz (config[-1], what RVC uses)."""
        return int(self.config[-1])

    @property
    def content_dim(self) -> int:
        return CONTENT_DIM[self.version]

    @property
    def speaker_count(self) -> int:
        return int(self.weights["emb_g.weight"].shape[0])

    @property
    def trained_speakers(self) -> tuple[int, ...] | None:
        """Speaker ids the voice was trained on, when the file records them (None in RVC's files)."""
        ids = self.extra.get(TRAINED_SPEAKERS_KEY)
        if not isinstance(ids, (list, tuple)) or not all(isinstance(i, int) for i in ids):
            return None
        return tuple(sorted(set(ids)))

    @property
    def model_config(self) -> list[Any]:
        """The config the network is built from: config[-3] replaced by emb_g's row count, as RVC does."""
        config = list(self.config)
        config[-3] = self.speaker_count
        return config

    @property
    def parameter_count(self) -> int:
        return sum(int(t.numel()) for t in self.weights.values())


@dataclass
class TrainingCheckpoint:
    """RVC's G_*.pth / D_*.pth: full state dict, epoch number ("iteration"), optimizer state, lr."""

    model: dict[str, torch.Tensor]
    iteration: int
    optimizer: dict[str, Any] | None
    learning_rate: float
    path: Path | None = None
    # Optimiser steps taken so far; our own key (RVC ignores it). None in RVC's files: the step is then
    # only known from the file name, and G_2333333 ("latest only") names none.
    global_step: int | None = None
    # The exact place to go on from (our key, RVC ignores it): the trainer's position, RNG states
    # and gradient scaler (train.training_setup.ResumeState). None in RVC's files and older ones.
    resume: dict[str, Any] | None = None


# -- helpers -------------------------------------------------------------------------------------


def _describe_path(path: str | Path | None) -> str:
    return str(path) if path is not None else "<in memory>"


def _is_tensor(value: Any) -> bool:
    import torch

    return isinstance(value, torch.Tensor)


def _shape(t: Any) -> list[int]:
    return [int(s) for s in t.shape]


def state_mismatch(expected: Mapping[str, Any], state: Mapping[str, Any]) -> str | None:
    """A readable account of how `state` differs from `expected` (keys/shapes), or None if it fits.

    It names the usual causes: v1 vs v2 content size, pitch vs no-pitch model, sample rate layout.
    """
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        k for k in expected if k in state and _shape(expected[k]) != _shape(state[k])
    ]
    if not (missing or unexpected or wrong):
        return None
    hints: list[str] = []
    phone = "enc_p.emb_phone.weight"
    if phone in wrong:
        file_dim, model_dim = _shape(state[phone])[1], _shape(expected[phone])[1]
        name = {256: "v1", 768: "v2"}
        hints.append(
            f"the file is a {name.get(file_dim, str(file_dim) + '-dim')} model but a "
            f"{name.get(model_dim, str(model_dim) + '-dim')} model was expected"
        )
    pitch = "enc_p.emb_pitch.weight"
    if pitch in missing:
        hints.append(
            "the file is a model without pitch guidance (f0) but a pitch model was expected"
        )
    elif pitch in unexpected:
        hints.append(
            "the file is a pitch (f0) model but a model without pitch guidance was expected"
        )
    if any(k.startswith(POSTERIOR_PREFIX) for k in missing) and not any(
        k.startswith(POSTERIOR_PREFIX) for k in state
    ):
        hints.append(
            "the file has no posterior encoder (enc_q): it is a small voice model, not a training G file"
        )
    if any(k.startswith("dec.") for k in wrong) or any(
        k.startswith("dec.") for k in missing + unexpected
    ):
        hints.append(
            "the decoder layout differs (another sample rate or upsampling config)"
        )
    parts = []
    if wrong:
        shown = ", ".join(
            f"{k} file {_shape(state[k])} vs model {_shape(expected[k])}"
            for k in wrong[:3]
        )
        parts.append(f"{len(wrong)} shape mismatch(es): {shown}")
    if missing:
        parts.append(f"{len(missing)} missing key(s) such as {', '.join(missing[:3])}")
    if unexpected:
        parts.append(
            f"{len(unexpected)} unexpected key(s) such as {', '.join(unexpected[:3])}"
        )
    hint = ("; ".join(hints) + " — ") if hints else ""
    return hint + "; ".join(parts)


def load_state_strict(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    path: str | Path | None,
    what: str,
    fix: str = "",
) -> None:
    """`model.load_state_dict(state)` (strict) with a ModelFileError that names the mismatch."""
    problem = state_mismatch(model.state_dict(), state)
    if problem:
        raise ModelFileError(
            _describe_path(path),
            f"does not fit the {what}: {problem}",
            fix or "pick the file made for this version, sample rate and pitch setting",
        )
    model.load_state_dict(state, strict=True)


# -- voice models --------------------------------------------------------------------------------


def _tag_from(sr: Any, config: Sequence[Any], path: Path) -> str:
    if isinstance(sr, str) and sr in SAMPLE_RATE_HZ:
        return sr
    hz = int(sr) if isinstance(sr, int | float) else int(config[-1])
    for tag, value in SAMPLE_RATE_HZ.items():
        if value == hz:
            return tag
    raise ModelFileError(
        path, f"unsupported sample rate {sr!r} (config says {config[-1]})"
    )


def parse_voice(obj: Any, path: str | Path) -> VoiceModel:
    """Validate an unpickled voice file and turn it into a VoiceModel (ModelFileError if malformed)."""
    path = Path(path)
    try:
        return _parse_voice(obj, path)
    except ModelFileError:
        raise
    except (
        TypeError,
        ValueError,
        IndexError,
        KeyError,
        AttributeError,
        OverflowError,
    ) as exc:
        raise ModelFileError(
            path, f"malformed voice model entries ({type(exc).__name__}: {exc})"
        ) from None


def _parse_voice(obj: Any, path: Path) -> VoiceModel:
    if not isinstance(obj, Mapping):
        raise ModelFileError(
            path,
            f"not an RVC voice model (top level is {type(obj).__name__}, not a dict)",
        )
    if "weight" not in obj or "config" not in obj:
        if "model" in obj and "iteration" in obj:
            raise ModelFileError(
                path,
                "this is a training checkpoint (G_*.pth / D_*.pth), not a voice model",
                "extract a small voice model from it with the Model tools tab "
                "(`.venv/bin/python -m tools.cli extract-model`) and use that file",
            )
        raise ModelFileError(
            path,
            f"not an RVC voice model (no 'weight'/'config' entries; keys: {sorted(map(str, obj))[:6]})",
        )
    weights = obj["weight"]
    config = obj["config"]
    if not isinstance(weights, Mapping) or not all(
        _is_tensor(v) for v in weights.values()
    ):
        raise ModelFileError(path, "the 'weight' entry is not a dict of tensors")
    if not isinstance(config, list | tuple) or len(config) != CONFIG_LENGTH:
        raise ModelFileError(
            path,
            f"the 'config' entry must be a list of {CONFIG_LENGTH} values, got {config!r:.120}",
        )
    if "emb_g.weight" not in weights or "enc_p.emb_phone.weight" not in weights:
        raise ModelFileError(
            path, "the weights lack emb_g / enc_p (not an RVC synthesizer)"
        )
    version = obj.get("version", "v1")
    if version not in ("v1", "v2"):
        raise ModelFileError(
            path, f"unknown model version {version!r}; expected 'v1' or 'v2'"
        )
    use_f0 = bool(int(obj.get("f0", 1)))
    phone_dim = int(weights["enc_p.emb_phone.weight"].shape[1])
    if phone_dim != CONTENT_DIM[version]:
        stored = (
            "stored" if "version" in obj else "implied (no 'version' entry means v1)"
        )
        raise ModelFileError(
            path,
            f"version mismatch: the {stored} version is {version} but the weights take "
            f"{phone_dim}-dim content features ({'v1' if phone_dim == 256 else 'v2'})",
            "fix the file's version entry (Model tools > change info) or re-export it",
        )
    has_pitch = "enc_p.emb_pitch.weight" in weights
    if use_f0 and not has_pitch:
        raise ModelFileError(
            path,
            "f0 mismatch: the file says f0=1 (pitch model) but has no pitch embedding",
        )
    info = obj.get("info", "")
    extra = {k: v for k, v in obj.items() if k not in VOICE_CORE_KEYS}
    return VoiceModel(
        weights=dict(weights),
        config=list(config),
        info=str(info) if info is not None else "",
        sample_rate_tag=_tag_from(obj.get("sr", config[-1]), config, path),
        use_f0=use_f0,
        version=version,
        extra=extra,
        path=path,
    )


def load_voice(path: str | Path) -> VoiceModel:
    """Read a voice model .pth (refuses pickles that would run code)."""
    path = Path(path)
    return parse_voice(safe_torch_load(path), path)


def voice_to_dict(voice: VoiceModel) -> OrderedDict[str, Any]:
    """The on-disk structure, in RVC's key order, extra keys after the core ones."""
    out: OrderedDict[str, Any] = OrderedDict()
    out["weight"] = {k: v for k, v in voice.weights.items()}
    out["config"] = list(voice.config)
    out["info"] = voice.info
    out["sr"] = voice.sample_rate_tag
    out["f0"] = int(voice.use_f0)
    out["version"] = voice.version
    for key, value in voice.extra.items():
        if key not in out:
            out[key] = value
    return out


def save_voice(path: str | Path, voice: VoiceModel) -> Path:
    """Write `voice` atomically in RVC's format; returns the path."""

    path = Path(path)
    data = voice_to_dict(voice)
    return torch_save_atomic(data, path)


def rvc_config_list(cfg: RVCConfig) -> list[Any]:
    """The 18-value config RVC's savee() stores for a training configuration."""
    m = cfg.model
    return [
        cfg.spec_channels,
        32,  # RVC stores this literal; it only mattered for training
        m.inter_channels,
        m.hidden_channels,
        m.filter_channels,
        m.n_heads,
        m.n_layers,
        m.kernel_size,
        m.p_dropout,
        m.resblock,
        list(m.resblock_kernel_sizes),
        [list(d) for d in m.resblock_dilation_sizes],
        list(m.upsample_rates),
        m.upsample_initial_channel,
        list(m.upsample_kernel_sizes),
        m.spk_embed_dim,
        m.gin_channels,
        cfg.sample_rate,
    ]


def voice_from_state_dict(
    state: Mapping[str, torch.Tensor],
    cfg: RVCConfig | Sequence[Any],
    use_f0: bool,
    info: str,
    version: Version | None = None,
    sample_rate_tag: str | None = None,
    *,
    trained_speakers: Sequence[int] | None = None,
) -> VoiceModel:
    """A small voice model from a generator state dict: enc_q dropped, fp16 (RVC's savee).
    `trained_speakers` (the filelist's speaker ids) is recorded when known."""
    import torch

    if isinstance(cfg, RVCConfig):
        config = rvc_config_list(cfg)
        version = version or cfg.version
        sample_rate_tag = sample_rate_tag or cfg.sample_rate_tag
    else:
        config = list(cfg)
        if version is None:
            raise ValueError("version is required when cfg is a config list")
        sample_rate_tag = sample_rate_tag or _tag_from(
            config[-1], config, Path("<state dict>")
        )
    weights = {
        k.removeprefix("module."): v.detach().to("cpu", torch.float16).clone()
        for k, v in state.items()
        if not k.removeprefix("module.").startswith(POSTERIOR_PREFIX)
    }
    return VoiceModel(
        weights=weights,
        config=config,
        info=info,
        sample_rate_tag=sample_rate_tag,
        use_f0=bool(use_f0),
        version=version,
        extra={} if trained_speakers is None else {TRAINED_SPEAKERS_KEY: sorted({int(i) for i in trained_speakers})},
    )


def build_synthesizer(
    voice: VoiceModel,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    *,
    fold_weight_norm: bool = True,
) -> Synthesizer:
    """An eval-mode Synthesizer holding the voice's weights (upcast to `dtype`, float32 by default).

    With `fold_weight_norm` the weight-normalised layers are folded once, which makes inference
    faster and gives the same results.
    """
    import torch

    from infer_pack.models import Synthesizer

    dtype = dtype or torch.float32
    try:
        with torch.device("meta"):
            net = Synthesizer.from_config_list(
                voice.model_config,
                content_dim=voice.content_dim,
                use_f0=voice.use_f0,
                posterior=False,
            )
    except (TypeError, ValueError, AssertionError) as exc:
        raise ModelFileError(
            _describe_path(voice.path), f"its config cannot build a model ({exc})"
        ) from None
    # Some tools leave the posterior encoder in voice files; RVC's loader ignores it, so do we.
    weights = {
        k: v for k, v in voice.weights.items() if not k.startswith(POSTERIOR_PREFIX)
    }
    problem = state_mismatch(net.state_dict(), weights)
    if problem:
        raise ModelFileError(
            _describe_path(voice.path),
            f"weights do not fit its own config: {problem}",
            "re-export the voice from its training checkpoint",
        )
    state = {k: v.to(device=device, dtype=dtype, copy=True) for k, v in weights.items()}
    net.load_state_dict(state, strict=True, assign=True)
    net.eval()
    if fold_weight_norm:
        net.remove_weight_norm()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


# -- training checkpoints -----------------------------------------------------------------------


def save_training_checkpoint(
    path: str | Path,
    *,
    model: nn.Module | Mapping[str, torch.Tensor],
    optimizer: Any,
    learning_rate: float,
    iteration: int,
    global_step: int | None = None,
    resume: Mapping[str, Any] | None = None,
) -> Path:
    """Write RVC's `{"model", "iteration", "optimizer", "learning_rate"}` atomically.

    `model` may be a module (a DDP wrapper is unwrapped) or a state dict; `optimizer` an optimizer,
    its state dict, or None. `iteration` is the epoch number, as in RVC; `global_step` (optional) is
    stored under its own key, which RVC's loader ignores.
    """
    import torch

    path = Path(path)
    if isinstance(model, torch.nn.Module):
        state = getattr(model, "module", model).state_dict()
    else:
        state = dict(model)
    optim_state = (
        optimizer.state_dict() if hasattr(optimizer, "state_dict") else optimizer
    )
    data = {
        "model": state,
        "iteration": int(iteration),
        "optimizer": optim_state,
        "learning_rate": float(learning_rate),
    }
    if global_step is not None:
        data["global_step"] = int(global_step)
    if resume is not None:
        data["resume"] = dict(resume)
    return torch_save_atomic(data, path)


def load_training_checkpoint(path: str | Path) -> TrainingCheckpoint:
    path = Path(path)
    obj = safe_torch_load(path)
    if not isinstance(obj, Mapping) or "model" not in obj:
        if isinstance(obj, Mapping) and "weight" in obj:
            raise ModelFileError(
                path,
                "this is a small voice model, not a training checkpoint (G_*.pth / D_*.pth)",
            )
        raise ModelFileError(path, "not an RVC training checkpoint (no 'model' entry)")
    model = obj["model"]
    if not isinstance(model, Mapping) or not all(_is_tensor(v) for v in model.values()):
        raise ModelFileError(path, "the 'model' entry is not a dict of tensors")
    return TrainingCheckpoint(
        model={k.removeprefix("module."): v for k, v in model.items()},
        iteration=int(obj.get("iteration", 0)),
        optimizer=obj.get("optimizer"),
        learning_rate=float(obj.get("learning_rate", 0.0)),
        path=path,
        global_step=int(obj["global_step"]) if isinstance(obj.get("global_step"), int) else None,
        resume=dict(obj["resume"]) if isinstance(obj.get("resume"), Mapping) else None,
    )


def load_pretrained_state(
    path: str | Path, into: nn.Module | None = None, what: str = "network"
) -> StateDict:
    """The `["model"]` state dict of a pretrained G/D file; with `into`, load it strictly (keys incl.
    enc_q, shapes) and raise ModelFileError naming any mismatch."""
    checkpoint = load_training_checkpoint(path)
    if into is not None:
        load_state_strict(
            into,
            checkpoint.model,
            path,
            what,
            "use the pretrained file for this version (pretrained vs pretrained_v2), sample rate and pitch setting",
        )
    return checkpoint.model
