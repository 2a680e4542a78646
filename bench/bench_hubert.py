"""Content encoder speed: our HuBERT Base vs transformers' HubertModel, same random weights.

Both get identical weights (ours renamed into transformers names), so the run also reports how
far the two outputs are apart. The baseline is called the way RVC's transformers port calls it:
`last_hidden_state` for v2, `hidden_states[9]` + `final_proj` for v1 (all 12 layers run).

    python -m bench.bench_hubert [--quick] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from bench.common import BenchRow, interleaved

SAMPLE_RATE = 16000


def _random_base_model(device: str) -> Any:
    """HuBERT Base (fairseq layout) with random weights scaled to keep activations in range."""
    import torch

    from infer_pack.hubert import HubertModel
    from infer_pack.hubert_format import HubertArch

    generator = torch.Generator().manual_seed(0)
    model = HubertModel(HubertArch())
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
            elif param.dim() == 1:  # norm gains
                param.copy_(1.0 + torch.randn(param.shape, generator=generator) * 0.1)
            else:
                fan_in = param[0].numel() if param.dim() > 1 else param.numel()
                param.copy_(torch.randn(param.shape, generator=generator) / fan_in**0.5)
    return model.eval().requires_grad_(False).to(device)


def _transformers_twin(model: Any, device: str) -> Any:
    """transformers HubertModel (+ final_proj, as RVC's port adds) holding the same weights."""
    import torch
    from transformers import HubertConfig
    from transformers import HubertModel as HFHubertModel

    from infer_pack.hubert_format import transformers_to_fairseq_name

    config = HubertConfig(conv_bias=False, feat_extract_norm="group", do_stable_layer_norm=False)
    twin = HFHubertModel(config)
    twin.final_proj = torch.nn.Linear(config.hidden_size, config.classifier_proj_size)
    ours = model.state_dict()
    state = {}
    for name in twin.state_dict():
        source = transformers_to_fairseq_name(name)
        if source is None or source not in ours:
            raise KeyError(f"no fairseq counterpart for {name}")
        state[name] = ours[source]
    twin.load_state_dict(state, strict=True)
    return twin.eval().requires_grad_(False).to(device)


def _callables(model: Any, twin: Any, wave: Any, version: str) -> tuple[Callable[[], Any], Callable[[], Any]]:
    import torch

    from infer_pack.hubert import ContentEncoder

    encoder = ContentEncoder(model, wave.device, torch.float32)

    def ours() -> Any:
        out = encoder.extract(wave, version)  # type: ignore[arg-type]
        _sync(wave.device)
        return out

    def baseline() -> Any:
        with torch.inference_mode():
            if version == "v1":
                hidden = twin(wave, output_hidden_states=True).hidden_states[9]
                out = twin.final_proj(hidden)
            else:
                out = twin(wave).last_hidden_state
        _sync(wave.device)
        return out

    return ours, baseline


def _sync(device: Any) -> None:
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        torch.cuda.synchronize()


def run(quick: bool = False, device: str = "cpu") -> list[BenchRow]:
    """HuBERT Base forward on 10 s (v2 and v1; quick: v2 only) and, unless quick, 60 s (v2) of noise-like audio."""
    import torch

    model = _random_base_model(device)
    twin = _transformers_twin(model, device)
    generator = torch.Generator().manual_seed(1)
    durations = (10,) if quick else (10, 60)
    rows: list[BenchRow] = []
    for seconds in durations:
        wave = (0.1 * torch.randn(1, seconds * SAMPLE_RATE, generator=generator)).to(device)
        # v2 (all 12 layers on both sides) is the like-for-like case; v1 stops at layer 9 here.
        for version in ("v2", "v1") if seconds <= 10 and not quick else ("v2",):
            ours, baseline = _callables(model, twin, wave, version)
            difference = float((ours() - baseline().float()).abs().max())
            # medians: this is often measured on a busy machine (quick: fewer, to fit the smoke run)
            repeats = 3 if quick or seconds > 10 else 7
            time_ours, time_base = interleaved(ours, baseline, repeats=repeats)
            rows.append(
                BenchRow(
                    area="hubert",
                    name=f"HuBERT Base {version} {seconds} s",
                    unit="s",
                    ours=time_ours,
                    baseline=time_base,
                    notes=f"vs transformers HubertModel, {device}, {torch.get_num_threads()} threads",
                    extra={"max_abs_diff": difference, "audio_s": seconds, "version": version},
                )
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 s input only")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    for row in run(quick=args.quick, device=args.device):
        print(json.dumps(row.to_dict()))


if __name__ == "__main__":
    main()
