"""UVR5 VR separation against numbers made once by RVC's own code (branch 20240604, commit d60cd3d0,
librosa 0.9.1): tests/data/vr_rvc_20240604.npz, written by tests/data/vr_reference.py. Band analysis,
band synthesis and whole separations with two random-weight models of the real layouts (HP5 and
VR-DeEchoNormal) must agree within float noise (>= 120 dB SNR)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Literal

import numpy as np
import pytest
import torch

from infer_pack.separation import bands
from infer_pack.separation.vr import load_vr_separator

DATA = Path(__file__).parent / "data"
P = bands.PARAMS_4BAND_V2
FLOAT_NOISE_DB = 120.0


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("vr_reference", DATA / "vr_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


REF = _script()


@pytest.fixture(scope="module")
def fixture() -> dict[str, np.ndarray]:
    with np.load(DATA / "vr_rvc_20240604.npz") as data:
        return {k: data[k] for k in data.files}


def snr_db(ours: np.ndarray, reference: np.ndarray) -> float:
    assert ours.shape == reference.shape
    error = np.sum(np.abs(ours.astype(np.complex128) - reference) ** 2)
    return float(10 * np.log10(np.sum(np.abs(reference.astype(np.complex128)) ** 2) / max(error, 1e-300)))


def test_fixture_is_the_scripts_input_and_librosa_0_9_1(fixture: dict[str, np.ndarray]) -> None:
    np.testing.assert_array_equal(fixture["input"], REF.test_input())
    assert str(fixture["librosa_version"]) == "0.9.1"


def test_band_analysis_matches_rvc(fixture: dict[str, np.ndarray]) -> None:
    waves = bands.band_waves(fixture["input"], P)
    assert [w.shape[1] for w in waves] == list(fixture["band_lengths"])  # librosa's ceil(n * ratio) per band
    combined = bands.combine([bands.stft(w, b.n_fft, b.hop_length) for w, b in zip(waves, P.bands)], P)
    assert snr_db(combined, fixture["combined"]) >= FLOAT_NOISE_DB


def test_soxr_bands_would_not_match() -> None:
    """The check above can fail: the band resampler alone moves the stacked spectrogram far from RVC's."""
    x = REF.test_input()
    poly = bands.resample(x, 44100, 14700, "polyphase")
    import soxr

    other = soxr.resample(np.ascontiguousarray(x.T), 44100, 14700, quality="HQ").T
    assert snr_db(other[:, : poly.shape[1]], poly) < 80.0


def test_band_synthesis_matches_rvc(fixture: dict[str, np.ndarray]) -> None:
    """A fixed mask (no network): mirroring, four inverse STFTs, the crossfades and RVC's FFT resampling."""
    combined = fixture["combined"]
    masked = combined * REF.fixed_mask(combined.shape)
    high_end = bands.input_high_end(bands.band_spectrograms(fixture["input"], P)[-1], P)
    wave = bands.to_wave(masked, P, bands.mirror_high_end(masked, high_end, P))
    assert wave.shape == fixture["masked_wave"].shape == (2, 480 * (combined.shape[2] - 1))
    assert snr_db(wave, fixture["masked_wave"]) >= FLOAT_NOISE_DB


def _model_file(path: Path, deecho: bool, seed: int) -> Path:
    """Our network of the real layout filled with the script's seeded weights, saved as RVC's files are."""
    from infer_pack.separation.vr_nets import CascadedASPPNet
    from infer_pack.separation.vr_nets_new import CascadedNet

    net = CascadedNet(P.n_fft, 48) if deecho else CascadedASPPNet(P.n_fft)
    state = net.state_dict()
    shapes = {k: tuple(v.shape) for k, v in state.items() if v.is_floating_point()}
    weights = REF.seeded_weights(shapes, seed)
    torch.save({k: torch.from_numpy(weights[k]) if k in weights else v for k, v in state.items()}, path)
    return path


@pytest.mark.parametrize(("prefix", "engine"), [("hp5", "torch"), ("hp5", "onnx"), ("deecho", "torch")])
def test_vr_separation_matches_rvc(prefix: str, engine: Literal["torch", "onnx"], fixture: dict[str, np.ndarray],
                                   tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("RVC_ONNX_CACHE", str(tmp_path / "onnx"))
    _, name, seed = next(m for m in REF.MODELS if m[0] == prefix)
    path = _model_file(tmp_path / f"{name}.pth", prefix == "deecho", seed)
    separator = load_vr_separator(path, aggressiveness=REF.AGG / 100, engine=engine)
    assert separator.engine == engine
    stems = separator.separate(fixture["input"])
    # HP5 predicts the accompaniment, DeEcho the dry vocals; the other stem is the mixture minus it
    predicted, rest = (stems.vocals, stems.instrumental) if prefix == "deecho" else (stems.instrumental, stems.vocals)
    rvc_length = fixture[f"{prefix}_predicted"].shape[1]
    assert predicted.shape[1] == fixture["input"].shape[1] > rvc_length  # we keep the input's length ...
    assert not predicted[:, rvc_length:].any()  # ... with silence past RVC's last whole hop
    assert snr_db(predicted[:, :rvc_length], fixture[f"{prefix}_predicted"]) >= FLOAT_NOISE_DB
    assert snr_db(rest[:, :rvc_length], fixture[f"{prefix}_rest"]) >= FLOAT_NOISE_DB
    if prefix == "hp5" and engine == "torch":  # RVC's own length on request, the same samples
        as_rvc = load_vr_separator(path, aggressiveness=REF.AGG / 100, output_length="whole_hops")
        np.testing.assert_array_equal(as_rvc.separate(fixture["input"]).instrumental, predicted[:, :rvc_length])


def test_rvc_length_policy_stops_at_the_last_whole_hop() -> None:
    """RVC gives 440,640 samples for 441,000 (10 s): the bands invert up to the top band's last whole hop."""
    assert bands.whole_hop_length(441_000, P) == 440_640
    wave = np.zeros((2, 441_000), dtype=np.float32)
    assert bands.to_wave(bands.combine(bands.band_spectrograms(wave, P), P), P).shape == (2, 440_640)
