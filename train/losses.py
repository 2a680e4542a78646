"""GAN, feature-matching and KL losses of RVC's trainer (all evaluated in fp32).

Discriminator outputs come as one tensor per sub-discriminator (flattened scores) and feature
maps as one list of tensors per sub-discriminator, as `MultiPeriodDiscriminator` returns them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def discriminator_loss(
    real_outputs: Sequence[torch.Tensor], fake_outputs: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """Least-squares GAN loss of the discriminator: real -> 1, fake -> 0.

    Returns the total and the per-sub-discriminator real and fake terms (detached 0-d tensors,
    for logging; turning them into floats here would stall a GPU every step).
    """
    total = torch.zeros((), device=real_outputs[0].device)
    real_terms: list[torch.Tensor] = []
    fake_terms: list[torch.Tensor] = []
    for real, fake in zip(real_outputs, fake_outputs):
        real_term = torch.mean((1.0 - real.float()) ** 2)
        fake_term = torch.mean(fake.float() ** 2)
        total = total + real_term + fake_term
        real_terms.append(real_term.detach())
        fake_terms.append(fake_term.detach())
    return total, real_terms, fake_terms


def generator_loss(
    fake_outputs: Sequence[torch.Tensor],
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Least-squares GAN loss of the generator: push the discriminator's fake scores to 1."""
    total = torch.zeros((), device=fake_outputs[0].device)
    terms: list[torch.Tensor] = []
    for fake in fake_outputs:
        term = torch.mean((1.0 - fake.float()) ** 2)
        terms.append(term)
        total = total + term
    return total, terms


def feature_loss(
    real_feature_maps: Sequence[Sequence[torch.Tensor]],
    fake_feature_maps: Sequence[Sequence[torch.Tensor]],
) -> torch.Tensor:
    """2 x sum over sub-discriminators and layers of mean |real - fake| (real side detached)."""
    total = torch.zeros((), device=real_feature_maps[0][0].device)
    for real_maps, fake_maps in zip(real_feature_maps, fake_feature_maps):
        for real, fake in zip(real_maps, fake_maps):
            total = total + torch.mean(torch.abs(real.float().detach() - fake.float()))
    return total * 2.0


def kl_loss(
    z_p: torch.Tensor,
    logs_q: torch.Tensor,
    m_p: torch.Tensor,
    logs_p: torch.Tensor,
    z_mask: torch.Tensor,
) -> torch.Tensor:
    """KL between the posterior sample mapped by the flow and the prior.

    z_p, logs_q: [B, C, T] (posterior side); m_p, logs_p: [B, C, T] (prior); z_mask: [B, 1, T].
    Summed over channels and valid frames, divided by the number of valid frames.
    """
    z_p, logs_q, m_p, logs_p, z_mask = (t.float() for t in (z_p, logs_q, m_p, logs_p, z_mask))
    kl = logs_p - logs_q - 0.5
    kl = kl + 0.5 * ((z_p - m_p) ** 2) * torch.exp(-2.0 * logs_p)
    return torch.sum(kl * z_mask) / torch.sum(z_mask)


def mel_loss(target_mel: torch.Tensor, generated_mel: torch.Tensor, weight: float) -> torch.Tensor:
    """L1 between log mels ([B, n_mels, frames]) times the config's c_mel."""
    return torch.nn.functional.l1_loss(target_mel.float(), generated_mel.float()) * weight
