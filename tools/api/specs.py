"""What the tabs and the command line build their conversion controls from (light: no numpy, no torch)."""

from __future__ import annotations

from infer_pack.params import PARAM_SPECS, ParamSpec


def conversion_param_specs() -> dict[str, ParamSpec]:
    """Range, default, step, flag and help of each conversion parameter, in ConversionParams' order."""
    return dict(PARAM_SPECS)
