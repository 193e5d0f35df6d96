"""`sslreg new-plugin`: the name rules, the files it writes, and (slow) what a user does
with them in a fresh environment: install, list, test, pretrain, bench."""

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from click.testing import CliRunner

from sslreg import SslregError, load_registry
from sslreg.cli import cli
from sslreg.scaffold import camel_case, new_plugin

# The tmp venv has no `sslreg` console script; this is what that script runs.
CLI = "import sys; from sslreg.cli import main; sys.argv[0] = 'sslreg'; main()"


def run_cli(*args):
    return CliRunner().invoke(cli, list(args))


def assert_one_line_error(result, *fragments):
    assert result.exit_code != 0, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    assert all(fragment in lines[0] for fragment in fragments), lines[0]


def test_writes_an_installable_plugin(tmp_path):
    result = run_cli("new-plugin", "toy_contrast", "--dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    root = tmp_path / "sslreg-toy_contrast"
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert files == ["README.md", "pyproject.toml", "sslreg_toy_contrast/__init__.py",
                     "tests/test_toy_contrast.py"]
    pyproject = (root / "pyproject.toml").read_text()
    assert '[project.entry-points.sslreg]\ntoy_contrast = "sslreg_toy_contrast"' in pyproject
    module = (root / "sslreg_toy_contrast" / "__init__.py").read_text()
    assert "class ToyContrastConfig:" in module and 'name="toy_contrast"' in module
    for path in root.rglob("*.py"):
        compile(path.read_text(), str(path), "exec")
    assert "$" not in "".join(p.read_text() for p in root.rglob("*") if p.is_file())


def test_an_empty_existing_folder_is_fine(tmp_path):
    (tmp_path / "sslreg-fresh").mkdir()
    assert len(new_plugin("fresh", tmp_path, taken=set())) == 4


@pytest.mark.parametrize("name", ["My-Bad name", "1st", "my-method", "Caps", ""])
def test_a_bad_name_is_refused_with_the_rule(tmp_path, name):
    assert_one_line_error(run_cli("new-plugin", name, "--dir", str(tmp_path)),
                          f"plugin name {name!r} is not valid", "a lowercase letter, then "
                          "lowercase letters, digits or '_'")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("name", ["simclr", "barlow_twins", "barlowtwins"])
def test_a_registered_method_or_plugin_name_is_refused(tmp_path, name):
    assert_one_line_error(run_cli("new-plugin", name, "--dir", str(tmp_path)),
                          f"'{name}' is already a registered method or plugin")


def test_a_non_empty_folder_is_not_overwritten(tmp_path):
    target = tmp_path / "sslreg-mine"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    assert_one_line_error(run_cli("new-plugin", "mine", "--dir", str(tmp_path)),
                          f"{target} already exists and is not empty")
    assert [p.name for p in target.iterdir()] == ["notes.txt"]


def test_an_unwritable_folder_is_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(SslregError, match="cannot write .*file/sslreg-mine"):
        new_plugin("mine", tmp_path / "file", taken=set())


def test_name_rules_without_the_cli(tmp_path):
    with pytest.raises(SslregError, match="already a registered"):
        new_plugin("taken", tmp_path, taken={"taken"})
    assert camel_case("toy_contrast_2") == "ToyContrast2"


def _venv(tmp_path: Path) -> Path:
    """A throwaway venv that sees the current environment's packages (torch, sslreg and
    the plugins, their entry points included) but installs into its own site-packages,
    so the shared environment never sees the new plugin."""
    venv = tmp_path / "venv"
    # --without-pip: the pip/setuptools venv would bundle cannot build editable wheels
    # offline; the current environment's pip and setuptools are used instead.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], check=True, capture_output=True, text=True)
    # addsitedir (not a bare path) so the parent's editable-install .pth hooks run too.
    parent = sysconfig.get_paths()["purelib"]
    Path(site.stdout.strip(), "parent-env.pth").write_text(
        f"import site; site.addsitedir({parent!r})\n")
    return python


def _run(*args, cwd: Path) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SSLREG_OFFLINE": "1"}
    for name in ("SSLREG_DISABLE_PLUGINS", "SSLREG_LOAD_PLUGINS", "PYTHONPATH"):
        env.pop(name, None)
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, f"{args}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


SUITE = """name = "mine"
dataset = "synthetic"
methods = ["toy_contrast"]
seeds = [0]
[budget.cpu]
backbone = "resnet18-narrow"
set = ["train.epochs=1", "train.batch_size=32", "train.train_subset=64",
       "eval.train_subset=100", "eval.test_subset=50"]
[budget.gpu]
backbone = "resnet18-narrow"
set = ["train.epochs=1", "train.batch_size=32", "train.train_subset=64",
       "eval.train_subset=100", "eval.test_subset=50"]
"""


@pytest.mark.slow
def test_a_user_scaffolds_installs_tests_and_runs_a_plugin(tmp_path):
    """About 45 s on a 2-core CPU: venv 0.2 s, install 3 s, the plugin's tests 8 s,
    pretrain 12 s, bench 13 s."""
    python = _venv(tmp_path)
    _run(python, "-c", CLI, "new-plugin", "toy_contrast", cwd=tmp_path)
    plugin = tmp_path / "sslreg-toy_contrast"
    _run(python, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
         "-e", plugin, cwd=tmp_path)

    assert any(line.startswith("toy_contrast ") for line in
               _run(python, "-c", CLI, "methods", cwd=tmp_path).splitlines())
    assert "toy_contrast 0.1.0: method:toy_contrast" in _run(python, "-c", CLI, "plugins",
                                                            cwd=tmp_path)
    tests = _run(python, "-m", "pytest", "-q", "-m", "not slow", "-p", "no:cacheprovider",
                 cwd=plugin)
    assert " passed" in tests and "failed" not in tests, tests

    _run(python, "-c", CLI, "pretrain", "--method", "toy_contrast", "--dataset", "synthetic",
         "--backbone", "resnet18-narrow", "--epochs", "1", "--batch-size", "32", "--quiet",
         "--set", "train.train_subset=64", "--set", "eval.train_subset=100",
         "--set", "eval.test_subset=50", "--out", tmp_path / "runs", cwd=tmp_path)
    assert len(list((tmp_path / "runs").glob("toy_contrast-synthetic-*/result.json"))) == 1

    (tmp_path / "mine.toml").write_text(SUITE)
    table = _run(python, "-c", CLI, "bench", tmp_path / "mine.toml", "--out",
                 tmp_path / "bench", "--quiet", cwd=tmp_path)
    row = next(line for line in table.splitlines() if line.startswith("| toy_contrast"))
    assert row.split("|")[-2].strip() == "ok", table

    # The shared environment never saw it.
    assert "toy_contrast" not in load_registry().methods
