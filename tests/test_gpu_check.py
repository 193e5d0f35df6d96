"""benchmarks/gpu_check.sh: its dry run passes on a CPU and reports every section; a real
run without CUDA, a missing data folder and a missing lightly each fail in one line; and
its GPU branch, run with stand-ins for the commands that need a GPU (throughput.py,
the environment, torchrun, sslreg pretrain/bench/leaderboard), reports what the
stand-ins wrote, goes on past a failed step, fails loudly at its end, and stops at the
time guard.

The stand-ins are this file run as a script (``python tests/test_gpu_check.py fake-...``):
they write the files the real commands write, with made-up numbers that only the tests
read.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
HELPER = ROOT / "benchmarks" / "gpu_check.py"
FAKE_GPU = "NVIDIA H100 80GB HBM3"
SECTIONS = ("## (0) Inputs", "## (a) Environment", "## (b) SimCLR throughput",
            "## (c) torchrun, 1 process", "## (d) Reduced fmnist suite")
TIMEOUT_S = 600


def fashion_mnist() -> Path | None:
    for folder in (os.environ.get("SSLREG_DATA"), "/usr/share/datasets/fashion-mnist"):
        if folder and any(Path(folder, f"train-images-idx3-ubyte{s}").is_file()
                          or Path(folder, "fashion-mnist", f"train-images-idx3-ubyte{s}").is_file()
                          for s in ("", ".gz")):
            return Path(folder)
    return None


DATA = fashion_mnist()
needs_data = pytest.mark.skipif(DATA is None, reason="the Fashion-MNIST files are not here")


def run_check(*args: str, env: dict[str, str] | None = None,
              drop: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    for name in drop:
        environment.pop(name, None)
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=TIMEOUT_S)


def last_line(text: str) -> str:
    return [line for line in text.splitlines() if line.strip()][-1]


# ------------------------------------------------------------------------ dry run


@needs_data
def test_dry_run_passes_and_reports_every_section(tmp_path) -> None:
    report = tmp_path / "report.md"
    lightly = [] if importlib.util.find_spec("lightly") else ["--no-lightly"]
    done = run_check("--dry-run", "--python", sys.executable, "--data-root", str(DATA),
                     "--out", str(report), "--work", str(tmp_path / "work"), *lightly)
    assert done.returncode == 0, done.stderr[-3000:]
    assert last_line(done.stderr).startswith("gpu_check: DRY RUN passed")
    text = report.read_text()
    assert "Status: **DRY RUN: no GPU numbers" in text
    for section in (*SECTIONS, "## Not measured by a dry run"):
        assert section in text, section
    # Every command of a GPU run is named, with what was checked of it.
    assert "--compile --no-views" in text and "train.compile=true" in text
    assert "--nproc_per_node 1 --no-python" in text and "backend gloo" in text
    assert f"its GPU budget builds {len(methods())} run configs" in text
    assert 'seeds = [0]' in text and "train.epochs=1" in text
    # No measurement: no table of speeds, no MFU, no memory.
    assert "img/s" not in text and "peak MB" not in text and "%" not in text
    assert "FAILED" not in text


# ------------------------------------------------------------------------ failures


@needs_data
def test_without_cuda_a_real_run_fails_in_one_line(tmp_path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    report = tmp_path / "report.md"
    done = run_check("--python", sys.executable, "--data-root", str(DATA), "--out",
                     str(report), "--work", str(tmp_path / "work"), "--no-lightly")
    assert done.returncode == 1
    line = last_line(done.stderr)
    assert line.startswith("gpu_check: FAILED at step (a) environment: no CUDA device"), line
    assert "--dry-run" in line
    text = report.read_text()
    assert "Status: **FAILED at step (a) environment: no CUDA device" in text
    assert "## (b)" not in text and "img/s" not in text  # nothing measured, nothing said


def test_missing_data_folder_fails_in_one_line(tmp_path) -> None:
    report = tmp_path / "report.md"
    common = ["--dry-run", "--python", sys.executable, "--out", str(report), "--work",
              str(tmp_path / "work")]
    done = run_check(*common, "--data-root", str(tmp_path / "nowhere"))
    assert done.returncode == 1
    assert last_line(done.stderr) == (f"gpu_check: FAILED at step (0) inputs: data folder "
                                      f"{tmp_path / 'nowhere'} does not exist")
    assert "Status: **FAILED at step (0) inputs" in report.read_text()
    (tmp_path / "empty").mkdir()
    done = run_check(*common, "--data-root", str(tmp_path / "empty"))
    assert done.returncode == 1
    assert "no Fashion-MNIST IDX files" in last_line(done.stderr)
    done = run_check(*common, drop=("SSLREG_DATA",))
    assert done.returncode == 1
    assert "no data folder: pass --data-root" in last_line(done.stderr)


@needs_data
def test_dry_run_refuses_a_missing_lightly(tmp_path) -> None:
    hidden = tmp_path / "hidden" / "lightly"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    path = os.pathsep.join([str(hidden.parent), os.environ.get("PYTHONPATH", "")])
    done = run_check("--dry-run", "--python", sys.executable, "--data-root", str(DATA),
                     "--out", str(tmp_path / "report.md"), "--work", str(tmp_path / "work"),
                     env={"PYTHONPATH": path})
    assert done.returncode == 1
    line = last_line(done.stderr)
    assert line.startswith("gpu_check: FAILED at step (a) environment: lightly is not installed")
    assert "--no-lightly" in line


# ------------------------------------------------- the GPU branch, with stand-ins


def methods() -> list[str]:
    from sslreg.plugins import load_registry

    return load_registry().methods.names()


def write_stand_ins(folder: Path) -> Path:
    """``python``, ``sslreg`` and ``torchrun`` stand-ins in ``folder``: the script takes
    sslreg and torchrun from beside the python it is given."""
    folder.mkdir()
    me = Path(__file__).resolve()
    python = folder / "python"
    python.write_text(f"""#!/usr/bin/env bash
if [[ $1 == -c && $2 == 'import sys; print(sys.executable)' ]]; then echo "$0"; exit 0; fi
case $1 in
    *throughput.py) shift; exec {sys.executable} {me} fake-throughput "$@" ;;
    *gpu_check.py) [[ $2 == env ]] && {{ shift 2; exec {sys.executable} {me} fake-env "$@"; }} ;;
esac
exec {sys.executable} "$@"
""")
    (folder / "sslreg").write_text(f"#!/usr/bin/env bash\nexec {sys.executable} {me} "
                                   "fake-sslreg \"$@\"\n")
    (folder / "torchrun").write_text(f"#!/usr/bin/env bash\nexec {sys.executable} {me} "
                                     "fake-torchrun \"$@\"\n")
    for script in folder.iterdir():
        script.chmod(0o755)
    return python


def gpu_run(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess, str]:
    python = write_stand_ins(tmp_path / "bin")
    data = tmp_path / "data"
    data.mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                 "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (data / name).write_bytes(b"")  # the stand-ins never read them
    report = tmp_path / "report.md"
    done = run_check("--python", str(python), "--data-root", str(data), "--out", str(report),
                     "--work", str(tmp_path / "work"), "--commit", "0123abc",
                     env={"FAKE_METHODS": ",".join(methods()), **env})
    return done, report.read_text() if report.exists() else ""


def test_gpu_branch_reports_what_its_steps_wrote(tmp_path) -> None:
    done, text = gpu_run(tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert last_line(done.stderr).startswith("gpu_check: PASSED in")
    assert "Status: **PASSED**" in text
    for section in SECTIONS:
        assert section in text, section
    for step in ("(b1) throughput, backbone eager", "(b2) throughput, backbone compiled",
                 "(c1) torchrun sslreg pretrain on CUDA", "(c2) NCCL probe under torchrun"):
        assert f"| {step} |" in text
    # (b): the stand-in's numbers, both compile states, ratios and MFU from its JSON.
    assert "| train step | resnet18 | 512 | no | 20,000 | 10,000 | 2.00x | 30.0% | 15.0% " \
           "| 3,000 | 2,500 |" in text
    assert "| train step | resnet18 | 512 | yes | 30,000 | 12,000 | 2.50x |" in text
    assert "| views | - | 512 | no | 900,000 | 20,000 | 45.00x | - | - | - | - |" in text
    assert "30,000 img/s compiled against 20,000 eager (1.50x)" in text
    assert "NOT met (30,000 img/s, 2.50x lightly at best)" in text
    # (c): train.json and result.json of the torchrun run, the probe's lines.
    assert f"10 steps on {FAKE_GPU}" in text and "12,345 img/s" in text
    assert "backend nccl (stand-in)" in text and "NCCL 2.99.9" in text
    # (d): the leaderboard, demoted into the section, and one cost row per method.
    assert "### fmnist-gpu-check: leaderboard" in text
    for method in methods():
        assert f"| {method} | resnet18 | 1.5 | 4,321 | 25.0% | 1,024 | evaluated |" in text


def test_gpu_branch_goes_on_past_a_failed_step_and_fails_at_its_end(tmp_path) -> None:
    done, text = gpu_run(tmp_path, FAKE_FAIL="compiled", FAKE_LIGHTLY="0")
    assert done.returncode == 1
    line = last_line(done.stderr)
    assert line == ("gpu_check: FAILED at step (b2) throughput compiled: error: stand-in "
                    "compile failure (exit 1) (and 1 more: see the report)"), line
    assert "Status: **FAILED at step (b2) throughput compiled" in text
    assert "## (b2) throughput compiled: FAILED" in text
    assert "**lightly is not installed: the comparison against lightly was NOT measured" in text
    assert "| train step | resnet18 | 512 | no | 20,000 | not run | - | 30.0% | not run " \
           "| 3,000 | not run |" in text
    assert "only the eager step was measured" in text
    # The steps after the failed one still ran and reported.
    assert "12,345 img/s" in text and "### fmnist-gpu-check: leaderboard" in text
    assert "## Not measured" in text


def test_gpu_branch_stops_at_the_time_guard(tmp_path) -> None:
    started = time.monotonic()
    done, text = gpu_run(tmp_path, FAKE_SLEEP="120", GPU_CHECK_BUDGET_S="20")
    assert done.returncode == 1
    assert time.monotonic() - started < 60
    line = last_line(done.stderr)
    assert line.startswith("gpu_check: FAILED at step (b1) throughput eager: stopped by the "
                           "time guard: the whole check must finish in 20 s"), line
    assert "(the guard allows 20 s)" in text and "## (c)" not in text


# ------------------------------------------------------------ the helper's checks


def helper(*args: str, capsys) -> tuple[int, str, str]:
    spec = importlib.util.spec_from_file_location("gpu_check_helper", HELPER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    status = module.main(list(args))
    out = capsys.readouterr()
    return status, out.out, out.err


def test_throughput_section_refuses_what_was_not_measured(tmp_path, capsys) -> None:
    eager = tmp_path / "eager.json"
    eager.write_text(json.dumps(throughput_json(compiled=False, lightly=True)))
    status, out, _ = helper("throughput-section", str(eager), capsys=capsys)
    assert status == 0 and "| train step | resnet18 | 512 | no | 20,000 |" in out
    # A dry run's JSON, a missing number and a GPU without a known peak.
    dry = {**throughput_json(False, True), "dry_run": True, "rows": None}
    eager.write_text(json.dumps(dry))
    status, _, err = helper("throughput-section", str(eager), capsys=capsys)
    assert status == 1 and "a dry run's JSON holds no measurement" in err
    broken = throughput_json(False, True)
    broken["rows"][2]["mfu"] = None
    eager.write_text(json.dumps(broken))
    status, _, err = helper("throughput-section", str(eager), capsys=capsys)
    assert status == 1 and "sslreg MFU (train step resnet18 batch 512) is missing" in err
    unknown = {**throughput_json(False, True), "peak_flops": None, "gpu": "Some New GPU"}
    eager.write_text(json.dumps(unknown))
    status, out, err = helper("throughput-section", str(eager), capsys=capsys)
    assert status == 3 and "no peak known" in out
    assert "DEFERRED: MFU not measured: Some New GPU is not in" in err


def test_write_suite_is_fmnist_at_one_epoch_and_one_seed(tmp_path, capsys) -> None:
    from sslreg.suites import load_suite

    out = tmp_path / "suite.toml"
    status, text, _ = helper("write-suite", "--epochs", "1", "--data-root", str(tmp_path),
                             "--out", str(out), capsys=capsys)
    assert status == 0 and "fmnist-gpu-check" in text
    suite, full = load_suite(str(out)), load_suite("fmnist")
    assert suite.seeds == (0,) and suite.methods == full.methods
    assert (suite.gpu.backbone, suite.gpu.vit_backbone) == \
        (full.gpu.backbone, full.gpu.vit_backbone)
    sets = dict(item.split("=", 1) for item in suite.gpu.set)
    full_sets = dict(item.split("=", 1) for item in full.gpu.set)
    assert sets["train.epochs"] == "1" and sets["data_root"] == str(tmp_path.resolve())
    assert float(sets["optim.warmup_epochs"]) == float(full_sets["optim.warmup_epochs"]) / 200
    assert {k: v for k, v in sets.items() if k not in ("train.epochs", "optim.warmup_epochs",
                                                        "data_root")} == \
        {k: v for k, v in full_sets.items() if k not in ("train.epochs", "optim.warmup_epochs")}


def test_throughput_json_and_sslreg_rows_alone(tmp_path, capsys) -> None:
    """throughput.py's flags for the check: --json holds the rows, --no-lightly leaves
    lightly's cells 'not run' and makes nothing up."""
    spec = importlib.util.spec_from_file_location("throughput_for_check",
                                                  ROOT / "benchmarks" / "throughput.py")
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # dataclasses look their module up by name
    try:
        spec.loader.exec_module(bench)
        bench.main(["--device", "cpu", "--batch-sizes", "8", "--backbones",
                    "resnet18-narrow", "--steps", "1", "--warmup", "0", "--no-lightly",
                    "--no-views", "--json", str(tmp_path / "t.json"), "--out",
                    str(tmp_path / "t.md")])
    finally:
        sys.modules.pop(spec.name, None)
    data = json.loads((tmp_path / "t.json").read_text())
    assert not data["dry_run"] and not data["lightly_run"] and not data["compile"]
    (row,) = data["rows"]
    assert (row["stage"], row["side"], row["batch"], row["compiled"]) == \
        ("train step", "sslreg", 8, False)
    assert row["images_per_s"] > 0 and row["mfu"] is None and row["peak_memory_mb"] is None
    table = (tmp_path / "t.md").read_text()
    assert "| train step | resnet18-narrow | 8 |" in table
    assert "| - | - | not run | - | not run |" in table
    assert "lightly: not run (--no-lightly)" in table


# ----------------------------------------------------------------- the stand-ins


def throughput_json(compiled: bool, lightly: bool) -> dict:
    rate, peer = (30_000.0, 12_000.0) if compiled else (20_000.0, 10_000.0)
    rows = [] if compiled else [
        {"stage": "views", "side": "sslreg", "backbone": "-", "batch": 512,
         "images_per_s": 900_000.0, "mfu": None, "peak_memory_mb": None, "compiled": False},
        {"stage": "views", "side": "lightly", "backbone": "-", "batch": 512,
         "images_per_s": 20_000.0, "mfu": None, "peak_memory_mb": None, "compiled": False}]
    rows += [{"stage": "train step", "side": "sslreg", "backbone": "resnet18", "batch": 512,
              "images_per_s": rate, "mfu": rate / 20_000 * 0.3, "peak_memory_mb": 3000.0,
              "compiled": compiled},
             {"stage": "train step", "side": "lightly", "backbone": "resnet18", "batch": 512,
              "images_per_s": peer, "mfu": peer / 20_000 * 0.3, "peak_memory_mb": 2500.0,
              "compiled": compiled}]
    if not lightly:
        rows = [row for row in rows if row["side"] == "sslreg"]
    return {"dry_run": False, "command": "python benchmarks/throughput.py (stand-in)",
            "device": "cuda", "gpu": FAKE_GPU, "peak_flops": 989e12, "torch": "stand-in",
            "lightly": "1.6.0" if lightly else None, "lightly_run": lightly,
            "compile": compiled, "views": not compiled, "steps": 50, "warmup": 10,
            "workers": 16, "rows": rows}


def fake_throughput(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--no-lightly", dest="lightly", action="store_false")
    parser.add_argument("--json", type=Path)
    args, _ = parser.parse_known_args(argv)
    time.sleep(float(os.environ.get("FAKE_SLEEP", "0")))
    if args.compile and os.environ.get("FAKE_FAIL") == "compiled":
        print("error: stand-in compile failure", file=sys.stderr)
        return 1
    args.json.write_text(json.dumps(throughput_json(args.compile, args.lightly)))
    return 0


def fake_env(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", type=Path)
    args, _ = parser.parse_known_args(argv)
    lightly = os.environ.get("FAKE_LIGHTLY", "1") != "0"
    args.json.write_text(json.dumps({"gpu": FAKE_GPU, "lightly_installed": lightly}))
    print(f"- GPU: {FAKE_GPU} (stand-in)")
    return 0


def write_run(folder: Path, method: str, files: dict[str, dict]) -> None:
    folder.mkdir(parents=True)
    config = {"method": method, "backbone": "resnet18", "dataset": "fashion-mnist",
              "train": {"seed": 0}}
    for name, content in {"config.json": config, **files}.items():
        (folder / name).write_text(json.dumps(content))


def fake_sslreg(argv: list[str]) -> int:
    command, args = argv[0], argv[1:]
    out = Path(args[args.index("--out") + 1])
    metrics = {"metrics": {"linear_acc": 0.7, "knn20_acc": 0.65}}
    if command == "pretrain":
        write_run(out / "simclr-standin", "simclr", {
            "train.json": {"status": "trained", "steps": 10, "device": FAKE_GPU,
                           "images_per_s": 12345.0, "wall_time_s": 0.4, "mfu": 0.3,
                           "peak_memory_mb": 2048.0},
            "result.json": metrics})
    elif command == "bench":
        name = tomllib.loads(Path(args[0]).read_text())["name"]
        suites = {"suites": {name: ""}}
        for method in os.environ["FAKE_METHODS"].split(","):
            write_run(out / f"{method}-standin", method, {
                "train.json": {"status": "trained", "steps": 105, "device": FAKE_GPU,
                               "images_per_s": 4321.0, "wall_time_s": 1.5, "mfu": 0.25,
                               "peak_memory_mb": 1024.0},
                "result.json": metrics, "suites.json": suites})
        for floor in ("raw pixels", "random init"):
            write_run(out / f"floor-{floor.replace(' ', '-')}", "simclr", {
                "floor.json": {"floor": floor, "backbone": "resnet18", "seed": 0},
                "result.json": metrics, "suites.json": suites})
        print("| method | linear |")
    elif command == "leaderboard":
        name = tomllib.loads(Path(args[0]).read_text())["name"]
        output = Path(args[args.index("--output") + 1])
        output.write_text(f"## {name}: leaderboard\n\n| method | linear |\n|:--|--:|\n")
    return 0


def fake_torchrun(argv: list[str]) -> int:
    program = argv[argv.index("--no-python") + 1:]
    if Path(program[0]).name == "sslreg":
        return fake_sslreg(program[1:])
    assert program[2] == "nccl-probe", program
    result = Path(program[program.index("--json") + 1])
    result.write_text(json.dumps({"backend": "nccl", "nccl": "2.99.9"}))
    print("- process group: backend nccl (stand-in)")
    return 0


if __name__ == "__main__":  # a stand-in, started by the scripts write_stand_ins writes
    STAND_INS = {"fake-throughput": fake_throughput, "fake-env": fake_env,
                 "fake-sslreg": fake_sslreg, "fake-torchrun": fake_torchrun}
    sys.exit(STAND_INS[sys.argv[1]](sys.argv[2:]))
