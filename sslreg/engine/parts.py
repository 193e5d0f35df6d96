"""One run's parts, built once: its data (with the channel statistics), its method, its
view policy, and the backbone and view policy names they resolved to.

Pretraining, evaluation, the floors, the TensorBoard projector, ``sslreg.testing`` and
the throughput benchmark all start from :func:`assemble` and pass the parts along, so a
run loads each split once and every caller builds a method the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
import torch

from sslreg.config import RunConfig
from sslreg.data import ImageDataset
from sslreg.engine.splits import RunData, load_run_data
from sslreg.errors import ConfigError
from sslreg.interfaces import Method, RunContext, StepCall

if TYPE_CHECKING:  # for annotations only: no import cycle through sslreg.config
    from sslreg.registry import Registry


@attrs.frozen(kw_only=True)
class RunParts:
    """What one run is made of; built by :func:`assemble`."""

    config: RunConfig
    data: RunData  # every split, and the channel statistics, loaded once
    method: Method  # a fresh build (seeded by train.seed) until someone trains it
    policy: Any  # the view policy, built for the pretraining images
    backbone: str  # the backbone's registered name
    views: str  # the view policy's registered name ("" in the config resolved)

    @property
    def pool(self) -> ImageDataset:
        """The images the run pretrains on (``train.train_subset`` of them)."""
        return self.data.pretraining(self.config)


def assemble(config: RunConfig, registry: Registry, data: RunData | None = None) -> RunParts:
    """Load the run's data (unless given) and build its method and view policy.

    The method is built right after ``torch.manual_seed(config.train.seed)``, so the
    run and its random-init floor start from the same weights.
    """
    data = data if data is not None else load_run_data(config, registry)
    torch.manual_seed(config.train.seed)
    method = build_method(config, registry, data)
    return RunParts(config=config, data=data, method=method,
                    policy=build_policy(config, registry, data.pretraining(config), data.stats),
                    backbone=config.backbone, views=config.views_name(registry))


def build_method(config: RunConfig, registry: Registry, data: RunData) -> Method:
    """The method with a fresh backbone, set up with the run's context."""
    # The evaluation split has the pretraining images' channels and size (load_run_data).
    channels, image_size = data.train.channels, data.train.images.shape[-1]
    backbone = registry.backbones.create(
        config.backbone, in_channels=channels, image_size=image_size)
    method = registry.build_method(config.method, config.method_config, backbone)
    pool = data.train if data.pretrain is None else data.pretrain
    if StepCall.of(method).labels and not pool.labelled:
        raise ConfigError(
            f"method '{config.method}' trains with labels but {pool.name} has none; "
            "pretrain it on a labelled dataset or choose a self-supervised method")
    method.setup(run_context(config, data))
    return method


def run_context(config: RunConfig, data: RunData) -> RunContext:
    channels, image_size = data.train.channels, data.train.images.shape[-1]
    return RunContext(
        epochs=config.train.epochs,
        steps_per_epoch=len(data.pretraining(config)) // config.train.batch_size,
        channels=channels, image_size=image_size, class_names=_class_names(data))


def _class_names(data: RunData) -> tuple[str, ...]:
    # What the pretraining labels mean, for methods that train with them.
    return (data.train if data.pretrain is None else data.pretrain).classes


def build_policy(config: RunConfig, registry: Registry, data: ImageDataset,
                 stats: tuple[tuple[float, ...], tuple[float, ...]]) -> Any:
    """The run's view policy; the method's view options apply to its default policy."""
    name = config.views_name(registry)
    spec = registry.methods.get(config.method)
    family = registry.backbones.get(config.backbone).family
    options = spec.policy_options(config.method_config, family) if name == spec.views else {}
    mean, std = stats
    return registry.views.create(name, channels=data.channels,
                                 image_size=data.images.shape[-1], mean=mean, std=std,
                                 **options)
