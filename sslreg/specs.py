"""Frozen specs: what a plugin registers. One spec per registered name.

Every spec has a ``name`` (lowercase, digits, ``-`` and ``_``, optionally after one
``namespace/`` prefix, as in ``timm/resnet50``) and a ``factory`` that builds the thing.
The registry fills in ``plugin`` (who registered it).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping
from typing import Any

import attrs
from attrs import field
from attrs.validators import ge, instance_of, is_callable, optional

from sslreg.config import OptimConfig

_NAME = re.compile(r"^([a-z][a-z0-9_\-]*/)?[a-z][a-z0-9_\-]*$")


def _valid_name(_instance: Any, attribute: attrs.Attribute, value: str) -> None:
    if not isinstance(value, str) or not _NAME.match(value):
        raise ValueError(
            f"{attribute.name} {value!r} must start with a lowercase letter and hold only "
            "lowercase letters, digits, '-' and '_', with at most one 'namespace/' prefix"
        )


def _names(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):  # ("mae") is a string, not a tuple of one name
        raise TypeError(f"aliases must be a tuple of names, got the string {value!r}")
    return tuple(value)


def _valid_aliases(instance: Any, attribute: attrs.Attribute, value: tuple[str, ...]) -> None:
    for alias in value:
        _valid_name(instance, attribute, alias)
    if len(set(value)) != len(value) or instance.name in value:
        raise ValueError(f"aliases {value!r} repeat a name (of {instance.name!r})")


def _optim(value: Any) -> OptimConfig:
    """An :class:`OptimConfig`; the ``{field: value}`` dict plugins used to pass converts."""
    if isinstance(value, OptimConfig):
        return value
    if not isinstance(value, Mapping):
        raise TypeError(f"optim must be an sslreg.OptimConfig, got {value!r}")
    unknown = sorted(set(value) - {a.name for a in attrs.fields(OptimConfig)})
    if unknown:
        valid = ", ".join(a.name for a in attrs.fields(OptimConfig))
        raise ValueError(f"optim has no field {', '.join(unknown)}; choose from: {valid}")
    return OptimConfig(**value)


def _attrs_class(_instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if not (isinstance(value, type) and attrs.has(value)):
        raise TypeError(f"{attribute.name} must be an attrs class, got {value!r}")


@attrs.frozen(kw_only=True)
class MethodSpec:
    """An SSL method.

    ``factory(config, backbone)`` returns a :class:`sslreg.interfaces.Method`; ``config``
    is an instance of ``config_class`` (an attrs class whose defaults are the paper's).
    A factory that takes an ``objective`` keyword also gets the module the objectives
    catalog builds for ``objective`` (see :meth:`sslreg.registry.Registry.build_method`);
    its options are the config fields named like the objective factory's keywords, or
    ``objective_options(config)`` where the names differ. ``optim`` is the method's
    recommended :class:`sslreg.config.OptimConfig` (a ``{field: value}`` dict is
    converted), checked when the spec is built. ``view_options(config)``, if given, maps the
    method's config to options for its default view policy (e.g. the number of local
    crops), so ``--set method.*`` can shape the views; one that also takes a
    ``backbone_family`` keyword gets the run's backbone family (``"convnet"``,
    ``"vit"``), for a paper whose recipe differs by backbone (DINO's crop scales); call
    it through :meth:`policy_options`. ``backbone_families`` names the
    backbone families the method works with (``None``: any), e.g. ``("vit",)`` for a
    method that needs patch tokens.
    """

    name: str = field(validator=_valid_name)
    factory: Callable[..., Any] = field(validator=is_callable())
    config_class: type = field(validator=_attrs_class)
    paper: str = field(validator=instance_of(str))
    views: str = field(validator=instance_of(str))
    objective: str = field(validator=instance_of(str))
    description: str = field(default="", validator=instance_of(str))
    optim: OptimConfig = field(factory=OptimConfig, converter=_optim)
    objective_options: Callable[[Any], dict[str, Any]] | None = field(
        default=None, validator=optional(is_callable()))
    view_options: Callable[[Any], dict[str, Any]] | None = field(
        default=None, validator=optional(is_callable()))
    backbone_families: tuple[str, ...] | None = field(
        default=None, converter=attrs.converters.optional(tuple))
    plugin: str | None = field(default=None, validator=optional(instance_of(str)))

    def policy_options(self, config: Any, backbone_family: str) -> dict[str, Any]:
        """Options for the default view policy from ``view_options`` (none without it)."""
        if self.view_options is None:
            return {}
        # Plugins written before the keyword existed keep working unchanged.
        if "backbone_family" in inspect.signature(self.view_options).parameters:
            return self.view_options(config, backbone_family=backbone_family)
        return self.view_options(config)


@attrs.frozen(kw_only=True)
class BackboneSpec:
    """A backbone: ``factory(in_channels, image_size)`` returns an ``nn.Module`` mapping
    ``(B, C, H, W)`` float images to ``(B, output_dim)`` features, with ``output_dim``.
    ``family`` groups backbones by what they offer methods: ``"convnet"`` or ``"vit"``
    (patch tokens: ``embed``, ``encode``, ``forward_tokens``), or a plugin's own."""

    name: str = field(validator=_valid_name)
    factory: Callable[..., Any] = field(validator=is_callable())
    family: str = field(default="convnet", validator=_valid_name)
    description: str = field(default="", validator=instance_of(str))
    plugin: str | None = field(default=None, validator=optional(instance_of(str)))


@attrs.frozen(kw_only=True)
class ViewSpec:
    """A view policy: ``factory(channels=, image_size=, mean=, std=, **options)`` returns a
    :class:`sslreg.interfaces.ViewPolicy`. ``aliases`` are other names the catalog
    accepts for it (a policy's former names), never listed as policies of their own."""

    name: str = field(validator=_valid_name)
    factory: Callable[..., Any] = field(validator=is_callable())
    description: str = field(default="", validator=instance_of(str))
    aliases: tuple[str, ...] = field(default=(), converter=_names, validator=_valid_aliases)
    plugin: str | None = field(default=None, validator=optional(instance_of(str)))


@attrs.frozen(kw_only=True)
class ObjectiveSpec:
    """A loss: ``factory(**options)`` returns an ``nn.Module``."""

    name: str = field(validator=_valid_name)
    factory: Callable[..., Any] = field(validator=is_callable())
    paper: str = field(default="", validator=instance_of(str))
    description: str = field(default="", validator=instance_of(str))
    plugin: str | None = field(default=None, validator=optional(instance_of(str)))


@attrs.frozen(kw_only=True)
class MonitorSpec:
    """A collapse monitor: ``factory()`` returns a :class:`sslreg.interfaces.Monitor`."""

    name: str = field(validator=_valid_name)
    factory: Callable[..., Any] = field(validator=is_callable())
    description: str = field(default="", validator=instance_of(str))
    plugin: str | None = field(default=None, validator=optional(instance_of(str)))


def _class_count(_instance: Any, attribute: attrs.Attribute, value: int | None) -> None:
    if value is not None and (not isinstance(value, int) or value == 1 or value < 0):
        raise ValueError(f"{attribute.name} must be None, 0 (unlabelled) or >= 2, got {value!r}")


@attrs.frozen(kw_only=True)
class DatasetSpec:
    """An image dataset: ``loader(split, root)`` returns an :class:`sslreg.data.ImageDataset`
    for ``split`` in ``("train", "test")``; ``root`` is a folder given by the user, or
    ``None`` to search the usual places. A loader that also takes ``image_size`` (an int,
    0 = as stored) resizes while reading; any other loader's images are resized after.

    ``num_classes`` (0 = unlabelled), ``channels`` and ``image_size`` describe what the
    loader returns; ``None`` means the files decide (e.g. an image folder). Every value
    that is not ``None`` is checked against each loaded split, and a mismatch is a
    :class:`sslreg.errors.PluginError` naming the dataset, the field and both values.
    """

    name: str = field(validator=_valid_name)
    loader: Callable[..., Any] = field(validator=is_callable())
    num_classes: int | None = field(default=None, validator=_class_count)
    channels: int | None = field(default=None, validator=optional(attrs.validators.in_((1, 3))))
    image_size: int | None = field(default=None, validator=optional([instance_of(int), ge(8)]))
    description: str = field(default="", validator=instance_of(str))
    needs_root: bool = field(default=False, validator=instance_of(bool))
    plugin: str | None = field(default=None, validator=optional(instance_of(str)))


SPEC_TYPES: dict[str, type] = {
    "methods": MethodSpec,
    "backbones": BackboneSpec,
    "views": ViewSpec,
    "objectives": ObjectiveSpec,
    "monitors": MonitorSpec,
    "datasets": DatasetSpec,
}
