"""The run index: records with provenance, rebuild, concurrent writers, ``sslreg runs``."""

import json
import sqlite3
import subprocess
import sys

from click.testing import CliRunner

from sslreg.cli import cli
from sslreg.runs import RunDir, RunIndex, add_suite, open_index, write_json
from sslreg.runs.index import FLOOR_FILE
from sslreg.suites.leaderboard import leaderboard_frame


def fake_run(out, name, method="simclr", seed=0, knn=0.5, status="trained"):
    """A run directory as the engine leaves it, without training anything."""
    run = RunDir(out / name)
    write_json(run.config, {"method": method, "dataset": "synthetic", "backbone": "tiny",
                            "train": {"seed": seed}})
    write_json(run.train_info, {"status": status, "device": "cpu (1 threads)",
                                "wall_time_s": 1.5, "images_per_s": 100.0,
                                "peak_memory_mb": None})
    if status == "trained":
        write_json(run.result, {"metrics": {"knn20_acc": knn, "linear_acc": knn + 0.1}})
    return run


def test_record_keeps_provenance_and_final_metrics(tmp_path):
    run = fake_run(tmp_path, "a", knn=0.7)
    add_suite(run, "quick")
    RunIndex(tmp_path).record(run)
    (row,) = RunIndex(tmp_path).rows()
    assert (row["run"], row["method"], row["seed"], row["status"]) == ("a", "simclr", 0,
                                                                         "evaluated")
    assert row["metrics"] == {"knn20_acc": 0.7, "linear_acc": 0.7 + 0.1}
    assert row["suites"] == {"quick": ""}
    assert len(row["config_sha256"]) == 64 and json.loads(row["config"])["method"] == "simclr"
    assert row["versions"]["sslreg"] and "sslreg-simclr" in row["versions"]
    assert row["device"] == "cpu (1 threads)" and row["images_per_s"] == 100.0
    # Recording again replaces the row instead of adding one.
    RunIndex(tmp_path).record(run, status="failed: boom")
    assert [r["status"] for r in RunIndex(tmp_path).rows()] == ["failed: boom"]


def test_lost_or_damaged_index_is_rebuilt_from_the_run_directories(tmp_path):
    for name in ("a", "b"):
        fake_run(tmp_path, name)
    index = open_index(tmp_path)  # none yet: built from the directories
    assert [r["run"] for r in index.rows()] == ["a", "b"]
    index.path.write_bytes(b"this is not a database" * 100)
    index = open_index(tmp_path)
    assert sorted(r["run"] for r in index.rows()) == ["a", "b"]
    assert list(tmp_path.glob("index.sqlite.damaged-*")), "the damaged file is kept aside"


WRITER = """
import sys
from pathlib import Path
from sslreg.runs import RunDir, RunIndex, write_json

out, worker = Path(sys.argv[1]), sys.argv[2]
for number in range(40):
    run = RunDir(out / f"w{worker}-{number}")
    write_json(run.config, {"method": "simclr", "train": {"seed": number}})
    RunIndex(out).record(run)
"""


def test_two_processes_writing_at_once_corrupt_nothing(tmp_path):
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(w)],
                                stderr=subprocess.PIPE, text=True) for w in range(2)]
    for writer in writers:
        _, errors = writer.communicate(timeout=120)
        assert writer.returncode == 0, errors
    with sqlite3.connect(tmp_path / "index.sqlite") as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert len(RunIndex(tmp_path).rows()) == 80


def test_runs_command_lists_and_filters(tmp_path):
    fake_run(tmp_path, "simclr-run", knn=0.61)
    fake_run(tmp_path, "byol-run", method="byol", knn=0.52)
    fake_run(tmp_path, "byol-broken", method="byol", status="diverged")
    runner = CliRunner()
    listed = runner.invoke(cli, ["runs", "--out", str(tmp_path)])
    assert listed.exit_code == 0, listed.output
    assert "simclr-run" in listed.output and "0.61" in listed.output
    only_byol = runner.invoke(cli, ["runs", "--out", str(tmp_path), "--method", "byol"])
    assert "simclr-run" not in only_byol.output and "byol-run" in only_byol.output
    diverged = runner.invoke(cli, ["runs", "--out", str(tmp_path), "--status", "diverged"])
    assert "byol-broken" in diverged.output and "byol-run" not in diverged.output
    missing = runner.invoke(cli, ["runs", "--out", str(tmp_path / "nope")])
    assert missing.exit_code != 0 and "does not exist" in missing.output


def _suite_fixture(out):
    """Two seeds of simclr and one of byol recorded for suite 'tiny', with floors."""
    for name, method, seed, knn in [("s0", "simclr", 0, 0.60), ("s1", "simclr", 1, 0.70),
                                    ("b0", "byol", 0, 0.50), ("other", "byol", 1, 0.99)]:
        run = fake_run(out, name, method=method, seed=seed, knn=knn)
        config = json.loads(run.config.read_text())
        write_json(run.config, {**config, "eval": {"train_subset": 100, "test_subset": 50,
                                                   "holdout_fraction": 0.1}})
        if name != "other":  # a run of another suite stays out of this leaderboard
            add_suite(run, "tiny")
    for name, backbone, knn in [("raw pixels", "-", 0.8), ("random init", "tiny", 0.3)]:
        floor = fake_run(out, f"floor-{name}", knn=knn - 0.05)
        write_json(floor.path / FLOOR_FILE, {"floor": name, "backbone": backbone, "seed": 0})
        add_suite(floor, "tiny")


def test_a_floor_is_an_index_row_named_after_the_floor(tmp_path):
    _suite_fixture(tmp_path)
    rows = {r["run"]: r for r in open_index(tmp_path).rows()}
    floor = rows["floor-random init"]
    assert (floor["method"], floor["backbone"], floor["status"]) == ("(random init)", "tiny",
                                                                    "floor")
    assert floor["git_commit"] == rows["s0"]["git_commit"] and floor["suites"] == {"tiny": ""}


def test_leaderboard_in_every_format_from_a_fixture_index(tmp_path):
    from sslreg.suites.leaderboard import FORMATS, render, summary

    _suite_fixture(tmp_path)
    frame = leaderboard_frame(tmp_path, "tiny")
    table = summary(frame).set_index("method")
    assert table.loc["simclr", "kNN k=20"] == "65.0 ± 7.1"  # mean and std of 60 and 70
    assert table.loc["simclr", "seeds"] == 2 and table.loc["byol", "kNN k=20"] == "50.0"
    assert table.loc["(raw pixels)", "linear"] == "85.0"
    assert table.loc["(random init)", "status"] == "ok"
    # Over the random-init floor of the same backbone and seed (kNN 25, linear 35): seed
    # 1 has no floor, so simclr's gap is seed 0's alone; floors have no gap.
    assert table.loc["simclr", "kNN20 − floor"] == "+35.0"
    assert table.loc["byol", "linear − floor"] == "+25.0"
    assert table.loc["(random init)", "kNN20 − floor"] == "-"
    assert "99" not in table.to_string()
    outputs = {fmt: render(frame, fmt) for fmt in FORMATS}
    assert "| simclr" in outputs["md"] and "65.0 ± 7.1" in outputs["md"]
    assert outputs["csv"].splitlines()[0].startswith("method,backbone,seeds,linear")
    assert "\\begin{tabular}" in outputs["latex"] and "(random init)" in outputs["latex"]
    assert outputs["html"].startswith("<table") and "<td>simclr</td>" in outputs["html"]


def test_leaderboard_orders_methods_then_ceiling_then_floors_with_variants_and_reference(
        tmp_path):
    from sslreg.suites.leaderboard import summary
    from sslreg.suites.suite import Reference

    _suite_fixture(tmp_path)
    for name, method, knn, variant in [("sup", "supervised", 0.9, ""),
                                       ("t1", "simclr", 0.75, "method.temperature=0.1")]:
        run = fake_run(tmp_path, name, method=method, knn=knn)
        add_suite(run, "tiny", variant)
    reference = Reference(source="a paper", results={"simclr": {"linear": 70.0},
                                                     "dino": {"knn20": 60.0}})
    table = summary(leaderboard_frame(tmp_path, "tiny"), reference)
    # Best linear first among methods; the labelled baseline after them; floors last.
    assert list(table["method"]) == ["simclr [method.temperature=0.1]", "simclr", "byol",
                                     "supervised (ceiling)", "(raw pixels)",
                                     "(random init)"]
    rows = table.set_index("method")
    assert rows.loc["simclr", "ref linear"] == "70.0"
    assert rows.loc["simclr", "Δ linear"] == "+5.0"  # linear 75.0 (65 + 10) against 70.0
    assert rows.loc["simclr [method.temperature=0.1]", "Δ linear"] == "+15.0"
    assert rows.loc["byol", "ref linear"] == "-" and rows.loc["byol", "Δ linear"] == "-"
    assert "ref knn20" not in table  # no method of this suite has a published kNN number


def test_leaderboard_command_and_its_errors(tmp_path):
    _suite_fixture(tmp_path)
    runner = CliRunner()
    shown = runner.invoke(cli, ["leaderboard", "tiny", "--out", str(tmp_path), "--format",
                                "csv"])
    assert shown.exit_code == 0 and "simclr" in shown.output, shown.output
    bad = runner.invoke(cli, ["leaderboard", "tiny", "--out", str(tmp_path), "--format", "pdf"])
    assert bad.exit_code != 0 and "md, csv, latex, html" in bad.output
    unknown = runner.invoke(cli, ["leaderboard", "nosuch", "--out", str(tmp_path)])
    assert unknown.exit_code != 0 and "no runs of suite 'nosuch'" in unknown.output


def test_leaderboard_of_the_validation_split_and_a_bad_split(tmp_path):
    _suite_fixture(tmp_path)
    run = RunDir(tmp_path / "s0")
    result = run.read_json(run.result)
    write_json(run.result, {**result, "val_metrics": {"knn20_acc": 0.31, "linear_acc": 0.32}})
    runner = CliRunner()
    val = runner.invoke(cli, ["leaderboard", "tiny", "--out", str(tmp_path), "--split", "val",
                              "--format", "csv"])
    assert val.exit_code == 0, val.output
    simclr = next(line for line in val.output.splitlines() if line.startswith("simclr,"))
    assert "32.0" in simclr and "65.0" not in simclr  # seed 0's validation linear only
    test = runner.invoke(cli, ["leaderboard", "tiny", "--out", str(tmp_path), "--format", "csv"])
    assert "65.0 ± 7.1" in test.output
    bad = runner.invoke(cli, ["leaderboard", "tiny", "--out", str(tmp_path), "--split", "dev"])
    assert bad.exit_code != 0 and "unknown split 'dev'; choose from: test, val" in bad.output


def test_gap_over_the_floor_pairs_each_seed_with_its_own_floor(tmp_path):
    from sslreg.suites.leaderboard import summary

    _suite_fixture(tmp_path)
    floor = fake_run(tmp_path, "floor-random init-1", seed=1, knn=0.45)
    write_json(floor.path / FLOOR_FILE, {"floor": "random init", "backbone": "tiny", "seed": 1})
    add_suite(floor, "tiny")
    rows = summary(leaderboard_frame(tmp_path, "tiny")).set_index("method")
    # simclr kNN 60 and 70 over floors 25 (seed 0) and 45 (seed 1): gaps 35 and 25.
    assert rows.loc["simclr", "kNN20 − floor"] == "+30.0 ± 7.1"
    assert rows.loc["byol", "kNN20 − floor"] == "+25.0"


def test_a_result_keeps_the_commit_it_was_made_with_through_re_records_and_rebuilds(tmp_path):
    from sslreg.runs.index import provenance

    run = fake_run(tmp_path, "old")
    result = run.read_json(run.result)
    made = {"git_commit": "0123456789ab", "versions": {"sslreg": "0.0.1"}, "recorded_at": 1.0}
    write_json(run.result, {**result, "provenance": made})
    RunIndex(tmp_path).record(run)
    RunIndex(tmp_path).record(run)  # e.g. a second suite reusing the finished run
    RunIndex(tmp_path).rebuild()
    (row,) = RunIndex(tmp_path).rows()
    assert (row["git_commit"], row["versions"], row["recorded_at"]) == (
        "0123456789ab", {"sslreg": "0.0.1"}, 1.0)
    # A run without a result is described as of its recording.
    fresh = fake_run(tmp_path, "training", status="running")
    RunIndex(tmp_path).record(fresh)
    row = next(r for r in RunIndex(tmp_path).rows() if r["run"] == "training")
    assert row["git_commit"] == provenance()["git_commit"] and row["recorded_at"] > 1.0


def test_gap_over_the_floor_pairs_a_run_with_the_floor_read_its_way(tmp_path):
    from sslreg.suites.leaderboard import summary

    _suite_fixture(tmp_path)  # byol (kNN 50) and the plain random-init floor (kNN 25)
    pooled = fake_run(tmp_path, "floor-random init-pooled", knn=0.40)
    write_json(pooled.path / FLOOR_FILE, {"floor": "random init", "backbone": "tiny", "seed": 0})
    add_suite(pooled, "tiny", "mean of patch tokens")
    # Two floors for one backbone and seed: without readouts no run can be paired.
    assert "kNN20 − floor" not in summary(leaderboard_frame(tmp_path, "tiny"))
    readouts = {"byol": "mean of patch tokens"}
    rows = summary(leaderboard_frame(tmp_path, "tiny", readouts=readouts)).set_index("method")
    assert rows.loc["byol", "kNN20 − floor"] == "+10.0"  # 50 against the pooled floor's 40
    assert rows.loc["simclr", "kNN20 − floor"] == "+35.0"  # 60 against the plain floor's 25
