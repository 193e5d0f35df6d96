"""Config fields that carry their own check and a one-line meaning.

A method's config class declares each hyperparameter with one of these instead of a
bare ``attrs.field``: the validator refuses a bad ``--set`` before any work, and the
help text (kept in the field's metadata under :data:`HELP`) is what
``sslreg methods --options NAME`` prints beside the default::

    @attrs.frozen(kw_only=True)
    class MyConfig:
        temperature: float = fields.positive_float(0.5, "softmax temperature of NT-Xent")
        proj_dim: int = fields.positive_int(128, "width of the projector's output")

Every function takes ``optional=True`` for a field that may also be ``None`` (meaning
"the method decides", e.g. by backbone), and ``also=`` for extra validators. A field
needing a check none of these has is ``option(default, help, validator=...)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import attrs
from attrs.validators import ge, gt, in_, instance_of, le, lt

HELP = "sslreg.help"

Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]


def option(default: Any, help: str, *, validator: Validator | Sequence[Validator] = (),
           converter: Callable[[Any], Any] | None = None, optional: bool = False) -> Any:
    """An ``attrs.field`` with ``help`` in its metadata; the others build on it."""
    validators = [validator] if callable(validator) else list(validator)
    checks = attrs.validators.and_(*validators) if validators else None
    if optional:
        checks = attrs.validators.optional(checks) if checks else None
        converter = attrs.converters.optional(converter) if converter else None
    return attrs.field(default=default, validator=checks, converter=converter,
                       metadata={HELP: help})


def help_of(attribute: attrs.Attribute[Any]) -> str:
    """The one-line meaning of a config field ("" for a field declared without one)."""
    return str(attribute.metadata.get(HELP, ""))


def describe(config_class: type) -> list[tuple[str, Any, str]]:
    """``(name, default, help)`` of every field of an attrs config class, in order; a
    field built with a factory shows what the factory makes."""
    rows = []
    for attribute in attrs.fields(config_class):
        default = attribute.default
        if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            default = default.factory()
        rows.append((attribute.name, default, help_of(attribute)))
    return rows


def _finite(_instance: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if not math.isfinite(value):
        raise ValueError(f"{attribute.name} must be a finite number, got {value}")


def _whole(_instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    # bool is an int to Python, but `method.proj_dim=true` is a mistake.
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{attribute.name} must be a whole number, got {value!r}")


def _integer(default: int | None, help: str, minimum: int, maximum: int | None,
             also: Sequence[Validator], optional: bool) -> Any:
    bounds = [ge(minimum)] + ([le(maximum)] if maximum is not None else [])
    return option(default, help, validator=[_whole, *bounds, *also], optional=optional)


def positive_int(default: int | None, help: str, *, minimum: int = 1,
                 maximum: int | None = None, also: Sequence[Validator] = (),
                 optional: bool = False) -> Any:
    """A whole number >= ``minimum`` (1) and <= ``maximum``: a width, a depth, a count."""
    return _integer(default, help, minimum, maximum, also, optional)


def nonnegative_int(default: int | None, help: str, *, maximum: int | None = None,
                    also: Sequence[Validator] = (), optional: bool = False) -> Any:
    """A whole number >= 0 (0 usually switches the thing off)."""
    return _integer(default, help, 0, maximum, also, optional)


def finite(default: float | None, help: str, *, above: float | None = None,
           minimum: float | None = None, below: float | None = None,
           maximum: float | None = None, also: Sequence[Validator] = (),
           optional: bool = False) -> Any:
    """A finite float, strictly ``above``/``below`` or within ``minimum``/``maximum``."""
    bounds = [check(limit) for check, limit in ((gt, above), (ge, minimum), (lt, below),
                                                (le, maximum)) if limit is not None]
    return option(default, help, validator=[_finite, *bounds, *also], converter=float,
                  optional=optional)


def positive_float(default: float | None, help: str, **kwargs: Any) -> Any:
    """A finite float > 0: a temperature, a learning rate, an epsilon."""
    return finite(default, help, above=0, **kwargs)


def nonnegative_float(default: float | None, help: str, **kwargs: Any) -> Any:
    """A finite float >= 0: a loss weight, a number of epochs."""
    return finite(default, help, minimum=0, **kwargs)


def probability(default: float | None, help: str, **kwargs: Any) -> Any:
    """A float in [0, 1]: a probability, a share, an EMA momentum."""
    return finite(default, help, minimum=0, maximum=1, **kwargs)


def flag(default: bool | None, help: str, *, optional: bool = False) -> Any:
    """True or False."""
    return option(default, help, validator=instance_of(bool), optional=optional)


def choice(default: Any, choices: Sequence[Any], help: str) -> Any:
    """One of ``choices``."""
    return option(default, help, validator=in_(tuple(choices)))
