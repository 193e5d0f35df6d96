"""The interfaces the engine talks to: methods, view policies and monitors, and the token
API that methods needing patch tokens (MAE, DINO) read from a ViT backbone."""

from __future__ import annotations

import abc
import inspect
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import attrs
import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from sslreg.schedules import Schedule


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


@attrs.frozen(kw_only=True)
class Clock:
    """Where one optimizer step stands in the run, and the method's schedules there.

    The engine owns the count: a method reads the step from here instead of counting
    steps itself, so nothing of it has to survive a resume. ``step`` is the steps done
    before this one (0 on the first step); ``values`` holds this step's value of each
    schedule the method declared (:meth:`Method.schedules`) as host floats, so reading
    one never waits on the device.
    """

    step: int = 0
    epoch: int = 0
    epoch_step: int = 0  # steps done inside ``epoch`` before this one
    total_steps: int = 1
    values: Mapping[str, float] = attrs.field(factory=dict)

    @property
    def progress(self) -> float:
        """Share of the run done once this step's update is made: 1 on the last step."""
        return (self.step + 1) / self.total_steps

    def __getitem__(self, name: str) -> float:
        return self.values[name]


@attrs.frozen
class StepCall:
    """How the engine calls one method's ``training_step`` and ``on_step_end``, decided
    once from their signatures: the one place that decides what a step receives.

    Labels go only to a method with ``uses_labels``; the clock only to a
    ``training_step`` with a ``clock`` parameter; ``on_step_end`` gets the
    :class:`Clock` when its parameter is named ``clock``, else ``clock.progress`` (the
    contract before the clock existed, which third-party methods may still follow).
    """

    labels: bool
    clock: bool
    end_takes_clock: bool

    @classmethod
    def of(cls, method: Method) -> StepCall:
        step = inspect.signature(method.training_step).parameters
        end = list(inspect.signature(method.on_step_end).parameters)
        return cls(labels=method.uses_labels, clock="clock" in step,
                   end_takes_clock=end[:1] == ["clock"])

    def arguments(self, labels: Tensor | None, clock: Clock) -> dict[str, Any]:
        """The keyword arguments of ``training_step`` besides the views."""
        arguments: dict[str, Any] = {"labels": labels} if self.labels else {}
        if self.clock:
            arguments["clock"] = clock
        return arguments

    def end(self, method: Method, clock: Clock) -> None:
        method.on_step_end(clock if self.end_takes_clock else clock.progress)


class Method(nn.Module, abc.ABC):
    """Base class of every SSL method.

    A method owns its ``backbone`` (the part evaluated by the linear probe and kNN) and
    whatever heads and target networks it needs. Subclasses implement
    :meth:`training_step`; methods with an EMA target or a queue also override
    :meth:`on_step_end`.

    A method with ``uses_labels = True`` (e.g. image-text contrast, whose captions are
    built from class names) is called as ``training_step(views, labels=labels)``; one
    whose ``training_step`` has a ``clock`` parameter also gets ``clock=`` (a
    :class:`Clock`). Per-step values (EMA momentum, temperatures, weight decay) are
    declared by :meth:`schedules` and read from the clock.

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

    def schedules(self, context: RunContext) -> dict[str, Schedule]:
        """Per-step values this method reads from its :class:`Clock`, by name.

        The engine computes each once for the run's ``context.total_steps`` (as it does
        the learning rate), keeps them in checkpoints, and refuses a resume whose run
        has another number of steps. ``"weight_decay"`` is applied by the engine: each
        step's value times ``optim.weight_decay`` on the decayed parameter groups.
        ``"lr"`` is the engine's own and may not be declared.
        """
        return {}

    @abc.abstractmethod
    def training_step(self, views: list[Tensor]) -> StepOutput:
        """Compute the loss on a list of augmented views, each (B, C, H, W) float.

        Declare ``training_step(self, views, clock)`` to get this step's :class:`Clock`.

        Leave the method's state alone here (BatchNorm running statistics aside): a
        loss may be computed without an optimizer step following it (a skipped step, a
        check, a learning-rate probe), so queues, EMA targets, centres and counters
        change in :meth:`on_step_end`. Every view should count: each view's images
        change the loss.
        """

    def on_step_end(self, clock: Clock) -> None:
        """Called after each optimizer step with the step's :class:`Clock`.

        The place for state updates (push a queue, move an EMA target or a centre).
        Never count steps: read ``clock.step``. State that must survive a resume lives
        in parameters or buffers, so the state_dict carries it; a plain tensor attribute
        is lost on reload. (A method whose parameter is not named ``clock`` gets
        ``clock.progress``, a float from 0 to 1, as before the clock existed.)
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


def is_vit(backbone: nn.Module) -> bool:
    """Whether ``backbone`` is of family ``"vit"``: it offers the token API of
    :class:`ViTBackbone` (``sslreg.contracts.check_backbone`` holds every registered
    ``"vit"`` backbone to it). The one test methods use to pick a ViT recipe."""
    return isinstance(backbone, ViTBackbone)
