"""Reading HuBERT checkpoints without fairseq or transformers.

Two layouts hold the same network:
* fairseq `.pt` (`hubert_base.pt`): a pickled dict with `cfg` (plain dicts) or `args` (a
  Namespace, older files), the weights under `model` in fairseq names, and fairseq `Dictionary`
  objects under `task_state`. The dictionary class is mapped onto an empty local class, so the
  weights-only unpickler stays in charge and any other foreign class is still refused.
* transformers folder (`hubert_base/`): `config.json` plus `model.safetensors` or
  `pytorch_model.bin`, in transformers names; RVC adds a top-level `final_proj`.

Both are turned into one `HubertArch` (sizes) and a state dict in fairseq names, which is the
naming of `infer_pack.hubert.HubertModel`.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infer_pack.errors import ModelFileError

if TYPE_CHECKING:
    import torch

HUBERT_BASE_CONV_LAYERS = "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2"
TRANSFORMERS_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class HubertArch:
    """The sizes that fix every tensor shape (defaults: HuBERT Base as RVC ships it)."""

    conv_layers: tuple[tuple[int, int, int], ...] = ((512, 10, 5),) + ((512, 3, 2),) * 4 + ((512, 2, 2),) * 2
    conv_bias: bool = False
    embed_dim: int = 768
    ffn_dim: int = 3072
    attention_heads: int = 12
    encoder_layers: int = 12
    conv_pos: int = 128
    conv_pos_groups: int = 16
    final_proj_dim: int = 256  # outputs of final_proj; 0 = the checkpoint has none
    label_rows: int = 504  # rows of label_embs_concat (training only); 0 = absent
    label_dim: int = 256  # its width (fairseq's final_dim)
    layer_norm_eps: float = 1e-5

    @property
    def conv_dim(self) -> int:
        return self.conv_layers[-1][0]

    @property
    def hop_samples(self) -> int:
        """Input samples per output frame (320 at 16 kHz = 50 frames/s)."""
        hop = 1
        for _, _, stride in self.conv_layers:
            hop *= stride
        return hop

    @property
    def receptive_field(self) -> int:
        """Input samples seen by one output frame (400 for HuBERT Base)."""
        field = 1
        for _, kernel, stride in reversed(self.conv_layers):
            field = (field - 1) * stride + kernel
        return field

    def frames(self, n_samples: int) -> int:
        """Output frames for `n_samples` input samples (0 when shorter than the receptive field)."""
        if n_samples < self.receptive_field:
            return 0
        return (n_samples - self.receptive_field) // self.hop_samples + 1


def parse_conv_layers(spec: str) -> tuple[tuple[int, int, int], ...]:
    """fairseq's `conv_feature_layers` string, e.g. "[(512,10,5)] + [(512,3,2)] * 4", without eval.

    Only list/tuple literals of integers, `+` between lists and `* n` are accepted.
    """

    def value(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [value(item) for item in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            left, right = value(node.left), value(node.right)
            if isinstance(left, list) and isinstance(right, list):
                return left + right
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
            left, right = value(node.left), value(node.right)
            if isinstance(left, list) and isinstance(right, int):
                return left * right
            if isinstance(right, list) and isinstance(left, int):
                return right * left
        raise ValueError(f"unsupported expression {ast.dump(node)}")

    layers = value(ast.parse(spec.strip(), mode="eval").body)
    if not isinstance(layers, list) or not layers:
        raise ValueError("expected a non-empty list")
    parsed: list[tuple[int, int, int]] = []
    for item in layers:
        if not (isinstance(item, tuple) and len(item) == 3 and all(isinstance(v, int) and v > 0 for v in item)):
            raise ValueError(f"each conv layer must be (channels, kernel, stride), got {item!r}")
        parsed.append((item[0], item[1], item[2]))
    return tuple(parsed)


@dataclass(frozen=True)
class HubertCheckpoint:
    """Sizes plus weights in fairseq names (tensors as stored, often float16)."""

    arch: HubertArch
    state: dict[str, torch.Tensor]
    source: str  # "fairseq" or "transformers"


class _FairseqDictionary:
    """Stands in for fairseq.data.dictionary.Dictionary: receives its attributes, runs no code."""


class _PickledNamespace:
    """Stands in for argparse.Namespace (the `args` of pre-2021 fairseq checkpoints)."""


FAIRSEQ_STUBS: tuple[tuple[type, str], ...] = (
    (_FairseqDictionary, "fairseq.data.dictionary.Dictionary"),
    (_PickledNamespace, "argparse.Namespace"),
)


def _fairseq_arch(path: Path, model_cfg: Mapping[str, Any], state: Mapping[str, torch.Tensor]) -> HubertArch:
    """HubertArch from fairseq's model config; row counts of optional tensors come from the weights."""

    def refuse(field: str, value: object, expected: object) -> ModelFileError:
        return ModelFileError(
            path,
            f"unsupported HuBERT variant ({field}={value!r}, only {expected!r} is implemented)",
            "use RVC's hubert_base.pt (HuBERT Base / ContentVec)",
        )

    checks: tuple[tuple[str, object], ...] = (
        ("extractor_mode", "default"),
        ("layer_norm_first", False),
        ("activation_fn", "gelu"),
        ("conv_pos_batch_norm", False),
        ("layer_type", "transformer"),
        ("pos_conv_depth", 1),
    )
    for field, expected in checks:
        if field in model_cfg and model_cfg[field] is not None and model_cfg[field] != expected:
            raise refuse(field, model_cfg[field], expected)
    try:
        conv_layers = parse_conv_layers(str(model_cfg.get("conv_feature_layers", HUBERT_BASE_CONV_LAYERS)))
    except (ValueError, SyntaxError) as exc:
        raise ModelFileError(path, f"cannot read conv_feature_layers ({exc})") from None
    final_proj = state.get("final_proj.weight")
    labels = state.get("label_embs_concat")
    try:
        return HubertArch(
            conv_layers=conv_layers,
            conv_bias=bool(model_cfg.get("conv_bias", False)),
            embed_dim=int(model_cfg.get("encoder_embed_dim", 768)),
            ffn_dim=int(model_cfg.get("encoder_ffn_embed_dim", 3072)),
            attention_heads=int(model_cfg.get("encoder_attention_heads", 12)),
            encoder_layers=int(model_cfg.get("encoder_layers", 12)),
            conv_pos=int(model_cfg.get("conv_pos", 128)),
            conv_pos_groups=int(model_cfg.get("conv_pos_groups", 16)),
            final_proj_dim=int(final_proj.shape[0]) if final_proj is not None else 0,
            label_rows=int(labels.shape[0]) if labels is not None else 0,
            label_dim=int(labels.shape[1]) if labels is not None and labels.dim() == 2 else 0,
        )
    except (TypeError, ValueError) as exc:
        raise ModelFileError(path, f"unreadable model config ({exc})") from None


def read_fairseq_checkpoint(path: str | Path) -> HubertCheckpoint:
    """A fairseq HuBERT `.pt` (or s3prl's fairseq-free conversion of one), weights-only."""
    from infer_pack.torchio import safe_torch_load

    path = Path(path)
    raw = safe_torch_load(path, allowed_globals=FAIRSEQ_STUBS)
    if not isinstance(raw, Mapping):
        raise ModelFileError(path, "not a fairseq checkpoint (top level is not a dict)")
    if "model_weight" in raw and "model_cfg" in raw:  # s3prl's converted layout
        state, model_cfg = raw["model_weight"], raw["model_cfg"]
    else:
        state = raw.get("model")
        cfg = raw.get("cfg")
        args = raw.get("args")
        if isinstance(cfg, Mapping) and isinstance(cfg.get("model"), Mapping):
            model_cfg = cfg["model"]
        elif isinstance(args, _PickledNamespace):
            model_cfg = vars(args)
        else:
            model_cfg = None
    if not isinstance(state, Mapping) or "encoder.layers.0.fc1.weight" not in state:
        raise ModelFileError(
            path,
            "no HuBERT weights inside (expected a fairseq checkpoint with a 'model' dict)",
            "use RVC's hubert_base.pt or a transformers hubert_base folder",
        )
    if not isinstance(model_cfg, Mapping):
        raise ModelFileError(path, "the checkpoint has neither cfg['model'] nor args, so its sizes are unknown")
    state = {str(name): tensor for name, tensor in state.items()}
    return HubertCheckpoint(_fairseq_arch(path, model_cfg, state), state, "fairseq")


# transformers name -> fairseq name, tried in order; `{n}` is a layer index.
_RENAMES: tuple[tuple[str, str], ...] = (
    (r"feature_extractor\.conv_layers\.(\d+)\.conv\.(weight|bias)", r"feature_extractor.conv_layers.\1.0.\2"),
    (r"feature_extractor\.conv_layers\.0\.layer_norm\.(weight|bias)", r"feature_extractor.conv_layers.0.2.\1"),
    (r"feature_projection\.layer_norm\.(weight|bias)", r"layer_norm.\1"),
    (r"feature_projection\.projection\.(weight|bias)", r"post_extract_proj.\1"),
    (r"encoder\.pos_conv_embed\.conv\.bias", r"encoder.pos_conv.0.bias"),
    (r"encoder\.pos_conv_embed\.conv\.(?:parametrizations\.weight\.original0|weight_g)", r"encoder.pos_conv.0.weight_g"),
    (r"encoder\.pos_conv_embed\.conv\.(?:parametrizations\.weight\.original1|weight_v)", r"encoder.pos_conv.0.weight_v"),
    (r"encoder\.layers\.(\d+)\.attention\.(q|k|v|out)_proj\.(weight|bias)", r"encoder.layers.\1.self_attn.\2_proj.\3"),
    (r"encoder\.layers\.(\d+)\.layer_norm\.(weight|bias)", r"encoder.layers.\1.self_attn_layer_norm.\2"),
    (
        r"encoder\.layers\.(\d+)\.feed_forward\.intermediate_dense\.(weight|bias)",
        r"encoder.layers.\1.fc1.\2",
    ),
    (r"encoder\.layers\.(\d+)\.feed_forward\.output_dense\.(weight|bias)", r"encoder.layers.\1.fc2.\2"),
    (r"encoder\.layers\.(\d+)\.final_layer_norm\.(weight|bias)", r"encoder.layers.\1.final_layer_norm.\2"),
    (r"encoder\.layer_norm\.(weight|bias)", r"encoder.layer_norm.\1"),
    (r"masked_spec_embed", r"mask_emb"),
    (r"final_proj\.(weight|bias)", r"final_proj.\1"),
)
_COMPILED_RENAMES = tuple((re.compile(pattern), target) for pattern, target in _RENAMES)


def transformers_to_fairseq_name(name: str) -> str | None:
    """The fairseq name of a transformers HubertModel parameter (None: not part of the encoder)."""
    for pattern, target in _COMPILED_RENAMES:
        if pattern.fullmatch(name):
            return pattern.sub(target, name)
    return None


def _transformers_arch(path: Path, config: Mapping[str, Any], state: Mapping[str, torch.Tensor]) -> HubertArch:
    def refuse(field: str, value: object) -> ModelFileError:
        return ModelFileError(
            path / "config.json",
            f"unsupported HuBERT variant ({field}={value!r})",
            "use RVC's hubert_base folder (HuBERT Base / ContentVec)",
        )

    if config.get("feat_extract_norm", "group") != "group":
        raise refuse("feat_extract_norm", config.get("feat_extract_norm"))
    if config.get("do_stable_layer_norm", False):
        raise refuse("do_stable_layer_norm", True)
    if not config.get("feat_proj_layer_norm", True):
        raise refuse("feat_proj_layer_norm", False)
    if config.get("conv_pos_batch_norm", False):
        raise refuse("conv_pos_batch_norm", True)
    for field in ("hidden_act", "feat_extract_activation"):
        if config.get(field, "gelu") != "gelu":
            raise refuse(field, config.get(field))
    try:
        conv_dim = [int(v) for v in config.get("conv_dim", (512,) * 7)]
        conv_kernel = [int(v) for v in config.get("conv_kernel", (10, 3, 3, 3, 3, 2, 2))]
        conv_stride = [int(v) for v in config.get("conv_stride", (5, 2, 2, 2, 2, 2, 2))]
        if not (len(conv_dim) == len(conv_kernel) == len(conv_stride)):
            raise ValueError("conv_dim, conv_kernel and conv_stride differ in length")
        final_proj = state.get("final_proj.weight")
        return HubertArch(
            conv_layers=tuple(zip(conv_dim, conv_kernel, conv_stride)),
            conv_bias=bool(config.get("conv_bias", False)),
            embed_dim=int(config.get("hidden_size", 768)),
            ffn_dim=int(config.get("intermediate_size", 3072)),
            attention_heads=int(config.get("num_attention_heads", 12)),
            encoder_layers=int(config.get("num_hidden_layers", 12)),
            conv_pos=int(config.get("num_conv_pos_embeddings", 128)),
            conv_pos_groups=int(config.get("num_conv_pos_embedding_groups", 16)),
            final_proj_dim=int(final_proj.shape[0]) if final_proj is not None else 0,
            label_rows=0,
            layer_norm_eps=float(config.get("layer_norm_eps", 1e-5)),
        )
    except (TypeError, ValueError) as exc:
        raise ModelFileError(path / "config.json", f"unreadable HuBERT config ({exc})") from None


def read_transformers_folder(path: str | Path) -> HubertCheckpoint:
    """A transformers HubertModel folder (RVC's `assets/hubert_base/`), weights renamed to fairseq."""
    from infer_pack.torchio import safe_torch_load

    path = Path(path)
    config_path = path / "config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelFileError(path, "folder without config.json", "point to a hubert_base.pt file or a full folder") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(config_path, f"unreadable JSON ({exc})") from None
    if not isinstance(config, dict):
        raise ModelFileError(config_path, "config.json is not a JSON object")
    weights_file = next((path / name for name in TRANSFORMERS_WEIGHT_FILES if (path / name).is_file()), None)
    if weights_file is None:
        raise ModelFileError(path, f"no weights file ({' or '.join(TRANSFORMERS_WEIGHT_FILES)}) in the folder")
    if weights_file.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            raw: Any = load_file(str(weights_file), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise ModelFileError(weights_file, f"unreadable safetensors file ({exc})") from None
    else:
        raw = safe_torch_load(weights_file)
    if not isinstance(raw, Mapping):
        raise ModelFileError(weights_file, "not a state dict")
    names = [str(name) for name in raw]
    # Models saved from a wrapper (e.g. HubertForCTC) prefix the encoder with "hubert.".
    strip = "hubert." if names and all(n.startswith(("hubert.", "final_proj.")) for n in names) else ""
    state: dict[str, torch.Tensor] = {}
    for name in names:
        short = name[len(strip) :] if strip and name.startswith(strip) else name
        target = transformers_to_fairseq_name(short)
        if target is not None:
            state[target] = raw[name]
    if "encoder.layers.0.fc1.weight" not in state:
        raise ModelFileError(weights_file, "no HuBERT encoder weights inside")
    return HubertCheckpoint(_transformers_arch(path, config, state), state, "transformers")


def read_hubert(path: str | Path) -> HubertCheckpoint:
    """Either layout: a folder is read as transformers, a file as fairseq."""
    path = Path(path)
    if path.is_dir():
        return read_transformers_folder(path)
    return read_fairseq_checkpoint(path)
