"""The registry: one catalog per kind of thing, filled by the plugins' hooks."""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import attrs

from sslreg.errors import DuplicateNameError, PluginError, UnknownNameError
from sslreg.specs import (
    SPEC_TYPES,
    BackboneSpec,
    DatasetSpec,
    MethodSpec,
    MonitorSpec,
    ObjectiveSpec,
    ViewSpec,
)

if TYPE_CHECKING:  # torch is heavy; the registry only hands modules on
    from torch import nn

    from sslreg.interfaces import Method

S = TypeVar("S", MethodSpec, BackboneSpec, ViewSpec, ObjectiveSpec, MonitorSpec, DatasetSpec)

# Singular nouns for messages ("unknown method 'x'").
_NOUN = {
    "methods": "method",
    "backbones": "backbone",
    "views": "view policy",
    "objectives": "objective",
    "monitors": "monitor",
    "datasets": "dataset",
}


class Catalog(Generic[S]):
    """Specs of one kind, by name. Refuses duplicates; unknown names list the choices.

    A spec's ``aliases`` (view policies have them) are further names ``get`` and
    ``create`` accept for it; ``names()`` and iteration give registered names only.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.noun = _NOUN[kind]
        self.spec_type = SPEC_TYPES[kind]
        self._specs: dict[str, S] = {}
        self._aliases: dict[str, str] = {}  # alias -> registered name

    def add(self, spec: Any, plugin: str) -> None:
        if not isinstance(spec, self.spec_type):
            raise PluginError(
                f"plugin '{plugin}' passed {type(spec).__name__} to register_{self.kind}; "
                f"it takes sslreg.{self.spec_type.__name__}"
            )
        if isinstance(spec, MethodSpec):
            check_method_defaults(spec, plugin)
        aliases = getattr(spec, "aliases", ())
        for name in (spec.name, *aliases):
            self._refuse_taken(name, plugin)
        self._specs[spec.name] = attrs.evolve(spec, plugin=plugin)
        self._aliases.update(dict.fromkeys(aliases, spec.name))

    def _refuse_taken(self, name: str, plugin: str) -> None:
        existing = self._specs.get(self._aliases.get(name, name))
        if existing is None:
            return
        alias = "" if name == existing.name else f" (an alias of '{existing.name}')"
        raise DuplicateNameError(
            f"{self.noun} '{name}'{alias} is registered by both plugin "
            f"'{existing.plugin}' and plugin '{plugin}'; disable one of them with "
            "SSLREG_DISABLE_PLUGINS"
        )

    def get(self, name: str) -> S:
        """The spec registered as ``name`` or with ``name`` among its aliases."""
        try:
            return self._specs[self._aliases.get(name, name)]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.noun} '{name}'; choose from: {self._choices()}"
            ) from None

    def _choices(self) -> str:
        if not self._specs:
            return "(none registered)"
        return ", ".join(name + "".join(f" (alias {a})" for a in self.aliases_of(name))
                         for name in self.names())

    def aliases_of(self, name: str) -> list[str]:
        """The other names registered name ``name`` answers to, sorted."""
        return sorted(alias for alias, target in self._aliases.items() if target == name)

    def create(self, name: str, /, **options: Any) -> Any:
        """Build the named thing: ``spec.factory(**options)`` (datasets: use ``get``)."""
        spec = self.get(name)
        if isinstance(spec, DatasetSpec):
            raise TypeError("a dataset is loaded with get(name).loader(split, root)")
        return spec.factory(**options)

    def names(self) -> list[str]:
        return sorted(self._specs)

    def remove(self, name: str) -> None:
        """Forget ``name`` (a method whose objective is missing, see check_objectives)."""
        del self._specs[name]
        for alias in self.aliases_of(name):
            del self._aliases[alias]

    def __iter__(self) -> Iterator[S]:
        return iter(self._specs[name] for name in self.names())

    def __contains__(self, name: object) -> bool:
        return name in self._specs or name in self._aliases

    def __len__(self) -> int:
        return len(self._specs)


def check_method_defaults(spec: MethodSpec, plugin: str) -> None:
    """Build the method's config from its defaults now, so a default that fails its own
    validator is this plugin's failure at load time (shown by ``sslreg plugins``) rather
    than a surprise when someone runs the method. (``optim`` was checked when the spec
    was built.)"""
    try:
        spec.config_class()
    except Exception as error:  # whatever it raises, the plugin is at fault
        raise PluginError(
            f"plugin '{plugin}' registered method '{spec.name}' whose config defaults "
            f"fail their own validation: {_first_line(error)}"
        ) from None


def _first_line(error: BaseException) -> str:
    first = (str(error).strip().splitlines() or [""])[0]
    return f"{type(error).__name__}: {first}"


@attrs.frozen
class PluginFailure:
    """A plugin that could not be loaded or whose hook failed; the others still work."""

    name: str
    error: str


@attrs.frozen
class PluginInfo:
    """A loaded plugin: its name, distribution version and what it registered."""

    name: str
    version: str | None
    registered: tuple[tuple[str, str], ...]  # (kind, name) pairs
    hooks: tuple[str, ...]


class Registry:
    """Everything the plugins registered, one :class:`Catalog` per kind."""

    def __init__(self) -> None:
        self.methods: Catalog[MethodSpec] = Catalog("methods")
        self.backbones: Catalog[BackboneSpec] = Catalog("backbones")
        self.views: Catalog[ViewSpec] = Catalog("views")
        self.objectives: Catalog[ObjectiveSpec] = Catalog("objectives")
        self.monitors: Catalog[MonitorSpec] = Catalog("monitors")
        self.datasets: Catalog[DatasetSpec] = Catalog("datasets")
        self.failures: list[PluginFailure] = []
        self.plugins: list[PluginInfo] = []

    def catalog(self, kind: str) -> Catalog[Any]:
        return getattr(self, kind)

    def build_objective(self, method: str, config: Any) -> nn.Module:
        """The objective ``method``'s spec names, built from the objectives catalog with
        the options its ``config`` gives: ``objective_options(config)`` when the spec
        has it, else every config field named like one of the factory's keywords."""
        spec = self.methods.get(method)
        factory = self.objectives.get(spec.objective).factory
        if spec.objective_options is not None:
            return factory(**spec.objective_options(config))
        keywords = inspect.signature(factory).parameters
        shared = [a.name for a in attrs.fields(type(config)) if a.name in keywords]
        return factory(**{name: getattr(config, name) for name in shared})

    def build_method(self, name: str, config: Any, backbone: nn.Module) -> Method:
        """Method ``name`` on ``backbone``: its factory gets ``objective=`` the module
        :meth:`build_objective` builds, unless it predates that keyword (then the
        method builds its own loss, as plugins did before objectives were a catalog)."""
        factory = self.methods.get(name).factory
        if "objective" in inspect.signature(factory).parameters:
            return factory(config, backbone, objective=self.build_objective(name, config))
        return factory(config, backbone)

    def backbones_for(self, method: str, names: Iterable[str] | None = None) -> list[str]:
        """The backbones, of ``names`` (default: every registered one) in their order,
        whose family ``method`` takes (its ``backbone_families``; ``None``: any). The one
        rule config checks, suites and the conformance kit pick backbones by."""
        families = self.methods.get(method).backbone_families
        return [name for name in (self.backbones.names() if names is None else names)
                if families is None or self.backbones.get(name).family in families]

    def check_objectives(self) -> list[PluginFailure]:
        """Drop every method whose objective is not registered or does not build from
        its default config, and say why, naming the registered objectives."""
        failures = []
        for spec in list(self.methods):
            problem = self._objective_problem(spec)
            if problem is not None:
                self.methods.remove(spec.name)
                failures.append(PluginFailure(str(spec.plugin), problem))
        return failures

    def _objective_problem(self, spec: MethodSpec) -> str | None:
        if spec.objective not in self.objectives:
            choices = ", ".join(self.objectives.names()) or "(none registered)"
            return (f"method '{spec.name}' names objective '{spec.objective}', which no "
                    f"plugin registers; choose from: {choices}")
        try:
            self.build_objective(spec.name, spec.config_class())
        except Exception as error:  # whatever it raises, the plugin is at fault
            return (f"method '{spec.name}' cannot build its objective '{spec.objective}' "
                    f"from its default config: {_first_line(error)}")
        return None
