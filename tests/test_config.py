"""RunConfig: method defaults, --set overrides, validation before any work."""

import pytest

from sslreg import ConfigError, RunConfig, UnknownNameError
from sslreg.config import apply_overrides, parse_value


def test_method_defaults_and_recommended_optimizer(registry):
    config = RunConfig.build(registry, "simclr")
    assert config.method_config.temperature == 0.5
    assert (config.optim.name, config.optim.lr) == ("lars", 0.3)


def test_overrides_reach_every_section(registry):
    config = RunConfig.build(registry, "simclr", [
        "method.temperature=0.2", "train.epochs=3", "optim.name=adamw", "eval.knn_k=10,50",
        "eval.knn_temperature=0.1,0.2", "backbone=resnet18-narrow", "train.compile=false"])
    assert config.method_config.temperature == 0.2
    assert config.train.epochs == 3 and config.optim.name == "adamw"
    assert config.eval.knn_k == (10, 50) and config.eval.knn_temperature == (0.1, 0.2)
    assert config.backbone == "resnet18-narrow" and config.train.compile is False


@pytest.mark.parametrize("item, message", [
    ("method.temprature=0.2", "unknown key 'method.temprature'; valid keys: method.temperature"),
    ("method.temperature=abc", "bad value method.temperature='abc': expected a number"),
    ("method.temperature=-1", "bad value method.temperature=-1.0"),
    ("train.epochs=0", "bad value train.epochs=0"),
    ("train.epochs=2.5", "expected an integer"),
    ("optim.name=adam", "'name' must be in ('sgd', 'lars', 'adamw')"),
    ("trian.epochs=2", "unknown section 'trian' in 'trian.epochs'; choose from: train"),
    ("epochs", "write it as section.key=value"),
    ("eval.knn_temperature=0.1", "one temperature per k"),
])
def test_bad_overrides_are_refused_with_one_line(registry, item, message):
    with pytest.raises(ConfigError) as error:
        RunConfig.build(registry, "simclr", [item])
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_unknown_names_are_refused_before_work(registry):
    with pytest.raises(UnknownNameError, match="unknown dataset 'mnist'; choose from: "):
        RunConfig.build(registry, "simclr", dataset="mnist")
    with pytest.raises(UnknownNameError, match="unknown method 'simclar'"):
        RunConfig.build(registry, "simclar")


def test_round_trip_and_digest(registry):
    config = RunConfig.build(registry, "byol", ["method.base_momentum=0.99"])
    again = RunConfig.from_dict(config.to_dict(), registry)
    assert again == config and again.digest() == config.digest()
    other = apply_overrides(config, ["train.seed=1"])
    assert other.digest() != config.digest()
    assert apply_overrides(config, ["train.device=cpu"]).digest() == config.digest()


def test_metric_only_eval_keys_stay_out_of_the_digest(registry):
    from sslreg.config import METRIC_ONLY_KEYS, apply_metric_overrides

    config = RunConfig.build(registry, "simclr", ["eval.train_subset=500"])
    sets = ["eval.label_fractions=0.01,0.1", "eval.shots=1,5,10", "eval.label_subsets=3",
            "eval.finetune_epochs=5", "eval.finetune_lr=0.1", "eval.finetune_batch_size=64",
            "eval.finetune_optimizer=adamw"]
    assert {s.split("=")[0] for s in sets} == {f"eval.{k}" for k in METRIC_ONLY_KEYS}
    more = apply_metric_overrides(config, sets)
    assert more.eval.label_fractions == (0.01, 0.1) and more.eval.shots == (1, 5, 10)
    assert more.digest() == config.digest()  # away from their defaults too
    assert RunConfig.from_dict(more.to_dict(), registry) == more
    for item, fragment in [("train.epochs=3", "would change the run itself"),
                           ("eval.knn_k=5", "is part of the run's digest"),
                           ("eval.shotz=5", "unknown key 'eval.shotz'")]:
        with pytest.raises(ConfigError, match=fragment):
            apply_metric_overrides(config, [item])


@pytest.mark.parametrize("item, message", [
    ("eval.label_fractions=1", "distinct fractions in (0, 1)"),
    ("eval.label_fractions=0.1,0.1", "distinct fractions in (0, 1)"),
    ("eval.shots=0", "distinct whole numbers >= 1"),
    ("eval.shots=2.5", "expected tuple[int, ...]"),
    ("eval.label_subsets=0", "'label_subsets' must be >= 1"),
    ("eval.finetune_epochs=-1", "'finetune_epochs' must be >= 0"),
    ("eval.finetune_optimizer=adam", "'finetune_optimizer' must be in"),
])
def test_bad_label_efficient_values_are_refused_with_one_line(registry, item, message):
    with pytest.raises(ConfigError) as error:
        RunConfig.build(registry, "simclr", [item])
    assert message in str(error.value) and "\n" not in str(error.value)


def test_parse_value_types():
    assert parse_value("yes", bool) is True
    assert parse_value("1,2", tuple[int, ...]) == (1, 2)
    assert parse_value("none", float | None) is None
    assert parse_value("0.5", float | None) == 0.5
    with pytest.raises(ValueError):
        parse_value("maybe", bool)
