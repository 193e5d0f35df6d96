"""View policies: uint8 (B, C, H, W) batches -> lists of augmented, normalised views.

A policy's options are a frozen attrs class whose defaults are the paper's, so a run can
log them and override one with ``attrs.evolve`` through the same validators. All views of
a call are augmented as one batch of ``num_views * B`` images (per-view probabilities
become per-sample ones), which halves the kernel launches of a two-view policy.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any, ClassVar

import attrs
import torch
from attrs import field
from torch import Tensor

from sslreg.backbones import sizes
from sslreg.errors import ConfigError
from sslreg.views import ops


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _as_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, (list, tuple)) else value


def _per_view(value: Any) -> Any:
    """A single probability applies to both views; a pair gives one per view."""
    return (value, value) if _is_number(value) else _as_tuple(value)


def _probability(_instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if not (_is_number(value) and 0.0 <= value <= 1.0):
        raise ConfigError(f"option {attribute.name}={value!r} must be a probability in [0, 1]")


def _per_view_probability(_instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    ok = isinstance(value, tuple) and len(value) == 2
    if not (ok and all(_is_number(v) and 0.0 <= v <= 1.0 for v in value)):
        raise ConfigError(
            f"option {attribute.name}={value!r} must be a probability in [0, 1] "
            "or a pair of them (one per view)"
        )


def _strength(upper: float | None) -> Any:
    def check(_instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        if not (_is_number(value) and value >= 0 and (upper is None or value <= upper)):
            bound = f"in [0, {upper}]" if upper is not None else ">= 0"
            raise ConfigError(f"option {attribute.name}={value!r} must be a number {bound}")

    return check


def _range(upper: float | None) -> Any:
    """A (low, high) pair with 0 < low <= high (<= upper)."""

    def check(_instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        ok = isinstance(value, tuple) and len(value) == 2 and all(map(_is_number, value))
        if not (ok and 0 < value[0] <= value[1] and (upper is None or value[1] <= upper)):
            top = f" <= {upper}" if upper is not None else ""
            raise ConfigError(
                f"option {attribute.name}={value!r} must be a pair (low, high) "
                f"with 0 < low <= high{top}"
            )

    return check


@attrs.frozen(kw_only=True)
class ViewOptions:
    """Options of a two-view policy. Probabilities named ``*_p`` are per sample; ``blur_p``
    and ``solarize_p`` take one value for both views or a pair (view 1, view 2).

    ``blur_p=None`` resolves by image size: 0.0 for images of at most 32 px (the SimCLR
    paper drops blur on CIFAR-10) and the class's ``large_image_blur_p`` (here 0.5 for
    both views) above.
    """

    # blur_p (view 1, view 2) for images over 32 px when blur_p is None.
    large_image_blur_p: ClassVar[tuple[float, float]] = (0.5, 0.5)

    crop_scale: tuple[float, float] = field(
        default=(0.08, 1.0), converter=_as_tuple, validator=_range(1.0)
    )
    crop_ratio: tuple[float, float] = field(
        default=(3 / 4, 4 / 3), converter=_as_tuple, validator=_range(None)
    )
    flip_p: float = field(default=0.5, validator=_probability)
    brightness: float = field(default=0.4, validator=_strength(None))
    contrast: float = field(default=0.4, validator=_strength(None))
    saturation: float = field(default=0.4, validator=_strength(None))
    hue: float = field(default=0.1, validator=_strength(0.5))
    jitter_p: float = field(default=0.8, validator=_probability)
    grayscale_p: float = field(default=0.2, validator=_probability)
    blur_p: tuple[float, float] | None = field(
        default=None,
        converter=attrs.converters.optional(_per_view),
        validator=attrs.validators.optional(_per_view_probability),
    )
    blur_sigma: tuple[float, float] = field(
        default=(0.1, 2.0), converter=_as_tuple, validator=_range(None)
    )
    solarize_p: tuple[float, float] = field(
        default=(0.0, 0.0), converter=_per_view, validator=_per_view_probability
    )


@attrs.frozen(kw_only=True)
class SimCLROptions(ViewOptions):
    """SimCLR's augmentation (Chen et al. 2020, appendix A) with the CIFAR jitter strengths
    of solo-learn and lightly: brightness = contrast = saturation = 0.4, hue = 0.1."""


@attrs.frozen(kw_only=True)
class BYOLOptions(ViewOptions):
    """BYOL's asymmetric augmentation (Grill et al. 2020, table 6): view 2 is solarized
    with p 0.2, view 1 never; above 32 px view 1 is always blurred and view 2 with p 0.1.

    At <= 32 px neither view is blurred (``blur_p=None``), as in solo-learn's CIFAR
    recipes for BYOL, Barlow Twins and VICReg (``scripts/pretrain/cifar/byol.yaml``,
    ``barlow.yaml``, ``vicreg.yaml``: blur probability 0 on both views); the SimCLR
    paper drops blur on CIFAR-10 for the same reason.
    """

    large_image_blur_p: ClassVar[tuple[float, float]] = (1.0, 0.1)
    saturation: float = field(default=0.2, validator=_strength(None))
    solarize_p: tuple[float, float] = field(
        default=(0.0, 0.2), converter=_per_view, validator=_per_view_probability
    )


def _count(_instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if not (isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 32):
        raise ConfigError(f"option {attribute.name}={value!r} must be an int in 0..32")


def _local_size(_instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    # Which sides fit depends on the image size: MultiCropViews checks that (sizes.py).
    if value is not None and not (isinstance(value, int) and not isinstance(value, bool)
                                  and value >= 1):
        raise ConfigError(f"option {attribute.name}={value!r} must be a positive int, or "
                          "None for the default")


@attrs.frozen(kw_only=True)
class MultiCropOptions(BYOLOptions):
    """Multi-crop (Caron et al. 2020, SwAV sec. 3.2) with DINO's defaults (Caron et al.
    2021, main_dino.py's DataAugmentationDINO and its ViT crop scales): two global views
    with BYOL's asymmetric blur and solarize (no blur at <= 32 px, see
    :class:`BYOLOptions`), crop scale (0.4, 1), plus ``num_local`` small views, crop
    scale (0.05, 0.4), resampled to ``local_size`` (default: the image side times
    96/224, as 96 px local crops of 224 px images, rounded to whole ViT patches: 12 px
    at 28-32 px, 36 px at 96 px; see :func:`sslreg.backbones.sizes.multicrop_sizes`; an
    explicit ``local_size`` must be a multiple of the ViT patch too). Local views are
    blurred with ``local_blur_p`` (default 0 at <= 32 px, 0.5 above) and never
    solarized.
    """

    crop_scale: tuple[float, float] = field(
        default=(0.4, 1.0), converter=_as_tuple, validator=_range(1.0)
    )
    num_local: int = field(default=6, validator=_count)
    local_scale: tuple[float, float] = field(
        default=(0.05, 0.4), converter=_as_tuple, validator=_range(1.0)
    )
    local_size: int | None = field(default=None, validator=_local_size)
    local_blur_p: float | None = field(
        default=None, validator=attrs.validators.optional(_probability))


@attrs.frozen(kw_only=True)
class SwAVOptions(MultiCropOptions):
    """SwAV's multi-crop (Caron et al. 2020; reference code: src/multicropdataset.py and
    main_swav.py's defaults). Every crop gets the same transform: flip, colour
    distortion of strength 1 (brightness, contrast, saturation 0.8, hue 0.2, with p 0.8),
    grayscale with p 0.2, blur with p 0.5 (none at <= 32 px, as in
    :class:`ViewOptions`), no solarization. Global crops have scale (0.14, 1), local
    ones (0.05, 0.14).
    """

    large_image_blur_p: ClassVar[tuple[float, float]] = (0.5, 0.5)
    crop_scale: tuple[float, float] = field(
        default=(0.14, 1.0), converter=_as_tuple, validator=_range(1.0)
    )
    brightness: float = field(default=0.8, validator=_strength(None))
    contrast: float = field(default=0.8, validator=_strength(None))
    saturation: float = field(default=0.8, validator=_strength(None))
    hue: float = field(default=0.2, validator=_strength(0.5))
    solarize_p: tuple[float, float] = field(
        default=(0.0, 0.0), converter=_per_view, validator=_per_view_probability
    )
    local_scale: tuple[float, float] = field(
        default=(0.05, 0.14), converter=_as_tuple, validator=_range(1.0)
    )


@attrs.frozen(kw_only=True)
class CropFlipOptions:
    """MAE's augmentation (He et al. 2022, appendix A.1): random resized crop with scale
    (0.2, 1) and a horizontal flip, nothing else."""

    crop_scale: tuple[float, float] = field(
        default=(0.2, 1.0), converter=_as_tuple, validator=_range(1.0)
    )
    crop_ratio: tuple[float, float] = field(
        default=(3 / 4, 4 / 3), converter=_as_tuple, validator=_range(None)
    )
    flip_p: float = field(default=0.5, validator=_probability)


def _build_options(options_class: type, policy: str, options: dict[str, Any]) -> Any:
    valid = sorted(attrs.fields_dict(options_class))
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(
            f"unknown option '{unknown[0]}' for view policy {policy}; valid options: "
            + ", ".join(valid)
        )
    try:
        return options_class(**options)
    except ConfigError as error:
        raise ConfigError(f"view policy {policy}: {error}") from None


def _check_statistics(name: str, values: Any, channels: int, positive: bool) -> tuple[float, ...]:
    if not (isinstance(values, Sequence) and all(map(_is_number, values))):
        raise ConfigError(f"{name}={values!r} must be a sequence of {channels} numbers")
    if len(values) != channels:
        raise ConfigError(f"{name}={values!r} has {len(values)} values for {channels} channels")
    if positive and min(values) <= 0:
        raise ConfigError(f"{name}={values!r} must be positive")
    return tuple(float(v) for v in values)


class TwoViewPolicy:
    """Two views per image, each: random resized crop + flip, colour jitter, grayscale,
    Gaussian blur, solarize, then normalisation with the dataset mean and std.

    Subclasses choose the options class (the paper's defaults).
    """

    options_class: ClassVar[type] = ViewOptions
    num_views: int = 2

    def __init__(
        self,
        *,
        channels: int,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        **options: Any,
    ) -> None:
        policy = type(self).__name__
        if channels not in (1, 3):
            raise ConfigError(f"view policy {policy}: channels={channels!r} must be 1 or 3")
        if not (isinstance(image_size, int) and image_size >= 8):
            raise ConfigError(
                f"view policy {policy}: image_size={image_size!r} must be an int >= 8"
            )
        self.channels = channels
        self.image_size = image_size
        self.mean = _check_statistics("mean", mean, channels, positive=False)
        self.std = _check_statistics("std", std, channels, positive=True)
        self.options = _build_options(self.options_class, policy, options)
        self.blur_p: tuple[float, float] = _resolve_blur_p(self.options, image_size)
        self._statistics: dict[torch.device, tuple[Tensor, Tensor]] = {}

    @property
    def view_sizes(self) -> tuple[int, ...]:
        """The side of each view the policy returns, in order."""
        return (self.image_size,) * self.num_views

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(channels={self.channels}, image_size={self.image_size}, "
            f"options={self.options})"
        )

    def __call__(self, images: Tensor, generator: torch.Generator) -> list[Tensor]:
        """Augment a batch.

        Args:
            images: (B, C, H, W) uint8 images, on the same device as ``generator``.
            generator: random generator; the same seed gives the same views.

        Returns:
            ``num_views`` float32 tensors (B, C, image_size, image_size), normalised.
        """
        self._check(images, generator)
        batch = images.shape[0]
        # Both views as one batch: every op below runs once on (2B, C, H, W).
        x = images.repeat(self.num_views, 1, 1, 1).float().mul_(1.0 / 255.0)
        x = self._augment(x, generator, batch)
        return list(self._normalize(x).chunk(self.num_views))

    def _normalize(self, x: Tensor) -> Tensor:
        """(N, C, H, W) in [0, 1] -> standardised per channel with the dataset statistics.

        Every policy, built-in or a plugin's subclass, normalises through here, so the
        channel axis is always the one the statistics broadcast over.
        """
        mean, std = self._device_statistics(x.device)
        return ops.normalize(x, mean, std)

    def _augment(self, x: Tensor, generator: torch.Generator, batch: int) -> Tensor:
        """(V*B, C, H, W) in [0, 1] -> (V*B, C, S, S) in [0, 1], S = image_size."""
        o = self.options
        x = ops.random_resized_crop(
            x, generator, o.crop_scale, o.crop_ratio, self.image_size, flip_p=o.flip_p
        )
        x = ops.color_jitter(
            x, generator, o.brightness, o.contrast, o.saturation, o.hue, o.jitter_p
        )
        x = ops.random_grayscale(x, generator, o.grayscale_p)
        x = ops.gaussian_blur(x, generator, _view_probs(self.blur_p, batch, x), o.blur_sigma)
        return ops.solarize(x, generator, _view_probs(o.solarize_p, batch, x))

    def _check(self, images: Tensor, generator: torch.Generator) -> None:
        policy = type(self).__name__
        if not isinstance(images, Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
            kind = (
                f"{images.dtype} {images.dim()}-D tensor"
                if isinstance(images, Tensor)
                else type(images).__name__
            )
            raise ValueError(f"{policy} takes uint8 images (B, C, H, W), got a {kind}")
        if images.shape[1] != self.channels:
            raise ValueError(
                f"{policy} was built for {self.channels}-channel images, got shape "
                f"{tuple(images.shape)} with {images.shape[1]} channels"
            )
        if generator.device.type != images.device.type:
            raise ValueError(
                f"{policy}: the generator is on {generator.device} but the images are on "
                f"{images.device}; use torch.Generator(device=images.device)"
            )

    def _device_statistics(self, device: torch.device) -> tuple[Tensor, Tensor]:
        # Cached per device: a fresh host-to-device copy every batch would sync the GPU.
        if device not in self._statistics:
            self._statistics[device] = (
                torch.tensor(self.mean, device=device),
                torch.tensor(self.std, device=device),
            )
        return self._statistics[device]


def _no_blur(image_size: int) -> bool:
    # The SimCLR paper drops blur on CIFAR-10: at 32 px it removes the little detail left.
    return image_size <= 32


def _resolve_blur_p(options: Any, image_size: int) -> tuple[float, float]:
    """``options.blur_p`` if set; else none at <= 32 px and the options class's
    ``large_image_blur_p`` above. Crop-and-flip options have no blur: (0, 0)."""
    blur_p = getattr(options, "blur_p", None)
    if blur_p is not None:
        return blur_p
    if _no_blur(image_size):
        return 0.0, 0.0
    return getattr(options, "large_image_blur_p", (0.0, 0.0))


def _view_probs(per_view: tuple[float, ...], batch: int, like: Tensor) -> ops.Probability:
    """One probability per view -> a float, or a (V*B,) tensor when the views differ."""
    if all(p == per_view[0] for p in per_view):
        return float(per_view[0])
    return torch.cat([torch.full((batch,), float(p), device=like.device) for p in per_view])


class SimCLRViews(TwoViewPolicy):
    """SimCLR's two symmetric views (Chen et al. 2020, appendix A); see :class:`SimCLROptions`."""

    options_class = SimCLROptions


class BYOLViews(TwoViewPolicy):
    """BYOL's asymmetric pair (Grill et al. 2020, table 6); see :class:`BYOLOptions`."""

    options_class = BYOLOptions


def default_local_size(image_size: int) -> int:
    return sizes.multicrop_sizes(image_size)[1]


class MultiCropViews(TwoViewPolicy):
    """Two global views and ``num_local`` local ones; see :class:`MultiCropOptions`.

    Returns ``[global_1, global_2, local_1, ..., local_N]``; the global views are
    (B, C, image_size, image_size), the local ones (B, C, local_size, local_size).
    """

    options_class = MultiCropOptions

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        o = self.options
        self.num_views = 2 + o.num_local
        if o.local_size is None:
            self.local_size = default_local_size(self.image_size)
        else:
            self.local_size = sizes.check_local_size(o.local_size, self.image_size,
                                                     type(self).__name__)
        default_p = 0.0 if _no_blur(self.image_size) else 0.5
        self.local_blur_p = default_p if o.local_blur_p is None else o.local_blur_p

    @property
    def view_sizes(self) -> tuple[int, ...]:
        return (self.image_size,) * 2 + (self.local_size,) * self.options.num_local

    def __call__(self, images: Tensor, generator: torch.Generator) -> list[Tensor]:
        self._check(images, generator)
        batch, local = images.shape[0], self.options.num_local
        x = images.float().mul_(1.0 / 255.0)
        globals_ = self._augment(x.repeat(2, 1, 1, 1), generator, batch)
        views = list(self._normalize(globals_).chunk(2))
        if local:
            # All local views as one batch, resampled straight to the small size.
            locals_ = self._augment_local(x.repeat(local, 1, 1, 1), generator)
            views += list(self._normalize(locals_).chunk(local))
        return views

    def _augment_local(self, x: Tensor, generator: torch.Generator) -> Tensor:
        o = self.options
        x = ops.random_resized_crop(
            x, generator, o.local_scale, o.crop_ratio, self.local_size, flip_p=o.flip_p
        )
        x = ops.color_jitter(
            x, generator, o.brightness, o.contrast, o.saturation, o.hue, o.jitter_p
        )
        x = ops.random_grayscale(x, generator, o.grayscale_p)
        return ops.gaussian_blur(x, generator, self.local_blur_p, o.blur_sigma)


class SwAVMultiCropViews(MultiCropViews):
    """SwAV's multi-crop: every crop gets the same transform; see :class:`SwAVOptions`."""

    options_class = SwAVOptions


class CropFlipViews(TwoViewPolicy):
    """One view: random resized crop and horizontal flip (MAE); see
    :class:`CropFlipOptions`."""

    options_class = CropFlipOptions
    num_views = 1

    def _augment(self, x: Tensor, generator: torch.Generator, batch: int) -> Tensor:
        o = self.options
        return ops.random_resized_crop(
            x, generator, o.crop_scale, o.crop_ratio, self.image_size, flip_p=o.flip_p
        )
