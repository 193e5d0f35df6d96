"""The plugin manager: built-in plugins, entry-point plugins, and the registry they fill.

Loading is idempotent. A plugin that fails to import, misspells a hook, raises in a hook
or registers something invalid is recorded as a :class:`PluginFailure` (shown by
``sslreg plugins``) and every other plugin keeps working.

Environment switches (comma-separated entry-point names):
``SSLREG_DISABLE_PLUGINS`` skips the named plugins; ``SSLREG_LOAD_PLUGINS`` loads only
the named entry-point plugins (set it to an empty string to load none).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
from typing import Any

import pluggy

from sslreg import hookspecs
from sslreg.errors import SslregError
from sslreg.registry import Catalog, PluginFailure, PluginInfo, Registry
from sslreg.specs import SPEC_TYPES

ENTRY_POINT_GROUP = "sslreg"
# The core's own registrations, one module per kind (the library code they register
# lives in sslreg.backbones, sslreg.views, ...; importing those registers nothing).
DEFAULT_PLUGINS = (
    "sslreg.builtins.backbones",
    "sslreg.builtins.views",
    "sslreg.builtins.objectives",
    "sslreg.builtins.monitors",
    "sslreg.builtins.datasets",
)
# What the default plugins were called before they had modules of their own, so an
# SSLREG_DISABLE_PLUGINS written then still disables them.
_FORMER_NAMES = {
    "sslreg.backbones": "sslreg.builtins.backbones",
    "sslreg.views": "sslreg.builtins.views",
    "sslreg.objectives": "sslreg.builtins.objectives",
    "sslreg.monitors": "sslreg.builtins.monitors",
    "sslreg.data": "sslreg.builtins.datasets",
}

pm = pluggy.PluginManager("sslreg")
pm.add_hookspecs(hookspecs)

_loaded = False
_load_failures: list[PluginFailure] = []
_versions: dict[str, str] = {}


def _env_names(variable: str) -> set[str] | None:
    value = os.environ.get(variable)
    if value is None:
        return None
    return {name.strip() for name in value.split(",") if name.strip()}


def load_plugins() -> pluggy.PluginManager:
    """Register the built-in plugins and every ``sslreg`` entry point, once."""
    global _loaded
    if _loaded:
        return pm
    _loaded = True
    disabled = {_FORMER_NAMES.get(name, name)
                for name in _env_names("SSLREG_DISABLE_PLUGINS") or ()}
    for module_name in DEFAULT_PLUGINS:
        if module_name not in disabled:
            pm.register(importlib.import_module(module_name), name=module_name)
    _load_entry_points(disabled, _env_names("SSLREG_LOAD_PLUGINS"))
    _drop_invalid_plugins()
    return pm


def _load_entry_points(disabled: set[str], only: set[str] | None) -> None:
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        name = entry_point.name
        if name in disabled or (only is not None and name not in only):
            continue
        if pm.get_plugin(name) is not None:
            continue
        try:
            module = entry_point.load()
        except Exception as error:  # a broken plugin must not break the others
            _load_failures.append(PluginFailure(name, f"import failed: {_describe(error)}"))
            continue
        pm.register(module, name=name)
        if entry_point.dist is not None:
            _versions[name] = entry_point.dist.version


def _drop_invalid_plugins() -> None:
    """Unregister plugins whose hook names match no hookspec (a typo would be silent)."""
    while True:
        try:
            pm.check_pending()
            return
        except pluggy.PluginValidationError as error:
            name = pm.get_name(error.plugin) or repr(error.plugin)
            pm.unregister(error.plugin)
            _load_failures.append(PluginFailure(name, f"invalid hook: {error}"))


def _describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def _call(impl: pluggy.HookImpl, **kwargs: Any) -> Any:
    # An implementation may take fewer arguments than its spec.
    return impl.function(**{name: kwargs[name] for name in impl.argnames})


def load_registry() -> Registry:
    """Build a fresh :class:`Registry` from every loaded plugin."""
    load_plugins()
    registry = Registry()
    registry.failures.extend(_load_failures)
    registered: dict[str, list[tuple[str, str]]] = {}
    for kind in SPEC_TYPES:
        hook = getattr(pm.hook, f"register_{kind}")
        for impl in hook.get_hookimpls():
            name = pm.get_name(impl.plugin) or repr(impl.plugin)
            added = _register_from(impl, registry.catalog(kind), name, registry.failures)
            registered.setdefault(name, []).extend((kind, spec) for spec in added)
    # Only now: a method may name an objective that a plugin loaded after it registers.
    registry.failures.extend(registry.check_objectives())
    for names in registered.values():
        names[:] = [(kind, n) for kind, n in names
                    if kind != "methods" or n in registry.methods]
    registry.plugins.extend(_plugin_infos(registered))
    return registry


def _register_from(
    impl: pluggy.HookImpl, catalog: Catalog[Any], plugin: str, failures: list[PluginFailure]
) -> list[str]:
    specs: list[Any] = []
    try:
        _call(impl, register=specs.append)
    except Exception as error:  # a hook that raises loses its registrations, no more
        failures.append(PluginFailure(plugin, f"register_{catalog.kind} raised {_describe(error)}"))
        return []
    added = []
    for spec in specs:
        try:
            catalog.add(spec, plugin)
        except SslregError as error:
            failures.append(PluginFailure(plugin, str(error)))
            continue
        added.append(spec.name)
    return added


def _plugin_infos(registered: dict[str, list[tuple[str, str]]]) -> list[PluginInfo]:
    infos = []
    for name, plugin in sorted(pm.list_name_plugin()):
        hooks = tuple(sorted(caller.name for caller in pm.get_hookcallers(plugin) or ()))
        version = _versions.get(name)
        if version is None and name.startswith("sslreg."):
            version = importlib.metadata.version("sslreg")
        infos.append(PluginInfo(name, version, tuple(registered.get(name, ())), hooks))
    return infos


def add_commands(cli: Any) -> list[PluginFailure]:
    """Let plugins add click commands; a hook that raises is skipped and reported."""
    load_plugins()
    failures = []
    for impl in pm.hook.register_commands.get_hookimpls():
        try:
            _call(impl, cli=cli)
        except Exception as error:
            name = pm.get_name(impl.plugin) or repr(impl.plugin)
            failures.append(PluginFailure(name, f"register_commands raised {_describe(error)}"))
    return failures


def hook_implementers(hook_name: str) -> list[str]:
    """Names of the plugins that implement ``hook_name``."""
    load_plugins()
    caller: Any = getattr(pm.hook, hook_name, None)
    # A plugin's misspelled hookimpl gives pluggy a caller without a spec: not a hook.
    if caller is None or caller.spec is None:
        valid = ", ".join(sorted(n for n in dir(pm.hook) if n.startswith("register_")
                                 and getattr(pm.hook, n).spec is not None))
        raise SslregError(f"unknown hook '{hook_name}'; choose from: {valid}")
    return sorted(pm.get_name(impl.plugin) for impl in caller.get_hookimpls())
