"""Model tools: show / change info, merge, extract a small model (train.export and tools.api.models)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_checkpoint import tiny_voice
from test_models import tiny_config

from configs import load_config
from infer_pack.checkpoint import (
    build_synthesizer,
    load_voice,
    save_training_checkpoint,
    save_voice,
    voice_from_state_dict,
)
from infer_pack.errors import ModelFileError, UserInputError
from infer_pack.models import Synthesizer
from tools import api
from train.export import detect_training_layout


def test_show_and_change_info(tmp_path: Path) -> None:
    voice = tiny_voice("v1", use_f0=False)
    voice.extra = {"author": "me"}
    path = save_voice(tmp_path / "a.pth", voice)
    shown = api.show_voice_info(path=path)
    assert (shown.version, shown.sample_rate_tag, shown.use_f0, shown.info) == (
        "v1",
        "32k",
        False,
        "3epoch",
    )
    assert shown.speaker_count == 4 and shown.extra_keys == ("author",)
    assert "v1" in shown.summary() and "3epoch" in shown.summary()

    result = api.change_voice_info(path=path, info="a calm voice")
    assert result.path == path
    again = load_voice(path)
    assert again.info == "a calm voice" and again.extra == {"author": "me"}
    assert all(torch.equal(again.weights[k], voice.weights[k]) for k in voice.weights)
    copy = api.change_voice_info(path=path, info="copy", output_path=tmp_path / "b.pth")
    assert (
        load_voice(copy.path).info == "copy" and load_voice(path).info == "a calm voice"
    )
    assert not list(tmp_path.glob(".*.tmp"))
    with pytest.raises(UserInputError):
        api.show_voice_info(path=tmp_path / "missing.pth")


def test_merge_blends_weights_and_truncates_speakers(tmp_path: Path) -> None:
    a = tiny_voice("v2", use_f0=True)
    b_net = Synthesizer(
        *tiny_config()[:15], 6, *tiny_config()[16:], content_dim=768, use_f0=True
    )
    b = voice_from_state_dict(b_net.state_dict(), tiny_config(), True, "b", "v2", "32k")
    pa, pb = save_voice(tmp_path / "a.pth", a), save_voice(tmp_path / "b.pth", b)
    calls: list[tuple[int, int]] = []
    result = api.merge_voices(
        path_a=pa,
        path_b=pb,
        ratio_a=0.3,
        output_path=tmp_path / "m.pth",
        progress=lambda d, t, _: calls.append((d, t)),
    )
    merged = load_voice(result.path)
    key = "dec.conv_pre.weight"
    expected = (0.3 * a.weights[key].float() + 0.7 * b.weights[key].float()).half()
    assert torch.equal(merged.weights[key], expected)
    assert merged.weights["emb_g.weight"].shape[0] == 4  # min(4, 6) rows, as RVC does
    assert (
        merged.version == "v2"
        and merged.use_f0
        and merged.weights[key].dtype == torch.float16
    )
    assert calls and calls[-1][0] == calls[-1][1]
    build_synthesizer(merged)


def test_merge_refuses_other_architectures(tmp_path: Path) -> None:
    pa = save_voice(tmp_path / "a.pth", tiny_voice("v2", use_f0=True))
    pb = save_voice(tmp_path / "b.pth", tiny_voice("v1", use_f0=True))
    pc = save_voice(tmp_path / "c.pth", tiny_voice("v2", use_f0=False))
    with pytest.raises(
        ModelFileError, match="architectures are not the same.*A is v2.*B is v1"
    ):
        api.merge_voices(
            path_a=pa, path_b=pb, ratio_a=0.5, output_path=tmp_path / "m.pth"
        )
    with pytest.raises(ModelFileError, match="without pitch"):
        api.merge_voices(
            path_a=pa, path_b=pc, ratio_a=0.5, output_path=tmp_path / "m.pth"
        )
    with pytest.raises(UserInputError):
        api.merge_voices(
            path_a=pa, path_b=pa, ratio_a=1.5, output_path=tmp_path / "m.pth"
        )
    assert not (tmp_path / "m.pth").exists()


def _training_state(version: str, tag: str, use_f0: bool) -> dict[str, torch.Tensor]:
    """A full-size generator state dict with cheap deterministic values (fp16, like pretrained files)."""
    with torch.device("meta"):
        net = Synthesizer.from_rvc_config(load_config(version, tag), use_f0)  # type: ignore[arg-type]
    return {
        k: torch.full(tuple(t.shape), (i % 97) * 1e-3, dtype=torch.float16)
        for i, (k, t) in enumerate(net.state_dict().items())
    }


def test_extract_small_model_from_training_checkpoint(tmp_path: Path) -> None:
    state = _training_state("v2", "48k", False)
    ckpt = save_training_checkpoint(
        tmp_path / "G_2333.pth",
        model=state,
        optimizer=None,
        learning_rate=1e-4,
        iteration=7,
    )
    result = api.extract_small_model(
        checkpoint_path=ckpt, output_path=tmp_path / "w" / "voice.pth", info=""
    )
    assert (result.version, result.sample_rate_tag, result.use_f0) == (
        "v2",
        "48k",
        False,
    )
    voice = load_voice(result.path)
    raw = torch.load(result.path, weights_only=True)
    assert list(raw) == ["weight", "config", "info", "sr", "f0", "version"]
    assert (
        raw["sr"] == "48k"
        and raw["f0"] == 0
        and raw["version"] == "v2"
        and raw["info"] == "Extracted model."
    )
    assert raw["config"] == [
        1025,
        32,
        192,
        192,
        768,
        2,
        6,
        3,
        0,
        "1",
        [3, 7, 11],
        [[1, 3, 5]] * 3,
        [12, 10, 2, 2],
        512,
        [24, 20, 4, 4],
        109,
        256,
        48000,
    ]
    assert not any(k.startswith("enc_q.") for k in voice.weights)
    assert len(voice.weights) == 446  # keys_v2_48k_nof0
    assert torch.equal(
        voice.weights["flow.flows.0.pre.weight"], state["flow.flows.0.pre.weight"]
    )
    # Values given by the user are checked against the weights.
    with pytest.raises(ModelFileError, match="version mismatch"):
        api.extract_small_model(
            checkpoint_path=ckpt, output_path=tmp_path / "x.pth", version="v1"
        )
    with pytest.raises(ModelFileError, match="do not fit v2 40k"):
        api.extract_small_model(
            checkpoint_path=ckpt, output_path=tmp_path / "x.pth", sample_rate_tag="40k"
        )
    with pytest.raises(ModelFileError, match="f0 mismatch"):
        api.extract_small_model(
            checkpoint_path=ckpt, output_path=tmp_path / "x.pth", use_f0=True
        )
    with pytest.raises(ModelFileError, match="already a small voice model"):
        api.extract_small_model(
            checkpoint_path=result.path, output_path=tmp_path / "x.pth"
        )
    assert api.show_voice_info(path=result.path).trained_speakers is None  # no filelist beside G_2333.pth
    # Inside an experiment folder, its filelist names the speakers trained.
    from train.experiment import Experiment, FilelistEntry

    experiment = Experiment(tmp_path / "logs" / "duo")
    experiment.root.mkdir(parents=True)
    lines = [FilelistEntry(Path(f"{i}.wav"), Path(f"{i}.npy"), None, None, i % 2 + 3).to_line() for i in range(4)]
    experiment.filelist_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    inside = ckpt.replace(experiment.root / ckpt.name)
    duo = api.extract_small_model(checkpoint_path=inside, output_path=tmp_path / "w" / "duo.pth")
    shown = api.show_voice_info(path=duo.path)
    assert shown.trained_speakers == (3, 4) and "2 trained speakers (id 3, 4) of 109 embedding rows" in shown.summary()


def test_layout_detection_tells_32k_from_48k_by_the_posterior() -> None:
    state = _training_state("v1", "32k", False)
    assert detect_training_layout(state, "G.pth").sample_rate_tag == "32k"
    # Without enc_q, v1 32k and 48k no-pitch decoders have identical shapes: the rate must be given.
    small = {k: v for k, v in state.items() if not k.startswith("enc_q.")}
    with pytest.raises(UserInputError, match="32k, 48k"):
        detect_training_layout(small, "G.pth")
    assert detect_training_layout(small, "G.pth", sample_rate_tag="32k").version == "v1"


def test_info_counts_embedding_rows_and_recorded_trained_speakers(tmp_path: Path) -> None:
    """emb_g's row count is not a speaker count: an RVC voice has 109 rows whatever it was trained on."""
    unrecorded = save_voice(tmp_path / "rvc.pth", tiny_voice("v2", use_f0=True))
    shown = api.show_voice_info(path=unrecorded)
    assert shown.speaker_count == 4 and shown.trained_speakers is None
    assert "speakers: 4" not in shown.summary()
    assert "4 embedding rows" in shown.summary() and "not recorded" in shown.summary()

    from test_models import tiny_synth

    net = tiny_synth("v2", use_f0=True)
    recorded = voice_from_state_dict(net.state_dict(), tiny_config(), True, "", "v2", "32k", trained_speakers=[0])
    path = save_voice(tmp_path / "ours.pth", recorded)
    shown = api.show_voice_info(path=path)
    assert shown.trained_speakers == (0,)
    assert "1 trained speaker (id 0) of 4 embedding rows" in shown.summary()
    assert torch.load(path, weights_only=True)["trained_speakers"] == [0]

    other = voice_from_state_dict(net.state_dict(), tiny_config(), True, "", "v2", "32k", trained_speakers=[2])
    merged = api.merge_voices(path_a=path, path_b=save_voice(tmp_path / "two.pth", other), ratio_a=0.5,
                              output_path=tmp_path / "merged.pth")
    assert api.show_voice_info(path=merged.path).trained_speakers == (0, 2)
    unknown = api.merge_voices(path_a=path, path_b=unrecorded, ratio_a=0.5, output_path=tmp_path / "m2.pth")
    assert api.show_voice_info(path=unknown.path).trained_speakers is None
