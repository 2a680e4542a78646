"""The synthesizer network: RVC's key layout for every config, and RVC's numbers on the reference models."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import reference_file

from configs import load_config
from infer_pack.checkpoint import build_synthesizer, load_voice
from infer_pack.discriminators import MultiPeriodDiscriminator
from infer_pack.models import Synthesizer
from infer_pack.nsf import SineGen

CONFIGS = list(itertools.product(["v1", "v2"], ["32k", "40k", "48k"], [True, False]))
TOLERANCE = 1e-4  # reference README §3: ~10x the measured float32 noise


def tiny_config(sample_rate: int = 32000) -> list[Any]:
    """A small but complete 18-value config (hop 8) for fast tests."""
    return [
        33,
        8,
        8,
        16,
        32,
        2,
        1,
        3,
        0,
        "1",
        [3],
        [[1, 3, 5]],
        [4, 2],
        16,
        [8, 4],
        4,
        8,
        sample_rate,
    ]


def tiny_synth(
    version: str = "v2", use_f0: bool = True, posterior: bool = True, seed: int = 0
) -> Synthesizer:
    torch.manual_seed(seed)
    net = Synthesizer(
        *tiny_config(),
        content_dim=256 if version == "v1" else 768,
        use_f0=use_f0,
        posterior=posterior,
    )
    # Random non-zero flow output layers, so the flow is not the identity.
    with torch.no_grad():
        for name, p in net.named_parameters():
            if ".post." in name:
                p.normal_(0, 0.05)
    return net


def read_key_list(path: Path) -> tuple[list[Any] | None, list[tuple[str, list[int]]]]:
    config = None
    keys = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("#"):
            continue
        parts = line.split("\t")
        if parts[0] == "config":
            config = json.loads(parts[1])
        else:
            keys.append((parts[0], json.loads(parts[1])))
    return config, keys


def layout(module: torch.nn.Module) -> list[tuple[str, list[int]]]:
    return [(k, list(t.shape)) for k, t in module.state_dict().items()]


@pytest.mark.parametrize("version,tag,use_f0", CONFIGS)
def test_inference_and_training_keys_match_rvc(
    reference: Path, version: str, tag: str, use_f0: bool
) -> None:
    f0_name = "f0" if use_f0 else "nof0"
    config, expected = read_key_list(
        reference_file(reference, f"keys_{version}_{tag}_{f0_name}.txt")
    )
    assert config is not None
    content_dim = 256 if version == "v1" else 768
    with torch.device("meta"):
        small = Synthesizer(
            *config, content_dim=content_dim, use_f0=use_f0, posterior=False
        )
        full = Synthesizer.from_rvc_config(load_config(version, tag), use_f0=use_f0)  # type: ignore[arg-type]
    # Same keys, shapes and order (order matters for optimizer state in training checkpoints).
    assert layout(small) == expected
    _, expected_full = read_key_list(
        reference_file(reference, f"train/G_{version}_{tag}_{f0_name}.txt")
    )
    assert layout(full) == expected_full
    assert full.rvc_config_list() == config


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_discriminator_keys_match_rvc(reference: Path, version: str) -> None:
    _, expected = read_key_list(reference_file(reference, f"train/D_{version}.txt"))
    with torch.device("meta"):
        net = MultiPeriodDiscriminator(version)  # type: ignore[arg-type]
    assert layout(net) == expected


def _run_reference(reference: Path, name: str, fold_weight_norm: bool) -> None:
    voice = load_voice(reference_file(reference, f"{name}.pth"))
    data = np.load(reference_file(reference, f"{name}_io.npz"))
    tensors = {
        k: torch.from_numpy(data[k])
        for k in data.files
        if data[k].dtype != np.dtype("<U1") and k != "config_json"
    }
    assert json.loads(str(data["config_json"])) == voice.model_config
    net = build_synthesizer(
        voice, "cpu", torch.float32, fold_weight_norm=fold_weight_norm
    )
    pitch = tensors["pitch"] if voice.use_f0 else None
    pitchf = tensors["pitchf"] if voice.use_f0 else None
    with torch.inference_mode():
        audio, x_mask, (z, z_p, m_p, logs_p) = net.infer(
            tensors["phone"],
            tensors["phone_lengths"],
            pitch,
            pitchf,
            tensors["sid"],
            0.0,
            excitation_noise=False,
        )
        got = {
            "g": net.emb_g(tensors["sid"]).unsqueeze(-1),
            "m_p": m_p,
            "logs_p": logs_p,
            "x_mask": x_mask,
            "z_p": z_p,
            "z": z,
            "audio": audio,
        }
        if voice.use_f0:
            got["nsf_source"] = net.dec.m_source(pitchf, net.dec.upp, noise=False)
            # The float64 phase used for ONNX export agrees with RVC's float32 arithmetic.
            net.dec.m_source.l_sin_gen.exact_phase = True
            exact = net.dec.m_source(pitchf, net.dec.upp, noise=False)
            net.dec.m_source.l_sin_gen.exact_phase = False
            assert (exact - tensors["nsf_source"]).abs().max().item() < TOLERANCE
    for key, value in got.items():
        expected = tensors[key]
        assert value.shape == expected.shape, key
        err = (value - expected).abs().max().item()
        assert err < TOLERANCE, f"{key}: max |diff| {err:.3g}"


def test_reference_v2_40k_f0_reproduces_rvc(reference: Path) -> None:
    _run_reference(reference, "ref_v2_40k_f0", fold_weight_norm=True)


def test_reference_v1_32k_nof0_slim_reproduces_rvc(reference: Path) -> None:
    # Unfolded weight norm here, folded above: both paths must give RVC's numbers.
    _run_reference(reference, "ref_v1_32k_nof0_slim", fold_weight_norm=False)


def test_sine_excitation_is_a_sine_at_f0_and_silent_when_unvoiced() -> None:
    sample_rate, upp = 16000, 160
    f0 = torch.full((1, 100), 200.0)
    f0[:, 60:] = 0.0
    sine, uv, noise = SineGen(sample_rate)(f0, upp, noise=False)
    assert sine.shape == (1, 100 * upp, 1)
    assert torch.all(noise == 0)
    voiced = sine[0, : 60 * upp, 0].double().numpy()
    t = np.arange(voiced.size) / sample_rate
    # RVC's running phase already includes the first sample: phase(n) = (n + 1) * f0 / sr.
    np.testing.assert_allclose(
        voiced, 0.1 * np.sin(2 * np.pi * 200.0 * (t + 1 / sample_rate)), atol=2e-4
    )
    assert torch.all(sine[0, 60 * upp :, 0] == 0)
    assert torch.all(uv[0, : 60 * upp] == 1) and torch.all(uv[0, 60 * upp :] == 0)
    noisy, _, _ = SineGen(sample_rate)(f0, upp, noise=True)
    unvoiced_std = noisy[0, 60 * upp :, 0].std().item()
    assert math.isclose(unvoiced_std, 0.1 / 3, rel_tol=0.1)


@pytest.mark.parametrize("use_f0", [True, False])
def test_folding_weight_norm_keeps_the_output(use_f0: bool) -> None:
    net = tiny_synth(use_f0=use_f0, posterior=False).eval()
    phone = torch.randn(2, 20, 768)
    lengths = torch.tensor([20, 15])
    pitchf = torch.linspace(100, 300, 20).repeat(2, 1) if use_f0 else None
    pitch = torch.randint(1, 255, (2, 20)) if use_f0 else None
    sid = torch.tensor([0, 3])
    noise = torch.randn(2, 8, 20)
    with torch.inference_mode():
        before, mask, _ = net.infer(
            phone, lengths, pitch, pitchf, sid, noise=noise, excitation_noise=False
        )
        net.remove_weight_norm()
        after, _, _ = net.infer(
            phone, lengths, pitch, pitchf, sid, noise=noise, excitation_noise=False
        )
    assert before.shape == (2, 1, 20 * 8)
    assert mask[1, 0, 15:].sum() == 0
    torch.testing.assert_close(before, after, atol=1e-5, rtol=1e-4)
    assert not any(k.endswith("weight_g") for k in net.state_dict())


@pytest.mark.parametrize("version,use_f0", [("v1", True), ("v2", False)])
def test_training_forward_shapes_and_gradients(version: str, use_f0: bool) -> None:
    net = tiny_synth(version, use_f0=use_f0)
    dim = 256 if version == "v1" else 768
    b, frames = 2, 30
    phone = torch.randn(b, frames, dim)
    lengths = torch.tensor([30, 24])
    pitch = torch.randint(1, 255, (b, frames)) if use_f0 else None
    pitchf = torch.rand(b, frames) * 200 + 100 if use_f0 else None
    spec = torch.rand(b, 33, frames)
    y_hat, ids_slice, x_mask, y_mask, (z, z_p, m_p, logs_p, m_q, logs_q) = net(
        phone, lengths, pitch, pitchf, spec, lengths, torch.tensor([0, 1])
    )
    assert y_hat.shape == (b, 1, 8 * 8)  # segment_size frames x hop
    assert ids_slice.shape == (b,) and bool(torch.all(ids_slice <= lengths - 8))
    assert z.shape == z_p.shape == m_q.shape == logs_q.shape == (b, 8, frames)
    assert m_p.shape == logs_p.shape == (b, 8, frames)
    assert x_mask.shape == y_mask.shape == (b, 1, frames)
    y_hat.abs().mean().backward()
    assert net.dec.conv_pre.weight.grad is not None
    assert net.dec.ups[0].weight_g.grad is not None


def test_discriminator_outputs() -> None:
    net = MultiPeriodDiscriminator("v1")
    y = torch.randn(1, 1, 1000)
    real, fake, fmap_r, _ = net(y, y * 0.5)
    assert len(real) == len(fake) == 7
    assert [len(f) for f in fmap_r] == [7] + [6] * 6
    assert all(r.dim() == 2 for r in real)


@pytest.mark.parametrize(("version", "sample_rate"), [("v2", "40k"), ("v2", "48k"), ("v1", "32k")])
def test_decoding_a_window_equals_that_part_of_the_full_output(version: str, sample_rate: str) -> None:
    # Real-size decoders (the 48k one has other upsample kernels): `keep` decodes only the window
    # plus the computed receptive field; same random draws, same samples.
    torch.manual_seed(5)
    net = Synthesizer.from_rvc_config(load_config(version, sample_rate), use_f0=True, posterior=False).eval()
    net.remove_weight_norm()
    frames, upp = 160, net.dec.upp
    phone = torch.randn(1, frames, 768 if version == "v2" else 256)
    lengths = torch.tensor([frames])
    pitchf = 150 + 100 * torch.rand(1, frames)
    pitch = torch.randint(1, 255, (1, frames))
    sid = torch.tensor([0])

    def run(keep: tuple[int, int] | None, window: int | None = None) -> torch.Tensor:
        generator = torch.Generator().manual_seed(11)
        with torch.inference_mode():
            return net.infer(phone, lengths, pitch, pitchf, sid, generator=generator, keep=keep, window=window)[0]

    full = run(None)
    assert 8 <= net.dec.context_frames <= 30
    # (keep, window): a middle window, both edges, everything, and pieces of 37 / 7 frames.
    cases = [((50, 110), None), ((0, 40), None), ((130, frames), None), ((0, frames), None),
             ((0, frames), 37), ((20, 150), 7)]  # fmt: skip
    for (start, stop), window in cases:
        part = run((start, stop), window)
        assert part.shape == (1, 1, (stop - start) * upp)
        err = (part - full[:, :, start * upp : stop * upp]).abs().max().item()
        assert err < 1e-6, f"keep=({start}, {stop}), window={window}: max |diff| {err:.3g}"
    with pytest.raises(ValueError, match="keep"):
        run((100, 100))
    with pytest.raises(ValueError, match="window"):
        run(None, 0)


def test_a_window_without_its_receptive_field_differs() -> None:
    # The check above can fail: with too little context the window's edges change.
    from infer_pack.models import Generator

    net = tiny_synth(use_f0=True, posterior=False).eval()
    phone, lengths = torch.randn(1, 60, 768), torch.tensor([60])
    pitchf, pitch, sid = torch.full((1, 60), 200.0), torch.randint(1, 255, (1, 60)), torch.tensor([0])
    noise = torch.randn(1, 8, 60)
    with torch.inference_mode():
        full = net.infer(phone, lengths, pitch, pitchf, sid, noise=noise, excitation_noise=False)[0]
        original = Generator.context_frames
        try:
            Generator.context_frames = property(lambda self: 0)  # type: ignore[method-assign,assignment]
            part = net.infer(phone, lengths, pitch, pitchf, sid, noise=noise, excitation_noise=False, keep=(20, 40))[0]
        finally:
            Generator.context_frames = original  # type: ignore[method-assign]
    assert (part - full[:, :, 20 * 8 : 40 * 8]).abs().max().item() > 1e-4
