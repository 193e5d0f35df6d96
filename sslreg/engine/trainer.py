"""The pretraining loop: views on the device, one step per batch, EMA/queue hooks,
monitors and logging every N steps, atomic checkpoints (each epoch and every
``train.checkpoint_every``), a clean stop on SIGTERM / SIGINT, and exact resume."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import attrs
import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from sslreg import distributed
from sslreg.config import RunConfig
from sslreg.data import ImageDataset
from sslreg.engine.checkpoint import load_checkpoint, save_checkpoint
from sslreg.engine.curve import CurveProbe, curve_point, curve_probe, due, log_curve_point
from sslreg.engine.device import device_name, resolve_device, use_bf16
from sslreg.engine.interrupt import Cadence, StopRequest, signal_name
from sslreg.engine.mfu import backbone_flops_per_image, mfu, peak_flops
from sslreg.engine.optim import build_optimizer, lr_schedule, set_hyperparameters
from sslreg.engine.parts import RunParts
from sslreg.engine.splits import RunData, load_run_data
from sslreg.errors import (
    CheckpointError,
    DivergedError,
    PluginError,
    RunInterrupted,
    SslregError,
)
from sslreg.interfaces import Method, StepCall
from sslreg.runs import RunDir, write_json
from sslreg.schedules import Timeline
from sslreg.views import normalize

if TYPE_CHECKING:  # for annotations only: no import cycle through sslreg.config
    from sslreg.registry import Registry


@attrs.define
class Trainer:
    """Everything one run needs, built once by :func:`build_trainer`."""

    config: RunConfig
    run: RunDir
    method: Method
    policy: Any
    monitors: list[Any]
    images: torch.Tensor  # uint8 (N, C, H, W) on the device
    # (N,) on the device, None for unlabelled images; ``calls`` decides who sees them
    labels: torch.Tensor | None
    optimizer: torch.optim.Optimizer
    # Every per-step schedule, (epochs * steps_per_epoch,) each: "lr" and the method's.
    timeline: Timeline
    calls: StepCall  # what the method's training_step and on_step_end receive
    # Each parameter group's weight decay as built, which a "weight_decay" schedule scales.
    base_decay: list[float]
    device: torch.device
    bf16: bool
    steps_per_epoch: int
    epoch: int = 0  # epochs completed
    step: int = 0  # steps completed over the whole run
    # Steps completed inside ``epoch`` (not 0 only when resuming a mid-epoch checkpoint),
    # and this rank's view generator state there.
    epoch_step: int = 0
    resumed_views: torch.Tensor | None = None
    # (epoch, step) of the checkpoint on disk, for the divergence message.
    saved: tuple[int, int] | None = None
    elapsed: float = 0.0  # training seconds over all sessions of this run
    images_seen: int = 0
    preview: torch.Tensor | None = None  # normalised validation images for Method.visualize
    # Collapse warnings raised by the monitors in this session, kept in train_info.json.
    monitor_warnings: list[str] = attrs.Factory(list)
    curve: CurveProbe | None = None  # the fixed images of the learning curve, if drawn
    curve_points: list[list[float]] = attrs.Factory(list)  # [epoch, kNN accuracy]
    # Under torchrun: training_step through DistributedDataParallel (sslreg.distributed).
    parallel: Any = None
    # Model FLOPs of one training step per source image (the backbone over every view)
    # and the devices' summed bf16 peak, for MFU; the peak is None on CPUs and unknown GPUs.
    flops_per_image: float = 0.0
    peak_flops: float | None = None
    # What the backbone reads: channels, side and the normalisation of its input, kept in
    # every checkpoint so an exported backbone says how to feed it.
    inputs: dict[str, Any] = attrs.Factory(dict)
    # When a mid-epoch checkpoint is due (train.checkpoint_every), and the stop signal.
    cadence: Cadence = attrs.Factory(lambda: Cadence(0, 0.0))
    stop: StopRequest = attrs.Factory(StopRequest)


# How many fixed validation images Method.visualize receives each epoch.
PREVIEW_IMAGES = 8


def build_timeline(config: RunConfig, method: Method, steps_per_epoch: int) -> Timeline:
    """The learning rate and the method's schedules, for every step of the run."""
    lr = lr_schedule(config.optim, config.train.batch_size, steps_per_epoch,
                     config.train.epochs)
    try:
        return Timeline.build(method.schedules(method.context), len(lr), steps_per_epoch,
                              lr=lr)
    except ValueError as error:
        raise PluginError(f"method '{config.method}': {error}") from None


def load_split(config: RunConfig, registry: Registry, split: str) -> ImageDataset:
    """One split of the run's data: ``train`` (without validation), ``val`` or ``test``."""
    return getattr(load_run_data(config, registry), split)


def build_trainer(parts: RunParts, registry: Registry, run: RunDir) -> Trainer:
    """Put the assembled method on the device and build the monitors, optimizer and
    schedules around it."""
    config = parts.config
    device = distributed.init(resolve_device(config.train.device))  # joins torchrun's group
    distributed.check_batch_size(config.train.batch_size)  # the global batch
    pool = parts.pool
    steps_per_epoch = len(pool) // config.train.batch_size
    if steps_per_epoch == 0:
        raise SslregError(f"train.batch_size={config.train.batch_size} is larger than the "
                          f"{len(pool)} training images; lower it")
    method = distributed.sync_batchnorm(parts.method.to(device), device)
    distributed.seed_rank(config.train.seed)
    if device.type == "cuda":
        method = method.to(memory_format=torch.channels_last)
    if config.train.compile:
        # In place, so checkpoints keep the eager module's state_dict keys; the heads
        # and the method's own step logic stay eager (queues, EMA, Sinkhorn).
        method.backbone.compile()
    optimizer = build_optimizer(method, config.optim, device)
    return Trainer(
        config=config, run=run, method=method, policy=parts.policy,
        monitors=[registry.monitors.create(name) for name in registry.monitors.names()],
        images=pool.images.to(device), device=device,
        labels=None if pool.labels is None else pool.labels.to(device),
        preview=preview_images(method, parts.data, device),
        optimizer=optimizer, timeline=build_timeline(config, method, steps_per_epoch),
        calls=StepCall.of(method),
        base_decay=[group["weight_decay"] for group in optimizer.param_groups],
        bf16=use_bf16(config.train.precision, device), steps_per_epoch=steps_per_epoch,
        curve=curve_probe(config, parts.data) if config.eval.curve_every else None,
        parallel=distributed.data_parallel(method, device),
        flops_per_image=backbone_flops_per_image(method.backbone, parts.policy,
                                                 pool.images[:2].to(device)),
        peak_flops=_peak(device),
        inputs=input_spec(pool.images, parts.data.stats),
        cadence=Cadence.parse(config.train.checkpoint_every),
    )


def input_spec(images: torch.Tensor, stats: tuple[tuple[float, ...], tuple[float, ...]]
               ) -> dict[str, Any]:
    """Channels, side and per-channel mean and std (of pixel values in [0, 1])."""
    return {"channels": int(images.shape[1]), "image_size": int(images.shape[-1]),
            "mean": list(stats[0]), "std": list(stats[1])}


def _peak(device: torch.device) -> float | None:
    peak = peak_flops(device)
    return None if peak is None else peak * distributed.world_size()


def preview_images(method: Method, data: RunData,
                   device: torch.device) -> torch.Tensor | None:
    """The first validation images, normalised, when the method draws pictures of them."""
    if type(method).visualize is Method.visualize:
        return None
    images = data.val.images[:PREVIEW_IMAGES].to(device).float().div_(255)
    return normalize(images, *data.stats)


def restore(trainer: Trainer) -> None:
    """Continue from the run's last checkpoint."""
    state = load_checkpoint(trainer.run.checkpoint, expected_digest=trainer.config.digest(),
                            map_location=trainer.device)
    try:
        trainer.method.load_state_dict(state["model"])
        trainer.optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as error:
        raise SslregError(f"checkpoint {trainer.run.checkpoint} does not fit this model "
                          f"({str(error).splitlines()[0][:160]})") from None
    trainer.timeline = restore_timeline(trainer, state["schedules"])
    trainer.epoch, trainer.step = state["epoch"], state["step"]
    trainer.epoch_step = state.get("epoch_step", 0)  # older checkpoints: epoch ends only
    trainer.elapsed, trainer.images_seen = state["elapsed"], state["images_seen"]
    trainer.saved = (trainer.epoch, trainer.step)
    trainer.resumed_views = restore_random(trainer, state.get("random"))
    if "curve" in state:
        trainer.monitor_warnings = list(state["monitor_warnings"])
        trainer.curve_points = [list(point) for point in state["curve"]]
    elif trainer.run.train_info.exists():  # a checkpoint written before they were kept
        info = trainer.run.read_json(trainer.run.train_info)
        trainer.monitor_warnings = list(info.get("monitor_warnings", []))
        trainer.curve_points = [p for p in info.get("curve", []) if p[0] <= trainer.epoch]


def restore_timeline(trainer: Trainer, saved: dict[str, torch.Tensor]) -> Timeline:
    """The checkpoint's schedules, which the run goes on reading, once they fit it."""
    timeline = trainer.timeline
    problem = timeline.mismatch(saved)
    if problem:
        raise CheckpointError(
            f"checkpoint {trainer.run.checkpoint} does not fit this run: its {problem}; "
            "resume with the data it was written with, or start over with another --out")
    return Timeline(saved, timeline.total_steps, timeline.steps_per_epoch)


def random_states(trainer: Trainer, views_rng: torch.Generator | None) -> list[dict]:
    """Every rank's random streams: the global ones (MAE's masks, MoCo's shuffle, CLIP's
    captions draw from them) and, inside an epoch, the view generator's."""
    mine = {"torch": torch.get_rng_state(),
            "cuda": (torch.cuda.get_rng_state(trainer.device)
                     if trainer.device.type == "cuda" else None),
            "views": None if views_rng is None else views_rng.get_state()}
    return distributed.all_objects(mine)  # rank 0 writes every rank's


def restore_random(trainer: Trainer, states: list[dict] | None) -> torch.Tensor | None:
    """Put this rank's random streams back; returns its view generator state (None at an
    epoch end). Checkpoints from before they were kept, or written by another number of
    processes, leave the streams as built (the run goes on, not bit for bit)."""
    if states is None or len(states) != distributed.world_size():
        if states is not None and trainer.epoch_step:
            say(f"note: the checkpoint was written by {len(states)} processes, resumed by "
                f"{distributed.world_size()}: the rest of epoch {trainer.epoch + 1} draws "
                "other views than an uninterrupted run would")
        return None
    mine = states[distributed.rank()]
    torch.set_rng_state(mine["torch"].cpu())
    if mine["cuda"] is not None and trainer.device.type == "cuda":
        torch.cuda.set_rng_state(mine["cuda"].cpu(), trainer.device)
    return None if mine["views"] is None else mine["views"].cpu()


def say(message: str) -> None:
    """One line on stderr, from rank 0 only."""
    if distributed.is_main():
        tqdm.write(message, file=sys.stderr)


def checkpoint(trainer: Trainer, views_rng: torch.Generator | None = None,
               epoch_step: int = 0) -> None:
    """Everything needed to continue exactly from here: at an epoch end (``epoch_step``
    0), or after ``epoch_step`` steps of epoch ``trainer.epoch`` with the view
    generator's state. Called by every rank (their random streams are gathered); rank 0
    writes."""
    states = random_states(trainer, views_rng)
    trainer.cadence.restart()
    if not distributed.is_main():  # the ranks hold the same weights; rank 0 writes them
        trainer.saved = (trainer.epoch, trainer.step)
        return
    save_checkpoint(trainer.run.checkpoint, {
        "config_digest": trainer.config.digest(),
        "method": trainer.config.method,
        "epoch": trainer.epoch,
        "epoch_step": epoch_step,
        "step": trainer.step,
        "elapsed": trainer.elapsed,
        "images_seen": trainer.images_seen,
        "model": trainer.method.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "schedules": trainer.timeline.tables,
        "random": states,
        "monitor_warnings": list(trainer.monitor_warnings),
        "curve": [list(point) for point in trainer.curve_points],
        "inputs": trainer.inputs,
    })
    trainer.saved = (trainer.epoch, trainer.step)


def fit(trainer: Trainer, writer: SummaryWriter, *, progress: bool = True) -> dict[str, Any]:
    """Train from the checkpointed step to the last epoch, checkpointing after each epoch
    and every ``train.checkpoint_every``. SIGTERM or SIGINT stops after the current step
    with a checkpoint, train.json saying ``interrupted``, and :class:`RunInterrupted`."""
    epochs = trainer.config.train.epochs
    trainer.cadence.restart()
    with trainer.stop.installed():
        for epoch in range(trainer.epoch, epochs):
            bar = tqdm(total=trainer.steps_per_epoch, initial=trainer.epoch_step,
                       desc=f"{trainer.config.method} epoch {epoch + 1}/{epochs}",
                       disable=not progress, leave=False, unit="step")
            with bar:
                run_epoch(trainer, epoch, writer, bar)
            trainer.epoch, trainer.epoch_step = epoch + 1, 0
            log_pictures(trainer, writer)
            log_curve(trainer, writer)
            checkpoint(trainer)
            status = "running" if trainer.epoch < epochs else "trained"
            write_train_info(trainer, status=status)
            stop_if_asked(trainer, status)
    return write_train_info(trainer, status="trained")


def run_epoch(trainer: Trainer, epoch: int, writer: SummaryWriter, bar: tqdm) -> None:
    """The steps of ``epoch`` from ``trainer.epoch_step`` on (0 unless resuming inside
    it); a mid-epoch checkpoint when one is due or a stop was asked for."""
    config = trainer.config.train
    views_rng = _views_generator(trainer, _epoch_seeds(config.seed, epoch)[1])
    non_finite = torch.zeros((), dtype=torch.bool, device=trainer.device)
    started = window_start = time.perf_counter()
    window_images = 0
    trainer.method.train()
    first = trainer.epoch_step
    for index, rows in enumerate(epoch_batches(trainer, epoch, first), start=first):
        mine = distributed.shard(rows)  # this rank's slice of the global batch
        labels = None if trainer.labels is None else trainer.labels[mine]
        output = train_step(trainer, trainer.images[mine], labels, views_rng)
        non_finite |= ~torch.isfinite(output.loss.detach())
        window_images += len(rows)
        trainer.step += 1
        trainer.images_seen += len(rows)
        bar.update()
        last = index == trainer.steps_per_epoch - 1
        if trainer.step % config.log_every == 0 or last:
            _stop_if_non_finite(trainer, non_finite)
            rate = window_images / (time.perf_counter() - window_start)
            log_step(trainer, writer, output, rate, bar)
            window_start, window_images = time.perf_counter(), 0
        if last:  # the epoch-end checkpoint follows at once
            break
        # One process: two attribute reads and a clock, no device synchronisation.
        stop, due = distributed.max_over_ranks(trainer.stop.signal_number,
                                               trainer.cadence.due(trainer.step))
        if stop or due:
            paused = time.perf_counter()
            trainer.elapsed += paused - started
            _stop_if_non_finite(trainer, non_finite)  # never checkpoint a non-finite loss
            checkpoint(trainer, views_rng, epoch_step=index + 1)
            if stop:
                raise interrupted(trainer, stop, "interrupted", epoch_step=index + 1)
            started = time.perf_counter()
            window_start += started - paused  # the write is not training time
    trainer.elapsed += time.perf_counter() - started


def epoch_batches(trainer: Trainer, epoch: int, start: int = 0) -> Iterator[torch.Tensor]:
    """The global batches (row indices on the device) of ``epoch`` from batch ``start``
    on: slices of one permutation seeded by (seed, epoch) alone, so a resumed run sees
    the same batches."""
    size = trainer.config.train.batch_size
    order_seed = _epoch_seeds(trainer.config.train.seed, epoch)[0]
    order = torch.randperm(len(trainer.images), device=trainer.device,
                           generator=_generator(trainer.device, order_seed))
    for index in range(start, trainer.steps_per_epoch):
        yield order[index * size:(index + 1) * size]


def _views_generator(trainer: Trainer, view_seed: int) -> torch.Generator:
    """The epoch's view generator: seeded by (seed, epoch, rank), or where a mid-epoch
    checkpoint left it."""
    views_rng = _generator(trainer.device, distributed.rank_seed(view_seed))
    if trainer.epoch_step and trainer.resumed_views is not None:
        views_rng.set_state(trainer.resumed_views)
    elif trainer.epoch_step:  # the states were not restored: not exact, but varied
        views_rng.manual_seed((distributed.rank_seed(view_seed) + trainer.epoch_step)
                              % 2**63)
    trainer.resumed_views = None
    return views_rng


def stop_if_asked(trainer: Trainer, status: str) -> None:
    """After an epoch's checkpoint: stop here if any rank got a stop signal."""
    (stop,) = distributed.max_over_ranks(trainer.stop.signal_number)
    if stop:  # a run stopped after its last step is trained: train.json keeps saying so
        raise interrupted(trainer, stop, "interrupted" if status == "running" else status,
                          epoch_step=0)


def interrupted(trainer: Trainer, signal_number: int, status: str, *,
                epoch_step: int) -> RunInterrupted:
    """Record the stop in train.json (the index reads it) and say where the run stopped;
    every rank leaves together, after rank 0 has written (torchrun ends the others when
    one rank exits)."""
    write_train_info(trainer, status=status)
    distributed.wait_for_main()
    where = (f"epoch {trainer.epoch + 1}, step {epoch_step} of {trainer.steps_per_epoch}"
             if epoch_step else f"the end of epoch {trainer.epoch}")
    return RunInterrupted(
        f"interrupted by {signal_name(signal_number)} at step {trainer.step} ({where}); "
        f"checkpoint written to {trainer.run.checkpoint}; continue with --resume",
        signal_number)


def train_step(trainer: Trainer, batch: torch.Tensor, labels: torch.Tensor | None,
               views_rng: torch.Generator) -> Any:
    """One optimizer step; no host synchronisation here (logging syncs every N steps)."""
    views = trainer.policy(batch, views_rng)
    if trainer.device.type == "cuda":
        views = [view.contiguous(memory_format=torch.channels_last) for view in views]
    clock = trainer.timeline.clock(trainer.step)
    set_hyperparameters(trainer.optimizer, clock["lr"], trainer.base_decay,
                        clock.values.get("weight_decay"))
    autocast = (torch.autocast(trainer.device.type, dtype=torch.bfloat16) if trainer.bf16
                else contextlib.nullcontext())
    step = trainer.parallel or trainer.method.training_step
    with autocast:
        output = step(views, **trainer.calls.arguments(labels, clock))
    trainer.optimizer.zero_grad(set_to_none=True)
    output.loss.backward()
    trainer.optimizer.step()
    trainer.calls.end(trainer.method, clock)
    return output


def log_pictures(trainer: Trainer, writer: SummaryWriter) -> None:
    if trainer.preview is None:
        return
    trainer.method.eval()
    for tag, pictures in trainer.method.visualize(trainer.preview).items():
        writer.add_images(f"pictures/{tag}", pictures.float().clamp(0, 1).cpu(),
                          trainer.epoch)
    trainer.method.train()


def log_curve(trainer: Trainer, writer: SummaryWriter) -> None:
    """A learning-curve point after the epochs the config asks for (not timed as
    training: it is evaluation)."""
    if not (distributed.is_main() and due(trainer.curve, trainer.epoch,
                                          trainer.config.train.epochs)):
        return  # rank 0 alone draws the curve; every rank holds the same weights
    trainer.method.eval()
    accuracy = curve_point(trainer.curve, trainer.method.features, trainer.device)
    trainer.curve_points.append([trainer.epoch, round(accuracy, 5)])
    log_curve_point(writer, trainer.epoch, accuracy)
    trainer.method.train()


def _stop_if_non_finite(trainer: Trainer, non_finite: torch.Tensor) -> None:
    if bool(distributed.any_rank(non_finite)):  # every rank stops, or none
        write_train_info(trainer, status="diverged")
        kept = ("no checkpoint was written" if trainer.saved is None else
                f"the last good checkpoint (epoch {trainer.saved[0]}, step "
                f"{trainer.saved[1]}) is kept at {trainer.run.checkpoint}")
        raise DivergedError(f"the loss became non-finite before step {trainer.step}; {kept}; "
                            "lower optim.lr or check the method's settings")


def log_step(trainer: Trainer, writer: SummaryWriter, output: Any, rate: float,
             bar: tqdm) -> None:
    if not distributed.is_main():  # rank 0 logs and watches for collapse
        return
    step = trainer.step
    loss = output.loss.item()
    writer.add_scalar("train/loss", loss, step)
    for name in trainer.timeline.tables:  # "train/lr", then the method's own schedules
        tag = "train/lr" if name == "lr" else f"schedule/{name}"
        writer.add_scalar(tag, trainer.timeline.value(name, step - 1), step)
    writer.add_scalar("train/images_per_s", rate, step)
    utilisation = mfu(rate, trainer.flops_per_image, trainer.peak_flops)
    if utilisation is not None:
        writer.add_scalar("train/mfu", utilisation, step)
    for name, value in output.metrics.items():
        writer.add_scalar(f"train/{name}", float(value), step)
    if output.embeddings is not None:
        check_monitors(trainer, writer, output.embeddings, bar)
    bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{rate:.0f}")


def check_monitors(trainer: Trainer, writer: SummaryWriter, embeddings: torch.Tensor,
                   bar: tqdm) -> None:
    for monitor in trainer.monitors:
        metrics = monitor(embeddings.detach())
        for name, value in metrics.items():
            writer.add_scalar(f"monitor/{name}", value, trainer.step)
        warning = monitor.collapsed(metrics)
        if warning:
            trainer.monitor_warnings.append(f"step {trainer.step}: {warning}")
            bar.write(f"warning: step {trainer.step}: {warning}")
            writer.add_text("monitor/warning", warning, trainer.step)


def write_train_info(trainer: Trainer, *, status: str) -> dict[str, Any]:
    images_per_s = trainer.images_seen / trainer.elapsed if trainer.elapsed else None
    utilisation = images_per_s and mfu(images_per_s, trainer.flops_per_image,
                                       trainer.peak_flops)
    info = {
        "status": status,
        "epochs_done": trainer.epoch,
        "epochs": trainer.config.train.epochs,
        "steps": trainer.step,
        "wall_time_s": round(trainer.elapsed, 2),
        "images_per_s": round(images_per_s, 1) if images_per_s else None,
        "model_flops_per_image": round(trainer.flops_per_image),
        "mfu": round(utilisation, 4) if utilisation else None,
        "device": distributed.describe(device_name(trainer.device)),  # "8 x ..." under torchrun
        "peak_memory_mb": _peak_memory_mb(trainer.device),
        "monitor_warnings": trainer.monitor_warnings,
        "curve": trainer.curve_points,
    }
    if distributed.is_main():
        write_json(trainer.run.train_info, info)
    return info


def _peak_memory_mb(device: torch.device) -> float | None:
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return None


def _epoch_seeds(seed: int, epoch: int) -> tuple[int, int]:
    # Seeds depend only on (seed, epoch), so a resumed run sees the same batches and views.
    base = (seed * 1_000_003 + epoch) * 2
    return base, base + 1


def _generator(device: torch.device, seed: int) -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(seed % (2**63))
    return generator

