"""``sslreg new-plugin NAME``: write a complete, installable method plugin to start from.

The templates (``templates/*.tmpl``, package data) are a working SimCLR-style method, its
``pyproject.toml`` with the ``sslreg`` entry point, a README and tests that call
:mod:`sslreg.testing`; ``${name}`` and ``${Name}`` in them become the plugin's name and
its CamelCase form.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from string import Template

from sslreg.errors import SslregError

# The name is also the module suffix (sslreg_NAME) and the entry point, so it must be a
# Python identifier; lowercase like every registered name.
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
NAME_RULE = "a lowercase letter, then lowercase letters, digits or '_' (e.g. 'mymethod')"

# template file -> path in the plugin folder ("{name}" is filled in)
FILES = {
    "pyproject.toml.tmpl": "pyproject.toml",
    "README.md.tmpl": "README.md",
    "module.py.tmpl": "sslreg_{name}/__init__.py",
    "test.py.tmpl": "tests/test_{name}.py",
}


def check_name(name: str, taken: set[str]) -> None:
    """Refuse a name that is not an identifier-like lowercase name or is already used."""
    if not _NAME.match(name):
        raise SslregError(f"plugin name {name!r} is not valid: use {NAME_RULE}")
    if name in taken:
        raise SslregError(f"'{name}' is already a registered method or plugin "
                          "(see `sslreg methods` and `sslreg plugins`); choose another name")


def taken_names() -> set[str]:
    """Registered method names and loaded plugin names, which a new plugin must not reuse."""
    from sslreg.plugins import load_registry

    registry = load_registry()
    return {*registry.methods.names(), *(info.name for info in registry.plugins),
            *(failure.name for failure in registry.failures)}


def camel_case(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_") if part) or name


def target_folder(name: str, parent: Path) -> Path:
    """``parent/sslreg-NAME``, refused when it exists and holds anything."""
    target = parent / f"sslreg-{name}"
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise SslregError(f"{target} already exists and is not empty; remove it or pass "
                          "another --dir")
    return target


def render(template: str, name: str) -> str:
    text = resources.files(__package__).joinpath("templates", template).read_text()
    return Template(text).substitute(name=name, Name=camel_case(name))


def new_plugin(name: str, parent: Path, taken: set[str] | None = None) -> list[Path]:
    """Write the plugin ``name`` into ``parent/sslreg-NAME``; return the files written.

    Raises:
        SslregError: a bad or taken name, a non-empty target folder, or one that cannot
            be written.
    """
    check_name(name, taken_names() if taken is None else taken)
    target = target_folder(name, parent)
    written = []
    for template, relative in FILES.items():
        path = target / relative.format(name=name)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(render(template, name))
        except OSError as error:  # e.g. a read-only --dir: one line, not a traceback
            raise SslregError(f"cannot write {path}: {error.strerror or error}") from None
        written.append(path)
    return written
