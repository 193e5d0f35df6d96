"""Every hook a plugin may implement. Registration hooks receive a ``register`` callable
and call it once per spec they provide; an implementation may take fewer arguments than
its spec, so specs can grow without breaking plugins."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("sslreg")
hookimpl = pluggy.HookimplMarker("sslreg")


@hookspec
def register_methods(register: Callable[[Any], None]) -> None:
    """Register SSL methods: call ``register(MethodSpec(...))`` once per method."""


@hookspec
def register_backbones(register: Callable[[Any], None]) -> None:
    """Register backbones: call ``register(BackboneSpec(...))`` once per backbone."""


@hookspec
def register_views(register: Callable[[Any], None]) -> None:
    """Register view policies: call ``register(ViewSpec(...))`` once per policy."""


@hookspec
def register_objectives(register: Callable[[Any], None]) -> None:
    """Register objectives: call ``register(ObjectiveSpec(...))`` once per loss."""


@hookspec
def register_monitors(register: Callable[[Any], None]) -> None:
    """Register collapse monitors: call ``register(MonitorSpec(...))`` once per monitor."""


@hookspec
def register_datasets(register: Callable[[Any], None]) -> None:
    """Register datasets: call ``register(DatasetSpec(...))`` once per dataset."""


@hookspec
def register_commands(cli: Any) -> None:
    """Add click commands to the ``sslreg`` command group ``cli``."""
