"""Spectrogram / mel against RVC's own outputs (reference/train/ref_train_numeric.npz)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import reference_file

from configs import load_config
from train.mel import EPSILONS, MelTransform, slaney_mel_filterbank

RATES = ("32k", "40k", "48k")


@pytest.fixture(scope="module")
def numeric(reference: Path) -> tuple[dict[str, np.ndarray], dict]:
    arrays = np.load(reference_file(reference, "train/ref_train_numeric.npz"))
    meta = json.loads(reference_file(reference, "train/ref_train_numeric.json").read_text())
    return {k: arrays[k] for k in arrays.files}, meta


def transform(meta: dict, rate: str, mode: str) -> MelTransform:
    m = meta["mel"][rate]
    return MelTransform(m["sampling_rate"], m["n_fft"], m["hop"], m["win"], m["n_mels"], mode=mode)  # type: ignore[arg-type]


@pytest.mark.parametrize("rate", RATES)
def test_slaney_filterbank_equals_librosa_output(numeric, rate: str) -> None:
    arrays, meta = numeric
    m = meta["mel"][rate]
    basis = slaney_mel_filterbank(m["sampling_rate"], m["n_fft"], m["n_mels"])
    assert basis.dtype == np.float32
    np.testing.assert_allclose(basis, arrays[f"mel_basis_{rate}"], rtol=0, atol=1e-9)


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("mode", ["head", "classic"])
def test_spectrogram_and_mel_match_rvc(numeric, rate: str, mode: str) -> None:
    arrays, meta = numeric
    mel = transform(meta, rate, mode)
    wave = torch.from_numpy(arrays[f"wave_{rate}"]).unsqueeze(0)  # [1, T]
    spec = mel.spectrogram(wave)
    ref_spec = arrays[f"spec_{rate}_{mode}"]
    assert spec.shape == ref_spec.shape
    np.testing.assert_allclose(spec.numpy(), ref_spec, rtol=1e-5, atol=1e-4)
    from_spec = mel.mel_from_spectrogram(torch.from_numpy(ref_spec))
    np.testing.assert_allclose(from_spec.numpy(), arrays[f"mel_from_spec_{rate}_{mode}"], atol=1e-5)
    np.testing.assert_allclose(mel.mel(wave).numpy(), arrays[f"mel_from_wave_{rate}_{mode}"], atol=1e-4)


def test_epsilon_modes_differ_on_quiet_bins(numeric) -> None:
    arrays, meta = numeric
    wave = torch.from_numpy(arrays["wave_40k"]).unsqueeze(0)
    head = transform(meta, "40k", "head").mel(wave)
    classic = transform(meta, "40k", "classic").mel(wave)
    # the first 10 % of the signal is digital silence: the log clip decides those bins
    assert float((head - classic).abs().max()) > 0.5
    assert EPSILONS["head"].log_clip == 2e-6 and EPSILONS["classic"].log_clip == 1e-5


def test_from_config_uses_data_section() -> None:
    cfg = load_config("v2", "48k")
    mel = MelTransform.from_data_section(cfg.data)
    frames = mel.mel(torch.zeros(1, 480 * 7)).shape
    assert frames == (1, 128, 7)
    with pytest.raises(ValueError):
        MelTransform.from_data_section(cfg.data, mode="other")  # type: ignore[arg-type]
