"""The GPU path: the same reference numbers on CUDA, half precision within stated bounds, AMP training, DDP on nccl.

Every test here is marked `cuda` and skips when torch sees no CUDA device, so the suite passes on CPU-only
machines; `make gpu-check` runs them (and the benchmarks with `--device cuda`) where a GPU is present.
Measured differences go to the JSON file named by `$RVC_GPU_FIGURES` when it is set, so a GPU run leaves
its figures behind.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import reference_file, synthetic_voice

# A dry run of these tests' own code on a machine without a GPU: RVC_CUDA_TEST_DEVICE=cpu.
DEVICE = os.environ.get("RVC_CUDA_TEST_DEVICE", "cuda")

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(
        DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA device (torch.cuda.is_available() is False)"
    ),
]

FP32_TOLERANCE = 1e-4  # the CPU reference tests' tolerance; TF32 is switched off for these comparisons
FP16_RELATIVE_RMS = 0.05  # half precision: RMS of the difference over RMS of the reference audio (-26 dB)

Figures = Callable[[str, float], None]


@pytest.fixture(scope="module")
def figures() -> Iterator[Figures]:
    """Record a named measurement; written to $RVC_GPU_FIGURES (merged with what is there) at the end."""
    found: dict[str, float] = {}
    yield lambda name, value: found.__setitem__(name, float(value))
    target = os.environ.get("RVC_GPU_FIGURES")
    if target:
        path = Path(target)
        existing = json.loads(path.read_text()) if path.is_file() else {}
        existing.update(found)
        path.write_text(json.dumps(existing, indent=2, sort_keys=True))


@pytest.fixture(autouse=True)
def exact_float32() -> Iterator[None]:
    """TF32 matmuls/convolutions round to 10 mantissa bits: off, so fp32 means fp32 here."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _reference_tensors(reference: Path, name: str) -> dict[str, torch.Tensor]:
    with np.load(reference_file(reference, f"{name}_io.npz")) as data:
        return {k: torch.from_numpy(data[k]) for k in data.files if k != "config_json"}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_reference_voice_on_cuda_matches_rvc(reference: Path, dtype: torch.dtype, figures: Figures) -> None:
    from infer_pack.checkpoint import build_synthesizer, load_voice

    voice = load_voice(reference_file(reference, "ref_v2_40k_f0.pth"))
    ref = _reference_tensors(reference, "ref_v2_40k_f0")
    net = build_synthesizer(voice, DEVICE, dtype)
    with torch.inference_mode():
        audio, _, (z, _, m_p, _) = net.infer(
            ref["phone"].to(DEVICE, dtype), ref["phone_lengths"].to(DEVICE), ref["pitch"].to(DEVICE),
            ref["pitchf"].to(DEVICE), ref["sid"].to(DEVICE), 0.0, excitation_noise=False,
        )
    audio = audio.float().cpu()
    expected = ref["audio"]
    assert audio.shape == expected.shape and torch.isfinite(audio).all()
    error = (audio - expected).abs().max().item()
    relative_rms = ((audio - expected).pow(2).mean().sqrt() / expected.pow(2).mean().sqrt()).item()
    figures(f"reference_audio_max_abs_diff_{str(dtype).split('.')[-1]}", error)
    figures(f"reference_audio_relative_rms_{str(dtype).split('.')[-1]}", relative_rms)
    if dtype == torch.float32:
        assert error < FP32_TOLERANCE, f"max |diff| {error:.3g}"
        assert (m_p.float().cpu() - ref["m_p"]).abs().max().item() < FP32_TOLERANCE
    else:
        assert relative_rms < FP16_RELATIVE_RMS, f"relative RMS difference {relative_rms:.3g}"


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_conversion_on_cuda_agrees_with_cpu(
    reference: Path, tmp_path: Path, precision: str, figures: Figures
) -> None:
    """The whole pipeline on the GPU: same length and rate as on the CPU. The synthesiser's noise comes from
    each device's own generator, so samples differ; the loudness envelopes must agree."""
    from infer_pack.checkpoint import load_voice
    from infer_pack.hubert import load_content_encoder
    from infer_pack.pipeline import ConversionParams, VoiceConverter, Windows

    voice = load_voice(reference_file(reference, "ref_v2_40k_f0.pth"))
    windows = Windows(x_pad=0.1, x_query=6, x_center=38, x_max=41)
    dtype = torch.float16 if precision == "fp16" else torch.float32

    class Projected:
        def __init__(self, device: str) -> None:
            self.encoder = load_content_encoder(reference_file(reference, "tiny_hubert.pt"), device)
            generator = torch.Generator().manual_seed(1234)
            self.projection = (torch.randn(64, 768, generator=generator) / 8.0).to(device)

        def extract(self, wave: torch.Tensor, version: str) -> torch.Tensor:
            return self.encoder.extract(wave.to(self.projection.device), "v2") @ self.projection

    audio = synthetic_voice(3.0, 16000, seed=4)
    params = ConversionParams(f0_method="pm", index_rate=0.0, seed=0)
    cpu = VoiceConverter(voice, Projected("cpu"), windows=windows).convert(audio, params)
    gpu = VoiceConverter(voice, Projected(DEVICE), device=DEVICE, dtype=dtype, windows=windows).convert(audio, params)
    assert gpu[1] == cpu[1] == 40000 and gpu[0].shape == cpu[0].shape
    assert np.isfinite(gpu[0]).all()
    frame = 4000  # 0.1 s
    env_cpu = np.sqrt(np.mean(cpu[0][: cpu[0].size // frame * frame].reshape(-1, frame) ** 2, axis=1))
    env_gpu = np.sqrt(np.mean(gpu[0][: gpu[0].size // frame * frame].reshape(-1, frame) ** 2, axis=1))
    envelope_error = float(np.abs(env_gpu - env_cpu).max() / env_cpu.max())
    figures(f"conversion_envelope_error_{precision}", envelope_error)
    assert envelope_error < 0.25, f"loudness envelope differs by {envelope_error:.2f} of its peak"


def test_rmvpe_and_hubert_on_cuda_match_the_references(reference: Path, figures: Figures) -> None:
    from infer_pack.f0 import rmvpe as rmvpe_module
    from infer_pack.hubert import load_content_encoder

    with np.load(reference_file(reference, "rmvpe/ref_rmvpe_io.npz")) as data:
        ref = {key: data[key] for key in data.files}
    model = rmvpe_module.load_rmvpe(reference_file(reference, "rmvpe/ref_rmvpe_random.pt"), DEVICE)
    salience = model.salience(ref["wave"])
    rmvpe_error = float(np.abs(salience - ref["hidden"]).max())
    figures("rmvpe_salience_max_abs_diff_fp32", rmvpe_error)
    assert rmvpe_error < 1e-4

    with np.load(reference_file(reference, "tiny_hubert_io.npz")) as data:
        tiny = {key: data[key] for key in data.files}
    encoder = load_content_encoder(reference_file(reference, "tiny_hubert.pt"), DEVICE)
    features = encoder.extract(torch.from_numpy(tiny["wav_16k"]).to(DEVICE), "v2").cpu().numpy()
    hubert_error = float(np.abs(features - tiny["last_layer"]).max())
    figures("hubert_tiny_max_abs_diff_fp32", hubert_error)
    assert hubert_error < 1e-4


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_one_training_epoch_with_amp(tmp_path: Path, precision: str, figures: Figures) -> None:
    from test_train_fixtures import prepare_experiment, tiny_networks, tiny_setup

    from train.trainer import Trainer, TrainingOptions

    if precision == "bf16" and DEVICE == "cuda" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")
    experiment = prepare_experiment(tmp_path / "logs")
    options = TrainingOptions(epochs=1, batch_size=2, save_every_epochs=1, log_interval=1, device=DEVICE,
                              precision=precision, weights_dir=tmp_path / "weights")  # type: ignore[arg-type]
    net_g, net_d = tiny_networks(experiment)
    before = [p.detach().clone() for p in net_g.parameters()]
    result = Trainer(tiny_setup(experiment), options, networks=(net_g, net_d)).run()
    after = list(net_g.parameters())
    assert after[0].device.type == DEVICE
    assert result.global_step >= 2 and result.checkpoint_g is not None and result.voice_path is not None
    assert result.last_metrics is not None and np.isfinite(result.last_metrics.loss_g)
    changed = sum(not torch.equal(a.to(b.device), b.detach()) for a, b in zip(before, after, strict=True))
    assert changed > len(before) // 2, "the optimiser step did not reach most generator weights"
    figures(f"amp_{precision}_loss_g", result.last_metrics.loss_g)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.skipif(DEVICE != "cuda" or torch.cuda.device_count() < 2, reason="DDP on nccl needs 2 CUDA devices")
def test_two_nccl_ranks_stay_in_sync(tmp_path: Path) -> None:
    from test_ddp import WORLD, _worker
    from test_train_fixtures import prepare_experiment

    experiment = prepare_experiment(tmp_path / "logs")
    out = tmp_path / "out"
    out.mkdir()
    torch.multiprocessing.spawn(_worker, args=(str(experiment.root), str(out), _free_port(), "cuda"), nprocs=WORLD,
                                join=True)  # fmt: skip
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(WORLD)]
    assert ranks[0]["step"] == ranks[1]["step"] == 4
    np.testing.assert_allclose(ranks[0]["g"], ranks[1]["g"], rtol=1e-6)
    assert ranks[1]["checkpoint"] is None
