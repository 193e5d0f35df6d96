"""View policies: batched augmentation on the images' device (see :mod:`sslreg.views.ops`);
:func:`normalize` alone is the evaluation transform. The built-in policies are
registered by :mod:`sslreg.builtins.views`.
"""

from __future__ import annotations

from sslreg.views.ops import normalize
from sslreg.views.policies import (
    BYOLViews,
    CropFlipViews,
    MultiCropViews,
    SimCLRViews,
    SwAVMultiCropViews,
)

__all__ = [
    "BYOLViews",
    "CropFlipViews",
    "MultiCropViews",
    "SimCLRViews",
    "SwAVMultiCropViews",
    "normalize",
]
