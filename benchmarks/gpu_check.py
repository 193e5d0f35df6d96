"""The checks and report sections of ``benchmarks/gpu_check.sh``, one subcommand each.

Each subcommand prints its section of the report (Markdown) on stdout. A failed check
exits 1 with one line on stderr saying what failed; exit 3 means the section is complete
but one of the check's deliverables could not be measured here (an MFU without a known
peak): the script records it, goes on, and fails at its end. Every number printed is
read from a measurement file written by the step (``train.json``, ``result.json``, the
run index, throughput.py's ``--json``, the NCCL probe's JSON): nothing is estimated.

Subcommands: ``env``, ``check-commands`` (the dry run's check of every sslreg command
line: parsed by sslreg's own CLI, its configs built and its data read, nothing run),
``write-suite``, ``nccl-probe`` (run under torchrun), ``throughput-section``,
``pretrain-section``, ``bench-section``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# Exit status of a section whose check could not measure everything it must report.
DEFERRED = 3
FASHION_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                       "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


class CheckFailed(Exception):
    """A check that failed: its message is the one line the script prints."""


def fail(message: str) -> None:
    raise CheckFailed(message)


# ---------------------------------------------------------------------------- helpers


def read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        fail(f"{what}: {path} was not written")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        fail(f"{what}: {path} is not JSON ({error})")
    raise AssertionError  # unreachable


def measured(value: Any, what: str, positive: bool = True) -> float:
    """A number the step wrote, checked: present, finite and (by default) > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        fail(f"{what} is missing (got {value!r})")
    if not math.isfinite(value) or (positive and value <= 0):
        fail(f"{what} is not a positive finite number (got {value!r})")
    return float(value)


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def data_folder(root: Path) -> Path:
    """``root`` or ``root/fashion-mnist``, whichever holds the four IDX files."""
    for folder in (root, root / "fashion-mnist"):
        if all((folder / n).is_file() or (folder / f"{n}.gz").is_file()
               for n in FASHION_MNIST_FILES):
            return folder
    fail(f"no Fashion-MNIST IDX files ({', '.join(FASHION_MNIST_FILES)}, .gz or not) in "
         f"{root} or {root / 'fashion-mnist'}")
    raise AssertionError  # unreachable


def demote(markdown: str) -> str:
    """Headings one level down, so a rendered leaderboard sits inside a section."""
    return "\n".join("#" + line if line.startswith("#") else line
                     for line in markdown.splitlines())


def code(command: str) -> str:
    return f"`{command}`"


# -------------------------------------------------------------------------------- env


def env(args: argparse.Namespace) -> str:
    import torch

    from sslreg.plugins import load_registry
    from sslreg.runs.index import git_commit

    cuda = torch.cuda.is_available()
    if args.require_cuda and not cuda:
        fail(f"no CUDA device: torch.cuda.is_available() is False (torch {torch.__version__}, "
             f"CUDA build {torch.version.cuda or 'none'}); this check needs one GPU; "
             "run it with --dry-run to check its commands on a CPU")
    registry = load_registry()
    if registry.failures:
        fail("plugins failed to load: " + "; ".join(f"{f.name}: {f.error}"
                                                     for f in registry.failures))
    if "simclr" not in registry.methods.names():
        fail("the simclr plugin is not registered (pip install --no-deps -e plugins/simclr)")
    commit = args.commit or git_commit()
    commit_note = ("given by --commit" if args.commit else
                   "of this checkout" if commit else "unknown: not a git checkout; pass --commit")
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_build": torch.version.cuda,
        "cuda": cuda,
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "gpu_count": torch.cuda.device_count() if cuda else 0,
        "gpu_memory_gib": (round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
                           if cuda else None),
        "capability": ".".join(map(str, torch.cuda.get_device_capability(0))) if cuda else None,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "nccl": nccl_version() if cuda else None,
        "nvidia_smi": nvidia_smi(),
        "cpu": f"{cpu_model()}, {os.cpu_count()} cores",
        "sslreg": version("sslreg"),
        "sslreg_path": str(Path(__import__("sslreg").__file__).resolve().parent),
        "commit": commit,
        "methods": registry.methods.names(),
        "lightly": lightly_version() if not args.no_lightly else None,
        "lightly_installed": lightly_version() is not None,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(info, indent=2) + "\n")
    from sslreg.engine.mfu import peak_flops_for_name

    peak = peak_flops_for_name(info["gpu"]) if cuda else None
    lightly = (f"lightly {info['lightly']}" if info["lightly"] else
               "lightly: skipped by --no-lightly" if args.no_lightly else
               "**lightly: NOT INSTALLED** (the comparison cannot be measured)")
    lines = [
        f"- GPU: {info['gpu'] or 'none (CUDA not available)'}"
        + (f", {info['gpu_memory_gib']} GiB, compute capability {info['capability']}, "
           f"{info['gpu_count']} visible" if cuda else ""),
        f"- nvidia-smi: {info['nvidia_smi'] or 'not found'}",
        "- dense bf16 peak (sslreg.engine.mfu): "
        + (f"{peak / 1e12:.0f} TFLOP/s" if peak else
           "not in the table: no MFU can be given" if cuda else "- (no GPU)"),
        f"- torch {info['torch']} (CUDA build {info['cuda_build'] or 'none'}, cuDNN "
        f"{info['cudnn'] or '-'}, NCCL {info['nccl'] or '-'}), Python {info['python']}",
        f"- CPU: {info['cpu']}",
        f"- sslreg {info['sslreg']} at {info['sslreg_path']}, commit "
        f"{commit or '-'} ({commit_note})",
        f"- methods: {', '.join(info['methods'])}",
        f"- {lightly}",
    ]
    return "\n".join(lines)


def nccl_version() -> str | None:
    """NCCL's version as torch reports it (a tuple or a number, by torch version)."""
    try:
        import torch

        found = torch.cuda.nccl.version()
    except Exception:  # no NCCL in this build: said as "-", never fatal here
        return None
    return ".".join(map(str, found)) if isinstance(found, tuple) else str(found)


def lightly_version() -> str | None:
    """lightly's version and where it is, when it imports (what throughput.py needs)."""
    try:
        import lightly
    except ImportError:
        return None
    found = getattr(lightly, "__version__", None) or version("lightly") or "unknown"
    return f"{found} ({Path(lightly.__file__).parent})"


def nvidia_smi() -> str | None:
    query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
             "--format=csv,noheader"]
    try:
        done = subprocess.run(query, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip().replace("\n", "; ") or None if done.returncode == 0 else None


# ------------------------------------------------------------------- check-commands


class Captured(Exception):
    """Raised by a stub in place of the work a command would do, with its arguments."""

    def __init__(self, kind: str, args: tuple, kwargs: dict) -> None:
        super().__init__(kind)
        self.kind, self.args_, self.kwargs = kind, args, kwargs


def stub(kind: str) -> Any:
    def stop(*args: Any, **kwargs: Any) -> None:
        raise Captured(kind, args, kwargs)

    return stop


@contextlib.contextmanager
def stubbed() -> Iterator[None]:
    """sslreg's CLI with its work replaced by stubs: pretraining, the suite runner and the
    leaderboard's read of the index each raise :class:`Captured` with what they got."""
    import sslreg.engine
    import sslreg.suites
    import sslreg.suites.leaderboard
    import sslreg.suites.runner

    with mock.patch.object(sslreg.engine, "pretrain", stub("pretrain")), \
            mock.patch.object(sslreg.suites, "run_suite", stub("bench")), \
            mock.patch.object(sslreg.suites.runner, "run_suite", stub("bench")), \
            mock.patch.object(sslreg.suites.leaderboard, "leaderboard_frame",
                              stub("leaderboard")):
        yield


def capture(argv: list[str]) -> Captured:
    """Parse and start ``sslreg ARGV`` as the installed script does, up to its work."""
    import click

    from sslreg.cli import cli
    from sslreg.plugins import add_commands

    add_commands(cli)
    command = shlex.join(["sslreg", *argv])
    with stubbed():
        try:
            cli.main(argv, prog_name="sslreg", standalone_mode=False)
        except Captured as captured:
            return captured
        except click.ClickException as error:
            fail(f"{code(command)}: {error.format_message()}")
        except SystemExit as error:
            fail(f"{code(command)} exited with {error.code} before its work")
    fail(f"{code(command)} finished without reaching its work: this check cannot tell "
         "what it would run")
    raise AssertionError  # unreachable


def check_pretrain(captured: Captured, registry: Any, device: str) -> list[str]:
    from sslreg.engine.splits import load_run_data

    (config, _, out), kwargs = captured.args_, captured.kwargs
    if config.train.device != device:
        fail(f"sslreg pretrain would train on {config.train.device}, not {device}")
    data = load_run_data(config, registry)
    pool = data.pretraining(config)
    steps = len(pool) // config.train.batch_size
    if steps < 1:
        fail(f"sslreg pretrain: batch {config.train.batch_size} > {len(pool)} images")
    return [f"config built: {config.method} on {config.backbone}, {config.dataset} from "
            f"{config.data_root or 'the usual places'}, {config.train.epochs} epoch(s) of "
            f"batch {config.train.batch_size} ({steps} steps), train.device="
            f"{config.train.device}, evaluate={kwargs.get('evaluate')}, out {out}",
            f"data read: {len(pool)} pretraining images, {len(data.val)} validation, "
            f"{len(data.test)} test"]


def suite_configs(suite: Any, registry: Any) -> list[Any]:
    """The configs ``sslreg bench`` builds under CUDA (the suite's GPU budget)."""
    from sslreg.config import RunConfig
    from sslreg.suites.runner import backbone_for
    from sslreg.suites.suite import suite_sets, variants

    budget = suite.gpu
    methods = suite.select(registry.methods.names())
    if not methods:
        fail(f"suite {suite.name} matches no registered method")
    return [RunConfig.build(registry, m, suite_sets(suite, budget, m, s, v),
                            dataset=suite.dataset, backbone=backbone_for(registry, m, budget))
            for m in methods for v in variants(suite, m) for s in suite.seeds]


def check_bench(captured: Captured, registry: Any) -> list[str]:
    from sslreg.engine.splits import load_run_data
    from sslreg.suites.runner import floor_configs

    suite = captured.args_[0]
    configs = suite_configs(suite, registry)
    data = load_run_data(configs[0], registry)
    backbones = sorted({c.backbone for c in configs})
    epochs = sorted({c.train.epochs for c in configs})
    batches = sorted({c.train.batch_size for c in configs})
    return [f"suite {suite.name} loaded; its GPU budget builds {len(configs)} run configs "
            f"({', '.join(c.method for c in configs)}) on {', '.join(backbones)}, epochs "
            f"{epochs}, batch {batches}, seeds {list(suite.seeds)}, and "
            f"{len(floor_configs(configs, registry))} floor configs",
            f"data read: {len(data.pretraining(configs[0]))} pretraining images from "
            f"{configs[0].data_root or 'the usual places'}"]


def check_leaderboard(captured: Captured) -> list[str]:
    out, name, split = captured.args_[:3]
    return [f"leaderboard of suite {name} ({split} split) from {out}: parsed"]


def check_commands(args: argparse.Namespace) -> str:
    from sslreg.plugins import load_registry

    registry = load_registry()
    lines = []
    for command in args.command:
        argv = shlex.split(command)
        if argv[0] != "sslreg":
            fail(f"{code(command)} is not an sslreg command")
        captured = capture(argv[1:])
        if captured.kind == "pretrain":
            checked = check_pretrain(captured, registry, args.device)
        elif captured.kind == "bench":
            checked = check_bench(captured, registry)
        else:
            checked = check_leaderboard(captured)
        lines.append(f"- {code(shlex.join(argv))}")
        lines += [f"  - {line}" for line in checked]
    return "\n".join(lines)


# ------------------------------------------------------------------------ write-suite


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string is a JSON string
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def toml_tables(data: dict[str, Any], prefix: str = "") -> list[str]:
    """Scalars and lists first, then each sub-table, then arrays of tables."""
    lines = [f"{k} = {toml_value(v)}" for k, v in data.items()
             if not isinstance(v, dict) and not (isinstance(v, list) and v
                                                 and all(isinstance(i, dict) for i in v))]
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            inner = toml_tables(value, f"{name}.")
            # A table holding only tables needs no header of its own.
            plain = any(not isinstance(v, (dict, list)) or (isinstance(v, list) and not (
                v and all(isinstance(i, dict) for i in v))) for v in value.values())
            lines += (["", f"[{name}]"] if plain or not value else []) + inner
        elif isinstance(value, list) and value and all(isinstance(i, dict) for i in value):
            for item in value:
                lines += ["", f"[[{name}]]", *toml_tables(item, f"{name}.")]
    return lines


def reduced_sets(sets: list[str], epochs: int, data_root: str) -> list[str]:
    """A budget's ``set`` with ``epochs`` instead of its epochs, the warm-up scaled by
    the same factor and the data folder added."""
    values = dict(item.split("=", 1) for item in sets)
    full = int(values.get("train.epochs", "0"))
    if full < epochs:
        fail(f"the fmnist GPU budget trains {full} epochs, fewer than the {epochs} asked")
    reduced = []
    for item in sets:
        key, value = item.split("=", 1)
        if key == "train.epochs":
            value = str(epochs)
        elif key == "optim.warmup_epochs":
            value = f"{float(value) * epochs / full:g}"
        reduced.append(f"{key}={value}")
    return [*reduced, f"data_root={data_root}"]


def write_suite(args: argparse.Namespace) -> str:
    from importlib import resources

    from sslreg.suites import load_suite

    source = resources.files("sslreg.suites") / "builtin" / "fmnist.toml"
    data = tomllib.loads(source.read_text())
    full = dict(item.split("=", 1) for item in data["budget"]["gpu"]["set"]).get("train.epochs")
    data["name"] = args.name
    data["description"] = (f"the fmnist suite's GPU budget at {args.epochs} epoch(s) of "
                           f"{full}, seed 0 only (benchmarks/gpu_check.sh)")
    data["seeds"] = [0]
    root = str(Path(args.data_root).resolve())
    for budget in data["budget"].values():
        budget["set"] = (reduced_sets(budget["set"], args.epochs, root)
                         if budget is data["budget"]["gpu"] else [*budget["set"],
                                                                  f"data_root={root}"])
    header = ["# Written by benchmarks/gpu_check.sh from the built-in fmnist suite: its GPU",
              f"# budget with train.epochs={args.epochs} (of {full}) and the warm-up scaled",
              "# alike, one seed, the data folder given; everything else as fmnist's."]
    text = "\n".join([*header, *toml_tables(data)]) + "\n"
    Path(args.out).write_text(text)
    suite = load_suite(args.out)  # the runner's own parser accepts it
    return f"wrote {args.out}: suite {suite.name}, GPU budget {list(suite.gpu.set)}"


# ------------------------------------------------------------------------- nccl-probe


def nccl_probe(args: argparse.Namespace) -> str:
    """Under ``torchrun --nproc_per_node 1``: NCCL's process group, its collectives
    through sslreg's gather, and a DDP step of sslreg's resnet18, each checked.

    ``--dry-run``: the same with gloo on the CPU (checks the probe, not NCCL).
    """
    import torch
    import torch.distributed as dist
    from torch import nn

    from sslreg import distributed
    from sslreg.plugins import load_registry

    if "LOCAL_RANK" not in os.environ:
        fail("nccl-probe must be started by torchrun (LOCAL_RANK is not set)")
    cuda = not args.dry_run
    if cuda and not torch.cuda.is_available():
        fail("nccl-probe: no CUDA device")
    backend = "nccl" if cuda else "gloo"
    device = torch.device("cuda", int(os.environ["LOCAL_RANK"])) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    dist.init_process_group(backend, device_id=device if cuda else None)
    try:
        world = dist.get_world_size()
        if dist.get_backend() != backend:
            fail(f"process group backend is {dist.get_backend()}, not {backend}")
        checked = [f"process group: backend {dist.get_backend()}, world size {world}, "
                   f"rank {dist.get_rank()}, device {device}"]
        total = torch.full((4,), float(dist.get_rank() + 1), device=device)
        dist.all_reduce(total)
        if not torch.equal(total.cpu(), torch.full((4,), world * (world + 1) / 2)):
            fail(f"all_reduce gave {total.tolist()}")
        checked.append("all_reduce: the sum of the ranks")
        # The gather NT-Xent and InfoNCE use across ranks, called directly: sslreg takes
        # it only with 2+ processes.
        rows = torch.randn(8, 16, device=device, requires_grad=True)
        gathered = distributed._GatherWithGrad.apply(rows)
        gathered.sum().backward()
        if gathered.shape != (8 * world, 16) or not torch.allclose(
                rows.grad, torch.full_like(rows, float(world))):
            fail(f"sslreg's gather_with_grad gave shape {tuple(gathered.shape)} and "
                 f"gradient {rows.grad.flatten()[:4].tolist()}...")
        checked.append("sslreg's gather with gradient (its all-gather forward and "
                       "reduce-scatter backward): rows and gradient as expected")
        registry = load_registry()
        net = registry.backbones.create("resnet18", in_channels=1, image_size=28)
        model = nn.Sequential(net, nn.Linear(net.output_dim, 10)).to(device)
        if cuda:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            model = model.to(memory_format=torch.channels_last)
        ddp = nn.parallel.DistributedDataParallel(model, device_ids=[device] if cuda else None)
        optimizer = torch.optim.SGD(ddp.parameters(), lr=0.1)
        batch = 64 if cuda else 8
        images = torch.randn(batch, 1, 28, 28, device=device)
        labels = torch.randint(0, 10, (batch,), device=device)
        before = [p.detach().clone() for p in model.parameters()]
        for _ in range(2):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                loss = nn.functional.cross_entropy(ddp(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        after = list(model.parameters())
        changed = sum(not torch.equal(a, b.detach()) for a, b in zip(before, after, strict=True))
        if not math.isfinite(loss.item()) or changed == 0:
            fail(f"DDP step: loss {loss.item()}, {changed} parameters changed")
        checked.append(f"DDP: 2 steps of sslreg's resnet18 (batch {batch}"
                       + (", SyncBatchNorm, bf16, channels_last" if cuda else "")
                       + f"): loss finite, {changed} of {len(before)} parameter tensors moved")
        if cuda:
            torch.cuda.synchronize(device)
        nccl = nccl_version() if cuda else None
        result = {"backend": backend, "world_size": world, "nccl": nccl, "checked": checked}
    finally:
        dist.destroy_process_group()
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return "\n".join(f"- {line}" for line in checked)


# ----------------------------------------------------------------- throughput-section


def throughput_rows(data: dict[str, Any], what: str) -> list[dict[str, Any]]:
    if data.get("dry_run"):
        fail(f"{what}: a dry run's JSON holds no measurement")
    if not data.get("gpu"):
        fail(f"{what}: did not run on a GPU (device {data.get('device')})")
    rows = data.get("rows") or []
    if not rows:
        fail(f"{what}: no rows")
    return rows


def throughput_section(args: argparse.Namespace) -> tuple[str, list[str]]:
    """The eager run (views and train step) and the compiled run (train step), checked."""
    deferred = []
    table = ["| stage | backbone | batch | backbone compiled | sslreg img/s | lightly img/s "
             "| sslreg / lightly | sslreg MFU | lightly MFU | sslreg peak MB "
             "| lightly peak MB |", "|:--|:--|--:|:--|--:|--:|--:|--:|--:|--:|--:|"]
    runs = [read_json(Path(p), f"throughput JSON {p}") for p in args.json]
    lightly_run = all(run["lightly_run"] for run in runs)
    gpu = runs[0]["gpu"] if runs else None
    train: dict[bool, dict[str, float]] = {}
    for path, run in zip(args.json, runs, strict=True):
        rows = throughput_rows(run, f"throughput ({path})")
        if run["gpu"] != gpu:
            fail(f"throughput runs on different GPUs: {gpu} and {run['gpu']}")
        by_side = {(r["stage"], r["backbone"], r["batch"], r["side"]): r for r in rows}
        for stage, backbone, batch, side in list(by_side):
            if side != "sslreg":
                continue
            ours = by_side[(stage, backbone, batch, "sslreg")]
            theirs = by_side.get((stage, backbone, batch, "lightly"))
            if run["lightly_run"] and theirs is None:
                fail(f"throughput: lightly's {stage} row is missing from {path}")
            label = f"{stage} {backbone} batch {batch}" + (" compiled" if run["compile"] else "")
            rate = measured(ours["images_per_s"], f"sslreg img/s ({label})")
            cells = [f"{rate:,.0f}"]
            if theirs is not None:
                peer = measured(theirs["images_per_s"], f"lightly img/s ({label})")
                cells += [f"{peer:,.0f}", f"{rate / peer:.2f}x"]
            else:
                cells += ["not run", "-"]
            mfus, memory = [], []
            for side_row, name in ((ours, "sslreg"), (theirs, "lightly")):
                if side_row is None:
                    mfus.append("not run")
                    memory.append("not run")
                    continue
                if stage == "views":  # no model: neither MFU nor a model's memory
                    mfus.append("-")
                    memory.append("-")
                    continue
                peak = measured(side_row["peak_memory_mb"], f"{name} peak memory ({label})")
                memory.append(f"{peak:,.0f}")
                if run["peak_flops"] is None:
                    mfus.append("no peak known")
                    deferred.append(f"MFU not measured: {gpu} is not in "
                                    "sslreg.engine.mfu's table of peaks")
                else:
                    mfus.append(percent(measured(side_row["mfu"], f"{name} MFU ({label})")))
            if stage == "train step":
                train.setdefault(run["compile"], {})["sslreg"] = rate
                if theirs is not None:
                    train[run["compile"]]["lightly"] = measured(theirs["images_per_s"], label)
            table.append(f"| {stage} | {backbone} | {batch} | "
                         f"{'yes' if run['compile'] else 'no'} | {' | '.join(cells)} | "
                         f"{' | '.join(mfus)} | {' | '.join(memory)} |")
    if not train:
        fail("throughput: no train-step row")
    lines = [*table, ""]
    if set(train) == {False, True}:
        eager, compiled = train[False]["sslreg"], train[True]["sslreg"]
        lines.append(f"- `train.compile`: sslreg's step at {compiled:,.0f} img/s compiled "
                     f"against {eager:,.0f} eager ({compiled / eager:.2f}x).")
    else:
        lines.append(f"- `train.compile`: only the {'compiled' if True in train else 'eager'} "
                     "step was measured (the other run failed: see its section).")
    best = max(t["sslreg"] for t in train.values())
    goal = "resnet18 step >= 40,000 img/s and >= 3x lightly on an H100 (issue 5)"
    if not lightly_run:
        lines.append(f"- Goal, {goal}: not judged, lightly not run.")
    elif "H100" in (gpu or "").upper():
        ratio = max(t["sslreg"] / t["lightly"] for t in train.values())
        met = best >= 40_000 and ratio >= 3
        lines.append(f"- Goal, {goal}: {'met' if met else 'NOT met'} ({best:,.0f} img/s, "
                     f"{ratio:.2f}x lightly at best).")
    else:
        lines.append(f"- Goal, {goal}: not judged on a {gpu}.")
    first = runs[0]
    lines += [
        f"- Each row: {first['steps']} timed steps after {first['warmup']} untimed warm-up "
        f"steps (the compilation happens there); lightly's DataLoader has {first['workers']} "
        "workers. Images/s counts source images of 1x28x28, each giving two views. MFU is "
        "(backbone + projector forward FLOPs x 3 x 2 views) x img/s over the GPU's dense "
        "bf16 peak; peak memory is CUDA's max allocated during the row.",
        f"- Commands: {'; '.join(code(run['command']) for run in runs)}; "
        f"lightly {first.get('lightly') or 'not run'}, torch {first['torch']}.",
    ]
    return "\n".join(lines), sorted(set(deferred))


# ------------------------------------------------------------------ pretrain-section


def run_dirs(runs: Path) -> list[Path]:
    return sorted(p.parent for p in runs.glob("*/config.json"))


def pretrain_section(args: argparse.Namespace) -> tuple[str, list[str]]:
    from sslreg.runs import open_index

    runs = Path(args.runs)
    found = run_dirs(runs) if runs.is_dir() else []
    if len(found) != 1:
        fail(f"torchrun pretrain: expected one run directory under {runs}, found {len(found)}")
    (run,) = found
    info = read_json(run / "train.json", "torchrun pretrain train.json")
    result = read_json(run / "result.json", "torchrun pretrain result.json")
    if info.get("status") != "trained":
        fail(f"torchrun pretrain: train.json says status {info.get('status')!r}, not trained")
    if info.get("steps") != args.steps:
        fail(f"torchrun pretrain: {info.get('steps')} steps, not {args.steps}")
    if info.get("device") != args.gpu:
        fail(f"torchrun pretrain: train.json says device {info.get('device')!r}, not the "
             f"GPU {args.gpu!r}")
    rate = measured(info.get("images_per_s"), "torchrun pretrain img/s")
    wall = measured(info.get("wall_time_s"), "torchrun pretrain wall time")
    memory = measured(info.get("peak_memory_mb"), "torchrun pretrain peak memory")
    deferred = []
    if info.get("mfu") is None:
        deferred.append(f"MFU not measured: {args.gpu} is not in sslreg.engine.mfu's table")
    else:
        measured(info["mfu"], "torchrun pretrain MFU")
    metrics = result.get("metrics", {})
    linear = measured(metrics.get("linear_acc"), "torchrun pretrain linear accuracy", False)
    knn = measured(metrics.get("knn20_acc"), "torchrun pretrain kNN accuracy", False)
    rows = [r for r in open_index(runs).rows() if r["run"] == run.name]
    if len(rows) != 1 or not rows[0]["status"].startswith("evaluated"):
        fail(f"torchrun pretrain: the run index says {[r['status'] for r in rows]}")
    lines = [
        f"- run {run.name}: status trained, then evaluated; {info['steps']} steps on "
        f"{info['device']} (train.json); {wall:.1f} s of training, {rate:,.0f} img/s, MFU "
        f"{percent(info.get('mfu'))}, peak memory {memory:,.0f} MB",
        f"- test accuracy after these {info['steps']} steps: linear {100 * linear:.1f}%, kNN "
        f"k=20 {100 * knn:.1f}% (a check of the path, not a score)",
    ]
    return "\n".join(lines), deferred


# --------------------------------------------------------------------- bench-section


def bench_section(args: argparse.Namespace) -> tuple[str, list[str]]:
    from sslreg.plugins import load_registry
    from sslreg.runs import open_index
    from sslreg.suites import load_suite

    suite = load_suite(args.suite)
    registry = load_registry()
    expected = suite.select(registry.methods.names())
    runs = Path(args.runs)
    if not runs.is_dir():
        fail(f"sslreg bench wrote no runs folder {runs}")
    rows = [r for r in open_index(runs).rows() if suite.name in r["suites"]]
    trained = {r["method"]: r for r in rows if r["status"] != "floor"}
    floors = [r for r in rows if r["status"] == "floor"]
    problems = [f"{m}: no run recorded" for m in expected if m not in trained]
    problems += [f"{m}: {r['status']}" for m, r in trained.items()
                 if not r["status"].startswith("evaluated")]
    problems += [f"{m}: trained on {r['device']}, not {args.gpu}" for m, r in trained.items()
                 if r["status"].startswith("evaluated") and r["device"] != args.gpu]
    leaderboard = Path(args.leaderboard)
    text = demote(leaderboard.read_text().strip()) if leaderboard.is_file() else ""
    cost = ["| method | backbone | train s | img/s | MFU | peak MB | status |",
            "|:--|:--|--:|--:|--:|--:|:--|"]
    deferred = []
    for method in expected:
        row = trained.get(method)
        if row is None or not row["status"].startswith("evaluated"):
            cost.append(f"| {method} | - | - | - | - | - | "
                        f"{row['status'][:60] if row else 'not run'} |")
            continue
        label = f"sslreg bench {method}"
        wall = measured(row["wall_time_s"], f"{label} train s")
        rate = measured(row["images_per_s"], f"{label} img/s")
        memory = measured(row["peak_memory_mb"], f"{label} peak memory")
        if row["mfu"] is None:
            deferred.append(f"MFU not measured: {args.gpu} is not in sslreg.engine.mfu's table")
        metrics = json.loads(row["metrics"]) if isinstance(row["metrics"], str) else row["metrics"]
        for key in ("linear_acc", "knn20_acc"):
            measured(metrics.get(key), f"{label} {key}", positive=False)
        cost.append(f"| {method} | {row['backbone']} | {wall:.1f} | {rate:,.0f} | "
                    f"{percent(row['mfu'])} | {memory:,.0f} | {row['status']} |")
    if len(floors) < 2:
        problems.append(f"floors: {len(floors)} recorded, expected raw pixels and a random "
                        "init per backbone")
    lines = [text or "(no leaderboard was rendered)", "",
             "Per run, from the run index (train s is pretraining alone; MFU counts the "
             "backbone's FLOPs over the policy's views):", "", *cost]
    section = "\n".join(lines)
    if problems:
        print(section)
        fail("sslreg bench: " + "; ".join(problems))
    return section, sorted(set(deferred))


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command_name", required=True)
    p = sub.add_parser("env", help="the environment section; fails without CUDA if asked")
    p.add_argument("--json", default=None)
    p.add_argument("--require-cuda", action="store_true")
    p.add_argument("--no-lightly", action="store_true")
    p.add_argument("--commit", default="")
    p = sub.add_parser("check-commands", help="parse and build sslreg command lines")
    p.add_argument("--command", action="append", required=True,
                   help="one sslreg command line, shell-quoted (repeatable)")
    p.add_argument("--device", default="cuda", help="the train.device pretrain must ask for")
    p = sub.add_parser("data", help="the folder holding the Fashion-MNIST files")
    p.add_argument("root")
    p = sub.add_parser("write-suite", help="the reduced fmnist suite")
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--data-root", required=True)
    p.add_argument("--name", default="fmnist-gpu-check")
    p.add_argument("--out", required=True)
    p = sub.add_parser("nccl-probe", help="NCCL under torchrun (gloo on the CPU with --dry-run)")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--json", default=None)
    p = sub.add_parser("throughput-section")
    p.add_argument("json", nargs="+")
    p = sub.add_parser("pretrain-section")
    p.add_argument("--runs", required=True)
    p.add_argument("--gpu", required=True)
    p.add_argument("--steps", type=int, required=True)
    p = sub.add_parser("bench-section")
    p.add_argument("--runs", required=True)
    p.add_argument("--suite", required=True)
    p.add_argument("--gpu", required=True)
    p.add_argument("--leaderboard", required=True)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    handlers = {
        "env": env, "check-commands": check_commands, "write-suite": write_suite,
        "data": lambda a: str(data_folder(Path(a.root))), "nccl-probe": nccl_probe,
        "throughput-section": throughput_section, "pretrain-section": pretrain_section,
        "bench-section": bench_section,
    }
    try:
        output = handlers[args.command_name](args)
    except CheckFailed as error:
        print(f"gpu_check.py: {error}", file=sys.stderr)
        return 1
    except Exception as error:  # an sslreg error or a crash: the trace, then one line
        traceback.print_exc()
        print(f"gpu_check.py: {type(error).__name__}: {error}".splitlines()[0],
              file=sys.stderr)
        return 1
    deferred: list[str] = []
    if isinstance(output, tuple):
        output, deferred = output
    print(output)
    for reason in deferred:
        print(f"DEFERRED: {reason}", file=sys.stderr)
    return DEFERRED if deferred else 0


if __name__ == "__main__":
    sys.exit(main())
