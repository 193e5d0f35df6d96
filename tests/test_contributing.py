"""Every fenced example in CONTRIBUTING.md runs, so the guide cannot go stale.

Python blocks are executed as modules: blocks with hook implementations are plugins
(registered with ``sslreg.testing.registered``, nothing installed), blocks with
``test_*`` functions are called like pytest would, with the plugins registered (a block
that imports a plugin module registers it itself). TOML blocks are suites (loaded by
``sslreg.suites.suite``) or ``pyproject.toml`` fragments (compared with sslreg's own and
the scaffold's). ``sh`` blocks run in bash inside a throwaway venv that sees this
environment's packages plus the guide's plugins, as installed ones. A block preceded by
``<!-- not run: reason -->`` is only parsed, and must say why. Together this is a new
user writing a method plugin from the guide alone: the method, its queue variant, its
tests, a run on synthetic data.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import re
import subprocess
import sys
import sysconfig
import textwrap
import types
from pathlib import Path
from typing import NamedTuple

import attrs
import pytest

from sslreg import OptimConfig, load_registry, testing
from sslreg.config import OPTIMIZERS
from sslreg.suites.suite import Budget, Reference, Suite, Sweep, load_suite, suite_sets

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).parents[1]
GUIDE = ROOT / "CONTRIBUTING.md"
# A fence may be indented (inside a list item); the comment line above it is its marker.
FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>\w*)\n(?P<code>.*?)^(?P=indent)```$",
                   re.M | re.S)
MARKER = re.compile(r"<!-- (?P<kind>not run|module): (?P<value>.+?) -->\s*$")
LANGUAGES = ("python", "toml", "sh")
# The tmp venv has no `sslreg` console script; this is what that script runs.
CLI = "import sys; from sslreg.cli import main; sys.argv[0] = 'sslreg'; main()"


class Block(NamedTuple):
    lang: str
    code: str
    line: int  # of the opening fence, 1-based
    not_run: str | None  # the reason, for a block marked not run
    module: str | None  # the name other blocks import it by

    @property
    def where(self) -> str:
        return f"CONTRIBUTING.md:{self.line}"


def blocks(text: str) -> list[Block]:
    found = []
    for match in FENCE.finditer(text):
        before = text[:match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = MARKER.search(before)
        kind, value = (marker["kind"], marker["value"]) if marker else (None, None)
        found.append(Block(match["lang"], textwrap.dedent(match["code"]),
                           text.count("\n", 0, match.start()) + 1,
                           value if kind == "not run" else None,
                           value if kind == "module" else None))
    return found


BLOCKS = blocks(GUIDE.read_text())


def runnable(lang: str, blocks_: list[Block] = BLOCKS) -> list[Block]:
    return [b for b in blocks_ if b.lang == lang and b.not_run is None]


def ids(blocks_: list[Block]) -> list[str]:
    return [b.where for b in blocks_]


# ---------------------------------------------------------------------------- markers


def test_every_block_is_run_or_says_why():
    assert len(BLOCKS) >= 15
    for block in BLOCKS:
        assert block.lang in LANGUAGES, f"{block.where}: fence language {block.lang!r}"
        if block.not_run is not None:
            assert len(block.not_run.split()) >= 4, f"{block.where}: say why it is not run"
    for lang in LANGUAGES:
        assert runnable(lang), f"no {lang} example runs"


def test_the_marker_is_understood():
    text = "a\n<!-- not run: needs a GPU to train -->\n```sh\nx\n```\n" \
           "<!-- module: plug -->\n```python\ny = 1\n```\n  ```toml\n  a = 1\n  ```\n"
    assert [(b.lang, b.code, b.not_run, b.module) for b in blocks(text)] == [
        ("sh", "x\n", "needs a GPU to train", None), ("python", "y = 1\n", None, "plug"),
        ("toml", "a = 1\n", None, None)]


def test_every_not_run_python_block_compiles():
    for block in BLOCKS:
        if block.lang == "python":
            compile(block.code, block.where, "exec")


def test_every_testing_name_the_guide_uses_exists():
    used = set(re.findall(r"(?<![/\w])testing\.([A-Za-z_]\w*)", GUIDE.read_text()))
    missing = sorted(name for name in used if not hasattr(testing, name))
    assert not missing, f"CONTRIBUTING.md names sslreg.testing.{missing}, which do not exist"


# ------------------------------------------------------------------------ the facts


def test_optim_fields_and_names_are_the_documented_ones():
    text = " ".join(GUIDE.read_text().split())
    paragraph = text[text.index("**Optimiser settings.**"):text.index("**State between")]
    for field in attrs.fields(OptimConfig):
        assert f"`{field.name}`" in paragraph, field.name
    assert all(f'`"{name}"`' in paragraph for name in OPTIMIZERS)
    # The defaults it quotes.
    defaults = OptimConfig()
    assert (defaults.name, defaults.lr, defaults.momentum, defaults.weight_decay,
            defaults.warmup_epochs) == ("sgd", 0.3, 0.9, 1e-4, 1.0)


def test_learning_result_keys_are_the_documented_ones():
    text = " ".join(GUIDE.read_text().split())
    assert testing.LearningResult._fields == ("trained", "random_init", "monitor_warnings")
    assert all(f"`{field}`" in text for field in testing.LearningResult._fields)
    for key in ("linear_acc", "knn20_acc", "knn200_acc", "linear_weight_decay"):
        assert f"`{key}`" in text, key


def test_check_step_is_the_one_check_with_other_arguments():
    standard = {"name", "backbone", "shape"}
    odd = [name for name, check in testing.CHECKS.items()
           if set(inspect.signature(check).parameters) - {"steps"} != standard]
    assert odd == ["step"]
    assert "`check_step(name, **options)`" in " ".join(GUIDE.read_text().split())


def test_the_margin_tool_is_installed_with_sslreg(capsys):
    with pytest.raises(SystemExit) as stop:
        testing.margin_main(["--help"])
    assert stop.value.code == 0 and "--seeds" in capsys.readouterr().out
    assert "margin_main" in (ROOT / "benchmarks" / "learning_margin.py").read_text()


# ------------------------------------------------------------------------------ TOML


def _suite_blocks() -> list[Block]:
    return [b for b in runnable("toml") if "[budget." in b.code]


def _pyproject_blocks() -> list[Block]:
    return [b for b in runnable("toml") if "[budget." not in b.code]


def test_toml_blocks_are_suites_or_pyproject_fragments():
    assert _suite_blocks() and len(_pyproject_blocks()) >= 2


@pytest.mark.parametrize("block", _suite_blocks(), ids=ids(_suite_blocks()))
def test_suite_example_loads_with_every_key(block, tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text(block.code)
    suite = load_suite(str(path))
    assert suite.select(["mymethod", "simclr", "byol"]) == ["mymethod", "simclr"]
    # Every key the format has is shown, so a new key makes this fail until documented.
    shown = set(re.findall(r"^\s*(?:\[+)?([a-z_][a-z_0-9.]*)\s*(?:=|\]+)", block.code, re.M))
    shown = {part for key in shown for part in key.split(".")}
    keys = {f.name for kind in (Suite, Budget, Sweep, Reference) for f in attrs.fields(kind)}
    hidden = keys - shown - {"cpu", "gpu", "method_set", "tuned_settings"}
    assert not hidden, f"{block.where}: the suite example lacks the keys {sorted(hidden)}"
    # The documented order: budget, [method.NAME], tuned, [budget.*.method.NAME], sweep, seed.
    tuned = suite.cpu.tuned_settings.sets.get("simclr", ())
    assert suite_sets(suite, suite.cpu, "mymethod", 1, ("method.temperature=0.1",)) == [
        *suite.cpu.set, "method.temperature=0.2", "optim.lr=0.6", "method.temperature=0.1",
        "train.seed=1"]
    assert suite_sets(suite, suite.cpu, "simclr", 0) == [*suite.cpu.set, *tuned,
                                                         "train.seed=0"]
    assert suite.gpu.set != suite.cpu.set and suite.budget(cuda=True) is suite.gpu
    # Where the name comes from: the key, else the file's name.
    assert suite.name == "mine"
    path.write_text(re.sub(r"^name = .*\n", "", block.code, flags=re.M))
    renamed = path.rename(tmp_path / "other.toml")
    assert load_suite(str(renamed)).name == "other"


def test_a_stale_suite_example_fails(tmp_path):
    """The runner catches the guesses the guide answers: `cuda`, a bare string `set`."""
    from sslreg import ConfigError

    block = _suite_blocks()[0]
    for stale in (block.code.replace("[budget.gpu]", "[budget.cuda]"),
                  block.code.replace('set = ["method.temperature=0.2"]',
                                     'set = "method.temperature=0.2"')):
        assert stale != block.code
        path = tmp_path / "stale.toml"
        path.write_text(stale)
        with pytest.raises(ConfigError):
            load_suite(str(path))


def test_pyproject_fragments_match_sslreg_and_the_scaffold(tmp_path):
    from sslreg.scaffold import new_plugin

    ours = tomllib.loads((ROOT / "pyproject.toml").read_text())
    new_plugin("mymethod", tmp_path)
    scaffold = tomllib.loads((tmp_path / "sslreg-mymethod" / "pyproject.toml").read_text())
    for block in _pyproject_blocks():
        data = tomllib.loads(block.code)
        if "tool" in data and "ruff" in data["tool"]:
            assert data["tool"]["ruff"] == ours["tool"]["ruff"], block.where
            assert data["tool"]["ruff"]["lint"] == scaffold["tool"]["ruff"]["lint"]
        if "project" in data:
            assert data["project"]["entry-points"] == scaffold["project"]["entry-points"]
        if "pytest" in data.get("tool", {}):
            markers = data["tool"]["pytest"]["ini_options"]["markers"]
            assert any(m.startswith("slow:") for m in markers), block.where
            assert scaffold["tool"]["pytest"]["ini_options"]["markers"] == markers


# ---------------------------------------------------------------------------- Python


def _module(block: Block, index: int) -> types.ModuleType:
    module = types.ModuleType(block.module or f"contributing_block_{index}")
    module.__file__ = str(GUIDE)
    exec(compile(block.code, block.where, "exec"), module.__dict__)  # noqa: S102
    return module


def _is_plugin(module: types.ModuleType) -> bool:
    return any(hasattr(value, "sslreg_impl") for value in vars(module).values())


def _plugin_blocks() -> list[tuple[int, Block]]:
    return [(i, b) for i, b in enumerate(BLOCKS) if b.lang == "python" and b.not_run is None
            and "@hookimpl" in b.code]


@contextlib.contextmanager
def guide_plugins(skip: tuple[str, ...] = ()):
    """Every plugin of the guide registered, its named modules importable; ``skip``
    names modules left unregistered (a block that imports one registers it itself)."""
    modules = [_module(block, i) for i, block in _plugin_blocks()]
    named = {m.__name__: m for m in modules}
    saved = {name: sys.modules.get(name) for name in named}
    sys.modules.update(named)
    try:
        with contextlib.ExitStack() as stack:
            for module in modules:
                if module.__name__ not in skip:
                    stack.enter_context(testing.registered(module, module.__name__))
            yield modules
    finally:
        for name, old in saved.items():
            if old is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old


def test_the_plugin_examples_register_without_failures():
    assert len(_plugin_blocks()) >= 7  # method, queue method, and the five other kinds
    with guide_plugins():
        registry = load_registry()
        assert not registry.failures, registry.failures
        for kind, name in [("methods", "mymethod"), ("methods", "myqueue"),
                           ("views", "crops"), ("backbones", "tiny-convnet"),
                           ("objectives", "align_uniform"), ("monitors", "spread"),
                           ("datasets", "stripes")]:
            assert name in registry.catalog(kind), (kind, name)
        assert registry.methods.get("mymethod").optim.name == "lars"


def test_the_queue_example_passes_every_check():
    with guide_plugins():
        testing.check_method("myqueue")


def test_a_queue_kept_outside_the_buffers_is_caught():
    """What the guide warns of: the queue example with its pending keys never cleared."""
    index, block = next((i, b) for i, b in _plugin_blocks() if "myqueue" in b.code)
    stale = block.code.replace("        self.pending = None  # nothing left", "        # ")
    assert stale != block.code
    module = _module(block._replace(code=stale, module="stale_queue"), index)
    with testing.registered(module, "stale_queue"):
        with pytest.raises(AssertionError, match="register_buffer"):
            testing.check_state_in_buffers("myqueue")


def test_a_stale_method_example_fails():
    """An optimiser the registry does not know (a guess like "adam") is recorded as the
    plugin's failure, and the method is not registered."""
    index, block = _plugin_blocks()[0]
    stale = block.code.replace('name="lars"', 'name="adam"')
    assert stale != block.code
    with testing.registered(_module(block._replace(code=stale), index), "stale"):
        registry = load_registry()
    assert "mymethod" not in registry.methods
    assert any("'adam'" in failure.error and "adamw" in failure.error
               for failure in registry.failures)


def _test_blocks() -> list[tuple[int, Block]]:
    return [(i, b) for i, b in enumerate(BLOCKS) if b.lang == "python" and b.not_run is None
            and re.search(r"^def test_", b.code, re.M)]


def _call(test: types.FunctionType, tmp_path: Path) -> int:
    """Call a pytest-style test function, once per parametrize case; returns the calls."""
    marks = [m for m in getattr(test, "pytestmark", []) if m.name == "parametrize"]
    cases = [{}]
    for mark in marks:
        names = [n.strip() for n in mark.args[0].split(",")]
        cases = [{**case, **dict(zip(names, value.values if hasattr(value, "values")
                                     else (value if len(names) > 1 else (value,)),
                                     strict=True))}
                 for case in cases for value in mark.args[1]]
    for number, case in enumerate(cases):
        if "tmp_path" in inspect.signature(test).parameters:
            case = {**case, "tmp_path": tmp_path / f"{test.__name__}-{number}"}
            case["tmp_path"].mkdir()
        test(**case)
    return len(cases)


@pytest.mark.parametrize("index, block", _test_blocks(), ids=ids([b for _, b in _test_blocks()]))
def test_python_test_examples_pass(index, block, tmp_path):
    imported = tuple(re.findall(r"^import (\w+)$", block.code, re.M))
    with guide_plugins(skip=imported):
        module = _module(block, index)
        tests = [v for k, v in vars(module).items() if k.startswith("test_")]
        assert sum(_call(test, tmp_path) for test in tests) >= len(tests) >= 1


# -------------------------------------------------------------------------------- sh


def _sandbox(tmp_path: Path, with_guide_plugins: bool) -> dict[str, str]:
    """A throwaway venv seeing this environment's packages (and this checkout, through
    PYTHONPATH), with `sslreg` and `pip` commands; the guide's plugins are installed in
    it as modules with an entry point, as a distribution's would be."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()"
                                "['purelib'])"], check=True, capture_output=True,
                               text=True).stdout.strip())
    parent = sysconfig.get_paths()["purelib"]
    (site / "parent-env.pth").write_text(f"import site; site.addsitedir({parent!r})\n")
    for command, body in (("sslreg", f'exec "{python}" -c "{CLI}" "$@"'),
                          ("pip", f'exec "{python}" -m pip "$@"')):
        script = venv / "bin" / command
        script.write_text(f"#!/bin/sh\n{body}\n")
        script.chmod(0o755)
    if with_guide_plugins:
        names = []
        for index, block in _plugin_blocks():
            name = block.module or f"contributing_block_{index}"
            (site / f"{name}.py").write_text(block.code)
            names.append(name)
        info = site / "sslreg_contributing_examples-0.0.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text("Metadata-Version: 2.1\n"
                                       "Name: sslreg-contributing-examples\nVersion: 0.0.0\n")
        (info / "entry_points.txt").write_text(
            "[sslreg]\n" + "".join(f"{n} = {n}\n" for n in names))
    home = tmp_path / "home"
    (home / "work").mkdir(parents=True)
    env = {**os.environ, "HOME": str(home), "PATH": f"{venv / 'bin'}:{os.environ['PATH']}",
           "OMP_NUM_THREADS": "1", "SSLREG_OFFLINE": "1", "PIP_NO_INDEX": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), *os.environ.get("PYTHONPATH", "")
                                          .split(os.pathsep)]).rstrip(os.pathsep)}
    for name in ("SSLREG_DISABLE_PLUGINS", "SSLREG_LOAD_PLUGINS", "VIRTUAL_ENV"):
        env.pop(name, None)
    return env


@pytest.mark.parametrize("block", runnable("sh"), ids=ids(runnable("sh")))
def test_shell_examples_run(block, tmp_path):
    """`new-plugin` writes the same `mymethod` the guide's hand-written example registers
    (a user does one or the other), so that block's sandbox holds no guide plugins."""
    env = _sandbox(tmp_path, with_guide_plugins="new-plugin" not in block.code)
    work = Path(env["HOME"]) / "work"
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", block.code], cwd=work, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{block.where}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    if "sslreg methods" in block.code:
        assert any(line.startswith("mymethod ") for line in done.stdout.splitlines()), \
            done.stdout
    for result in work.glob("runs/*/result.json"):
        metrics = json.loads(result.read_text())["metrics"]
        assert 0 <= metrics["linear_acc"] <= 1
        if "stripes" in result.parent.name:  # "kNN and linear 1.00 on this easy dataset"
            assert metrics["linear_acc"] >= 0.99 and metrics["knn20_acc"] >= 0.99, metrics
    if "pretrain" in block.code:
        assert list(work.glob("runs/*/result.json")), done.stdout
