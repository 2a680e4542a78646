"""Content encoder: reproduces the fairseq reference features, reads both checkpoint layouts,
refuses hostile pickles, and has HuBERT Base's exact parameter list."""

from __future__ import annotations

import json
import re
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import reference_file

from infer_pack import hubert
from infer_pack.errors import (
    AssetMissingError,
    ModelFileError,
    UnsafeFileError,
    UserInputError,
)
from infer_pack.hubert import HubertModel, load_content_encoder
from infer_pack.hubert_format import HubertArch, parse_conv_layers

ATOL = 1e-4  # reference/HUBERT_FORMAT.md section 9

# fairseq name -> transformers name, written independently of the loader's own mapping.
FAIRSEQ_TO_TRANSFORMERS = (
    (r"feature_extractor\.conv_layers\.(\d+)\.0\.weight", r"feature_extractor.conv_layers.\1.conv.weight"),
    (r"feature_extractor\.conv_layers\.0\.2\.(weight|bias)", r"feature_extractor.conv_layers.0.layer_norm.\1"),
    (r"layer_norm\.(weight|bias)", r"feature_projection.layer_norm.\1"),
    (r"post_extract_proj\.(weight|bias)", r"feature_projection.projection.\1"),
    (r"encoder\.pos_conv\.0\.bias", r"encoder.pos_conv_embed.conv.bias"),
    (r"encoder\.pos_conv\.0\.weight_g", r"encoder.pos_conv_embed.conv.parametrizations.weight.original0"),
    (r"encoder\.pos_conv\.0\.weight_v", r"encoder.pos_conv_embed.conv.parametrizations.weight.original1"),
    (r"encoder\.layers\.(\d+)\.self_attn\.(\w)_proj\.(weight|bias)", r"encoder.layers.\1.attention.\2_proj.\3"),
    (r"encoder\.layers\.(\d+)\.self_attn\.out_proj\.(weight|bias)", r"encoder.layers.\1.attention.out_proj.\2"),
    (r"encoder\.layers\.(\d+)\.self_attn_layer_norm\.(weight|bias)", r"encoder.layers.\1.layer_norm.\2"),
    (r"encoder\.layers\.(\d+)\.fc1\.(weight|bias)", r"encoder.layers.\1.feed_forward.intermediate_dense.\2"),
    (r"encoder\.layers\.(\d+)\.fc2\.(weight|bias)", r"encoder.layers.\1.feed_forward.output_dense.\2"),
    (r"mask_emb", r"masked_spec_embed"),
)
KEEP = re.compile(r"encoder\.layers\.\d+\.final_layer_norm\..*|encoder\.layer_norm\..*|final_proj\..*")


def to_transformers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if name == "label_embs_concat":
            continue
        if KEEP.fullmatch(name):
            out[name] = tensor
            continue
        for pattern, target in FAIRSEQ_TO_TRANSFORMERS:
            if re.fullmatch(pattern, name):
                out[re.sub(pattern, target, name)] = tensor
                break
        else:
            raise AssertionError(f"no transformers name for {name}")
    return out


def transformers_config(model_cfg: dict[str, Any], final_dim: int) -> dict[str, Any]:
    layers = parse_conv_layers(model_cfg["conv_feature_layers"])
    return {
        "model_type": "hubert",
        "architectures": ["HubertModelWithFinalProj"],
        "hidden_size": model_cfg["encoder_embed_dim"],
        "num_hidden_layers": model_cfg["encoder_layers"],
        "num_attention_heads": model_cfg["encoder_attention_heads"],
        "intermediate_size": model_cfg["encoder_ffn_embed_dim"],
        "conv_dim": [c for c, _, _ in layers],
        "conv_kernel": [k for _, k, _ in layers],
        "conv_stride": [s for _, _, s in layers],
        "conv_bias": False,
        "num_conv_pos_embeddings": model_cfg["conv_pos"],
        "num_conv_pos_embedding_groups": model_cfg["conv_pos_groups"],
        "feat_extract_norm": "group",
        "do_stable_layer_norm": False,
        "feat_proj_layer_norm": True,
        "hidden_act": "gelu",
        "feat_extract_activation": "gelu",
        "layer_norm_eps": 1e-5,
        "classifier_proj_size": final_dim,
        "mask_time_prob": 0.05,
    }


class FairseqDictionaryStub:
    def __init__(self, symbols: int) -> None:
        self.symbols = [f"u{i}" for i in range(symbols)]


def save_fairseq_checkpoint(path: Path, model_cfg: dict[str, Any], state: dict[str, torch.Tensor]) -> None:
    """A checkpoint whose pickle names fairseq.data.dictionary.Dictionary, as hubert_base.pt does."""
    module = types.ModuleType("fairseq.data.dictionary")
    FairseqDictionaryStub.__module__ = "fairseq.data.dictionary"
    FairseqDictionaryStub.__qualname__ = "Dictionary"
    module.Dictionary = FairseqDictionaryStub  # type: ignore[attr-defined]
    saved = {name: sys.modules.get(name) for name in ("fairseq", "fairseq.data", "fairseq.data.dictionary")}
    try:
        for name in saved:
            sys.modules[name] = module if name.endswith("dictionary") else types.ModuleType(name)
        torch.save(
            {
                "args": None,
                "cfg": {"model": model_cfg, "task": {"_name": "hubert_pretraining", "normalize": False}},
                "model": state,
                "criterion": {},
                "optimizer_history": [],
                "task_state": {"dictionaries": [FairseqDictionaryStub(504)]},
                "extra_state": {},
            },
            path,
        )
    finally:
        FairseqDictionaryStub.__module__ = __name__
        FairseqDictionaryStub.__qualname__ = "FairseqDictionaryStub"
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous


@pytest.fixture(scope="module")
def tiny(reference: Path) -> tuple[Path, dict[str, np.ndarray]]:
    checkpoint = reference_file(reference, "tiny_hubert.pt")
    with np.load(reference_file(reference, "tiny_hubert_io.npz")) as data:
        arrays = {key: data[key] for key in data.files}
    return checkpoint, arrays


def tiny_state_and_cfg(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    from infer_pack.hubert_format import FAIRSEQ_STUBS
    from infer_pack.torchio import safe_torch_load

    raw = safe_torch_load(path, allowed_globals=FAIRSEQ_STUBS)
    return dict(raw["model"]), dict(raw["cfg"]["model"])


def test_reproduces_reference_features(tiny: tuple[Path, dict[str, np.ndarray]]) -> None:
    path, ref = tiny
    encoder = load_content_encoder(path)
    wave = torch.from_numpy(ref["wav_16k"])
    v2 = encoder.extract(wave, "v2")
    v1 = encoder.extract(wave, "v1")
    assert v2.shape == (1, 49, 64) and v2.dtype == torch.float32
    assert v1.shape == (1, 49, 32)
    # The fixture has 2 layers: layer 12 (v2) and layer 9 (v1) are both capped at the last one.
    np.testing.assert_allclose(v2.numpy(), ref["last_layer"], atol=ATOL, rtol=0)
    np.testing.assert_allclose(v1.numpy(), ref["final_proj_last_layer"], atol=ATOL, rtol=0)
    upsampled = F.interpolate(v2.transpose(1, 2), scale_factor=2).transpose(1, 2)
    np.testing.assert_allclose(upsampled.numpy(), ref["last_layer_upsampled_2x"], atol=ATOL, rtol=0)
    model = encoder.model
    with torch.inference_mode():
        np.testing.assert_allclose(model.feature_extractor(wave).numpy(), ref["conv_features"], atol=ATOL, rtol=0)
        np.testing.assert_allclose(model(wave, 0).numpy(), ref["layer_0"], atol=ATOL, rtol=0)
        layer_1 = model(wave, 1)
        np.testing.assert_allclose(layer_1.numpy(), ref["layer_1"], atol=ATOL, rtol=0)
        assert model.final_proj is not None
        np.testing.assert_allclose(model.final_proj(layer_1).numpy(), ref["final_proj_layer_1"], atol=ATOL, rtol=0)
        np.testing.assert_allclose(model(wave, 2).numpy(), ref["layer_2"], atol=ATOL, rtol=0)


def test_batch_and_chunking_do_not_change_features(
    tiny: tuple[Path, dict[str, np.ndarray]], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = tiny
    encoder = load_content_encoder(path)
    model = encoder.model
    rng = np.random.default_rng(5)
    long = torch.from_numpy((0.3 * rng.standard_normal((2, 16000 * 3 + 123))).astype(np.float32))
    whole = encoder.extract(long, "v2")
    single = encoder.extract(long[1:], "v2")
    np.testing.assert_allclose(whole[1:].numpy(), single.numpy(), atol=1e-5, rtol=0)
    # Plain convolutions with a global GroupNorm, as fairseq computes the conv stack.
    with torch.inference_mode():
        x = long[:, None, :]
        for index, (_, _, stride) in enumerate(model.feature_extractor.layers):
            block = model.feature_extractor.conv_layers[index]
            x = F.conv1d(x, block[0].weight, stride=stride)
            if index == 0:
                x = F.group_norm(x, x.shape[1], block[2].weight, block[2].bias, eps=1e-5)
            x = F.gelu(x)
        expected = x.transpose(1, 2)
        monkeypatch.setattr(hubert, "CONV_CHUNK_FRAMES", 7)
        chunked = model.feature_extractor(long)
    assert chunked.shape == expected.shape == (2, (long.shape[1] - 400) // 320 + 1, 32)
    np.testing.assert_allclose(chunked.numpy(), expected.numpy(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("weights_file", ["pytorch_model.bin", "model.safetensors"])
def test_transformers_folder_gives_same_features(
    tiny: tuple[Path, dict[str, np.ndarray]], tmp_path: Path, weights_file: str
) -> None:
    path, ref = tiny
    state, model_cfg = tiny_state_and_cfg(path)
    folder = tmp_path / "hubert_base"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(transformers_config(model_cfg, 32)))
    renamed = to_transformers(state)
    if weights_file.endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in renamed.items()}, str(folder / weights_file))
    else:
        torch.save(renamed, folder / weights_file)
    wave = torch.from_numpy(ref["wav_16k"])
    from_folder = load_content_encoder(folder)
    from_pt = load_content_encoder(path)
    assert from_folder.source == str(folder)
    for version in ("v1", "v2"):
        np.testing.assert_array_equal(from_folder.extract(wave, version).numpy(), from_pt.extract(wave, version).numpy())
    np.testing.assert_allclose(from_folder.extract(wave, "v2").numpy(), ref["last_layer"], atol=ATOL, rtol=0)


def test_transformers_folder_loads_in_transformers_and_agrees(
    tiny: tuple[Path, dict[str, np.ndarray]], tmp_path: Path
) -> None:
    """The folder layout is the real one: transformers' own HubertModel loads it with no key left over."""
    transformers = pytest.importorskip("transformers")
    path, ref = tiny
    state, model_cfg = tiny_state_and_cfg(path)
    folder = tmp_path / "hubert_base"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(transformers_config(model_cfg, 32)))
    renamed = {k: v.float() for k, v in to_transformers(state).items() if not k.startswith("final_proj.")}
    torch.save(renamed, folder / "pytorch_model.bin")
    twin, info = transformers.HubertModel.from_pretrained(str(folder), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    wave = torch.from_numpy(ref["wav_16k"])
    with torch.inference_mode():
        hidden = twin.eval()(wave, output_hidden_states=True).hidden_states
    ours = load_content_encoder(folder)
    np.testing.assert_allclose(ours.extract(wave, "v2").numpy(), hidden[2].numpy(), atol=1e-5, rtol=0)
    with pytest.raises(ModelFileError, match="final_proj"):
        ours.extract(wave, "v1")  # this folder has no final_proj


def test_hostile_pickle_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> tuple[Any, tuple[str]]:
            return (Path.touch, (str(marker),))  # type: ignore[return-value]

    hostile = tmp_path / "hubert_base.pt"
    torch.save({"args": None, "cfg": {"model": {}}, "model": {}, "task_state": Exploit()}, hostile)
    with pytest.raises(UnsafeFileError):
        load_content_encoder(hostile)
    assert not marker.exists()


def test_missing_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(AssetMissingError) as missing:
        load_content_encoder(tmp_path / "hubert_base.pt")
    assert missing.value.asset == "hubert" and "hubert_base.pt" in str(missing.value)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ModelFileError, match="truncated.pt"):
        load_content_encoder(truncated)
    not_hubert = tmp_path / "other.pt"
    torch.save({"weight": {"x": torch.zeros(2)}}, not_hubert)
    with pytest.raises(ModelFileError, match="no HuBERT weights"):
        load_content_encoder(not_hubert)
    empty_folder = tmp_path / "folder"
    empty_folder.mkdir()
    with pytest.raises(ModelFileError, match="config.json"):
        load_content_encoder(empty_folder)


def test_bad_inputs(tiny: tuple[Path, dict[str, np.ndarray]]) -> None:
    encoder = load_content_encoder(tiny[0])
    with pytest.raises(UserInputError, match="too short"):
        encoder.extract(torch.zeros(1, 399), "v2")
    with pytest.raises(UserInputError, match="version"):
        encoder.extract(torch.zeros(1, 16000), "v3")  # type: ignore[arg-type]
    assert encoder.extract(torch.zeros(1, 400), "v2").shape == (1, 1, 64)


def test_conv_layer_spec_is_parsed_without_eval() -> None:
    assert parse_conv_layers("[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2") == HubertArch().conv_layers
    for hostile in ("__import__('os').system('true')", "[(1,2,3)] * 2 ** 40", "[(1, 2)]", "[]"):
        with pytest.raises((ValueError, SyntaxError)):
            parse_conv_layers(hostile)


def _keys_file(reference: Path) -> list[tuple[str, tuple[int, ...]]]:
    rows = []
    for line in reference_file(reference, "hubert_base_fairseq_keys.txt").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, shape, _ = line.split("\t")
        rows.append((name, tuple(json.loads(shape))))
    return rows


def test_full_size_architecture_matches_hubert_base_keys(reference: Path) -> None:
    expected = _keys_file(reference)
    model = HubertModel(HubertArch())
    actual = [(name, tuple(tensor.shape)) for name, tensor in model.state_dict().items()]
    assert actual == expected
    assert sum(t.numel() for t in model.state_dict().values()) == 94_697_600


def test_full_size_fairseq_checkpoint_loads_and_runs(reference: Path, tmp_path: Path) -> None:
    """Random fp16 HuBERT Base in the fairseq layout: loads, gives 256/768 dims, and agrees with transformers."""
    generator = torch.Generator().manual_seed(7)
    state: dict[str, torch.Tensor] = {}
    for name, shape in _keys_file(reference):
        if name.endswith("bias"):
            tensor = 0.02 * torch.randn(shape, generator=generator)
        elif len(shape) == 1 or name.endswith("weight_g"):
            tensor = 1.0 + 0.1 * torch.randn(shape, generator=generator)
        else:
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
            tensor = torch.randn(shape, generator=generator) / fan_in**0.5
        state[name] = tensor.half()
    model_cfg = {
        "_name": "hubert",
        "conv_feature_layers": "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2",
        "extractor_mode": "default",
        "conv_bias": False,
        "encoder_layers": 12,
        "encoder_embed_dim": 768,
        "encoder_ffn_embed_dim": 3072,
        "encoder_attention_heads": 12,
        "activation_fn": "gelu",
        "layer_norm_first": False,
        "conv_pos": 128,
        "conv_pos_groups": 16,
        "final_dim": 256,
        "untie_final_proj": True,
    }
    path = tmp_path / "hubert_base.pt"
    save_fairseq_checkpoint(path, model_cfg, state)
    with pytest.raises(Exception, match="fairseq"):  # what plain torch.load says about such a file
        torch.load(path, weights_only=True)
    encoder = load_content_encoder(path)
    assert encoder.model.encoder.layers[0].fc1.weight.dtype == torch.float32
    wave = 0.1 * torch.randn(1, 16000, generator=generator)
    v1 = encoder.extract(wave, "v1")
    v2 = encoder.extract(wave, "v2")
    assert v1.shape == (1, 49, 256) and v2.shape == (1, 49, 768)
    assert torch.isfinite(v1).all() and torch.isfinite(v2).all()

    transformers = pytest.importorskip("transformers")
    config = transformers.HubertConfig(**transformers_config(model_cfg, 256))
    twin = transformers.HubertModel(config).eval()
    renamed = {k: v.float() for k, v in to_transformers(state).items() if not k.startswith("final_proj.")}
    twin.load_state_dict(renamed, strict=True)
    with torch.inference_mode():
        hidden = twin(wave, output_hidden_states=True).hidden_states
        final_proj = F.linear(hidden[9], state["final_proj.weight"].float(), state["final_proj.bias"].float())
    np.testing.assert_allclose(v2.numpy(), hidden[12].numpy(), atol=ATOL, rtol=0)
    np.testing.assert_allclose(v1.numpy(), final_proj.numpy(), atol=ATOL, rtol=0)


def test_bfloat16_stays_close(tiny: tuple[Path, dict[str, np.ndarray]]) -> None:
    path, ref = tiny
    encoder = load_content_encoder(path, dtype=torch.bfloat16)
    wave = torch.from_numpy(ref["wav_16k"])
    v2 = encoder.extract(wave, "v2")
    assert v2.dtype == torch.float32
    error = np.abs(v2.numpy() - ref["last_layer"])
    # bfloat16 keeps 8 bits of mantissa; outputs have a standard deviation of about 1.
    assert error.mean() < 0.03 and error.max() < 0.25, (error.mean(), error.max())


def test_versions_read_layers_9_and_12_and_stop_there() -> None:
    arch = HubertArch(
        conv_layers=((8, 10, 5),) + ((8, 3, 2),) * 4 + ((8, 2, 2),) * 2,
        embed_dim=16,
        ffn_dim=32,
        attention_heads=2,
        encoder_layers=12,
        conv_pos=8,
        conv_pos_groups=2,
        final_proj_dim=4,
        label_rows=0,
    )
    torch.manual_seed(3)
    model = HubertModel(arch)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.3)
    encoder = hubert.ContentEncoder(model, "cpu", torch.float32)
    calls: list[int] = []
    for index, layer in enumerate(model.encoder.layers):
        layer.register_forward_hook(lambda *_, index=index: calls.append(index))
    wave = torch.randn(1, 4000)
    v1 = encoder.extract(wave, "v1")
    assert calls == list(range(9))
    calls.clear()
    v2 = encoder.extract(wave, "v2")
    assert calls == list(range(12))
    with torch.inference_mode():
        expected_v1 = model.final_proj(model(wave, 9))  # type: ignore[misc]
        assert not torch.equal(model(wave, 9), model(wave, 12))
        np.testing.assert_allclose(v2.numpy(), model(wave, 12).numpy(), atol=1e-6, rtol=0)
    np.testing.assert_allclose(v1.numpy(), expected_v1.numpy(), atol=1e-6, rtol=0)
    assert v1.shape == (1, 12, 4) and v2.shape == (1, 12, 16)
