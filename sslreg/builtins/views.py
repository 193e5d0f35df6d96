"""Built-in view policies, registered through the same hook a third-party plugin uses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sslreg.hookspecs import hookimpl
from sslreg.specs import ViewSpec
from sslreg.views import (
    BYOLViews,
    CropFlipViews,
    MultiCropViews,
    SimCLRViews,
    SwAVMultiCropViews,
)


@hookimpl
def register_views(register: Callable[[Any], None]) -> None:
    """Register the built-in view policies."""
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
            description="BYOL: 2 asymmetric views (view 2 solarized with p 0.2; blur p "
            "1.0 / 0.1 above 32 px, none at <= 32 px)",
        )
    )
    register(
        ViewSpec(
            name="multicrop",
            factory=MultiCropViews,
            description="multi-crop, DINO's recipe: 2 global views (BYOL's asymmetric "
            "blur and solarize) + num_local (default 6) small views",
        )
    )
    register(
        ViewSpec(
            name="swav-multicrop",
            factory=SwAVMultiCropViews,
            description="multi-crop, SwAV's recipe: 2 global + num_local (default 6) small "
            "views, all with the same transform (colour strength 1, no solarization)",
        )
    )
    register(
        ViewSpec(
            name="crop-flip",
            factory=CropFlipViews,
            # The name it had when MAE was its only user; configs and suites that say
            # views=mae keep working (and keep their run digests).
            aliases=("mae",),
            description="1 view, random resized crop (scale 0.2-1) and flip only: MAE's "
            "views, also CLIP's and the supervised ceiling's",
        )
    )
