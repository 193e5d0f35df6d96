"""Contract checks over every catalog but methods: backbones, view policies, datasets and
collapse monitors, as timm tests every registered model.

Each check takes a registered name (and optionally a registry) and raises
``AssertionError`` with one line saying what is wrong. They are re-exported by
:mod:`sslreg.testing`, so a plugin author runs them in their own tests::

    from sslreg import testing

    def test_my_backbone():
        testing.check_backbone("my-backbone")

``backbone_names()``, ``view_policy_names()``, ``dataset_names()`` and
``monitor_names()`` list what is registered, for ``pytest.mark.parametrize``.
"""

from __future__ import annotations

import io
import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from sslreg.errors import DataError
from sslreg.interfaces import Monitor, ViewPolicy, ViTBackbone, is_vit
from sslreg.plugins import load_registry
from sslreg.views import ops

if TYPE_CHECKING:  # for annotations only: no import cycle through sslreg.config
    from sslreg.registry import Registry

# (channels, image side) pairs every backbone and view policy must handle; the costlier
# backbone checks (round trip, gradients, tokens) run on the first and last.
SHAPES = ((1, 28), (3, 28), (1, 32), (3, 32))
# A larger colour size for view policies: the built-ins blur only above 32 px.
LARGE_SHAPE = (3, 96)
# What a data error's message may name as the fix, one of them at least.
FIX_HINTS = ("--data-root", "$SSLREG_DATA", "apt-get", "download", "pip install", "create ",
             "put ")


def _names(kind: str) -> Callable[[], list[str]]:
    def names() -> list[str]:
        return load_registry().catalog(kind).names()

    names.__doc__ = f"Every registered {kind[:-1]} name, for ``pytest.mark.parametrize``."
    return names


backbone_names = _names("backbones")
view_policy_names = _names("views")
dataset_names = _names("datasets")
monitor_names = _names("monitors")


# --- Backbones ---------------------------------------------------------------------------


def _new_backbone(name: str, registry: Registry, channels: int, size: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return registry.backbones.create(name, in_channels=channels, image_size=size)


def check_backbone(name: str, registry: Registry | None = None) -> None:
    """At every (channels, size) of :data:`SHAPES`: (B, output_dim) features with an int
    ``output_dim``, deterministic in eval mode, the same after a state_dict round trip
    into a differently seeded copy, and a gradient on every trainable parameter.
    Backbones of family ``"vit"`` also implement :class:`sslreg.interfaces.ViTBackbone`
    with the shapes its docstrings give, and no other family does (methods tell a ViT
    by :func:`sslreg.interfaces.is_vit`)."""
    registry = registry or load_registry()
    for channels, size in SHAPES:
        where = f"{name} at {channels}x{size}x{size}"
        net = _new_backbone(name, registry, channels, size, seed=0)
        images = torch.rand(2, channels, size, size, generator=torch.Generator().manual_seed(0))
        _check_features(where, net, images)
        if (channels, size) not in (SHAPES[0], SHAPES[-1]):
            continue
        _check_round_trip(where, net, _new_backbone(name, registry, channels, size, 1), images)
        _check_gradients(where, net, images)
        family = registry.backbones.get(name).family
        if family == "vit":
            check_vit_tokens(where, net, images)
        assert is_vit(net) == (family == "vit"), (
            f"{where}: registered as family {family!r} but is_vit says {is_vit(net)}: "
            "methods pick their ViT recipe by is_vit, so the token API of "
            "sslreg.interfaces.ViTBackbone belongs to 'vit' backbones alone")


def _check_features(where: str, net: nn.Module, images: Tensor) -> None:
    dim = getattr(net, "output_dim", None)
    assert isinstance(dim, int) and not isinstance(dim, bool), \
        f"{where}: output_dim must be an int attribute, got {dim!r}"
    net.eval()
    with torch.no_grad():
        first, second = net(images), net(images)
    assert first.shape == (len(images), dim), \
        f"{where}: features are {tuple(first.shape)}, expected ({len(images)}, {dim})"
    assert torch.isfinite(first).all(), f"{where}: features are not finite"
    assert torch.equal(first, second), f"{where}: two eval-mode forward passes differ"


def _check_round_trip(where: str, net: nn.Module, other: nn.Module, images: Tensor) -> None:
    net.eval()
    other.eval()
    with torch.no_grad():
        assert not torch.allclose(net(images), other(images)), \
            f"{where}: two seeds built identical backbones"
        buffer = io.BytesIO()
        torch.save(net.state_dict(), buffer)
        buffer.seek(0)
        other.load_state_dict(torch.load(buffer, weights_only=True))
        assert torch.allclose(net(images), other(images)), \
            f"{where}: a copy loaded from its state_dict computes other features"


def _check_gradients(where: str, net: nn.Module, images: Tensor) -> None:
    net.train()
    net.zero_grad()
    features = net(images)
    # A random readout, so no parameter's gradient cancels by symmetry.
    weights = torch.randn(features.shape, generator=torch.Generator().manual_seed(1))
    (features * weights).sum().backward()
    missing = [key for key, p in net.named_parameters()
               if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert not missing, f"{where}: no gradient reaches {len(missing)} parameters, e.g. " \
        f"{missing[:3]}"


def check_vit_tokens(where: str, net: nn.Module, images: Tensor) -> None:
    """``net`` satisfies :class:`~sslreg.interfaces.ViTBackbone` and its token methods
    return the documented shapes on ``images`` (B, C, H, W)."""
    assert isinstance(net, ViTBackbone), (
        f"{where}: a 'vit' backbone must implement sslreg.interfaces.ViTBackbone; missing "
        f"{[m for m in _protocol_members() if not hasattr(net, m)]}")
    batch, channels, height, width = images.shape
    assert net.in_channels == channels, f"{where}: in_channels is {net.in_channels}"
    grid = net.grid(images)
    assert tuple(grid) == (height // net.patch_size, width // net.patch_size), \
        f"{where}: grid {grid} does not match patch_size {net.patch_size}"
    patches, dim = grid[0] * grid[1], net.embed_dim
    net.eval()
    with torch.no_grad():
        tokens = net.embed(images)
        _expect_shape(where, "embed", tokens, (batch, patches, dim))
        _expect_shape(where, "encode of 3 tokens", net.encode(tokens[:, :3]), (batch, 4, dim))
        _expect_shape(where, "forward_tokens", net.forward_tokens(images),
                      (batch, 1 + patches, dim))
        attention = net.last_self_attention(images)
    assert attention.ndim == 4 and attention.shape[0] == batch and \
        attention.shape[2:] == (1 + patches, 1 + patches), \
        f"{where}: last_self_attention is {tuple(attention.shape)}, expected " \
        f"({batch}, heads, {1 + patches}, {1 + patches})"
    assert torch.allclose(attention.sum(-1), torch.ones(())), \
        f"{where}: last_self_attention rows do not sum to 1"


def _protocol_members() -> list[str]:
    return ["in_channels", "patch_size", "embed_dim", "output_dim", "grid", "embed",
            "encode", "forward_tokens", "last_self_attention"]


def _expect_shape(where: str, what: str, tensor: Tensor, shape: tuple[int, ...]) -> None:
    assert tuple(tensor.shape) == shape, \
        f"{where}: {what} is {tuple(tensor.shape)}, expected {shape}"


# --- View policies -----------------------------------------------------------------------


def _policy(name: str, registry: Registry, channels: int, size: int, **options: Any) -> Any:
    return registry.views.create(name, channels=channels, image_size=size,
                                 mean=(0.5,) * channels, std=(0.25,) * channels, **options)


def _uint8_images(channels: int, size: int, batch: int = 8) -> Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (batch, channels, size, size), dtype=torch.uint8,
                         generator=generator)


def check_view_policy(name: str, registry: Registry | None = None) -> None:
    """At every (channels, size) of :data:`SHAPES` and :data:`LARGE_SHAPE`: ``num_views``
    float (B, C, S, S) views, S the policy's ``view_sizes`` (default: the image size);
    the same seed gives the same views, another seed others. Where the policy's options
    jitter colour (``saturation`` or ``hue``), colour batches get new colours; where it
    blurs (``blur_p``), its views are smoother than without blur."""
    registry = registry or load_registry()
    for channels, size in (*SHAPES, LARGE_SHAPE):
        where = f"{name} at {channels}x{size}x{size}"
        policy = _policy(name, registry, channels, size)
        assert isinstance(policy, ViewPolicy), f"{where}: not an sslreg.ViewPolicy"
        images = _uint8_images(channels, size)
        _check_views(where, policy, images, size)
        _check_seeds(where, policy, images)
        if channels == 3:
            _check_colour(where, policy)
            _check_blur(where, policy, name, registry, channels, size)


def _check_views(where: str, policy: Any, images: Tensor, size: int) -> None:
    try:
        views = policy(images, torch.Generator().manual_seed(0))
    except Exception as error:  # whatever it raises, the policy fails this shape
        raise AssertionError(f"{where}: the policy raised {type(error).__name__}: "
                             f"{str(error).splitlines()[0] if str(error) else ''}") from error
    assert len(views) == policy.num_views, \
        f"{where}: {len(views)} views, but num_views is {policy.num_views}"
    sizes = tuple(getattr(policy, "view_sizes", (size,) * policy.num_views))
    assert len(sizes) == len(views), f"{where}: view_sizes names {len(sizes)} views"
    batch, channels = images.shape[:2]
    for index, (view, side) in enumerate(zip(views, sizes, strict=True)):
        assert view.dtype == torch.float32, f"{where}: view {index} is {view.dtype}"
        assert tuple(view.shape) == (batch, channels, side, side), \
            f"{where}: view {index} is {tuple(view.shape)}, expected " \
            f"{(batch, channels, side, side)}"
        assert torch.isfinite(view).all(), f"{where}: view {index} is not finite"


def _check_seeds(where: str, policy: Any, images: Tensor) -> None:
    def views(seed: int) -> list[Tensor]:
        return policy(images, torch.Generator().manual_seed(seed))

    first, again, other = views(0), views(0), views(1)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True)), \
        f"{where}: the same seed gave different views"
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True)), \
        f"{where}: two seeds gave the same views"


def _option(policy: Any, name: str) -> float:
    return float(getattr(getattr(policy, "options", None), name, 0.0) or 0.0)


# A flat colour with every channel below 0.5, so that solarizing leaves it alone.
_FLAT_COLOUR = (0.35, 0.2, 0.1)


def _check_colour(where: str, policy: Any) -> None:
    """Crops, flips and blur keep a flat colour; brightness, contrast, saturation and
    grayscale only scale its chroma (colour minus grey). Only a hue shift turns it, so
    a policy with hue jitter must turn some view's chroma, and one with saturation
    jitter must give some view a colour that is neither the input's nor its grey."""
    if _option(policy, "jitter_p") <= 0:
        return
    colour = torch.tensor(_FLAT_COLOUR).view(1, 3, 1, 1)
    size = policy.image_size
    images = (colour * 255).round().to(torch.uint8).expand(16, 3, size, size).contiguous()
    mean, std = torch.tensor(policy.mean).view(3, 1), torch.tensor(policy.std).view(3, 1)
    pixels = images[:1, :, 0, 0].float().T / 255  # (3, 1)
    seen = torch.cat([(v.flatten(2).mean(2).T * std + mean)
                      for v in policy(images, torch.Generator().manual_seed(0))], dim=1)
    chroma, input_chroma = _chroma(seen), _chroma(pixels)  # (3, V*B), (3, 1)
    if _option(policy, "saturation") > 0 or _option(policy, "hue") > 0:
        new = ((seen - pixels).abs().amax(0) > 0.02) & (chroma.norm(dim=0) > 0.02)
        assert new.any(), f"{where}: colour jitter gave no view of a colour batch a new colour"
    if _option(policy, "hue") > 0:
        cosine = (chroma * input_chroma).sum(0) / (chroma.norm(dim=0) * input_chroma.norm())
        turned = (chroma.norm(dim=0) > 0.02) & (cosine < math.cos(math.radians(5)))
        assert turned.any(), f"{where}: hue jitter turned no view's colour"


def _chroma(colours: Tensor) -> Tensor:
    """(3, N) RGB colours -> (3, N) colour minus its BT.601 grey."""
    return colours - ops.luma(colours.T.reshape(-1, 3, 1, 1)).reshape(1, -1)


def high_frequency_energy(images: Tensor) -> Tensor:
    """Mean squared difference between horizontally and vertically adjacent pixels."""
    across = images[..., :, 1:] - images[..., :, :-1]
    down = images[..., 1:, :] - images[..., :-1, :]
    return across.square().mean() + down.square().mean()


def checkerboard(batch: int, channels: int, size: int, square: int = 4) -> Tensor:
    """(batch, channels, size, size) uint8 squares of 64 and 192."""
    rows = torch.arange(size) // square
    board = ((rows.view(-1, 1) + rows.view(1, -1)) % 2) * 128 + 64
    return board.to(torch.uint8).expand(batch, channels, size, size).contiguous()


def _check_blur(where: str, policy: Any, name: str, registry: Registry, channels: int,
                size: int) -> None:
    """Where the policy blurs, its views of a checkerboard have less high-frequency
    energy than those of the same policy built with ``blur_p=0``."""
    if max(getattr(policy, "blur_p", (0.0,)), default=0.0) <= 0:
        return
    sharp_options = {"blur_p": 0.0}
    if hasattr(getattr(policy, "options", None), "local_blur_p"):
        sharp_options["local_blur_p"] = 0.0
    sharp = _policy(name, registry, channels, size, **sharp_options)
    images = checkerboard(16, channels, size)

    def energy(p: Any) -> float:
        views = p(images, torch.Generator().manual_seed(0))
        return sum(high_frequency_energy(view).item() for view in views)

    blurred, unblurred = energy(policy), energy(sharp)
    assert blurred < 0.9 * unblurred, \
        f"{where}: blur_p={policy.blur_p} did not smooth a checkerboard " \
        f"(high-frequency energy {blurred:.3f} vs {unblurred:.3f} without blur)"


# --- Datasets ----------------------------------------------------------------------------


def check_dataset(name: str, root: str | Path | None = None,
                  registry: Registry | None = None) -> None:
    """Both splits load (from ``root``, or the usual places) as an ``ImageDataset``
    whose channels, classes and image size match the spec's fields that are not None
    (:func:`sslreg.data.checked_load` refuses a contradiction with a PluginError); an
    unlabelled dataset (pretraining only) may instead refuse its test split with a
    one-line DataError naming a labelled one to evaluate on. An empty folder as root
    either still loads (data that needs no files) or raises :class:`sslreg.DataError`
    whose message names the fix."""
    from sslreg.data import load_dataset

    registry = registry or load_registry()
    spec = registry.datasets.get(name)
    train = load_dataset(registry, name, "train", root)
    _check_split(name, "train", train)
    try:
        test = load_dataset(registry, name, "test", root)
    except DataError as error:
        if train.labelled:
            raise
        assert "eval.dataset" in str(error), \
            f"{name}: its refused test split does not name eval.dataset: {error}"
    else:
        _check_split(name, "test", test)
    _check_missing_data_error(name, spec)


def _check_split(name: str, split: str, data: Any) -> None:
    from sslreg.data import ImageDataset

    assert isinstance(data, ImageDataset), f"{name}/{split}: not an ImageDataset"
    assert len(data) > 0, f"{name}/{split}: no images"


def _check_missing_data_error(name: str, spec: Any) -> None:
    with tempfile.TemporaryDirectory() as empty:
        try:
            spec.loader("train", Path(empty))
        except DataError as error:
            message = str(error)
            assert "\n" not in message.strip(), f"{name}: the data error is not one line"
            assert any(hint in message for hint in FIX_HINTS), \
                f"{name}: the missing-data error names no fix: {message!r}"


# --- Monitors ----------------------------------------------------------------------------


def check_monitor(name: str, registry: Registry | None = None) -> None:
    """The monitor returns ``{str: float}`` metrics, flags a collapsed embedding (every
    row the same) with a one-line warning, and does not flag a healthy random one."""
    registry = registry or load_registry()
    monitor = registry.monitors.create(name)
    assert isinstance(monitor, Monitor), f"{name}: not an sslreg.Monitor"
    generator = torch.Generator().manual_seed(0)
    healthy = torch.randn(64, 32, generator=generator)
    collapsed = torch.randn(1, 32, generator=generator).expand(64, 32).contiguous()
    for state, embeddings in (("healthy", healthy), ("collapsed", collapsed)):
        metrics = monitor(embeddings)
        assert isinstance(metrics, dict) and metrics, f"{name}: metrics must be a non-empty dict"
        assert all(isinstance(k, str) and type(v) is float for k, v in metrics.items()), \
            f"{name}: metrics must map str to float, got {metrics!r}"
        warning = monitor.collapsed(metrics)
        if state == "healthy":
            assert warning is None, f"{name}: flags healthy random embeddings: {warning!r}"
        else:
            assert isinstance(warning, str) and warning and "\n" not in warning, \
                f"{name}: must flag a collapsed embedding with a one-line str, got {warning!r}"
