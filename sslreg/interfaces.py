"""The interfaces the engine talks to: methods, view policies and monitors."""

from __future__ import annotations

import abc
from typing import Any, ClassVar, Protocol, runtime_checkable

import attrs
import torch
from torch import Tensor, nn


@attrs.frozen
class StepOutput:
    """What one training step returns.

    ``loss`` is the scalar to minimise; ``embeddings`` (B, D) are what the collapse
    monitors watch (usually the projector output of the first view); ``metrics`` are
    detached scalar tensors, logged every N steps (never synchronised per step).
    """

    loss: Tensor
    embeddings: Tensor | None = None
    metrics: dict[str, Tensor] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class RunContext:
    """What a method may need to know about its run beyond its own config.

    Given to :meth:`Method.setup` right after construction, in training and in
    evaluation alike, so schedules measured in epochs (teacher-temperature warm-up,
    frozen prototypes) and class-name captions are built the same way both times.
    """

    epochs: int = 1
    steps_per_epoch: int = 1
    channels: int = 1
    image_size: int = 28
    class_names: tuple[str, ...] = attrs.field(default=(), converter=tuple)

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch


class Method(nn.Module, abc.ABC):
    """Base class of every SSL method.

    A method owns its ``backbone`` (the part evaluated by the linear probe and kNN) and
    whatever heads and target networks it needs. Subclasses implement
    :meth:`training_step`; methods with an EMA target or a queue also override
    :meth:`on_step_end`.

    A method with ``uses_labels = True`` (e.g. image-text contrast, whose captions are
    built from class names) is called as ``training_step(views, labels=labels)``.
    """

    uses_labels: ClassVar[bool] = False
    # How :meth:`features` reads the backbone. Methods that read it the same way share
    # one random-init floor; a method that overrides ``features`` to read something
    # else (e.g. pooled patch tokens) names its readout, and gets a floor of its own.
    readout: ClassVar[str] = "backbone"

    def __init__(self, config: Any, backbone: nn.Module) -> None:
        super().__init__()
        self.config = config
        self.backbone = backbone
        self.context = RunContext()

    def setup(self, context: RunContext) -> None:
        """Receive the run's context; called once, after ``__init__``."""
        self.context = context

    @abc.abstractmethod
    def training_step(self, views: list[Tensor]) -> StepOutput:
        """Compute the loss on a list of augmented views, each (B, C, H, W) float."""

    def on_step_end(self, progress: float) -> None:
        """Called after each optimizer step; ``progress`` runs from 0 to 1 over the run."""

    @torch.no_grad()
    def features(self, images: Tensor) -> Tensor:
        """Frozen features for evaluation: (B, C, H, W) -> (B, D)."""
        return self.backbone(images)

    @torch.no_grad()
    def extra_evaluation(self, images: Tensor, labels: Tensor) -> dict[str, float]:
        """Method-specific metrics (e.g. zero-shot accuracy) on one whole normalised
        scored split (batch it as needed), called for the validation and the test split;
        merged into ``result.json`` beside the linear probe and kNN of that split."""
        return {}

    @torch.no_grad()
    def visualize(self, images: Tensor) -> dict[str, Tensor]:
        """Pictures for TensorBoard from a few fixed normalised validation images, logged
        once per epoch: ``{tag: (N, C, H, W) floats in [0, 1]}``."""
        return {}


@runtime_checkable
class ViewPolicy(Protocol):
    """Batched, on-device augmentation: uint8 (B, C, H, W) -> list of float views."""

    num_views: int

    def __call__(self, images: Tensor, generator: torch.Generator) -> list[Tensor]: ...


@runtime_checkable
class Monitor(Protocol):
    """Watches embeddings for collapse."""

    def __call__(self, embeddings: Tensor) -> dict[str, float]: ...

    def collapsed(self, metrics: dict[str, float]) -> str | None:
        """A one-line warning when ``metrics`` show collapse, else ``None``."""
        ...
