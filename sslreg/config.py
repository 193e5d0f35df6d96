"""Run configuration: frozen attrs sections, ``--set a.b=v`` overrides, validation.

Every override goes through ``attrs.evolve`` and so through the field validators: a
wrong key or value is refused with one clear line before any work starts.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
import types
import typing
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import attrs
from attrs import field
from attrs.validators import ge, gt, in_, instance_of, lt

from sslreg.errors import ConfigError

if TYPE_CHECKING:  # for annotations only: no import cycle through sslreg.config
    from sslreg.registry import Registry

OPTIMIZERS = ("sgd", "lars", "adamw")
PRECISIONS = ("auto", "fp32", "bf16")


def _float_pair(value: Any) -> tuple[float, ...]:
    return tuple(float(v) for v in value)


# train.checkpoint_every: a step count ("500"), a time ("30s", "10m", "1h") or "0".
_CADENCE = re.compile(r"(\d+)|(\d+(?:\.\d+)?)([smh])")
_SECONDS = {"s": 1, "m": 60, "h": 3600}


def checkpoint_cadence(text: str) -> tuple[int, float]:
    """``(steps, seconds)`` between mid-epoch checkpoints, 0 where that kind is off:
    ``"500"`` is every 500 steps, ``"10m"`` every 10 minutes, ``"0"`` epoch ends only."""
    match = _CADENCE.fullmatch(text.strip())
    if match is None:
        raise ValueError("checkpoint_every must be a step count (500), a time (30s, 10m, "
                         "1h) or 0 (epoch ends only)")
    steps, amount, unit = match.groups()
    if steps is not None:
        return int(steps), 0.0
    return 0, float(amount) * _SECONDS[unit]


def _cadence(_instance: Any, _attribute: attrs.Attribute, value: str) -> None:
    checkpoint_cadence(value)


def _betas(_instance: Any, attribute: attrs.Attribute, value: tuple) -> None:
    if len(value) != 2 or not all(0 <= v < 1 for v in value):
        raise ValueError(f"{attribute.name} must be two numbers in [0, 1), got {value}")


@attrs.frozen(kw_only=True)
class OptimConfig:
    """Optimizer and schedule. ``lr`` is the base rate for a batch of 256, scaled
    linearly with the batch size (Goyal et al. 2017), warmed up linearly for
    ``warmup_epochs`` then decayed to zero on a cosine."""

    name: str = field(default="sgd", validator=in_(OPTIMIZERS))
    lr: float = field(default=0.3, converter=float, validator=gt(0))
    momentum: float = field(default=0.9, converter=float, validator=[ge(0), lt(1)])
    weight_decay: float = field(default=1e-4, converter=float, validator=ge(0))
    warmup_epochs: float = field(default=1.0, converter=float, validator=ge(0))
    # LARS trust coefficient; SimCLR and BYOL use 1e-3.
    lars_eta: float = field(default=1e-3, converter=float, validator=gt(0))
    # AdamW's (beta1, beta2); MAE and DINO lower beta2 to 0.95 / keep 0.999.
    betas: tuple[float, float] = field(default=(0.9, 0.999), converter=_float_pair,
                                       validator=_betas)
    # AdamW's epsilon; CLIP raises it to 1e-6.
    eps: float = field(default=1e-8, converter=float, validator=gt(0))


@attrs.frozen(kw_only=True)
class TrainConfig:
    """Pretraining budget and machinery."""

    epochs: int = field(default=10, validator=[instance_of(int), ge(1)])
    batch_size: int = field(default=256, validator=[instance_of(int), ge(2)])
    seed: int = field(default=0, validator=[instance_of(int), ge(0)])
    device: str = field(default="auto", validator=instance_of(str))
    precision: str = field(default="auto", validator=in_(PRECISIONS))
    log_every: int = field(default=50, validator=[instance_of(int), ge(1)])
    # 0 uses the whole training split; a CPU budget trains on a fixed random subset.
    train_subset: int = field(default=0, validator=[instance_of(int), ge(0)])
    # torch.compile the backbone (train.compile=true); off by default: unmeasured on a
    # GPU so far, and compiling costs a minute on the CPU for runs of a few minutes.
    compile: bool = field(default=False, validator=instance_of(bool))
    # Also checkpoint inside an epoch, so a killed run loses at most this much: a step
    # count ("500"), a time ("30s", "10m", "1h") or "0" (epoch ends only). It never
    # changes results, so it stays out of the digest.
    checkpoint_every: str = field(default="10m", converter=str, validator=_cadence)


def _same_length_as_k(instance: Any, attribute: attrs.Attribute, value: tuple) -> None:
    if len(value) != len(instance.knn_k):
        raise ValueError(f"{attribute.name} needs one temperature per k in knn_k")


def _float_tuple(value: Any) -> tuple[float, ...]:
    return tuple(float(v) for v in value)


def _fractions(_instance: Any, attribute: attrs.Attribute, value: tuple) -> None:
    if not all(0 < v < 1 for v in value) or len(set(value)) != len(value):
        raise ValueError(f"{attribute.name} must be distinct fractions in (0, 1) such as "
                         f"0.01,0.1; got {value}")


def _shots(_instance: Any, attribute: attrs.Attribute, value: tuple) -> None:
    whole = all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    if not whole or not all(v >= 1 for v in value) or len(set(value)) != len(value):
        raise ValueError(f"{attribute.name} must be distinct whole numbers >= 1 (images per "
                         f"class) such as 1,5,10; got {value}")


@attrs.frozen(kw_only=True)
class EvalConfig:
    """Frozen-backbone evaluation: linear probe and weighted kNN."""

    # The validation split: this share of every class of the training split, drawn with
    # one fixed seed and never trained on. Everything that chooses (defaults, sweeps,
    # tuning, learning tests and curves) reads its scores; the test split is for tables.
    val_fraction: float = field(default=0.1, converter=float, validator=[gt(0), lt(0.5)])
    # 0 uses the whole split; a CPU budget may extract features of a fixed random subset.
    train_subset: int = field(default=0, validator=[instance_of(int), ge(0)])
    val_subset: int = field(default=0, validator=[instance_of(int), ge(0)])
    test_subset: int = field(default=0, validator=[instance_of(int), ge(0)])
    holdout_fraction: float = field(default=0.1, converter=float, validator=[gt(0), lt(0.5)])
    batch_size: int = field(default=1024, validator=[instance_of(int), ge(1)])
    # k=20, T=0.07 as DINO; k=200, T=0.1 as lightly/InstDisc.
    knn_k: tuple[int, ...] = field(default=(20, 200), converter=tuple)
    knn_temperature: tuple[float, ...] = field(
        default=(0.07, 0.1), converter=tuple, validator=_same_length_as_k
    )
    # The learning curve: kNN (the first k) of ``curve_images`` validation images against
    # as many training images, after every ``curve_every`` epochs and after the last;
    # 0 draws no curve.
    curve_every: int = field(default=0, validator=[instance_of(int), ge(0)])
    curve_images: int = field(default=5000, validator=[instance_of(int), ge(100)])
    # The labelled dataset the frozen backbone is scored on, and its folder; "" = the
    # pretraining dataset (and its data_root). Validation is carved from its train split.
    dataset: str = field(default="", validator=instance_of(str))
    data_root: str = field(default="", validator=instance_of(str))
    # Label-efficient probes on the same frozen features: the linear probe fit on a
    # fraction of every class of the training split (label_fractions, e.g. 0.01,0.1) or
    # on k images of every class (shots, e.g. 1,5,10), each on label_subsets fixed
    # subsets, its L2 strength chosen on the validation split. () = none.
    label_fractions: tuple[float, ...] = field(default=(), converter=_float_tuple,
                                               validator=_fractions)
    shots: tuple[int, ...] = field(default=(), converter=tuple, validator=_shots)
    label_subsets: int = field(default=5, validator=[instance_of(int), ge(1)])
    # Fine-tuning (0 epochs = off): a copy of the network and a linear head trained end
    # to end with the labels, crop-and-flip views, cosine schedule; SimCLR's fine-tuning
    # recipe (SGD with momentum 0.9, lr 0.05 per 256 images, no weight decay).
    finetune_epochs: int = field(default=0, validator=[instance_of(int), ge(0)])
    finetune_lr: float = field(default=0.05, converter=float, validator=gt(0))
    finetune_batch_size: int = field(default=256, validator=[instance_of(int), ge(2)])
    finetune_optimizer: str = field(default="sgd", validator=in_(OPTIMIZERS))


# Evaluation keys that only add metrics (label-efficient probes, fine-tuning): they
# change no pretraining and no existing metric, so no digest holds them (not even away
# from their defaults). Turning them on re-evaluates a run; its directory keeps its name.
METRIC_ONLY_KEYS = ("label_fractions", "shots", "label_subsets", "finetune_epochs",
                    "finetune_lr", "finetune_batch_size", "finetune_optimizer")


def _zero_or_at_least_8(_instance: Any, attribute: attrs.Attribute, value: int) -> None:
    if value != 0 and value < 8:
        raise ValueError(f"{attribute.name} must be 0 (as stored) or at least 8, got {value}")


SECTIONS = ("train", "optim", "eval", "method")
TOP_LEVEL = ("dataset", "backbone", "views", "data_root", "image_size")
# Keys added after runs were recorded, with the value that means "as before": at that
# value they are left out of the digest, so existing runs keep their directories.
_NEW_KEYS = {("image_size",): 0, ("eval", "dataset"): "", ("eval", "data_root"): ""}
# Keys that never change what a run computes: left out of the digest, so a run can be
# resumed on another device or with another checkpoint cadence.
_NOT_RESULTS = ("device", "checkpoint_every")


@attrs.frozen(kw_only=True)
class RunConfig:
    """The full, resolved configuration of one pretraining run."""

    method: str = field(validator=instance_of(str))
    dataset: str = field(default="fashion-mnist", validator=instance_of(str))
    backbone: str = field(default="resnet18", validator=instance_of(str))
    views: str = field(default="", validator=instance_of(str))  # "" = the method's default
    # The method's default policy when the run took it (``build`` resolves ``views`` to
    # it, so config.json names the policy that ran), "" when ``views`` was named. The
    # digest keys a default ``views`` as "", as before, so run directories keep names.
    default_views: str = field(default="", validator=instance_of(str))
    data_root: str = field(default="", validator=instance_of(str))
    # 0 keeps the stored size; N resizes every image of the run (pretraining and
    # evaluation) so its shorter side is N, then centre-crops N x N.
    image_size: int = field(default=0, validator=[instance_of(int), _zero_or_at_least_8])
    method_config: Any = field(default=None)
    train: TrainConfig = field(factory=TrainConfig)
    optim: OptimConfig = field(factory=OptimConfig)
    eval: EvalConfig = field(factory=EvalConfig)

    @classmethod
    def build(
        cls, registry: Registry, method: str, overrides: Iterable[str] = (), **top_level: Any
    ) -> RunConfig:
        """The method's defaults, then ``top_level`` fields, then ``--set`` overrides."""
        spec = registry.methods.get(method)
        try:
            method_config = spec.config_class()
        except (TypeError, ValueError) as error:
            raise ConfigError(f"method '{method}' has invalid defaults: {error}") from None
        config = cls(method=method, method_config=method_config, optim=spec.optim)
        config = _evolve(config, "", top_level)
        config = apply_overrides(config, overrides)
        config.check_names(registry)
        return config.resolved(registry)

    def resolved(self, registry: Registry) -> RunConfig:
        """This config with ``views`` naming the policy that runs (the method's default
        when it is "")."""
        if self.views:
            return self
        default = registry.methods.get(self.method).views
        return attrs.evolve(self, views=default, default_views=default)

    def check_names(self, registry: Registry) -> None:
        """Refuse names no plugin registered, listing the valid choices."""
        registry.methods.get(self.method)
        registry.datasets.get(self.dataset)
        if self.eval.dataset:
            registry.datasets.get(self.eval.dataset)
        backbone = registry.backbones.get(self.backbone)
        registry.views.get(self.views_name(registry))
        if not registry.backbones_for(self.method, [self.backbone]):
            families = registry.methods.get(self.method).backbone_families or ()
            fitting = registry.backbones_for(self.method)
            raise ConfigError(
                f"method '{self.method}' needs a {' or '.join(families)} backbone "
                f"({', '.join(fitting) or 'none registered'}); got '{self.backbone}' "
                f"({backbone.family})")

    @property
    def eval_dataset(self) -> str:
        """The dataset the backbone is scored on (``eval.dataset``, else ``dataset``)."""
        return self.eval.dataset or self.dataset

    @property
    def eval_data_root(self) -> str:
        """The folder of :attr:`eval_dataset`: ``eval.data_root``, else ``data_root``
        when it is the pretraining dataset, else "" (the usual places)."""
        if self.eval.data_root:
            return self.eval.data_root
        return self.data_root if self.eval_dataset == self.dataset else ""

    def views_name(self, registry: Registry) -> str:
        """The run's view policy: ``views``, else the method's default. A name for the
        method's default policy under another name (an alias, as ``mae`` is of
        ``crop-flip``) gives the method's own name, so its view options still apply.
        ``views`` itself is kept as written: it is part of the run's digest."""
        default = registry.methods.get(self.method).views
        chosen = self.views or default
        if chosen != default and chosen in registry.views and default in registry.views \
                and registry.views.get(chosen).name == registry.views.get(default).name:
            return default
        return chosen

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], registry: Registry) -> RunConfig:
        """Rebuild a config written by :meth:`to_dict` (e.g. from a run directory)."""
        try:
            spec = registry.methods.get(data["method"])
            config = cls(
                method=data["method"],
                dataset=data["dataset"],
                backbone=data["backbone"],
                views=data["views"],
                default_views=data.get("default_views", ""),
                data_root=data["data_root"],
                image_size=data.get("image_size", 0),
                method_config=spec.config_class(**data["method_config"]),
                train=TrainConfig(**data["train"]),
                optim=OptimConfig(**data["optim"]),
                eval=EvalConfig(**data["eval"]),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ConfigError(f"config does not match this sslreg version: {error}") from None
        return config.resolved(registry)  # written before views were resolved: views ""

    def digest(self) -> str:
        """A short hash of everything that changes the result (not the device, not the
        checkpoint cadence)."""
        data = self.keyed_dict()
        for key in _NOT_RESULTS:
            data["train"].pop(key)
        text = json.dumps(data, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def keyed_dict(self) -> dict[str, Any]:
        """:meth:`to_dict` without the newer keys that are at their "as before" value,
        so hashes of configs written before those keys existed do not change, and
        without the evaluation keys that only add metrics (:data:`METRIC_ONLY_KEYS`).
        ``views`` taken by default is keyed as "", as it was stored before it was
        resolved."""
        data = self.to_dict()
        for key in METRIC_ONLY_KEYS:
            del data["eval"][key]
        if data["views"] == data.pop("default_views"):  # the method's default, keyed as ""
            data["views"] = ""
        for path, default in _NEW_KEYS.items():
            *sections, key = path
            holder = data
            for section in sections:
                holder = holder[section]
            if holder[key] == default:
                del holder[key]
        return data


def apply_overrides(config: RunConfig, overrides: Iterable[str]) -> RunConfig:
    """Apply ``section.key=value`` strings (``method.temperature=0.2``) in order."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"bad --set {item!r}: write it as section.key=value, e.g. "
                              "method.temperature=0.2")
        config = set_value(config, key.strip(), text.strip())
    return config


def apply_metric_overrides(config: RunConfig, overrides: Iterable[str]) -> RunConfig:
    """:func:`apply_overrides` for re-evaluating a finished run: only the evaluation
    keys that add metrics (:data:`METRIC_ONLY_KEYS`); any other key would change what
    the run is, so it is refused with one line."""
    allowed = [f"eval.{key}" for key in METRIC_ONLY_KEYS]
    for item in overrides:
        key = item.partition("=")[0].strip()
        if key in allowed or key not in valid_keys(config):
            continue  # an unknown or malformed key gets apply_overrides' own message
        why = "is part of the run's digest" if key.startswith("eval.") else \
            "would change the run itself"
        raise ConfigError(f"cannot set {key} when re-evaluating a run (it {why}); "
                          f"sslreg eval --set takes only {', '.join(allowed)}")
    return apply_overrides(config, overrides)


def set_value(config: RunConfig, key: str, text: str) -> RunConfig:
    section, _, name = key.rpartition(".")
    if section == "":
        if key not in TOP_LEVEL:
            raise ConfigError(f"unknown key '{key}'; valid keys: {', '.join(valid_keys(config))}")
        return _evolve(config, "", {key: _parse_field(config, "", key, text)})
    if section not in SECTIONS:
        raise ConfigError(f"unknown section '{section}' in '{key}'; choose from: "
                          f"{', '.join(SECTIONS)}")
    target = _section(config, section)
    value = _parse_field(target, section, name, text)
    updated = _evolve(target, section, {name: value})
    return attrs.evolve(config, **{_attribute(section): updated})


def _attribute(section: str) -> str:
    return "method_config" if section == "method" else section


def _section(config: RunConfig, section: str) -> Any:
    return getattr(config, _attribute(section))


def valid_keys(config: RunConfig) -> list[str]:
    keys = list(TOP_LEVEL)
    for section in SECTIONS:
        keys += [f"{section}.{a.name}" for a in attrs.fields(type(_section(config, section)))]
    return keys


def _evolve(target: Any, section: str, changes: dict[str, Any]) -> Any:
    try:
        return attrs.evolve(target, **changes)
    except (TypeError, ValueError) as error:
        prefix = f"{section}." if section else ""
        where = ", ".join(f"{prefix}{k}={v!r}" for k, v in changes.items())
        raise ConfigError(f"bad value {where}: {_first_line(error)}") from None


def _first_line(error: BaseException) -> str:
    return (str(error).splitlines() or [type(error).__name__])[0]


def _parse_field(target: Any, section: str, name: str, text: str) -> Any:
    cls = type(target)
    fields = {a.name: a for a in attrs.fields(cls)}
    prefix = f"{section}." if section else ""
    if name not in fields:
        choices = ", ".join(prefix + n for n in fields)
        raise ConfigError(f"unknown key '{prefix}{name}'; valid keys: {choices}")
    hint = typing.get_type_hints(cls).get(name, Any)
    try:
        return parse_value(text, hint)
    except (TypeError, ValueError, SyntaxError):
        raise ConfigError(
            f"bad value {prefix}{name}={text!r}: expected {_type_name(hint)}"
        ) from None


def spelled(value: Any) -> str:
    """``value`` as ``--set`` spells it, the inverse of :func:`parse_value`: booleans
    lowercase, tuples and lists joined with commas."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (tuple, list)):
        return ",".join(spelled(v) for v in value)
    return str(value)


def parse_value(text: str, hint: Any) -> Any:
    """Parse command-line text into the type a field declares."""
    origin = typing.get_origin(hint)
    if hint is bool:
        lowered = text.lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise ValueError(text)
    if hint in (int, float, str):
        return hint(text)
    if origin is tuple:
        item_type = typing.get_args(hint)[0]
        return tuple(parse_value(part.strip(), item_type) for part in text.split(",") if part)
    if origin in (typing.Union, types.UnionType):
        return _parse_union(text, typing.get_args(hint))
    return ast.literal_eval(text)


def _parse_union(text: str, options: tuple) -> Any:
    if type(None) in options and text.lower() in ("none", "null"):
        return None
    for option in options:
        if option is type(None):
            continue
        try:
            return parse_value(text, option)
        except (TypeError, ValueError, SyntaxError):
            continue
    raise ValueError(text)


def _type_name(hint: Any) -> str:
    if isinstance(hint, type):
        return {"int": "an integer", "float": "a number", "bool": "true or false",
                "str": "text"}.get(hint.__name__, hint.__name__)
    return str(hint).replace("typing.", "")
