"""Contract checks over every registered backbone, view policy, dataset and monitor (as
timm tests every registered model), and proof that each check rejects a broken one."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import attrs
import datafiles
import pytest
import torch
from torch import nn

from sslreg import DataError, PluginError, contracts, hookimpl, load_registry, testing
from sslreg.backbones import ResNet18, ViT
from sslreg.specs import BackboneSpec, DatasetSpec, MonitorSpec, ViewSpec
from sslreg.views import SimCLRViews, ops

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SSLREG_DATA", str(tmp_path / "sslreg-data"))
    monkeypatch.setenv("SSLREG_OFFLINE", "1")


@pytest.mark.parametrize("name", testing.backbone_names())
def test_backbone_contract(name):
    testing.check_backbone(name)


@pytest.mark.parametrize("name", testing.view_policy_names())
def test_view_policy_contract(name):
    testing.check_view_policy(name)


@pytest.mark.parametrize("name", testing.monitor_names())
def test_monitor_contract(name):
    testing.check_monitor(name)


# Built-ins whose files are not on this machine get tiny files of the real format.
WRITERS = {"cifar10": datafiles.write_cifar10, "cifar100": datafiles.write_cifar100,
           "stl10": datafiles.write_stl10, "stl10-unlabeled": datafiles.write_stl10_unlabeled,
           "imagefolder": datafiles.write_imagefolder}


@pytest.mark.parametrize("name", testing.dataset_names())
def test_dataset_contract(name, tmp_path):
    if name == "fashion-mnist" and not FASHION_DIR.is_dir():
        pytest.skip("apt-get install dataset-fashion-mnist")
    if name == "digits" and importlib.util.find_spec("sklearn") is None:
        pytest.skip("scikit-learn is not installed")
    root = None
    if name in WRITERS:
        WRITERS[name](tmp_path)
        root = tmp_path
    testing.check_dataset(name, root=root)


# --- Each check rejects what it is for -----------------------------------------------------


class Registers:
    """A plugin registering the given specs, each through its kind's hook."""

    def __init__(self, *specs):
        self.specs = specs

    def _register(self, register, kind):
        for spec in self.specs:
            if isinstance(spec, kind):
                register(spec)

    @hookimpl
    def register_backbones(self, register):
        self._register(register, BackboneSpec)

    @hookimpl
    def register_views(self, register):
        self._register(register, ViewSpec)

    @hookimpl
    def register_monitors(self, register):
        self._register(register, MonitorSpec)

    @hookimpl
    def register_datasets(self, register):
        self._register(register, DatasetSpec)


def _backbone(name, factory, family="convnet"):
    return BackboneSpec(name=name, factory=factory, family=family)


class ClsOnlyViT(nn.Module):
    """Registered as a ViT but hides the token API."""

    def __init__(self, in_channels, image_size):
        super().__init__()
        self.vit = ViT(in_channels, image_size, embed_dim=32, depth=1, heads=2)
        self.output_dim = 32

    def forward(self, images):
        return self.vit(images)


class ClsInEmbedViT(ViT):
    """``embed`` prepends a [CLS] token the docstring says it leaves out."""

    def embed(self, images):
        tokens = super().embed(images)
        return torch.cat([self.cls_token.expand(len(tokens), -1, -1), tokens], dim=1)


class UnusedLayerResNet(ResNet18):
    def __init__(self, in_channels, image_size):
        super().__init__(in_channels, width=8, stem_stride=2)
        self.unused = nn.Linear(4, 4)


class NoisyResNet(ResNet18):
    """Adds fresh noise in eval mode too."""

    def __init__(self, in_channels, image_size):
        super().__init__(in_channels, width=8, stem_stride=2)

    def forward(self, x):
        return super().forward(x) + torch.randn(len(x), self.output_dim)


def _small_vit(cls):
    return lambda in_channels, image_size: cls(in_channels, image_size, embed_dim=32,
                                                depth=1, heads=2)


@pytest.mark.parametrize(("spec", "message"), [
    (_backbone("cls-only", ClsOnlyViT, "vit"),
     r"cls-only at 1x28x28: a 'vit' backbone must implement sslreg.interfaces.ViTBackbone; "
     r"missing \['in_channels', 'patch_size', 'embed_dim'"),
    (_backbone("cls-in-embed", _small_vit(ClsInEmbedViT), "vit"),
     r"cls-in-embed at 1x28x28: embed is \(2, 50, 32\), expected \(2, 49, 32\)"),
    (_backbone("unused-layer", UnusedLayerResNet),
     r"unused-layer at 1x28x28: no gradient reaches 2 parameters, e.g. "
     r"\['unused.weight', 'unused.bias'\]"),
    (_backbone("noisy", NoisyResNet),
     "noisy at 1x28x28: two eval-mode forward passes differ"),
    (_backbone("vit-as-convnet", _small_vit(ViT)),
     r"vit-as-convnet at 1x28x28: registered as family 'convnet' but is_vit says True"),
], ids=lambda value: value.name if isinstance(value, BackboneSpec) else "")
def test_check_backbone_rejects(spec, message):
    with testing.registered(Registers(spec), "broken-backbone"):
        with pytest.raises(AssertionError, match=message):
            testing.check_backbone(spec.name)


class OneViewSimCLR(SimCLRViews):
    def __call__(self, images, generator):
        return super().__call__(images, generator)[:1]


class GlobalRandomSimCLR(SimCLRViews):
    """Ignores the generator it is given."""

    def __call__(self, images, generator):
        return super().__call__(images, torch.Generator().manual_seed(torch.seed()))


@pytest.mark.parametrize(("factory", "message"), [
    (OneViewSimCLR, "one-view-policy at 1x28x28: 1 views, but num_views is 2"),
    (GlobalRandomSimCLR, "one-view-policy at 1x28x28: the same seed gave different views"),
])
def test_check_view_policy_rejects_wrong_views(factory, message):
    spec = ViewSpec(name="one-view-policy", factory=factory)
    with testing.registered(Registers(spec), "broken-views"):
        with pytest.raises(AssertionError, match=message):
            testing.check_view_policy("one-view-policy")


def _unchanged(x, *args, **kwargs):
    return x


@pytest.mark.parametrize(("op", "message"), [
    ("color_jitter", "simclr at 3x28x28: colour jitter gave no view of a colour batch a new "
     "colour"),
    ("adjust_hue", "simclr at 3x28x28: hue jitter turned no view's colour"),
    ("gaussian_blur", r"simclr at 3x96x96: blur_p=\(0.5, 0.5\) did not smooth a checkerboard"),
])
def test_check_view_policy_rejects_a_colour_or_blur_no_op(monkeypatch, op, message):
    monkeypatch.setattr(ops, op, _unchanged)
    if op == "adjust_hue":
        monkeypatch.setitem(ops._ADJUST, "hue", _unchanged)
    with pytest.raises(AssertionError, match=message):
        testing.check_view_policy("simclr")


def test_blur_op_lowers_the_high_frequency_energy_of_a_checkerboard():
    board = contracts.checkerboard(4, 3, 32).float() / 255
    blurred = ops.gaussian_blur(board, torch.Generator().manual_seed(0), 1.0, (1.0, 2.0))
    energy = contracts.high_frequency_energy
    assert energy(blurred) < 0.5 * energy(board)


def test_colour_jitter_op_changes_chroma_of_colour_images_only_when_asked():
    images = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(1)
    chroma = images - ops.luma(images)
    still = ops.color_jitter(images, generator, 0, 0, 0, 0, p=1.0)
    torch.testing.assert_close(still, images)
    for strengths in ((0, 0, 0.8, 0), (0, 0, 0, 0.3)):  # saturation only, hue only
        jittered = ops.color_jitter(images, generator, *strengths, p=1.0)
        assert not torch.allclose(jittered - ops.luma(jittered), chroma, atol=1e-2)


class NeverFlags:
    def __call__(self, embeddings):
        return {"never": 1.0}

    def collapsed(self, metrics):
        return None


class TensorMetrics(NeverFlags):
    def __call__(self, embeddings):
        return {"std": embeddings.std(0).mean()}


@pytest.mark.parametrize(("factory", "message"), [
    (NeverFlags, "blind: must flag a collapsed embedding with a one-line str, got None"),
    (TensorMetrics, "blind: metrics must map str to float"),
])
def test_check_monitor_rejects(factory, message):
    with testing.registered(Registers(MonitorSpec(name="blind", factory=factory)),
                            "broken-monitor"):
        with pytest.raises(AssertionError, match=message):
            testing.check_monitor("blind")


def _no_fix_loader(split, root=None):
    raise DataError("the data is missing")


def _renamed(spec, **changes):
    return attrs.evolve(spec, plugin=None, **changes)


def test_check_dataset_rejects_a_spec_the_files_contradict(tmp_path):
    datafiles.write_cifar10(tmp_path)
    cifar = load_registry().datasets.get("cifar10")
    wrong = _renamed(cifar, name="grey-cifar", channels=1)
    with testing.registered(Registers(wrong), "broken-dataset"):
        with pytest.raises(PluginError, match="dataset 'grey-cifar' declares channels=1 "
                           "but cifar10/train has channels=3"):
            testing.check_dataset("grey-cifar", root=tmp_path)


def test_check_dataset_rejects_an_error_without_a_fix(tmp_path):
    datafiles.write_cifar10(tmp_path)
    cifar = load_registry().datasets.get("cifar10")

    def load(split, root=None):
        return cifar.loader(split, root) if root == tmp_path else _no_fix_loader(split)

    unhelpful = _renamed(cifar, name="unhelpful", loader=load)
    with testing.registered(Registers(unhelpful), "broken-dataset"):
        with pytest.raises(AssertionError, match="unhelpful: the missing-data error names no "
                           "fix: 'the data is missing'"):
            testing.check_dataset("unhelpful", root=tmp_path)
