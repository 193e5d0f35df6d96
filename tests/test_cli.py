"""The command line: listings, a real run, and one clear line for every bad input."""

import pytest
from click.testing import CliRunner

from sslreg import testing
from sslreg.cli import cli
from sslreg.runs import RunDir

TINY = ["--dataset", "synthetic", "--backbone", "resnet18-narrow", "--epochs", "1",
        "--batch-size", "32", "--quiet", "--set", "train.train_subset=96",
        "--set", "eval.train_subset=200", "--set", "eval.test_subset=100"]


def run(*args):
    return CliRunner().invoke(cli, list(args))


def assert_one_line_error(result, *fragments):
    assert result.exit_code != 0, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0]


def test_plugins_lists_plugins_and_registrations():
    result = run("plugins")
    assert result.exit_code == 0
    assert "simclr 0.1.0: method:simclr" in result.output
    assert "sslreg.builtins.backbones 0.1.0: backbone:resnet18, backbone:resnet18-narrow" \
        in result.output
    assert "view:crop-flip (alias mae)" in result.output


def test_plugins_shows_a_failing_plugin_while_others_work():
    from sslreg import hookimpl

    class Raising:
        @hookimpl
        def register_methods(self, register):
            raise ValueError("bad config default")

    with testing.registered(Raising(), "raising"):
        result = run("plugins")
        methods = run("methods")
    assert result.exit_code == 0
    assert "FAILED raising: register_methods raised ValueError: bad config default" in result.output
    assert "simclr" in methods.output


def test_plugins_hook_filter():
    result = run("plugins", "--hook", "register_methods")
    assert result.exit_code == 0 and {"byol", "simclr"} <= set(result.output.split())
    assert_one_line_error(run("plugins", "--hook", "register_method"),
                          "unknown hook 'register_method'", "register_methods")


def test_methods_options_lists_every_config_field_with_default_and_help():
    from sslreg import fields, load_registry

    result = run("methods", "--options", "vicreg")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("vicreg: objective vicreg, views byol")
    sim = next(line for line in lines if "method.sim_coeff" in line)
    assert sim.split()[:2] == ["method.sim_coeff", "25.0"] and "invariance" in sim
    assert lines[-1].startswith("  optim.*: name='lars', lr=0.2")
    # Every built-in method documents every option it has.
    for spec in load_registry().methods:
        for name, _, meaning in fields.describe(spec.config_class):
            assert meaning, f"{spec.name}: option {name} has no help"


def test_methods_options_of_an_unknown_method_is_one_line_with_the_choices():
    assert_one_line_error(run("methods", "--options", "vicrg"),
                          "unknown method 'vicrg'", "choose from:", "vicreg", "simclr")


def test_methods_lists_paper_views_objective():
    result = run("methods")
    line = next(x for x in result.output.splitlines() if x.startswith("simclr"))
    assert "Chen et al. 2020" in line and "views: simclr" in line and "objective: nt_xent" in line


def test_pretrain_then_eval(tmp_path):
    result = run("pretrain", "--method", "simclr", *TINY, "--set", "method.temperature=0.2",
                 "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "linear_acc" in result.output
    (run_dir,) = [path for path in tmp_path.iterdir() if path.is_dir()]
    listed = run("runs", "--out", str(tmp_path))  # the run index recorded it
    assert listed.exit_code == 0 and run_dir.name in listed.output and "evaluated" in listed.output
    assert RunDir(run_dir).read_json(RunDir(run_dir).config)["method_config"] == {
        "temperature": 0.2, "proj_hidden_dim": 2048, "proj_dim": 128}
    RunDir(run_dir).result.unlink()
    again = run("eval", str(run_dir))
    assert again.exit_code == 0, again.output
    assert "knn20_acc" in again.output and RunDir(run_dir).result.exists()


@pytest.mark.parametrize("args, fragments", [
    (["--method", "simclar"], ["unknown method 'simclar'", "choose from: ", "simclr"]),
    (["--method", "simclr", "--backbone", "vgg"], ["unknown backbone 'vgg'", "resnet18"]),
    (["--method", "simclr", "--dataset", "mnist"], ["unknown dataset 'mnist'", "fashion-mnist"]),
    (["--method", "simclr", "--set", "views=crops"],
     ["unknown view policy 'crops'", "choose from: byol, crop-flip (alias mae), multicrop"]),
    (["--method", "simclr", "--set", "method.tau=1"], ["unknown key 'method.tau'"]),
    (["--method", "simclr", "--set", "method.temperature=hot"], ["expected a number"]),
    (["--method", "simclr", "--set", "optim.name=adam"], ["must be in"]),
    (["--method", "simclr", "--set", "train.device=tpu"], ["train.device"]),
])
def test_bad_pretrain_input(tmp_path, args, fragments):
    result = run("pretrain", *args, "--out", str(tmp_path))
    assert_one_line_error(result, *fragments)
    assert not any(tmp_path.iterdir())


def test_missing_dataset_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("SSLREG_DATA", str(tmp_path / "empty"))
    result = run("pretrain", "--method", "simclr", "--dataset", "cifar10", "--out",
                 str(tmp_path / "runs"), "--quiet")
    assert_one_line_error(result, "cifar10 not found", "download")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.pt"))


def test_existing_run_and_corrupt_checkpoint(tmp_path):
    assert run("pretrain", "--method", "simclr", *TINY, "--no-eval", "--out",
               str(tmp_path)).exit_code == 0
    (run_dir,) = [path for path in tmp_path.iterdir() if path.is_dir()]
    checkpoint = RunDir(run_dir).checkpoint
    saved = checkpoint.read_bytes()
    again = run("pretrain", "--method", "simclr", *TINY, "--no-eval", "--out", str(tmp_path))
    assert_one_line_error(again, "already exists", "--resume")
    assert checkpoint.read_bytes() == saved
    checkpoint.write_bytes(saved[: len(saved) // 2])
    broken = checkpoint.read_bytes()
    resumed = run("pretrain", "--method", "simclr", *TINY, "--no-eval", "--resume",
                  "--out", str(tmp_path))
    assert_one_line_error(resumed, "cannot read checkpoint", "delete it to start over")
    assert checkpoint.read_bytes() == broken
    assert_one_line_error(run("eval", str(run_dir)), "cannot read checkpoint")


def test_eval_of_a_folder_that_is_not_a_run(tmp_path):
    assert_one_line_error(run("eval", str(tmp_path)), "config.json is missing")
    assert_one_line_error(run("eval", str(tmp_path / "nope")), "is not a directory")


def test_bench_unknown_suite():
    assert_one_line_error(run("bench", "quik"), "unknown suite 'quik'",
                          "fmnist, fmnist-cpu, quick, quick-label-efficient, smoke")


def test_bench_writes_the_table_with_its_provenance(tmp_path):
    suite = tmp_path / "one.toml"
    budget = ('backbone = "resnet18-narrow"\nset = ["train.epochs=1", "train.batch_size=32", '
              '"train.train_subset=64", "eval.train_subset=100", "eval.test_subset=50"]\n')
    suite.write_text(f'name = "one"\ndataset = "synthetic"\nmethods = ["simclr"]\n'
                     f"[budget.cpu]\n{budget}[budget.gpu]\n{budget}")
    table = tmp_path / "tables" / "one.md"
    result = run("bench", str(suite), "--out", str(tmp_path / "runs"), "--quiet",
                 "--table", str(table))
    assert result.exit_code == 0, result.output
    text = table.read_text()
    assert text.startswith("## one: synthetic, seeds 0")
    assert "| simclr " in text and "(random init)" in text
    assert f"Made by `sslreg bench {suite} --out {tmp_path / 'runs'} --table {table}` in " \
        in text
    assert "CPU cores), torch " in text


def test_eval_set_adds_label_efficient_metrics_to_a_finished_run(tmp_path):
    from sslreg import load_registry
    from sslreg.runs import open_index

    assert run("pretrain", "--method", "simclr", *TINY, "--out", str(tmp_path)).exit_code == 0
    (run_dir,) = [path for path in tmp_path.iterdir() if path.is_dir()]
    folder = RunDir(run_dir)
    trained = folder.checkpoint.stat().st_mtime_ns
    again = run("eval", str(run_dir), "--set", "eval.shots=1,5",
                "--set", "eval.label_fractions=0.1")
    assert again.exit_code == 0, again.output
    assert "test shot5_acc: " in again.output and "val linear_10pct_acc: " in again.output
    result = folder.read_json(folder.result)
    assert result["label_efficient"]["shot1_acc"]["subsets"] == 5
    assert result["label_efficient"]["shot5_acc"]["images"] == 50  # 10 classes x 5
    config = folder.load_config(load_registry())
    assert config.eval.shots == (1, 5)  # config.json says what the result holds
    assert RunDir.for_config(tmp_path, config).path == run_dir  # the same directory
    assert folder.checkpoint.stat().st_mtime_ns == trained
    (row,) = [r for r in open_index(tmp_path).rows() if r["run"] == run_dir.name]
    assert "shot5_acc" in row["metrics"]  # the index is up to date for leaderboards
    assert_one_line_error(run("eval", str(run_dir), "--set", "train.epochs=3"),
                          "cannot set train.epochs", "would change the run itself")
    assert_one_line_error(run("eval", str(run_dir), "--set", "eval.knn_k=5"),
                          "cannot set eval.knn_k", "eval.shots")


def test_eval_set_scores_a_floor_again_and_says_when_shots_exceed_a_class(tmp_path):
    from sslreg import RunConfig, load_registry
    from sslreg.engine import floors

    registry = load_registry()
    config = RunConfig.build(registry, "simclr", ["eval.train_subset=200",
                                                  "eval.test_subset=100"],
                             dataset="synthetic", backbone="resnet18-narrow")
    floors(config, registry, tmp_path)
    folders = sorted(tmp_path.iterdir())
    (pixels,) = tmp_path.glob("floor-raw-pixels-*")
    again = run("eval", str(pixels), "--set", "eval.shots=2")
    assert again.exit_code == 0, again.output
    result = RunDir(pixels).read_json(RunDir(pixels).result)
    assert "shot2_acc" in result["metrics"] and "shot2_acc" in result["val_metrics"]
    assert sorted(tmp_path.iterdir()) == folders  # scored in place
    # About 20 training images per class: 50 shots cannot be drawn.
    assert_one_line_error(run("eval", str(pixels), "--set", "eval.shots=50"),
                          "50-shot probes need 50 training images of every class",
                          "raise eval.train_subset")
