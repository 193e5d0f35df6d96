"""The benchmark harness end to end on the synthetic dataset."""

import pytest
from sslreg_simclr import SimCLR, SimCLRConfig

from sslreg import MethodSpec, SslregError, hookimpl, load_registry, testing
from sslreg.errors import ConfigError
from sslreg.suites.runner import backbone_for, run_suite
from sslreg.suites.suite import Budget, parse_suite

SUITE = """
name = "tiny"
dataset = "synthetic"
methods = ["simclr", "vit-simclr"]
seeds = [0]
[budget.cpu]
backbone = "resnet18-narrow"
vit_backbone = "vit-mini"
set = ["train.epochs=1", "train.batch_size=32", "train.train_subset=64",
       "eval.train_subset=100", "eval.test_subset=50"]
[budget.gpu]
backbone = "resnet18-narrow"
vit_backbone = "vit-mini"
set = ["train.epochs=1", "train.batch_size=32", "train.train_subset=64",
       "eval.train_subset=100", "eval.test_subset=50"]
"""


class VitSimCLRPlugin:
    """SimCLR declared ViT-only, to exercise the budget's ViT backbone."""

    @hookimpl
    def register_methods(self, register):
        register(MethodSpec(name="vit-simclr", factory=SimCLR, config_class=SimCLRConfig,
                            paper="-", views="simclr", objective="nt_xent",
                            backbone_families=("vit",)))


def test_suite_runs_each_method_on_a_fitting_backbone_with_floors_per_backbone(tmp_path):
    with testing.registered(VitSimCLRPlugin(), "vit-simclr-plugin"):
        table = run_suite(parse_suite(SUITE), load_registry(), tmp_path, progress=False)
    lines = table.splitlines()
    assert lines[0] == "## tiny: synthetic, seeds 0"
    rows = {tuple(cell.strip() for cell in line.split("|")[1:3]) for line in lines[4:]}
    # Raw pixels need no backbone: one row, however many backbones the suite uses.
    assert rows == {("simclr", "resnet18-narrow"), ("vit-simclr", "vit-mini"),
                    ("(raw pixels)", "-"), ("(random init)", "resnet18-narrow"),
                    ("(random init)", "vit-mini")}
    assert all(line.split("|")[-2].strip() == "ok" for line in lines[4:]), table


def test_a_budget_without_a_fitting_backbone_is_refused():
    with testing.registered(VitSimCLRPlugin(), "vit-simclr-plugin"):
        registry = load_registry()
        with pytest.raises(SslregError, match="no backbone for method 'vit-simclr'"):
            backbone_for(registry, "vit-simclr", Budget(backbone="resnet18-narrow"))
        assert backbone_for(registry, "simclr", Budget(backbone="resnet18")) == "resnet18"


def test_per_method_overrides_for_every_budget_and_for_one():
    from sslreg.suites.suite import suite_sets

    suite = parse_suite(SUITE + """
[method.simclr]
set = ["method.temperature=0.2"]
[budget.cpu.method.simclr]
set = ["optim.lr=1.0"]
""")
    cpu = suite_sets(suite, suite.budget(cuda=False), "simclr", seed=3)
    assert cpu[-3:] == ["method.temperature=0.2", "optim.lr=1.0", "train.seed=3"]
    gpu = suite_sets(suite, suite.budget(cuda=True), "simclr", seed=3)
    assert "optim.lr=1.0" not in gpu and "method.temperature=0.2" in gpu
    assert suite_sets(suite, suite.budget(cuda=False), "byol", 0)[-1] == "train.seed=0"



def test_per_method_overrides_beside_tuned_settings():
    """A budget with both `tuned` and [budget.cpu.method.NAME] was refused (attrs.evolve
    converted the method tables twice); CONTRIBUTING's suite example has both."""
    from sslreg.suites.suite import suite_sets

    suite = parse_suite("""
[budget.cpu]
backbone = "resnet18-narrow"
tuned = "quick-cpu"
[budget.cpu.method.simclr]
set = ["optim.lr=1.0"]
[budget.gpu]
backbone = "resnet18"
""")
    tuned = suite.cpu.tuned_settings.sets["simclr"]
    assert suite_sets(suite, suite.cpu, "simclr", 0) == [*tuned, "optim.lr=1.0", "train.seed=0"]

def test_builtin_quick_suite_parses():
    from sslreg.suites.suite import load_suite

    suite = load_suite("quick")
    assert suite.methods == ("*",) and suite.cpu.tuned == "quick-cpu"
    # Every registered method had the same number of trials, and nothing is hand-set.
    tuned = suite.cpu.tuned_settings
    assert set(tuned.trials) == set(load_registry().methods.names())
    assert len(set(tuned.trials.values())) == 1
    assert all(len(sets) == 1 and sets[0].startswith("optim.lr=")
               for sets in tuned.sets.values())
    assert not suite.cpu.method and not suite.gpu.method


class BrokenMethodPlugin:
    """A method whose step raises, to check that one failure does not stop a suite."""

    @hookimpl
    def register_methods(self, register):
        class Broken(SimCLR):
            def training_step(self, views):
                raise RuntimeError("deliberately broken")

        register(MethodSpec(name="broken", factory=Broken, config_class=SimCLRConfig,
                            paper="-", views="simclr", objective="nt_xent"))


def test_failures_are_isolated_recorded_and_finished_runs_skipped(tmp_path):
    from sslreg.runs import open_index

    suite = parse_suite(SUITE.replace('["simclr", "vit-simclr"]', '["simclr", "broken"]'))
    with testing.registered(BrokenMethodPlugin(), "broken-plugin"):
        table = run_suite(suite, load_registry(), tmp_path, progress=False)
        assert "crashed: RuntimeError: deliberately broken" in table
        rows = {r["method"]: r for r in open_index(tmp_path).rows()}
        assert rows["simclr"]["status"] == "evaluated" and rows["simclr"]["suites"] == {"tiny": ""}
        assert rows["broken"]["status"].startswith("crashed: RuntimeError")
        checkpoint = next(tmp_path.glob("simclr-*/checkpoint.pt"))
        before = checkpoint.stat().st_mtime_ns
        run_suite(suite, load_registry(), tmp_path, progress=False)
        assert checkpoint.stat().st_mtime_ns == before, "a finished run was trained again"


SWEEP = """
[[sweep]]
key = "method.temperature"
values = [0.1, 0.5]
methods = ["sim*"]
"""


def test_a_sweep_runs_each_value_as_its_own_row_with_one_tensorboard_logdir(tmp_path):
    from sslreg.runs import RunDir

    suite = parse_suite(SUITE.replace('["simclr", "vit-simclr"]', '["simclr"]') + SWEEP)
    table = run_suite(suite, load_registry(), tmp_path, progress=False)
    assert "| simclr [method.temperature=0.1]" in table
    assert "| simclr [method.temperature=0.5]" in table
    runs = sorted(tmp_path.glob("simclr-*/config.json"))
    temperatures = sorted(RunDir(p.parent).read_json(p)["method_config"]["temperature"]
                          for p in runs)
    assert temperatures == [0.1, 0.5]
    # One logdir for the suite, one folder per run in it, holding the run's events.
    logdir = tmp_path / "tensorboard" / "tiny"
    assert sorted(p.name for p in logdir.iterdir()) == sorted(p.parent.name for p in runs)
    for run in logdir.iterdir():
        assert list(run.glob("events.out.tfevents.*")), run


def test_leaderboard_page_and_figures_from_a_real_suite_run(tmp_path):
    from click.testing import CliRunner

    from sslreg.cli import cli

    text = SUITE.replace('["simclr", "vit-simclr"]', '["simclr", "supervised"]').replace(
        '"train.epochs=1"', '"train.epochs=2", "eval.curve_every=1", "eval.curve_images=100"')
    text += '[reference]\nsource = "a paper"\n[reference.results]\nsimclr = { linear = 50 }\n'
    (tmp_path / "tiny.toml").write_text(text)
    out, plots, page = tmp_path / "runs", tmp_path / "results" / "plots", tmp_path / "results"
    runner = CliRunner()
    ran = runner.invoke(cli, ["bench", str(tmp_path / "tiny.toml"), "--out", str(out),
                              "--quiet"])
    assert ran.exit_code == 0, ran.output
    shown = runner.invoke(cli, ["leaderboard", str(tmp_path / "tiny.toml"), "--out", str(out),
                                "--plot", str(plots), "--output", str(page / "tiny.md")])
    assert shown.exit_code == 0, shown.output
    markdown = (page / "tiny.md").read_text()
    assert "| supervised (ceiling)" in markdown and "Reference: a paper" in markdown
    assert "Δ linear" in markdown
    for name in ("accuracy", "accuracy_vs_time", "learning_curves"):
        png = (plots / f"{name}.png").read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 5000, name
        assert f"![{name}](plots/{name}.png)" in markdown  # relative to the page
    html = runner.invoke(cli, ["leaderboard", str(tmp_path / "tiny.toml"), "--out", str(out),
                               "--format", "html"])
    assert html.exit_code == 0 and html.output.count("data:image/png;base64,") == 3


def test_sweeps_and_references_parse_and_bad_ones_are_refused():
    from sslreg.errors import ConfigError

    reference = """
[reference]
source = "solo-learn"
[reference.results.simclr]
linear = 90.74
"""
    suite = parse_suite(SUITE + SWEEP + reference)
    assert suite.sweep[0].values == (0.1, 0.5) and suite.sweep[0].matches("simclr")
    assert not suite.sweep[0].matches("byol")
    assert suite.reference.results == {"simclr": {"linear": 90.74}}
    for bad, reason in [
        (SWEEP.replace("values = [0.1, 0.5]", "values = []"), "non-empty list"),
        (SWEEP.replace('"method.temperature"', '"temperature"'), "a config key such as"),
        (SWEEP + "step = 2\n", "unknown key step in a [[sweep]] table; valid keys: key"),
        (reference.replace("linear = 90.74", "top1 = 90.74"), "unknown reference column top1"),
        (reference.replace("linear = 90.74", "linear = 0.9074e3"), "must be a percentage"),
        ('[reference]\nsource = "x"\n', "lacks a key"),
    ]:
        with pytest.raises(ConfigError, match="suite") as error:
            parse_suite(SUITE + bad, default_name="bad")
        assert reason in str(error.value) and "\n" not in str(error.value), str(error.value)


def test_an_interrupted_suite_resumes_its_unfinished_run(tmp_path, interrupt_second_epoch):
    from sslreg.engine.checkpoint import load_checkpoint
    from sslreg.runs import open_index

    suite = parse_suite(SUITE.replace('["simclr", "vit-simclr"]', '["simclr"]')
                        .replace('"train.epochs=1"', '"train.epochs=2"'))
    with interrupt_second_epoch():  # Ctrl-C during the run's second epoch
        run_suite(suite, load_registry(), tmp_path, progress=False)
    (checkpoint,) = tmp_path.glob("simclr-*/checkpoint.pt")
    assert load_checkpoint(checkpoint)["epoch"] == 1  # the finished epoch is kept
    table = run_suite(suite, load_registry(), tmp_path, progress=False)
    assert load_checkpoint(checkpoint)["epoch"] == 2 and "| simclr" in table
    (row,) = [r for r in open_index(tmp_path).rows() if r["status"] != "floor"]
    assert row["status"] == "evaluated"


def test_fmnist_suite_is_the_gpu_leaderboard():
    from sslreg.suites.suite import load_suite

    suite = load_suite("fmnist")
    assert suite.seeds == (0, 1, 2) and suite.gpu.backbone == "resnet18"
    assert "train.epochs=200" in suite.gpu.set and suite.gpu.vit_backbone == "vit-tiny"


@pytest.mark.parametrize("text, reason", [
    ('name = "x"', "lacks 'budget'"),
    ('name = [', "not valid TOML"),
    ('seedz = [0]\n' + SUITE, "unknown key 'seedz'; valid keys: dataset"),
    (SUITE + 'epochs = 3', "unknown key 'epochs' in a [budget] table; valid keys: backbone"),
    (SUITE.replace("seeds = [0]", 'seeds = "zero"'), "'seeds' must be a non-empty list"),
    (SUITE.replace('set = ["train.epochs=1", "train.batch_size=32", "train.train_subset=64",\n'
                   '       "eval.train_subset=100", "eval.test_subset=50"]',
                   'set = "train.epochs=1"', 1), "'set' must be a list"),
])
def test_bad_suite_files_get_one_clear_line(text, reason):
    from sslreg.errors import ConfigError

    with pytest.raises(ConfigError, match="suite") as error:
        parse_suite(text, default_name="bad")
    assert reason in str(error.value) and "\n" not in str(error.value), str(error.value)


@pytest.mark.slow
def test_smoke_suite_end_to_end_every_registered_method(tmp_path):
    from click.testing import CliRunner

    from sslreg.cli import cli
    from sslreg.runs import open_index

    runner = CliRunner()
    ran = runner.invoke(cli, ["bench", "smoke", "--out", str(tmp_path), "--quiet"])
    assert ran.exit_code == 0, ran.output
    rows = open_index(tmp_path).rows()
    runs = [r for r in rows if r["status"] != "floor"]
    assert sorted(r["method"] for r in runs) == sorted(load_registry().methods.names())
    assert all(r["status"] == "evaluated" and "smoke" in r["suites"] for r in runs), rows
    # Floors are rows too; MAE reads pooled patch tokens, so its floor is its own.
    floors = {(r["method"], r["backbone"], r["suites"]["smoke"]) for r in rows
              if r["status"] == "floor"}
    assert floors == {("(raw pixels)", "-", ""), ("(random init)", "resnet18-narrow", ""),
                      ("(random init)", "vit-mini", "mean of patch tokens")}
    board = runner.invoke(cli, ["leaderboard", "smoke", "--out", str(tmp_path)])
    assert board.exit_code == 0, board.output
    assert "| supervised (ceiling)" in board.output and "| (random init)" in board.output
    # A second run of the suite finds every run finished and trains nothing.
    checkpoints = {p: p.stat().st_mtime_ns for p in tmp_path.glob("*/checkpoint.pt")}
    again = runner.invoke(cli, ["bench", "smoke", "--out", str(tmp_path), "--quiet"])
    assert again.exit_code == 0, again.output
    assert {p: p.stat().st_mtime_ns for p in checkpoints} == checkpoints


def test_every_builtin_suite_parses_and_names_registered_methods():
    from sslreg.suites.suite import builtin_suites, load_suite

    names = set(load_registry().methods.names())
    for name in builtin_suites():
        suite = load_suite(name)
        assert suite.select(sorted(names)), name
        for sweep in suite.sweep:
            assert any(sweep.matches(m) for m in names), (name, sweep)
        if suite.reference:  # a misspelt method would never meet its published number
            assert set(suite.reference.results) <= names, name


def test_tune_gives_every_method_the_same_trials_and_chooses_on_validation(tmp_path):
    from sslreg.suites.suite import parse_tuned
    from sslreg.suites.tune import tune, tuned_toml

    suite = parse_suite(SUITE.replace('["simclr", "vit-simclr"]', '["simclr", "byol"]'))
    frame = tune(suite, load_registry(), tmp_path, multipliers=(1.0, 4.0), progress=False)
    # Two trials each, at 1x and 4x the method's own default rate, seed 0.
    assert sorted(frame["method"]) == ["byol", "byol", "simclr", "simclr"]
    assert sorted(frame.loc[frame["method"] == "simclr", "rate"]) == [0.3, 1.2]
    assert set(frame["seed"]) == {0} and frame["chosen"].sum() == 2
    # The choice is the best mean of validation linear and kNN20 accuracy.
    for _, trials in frame.groupby("method"):
        score = (trials["val_linear_acc"] + trials["val_knn20_acc"]) / 2
        assert trials.loc[score.idxmax(), "chosen"]
    import tomllib

    written = parse_tuned(tomllib.loads(tuned_toml(frame, suite, "sslreg tune tiny",
                                                   (1.0, 4.0))))
    assert written.trials == {"byol": 2, "simclr": 2}
    chosen = frame[frame["chosen"]].set_index("method")["rate"]
    assert written.sets["simclr"] == (f"optim.lr={chosen['simclr']:g}",)


def test_a_suite_reads_its_tuned_settings_and_the_leaderboard_counts_trials(tmp_path):
    from sslreg.suites.leaderboard import leaderboard_frame, summary
    from sslreg.suites.suite import suite_sets

    tuned = tmp_path / "tuned.toml"
    tuned.write_text('[method.simclr]\nset = ["optim.lr=1.2"]\ntrials = 3\n')
    text = SUITE.replace('["simclr", "vit-simclr"]', '["simclr"]').replace(
        '[budget.cpu]\n', f'[budget.cpu]\ntuned = "{tuned}"\n')
    suite = parse_suite(text)
    assert "optim.lr=1.2" in suite_sets(suite, suite.cpu, "simclr", 0)
    run_suite(suite, load_registry(), tmp_path / "runs", progress=False)
    table = summary(leaderboard_frame(tmp_path / "runs", "tiny"), None,
                    suite.cpu.tuned_settings.trials).set_index("method")
    assert table.loc["simclr", "trials"] == "3" and table.loc["(random init)", "trials"] == "-"
    with pytest.raises(ConfigError, match="unknown tuned settings 'nope'"):
        parse_suite(SUITE.replace("[budget.cpu]\n", '[budget.cpu]\ntuned = "nope"\n'))
    tuned.write_text('[method.simclr]\nset = ["optim.lr=1.2"]\n')
    with pytest.raises(ConfigError, match="trials >= 1"):
        parse_suite(text)


def _board_frame(label_efficient: bool):
    import pandas as pd

    rows = []
    for method, base in (("simclr", 0.7), ("(raw pixels)", 0.8), ("(random init)", 0.6)):
        for seed in (0,) if method == "(raw pixels)" else (0, 1):
            row = {"method": method, "variant": "", "seed": seed, "linear_acc": base,
                   "backbone": "-" if method == "(raw pixels)" else "resnet18-narrow",
                   "status": "floor" if method.startswith("(") else "evaluated"}
            if label_efficient:
                row.update({"linear_1pct_acc": base - 0.2, "linear_10pct_acc": base - 0.1,
                            "shot10_acc": base - 0.15 + seed * 0.02, "shot1_acc": base - 0.3})
                if method != "(raw pixels)":
                    row["finetune_acc"] = base + 0.1
            rows.append(row)
    return pd.DataFrame(rows)


def test_label_efficient_columns_show_only_when_some_row_has_them():
    from sslreg.suites.leaderboard import FORMATS, render, summary

    titles = ["1% linear", "10% linear", "1-shot", "10-shot", "fine-tune"]
    table = summary(_board_frame(True)).set_index("method")
    columns = list(table.columns)
    assert [c for c in columns if c in titles] == titles  # fractions, shots, fine-tune
    assert columns.index("linear") < columns.index("1% linear")
    assert table.loc["simclr", "10-shot"] == "56.0 ± 1.4"  # mean ± std over seeds
    assert table.loc["(raw pixels)", "1% linear"] == "60.0"  # the floors have them too
    assert table.loc["(raw pixels)", "fine-tune"] == "-"
    assert table.loc["(random init)", "fine-tune"] == "70.0 ± 0.0"
    for fmt in FORMATS:
        shown = render(_board_frame(True), fmt)
        escaped = [t.replace("%", "\\%") if fmt == "latex" else t for t in titles]
        assert all(title in shown for title in escaped), fmt
        plain = render(_board_frame(False), fmt)
        assert not any(title in plain for title in [*escaped, "shot", "fine"]), fmt


def test_label_efficient_sets_evaluate_finished_runs_and_floors_again_without_training(
        tmp_path):
    from sslreg.runs import open_index

    plain = SUITE.replace('["simclr", "vit-simclr"]', '["simclr"]')
    run_suite(parse_suite(plain), load_registry(), tmp_path, progress=False)
    (checkpoint,) = tmp_path.glob("simclr-*/checkpoint.pt")
    folders, before = sorted(tmp_path.iterdir()), checkpoint.stat().st_mtime_ns
    sets = ('"eval.test_subset=50", "eval.label_fractions=0.1", "eval.shots=1,2", '
            '"eval.finetune_epochs=1", "eval.finetune_batch_size=32"')
    table = run_suite(parse_suite(plain.replace('"eval.test_subset=50"', sets)),
                      load_registry(), tmp_path, progress=False)
    assert checkpoint.stat().st_mtime_ns == before, "the finished run was trained again"
    assert sorted(tmp_path.iterdir()) == folders  # the same run and floor directories
    rows = {r["method"]: r for r in open_index(tmp_path).rows()}
    wanted = {"linear_10pct_acc", "shot1_acc", "shot2_acc"}
    assert wanted | {"finetune_acc"} <= set(rows["simclr"]["metrics"])
    assert wanted | {"finetune_acc"} <= set(rows["(random init)"]["val_metrics"])
    assert wanted <= set(rows["(raw pixels)"]["metrics"])  # pixels are not fine-tuned
    assert "finetune_acc" not in rows["(raw pixels)"]["metrics"]
    assert all(title in table for title in ("10% linear", "1-shot", "2-shot", "fine-tune"))
