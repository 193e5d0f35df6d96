"""The interfaces the engine talks to: methods, view policies and monitors, and the token
API that methods needing patch tokens (MAE, DINO) read from a ViT backbone."""

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

    ``objective`` is the loss module the engine built from the objectives catalog for
    the name in the method's ``MethodSpec`` (:meth:`sslreg.registry.Registry.build_method`);
    it is a submodule, so its parameters (CLIP's logit scale) are trained and saved.
    """

    uses_labels: ClassVar[bool] = False
    # How :meth:`features` reads the backbone. Methods that read it the same way share
    # one random-init floor; a method that overrides ``features`` to read something
    # else (e.g. pooled patch tokens) names its readout, and gets a floor of its own.
    readout: ClassVar[str] = "backbone"

    def __init__(self, config: Any, backbone: nn.Module,
                 objective: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config
        # Before the backbone: its parameters then come first, where a method's own
        # parameters (CLIP's logit scale, before it moved into its objective) came, so
        # optimizer states of older checkpoints still line up.
        self.objective = objective
        self.backbone = backbone
        self.context = RunContext()

    def setup(self, context: RunContext) -> None:
        """Receive the run's context; called once, after ``__init__``."""
        self.context = context

    @abc.abstractmethod
    def training_step(self, views: list[Tensor]) -> StepOutput:
        """Compute the loss on a list of augmented views, each (B, C, H, W) float.

        Leave the method's state alone here (BatchNorm running statistics aside): a
        loss may be computed without an optimizer step following it (a skipped step, a
        check, a learning-rate probe), so queues, EMA targets, centres and counters
        change in :meth:`on_step_end`. Every view should count: each view's images
        change the loss.
        """

    def on_step_end(self, progress: float) -> None:
        """Called after each optimizer step; ``progress`` runs from 0 to 1 over the run.

        The place for state updates (push a queue, move an EMA target or a centre, count
        steps). State that must survive a resume lives in parameters or buffers, so the
        state_dict carries it; a plain tensor attribute is lost on reload.
        """

    @property
    def evaluated_backbone(self) -> nn.Module:
        """The backbone :meth:`features` reads, and ``sslreg export`` writes; a method
        that evaluates another copy (DINO's teacher) overrides this."""
        return self.backbone

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


@attrs.frozen(kw_only=True)
class BackboneExport:
    """A backbone's weights in another library's key names, for ``sslreg export``.

    A backbone offers these through an optional ``exports()`` method returning a list of
    them, one per library whose model has the same architecture. ``code`` is Python
    that builds that library's model as ``model`` and loads the weights from the
    safetensors file named by the variable ``path`` with ``strict=True``; the model card
    shows it, and the export tests run it and compare features.
    """

    library: str  # e.g. "torchvision", "timm": also the export's file name
    state_dict: dict[str, Tensor]
    code: str


@runtime_checkable
class ViewPolicy(Protocol):
    """Batched, on-device augmentation: uint8 (B, C, H, W) -> list of float views.

    A policy whose views are not all ``image_size`` square (multi-crop) also declares
    ``view_sizes``, the side of each view in order; the contract checks read it.
    """

    num_views: int

    def __call__(self, images: Tensor, generator: torch.Generator) -> list[Tensor]: ...


@runtime_checkable
class Monitor(Protocol):
    """Watches embeddings for collapse."""

    def __call__(self, embeddings: Tensor) -> dict[str, float]: ...

    def collapsed(self, metrics: dict[str, float]) -> str | None:
        """A one-line warning when ``metrics`` show collapse, else ``None``."""
        ...


@runtime_checkable
class ViTBackbone(Protocol):
    """The token API of a backbone of family ``"vit"``: exactly what methods read from it
    (MAE: ``embed``, ``encode``, ``grid``, ``patch_size``, ``embed_dim``, ``in_channels``;
    DINO: ``last_self_attention``, ``grid``). ``sslreg.contracts.check_backbone`` checks
    that every registered ViT has these members and that they return these shapes.

    Shapes: images (B, C, H, W) with H and W multiples of ``patch_size``; N = rows * cols
    patches, row-major over the grid; D = ``embed_dim``.
    """

    in_channels: int  # C of the images it takes
    patch_size: int  # side of a square patch, in pixels
    embed_dim: int  # D, the width of every token
    output_dim: int  # width of ``forward``'s features, as every backbone

    def grid(self, images: Tensor) -> tuple[int, int]:
        """(rows, cols) = (H // patch_size, W // patch_size) of the patch grid."""
        ...

    def embed(self, images: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, N, D) patch tokens with their positions, no [CLS]."""
        ...

    def encode(self, tokens: Tensor) -> Tensor:
        """(B, n, D) embedded tokens (any subset of a grid's) -> (B, 1 + n, D): [CLS]
        first, then the given tokens, through the blocks and the final norm."""
        ...

    def forward_tokens(self, images: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, 1 + N, D): ``encode(embed(images))``."""
        ...

    def last_self_attention(self, images: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, heads, 1 + N, 1 + N) softmax attention weights of the last
        block ([CLS] first); each row sums to 1."""
        ...
