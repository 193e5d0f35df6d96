"""The registry: one catalog per kind of thing, filled by the plugins' hooks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Generic, TypeVar

import attrs

from sslreg.config import OptimConfig
from sslreg.errors import DuplicateNameError, PluginError, UnknownNameError
from sslreg.specs import SPEC_TYPES, MethodSpec

S = TypeVar("S")

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
    """Specs of one kind, by name. Refuses duplicates; unknown names list the choices."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.noun = _NOUN[kind]
        self.spec_type = SPEC_TYPES[kind]
        self._specs: dict[str, S] = {}

    def add(self, spec: Any, plugin: str) -> None:
        if not isinstance(spec, self.spec_type):
            raise PluginError(
                f"plugin '{plugin}' passed {type(spec).__name__} to register_{self.kind}; "
                f"it takes sslreg.{self.spec_type.__name__}"
            )
        if isinstance(spec, MethodSpec):
            check_method_defaults(spec, plugin)
        existing = self._specs.get(spec.name)
        if existing is not None:
            raise DuplicateNameError(
                f"{self.noun} '{spec.name}' is registered by both plugin "
                f"'{existing.plugin}' and plugin '{plugin}'; disable one of them with "
                "SSLREG_DISABLE_PLUGINS"
            )
        self._specs[spec.name] = attrs.evolve(spec, plugin=plugin)

    def get(self, name: str) -> S:
        try:
            return self._specs[name]
        except KeyError:
            choices = ", ".join(sorted(self._specs)) or "(none registered)"
            raise UnknownNameError(
                f"unknown {self.noun} '{name}'; choose from: {choices}"
            ) from None

    def create(self, name: str, /, **options: Any) -> Any:
        """Build the named thing: ``spec.factory(**options)``."""
        return self.get(name).factory(**options)  # type: ignore[attr-defined]

    def names(self) -> list[str]:
        return sorted(self._specs)

    def __iter__(self) -> Iterator[S]:
        return iter(self._specs[name] for name in self.names())

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __len__(self) -> int:
        return len(self._specs)


def check_method_defaults(spec: MethodSpec, plugin: str) -> None:
    """Build the method's config and optimizer settings from their defaults now, so a
    default that fails its own validator is this plugin's failure at load time (shown by
    ``sslreg plugins``) rather than a surprise when someone runs the method."""
    builders = {"config": spec.config_class, "optim": lambda: OptimConfig(**spec.optim)}
    for part, build in builders.items():
        try:
            build()
        except Exception as error:  # whatever it raises, the plugin is at fault
            first = (str(error).strip().splitlines() or [""])[0]
            raise PluginError(
                f"plugin '{plugin}' registered method '{spec.name}' whose {part} defaults "
                f"fail their own validation: {type(error).__name__}: {first}"
            ) from None


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
        self.methods: Catalog = Catalog("methods")
        self.backbones: Catalog = Catalog("backbones")
        self.views: Catalog = Catalog("views")
        self.objectives: Catalog = Catalog("objectives")
        self.monitors: Catalog = Catalog("monitors")
        self.datasets: Catalog = Catalog("datasets")
        self.failures: list[PluginFailure] = []
        self.plugins: list[PluginInfo] = []

    def catalog(self, kind: str) -> Catalog:
        return getattr(self, kind)
