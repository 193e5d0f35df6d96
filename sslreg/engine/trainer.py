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
from sslreg.distributed import Topology
from sslreg.engine.checkpoint import load_checkpoint, save_checkpoint
from sslreg.engine.curve import CurveProbe, curve_point, curve_probe, due, log_curve_point
from sslreg.engine.device import device_name, resolve_device, use_bf16
from sslreg.engine.interrupt import Cadence, StopRequest, signal_name
from sslreg.engine.mfu import backbone_flops_per_image, mfu, peak_flops
from sslreg.engine.optim import build_optimizer, lr_schedule, set_hyperparameters
from sslreg.engine.parts import RunParts
from sslreg.engine.progress import Progress
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


@attrs.frozen
class Setup:
    """What a run trains with, fixed once built by :func:`build_trainer` (a resume
    swaps in the checkpoint's schedules, which the run goes on reading)."""

    config: RunConfig
    run: RunDir
    method: Method
    policy: Any
    optimizer: torch.optim.Optimizer
    # Every per-step schedule, (epochs * steps_per_epoch,) each: "lr" and the method's.
    timeline: Timeline
    calls: StepCall  # what the method's training_step and on_step_end receive
    # Each parameter group's weight decay as built, which a "weight_decay" schedule scales.
    base_decay: list[float]
    topology: Topology  # this process among the run's processes, and its device
    bf16: bool
    steps_per_epoch: int
    images: torch.Tensor  # uint8 (N, C, H, W) on the device
    # (N,) on the device, None for unlabelled images; ``calls`` decides who sees them
    labels: torch.Tensor | None
    # What the backbone reads: channels, side and the normalisation of its input, kept in
    # every checkpoint so an exported backbone says how to feed it.
    inputs: dict[str, Any]
    # Under torchrun: training_step through DistributedDataParallel (sslreg.distributed).
    parallel: Any = None

    @property
    def device(self) -> torch.device:
        return self.topology.device


@attrs.frozen
class Logbook:
    """The logging side: what TensorBoard and train.json are told besides the loss."""

    monitors: list[Any]
    preview: torch.Tensor | None = None  # normalised validation images for Method.visualize
    curve: CurveProbe | None = None  # the fixed images of the learning curve, if drawn
    # Model FLOPs of one training step per source image (the backbone over every view)
    # and the devices' summed bf16 peak, for MFU; the peak is None on CPUs and unknown GPUs.
    flops_per_image: float = 0.0
    peak_flops: float | None = None


@attrs.define
class Trainer:
    """One run's training: its fixed setup, its progress (the record checkpoints save),
    its logbook, and this session's control (checkpoint cadence, stop signal)."""

    setup: Setup
    logbook: Logbook
    progress: Progress = attrs.Factory(Progress)
    # When a mid-epoch checkpoint is due (train.checkpoint_every), and the stop signal.
    cadence: Cadence = attrs.Factory(lambda: Cadence(0, 0.0))
    stop: StopRequest = attrs.Factory(StopRequest)
    # (epoch, step) of the checkpoint on disk, for the divergence message.
    saved: tuple[int, int] | None = None
    # This rank's view generator state inside the epoch a checkpoint stopped in.
    resumed_views: torch.Tensor | None = None


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
    topology = distributed.join(resolve_device(config.train.device))  # torchrun's group
    topology.check_batch_size(config.train.batch_size)  # the global batch
    pool = parts.pool
    steps_per_epoch = len(pool) // config.train.batch_size
    if steps_per_epoch == 0:
        raise SslregError(f"train.batch_size={config.train.batch_size} is larger than the "
                          f"{len(pool)} training images; lower it")
    method, parallel = topology.for_training(on_device(parts.method, config, topology.device))
    topology.seed_rank(config.train.seed)
    optimizer = build_optimizer(method, config.optim, topology.device)
    setup = Setup(
        config=config, run=run, method=method, policy=parts.policy, optimizer=optimizer,
        timeline=build_timeline(config, method, steps_per_epoch), calls=StepCall.of(method),
        base_decay=[group["weight_decay"] for group in optimizer.param_groups],
        topology=topology, bf16=use_bf16(config.train.precision, topology.device),
        steps_per_epoch=steps_per_epoch, images=pool.images.to(topology.device),
        labels=None if pool.labels is None else pool.labels.to(topology.device),
        inputs=input_spec(pool.images, parts.data.stats), parallel=parallel)
    return Trainer(setup=setup, logbook=build_logbook(setup, parts, registry),
                   cadence=Cadence.parse(config.train.checkpoint_every))


def on_device(method: Method, config: RunConfig, device: torch.device) -> Method:
    method = method.to(device)
    if device.type == "cuda":
        method = method.to(memory_format=torch.channels_last)
    if config.train.compile:
        # In place, so checkpoints keep the eager module's state_dict keys; the heads
        # and the method's own step logic stay eager (queues, EMA, Sinkhorn).
        method.backbone.compile()
    return method


def build_logbook(setup: Setup, parts: RunParts, registry: Registry) -> Logbook:
    config, device = setup.config, setup.device
    peak = peak_flops(device)
    return Logbook(
        monitors=[registry.monitors.create(name) for name in registry.monitors.names()],
        preview=preview_images(setup.method, parts.data, device),
        curve=curve_probe(config, parts.data) if config.eval.curve_every else None,
        flops_per_image=backbone_flops_per_image(setup.method.backbone, setup.policy,
                                                 setup.images[:2]),
        peak_flops=None if peak is None else peak * setup.topology.world_size)


def input_spec(images: torch.Tensor, stats: tuple[tuple[float, ...], tuple[float, ...]]
               ) -> dict[str, Any]:
    """Channels, side and per-channel mean and std (of pixel values in [0, 1])."""
    return {"channels": int(images.shape[1]), "image_size": int(images.shape[-1]),
            "mean": list(stats[0]), "std": list(stats[1])}


def preview_images(method: Method, data: RunData,
                   device: torch.device) -> torch.Tensor | None:
    """The first validation images, normalised, when the method draws pictures of them."""
    if type(method).visualize is Method.visualize:
        return None
    images = data.val.images[:PREVIEW_IMAGES].to(device).float().div_(255)
    return normalize(images, *data.stats)


def restore(trainer: Trainer) -> None:
    """Continue from the run's last checkpoint."""
    setup = trainer.setup
    state = load_checkpoint(setup.run.checkpoint, expected_digest=setup.config.digest(),
                            map_location=setup.device)
    try:
        setup.method.load_state_dict(state["model"])
        setup.optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as error:
        raise SslregError(f"checkpoint {setup.run.checkpoint} does not fit this model "
                          f"({str(error).splitlines()[0][:160]})") from None
    trainer.setup = attrs.evolve(setup, timeline=restore_timeline(setup, state["schedules"]))
    trainer.progress = Progress.from_state(state)
    trainer.saved = (trainer.progress.epoch, trainer.progress.step)
    trainer.resumed_views = restore_random(trainer, state["random"])


def restore_timeline(setup: Setup, saved: dict[str, torch.Tensor]) -> Timeline:
    """The checkpoint's schedules, which the run goes on reading, once they fit it."""
    timeline = setup.timeline
    problem = timeline.mismatch(saved)
    if problem:
        raise CheckpointError(
            f"checkpoint {setup.run.checkpoint} does not fit this run: its {problem}; "
            "resume with the data it was written with, or start over with another --out")
    return Timeline(saved, timeline.total_steps, timeline.steps_per_epoch)


def random_states(setup: Setup, views_rng: torch.Generator | None) -> list[dict]:
    """Every rank's random streams: the global ones (MAE's masks, MoCo's shuffle, CLIP's
    captions draw from them) and, inside an epoch, the view generator's."""
    device = setup.device
    mine = {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "views": None if views_rng is None else views_rng.get_state()}
    return setup.topology.all_objects(mine)  # rank 0 writes every rank's


def restore_random(trainer: Trainer, states: list[dict]) -> torch.Tensor | None:
    """Put this rank's random streams back; returns its view generator state (None at an
    epoch end). A checkpoint written by another number of processes leaves the streams
    as built (the run goes on, not bit for bit)."""
    topology, progress = trainer.setup.topology, trainer.progress
    if len(states) != topology.world_size:
        if progress.epoch_step:
            say(topology, f"note: the checkpoint was written by {len(states)} processes, "
                f"resumed by {topology.world_size}: the rest of epoch {progress.epoch + 1} "
                "draws other views than an uninterrupted run would")
        return None
    mine = states[topology.rank]
    torch.set_rng_state(mine["torch"].cpu())
    if mine["cuda"] is not None and topology.device.type == "cuda":
        torch.cuda.set_rng_state(mine["cuda"].cpu(), topology.device)
    return None if mine["views"] is None else mine["views"].cpu()


def say(topology: Topology, message: str) -> None:
    """One line on stderr, from rank 0 only."""
    if topology.is_main:
        tqdm.write(message, file=sys.stderr)


def checkpoint(trainer: Trainer, views_rng: torch.Generator | None = None) -> None:
    """Everything needed to continue exactly from here: the progress record, and inside
    an epoch (``progress.epoch_step`` > 0) the view generator's state too. Called by
    every rank (their random streams are gathered); rank 0 writes."""
    setup, progress = trainer.setup, trainer.progress
    states = random_states(setup, views_rng)
    trainer.cadence.restart()
    if setup.topology.is_main:  # the ranks hold the same weights; rank 0 writes them
        save_checkpoint(setup.run.checkpoint, {
            "config_digest": setup.config.digest(),
            "method": setup.config.method,
            **progress.state(),
            "model": setup.method.state_dict(),
            "optimizer": setup.optimizer.state_dict(),
            "schedules": setup.timeline.tables,
            "random": states,
            "inputs": setup.inputs,
        })
    trainer.saved = (progress.epoch, progress.step)


def fit(trainer: Trainer, writer: SummaryWriter, *, progress: bool = True) -> dict[str, Any]:
    """Train from the checkpointed step to the last epoch, checkpointing after each epoch
    and every ``train.checkpoint_every``. SIGTERM or SIGINT stops after the current step
    with a checkpoint, train.json saying ``interrupted``, and :class:`RunInterrupted`."""
    record, epochs = trainer.progress, trainer.setup.config.train.epochs
    trainer.cadence.restart()
    with trainer.stop.installed():
        for epoch in range(record.epoch, epochs):
            bar = tqdm(total=trainer.setup.steps_per_epoch, initial=record.epoch_step,
                       desc=f"{trainer.setup.config.method} epoch {epoch + 1}/{epochs}",
                       disable=not progress, leave=False, unit="step")
            with bar:
                run_epoch(trainer, epoch, writer, bar)
            record.epoch, record.epoch_step = epoch + 1, 0
            log_pictures(trainer, writer)
            log_curve(trainer, writer)
            checkpoint(trainer)
            status = "running" if record.epoch < epochs else "trained"
            write_train_info(trainer, status=status)
            stop_if_asked(trainer, status)
    return write_train_info(trainer, status="trained")


def run_epoch(trainer: Trainer, epoch: int, writer: SummaryWriter, bar: tqdm) -> None:
    """The steps of ``epoch`` from ``progress.epoch_step`` on (0 unless resuming inside
    it); a mid-epoch checkpoint when one is due or a stop was asked for."""
    setup, record = trainer.setup, trainer.progress
    views_rng = _views_generator(trainer, _epoch_seeds(setup.config.train.seed, epoch)[1])
    non_finite = torch.zeros((), dtype=torch.bool, device=setup.device)
    started = window_start = time.perf_counter()
    window_images = 0
    setup.method.train()
    for index, rows in enumerate(epoch_batches(setup, epoch, record.epoch_step),
                                 start=record.epoch_step):
        mine = setup.topology.shard(rows)  # this rank's slice of the global batch
        labels = None if setup.labels is None else setup.labels[mine]
        output = train_step(trainer, setup.images[mine], labels, views_rng)
        non_finite |= ~torch.isfinite(output.loss.detach())
        window_images += len(rows)
        record.step, record.epoch_step = record.step + 1, index + 1
        record.images_seen += len(rows)
        bar.update()
        last = index == setup.steps_per_epoch - 1
        if record.step % setup.config.train.log_every == 0 or last:
            _stop_if_non_finite(trainer, non_finite)
            rate = window_images / (time.perf_counter() - window_start)
            log_step(trainer, writer, output, rate, bar)
            window_start, window_images = time.perf_counter(), 0
        if last:  # the epoch-end checkpoint follows at once
            break
        # One process: two attribute reads and a clock, no device synchronisation.
        stop, due = setup.topology.max_over_ranks(trainer.stop.signal_number,
                                                  trainer.cadence.due(record.step))
        if stop or due:
            paused = time.perf_counter()
            record.elapsed += paused - started
            _stop_if_non_finite(trainer, non_finite)  # never checkpoint a non-finite loss
            checkpoint(trainer, views_rng)
            if stop:
                raise interrupted(trainer, stop, "interrupted")
            started = time.perf_counter()
            window_start += started - paused  # the write is not training time
    record.elapsed += time.perf_counter() - started


def epoch_batches(setup: Setup, epoch: int, start: int = 0) -> Iterator[torch.Tensor]:
    """The global batches (row indices on the device) of ``epoch`` from batch ``start``
    on: slices of one permutation seeded by (seed, epoch) alone, so a resumed run sees
    the same batches."""
    size = setup.config.train.batch_size
    order_seed = _epoch_seeds(setup.config.train.seed, epoch)[0]
    order = torch.randperm(len(setup.images), device=setup.device,
                           generator=_generator(setup.device, order_seed))
    for index in range(start, setup.steps_per_epoch):
        yield order[index * size:(index + 1) * size]


def _views_generator(trainer: Trainer, view_seed: int) -> torch.Generator:
    """The epoch's view generator: seeded by (seed, epoch, rank), or where a mid-epoch
    checkpoint left it."""
    topology, epoch_step = trainer.setup.topology, trainer.progress.epoch_step
    views_rng = _generator(topology.device, topology.rank_seed(view_seed))
    if epoch_step and trainer.resumed_views is not None:
        views_rng.set_state(trainer.resumed_views)
    elif epoch_step:  # the states were not restored: not exact, but varied
        views_rng.manual_seed((topology.rank_seed(view_seed) + epoch_step) % 2**63)
    trainer.resumed_views = None
    return views_rng


def stop_if_asked(trainer: Trainer, status: str) -> None:
    """After an epoch's checkpoint: stop here if any rank got a stop signal."""
    (stop,) = trainer.setup.topology.max_over_ranks(trainer.stop.signal_number)
    if stop:  # a run stopped after its last step is trained: train.json keeps saying so
        raise interrupted(trainer, stop, "interrupted" if status == "running" else status)


def interrupted(trainer: Trainer, signal_number: int, status: str) -> RunInterrupted:
    """Record the stop in train.json (the index reads it) and say where the run stopped;
    every rank leaves together, after rank 0 has written (torchrun ends the others when
    one rank exits)."""
    setup, record = trainer.setup, trainer.progress
    write_train_info(trainer, status=status)
    setup.topology.wait_for_main()
    where = (f"epoch {record.epoch + 1}, step {record.epoch_step} of {setup.steps_per_epoch}"
             if record.epoch_step else f"the end of epoch {record.epoch}")
    return RunInterrupted(
        f"interrupted by {signal_name(signal_number)} at step {record.step} ({where}); "
        f"checkpoint written to {setup.run.checkpoint}; continue with --resume",
        signal_number)


def train_step(trainer: Trainer, batch: torch.Tensor, labels: torch.Tensor | None,
               views_rng: torch.Generator) -> Any:
    """One optimizer step at ``progress.step``; no host synchronisation here (logging
    syncs every N steps)."""
    setup = trainer.setup
    views = setup.policy(batch, views_rng)
    if setup.device.type == "cuda":
        views = [view.contiguous(memory_format=torch.channels_last) for view in views]
    clock = setup.timeline.clock(trainer.progress.step)
    set_hyperparameters(setup.optimizer, clock["lr"], setup.base_decay,
                        clock.values.get("weight_decay"))
    autocast = (torch.autocast(setup.device.type, dtype=torch.bfloat16) if setup.bf16
                else contextlib.nullcontext())
    step = setup.parallel or setup.method.training_step
    with autocast:
        output = step(views, **setup.calls.arguments(labels, clock))
    setup.optimizer.zero_grad(set_to_none=True)
    output.loss.backward()
    setup.optimizer.step()
    setup.calls.end(setup.method, clock)
    return output


def log_pictures(trainer: Trainer, writer: SummaryWriter) -> None:
    method, preview = trainer.setup.method, trainer.logbook.preview
    if preview is None:
        return
    method.eval()
    for tag, pictures in method.visualize(preview).items():
        writer.add_images(f"pictures/{tag}", pictures.float().clamp(0, 1).cpu(),
                          trainer.progress.epoch)
    method.train()


def log_curve(trainer: Trainer, writer: SummaryWriter) -> None:
    """A learning-curve point after the epochs the config asks for (not timed as
    training: it is evaluation)."""
    setup, record, probe = trainer.setup, trainer.progress, trainer.logbook.curve
    if not (setup.topology.is_main and due(probe, record.epoch, setup.config.train.epochs)):
        return  # rank 0 alone draws the curve; every rank holds the same weights
    setup.method.eval()
    accuracy = curve_point(probe, setup.method.features, setup.device)
    record.curve.append([record.epoch, round(accuracy, 5)])
    log_curve_point(writer, record.epoch, accuracy)
    setup.method.train()


def _stop_if_non_finite(trainer: Trainer, non_finite: torch.Tensor) -> None:
    if bool(trainer.setup.topology.any_rank(non_finite)):  # every rank stops, or none
        write_train_info(trainer, status="diverged")
        kept = ("no checkpoint was written" if trainer.saved is None else
                f"the last good checkpoint (epoch {trainer.saved[0]}, step "
                f"{trainer.saved[1]}) is kept at {trainer.setup.run.checkpoint}")
        raise DivergedError(f"the loss became non-finite before step {trainer.progress.step}; "
                            f"{kept}; lower optim.lr or check the method's settings")


def log_step(trainer: Trainer, writer: SummaryWriter, output: Any, rate: float,
             bar: tqdm) -> None:
    setup, logbook = trainer.setup, trainer.logbook
    if not setup.topology.is_main:  # rank 0 logs and watches for collapse
        return
    step = trainer.progress.step
    loss = output.loss.item()
    writer.add_scalar("train/loss", loss, step)
    for name in setup.timeline.tables:  # "train/lr", then the method's own schedules
        tag = "train/lr" if name == "lr" else f"schedule/{name}"
        writer.add_scalar(tag, setup.timeline.value(name, step - 1), step)
    writer.add_scalar("train/images_per_s", rate, step)
    utilisation = mfu(rate, logbook.flops_per_image, logbook.peak_flops)
    if utilisation is not None:
        writer.add_scalar("train/mfu", utilisation, step)
    for name, value in output.metrics.items():
        writer.add_scalar(f"train/{name}", float(value), step)
    if output.embeddings is not None:
        check_monitors(trainer, writer, output.embeddings, bar)
    bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{rate:.0f}")


def check_monitors(trainer: Trainer, writer: SummaryWriter, embeddings: torch.Tensor,
                   bar: tqdm) -> None:
    step, warnings = trainer.progress.step, trainer.progress.monitor_warnings
    for monitor in trainer.logbook.monitors:
        metrics = monitor(embeddings.detach())
        for name, value in metrics.items():
            writer.add_scalar(f"monitor/{name}", value, step)
        warning = monitor.collapsed(metrics)
        if warning:
            warnings.append(f"step {step}: {warning}")
            bar.write(f"warning: step {step}: {warning}")
            writer.add_text("monitor/warning", warning, step)


def write_train_info(trainer: Trainer, *, status: str) -> dict[str, Any]:
    """train.json: the progress record, with the device and cost of the run."""
    setup, logbook, record = trainer.setup, trainer.logbook, trainer.progress
    rate = record.images_per_s
    utilisation = rate and mfu(rate, logbook.flops_per_image, logbook.peak_flops)
    info = {
        "status": status,
        **record.info(setup.config.train.epochs),
        "model_flops_per_image": round(logbook.flops_per_image),
        "mfu": round(utilisation, 4) if utilisation else None,
        # "8 x ..." under torchrun
        "device": setup.topology.describe(device_name(setup.device)),
        "peak_memory_mb": _peak_memory_mb(setup.device),
    }
    if setup.topology.is_main:
        write_json(setup.run.train_info, info)
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
