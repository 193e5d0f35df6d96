"""timm backbones: the core's contract, the ViT token API against timm's own forward,
multi-crop sizes, exports that load in timm, and the refusals."""

import subprocess
import sys

import pytest
import timm
import torch
from safetensors.torch import save_file
from sslreg_timm import MODELS, Model, spec

from sslreg import ConfigError
from sslreg.backbones import multicrop_sizes, vit_patch_size
from sslreg.contracts import check_backbone, check_vit_tokens

NAMES = [f"timm/{model.name}" for model in MODELS]
VITS = [f"timm/{model.name}" for model in MODELS if model.family == "vit"]
TINY_VIT = "timm/vit_tiny_patch16_224"


def _images(batch, channels, size, seed=0):
    return torch.rand(batch, channels, size, size, generator=torch.Generator().manual_seed(seed))


def _build(registry, name, channels, size, seed=0):
    torch.manual_seed(seed)
    return registry.backbones.create(name, in_channels=channels, image_size=size).eval()


def test_registered(registry):
    assert [name for name in registry.backbones.names() if name.startswith("timm/")] == \
        sorted(NAMES)
    for model in MODELS:
        backbone = registry.backbones.get(f"timm/{model.name}")
        assert (backbone.plugin, backbone.family) == ("timm", model.family)


@pytest.mark.parametrize("name", NAMES)
def test_contract(registry, name):
    check_backbone(name, registry)  # 1x28, 3x28, 1x32 and 3x32; the ViTs' token API too


@pytest.mark.parametrize("name", VITS)
def test_vit_at_96_px(registry, name):
    net = _build(registry, name, 3, 96)
    assert net.patch_size == vit_patch_size(96) == 12
    images = _images(2, 3, 96)
    check_vit_tokens(f"{name} at 3x96x96", net, images)
    with torch.no_grad():
        assert net(images).shape == (2, net.output_dim)


@pytest.mark.parametrize(("channels", "size"), [(1, 28), (3, 96)])
def test_vit_features_are_timms(registry, channels, size):
    net = _build(registry, TINY_VIT, channels, size)
    images = _images(2, channels, size)
    with torch.no_grad():
        torch.testing.assert_close(net(images), net.model(images))
        torch.testing.assert_close(net.forward_tokens(images), net.model.forward_features(images))


@pytest.mark.parametrize("size", [28, 32, 96])
def test_multicrop_local_crops(registry, size):
    """Local crops have a smaller grid than the one the positions were built for: they
    are resampled, exactly as timm's own dynamic_img_size forward does."""
    net = _build(registry, TINY_VIT, 3, size)
    local = multicrop_sizes(size)[1]
    crops = _images(2, 3, local)
    rows, cols = net.grid(crops)
    with torch.no_grad():
        tokens = net.embed(crops)
        assert tokens.shape == (2, rows * cols, net.embed_dim) and rows < size // net.patch_size
        assert net.encode(tokens).shape == (2, 1 + rows * cols, net.embed_dim)
        torch.testing.assert_close(net(crops), net.model(crops))


def test_encode_takes_any_subset_in_any_order(registry):
    """MAE encodes a random subset of the embedded tokens: their positions travel with
    them, so a subset in another order gives the same outputs in that order."""
    net = _build(registry, TINY_VIT, 1, 28)
    tokens = net.embed(_images(2, 1, 28))
    subset = torch.tensor([3, 40, 0, 17, 8])
    with torch.no_grad():
        encoded = net.encode(tokens[:, subset])
        shuffled = net.encode(tokens[:, subset.flip(0)])
    assert encoded.shape == (2, 1 + len(subset), net.embed_dim)
    torch.testing.assert_close(encoded[:, 0], shuffled[:, 0])
    torch.testing.assert_close(encoded[:, 1:], shuffled[:, 1:].flip(1))


def test_last_self_attention_is_timms(registry):
    """The weights the last block's own (unfused) attention computes, caught on their
    way into its attention dropout."""
    net = _build(registry, TINY_VIT, 1, 28)
    images = _images(2, 1, 28)
    attention = net.model.blocks[-1].attn
    caught = []
    attention.fused_attn = False
    attention.attn_drop.register_forward_hook(lambda module, args, out: caught.append(out))
    with torch.no_grad():
        net(images)
    weights = net.last_self_attention(images)
    assert weights.shape == (2, 3, 50, 50)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3, 50))
    torch.testing.assert_close(weights, caught[0])


def test_vit_blocks_are_plain_pre_norm_blocks(registry):
    """What the wrapper leans on in timm's defaults: qkv with a bias, LayerNorms with eps
    1e-6, no layer scale, stochastic depth, dropout, pre-norm or patch norm."""
    model = _build(registry, TINY_VIT, 1, 28).model
    identity = torch.nn.Identity
    assert isinstance(model.norm_pre, identity) and isinstance(model.patch_embed.norm, identity)
    assert model.pos_drop.p == 0 and not model.no_embed_class
    for block in model.blocks:
        assert block.attn.qkv.bias is not None
        assert block.norm1.eps == block.norm2.eps == model.norm.eps == 1e-6
        assert all(isinstance(getattr(block, part), identity)
                   for part in ("ls1", "ls2", "drop_path1", "drop_path2"))


@pytest.mark.parametrize(("name", "channels", "size"), [
    ("timm/resnet18", 3, 32), ("timm/resnet50", 1, 28), (TINY_VIT, 1, 28),
    ("timm/vit_small_patch16_224", 3, 32)])
def test_exports_load_in_timm(registry, tmp_path, name, channels, size):
    net = _build(registry, name, channels, size)
    [export] = net.exports()
    assert export.library == "timm"
    assert not any(key.startswith("model.") for key in export.state_dict)
    path = str(tmp_path / "timm.safetensors")
    save_file(export.state_dict, path)
    scope = {"path": path}
    exec(export.code, scope)
    model = scope["model"]  # the code itself puts it in eval mode
    assert isinstance(model, torch.nn.Module) and "pretrained=False" in export.code
    images = _images(3, channels, size, seed=5)
    with torch.no_grad():
        torch.testing.assert_close(model(images), net(images), atol=1e-5, rtol=1e-5)


def test_export_keys_are_timms_own(registry):
    net = _build(registry, TINY_VIT, 1, 28)
    fresh = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0,
                              img_size=28, patch_size=4, in_chans=1)
    [export] = net.exports()
    assert {key: value.shape for key, value in export.state_dict.items()} == \
        {key: value.shape for key, value in fresh.state_dict().items()}


def test_resnets_take_small_images_as_timm_defines_them(registry):
    """No stem is swapped: stride 32, so 28 px ends at 1x1 maps; and the smallest size
    the core allows (8 px) still goes through."""
    net = _build(registry, "timm/resnet18", 1, 8)
    assert net.model.conv1.kernel_size == (7, 7) and net.model.conv1.stride == (2, 2)
    with torch.no_grad():
        maps = net.model.forward_features(_images(2, 1, 28))
        assert maps.shape[-2:] == (1, 1)
        assert net(_images(2, 1, 8)).shape == (2, 512)


def test_too_small_a_size_is_refused_in_one_line():
    """A model whose maps vanish (ConvNeXt: a stride-4 patchify stem, unpadded stride-2
    downsampling) is refused when built, naming the smallest size it takes."""
    convnext = spec(Model("convnext_atto", "convnet", ""))
    with pytest.raises(ConfigError) as error:
        convnext.factory(in_channels=3, image_size=16)
    assert str(error.value) == ("timm/convnext_atto cannot take 16 px images (its feature "
                                "maps shrink to nothing); the smallest it takes is 32 px")
    assert convnext.factory(in_channels=3, image_size=32).output_dim == 320


def test_vit_refusals_name_the_model(registry):
    with pytest.raises(ConfigError, match=r"^timm/vit_tiny_patch16_224: a ViT cannot tile "
                       r"29 px images"):
        registry.backbones.create(TINY_VIT, in_channels=1, image_size=29)
    registers = spec(Model("vit_tiny_patch16_224", "vit", "",
                           {"reg_tokens": 4, "global_pool": "avg"}))
    with pytest.raises(ConfigError, match=r"^timm/vit_tiny_patch16_224 does not fit the ViT "
                       r"token API: it needs no register tokens, \[CLS\] pooling"):
        registers.factory(in_channels=1, image_size=28)


def test_importing_the_plugin_does_not_import_timm():
    """timm takes seconds to import; `sslreg --help` and plugin listings should not pay it."""
    code = "import sys, sslreg_timm; sslreg_timm.spec(sslreg_timm.MODELS[0]); " \
           "print('timm' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False"
