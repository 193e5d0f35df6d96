"""What both wrappers share: how a timm model is created, and its export for timm."""

from __future__ import annotations

from typing import Any

import timm
from torch import nn

from sslreg.interfaces import BackboneExport


def creation_options(in_channels: int, **extra: Any) -> dict[str, Any]:
    """The keyword arguments of ``timm.create_model`` for an sslreg backbone: random init
    (sslreg pretrains from scratch and never downloads weights), no classifier, so the
    model returns its pooled features, and the run's image channels."""
    return {"pretrained": False, "num_classes": 0, "in_chans": in_channels, **extra}


def create(name: str, options: dict[str, Any]) -> nn.Module:
    return timm.create_model(name, **options)


def timm_export(name: str, options: dict[str, Any], model: nn.Module) -> BackboneExport:
    """The wrapped model's own state_dict (timm's key names) and the code that builds
    the same model in timm and loads it."""
    return BackboneExport(library="timm", state_dict=model.state_dict(),
                          code=loading_code(name, options))


def loading_code(name: str, options: dict[str, Any]) -> str:
    """Python that builds ``model`` with the very options the backbone was built with and
    loads the safetensors file named by ``path`` (defined by whoever runs it)."""
    arguments = ", ".join([repr(name), *(f"{key}={value!r}" for key, value in options.items())])
    return ("import timm\n"
            "from safetensors.torch import load_file\n"
            "\n"
            f"model = timm.create_model({arguments})\n"
            "model.load_state_dict(load_file(path), strict=True)\n"
            "model.eval()  # BatchNorm reads its running statistics, as in evaluation\n")
