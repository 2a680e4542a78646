"""Voice .pth, training checkpoints and pretrained files: formats, safety, clear mismatch errors."""

from __future__ import annotations

import pickle
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from conftest import reference_file
from test_models import tiny_config, tiny_synth

from configs import load_config
from infer_pack.checkpoint import (
    VoiceModel,
    build_synthesizer,
    load_pretrained_state,
    load_training_checkpoint,
    load_voice,
    save_training_checkpoint,
    save_voice,
    voice_from_state_dict,
)
from infer_pack.errors import ModelFileError, UnsafeFileError
from infer_pack.models import Synthesizer


def tiny_voice(version: str = "v2", use_f0: bool = True) -> VoiceModel:
    net = tiny_synth(version, use_f0=use_f0)
    return voice_from_state_dict(
        net.state_dict(), tiny_config(), use_f0, "3epoch", version, "32k"
    )


def assert_same_voice(a: VoiceModel, b: VoiceModel) -> None:
    assert list(a.weights) == list(b.weights)
    for key in a.weights:
        assert a.weights[key].dtype == b.weights[key].dtype
        assert torch.equal(a.weights[key], b.weights[key]), key
    assert (a.config, a.info, a.sample_rate_tag, a.use_f0, a.version) == (
        b.config,
        b.info,
        b.sample_rate_tag,
        b.use_f0,
        b.version,
    )
    assert a.extra == b.extra


def test_reference_voice_fields(reference: Path) -> None:
    voice = load_voice(reference_file(reference, "ref_v2_40k_f0.pth"))
    assert (voice.version, voice.use_f0, voice.sample_rate_tag, voice.info) == (
        "v2",
        True,
        "40k",
        "1epoch",
    )
    assert (
        voice.sample_rate == 40000
        and voice.speaker_count == 109
        and voice.content_dim == 768
    )
    assert all(t.dtype == torch.float16 for t in voice.weights.values())
    assert not any(k.startswith("enc_q.") for k in voice.weights)


def test_save_load_round_trip_is_identity(reference: Path, tmp_path: Path) -> None:
    original = load_voice(reference_file(reference, "ref_v1_32k_nof0_slim.pth"))
    original.extra = {"author": "someone", "speakers_id": 1}
    target = tmp_path / "weights" / "copy.pth"
    save_voice(target, original)
    again = load_voice(target)
    assert_same_voice(original, again)
    raw = torch.load(target, weights_only=True)
    assert list(raw) == [
        "weight",
        "config",
        "info",
        "sr",
        "f0",
        "version",
        "author",
        "speakers_id",
    ]
    assert isinstance(raw, OrderedDict) and raw["sr"] == "32k" and raw["f0"] == 0
    assert not list(tmp_path.glob("weights/.*.tmp"))


def test_voice_from_training_state_drops_posterior_and_halves() -> None:
    net = tiny_synth("v1", use_f0=False)
    voice = voice_from_state_dict(
        net.state_dict(), tiny_config(), False, "7epoch", "v1"
    )
    assert not any(k.startswith("enc_q.") for k in voice.weights)
    assert all(t.dtype == torch.float16 for t in voice.weights.values())
    assert voice.sample_rate_tag == "32k"
    rvc = voice_from_state_dict(
        Synthesizer.from_rvc_config(load_config("v1", "40k"), use_f0=True).state_dict(),
        load_config("v1", "40k"),
        True,
        "1epoch",
    )
    assert (
        rvc.config[:2] == [1025, 32] and rvc.config[-1] == 40000 and rvc.version == "v1"
    )


def test_old_files_without_f0_and_version_mean_pitch_v1(tmp_path: Path) -> None:
    voice = tiny_voice("v1", use_f0=True)
    old = {"weight": voice.weights, "config": voice.config, "info": "old", "sr": "32k"}
    path = tmp_path / "old.pth"
    torch.save(old, path)
    loaded = load_voice(path)
    assert loaded.use_f0 is True and loaded.version == "v1"
    build_synthesizer(loaded)


def test_built_synthesizer_matches_training_network(tmp_path: Path) -> None:
    net = tiny_synth("v2", use_f0=True).eval()
    path = save_voice(
        tmp_path / "v.pth",
        voice_from_state_dict(net.state_dict(), tiny_config(), True, "", "v2", "32k"),
    )
    built = build_synthesizer(load_voice(path))
    assert not built.training and not hasattr(built, "enc_q")
    phone, lengths = torch.randn(1, 12, 768), torch.tensor([12])
    pitch, pitchf = torch.full((1, 12), 50), torch.full((1, 12), 180.0)
    with torch.inference_mode():
        ref = (
            net.half()
            .float()
            .infer(
                phone,
                lengths,
                pitch,
                pitchf,
                torch.tensor([1]),
                0.0,
                excitation_noise=False,
            )[0]
        )
        out = built.infer(
            phone,
            lengths,
            pitch,
            pitchf,
            torch.tensor([1]),
            0.0,
            excitation_noise=False,
        )[0]
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)


class _Hostile:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (str(self.marker), "w"))


def test_hostile_pickle_is_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "pwned.txt"
    path = tmp_path / "evil.pth"
    torch.save({"weight": {}, "config": _Hostile(marker)}, path)
    assert not marker.exists()
    with pytest.raises(UnsafeFileError) as info:
        load_voice(path)
    assert str(path) in str(info.value)
    assert not marker.exists()
    # A legacy (non-zip) pickle is refused the same way.
    legacy = tmp_path / "evil_legacy.pth"
    legacy.write_bytes(pickle.dumps({"config": _Hostile(marker)}, protocol=2))
    with pytest.raises(ModelFileError):
        load_voice(legacy)
    assert not marker.exists()


def test_truncated_and_empty_files(tmp_path: Path) -> None:
    good = save_voice(tmp_path / "good.pth", tiny_voice())
    data = good.read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError) as info:
        load_voice(cut)
    assert "cut.pth" in str(info.value)
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(ModelFileError):
        load_voice(empty)


def test_version_mismatch_is_named(tmp_path: Path) -> None:
    voice = tiny_voice("v1", use_f0=True)
    voice.version = "v2"  # the weights take 256-dim features
    path = save_voice(tmp_path / "wrong.pth", voice)
    with pytest.raises(ModelFileError, match="version mismatch"):
        load_voice(path)


def test_weights_not_fitting_config_are_named(tmp_path: Path) -> None:
    voice = tiny_voice("v2", use_f0=True)
    voice.config[13] = 32  # upsample_initial_channel
    with pytest.raises(ModelFileError, match=r"shape mismatch.*dec\."):
        build_synthesizer(voice)


def test_training_checkpoint_round_trip(tmp_path: Path) -> None:
    net = tiny_synth("v2", use_f0=False)
    optim = torch.optim.AdamW(net.parameters(), lr=1e-4, betas=(0.8, 0.99), eps=1e-9)
    net.dec.conv_pre.weight.sum().backward()
    optim.step()
    path = save_training_checkpoint(
        tmp_path / "G_10.pth",
        model=net,
        optimizer=optim,
        learning_rate=9e-5,
        iteration=10,
    )
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"model", "iteration", "optimizer", "learning_rate"}
    ckpt = load_training_checkpoint(path)
    assert ckpt.iteration == 10 and ckpt.learning_rate == 9e-5
    assert ckpt.optimizer is not None and ckpt.optimizer["param_groups"][0][
        "betas"
    ] == (0.8, 0.99)
    fresh = tiny_synth("v2", use_f0=False, seed=5)
    fresh_optim = torch.optim.AdamW(fresh.parameters(), lr=1e-4)
    fresh.load_state_dict(ckpt.model)
    fresh_optim.load_state_dict(ckpt.optimizer)
    for (k, a), b in zip(
        net.state_dict().items(), fresh.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), k
    with pytest.raises(ModelFileError, match="training checkpoint"):
        load_voice(path)


def test_pretrained_load_is_strict_and_names_the_mismatch(tmp_path: Path) -> None:
    g = tiny_synth("v1", use_f0=True)
    path = save_training_checkpoint(
        tmp_path / "f0G32k.pth",
        model=g,
        optimizer=None,
        learning_rate=1e-4,
        iteration=1,
    )
    target = tiny_synth("v1", use_f0=True, seed=3)
    state = load_pretrained_state(path, target, "generator")
    assert torch.equal(target.emb_g.weight, state["emb_g.weight"])
    with pytest.raises(ModelFileError, match="v1 model but a v2 model"):
        load_pretrained_state(path, tiny_synth("v2", use_f0=True), "generator")
    with pytest.raises(ModelFileError, match="pitch"):
        load_pretrained_state(path, tiny_synth("v1", use_f0=False), "generator")
    small = tmp_path / "small.pth"
    without_q = {k: v for k, v in g.state_dict().items() if not k.startswith("enc_q.")}
    save_training_checkpoint(
        small, model=without_q, optimizer=None, learning_rate=1e-4, iteration=1
    )
    with pytest.raises(ModelFileError, match="enc_q"):
        load_pretrained_state(small, tiny_synth("v1", use_f0=True), "generator")


def test_voice_with_leftover_posterior_still_builds() -> None:
    # Some tools keep enc_q in voice files; RVC's loader ignores it.
    voice = tiny_voice("v2", use_f0=False)
    full = tiny_synth("v2", use_f0=False).state_dict()
    voice.weights.update(
        {k: v.half() for k, v in full.items() if k.startswith("enc_q.")}
    )
    net = build_synthesizer(voice)
    assert not hasattr(net, "enc_q")


def test_malformed_entries_give_model_file_error(tmp_path: Path) -> None:
    path = tmp_path / "odd.pth"
    weights = {
        "emb_g.weight": torch.zeros(2, 2),
        "enc_p.emb_phone.weight": torch.zeros(3),
    }  # 1-D: no feature axis
    torch.save({"weight": weights, "config": [0] * 18, "f0": "yes"}, path)
    with pytest.raises(ModelFileError, match="malformed"):
        load_voice(path)
    torch.save({"weight": {"a": torch.zeros(1)}, "config": [0] * 5}, path)
    with pytest.raises(ModelFileError, match="18 values"):
        load_voice(path)
