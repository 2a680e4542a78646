"""Parameter specs: a request dataclass's fields carry their default, range, help and flag, written once.

A field declared with `spec_field(...)` is the one place its default and meaning are written; the
command line builds its flags (`tools.cli`), the web tabs their widgets (`tools.ui_common`) and the
API its keywords from `field_specs(RequestClass)`. Light on purpose (no numpy), so `--help` is fast.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field, fields
from typing import Any

from infer_pack.errors import UserInputError

_SPEC_KEY = "spec"


@dataclass(frozen=True)
class ParamSpec:
    """Range, default, unit and help text of one user-settable parameter."""

    name: str
    label: str
    default: Any
    help: str
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    choices: tuple[str, ...] = ()
    flag: str = ""  # the command line's option, without "--"
    value_type: type = str  # int, float, bool or str (paths and names are typed as text)
    unit: str = ""
    optional: bool = False  # None is a value ("not given": the request decides)

    def checked(self, value: Any, *, upper: bool = True) -> Any:
        """`value` as this spec's number type, or UserInputError naming the parameter and its range."""
        assert self.minimum is not None, f"{self.name} has no range"
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        too_high = upper and self.maximum is not None and number > self.maximum
        if not math.isfinite(number) or number < self.minimum or too_high:
            span = f"between {self.minimum:g} and {self.maximum:g}" if upper and self.maximum is not None else f"at least {self.minimum:g}"
            raise UserInputError(f"{self.label} ({self.name}) must be {span}, got {value!r}")
        return self.value_type(number)


def spec_field(
    default: Any, label: str, help: str, minimum: float | None = None, maximum: float | None = None,
    step: float | None = None, choices: tuple[str, ...] = (), flag: str = "", unit: str = "",
) -> Any:
    """A dataclass field with its default plus what the UI and the CLI show for it."""
    return field(default=default, metadata={_SPEC_KEY: (label, help, minimum, maximum, step, choices, flag, unit)})


_TYPES: dict[str, type] = {"int": int, "float": float, "bool": bool}


def _value_type(annotation: Any) -> tuple[type, bool]:
    """(int/float/bool/str, whether None is allowed) from a field's annotation (a string under PEP 563)."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    parts = [part.strip() for part in text.split("|")]
    kinds = [part for part in parts if part != "None"]
    return (_TYPES.get(kinds[0], str) if len(kinds) == 1 else str), len(kinds) < len(parts)


def field_specs(cls: type) -> dict[str, ParamSpec]:
    """name -> spec for each `spec_field` of the dataclass `cls`, in declaration order."""
    specs: dict[str, ParamSpec] = {}
    for f in fields(cls):
        if _SPEC_KEY not in f.metadata:
            continue
        label, help_text, minimum, maximum, step, choices, flag, unit = f.metadata[_SPEC_KEY]
        value_type, optional = _value_type(f.type)
        specs[f.name] = ParamSpec(
            f.name, label, f.default, help_text, minimum, maximum, step, tuple(choices),
            flag or f.name.replace("_", "-"), value_type, unit, optional,
        )
    return specs


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def flag_help(spec: ParamSpec, shown_default: str | None = None) -> str:
    """The command line's help for a spec: label, range, help and default."""
    if spec.value_type is bool:
        return f"{spec.label}: {spec.help}" if not spec.default else f'turns off "{spec.label}": {spec.help}'
    span = ""
    if spec.minimum is not None and spec.maximum is not None:
        span = f"; {_number(spec.minimum)}..{_number(spec.maximum)}" + (f" {spec.unit}" if spec.unit else "")
    default = shown_default if shown_default is not None else spec.default
    return f"{spec.label}{span}: {spec.help}" + ("" if default is None else f" (default: {default})")


def add_spec_flags(
    parser: argparse._ActionsContainer, specs: dict[str, ParamSpec], *, shown_defaults: dict[str, str] | None = None,
    defaults: dict[str, Any] | None = None,
) -> None:
    """One `--flag` per spec, with `dest` = the field name, so `vars(args)` feeds the request by keyword.

    A bool spec becomes a switch: default False -> `--flag` sets True; default True -> `--flag`
    (named for the opposite, e.g. `--no-pretrained`) sets False.
    """
    shown_defaults = shown_defaults or {}
    defaults = defaults or {}
    for spec in specs.values():
        default = defaults.get(spec.name, spec.default)
        help_text = flag_help(spec, shown_defaults.get(spec.name))
        if spec.value_type is bool:
            action = "store_false" if spec.default else "store_true"
            parser.add_argument(f"--{spec.flag}", dest=spec.name, action=action, default=default, help=help_text)
        elif spec.choices:
            parser.add_argument(f"--{spec.flag}", dest=spec.name, choices=spec.choices, default=default, help=help_text)
        else:
            parser.add_argument(f"--{spec.flag}", dest=spec.name, type=spec.value_type, default=default,
                                help=help_text)


def spec_values(args: argparse.Namespace, specs: dict[str, ParamSpec]) -> dict[str, Any]:
    """The parsed values of `add_spec_flags`' flags, by field name."""
    return {name: getattr(args, name) for name in specs}


def spec_from(cls: type, name: str) -> Any:
    """A field with the same default and spec as `cls`'s field `name`: a request passing it on states neither again."""
    source = next(f for f in fields(cls) if f.name == name)
    return field(default=source.default, metadata=source.metadata)
