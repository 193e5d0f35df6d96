"""Benchmark suites: TOML files naming a dataset, methods, seeds and a budget per device."""

from __future__ import annotations

import fnmatch
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import attrs
from attrs import field
from attrs.validators import deep_iterable, instance_of

from sslreg.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_strings = deep_iterable(instance_of(str))


def _string_list(value: Any) -> tuple[str, ...]:
    """A TOML list of strings; a bare string is refused (it would split into letters)."""
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ValueError(f"'set' must be a list of \"KEY=VALUE\" strings, got {value!r}")
    return tuple(value)


def _seed_list(value: Any) -> tuple[int, ...]:
    if not (isinstance(value, (list, tuple)) and value
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)):
        raise ValueError(f"'seeds' must be a non-empty list of integers >= 0, got {value!r}")
    return tuple(value)


def _method_sets(tables: dict) -> dict[str, tuple[str, ...]]:
    """``{method: {"set": [...]}}`` (TOML ``[...method.NAME]`` tables) -> ``{method: sets}``.
    Converted sets pass through unchanged: ``attrs.evolve`` converts a budget's again."""
    if isinstance(tables, dict) and all(isinstance(t, tuple) for t in tables.values()):
        return dict(tables)
    if not isinstance(tables, dict) or not all(isinstance(t, dict) for t in tables.values()):
        raise ValueError("method tables must look like [method.NAME] with set = [...]")
    return {name: _string_list(table.get("set", [])) for name, table in tables.items()}


def _values(value: Any) -> tuple[Any, ...]:
    if not (isinstance(value, (list, tuple)) and value
            and all(isinstance(v, (int, float, str, bool)) for v in value)):
        raise ValueError(f"a sweep's 'values' must be a non-empty list of numbers or "
                         f"strings, got {value!r}")
    return tuple(value)


def _dotted(_: Any, __: Any, key: str) -> None:
    if not isinstance(key, str) or "." not in key or "=" in key:
        raise ValueError(f"a sweep's 'key' must be a config key such as "
                         f"\"method.temperature\", got {key!r}")


@attrs.frozen(kw_only=True)
class Sweep:
    """One hyperparameter swept over ``values`` for the methods matching ``methods``;
    each value is a run of its own (``--set key=value``), per seed."""

    key: str = field(validator=_dotted)
    values: tuple[Any, ...] = field(converter=_values)
    methods: tuple[str, ...] = field(default=("*",), converter=_string_list,
                                     validator=_strings)

    def matches(self, method: str) -> bool:
        return any(fnmatch.fnmatch(method, p) for p in self.methods)


# Reference columns a suite may quote, in percent, and the metric each is compared with.
REFERENCE_METRICS = {"linear": "linear_acc", "knn20": "knn20_acc", "knn200": "knn200_acc"}


def _reference_results(tables: Any) -> dict[str, dict[str, float]]:
    """``{method: {"linear": 90.7, ...}}`` with known columns and numbers in percent."""
    if not isinstance(tables, dict) or not all(isinstance(t, dict) for t in tables.values()):
        raise ValueError("reference results must look like [reference.results.NAME] "
                         "with linear = 90.7")
    for method, table in tables.items():
        for column, value in table.items():
            if column not in REFERENCE_METRICS:
                raise ValueError(f"unknown reference column {column} for {method}; valid: "
                                 f"{', '.join(REFERENCE_METRICS)}")
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not 0 <= value <= 100:
                raise ValueError(f"reference {method}.{column} must be a percentage, "
                                 f"got {value!r}")
    return {m: {c: float(v) for c, v in t.items()} for m, t in tables.items()}


@attrs.frozen(kw_only=True)
class Reference:
    """Published numbers to compare with (percent), and where they come from."""

    source: str = field(validator=instance_of(str))
    results: dict[str, dict[str, float]] = field(converter=_reference_results)


@attrs.frozen(kw_only=True)
class Tuned:
    """The settings ``sslreg tune`` chose for each method on the validation split, and
    how many trials each method had (the same number for every method)."""

    sets: dict[str, tuple[str, ...]] = field(factory=dict)
    trials: dict[str, int] = field(factory=dict)


def _tuned_name(_: Any, __: Any, value: str | None) -> None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"'tuned' must name a tuned-settings file, got {value!r}")


@attrs.frozen(kw_only=True)
class Budget:
    """What one device kind runs: the backbone and ``--set`` overrides for every run.

    ``vit_backbone`` serves the methods that only take a ViT (e.g. MAE); ``tuned``
    names the file of per-method settings ``sslreg tune`` chose for this budget (a
    built-in name or a .toml path); ``method`` holds per-method overrides for this
    budget only (``[budget.cpu.method.NAME]``), applied after the tuned ones."""

    backbone: str = field(validator=instance_of(str))
    vit_backbone: str | None = field(default=None,
                                     validator=attrs.validators.optional(instance_of(str)))
    set: tuple[str, ...] = field(default=(), converter=_string_list, validator=_strings)
    tuned: str | None = field(default=None, validator=_tuned_name)
    method: dict[str, tuple[str, ...]] = field(factory=dict, converter=_method_sets)
    tuned_settings: Tuned = field(factory=Tuned)


@attrs.frozen(kw_only=True)
class Suite:
    name: str = field(validator=instance_of(str))
    description: str = field(default="", validator=instance_of(str))
    dataset: str = field(default="fashion-mnist", validator=instance_of(str))
    methods: tuple[str, ...] = field(default=("*",), converter=tuple, validator=_strings)
    seeds: tuple[int, ...] = field(default=(0,), converter=_seed_list)
    cpu: Budget = field(validator=instance_of(Budget))
    gpu: Budget = field(validator=instance_of(Budget))
    method_set: dict[str, tuple[str, ...]] = field(factory=dict)
    sweep: tuple[Sweep, ...] = field(default=(), converter=tuple)
    reference: Reference | None = None

    def budget(self, cuda: bool) -> Budget:
        return self.gpu if cuda else self.cpu

    def select(self, names: list[str]) -> list[str]:
        """Registered method names matching the suite's patterns, in registry order."""
        return [n for n in names if any(fnmatch.fnmatch(n, p) for p in self.methods)]


def builtin_suites() -> list[str]:
    return _builtin("builtin")


def _builtin(folder: str) -> list[str]:
    files = resources.files("sslreg.suites") / folder
    return sorted(p.name[:-5] for p in files.iterdir() if p.name.endswith(".toml"))


def _toml_text(name_or_path: str, folder: str, kind: str) -> str:
    """A TOML file's text from a path, or from a built-in ``folder`` by name; ``kind``
    names the file in errors (raised as ``ValueError``)."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise ValueError(f"{kind} file {path} does not exist")
        return path.read_text()
    if name_or_path in _builtin(folder):
        return (resources.files("sslreg.suites") / folder / f"{name_or_path}.toml").read_text()
    raise ValueError(f"unknown {kind} '{name_or_path}'; choose from: "
                     f"{', '.join(_builtin(folder)) or 'none'}, or pass a .toml file")


def load_suite(name_or_path: str) -> Suite:
    """A suite from a TOML file path, or one of the built-in suites by name."""
    try:
        text = _toml_text(name_or_path, "builtin", "suite")
    except ValueError as error:
        raise ConfigError(str(error)) from None
    return parse_suite(text, default_name=Path(name_or_path).stem)


def parse_suite(text: str, default_name: str = "suite") -> Suite:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"suite {default_name} is not valid TOML: {error}") from None
    try:
        budgets = data.pop("budget")
        method_set = _method_sets(data.pop("method", {}))
        sweeps = _sweeps(data.pop("sweep", []))
        reference = data.pop("reference", None)
        return Suite(name=data.pop("name", default_name), cpu=_budget(budgets["cpu"]),
                     gpu=_budget(budgets["gpu"]), method_set=method_set, sweep=sweeps,
                     reference=None if reference is None else _reference(reference), **data)
    except KeyError as error:
        raise ConfigError(f"suite {default_name} lacks {error}; it needs [budget.cpu] and "
                          "[budget.gpu] tables") from None
    except (TypeError, ValueError) as error:
        raise ConfigError(f"suite {default_name} is invalid: {_reason(error)}") from None


def _budget(table: dict[str, Any]) -> Budget:
    if "tuned_settings" in table:
        raise TypeError("Budget got an unexpected keyword argument tuned_settings")
    budget = Budget(**table)
    if budget.tuned is None:
        return budget
    return attrs.evolve(budget, tuned_settings=load_tuned(budget.tuned))


def load_tuned(name_or_path: str) -> Tuned:
    """The settings file ``sslreg tune`` wrote: a path, or a built-in name."""
    return parse_tuned(tomllib.loads(_toml_text(name_or_path, "tuned", "tuned settings")))


def parse_tuned(data: dict[str, Any]) -> Tuned:
    """``[method.NAME]`` tables with ``set = [...]`` and ``trials = N``."""
    tables = data.get("method", {})
    if not isinstance(tables, dict) or not all(isinstance(t, dict) for t in tables.values()):
        raise ValueError("a tuned-settings file needs [method.NAME] tables")
    trials = {name: table.get("trials") for name, table in tables.items()}
    if not all(isinstance(t, int) and t >= 1 for t in trials.values()):
        raise ValueError(f"each [method.NAME] of a tuned-settings file needs trials >= 1, "
                         f"got {trials}")
    return Tuned(sets=_method_sets(tables), trials=trials)


def _sweeps(tables: Any) -> tuple[Sweep, ...]:
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ValueError("sweeps must be [[sweep]] tables with key, values and methods")
    return tuple(_table(Sweep, "[[sweep]]", t) for t in tables)


def _reference(table: Any) -> Reference:
    if not isinstance(table, dict):
        raise ValueError("reference must be a [reference] table with source and results")
    return _table(Reference, "[reference]", table)


def _table(kind: type, title: str, table: dict) -> Any:
    """``kind(**table)``, naming the table and its valid keys when a key is unknown."""
    fields = [a.name for a in attrs.fields(kind)]
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise ValueError(f"unknown key {unknown[0]} in a {title} table; valid keys: "
                         f"{', '.join(fields)}")
    return kind(**table)


def _reason(error: Exception) -> str:
    """One readable line: attrs puts its message first in a tuple of details, and an
    unexpected keyword names a key the suite format does not have."""
    message = error.args[0] if error.args and isinstance(error.args[0], str) else str(error)
    if "unexpected keyword argument" in message:
        key = message.rsplit(" ", 1)[-1]
        if message.startswith("Budget"):
            fields = [a.name for a in attrs.fields(Budget)]
            return f"unknown key {key} in a [budget] table; valid keys: {', '.join(fields)}"
        fields = sorted(a.name for a in attrs.fields(Suite)
                        if a.name not in ("cpu", "gpu", "method_set"))
        return f"unknown key {key}; valid keys: {', '.join(fields)}, budget, method"
    if "missing" in message and "required" in message:
        return f"a table lacks a key: {message.split(': ', 1)[-1]}"
    return (message.splitlines() or ["invalid"])[0]


def suite_sets(suite: Suite, budget: Budget, method: str, seed: int,
               variant: tuple[str, ...] = ()) -> list[str]:
    return [*budget.set, *suite.method_set.get(method, ()),
            *budget.tuned_settings.sets.get(method, ()), *budget.method.get(method, ()),
            *variant, f"train.seed={seed}"]


def variants(suite: Suite, method: str) -> list[tuple[str, ...]]:
    """The ``--set`` additions of each run a method gets: one per swept value, or one
    plain run when no sweep names the method."""
    swept = [(f"{s.key}={value}",) for s in suite.sweep if s.matches(method)
             for value in s.values]
    return swept or [()]
