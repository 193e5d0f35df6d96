"""ResNet-18 for small images (He et al. 2016; small-image stem as in the SimCLR CIFAR
experiments): a 3x3 stride-1 stem conv and no max-pool, so 28-32 px inputs keep enough
resolution for the four stages."""

from __future__ import annotations

from torch import Tensor, nn

from sslreg.interfaces import BackboneExport

# torchvision's resnet18 has 64 channels in its first stage; only that width maps onto it.
TORCHVISION_WIDTH = 64


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual; a 1x1 conv on the shortcut when the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 returning pooled features (B, output_dim), output_dim = 8 * width.

    Args:
        in_channels: 1 (grayscale) or 3 (colour).
        width: channels of the first stage (64 in the paper).
        stem_stride: 1 keeps full resolution; 2 quarters the cost for CPU budgets.
        zero_init_residual: start each block's last BN scale at 0 (Goyal et al. 2017).
            Off by default, as in torchvision: with it, every residual branch of a
            fresh network outputs 0, so its features read only the pixels the stride-2
            shortcuts sample, and a random-init floor measured on it is degenerate.
    """

    def __init__(self, in_channels: int = 3, width: int = 64, stem_stride: int = 1,
                 zero_init_residual: bool = False) -> None:
        super().__init__()
        self.in_channels, self.width, self.stem_stride = in_channels, width, stem_stride
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, stem_stride, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        stages, channels = [], width
        for multiplier, stride in ((1, 1), (2, 2), (4, 2), (8, 2)):
            out = width * multiplier
            stages += [BasicBlock(channels, out, stride), BasicBlock(out, out, 1)]
            channels = out
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.output_dim = channels
        self._init_weights(zero_init_residual)

    def _init_weights(self, zero_init_residual: bool) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        if not zero_init_residual:
            return
        for module in self.modules():
            if isinstance(module, BasicBlock):
                nn.init.zeros_(module.bn2.weight)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.stages(self.stem(x))).flatten(1)

    def exports(self) -> list[BackboneExport]:
        """torchvision's ``resnet18`` key names, at torchvision's width only."""
        if self.width != TORCHVISION_WIDTH:
            return []
        return [BackboneExport(library="torchvision", state_dict=torchvision_keys(
            self.state_dict()), code=torchvision_code(self.in_channels, self.stem_stride))]


def torchvision_keys(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """``stem.0`` -> ``conv1``, ``stem.1`` -> ``bn1``, ``stages.i`` -> ``layer{i//2+1}.{i%2}``
    and ``shortcut`` -> ``downsample``: torchvision's names for the same tensors."""
    renamed = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "stem":
            parts = [{"0": "conv1", "1": "bn1"}[parts[1]], *parts[2:]]
        elif parts[0] == "stages":
            block = int(parts[1])
            parts = [f"layer{block // 2 + 1}", str(block % 2), *parts[2:]]
            parts = ["downsample" if p == "shortcut" else p for p in parts]
        renamed[".".join(parts)] = value
    return renamed


def torchvision_code(in_channels: int, stem_stride: int) -> str:
    """torchvision's resnet18 with this network's small-image stem: a 3x3 first conv,
    no max-pool, and no classifier (the pooled 512-d features come out)."""
    return (
        "import torch, torchvision\n"
        "from safetensors.torch import load_file\n"
        "model = torchvision.models.resnet18(weights=None)\n"
        f"model.conv1 = torch.nn.Conv2d({in_channels}, 64, kernel_size=3, "
        f"stride={stem_stride}, padding=1, bias=False)\n"
        "model.maxpool = torch.nn.Identity()\n"
        "model.fc = torch.nn.Identity()\n"
        "model.load_state_dict(load_file(path), strict=True)\n"
        "model.eval()\n")
