"""``sslreg export``: each format loads into its library's model with features equal to
sslreg's, the model card says what made the weights, and bad input gets one line."""

import json

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from sslreg.cli import cli
from sslreg.config import RunConfig
from sslreg.engine.checkpoint import load_checkpoint, save_checkpoint
from sslreg.engine.export import differences, load_backbone, pretrain_command
from sslreg.runs import RunDir

TINY = ["--dataset", "synthetic", "--epochs", "1", "--batch-size", "32", "--quiet",
        "--set", "train.train_subset=64", "--set", "eval.train_subset=100",
        "--set", "eval.val_subset=50", "--set", "eval.test_subset=50"]
# What each built-in backbone maps onto besides sslreg's own names.
LIBRARIES = {"resnet18": ["torchvision"], "resnet18-narrow": [], "vit-tiny": ["timm"],
             "vit-mini": ["timm"]}


def run_cli(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_one_line_error(result, *fragments):
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def scrambled(backbone):
    """Non-default BatchNorm statistics and affine terms, so a key mixed up between
    layers changes the features."""
    generator = torch.Generator().manual_seed(0)
    for module in backbone.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            for tensor in (module.weight, module.bias, module.running_mean):
                tensor.data = torch.randn(tensor.shape, generator=generator) * 0.5
            module.running_var.data = torch.rand(module.running_var.shape,
                                                 generator=generator) + 0.5
    return backbone.eval()


def load_with(code, path):
    scope = {"path": str(path)}
    exec(code, scope)
    return scope["model"]


@pytest.mark.parametrize("name", sorted(LIBRARIES))
@pytest.mark.parametrize("channels, size", [(1, 28), (3, 32)])
def test_every_builtin_backbone_exports_equal_features(registry, tmp_path, name, channels,
                                                       size):
    from sslreg.engine.export import sslreg_code

    torch.manual_seed(0)
    backbone = scrambled(registry.backbones.create(name, in_channels=channels,
                                                   image_size=size))
    images = torch.randn(4, channels, size, size)
    expected = backbone(images)
    exports = backbone.exports()
    assert [e.library for e in exports] == LIBRARIES[name]
    save_file(dict(backbone.state_dict()), tmp_path / "backbone.safetensors")
    config = RunConfig.build(registry, "simclr", backbone=name)
    own = load_with(sslreg_code(config, {"channels": channels, "image_size": size}),
                    tmp_path / "backbone.safetensors")
    assert torch.equal(own(images), expected)
    for export in exports:
        path = tmp_path / f"{export.library}.safetensors"
        save_file({k: v.contiguous() for k, v in export.state_dict.items()}, path)
        model = load_with(export.code, path)  # strict=True inside the code
        assert type(model).__module__.split(".")[0] == export.library
        torch.testing.assert_close(model(images), expected, atol=1e-5, rtol=1e-5)


def test_vit_export_loads_into_timm_with_mae_readout(registry, tmp_path):
    """MAE reads the mean of the patch tokens; timm's ``global_pool="avg",
    fc_norm=False`` (named in the export's code) gives the same features."""
    from timm.models.vision_transformer import VisionTransformer

    vit = registry.backbones.create("vit-mini", in_channels=1, image_size=28).eval()
    export = vit.exports()[0]
    assert 'global_pool="avg", fc_norm=False' in export.code
    model = VisionTransformer(img_size=28, patch_size=4, in_chans=1, embed_dim=128, depth=4,
                              num_heads=4, num_classes=0, global_pool="avg", fc_norm=False)
    model.load_state_dict(export.state_dict, strict=True)
    images = torch.randn(3, 1, 28, 28)
    pooled = vit.encode(vit.embed(images))[:, 1:].mean(dim=1)
    torch.testing.assert_close(model.eval()(images), pooled, atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One evaluated resnet18 run (the width torchvision has) on synthetic images."""
    out = tmp_path_factory.mktemp("runs")
    result = run_cli("pretrain", "--method", "simclr", "--backbone", "resnet18", *TINY,
                     "--set", "method.temperature=0.3", "--out", out)
    assert result.exit_code == 0, result.output
    return next(p for p in out.iterdir() if p.name.startswith("simclr-"))


def test_export_of_a_run_loads_into_torchvision(registry, trained, tmp_path):
    result = run_cli("export", trained, "--out", tmp_path)
    assert result.exit_code == 0, result.output
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {"backbone.safetensors", "torchvision.safetensors", "torchvision.pth",
                     "export.json", "MODEL_CARD.md"}
    card = json.loads((tmp_path / "export.json").read_text())
    model = load_with(card["loaders"]["torchvision"], tmp_path / "torchvision.safetensors")
    inputs = card["inputs"]
    mean = torch.tensor(inputs["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(inputs["std"]).view(1, -1, 1, 1)
    pixels = torch.randint(0, 256, (4, inputs["channels"], 28, 28))
    images = (pixels / 255 - mean) / std
    ours = load_backbone(trained, registry)
    torch.testing.assert_close(model(images), ours(images), atol=1e-5, rtol=1e-5)
    # .pth holds the same tensors as the safetensors file.
    plain = torch.load(tmp_path / "torchvision.pth", weights_only=True)
    assert all(torch.equal(plain[k], v) for k, v in model.state_dict().items())


def test_export_loads_the_trained_weights_not_a_fresh_build(registry, trained):
    state = load_checkpoint(RunDir(trained).checkpoint)["model"]
    backbone = load_backbone(trained, registry)
    for key, value in backbone.state_dict().items():
        assert torch.equal(value, state[f"backbone.{key}"])


def test_model_card_names_what_made_the_weights(registry, trained, tmp_path):
    run_cli("export", trained, "--out", tmp_path)
    card = json.loads((tmp_path / "export.json").read_text())
    result = json.loads(RunDir(trained).result.read_text())
    config = RunDir(trained).load_config(registry)
    assert card["method"] == "simclr" and card["backbone"] == "resnet18"
    assert card["config_digest"] == config.digest()
    assert card["metrics"] == result["metrics"]
    assert card["val_metrics"] == result["val_metrics"]
    assert card["budget"]["epochs"] == 1 and card["budget"]["steps"] == 2
    assert card["budget"]["images_seen"] == 64
    text = (tmp_path / "MODEL_CARD.md").read_text()
    for fragment in (card["command"], config.digest(), "linear_acc", "torchvision",
                     f"{result['metrics']['linear_acc']:.4f}"):
        assert fragment in text


def test_card_command_rebuilds_the_same_config(registry, trained):
    config = RunDir(trained).load_config(registry)
    command = pretrain_command(config, registry, "runs")
    assert "--set method.temperature=0.3" in command
    sets = [part.split(" ", 1)[1] for part in command.split(" --") if part.startswith("set ")]
    rebuilt = RunConfig.build(registry, "simclr", sets, dataset="synthetic",
                              backbone="resnet18")
    assert rebuilt.digest() == config.digest()


def test_differences_spell_tuples_and_booleans(registry):
    base = RunConfig.build(registry, "simclr")
    changed = RunConfig.build(registry, "simclr", ["eval.knn_k=5,10", "train.compile=true"])
    assert differences(base, changed) == [("train.compile", "true"), ("eval.knn_k", "5,10")]


def test_export_refusals_are_one_line(registry, tmp_path, trained):
    assert_one_line_error(run_cli("export", tmp_path / "nowhere"), "is not a directory")
    assert_one_line_error(run_cli("export", trained, "--format", "onnx"),
                          "unknown export format 'onnx'", "sslreg, torchvision")
    narrow = tmp_path / "narrow"
    run_cli("pretrain", "--method", "simclr", "--backbone", "resnet18-narrow", *TINY,
            "--out", narrow)
    run_dir = next(narrow.glob("simclr-*"))
    assert_one_line_error(run_cli("export", run_dir, "--format", "torchvision"),
                          "'resnet18-narrow' has no torchvision equivalent",
                          "it exports: sslreg")
    assert not (run_dir / "export").exists()  # nothing written by a refusal


def test_unevaluated_and_unfinished_runs_are_refused(tmp_path):
    out = tmp_path / "runs"
    run_cli("pretrain", "--method", "simclr", "--backbone", "resnet18-narrow", *TINY,
            "--no-eval", "--out", out)
    run_dir = next(out.glob("simclr-*"))
    assert_one_line_error(run_cli("export", run_dir), "trained but not evaluated",
                          "sslreg eval")
    state = load_checkpoint(RunDir(run_dir).checkpoint)
    save_checkpoint(RunDir(run_dir).checkpoint, {**state, "epoch": 0})
    assert_one_line_error(run_cli("export", run_dir), "unfinished (epoch 0 of 1)",
                          "--resume")
    RunDir(run_dir).checkpoint.unlink()
    assert_one_line_error(run_cli("export", run_dir), "has no checkpoint")


def test_floor_is_refused(registry, tmp_path):
    from sslreg.engine import floors

    config = RunConfig.build(registry, "simclr", ["eval.train_subset=100",
                                                  "eval.val_subset=50",
                                                  "eval.test_subset=50"],
                             dataset="synthetic", backbone="resnet18-narrow")
    floors(config, registry, tmp_path)
    floor = next(tmp_path.glob("floor-random-init-*"))
    assert_one_line_error(run_cli("export", floor), "is a floor")
