"""A run is assembled once (sslreg.engine.assemble): its data loaded once, its method and
view policy built one way, and the parts passed to evaluation and the projector."""

import collections

import pytest
from click.testing import CliRunner

from sslreg import DatasetSpec, RunConfig, hookimpl, load_registry
from sslreg.cli import cli
from sslreg.data import ImageDataset, synthetic
from sslreg.engine import assemble, splits
from sslreg.plugins import pm


class CountedSynthetic:
    """The synthetic dataset under another name, counting every split it loads."""

    def __init__(self) -> None:
        self.loads: collections.Counter[str] = collections.Counter()

    def load(self, split: str, root: str | None = None) -> ImageDataset:
        self.loads[split] += 1
        return synthetic.load(split, root)

    @hookimpl
    def register_datasets(self, register):
        register(DatasetSpec(name="counted", loader=self.load, num_classes=10, channels=1,
                             image_size=28))


@pytest.fixture
def counted(monkeypatch):
    """The counting dataset, registered for one test, with the process's cache of
    decoded files turned off (it would hide a second load)."""
    monkeypatch.setattr(splits, "_load", splits._load.__wrapped__)
    plugin = CountedSynthetic()
    pm.register(plugin, name="counted-synthetic")
    try:
        yield plugin
    finally:
        pm.unregister(name="counted-synthetic")


def test_a_pretrain_run_loads_each_split_once_and_its_statistics_once(counted, monkeypatch,
                                                                      tmp_path):
    stats = collections.Counter()
    original = ImageDataset.channel_stats

    def counted_stats(self):
        stats[self.name] += 1
        return original(self)

    monkeypatch.setattr(ImageDataset, "channel_stats", counted_stats)
    ran = CliRunner().invoke(cli, [
        "pretrain", "--method", "simclr", "--dataset", "counted",
        "--backbone", "resnet18-narrow", "--epochs", "1", "--batch-size", "32", "--quiet",
        "--set", "train.train_subset=128", "--set", "eval.train_subset=200",
        "--set", "eval.test_subset=100", "--out", str(tmp_path)])
    assert ran.exit_code == 0, ran.output
    assert "linear" in ran.output  # trained and evaluated
    assert counted.loads == {"train": 1, "test": 1}
    assert sum(stats.values()) == 1


def test_parts_record_what_the_config_resolved_to():
    registry = load_registry()
    config = RunConfig.build(registry, "simclr", ["train.batch_size=32"], dataset="synthetic",
                             backbone="resnet18-narrow")
    parts = assemble(config, registry)
    assert (parts.backbone, parts.views) == ("resnet18-narrow", "simclr")
    assert parts.policy.num_views == 2
    # Normalised by the whole training split, validation images included.
    assert parts.data.stats == synthetic.load("train").channel_stats()
    assert len(parts.pool) == len(parts.data.train)


def test_one_rule_says_which_backbones_fit_a_method():
    from sslreg import testing
    from sslreg.suites.runner import backbone_for
    from sslreg.suites.suite import Budget

    registry = load_registry()
    vits = registry.backbones_for("mae")
    assert vits and all(registry.backbones.get(name).family == "vit" for name in vits)
    assert registry.backbones_for("simclr") == registry.backbones.names()
    assert registry.backbones_for("mae", ["resnet18", "vit-mini"]) == ["vit-mini"]
    # The suite runner, the conformance kit and the config check all follow it.
    assert backbone_for(registry, "mae", Budget(backbone="resnet18",
                                                vit_backbone="vit-mini")) == "vit-mini"
    assert testing.tiny_backbones("mae", registry) == ["vit-mini"]
    with pytest.raises(Exception, match=f"needs a vit backbone \\({', '.join(vits)}\\)"):
        RunConfig.build(registry, "mae", backbone="resnet18")
