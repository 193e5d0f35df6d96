"""The plugin manager and the registry: duplicates, broken plugins, hook coverage."""

import importlib
import os
import subprocess
import sys
import types

import attrs
import pluggy
import pytest

from sslreg import (
    BackboneSpec,
    DuplicateNameError,
    MethodSpec,
    PluginError,
    UnknownNameError,
    ViewSpec,
    hookimpl,
    hookspecs,
    load_registry,
    plugins,
    testing,
)
from sslreg.registry import Catalog


def _spec(name="extra"):
    return BackboneSpec(name=name, factory=lambda in_channels, image_size: None)


def test_builtins_register_through_hooks(registry):
    assert "resnet18" in registry.backbones
    assert {"nt_xent", "info_nce", "negative_cosine", "barlow_twins", "vicreg", "clip"} <= set(
        registry.objectives.names())
    assert {"embedding_std", "rankme"} <= set(registry.monitors.names())
    assert registry.backbones.get("resnet18").plugin == "sslreg.builtins.backbones"


@pytest.mark.parametrize("package", ["sslreg.backbones", "sslreg.views", "sslreg.objectives",
                                     "sslreg.monitors", "sslreg.data"])
def test_library_packages_hold_no_hook_implementations(package):
    # Their registrations live in sslreg.builtins, so importing one registers nothing.
    module = importlib.import_module(package)
    assert not [name for name in dir(module)
                if plugins.pm.parse_hookimpl_opts(module, name) is not None]


def test_builtins_are_the_default_plugins(registry):
    assert all(name.startswith("sslreg.builtins.") for name in plugins.DEFAULT_PLUGINS)
    by_plugin = {info.name: {kind for kind, _ in info.registered} for info in registry.plugins}
    assert {name: by_plugin[name] for name in plugins.DEFAULT_PLUGINS} == {
        "sslreg.builtins.backbones": {"backbones"}, "sslreg.builtins.views": {"views"},
        "sslreg.builtins.objectives": {"objectives"},
        "sslreg.builtins.monitors": {"monitors"}, "sslreg.builtins.datasets": {"datasets"}}
    assert set(plugins._FORMER_NAMES.values()) == set(plugins.DEFAULT_PLUGINS)


def test_disabling_a_builtin_by_its_former_name_still_works():
    code = ("from sslreg import load_registry; r = load_registry(); "
            "print(len(r.views), len(r.backbones))")
    env = {**os.environ, "SSLREG_DISABLE_PLUGINS": "sslreg.views", "SSLREG_LOAD_PLUGINS": ""}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout
    assert out.split() == ["0", "4"]


def _views(name, aliases=()):
    return ViewSpec(name=name, factory=lambda **options: None, aliases=aliases)


def test_catalog_alias_resolves_and_is_not_listed():
    catalog = Catalog("views")
    catalog.add(_views("crop-flip", aliases=("mae",)), "core")
    assert catalog.get("mae") is catalog.get("crop-flip") and "mae" in catalog
    assert catalog.names() == ["crop-flip"] and catalog.aliases_of("crop-flip") == ["mae"]
    with pytest.raises(UnknownNameError, match=r"^unknown view policy 'x'; choose from: "
                                               r"crop-flip \(alias mae\)$"):
        catalog.get("x")
    catalog.remove("crop-flip")
    assert "mae" not in catalog


@pytest.mark.parametrize("taken, spec", [
    ("mae", _views("mae")),
    ("mae", _views("other", aliases=("mae",))),
    ("crop-flip", _views("other", aliases=("crop-flip",))),
])
def test_catalog_refuses_a_name_an_alias_holds(taken, spec):
    catalog = Catalog("views")
    catalog.add(_views("crop-flip", aliases=("mae",)), "core")
    with pytest.raises(DuplicateNameError, match=f"view policy '{taken}'.* both plugin 'core' "
                                                 "and plugin 'late'"):
        catalog.add(spec, "late")
    assert catalog.names() == ["crop-flip"]


@pytest.mark.parametrize("aliases, message", [
    ("mae", "must be a tuple of names"),
    (("crop-flip",), "repeat a name"),
    (("Bad Name",), "must start with a lowercase letter"),
])
def test_view_spec_refuses_bad_aliases(aliases, message):
    with pytest.raises((TypeError, ValueError), match=message):
        _views("crop-flip", aliases=aliases)


def test_entry_point_methods_are_found(registry):
    assert {"simclr", "byol"} <= set(registry.methods.names())


def test_catalog_refuses_duplicate_naming_both_plugins():
    catalog = Catalog("backbones")
    catalog.add(_spec(), "first")
    with pytest.raises(DuplicateNameError, match="'first' and plugin 'second'"):
        catalog.add(_spec(), "second")


def test_unknown_name_lists_choices(registry):
    expected = "unknown backbone 'resnet99'; choose from: .*resnet18"
    with pytest.raises(UnknownNameError, match=expected):
        registry.backbones.get("resnet99")


def test_catalog_refuses_wrong_spec_type():
    with pytest.raises(PluginError, match="plugin 'p' passed str to register_backbones"):
        Catalog("backbones").add("resnet", "p")


class DuplicatePlugin:
    @hookimpl
    def register_backbones(self, register):
        register(_spec("resnet18"))
        register(_spec("only-here"))


def test_duplicate_from_a_plugin_is_recorded_and_others_work():
    with testing.registered(DuplicatePlugin(), "dup"):
        registry = load_registry()
    assert registry.backbones.get("resnet18").plugin == "sslreg.builtins.backbones"
    assert "only-here" in registry.backbones
    assert any(f.name == "dup" and "resnet18" in f.error for f in registry.failures)


class RaisingPlugin:
    @hookimpl
    def register_methods(self, register):
        raise RuntimeError("boom")


def test_plugin_raising_in_hook_is_recorded(registry):
    with testing.registered(RaisingPlugin(), "raiser"):
        broken = load_registry()
    assert [f.error for f in broken.failures if f.name == "raiser"] == [
        "register_methods raised RuntimeError: boom"]
    assert broken.methods.names() == registry.methods.names()


class NotASpecPlugin:
    @hookimpl
    def register_methods(self, register):
        register({"name": "dict-method"})


def test_non_spec_is_refused_naming_the_plugin():
    with testing.registered(NotASpecPlugin(), "sloppy"):
        registry = load_registry()
    assert any(f.name == "sloppy" and "takes sslreg.MethodSpec" in f.error
               for f in registry.failures)


@attrs.frozen(kw_only=True)
class BadDefaultConfig:
    temperature: float = attrs.field(default=-1.0, validator=attrs.validators.gt(0))


class BadDefaultPlugin:
    """A method whose config default fails its own validator, beside a good one."""

    def __init__(self, good_spec):
        self.good_spec = good_spec

    @hookimpl
    def register_methods(self, register):
        register(attrs.evolve(self.good_spec, name="bad-default", config_class=BadDefaultConfig,
                              plugin=None))
        register(attrs.evolve(self.good_spec, name="good-copy", plugin=None))


class BadOptimPlugin:
    """A method whose optimiser settings fail OptimConfig's validators: the spec itself
    cannot be built, so the hook raises and the plugin is recorded."""

    def __init__(self, good_spec):
        self.good_spec = good_spec

    @hookimpl
    def register_methods(self, register):
        register(attrs.evolve(self.good_spec, name="bad-optim", optim={"lr": -1}, plugin=None))


def test_config_default_failing_its_validator_is_recorded(registry):
    simclr = registry.methods.get("simclr")
    with (testing.registered(BadDefaultPlugin(simclr), "baddefault"),
          testing.registered(BadOptimPlugin(simclr), "badoptim")):
        broken = load_registry()
    errors = [f.error for f in broken.failures if f.name == "baddefault"]
    assert len(errors) == 1, broken.failures
    assert errors[0].startswith("plugin 'baddefault' registered method 'bad-default' whose "
                                "config defaults fail their own validation: ValueError:")
    assert "'temperature' must be > 0" in errors[0]
    optim_errors = [f.error for f in broken.failures if f.name == "badoptim"]
    assert optim_errors == ["register_methods raised ValueError: 'lr' must be > 0: -1.0"]
    assert "bad-default" not in broken.methods and "bad-optim" not in broken.methods
    assert set(broken.methods.names()) == {*registry.methods.names(), "good-copy"}


def test_optim_is_a_typed_config_and_dicts_convert():
    from sslreg import MethodSpec, OptimConfig

    spec = load_registry().methods.get("simclr")
    assert isinstance(spec.optim, OptimConfig) and spec.optim.name == "lars"
    converted = attrs.evolve(spec, optim={"name": "adamw", "lr": 1e-3, "betas": [0.9, 0.95]})
    assert converted.optim == OptimConfig(name="adamw", lr=1e-3, betas=(0.9, 0.95))
    with pytest.raises(ValueError, match="optim has no field nme; choose from: name, lr"):
        MethodSpec(name="x", factory=spec.factory, config_class=spec.config_class, paper="-",
                   views="simclr", objective="nt_xent", optim={"nme": "sgd"})
    with pytest.raises(ValueError, match="'name' must be in"):
        attrs.evolve(spec, optim=OptimConfig(name="adam"))
    with pytest.raises(TypeError, match="optim must be an sslreg.OptimConfig"):
        attrs.evolve(spec, optim=[("lr", 0.1)])


def test_import_failure_is_recorded(monkeypatch):
    from sslreg import plugins

    class BrokenEntryPoint:
        name = "broken"
        dist = None

        def load(self):
            raise ImportError("No module named 'missing_dependency'")

    monkeypatch.setattr(plugins, "_load_failures", [])
    monkeypatch.setattr(plugins.importlib.metadata, "entry_points",
                        lambda group: [BrokenEntryPoint()])
    plugins._load_entry_points(set(), None)
    assert plugins._load_failures == [plugins.PluginFailure(
        "broken", "import failed: ImportError: No module named 'missing_dependency'")]


def test_misspelled_hook_is_dropped(monkeypatch):
    from sslreg import plugins

    monkeypatch.setattr(plugins, "_load_failures", [])
    module = types.ModuleType("typo_plugin")
    module.register_method = hookimpl(lambda register: None)  # missing "s"
    plugins.pm.register(module, name="typo")
    plugins._drop_invalid_plugins()
    assert plugins.pm.get_plugin("typo") is None
    assert plugins._load_failures[0].name == "typo"


def test_env_switches_pin_the_entry_point_plugins(monkeypatch):
    from sslreg import plugins

    seen = []

    class EntryPoint:
        dist = None

        def __init__(self, name):
            self.name = name

        def load(self):
            seen.append(self.name)
            return types.ModuleType(self.name)

    monkeypatch.setattr(plugins.importlib.metadata, "entry_points",
                        lambda group: [EntryPoint("aa"), EntryPoint("bb"), EntryPoint("cc")])
    plugins._load_entry_points(disabled={"bb"}, only=None)
    plugins._load_entry_points(disabled=set(), only={"cc"})
    assert seen == ["aa", "cc"]
    for name in ("aa", "cc"):
        plugins.pm.unregister(name=name)


def test_fewer_arguments_than_spec_are_fine():
    class Plugin:
        @hookimpl
        def register_commands(self):
            pass

    with testing.registered(Plugin(), "lazy"):
        from sslreg.plugins import add_commands

        assert add_commands(object()) == []


def test_every_hook_has_a_test():
    """Each hook is named in some test, so a new hook without a test fails here."""
    import pathlib

    text = "".join(p.read_text() for p in pathlib.Path(__file__).parent.glob("test_*.py"))
    hooks = [name for name in dir(hookspecs) if name.startswith("register_")]
    assert hooks and all(f"def {hook}" in text for hook in hooks)


def test_method_spec_validates_name():
    with pytest.raises(ValueError, match="lowercase"):
        MethodSpec(name="Bad Name", factory=object, config_class=attrs.make_class("C", []),
                   paper="", views="simclr", objective="nt_xent")


def test_pluggy_manager_name():
    from sslreg.plugins import pm

    assert isinstance(pm, pluggy.PluginManager) and pm.project_name == "sslreg"


class EveryKindPlugin:
    """A third party adding one thing of every kind, nothing installed."""

    @hookimpl
    def register_backbones(self, register):
        register(_spec("tiny-net"))

    @hookimpl
    def register_views(self, register):
        from sslreg import ViewSpec

        register(ViewSpec(name="identity", factory=lambda **kw: None))

    @hookimpl
    def register_objectives(self, register):
        from sslreg import ObjectiveSpec

        register(ObjectiveSpec(name="zero", factory=lambda: (lambda a, b: 0.0)))

    @hookimpl
    def register_monitors(self, register):
        from sslreg import MonitorSpec

        register(MonitorSpec(name="null", factory=object))

    @hookimpl
    def register_datasets(self, register):
        from sslreg import DatasetSpec

        register(DatasetSpec(name="mine", loader=lambda split, root=None: None, num_classes=2,
                             channels=1, image_size=8))

    def __init__(self, method_spec):
        self.method_spec = method_spec

    @hookimpl
    def register_methods(self, register):
        register(attrs.evolve(self.method_spec, name="simclr-copy", plugin=None))

    @hookimpl
    def register_commands(self, cli):
        cli.added = True


def test_a_plugin_can_add_every_kind(registry):
    plugin = EveryKindPlugin(registry.methods.get("simclr"))
    with testing.registered(plugin, "everything"):
        extended = load_registry()
        from sslreg.plugins import add_commands

        target = types.SimpleNamespace()
        add_commands(target)
    assert target.added
    for kind, name in [("backbones", "tiny-net"), ("views", "identity"), ("objectives", "zero"),
                       ("monitors", "null"), ("datasets", "mine"), ("methods", "simclr-copy")]:
        assert extended.catalog(kind).get(name).plugin == "everything"
    info = next(p for p in extended.plugins if p.name == "everything")
    assert ("methods", "simclr-copy") in info.registered and len(info.hooks) == 7
    assert not extended.failures
    assert extended.objectives.create("zero")(1, 2) == 0.0


def test_every_hook_signature_is_documented():
    """CONTRIBUTING.md cannot drift from hookspecs.py."""
    import pathlib

    guide = (pathlib.Path(__file__).parents[1] / "CONTRIBUTING.md").read_text()
    from sslreg.plugins import pm

    for name in (n for n in dir(hookspecs) if n.startswith("register_")):
        caller = getattr(pm.hook, name)
        signature = f"{name}({', '.join(caller.spec.argnames)})"
        assert f"`{signature}`" in guide, signature


# --- objectives: a catalog the engine builds from -----------------------------------------

class UnknownObjectivePlugin:
    """A method naming a loss nobody registers, beside a method and its own objective
    (registered by the objectives hook, which runs after the methods hook)."""

    def __init__(self, good_spec):
        self.good_spec = good_spec

    @hookimpl
    def register_methods(self, register):
        register(attrs.evolve(self.good_spec, name="lost", objective="no_such_loss",
                              plugin=None))
        register(attrs.evolve(self.good_spec, name="found", objective="mine", plugin=None))

    @hookimpl
    def register_objectives(self, register):
        from sslreg import ObjectiveSpec
        from sslreg.objectives import NTXentLoss

        register(ObjectiveSpec(name="mine", factory=NTXentLoss))


def test_a_method_naming_an_unregistered_objective_is_dropped_with_the_choices(registry):
    with testing.registered(UnknownObjectivePlugin(registry.methods.get("simclr")), "lossy"):
        loaded = load_registry()
    errors = [f.error for f in loaded.failures if f.name == "lossy"]
    assert len(errors) == 1, loaded.failures
    assert errors[0].startswith("method 'lost' names objective 'no_such_loss', which no "
                                "plugin registers; choose from: barlow_twins, clip, ")
    assert "lost" not in loaded.methods and "found" in loaded.methods
    info = next(i for i in loaded.plugins if i.name == "lossy")
    assert ("methods", "lost") not in info.registered
    assert ("methods", "found") in info.registered


def test_a_method_whose_objective_refuses_its_default_options_is_dropped(registry):
    @attrs.frozen
    class NegativeTemperature:
        temperature: float = -1.0

    class Plugin:
        @hookimpl
        def register_methods(self, register):
            register(attrs.evolve(registry.methods.get("simclr"), name="cold",
                                  config_class=NegativeTemperature, plugin=None))

    with testing.registered(Plugin(), "cold-plugin"):
        loaded = load_registry()
    (error,) = [f.error for f in loaded.failures if f.name == "cold-plugin"]
    assert error.startswith("method 'cold' cannot build its objective 'nt_xent' from its "
                            "default config: ValueError: nt_xent temperature must be")
    assert "cold" not in loaded.methods


def test_every_method_gets_its_registered_objective(registry):
    for spec in registry.methods:
        method, _ = testing.build(spec.name, registry=registry)
        factory = registry.objectives.get(spec.objective).factory
        assert type(method.objective) is factory, spec.name


def test_objective_options_come_from_config_fields_of_the_same_name(registry):
    from sslreg import RunConfig

    net = registry.backbones.create("resnet18-narrow", in_channels=1, image_size=28)
    config = RunConfig.build(registry, "vicreg", ["method.cov_coeff=0.5",
                                                  "method.sim_coeff=10"])
    method = registry.build_method("vicreg", config.method_config, net)
    assert (method.objective.sim_coeff, method.objective.std_coeff,
            method.objective.cov_coeff) == (10.0, 25.0, 0.5)
    temperature = RunConfig.build(registry, "simclr", ["method.temperature=0.2"])
    assert registry.build_objective("simclr", temperature.method_config).temperature == 0.2
    smoothing = registry.methods.get("supervised").config_class(label_smoothing=0.1)
    assert registry.build_objective("supervised", smoothing).label_smoothing == 0.1


def test_a_factory_without_the_objective_keyword_still_builds(registry):
    """Plugins written before objectives were handed over keep building their own."""
    from sslreg import Method

    class OwnLoss(Method):
        def __init__(self, config, backbone):
            super().__init__(config, backbone)

        def training_step(self, views):  # only built here, never stepped
            raise AssertionError("this test builds the method; it does not train it")

    class Plugin:
        @hookimpl
        def register_methods(self, register):
            register(attrs.evolve(registry.methods.get("simclr"), name="own", factory=OwnLoss,
                                  plugin=None))

    with testing.registered(Plugin(), "own-plugin"):
        loaded = load_registry()
    net = loaded.backbones.create("resnet18-narrow", in_channels=1, image_size=28)
    method = loaded.build_method("own", loaded.methods.get("own").config_class(), net)
    assert method.objective is None

