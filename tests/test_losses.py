"""Loss functions against RVC's outputs on seeded inputs (reference/train/ref_train_numeric.*)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import reference_file

from train.losses import (
    discriminator_loss,
    feature_loss,
    generator_loss,
    kl_loss,
    mel_loss,
)


@pytest.fixture(scope="module")
def arrays(reference: Path) -> dict[str, torch.Tensor]:
    data = np.load(reference_file(reference, "train/ref_train_numeric.npz"))
    return {k: torch.from_numpy(data[k]) for k in data.files}


@pytest.fixture(scope="module")
def expected(reference: Path) -> dict:
    return json.loads(reference_file(reference, "train/ref_train_numeric.json").read_text())["losses"]


def test_feature_loss(arrays, expected) -> None:
    real = [[arrays[f"fm_r_d{d}_l{layer}"] for layer in range(2)] for d in range(2)]
    fake = [[arrays[f"fm_g_d{d}_l{layer}"] for layer in range(2)] for d in range(2)]
    value = feature_loss(real, fake).item()
    assert value == pytest.approx(expected["out_feature_loss"], rel=1e-6)
    assert value == pytest.approx(float(arrays["out_feature_loss"]), rel=1e-6)


def test_discriminator_and_generator_losses(arrays, expected) -> None:
    real = [arrays["disc_r_0"], arrays["disc_r_1"]]
    fake = [arrays["disc_g_0"], arrays["disc_g_1"]]
    total, real_terms, fake_terms = discriminator_loss(real, fake)
    assert total.item() == pytest.approx(expected["out_discriminator_loss"], rel=1e-6)
    np.testing.assert_allclose([t.item() for t in real_terms], expected["out_discriminator_r_losses"], rtol=1e-6)
    np.testing.assert_allclose([t.item() for t in fake_terms], expected["out_discriminator_g_losses"], rtol=1e-6)
    g_total, g_terms = generator_loss(fake)
    assert g_total.item() == pytest.approx(expected["out_generator_loss"], rel=1e-6)
    np.testing.assert_allclose([t.item() for t in g_terms], expected["out_generator_losses"], rtol=1e-6)


def test_kl_loss(arrays, expected) -> None:
    value = kl_loss(
        arrays["kl_z_p"],
        arrays["kl_logs_q"],
        arrays["kl_m_p"],
        arrays["kl_logs_p"],
        arrays["kl_z_mask"],
    )
    assert value.item() == pytest.approx(expected["out_kl_loss"], rel=1e-6)


def test_losses_have_gradients_and_known_values() -> None:
    fake = torch.ones(2, 5, requires_grad=True)
    total, _ = generator_loss([fake])
    assert total.item() == 0.0  # perfect fakes
    target = torch.zeros(1, 3, 4)
    generated = torch.full((1, 3, 4), 2.0, requires_grad=True)
    loss = mel_loss(target, generated, weight=45.0)
    assert loss.item() == pytest.approx(90.0)
    loss.backward()
    assert generated.grad is not None and float(generated.grad.abs().sum()) > 0
