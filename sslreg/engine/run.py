"""``pretrain``: a whole run, from config to evaluated checkpoint."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import torch
from torch.utils.tensorboard import SummaryWriter

from sslreg import distributed
from sslreg.config import RunConfig
from sslreg.engine.checkpoint import remove_stale_temporaries
from sslreg.engine.evaluate import evaluate_run
from sslreg.engine.parts import RunParts, assemble
from sslreg.engine.trainer import build_trainer, fit, restore
from sslreg.errors import SslregError, WriteError
from sslreg.runs import RunDir, write_json
from sslreg.runs.index import open_index
from sslreg.views import normalize

if TYPE_CHECKING:  # for annotations only: no import cycle through sslreg.config
    from sslreg.registry import Registry


def prepare_run_dir(run: RunDir, config: RunConfig, resume: bool) -> None:
    """Create the run directory; never overwrite an existing run unless resuming it."""
    if run.path.exists() and any(run.path.iterdir()) and not resume:
        raise SslregError(f"run directory {run.path} already exists; pass --resume to continue "
                          "it, or move it away to start over")
    run.path.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(run.path)  # half-written files of a killed process
    run.tensorboard.mkdir(exist_ok=True)
    write_json(run.config, config.to_dict())


def pretrain(config: RunConfig, registry: Registry, out: Path | str, *, resume: bool = False,
             evaluate: bool = True, progress: bool = True,
             parts: RunParts | None = None) -> RunDir:
    """Train (or continue) the run for ``config`` under ``out`` and evaluate it.

    Under ``torchrun`` every rank trains; rank 0 alone writes the run directory,
    TensorBoard, checkpoints and the index, and evaluates, while the other ranks return
    once training is done. ``parts`` (from :func:`~sslreg.engine.parts.assemble` of
    ``config``) is assembled here when not given; evaluation and the projector reuse it.
    """
    run = RunDir.for_config(out, config)
    parts = parts if parts is not None else assemble(config, registry)
    trainer = build_trainer(parts, registry, run)  # fails before writing
    topology = trainer.setup.topology
    topology.on_main(prepare_run_dir, run, config, resume)  # a refusal stops every rank
    main = topology.is_main
    try:
        if resume and run.checkpoint.exists():
            restore(trainer)
        with SummaryWriter(str(run.tensorboard)) if main else distributed.NullWriter() as writer:
            if trainer.progress.epoch < config.train.epochs:
                fit(trainer, writer, progress=progress and main)
            topology.barrier()  # every rank is past its last step
            if evaluate and main:
                # The trained module (sync_batchnorm may have replaced the built one).
                parts = attrs.evolve(parts, method=trainer.setup.method)
                result = evaluate_run(run, registry, parts=parts)
                log_hparams(writer, config, result)
                log_embeddings(writer, parts, topology.device, trainer.progress.epoch)
    except WriteError as error:  # disk full: what was written before is intact
        if main:
            record_stopped(out, run, f"failed: {error}")
        raise WriteError(f"{error}; free space, then continue with --resume") from None
    except BaseException:  # diverged or interrupted: train.json says which
        if main:
            record_stopped(out, run)
        raise
    if main:
        open_index(out).record(run)
    return run


def record_stopped(out: Path | str, run: RunDir, status: str | None = None) -> None:
    """Record a run that stopped early in the index, without hiding why it stopped: the
    index is a cache of the run directories, and a full disk may refuse it too."""
    try:
        open_index(out).record(run, status)
    except (sqlite3.Error, OSError) as error:
        print(f"warning: {run.path.name} is not recorded in the run index ({error}); "
              "`sslreg runs --rebuild` records it from its directory", file=sys.stderr)


# How many test images the TensorBoard projector shows (with their labels and pictures).
PROJECTOR_IMAGES = 1000


@torch.no_grad()
def log_embeddings(writer: SummaryWriter, parts: RunParts, device: torch.device,
                   epoch: int) -> None:
    """The frozen features of the first test images, for TensorBoard's projector, with
    class names as labels and the images as sprites."""
    test, stats = parts.data.test, parts.data.stats
    pictures = test.images[:PROJECTOR_IMAGES].float().div_(255)
    method = parts.method.eval()
    features = torch.cat([
        method.features(normalize(batch.to(device), *stats)).float().cpu()
        for batch in pictures.split(parts.config.eval.batch_size)])
    labels = test.labels[:PROJECTOR_IMAGES].tolist()
    names = [test.classes[y] if y < len(test.classes) else str(y) for y in labels]
    writer.add_embedding(features, metadata=names, label_img=pictures,
                         global_step=epoch, tag="test_features")


def log_hparams(writer: SummaryWriter, config: RunConfig, result: dict[str, Any]) -> None:
    """The resolved config beside the final metrics, for TensorBoard's HParams view:
    ``hparam/val_*`` (compare settings on these) and ``hparam/*`` (test, for tables)."""
    metrics = {f"hparam/{k}": v for k, v in result["metrics"].items()}
    metrics.update({f"hparam/val_{k}": v for k, v in result.get("val_metrics", {}).items()})
    writer.add_hparams(flat_hparams(config), metrics, run_name=".")


def flat_hparams(config: RunConfig) -> dict[str, Any]:
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else key, item)
        elif isinstance(value, (bool, int, float, str)):
            flat[prefix] = value
        elif value is not None:
            flat[prefix] = str(value)

    data = config.to_dict()
    walk("method", data.pop("method_config"))  # keys as --set spells them
    walk("", data)
    return flat
