"""Built-in views, registered through the same hook a third-party plugin uses.

Augmentation is batched tensor work on the images' device (see :mod:`sslreg.views.ops`);
:func:`normalize` alone is the evaluation transform.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sslreg.hookspecs import hookimpl
from sslreg.specs import ViewSpec
from sslreg.views.ops import normalize
from sslreg.views.policies import BYOLViews, CropFlipViews, MultiCropViews, SimCLRViews

__all__ = [
    "BYOLViews",
    "CropFlipViews",
    "MultiCropViews",
    "SimCLRViews",
    "normalize",
    "register_views",
]


@hookimpl
def register_views(register: Callable[[Any], None]) -> None:
    register(
        ViewSpec(
            name="simclr",
            factory=SimCLRViews,
            description="SimCLR: 2 symmetric views (crop, flip, colour jitter, grayscale, blur)",
        )
    )
    register(
        ViewSpec(
            name="byol",
            factory=BYOLViews,
            description="BYOL: 2 asymmetric views (view 1 always blurred, view 2 solarized)",
        )
    )
    register(
        ViewSpec(
            name="multicrop",
            factory=MultiCropViews,
            description="multi-crop (SwAV, DINO): 2 global + num_local (default 6) small views",
        )
    )
    register(
        ViewSpec(
            name="mae",
            factory=CropFlipViews,
            description="MAE: 1 view, random resized crop (scale 0.2-1) and flip only",
        )
    )
