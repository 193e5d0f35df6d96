"""The Python API: the README's example runs, every function is typed, and bad input
raises the command line's one-line error."""

import inspect
import re
from pathlib import Path

import pytest

import sslreg
from sslreg import api

README = Path(__file__).resolve().parents[1] / "README.md"
PUBLIC = ["configure", "pretrain", "load_run", "evaluate", "load_backbone", "export",
          "read_index", "run_suite", "leaderboard", "render_leaderboard"]


def readme_example() -> str:
    section = README.read_text().split("### Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_readme_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_example(), "README.md (Python API)", "exec"), {})
    printed = capsys.readouterr().out
    assert "validation linear:" in printed and "| vicreg" in printed
    assert (tmp_path / "notebook-runs" / "index.sqlite").exists()
    exports = list((tmp_path / "notebook-runs").glob("simclr-*/export/MODEL_CARD.md"))
    assert len(exports) == 1


def test_every_public_function_is_typed_and_exported():
    for name in PUBLIC:
        function = getattr(api, name)
        assert getattr(sslreg, name) is function
        signature = inspect.signature(function)
        assert signature.return_annotation is not inspect.Signature.empty, name
        untyped = [p for p in signature.parameters.values()
                   if p.annotation is inspect.Parameter.empty]
        assert not untyped, (name, untyped)


def test_bad_input_raises_the_cli_message(registry, tmp_path):
    with pytest.raises(sslreg.UnknownNameError, match="unknown method 'simclrr'.*simclr"):
        sslreg.configure("simclrr", registry=registry)
    with pytest.raises(sslreg.ConfigError, match="unknown key 'method.temprature'"):
        sslreg.configure("simclr", overrides={"method.temprature": 0.2}, registry=registry)
    with pytest.raises(sslreg.ConfigError, match="train.epochs"):
        sslreg.configure("simclr", epochs=0, registry=registry)
    with pytest.raises(sslreg.SslregError, match="a mapping or a list"):
        sslreg.configure("simclr", overrides="method.temperature=0.2", registry=registry)
    with pytest.raises(sslreg.SslregError, match="does not exist"):
        sslreg.read_index(tmp_path / "nowhere")
    with pytest.raises(sslreg.SslregError, match="is not a directory"):
        sslreg.load_run(tmp_path / "nowhere", registry=registry)
    tmp_path.joinpath("runs").mkdir()
    with pytest.raises(sslreg.SslregError, match="unknown format 'pdf'"):
        sslreg.render_leaderboard("smoke", tmp_path / "runs", format="pdf")


def test_overrides_as_mapping_equal_set_strings(registry):
    mapped = sslreg.configure("simclr", overrides={"method.temperature": 0.3,
                                                   "eval.knn_k": (5, 10),
                                                   "eval.knn_temperature": [0.1, 0.2],
                                                   "train.compile": True},
                              registry=registry)
    strings = sslreg.configure("simclr", overrides=["method.temperature=0.3",
                                                    "eval.knn_k=5,10",
                                                    "eval.knn_temperature=0.1,0.2",
                                                    "train.compile=true"],
                               registry=registry)
    assert mapped == strings and mapped.eval.knn_k == (5, 10)


def test_pretrain_returns_a_run_and_the_index_reads_it(registry, tmp_path):
    run = sslreg.pretrain("simclr", dataset="synthetic", backbone="resnet18-narrow",
                          epochs=1, batch_size=32, out=tmp_path, registry=registry,
                          overrides={"train.train_subset": 64, "eval.train_subset": 100,
                                     "eval.val_subset": 50, "eval.test_subset": 50})
    assert run.path.parent == tmp_path and run.train_info["status"] == "trained"
    assert set(run.metrics) >= {"linear_acc", "knn20_acc"}
    assert sslreg.load_run(run.path, registry=registry) == run
    index = sslreg.read_index(tmp_path)
    row = index[index["run"] == run.path.name].iloc[0]
    assert row["linear_acc"] == run.metrics["linear_acc"]
    assert row["val_linear_acc"] == run.val_metrics["linear_acc"]
    again = sslreg.evaluate(run, registry=registry)
    assert again["metrics"]["linear_acc"] == pytest.approx(run.metrics["linear_acc"])


def test_evaluating_later_updates_the_index(registry, tmp_path):
    run = sslreg.pretrain("simclr", dataset="synthetic", backbone="resnet18-narrow",
                          epochs=1, batch_size=32, out=tmp_path, registry=registry,
                          evaluate=False,
                          overrides={"train.train_subset": 64, "eval.train_subset": 100,
                                     "eval.val_subset": 50, "eval.test_subset": 50})
    assert sslreg.read_index(tmp_path).iloc[0]["status"] == "trained"
    result = sslreg.evaluate(run, registry=registry)
    row = sslreg.read_index(tmp_path).iloc[0]
    assert row["status"] == "evaluated"
    assert row["linear_acc"] == result["metrics"]["linear_acc"]
