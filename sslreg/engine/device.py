"""Device and precision choices."""

from __future__ import annotations

import torch

from sslreg.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """``auto`` is the first CUDA device when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(
            f"bad value train.device={name!r}: use auto, cpu, cuda or cuda:N"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but no CUDA device is available; use train.device=cpu")
    return device


def use_bf16(precision: str, device: torch.device) -> bool:
    """bf16 autocast on CUDA by default; the CPU stays in fp32 (its bf16 is slow)."""
    if precision == "auto":
        return device.type == "cuda"
    return precision == "bf16"


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model with the threads torch uses."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu {_cpu_model()}({torch.get_num_threads()} threads)".replace("  ", " ")


def _cpu_model() -> str:
    """The model name from /proc/cpuinfo (Linux), else nothing."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip() + " "
    except OSError:
        pass
    return ""
