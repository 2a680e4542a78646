"""What the tabs and the command line build their controls from (light: no numpy, no torch)."""

from __future__ import annotations

from infer_pack.params import PARAM_SPECS, ParamSpec
from infer_pack.specs import add_spec_flags as add_spec_flags
from infer_pack.specs import spec_values as spec_values
from infer_pack.stream_params import stream_param_specs as stream_param_specs
from tools.api.separate_request import separation_param_specs as separation_param_specs
from tools.api.train_request import training_param_specs as training_param_specs


def conversion_param_specs() -> dict[str, ParamSpec]:
    """Range, default, step, flag and help of each conversion parameter, in ConversionParams' order."""
    return dict(PARAM_SPECS)
