"""SimCLR throughput, sslreg against lightly: the two views alone, then whole training steps.

Run: ``python benchmarks/throughput.py [--device auto|cpu|cuda] [--batch-sizes 256,512]
[--backbones resnet18-narrow,resnet18] [--steps N] [--warmup N] [--workers N] [--out FILE]
[--compile] [--no-views] [--no-lightly] [--json FILE] [--dry-run]``.
The peer needs the optional group: ``pip install -e ".[peer]"``; without it the script
exits with that line, unless ``--no-lightly`` asks for sslreg's rows alone.

Images are 1x28x28 uint8 (Fashion-MNIST sized: sslreg's synthetic shapes, no files needed);
images/s counts source images, each giving two views.

- views: ours is sslreg's simclr view policy, one batched call on the device; lightly's is
  its ``SimCLRTransform`` configured like ours, per PIL image, in a torch DataLoader with
  ``os.cpu_count()`` workers, the views copied to the device.
- train step: ours is a Trainer from ``sslreg.engine.trainer.build_trainer`` stepped by its
  ``train_step`` (views on the device, bf16 autocast and channels_last on CUDA, the
  method's LARS); lightly's is the same backbone and projector sizes fed by that
  DataLoader, with lightly's ``NTXentLoss`` and ``LARS`` and the same autocast and memory
  format, so the ratio measures the pipelines rather than the precision. MFU is model
  FLOPs (backbone + projector, 3x forward per view) over the GPU's dense bf16 peak.
- ``--compile`` compiles the backbone on both sides: ours through ``train.compile=true``
  (the engine's ``backbone.compile()``), lightly's with the same ``backbone.compile()``;
  the compilation happens in the untimed warm-up steps.
- ``--json FILE`` also writes the rows and the setting as JSON (for
  ``benchmarks/gpu_check.sh``); ``--dry-run`` parses the arguments, builds every config
  and both sides' models on the CPU at batch 8 and takes one step each, times nothing
  and writes no table (``--json`` then says ``"dry_run": true`` and holds no rows).

Prints a Markdown table and writes it, with a provenance line, to
``benchmarks/results/throughput-<cpu|gpu>.md`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import gc
import importlib
import importlib.metadata
import itertools
import json
import math
import os
import platform
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from sslreg.backbones import forward_flops
from sslreg.config import RunConfig
from sslreg.data.synthetic import generate
from sslreg.engine.device import resolve_device, use_bf16
from sslreg.engine.mfu import mfu, peak_flops, training_flops_per_image
from sslreg.engine.optim import build_optimizer, param_groups
from sslreg.engine.parts import assemble
from sslreg.engine.splits import RunData
from sslreg.engine.trainer import Trainer, build_trainer, epoch_batches, train_step
from sslreg.errors import SslregError
from sslreg.plugins import load_registry
from sslreg.runs import RunDir

RESULTS = Path(__file__).resolve().parent / "results"
INSTALL_PEER = 'lightly is not installed; install the peer group: pip install -e ".[peer]"'
IMAGE_SIZE = 28
VIEWS = 2
# Images in the training pool per batch: four steps per pass, like a short epoch.
POOL_BATCHES = 4
# The views alone are cheap: time this many batches per training step asked for.
VIEW_BATCHES_PER_STEP = 5
# torch's default: each DataLoader worker keeps this many batches ready.
PREFETCH = 2
# Small defaults on the CPU (a resnet18 step of 256 images takes ~10 s on 2 quiet cores;
# the first two are slower).
DEFAULTS = {
    "cpu": {"batch_sizes": "256", "backbones": "resnet18-narrow,resnet18", "steps": 2,
            "warmup": 2},
    "cuda": {"batch_sizes": "256,512", "backbones": "resnet18-narrow,resnet18", "steps": 50,
             "warmup": 10},
}
# The goals (issue 5), reported against, not tuned to.
CPU_VIEWS_GOAL = 5.0
H100_IMAGES_GOAL = 40_000
H100_RATIO_GOAL = 3.0


@dataclasses.dataclass
class Row:
    """One measurement: who, what, and how fast."""

    stage: str  # "views" or "train step"
    side: str  # "sslreg" or "lightly"
    backbone: str  # "-" for the views alone
    batch: int
    images_per_s: float
    mfu: float | None = None
    peak_memory_mb: float | None = None
    compiled: bool = False  # the backbone under torch.compile


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, step: Callable[[], Any], warmup: int, count: int,
          settle: Callable[[], Any] | None = None) -> float:
    """Seconds for ``count`` calls of ``step`` after ``warmup`` untimed ones and ``settle``."""
    for _ in range(warmup):  # allocator, kernels, worker start-up
        step()
    if settle is not None:
        settle()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(count):
        step()
    synchronize(device)
    return time.perf_counter() - start


def fresh_memory(device: torch.device) -> None:
    """Free the previous measurement's tensors so that each peak is its own."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None  # the process's CPU memory is not one measurement's
    return torch.cuda.max_memory_allocated(device) / 2**20


def simclr_config(registry: Any, backbone: str, batch: int, device: torch.device,
                  steps: int = 1, compile: bool = False) -> RunConfig:
    """SimCLR's defaults at this batch, with a schedule long enough for ``steps``."""
    epochs = max(1, math.ceil(steps / POOL_BATCHES))
    overrides = [f"train.batch_size={batch}", f"train.device={device}",
                 f"train.epochs={epochs}", f"train.compile={str(compile).lower()}"]
    return RunConfig.build(registry, "simclr", overrides, backbone=backbone,
                           dataset="synthetic")


def pool(batch: int) -> RunData:
    """``POOL_BATCHES`` batches of Fashion-MNIST-sized images as every split of a run,
    the same for both sides."""
    images = generate(POOL_BATCHES * batch, seed=0, name="synthetic/throughput")
    return RunData(train=images, val=images, test=images, stats=images.channel_stats())


def our_views(registry: Any, device: torch.device, batch: int, batches: int,
              warmup: int) -> Row:
    """Two SimCLR views of ``batch`` images on the device, with the run's own policy."""
    data = pool(batch)
    policy = assemble(simclr_config(registry, "resnet18-narrow", batch, device), registry,
                      data).policy
    images = data.train.images[:batch].to(device)
    generator = torch.Generator(device=device).manual_seed(0)
    seconds = timed(device, lambda: policy(images, generator), warmup, batches)
    return Row("views", "sslreg", "-", batch, batch * batches / seconds)


def model_flops_per_image(registry: Any, config: RunConfig) -> float:
    """Training FLOPs per source image of SimCLR's backbone and projector, counted on the CPU.

    The NT-Xent logits are left out: 8 x batch x 128 FLOPs per image, 1.6% of the narrow
    model's forward at batch 512 and 0.03% of resnet18's.
    """
    method = assemble(config, registry, pool(config.train.batch_size)).method
    forward = forward_flops(nn.Sequential(method.backbone, method.projector), 1, IMAGE_SIZE)
    return training_flops_per_image(forward, VIEWS)


def batches_like_run_epoch(trainer: Trainer) -> Iterator[torch.Tensor]:
    """Row indices as ``run_epoch`` draws them (its own ``epoch_batches``), epoch after
    epoch."""
    for epoch in itertools.count():
        yield from epoch_batches(trainer.setup, epoch)


def our_training(registry: Any, backbone: str, device: torch.device, batch: int, steps: int,
                 warmup: int, compile: bool = False) -> Row:
    """SimCLR steps through the engine's own ``build_trainer`` and ``train_step``."""
    fresh_memory(device)
    config = simclr_config(registry, backbone, batch, device, warmup + steps, compile)
    # build_trainer writes nothing: the run directory is only named.
    run = RunDir(Path(tempfile.gettempdir()) / "sslreg-throughput")
    trainer = build_trainer(assemble(config, registry, pool(batch)), registry, run)
    setup = trainer.setup
    setup.method.train()
    rows = batches_like_run_epoch(trainer)
    views_rng = torch.Generator(device=device).manual_seed(1)

    def step() -> None:
        index = next(rows)
        train_step(trainer, setup.images[index], setup.labels[index], views_rng)
        trainer.progress.step += 1  # as run_epoch: the schedule is read at progress.step

    seconds = timed(device, step, warmup, steps)
    rate = batch * steps / seconds
    flops = model_flops_per_image(registry, config)
    return Row("train step", "sslreg", backbone, batch, rate,
               mfu(rate, flops, peak_flops(device)), peak_memory_mb(device), compile)


def require_lightly() -> None:
    """Exit with the install line when the optional peer group is missing."""
    try:
        import lightly  # noqa: F401
    except ImportError:
        print(INSTALL_PEER, file=sys.stderr)
        sys.exit(2)


def lightly_transform(policy: Any) -> Any:
    """lightly's SimCLRTransform with our policy's numbers, for 1-channel 28 px images."""
    from lightly.transforms import SimCLRTransform

    o = policy.options
    colour = policy.channels == 3
    return SimCLRTransform(
        input_size=policy.image_size,
        cj_prob=o.jitter_p,
        cj_strength=1.0,
        cj_bright=o.brightness,
        cj_contrast=o.contrast,
        # Saturation, hue and grayscale do nothing to grey images (ours skips them too).
        cj_sat=o.saturation if colour else 0.0,
        cj_hue=o.hue if colour else 0.0,
        random_gray_scale=o.grayscale_p if colour else 0.0,
        # Crop aspect ratio: lightly's fixed (3/4, 4/3) is our default too.
        min_scale=o.crop_scale[0],
        hf_prob=o.flip_p,
        # 0 at 28 px, as SimCLR on CIFAR-10 and as ours.
        gaussian_blur=policy.blur_p[0],
        sigmas=o.blur_sigma,
        normalize={"mean": list(policy.mean), "std": list(policy.std)},
    )


class PilImages(Dataset):
    """``length`` transformed samples drawn from a pool of PIL images, as lightly reads."""

    def __init__(self, images: torch.Tensor, transform: Any, length: int) -> None:
        from PIL import Image

        # (H, W) uint8 arrays become "L" (grey) or RGB images, like a decoded dataset.
        self.images = [Image.fromarray(image.permute(1, 2, 0).squeeze(2).contiguous().numpy())
                       for image in images]
        self.transform = transform
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> list[torch.Tensor]:
        return self.transform(self.images[index % len(self.images)])


def lightly_loader(registry: Any, device: torch.device, batch: int, batches: int,
                   workers: int) -> DataLoader:
    """lightly's views through a DataLoader, as its examples feed a model."""
    data = pool(batch)
    policy = assemble(simclr_config(registry, "resnet18-narrow", batch, device), registry,
                      data).policy
    dataset = PilImages(data.train.images, lightly_transform(policy), batch * batches)
    return DataLoader(dataset, batch_size=batch, shuffle=True, drop_last=True,
                      num_workers=workers, pin_memory=device.type == "cuda",
                      prefetch_factor=PREFETCH if workers else None)


def ready_batches(workers: int) -> int:
    """Batches the DataLoader's workers may hold ready when the warm-up ends."""
    return workers * PREFETCH


def drain(loader: Iterator[Any], workers: int) -> Callable[[], None]:
    """Throw away the batches made ahead during the warm-up, without stepping the model.

    Else the timed window would start with up to workers x PREFETCH free batches,
    flattering a loader that is the bottleneck; the model's warm-up stays the same
    number of steps as ours.
    """

    def settle() -> None:
        for _ in range(ready_batches(workers)):
            next(loader)

    return settle


def lightly_views(registry: Any, device: torch.device, batch: int, batches: int, warmup: int,
                  workers: int) -> Row:
    """lightly's two views of ``batch`` images, on the device, from the DataLoader."""
    total = warmup + ready_batches(workers) + batches
    loader = iter(lightly_loader(registry, device, batch, total, workers))

    def step() -> None:
        for view in next(loader):
            view.to(device, non_blocking=True)

    seconds = timed(device, step, warmup, batches, drain(loader, workers))
    return Row("views", "lightly", "-", batch, batch * batches / seconds)


def lightly_optimizer(model: nn.Module, config: RunConfig, device: torch.device) -> Any:
    """The same optimizer type as ours: lightly's LARS for LARS, else torch's own."""
    optim = config.optim
    if optim.name != "lars":
        return build_optimizer(model, optim, device)
    from lightly.utils.lars import LARS

    groups = param_groups(model, optim.weight_decay)
    for group in groups:
        # lightly's LARS skips the scaling for groups without weight decay, as ours does.
        group.pop("lars")
    return LARS(groups, lr=optim.lr, momentum=optim.momentum,
                trust_coefficient=optim.lars_eta)


def lightly_training(registry: Any, backbone: str, device: torch.device, batch: int,
                     steps: int, warmup: int, workers: int, compile: bool = False) -> Row:
    """SimCLR as a lightly user writes it, on sslreg's backbone module."""
    from lightly.loss import NTXentLoss
    from lightly.models.modules import SimCLRProjectionHead

    fresh_memory(device)
    config = simclr_config(registry, backbone, batch, device)
    settings = config.method_config
    net = registry.backbones.create(backbone, in_channels=1, image_size=IMAGE_SIZE)
    if compile:
        net.compile()  # in place, as the engine compiles ours
    head = SimCLRProjectionHead(net.output_dim, settings.proj_hidden_dim, settings.proj_dim)
    model = nn.Sequential(net, head).to(device).train()
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    criterion = NTXentLoss(temperature=settings.temperature)
    optimizer = lightly_optimizer(model, config, device)
    bf16 = use_bf16(config.train.precision, device)
    total = warmup + ready_batches(workers) + steps
    loader = iter(lightly_loader(registry, device, batch, total, workers))

    def step() -> None:
        x0, x1 = (view.to(device, non_blocking=True) for view in next(loader))
        # One pass over both views, as ours: the same model work on both sides.
        x = torch.cat([x0, x1])
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if bf16
                    else contextlib.nullcontext())
        with autocast:
            z0, z1 = model(x).chunk(2)
            loss = criterion(z0, z1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    seconds = timed(device, step, warmup, steps, drain(loader, workers))
    rate = batch * steps / seconds
    flops = model_flops_per_image(registry, config)
    return Row("train step", "lightly", backbone, batch, rate,
               mfu(rate, flops, peak_flops(device)), peak_memory_mb(device), compile)


def measure(args: argparse.Namespace, device: torch.device) -> list[Row]:
    registry = load_registry()
    for backbone in args.backbones:  # an unknown name fails now, not after the views
        registry.backbones.get(backbone)
    rows = []
    view_batches = VIEW_BATCHES_PER_STEP * args.steps
    for batch in args.batch_sizes if args.views else ():
        rows.append(our_views(registry, device, batch, view_batches, args.warmup))
        report(rows[-1])
        if args.lightly:
            rows.append(lightly_views(registry, device, batch, view_batches, args.warmup,
                                      args.workers))
            report(rows[-1])
    for backbone, batch in itertools.product(args.backbones, args.batch_sizes):
        rows.append(our_training(registry, backbone, device, batch, args.steps, args.warmup,
                                 args.compile))
        report(rows[-1])
        if args.lightly:
            rows.append(lightly_training(registry, backbone, device, batch, args.steps,
                                         args.warmup, args.workers, args.compile))
            report(rows[-1])
    return rows


# The dry run's batch: big enough for BatchNorm and NT-Xent, small enough for the CPU.
DRY_RUN_BATCH = 8


def dry_run(args: argparse.Namespace, device: torch.device) -> list[str]:
    """Build what a real run builds, on the CPU at a tiny batch; time nothing.

    Every config is built at the real batch for the device asked for (``device``, which
    need not be present), with ``train.compile`` as asked; then each backbone's sslreg
    step and, unless ``--no-lightly``, lightly's view loader (with up to 2 of its
    workers) and step are built and stepped once on the CPU, uncompiled. Returns what
    was checked, one line each.
    """
    registry = load_registry()
    checked = []
    for backbone, batch in itertools.product(args.backbones, args.batch_sizes):
        registry.backbones.get(backbone)
        simclr_config(registry, backbone, batch, device, args.warmup + args.steps,
                      args.compile)
        checked.append(f"config: simclr, {backbone}, batch {batch}, train.device={device}, "
                       f"train.compile={str(args.compile).lower()}")
    cpu = torch.device("cpu")
    if args.views:
        our_views(registry, cpu, DRY_RUN_BATCH, 1, 0)
        checked.append(f"views: sslreg's policy, one batch of {DRY_RUN_BATCH} on the cpu")
        if args.lightly:
            workers = min(args.workers, 2)
            lightly_views(registry, cpu, DRY_RUN_BATCH, 1, 0, workers)
            checked.append(f"views: lightly's DataLoader with {workers} workers, one batch "
                           f"of {DRY_RUN_BATCH} on the cpu")
    for backbone in args.backbones:
        our_training(registry, backbone, cpu, DRY_RUN_BATCH, 1, 0)
        checked.append(f"train step: sslreg, {backbone}, one step of {DRY_RUN_BATCH} on the "
                       "cpu (uncompiled)")
        if args.lightly:
            lightly_training(registry, backbone, cpu, DRY_RUN_BATCH, 1, 0, 0)
            checked.append(f"train step: lightly, {backbone}, one step of {DRY_RUN_BATCH} "
                           "on the cpu (uncompiled)")
    if args.compile:
        importlib.import_module("torch._dynamo")  # what backbone.compile() needs

        checked.append("compile: torch._dynamo imports; nothing compiled in a dry run")
    return checked


def report(row: Row) -> None:
    print(f"  {row.stage:<10} {row.side:<7} {row.backbone:<16} batch {row.batch:<5} "
          f"{row.images_per_s:>10,.0f} images/s", file=sys.stderr, flush=True)


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def megabytes(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def paired(rows: list[Row]) -> list[tuple[Row, Row]]:
    """(sslreg, lightly) pairs of the same stage, backbone and batch."""
    return [(ours, theirs) for ours, theirs in sides(rows) if theirs is not None]


def sides(rows: list[Row]) -> list[tuple[Row, Row | None]]:
    """Each sslreg row with lightly's of the same stage, backbone and batch, or None."""
    ours = [row for row in rows if row.side == "sslreg"]
    theirs = {(r.stage, r.backbone, r.batch): r for r in rows if r.side == "lightly"}
    return [(row, theirs.get((row.stage, row.backbone, row.batch))) for row in ours]


def table(rows: list[Row]) -> list[str]:
    lines = [
        "| stage | backbone | batch | sslreg img/s | lightly img/s | ratio | sslreg MFU "
        "| lightly MFU | sslreg peak MB | lightly peak MB |",
        "|:--|:--|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for ours, theirs in sides(rows):
        if theirs is None:  # --no-lightly: nothing to compare with, nothing made up
            lines.append(
                f"| {ours.stage} | {ours.backbone} | {ours.batch} | {ours.images_per_s:,.0f} "
                f"| not run | - | {percent(ours.mfu)} | not run "
                f"| {megabytes(ours.peak_memory_mb)} | not run |")
            continue
        lines.append(
            f"| {ours.stage} | {ours.backbone} | {ours.batch} | {ours.images_per_s:,.0f} "
            f"| {theirs.images_per_s:,.0f} | {ours.images_per_s / theirs.images_per_s:.1f}x "
            f"| {percent(ours.mfu)} | {percent(theirs.mfu)} "
            f"| {megabytes(ours.peak_memory_mb)} | {megabytes(theirs.peak_memory_mb)} |")
    return lines


def cpu_views_goal(rows: list[Row], device: torch.device) -> str:
    ratios = [o.images_per_s / t.images_per_s for o, t in paired(rows) if o.stage == "views"]
    goal = f"views >= {CPU_VIEWS_GOAL:.0f}x lightly on the project's 2-core CPU machine"
    if device.type != "cpu" or not ratios:
        why = ("no views with lightly's in this run" if device.type == "cpu"
               else f"this run is on {device.type}")
        return f"{goal}: not measured here ({why})"
    verdict = "met" if min(ratios) >= CPU_VIEWS_GOAL else "not met"
    where = "" if os.cpu_count() == 2 else f" (but this machine has {os.cpu_count()} cores)"
    return f"{goal}: {verdict}, {min(ratios):.1f}x at worst{where}"


def h100_goal(rows: list[Row], device: torch.device) -> str:
    goal = (f"resnet18 train step at 28x28 bf16 >= {H100_IMAGES_GOAL:,} img/s end to end "
            f"and >= {H100_RATIO_GOAL:.0f}x lightly on an H100")
    pairs = [(o, t) for o, t in paired(rows) if o.backbone == "resnet18"]
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    if not pairs or device.type != "cuda":
        why = f"this run: {gpu}" if device.type != "cuda" else f"{gpu}, lightly not run"
        return f"{goal}: not measured here ({why})"
    best, theirs = max(pairs, key=lambda pair: pair[0].images_per_s)
    ratio = best.images_per_s / theirs.images_per_s
    met = best.images_per_s >= H100_IMAGES_GOAL and ratio >= H100_RATIO_GOAL
    # Another GPU's numbers are shown for reference, never judged against the H100 goal.
    verdict = ("met" if met else "not met") if "H100" in gpu.upper() else f"on {gpu}, not judged"
    return (f"{goal}: {verdict}, {best.images_per_s:,.0f} img/s at batch {best.batch}, "
            f"{ratio:.1f}x lightly")


def machine(device: torch.device) -> str:
    """The CPU model and cores (the peer's workers depend on them), and the GPU if any."""
    name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    cpu = f"{name}, {os.cpu_count()} cores"
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} with {cpu}"
    return cpu


def lightly_version() -> str | None:
    try:
        return importlib.metadata.version("lightly")
    except importlib.metadata.PackageNotFoundError:
        return None


def command_line() -> str:
    return shlex.join(["python", *sys.argv])


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def provenance(device: torch.device) -> str:
    lightly = lightly_version() or "not installed"
    return (f"Provenance: `{command_line()}` on {machine(device)}; torch {torch.__version__}, "
            f"lightly {lightly}; {utc_now()}.")


def render(rows: list[Row], args: argparse.Namespace, device: torch.device) -> str:
    compiled = ", backbone compiled" if args.compile else ""
    lines = [f"## SimCLR throughput: sslreg / lightly ({device.type}{compiled})", "",
             *table(rows), ""]
    lines += [
        "Images/s counts source images of 1x28x28, each giving two views; ratio = sslreg / "
        f"lightly. Timed training steps per row: {args.steps}, after {args.warmup} warm-up"
        + (f" (views: {VIEW_BATCHES_PER_STEP * args.steps} batches)" if args.views else "")
        + "; lightly's DataLoader has "
        f"{args.workers} workers; the batches they made ahead during the warm-up are "
        "thrown away before timing.",
        "sslreg: the simclr view policy on the device and the engine's train_step; lightly: "
        "SimCLRTransform (our crop scale, flip and jitter; no blur at 28 px), NTXentLoss and "
        "LARS on the same backbone and projector sizes, with the same precision and memory "
        "format. MFU = (backbone + projector forward FLOPs x 3 x 2 views) x images/s over "
        "the GPU's dense bf16 peak; '-' where the peak is not known (CPU, unknown GPU). "
        "Peak memory is CUDA's max allocated, '-' on the CPU."
        + (" lightly: not run (--no-lightly)." if not args.lightly else "")
        + (" Both sides' backbones compiled (torch.compile), in the untimed warm-up."
           if args.compile else ""),
        "",
        f"Goal (issue 5): {cpu_views_goal(rows, device)}.",
        f"Goal (issue 5): {h100_goal(rows, device)}.",
        "",
        provenance(device),
    ]
    return "\n".join(lines) + "\n"


def to_json(rows: list[Row] | None, args: argparse.Namespace, device: torch.device,
            checked: list[str] | None = None) -> dict[str, Any]:
    """The setting and the rows (none in a dry run), for machines to read."""
    cuda = device.type == "cuda" and torch.cuda.is_available()
    return {
        "dry_run": rows is None,
        "command": command_line(),
        "date": utc_now(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if cuda else None,
        "peak_flops": peak_flops(device) if cuda else None,
        "machine": machine(device if cuda else torch.device("cpu")),
        "torch": torch.__version__,
        "lightly": lightly_version() if args.lightly else None,
        "lightly_run": args.lightly,
        "compile": args.compile,
        "views": args.views,
        "batch_sizes": args.batch_sizes,
        "backbones": args.backbones,
        "steps": args.steps,
        "warmup": args.warmup,
        "workers": args.workers,
        "rows": None if rows is None else [dataclasses.asdict(row) for row in rows],
        "checked": checked or [],
    }


def names(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--batch-sizes", default=None,
                        help="comma-separated; default 256 on the CPU, 256,512 on CUDA")
    parser.add_argument("--backbones", default=None,
                        help="comma-separated sslreg backbones; default resnet18-narrow,resnet18")
    parser.add_argument("--steps", type=int, default=None,
                        help="timed training steps per row; default 2 on the CPU, 50 on CUDA")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed steps first; default 2 on the CPU, 10 on CUDA")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="lightly's DataLoader workers (default: all CPU cores)")
    parser.add_argument("--out", type=Path, default=None,
                        help="Markdown file; default benchmarks/results/throughput-<cpu|gpu>.md")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the backbone on both sides (train.compile=true)")
    parser.add_argument("--no-views", dest="views", action="store_false",
                        help="only the training steps, not the views alone")
    parser.add_argument("--no-lightly", dest="lightly", action="store_false",
                        help="sslreg's rows alone; lightly's cells say 'not run'")
    parser.add_argument("--json", type=Path, default=None,
                        help="also write the setting and the rows to this JSON file")
    parser.add_argument("--dry-run", action="store_true",
                        help="build every config and both sides' models on the CPU at batch "
                        f"{DRY_RUN_BATCH}, one step each; time nothing, write no table")
    return parser.parse_args(argv)


def with_defaults(args: argparse.Namespace, device: torch.device) -> argparse.Namespace:
    defaults = DEFAULTS["cuda" if device.type == "cuda" else "cpu"]
    try:
        args.batch_sizes = [int(b) for b in names(args.batch_sizes or defaults["batch_sizes"])]
    except ValueError:
        raise SystemExit("error: --batch-sizes takes integers separated by commas") from None
    args.backbones = names(args.backbones or defaults["backbones"])
    args.steps = args.steps if args.steps is not None else defaults["steps"]
    args.warmup = args.warmup if args.warmup is not None else defaults["warmup"]
    if args.steps < 1 or args.warmup < 0 or args.workers < 0:
        raise SystemExit("error: --steps must be >= 1, --warmup and --workers >= 0")
    kind = "gpu" if device.type == "cuda" else "cpu"
    args.out = args.out or RESULTS / f"throughput-{kind}.md"
    return args


def requested_device(name: str) -> torch.device:
    """The device named, for a dry run: parsed and checked for its kind, not required."""
    if name == "auto":
        return resolve_device(name)
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SystemExit(f"error: bad --device {name!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise SystemExit(f"error: bad --device {name!r}: use auto, cpu, cuda or cuda:N")
    return device


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    print(f"written to {path}", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.lightly:
        require_lightly()
    try:
        if args.dry_run:
            device = requested_device(args.device)
            args = with_defaults(args, device)
            checked = dry_run(args, device)
        else:
            device = resolve_device(args.device)
            args = with_defaults(args, device)
            rows = measure(args, device)
    except SslregError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    if args.dry_run:
        print("DRY RUN: nothing timed; checked:\n" + "\n".join(f"- {c}" for c in checked))
        if args.json:
            write_json(args.json, to_json(None, args, device, checked))
        return
    if args.json:
        write_json(args.json, to_json(rows, args, device))
    text = render(rows, args, device)
    print(text, end="")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"written to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
