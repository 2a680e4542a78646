"""Small tensor helpers shared by the voice model blocks, and RVC-format weight normalisation.

Weight normalisation: RVC's files store normalised layers as `<name>.weight_g` / `<name>.weight_v`
(the layout of torch's legacy `weight_norm`), with `bias` listed before them. `apply_weight_norm`
reproduces exactly that parameter layout and arithmetic (`torch._weight_norm`), so files load
unchanged and parameter order (which optimizer state depends on) matches RVC's.
"""

from __future__ import annotations

import torch
from torch import nn


def get_padding(kernel_size: int, dilation: int = 1) -> int:
    """'Same' padding of an odd kernel with the given dilation."""
    return (kernel_size * dilation - dilation) // 2


def init_weights(module: nn.Module, mean: float = 0.0, std: float = 0.01) -> None:
    """RVC's initialiser for plain convolutions (weight-normalised ones keep their own init)."""
    if "Conv" in type(module).__name__ and isinstance(
        getattr(module, "weight", None), nn.Parameter
    ):
        module.weight.data.normal_(mean, std)


def building_on_meta() -> bool:
    """True inside `with torch.device("meta")`: shape-only construction, so skip random init
    (random ops on meta tensors pull in slow-to-import decompositions)."""
    return torch.empty(0).is_meta


def embedding(num_embeddings: int, embedding_dim: int) -> nn.Embedding:
    """nn.Embedding with torch's N(0, 1) init, skipped when building on the meta device."""
    module = nn.Embedding(
        num_embeddings,
        embedding_dim,
        _weight=torch.empty(num_embeddings, embedding_dim),
    )
    if not module.weight.is_meta:
        nn.init.normal_(module.weight)
    return module


def sequence_mask(lengths: torch.Tensor, max_length: int | None = None) -> torch.Tensor:
    """[B] lengths -> [B, T] bool mask, True on valid frames."""
    if max_length is None:
        max_length = int(lengths.max())
    positions = torch.arange(max_length, dtype=lengths.dtype, device=lengths.device)
    return positions.unsqueeze(0) < lengths.unsqueeze(1)


def fused_add_tanh_sigmoid_multiply(
    a: torch.Tensor, b: torch.Tensor, n_channels: int
) -> torch.Tensor:
    """WaveNet gate: tanh(first half of a+b) * sigmoid(second half)."""
    in_act = a + b  # [B, 2C, T]
    return torch.tanh(in_act[:, :n_channels]) * torch.sigmoid(in_act[:, n_channels:])


def slice_segments(
    x: torch.Tensor, ids_start: torch.Tensor, segment_size: int
) -> torch.Tensor:
    """Cut `segment_size` frames starting at ids_start[b] from each item. x: [B, C, T] or [B, T]."""
    offsets = ids_start.to(torch.long).unsqueeze(1) + torch.arange(
        segment_size, device=x.device
    )  # [B, S]
    if x.dim() == 2:
        return torch.gather(x, 1, offsets)  # [B, S]
    index = offsets.unsqueeze(1).expand(-1, x.size(1), -1)  # [B, C, S]
    return torch.gather(x, 2, index)


def rand_slice_segments(
    x: torch.Tensor, x_lengths: torch.Tensor | None, segment_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """A random segment per item, as RVC draws it: start = floor(rand * (length - segment + 1))."""
    batch, _, frames = x.size()
    if x_lengths is None:
        x_lengths = torch.full((batch,), frames, device=x.device)
    ids_start_max = x_lengths - segment_size + 1
    ids_start = (torch.rand([batch]).to(device=x.device) * ids_start_max).to(
        dtype=torch.long
    )
    return slice_segments(x, ids_start, segment_size), ids_start


class WeightNormHook:
    """Forward pre-hook that recomputes `module.weight` from weight_g / weight_v before every call
    (a plain attribute, as in torch's legacy weight_norm). A class, not a closure, so modules stay
    picklable and deep-copyable (EMA copies, DDP)."""

    def __init__(self, dim: int) -> None:
        self.dim = dim

    def __call__(self, module: nn.Module, _inputs: object) -> None:
        module.weight = torch._weight_norm(module.weight_v, module.weight_g, self.dim)


def _weight_norm_hook(module: nn.Module) -> tuple[int, WeightNormHook] | None:
    for key, hook in module._forward_pre_hooks.items():
        if isinstance(hook, WeightNormHook):
            return key, hook
    return None


def apply_weight_norm(module: nn.Module, dim: int = 0) -> nn.Module:
    """Re-parameterise `module.weight` as weight_g * weight_v / ||weight_v|| (norm over all axes but `dim`)."""
    weight = module.weight
    del module._parameters["weight"]
    g_shape = [weight.shape[d] if d == dim else 1 for d in range(weight.dim())]
    if weight.is_meta:
        # Shape-only construction (key listing, or filled by load_state_dict(assign=True)).
        norm = weight.new_empty(g_shape)
    else:
        norm = weight.detach().norm(
            p=2, dim=[d for d in range(weight.dim()) if d != dim], keepdim=True
        )
    module.register_parameter("weight_g", nn.Parameter(norm))
    module.register_parameter("weight_v", nn.Parameter(weight.detach()))
    # g * v / ||v|| == v at this point; the hook recomputes it from the parameters.
    module.weight = module.weight_v.detach()
    module.register_forward_pre_hook(WeightNormHook(dim))
    return module


def has_weight_norm(module: nn.Module) -> bool:
    return _weight_norm_hook(module) is not None


def remove_weight_norm(module: nn.Module) -> nn.Module:
    """Fold weight_g / weight_v back into one `weight` parameter (faster inference, ONNX export)."""
    found = _weight_norm_hook(module)
    if found is None:
        raise ValueError(f"{type(module).__name__} has no weight norm to remove")
    key, hook = found
    del module._forward_pre_hooks[key]
    weight = torch._weight_norm(module.weight_v, module.weight_g, hook.dim).detach()
    del module._parameters["weight_g"]
    del module._parameters["weight_v"]
    module.__dict__.pop("weight", None)
    module.weight = nn.Parameter(weight)
    return module
