"""A separation's settings: each one's default, range and help written once (light: `--help` reads it).

`tools.cli separate` builds its flags and the Separate tab its widgets from these specs; the API
(`tools.api.separate.separate_audio`) takes the same names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from infer_pack.specs import ParamSpec, field_specs, spec_field

SeparationFormat = Literal["wav", "flac", "mp3", "m4a"]
SEPARATION_FORMATS: tuple[SeparationFormat, ...] = ("wav", "flac", "mp3", "m4a")


@dataclass(frozen=True)
class SeparationSettings:
    """What the user chooses for a separation besides the model and the inputs."""

    output_format: SeparationFormat = spec_field(
        "wav", "Output format", "Format of the two stems (<name>_vocals, <name>_instrumental).",
        choices=SEPARATION_FORMATS, flag="format")
    aggressiveness: int = spec_field(
        10, "Aggressiveness", "VR models only: how hard the mask pushes the other stem out (RVC's slider; "
        "MDX-Net and RoFormer models ignore it).", 0, 20, 1)


def separation_param_specs() -> dict[str, ParamSpec]:
    """name -> default, range, help, flag of each separation setting."""
    return field_specs(SeparationSettings)
