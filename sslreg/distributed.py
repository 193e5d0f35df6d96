"""Several processes under ``torchrun``: one rank per GPU (NCCL) or per CPU process (gloo).

``sslreg pretrain`` runs unchanged under torchrun. Everything here is a no-op with one
process, so single-process runs take exactly the code path and speed they had before.

Conventions (every rank holds ``B / W`` of the global batch ``B``, ``W`` ranks):

* ``train.batch_size`` is the global batch; each rank takes a disjoint slice of it.
* Objectives that need the whole batch (contrastive negatives, batch statistics) gather
  across ranks with :func:`gather_with_grad`. Each rank's loss *value* is the loss of the
  whole global batch, the value one process would compute on all ``B`` images.
* Objectives whose targets are normalised over the batch without gradient (DINO's
  centre, SwAV's Sinkhorn codes) all-reduce the sums they need with
  :func:`all_reduce_sum` / :func:`global_batch_mean`, so each rank's rows get what one
  process would give them.
* Gradients: summed over the ranks' losses, the backward gives each rank's inputs
  ``W`` times their rows of the single-process gradient; DDP then *averages* parameter
  gradients over the ``W`` ranks, so the parameters get exactly the single-process
  gradient, and 2 ranks x B/2 train like 1 rank x B.
"""

from __future__ import annotations

import atexit
import datetime
import os
from collections.abc import Callable
from typing import Any

import attrs
import torch
import torch.distributed as dist
from torch import Tensor, nn

from sslreg.errors import SslregError


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def launched() -> bool:
    """Whether torchrun started this process as one of several (before joining)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@attrs.frozen
class Topology:
    """This process's place among the processes of a run: its rank, how many there are,
    and its device. The engine and the suite runner ask it every distributed question;
    with one process (``Topology()``) every answer is local: no collective, no device
    synchronisation, the single-process path unchanged. Methods' objectives use the
    module's collectives (:func:`gather_with_grad`, :func:`all_reduce_sum`, ...)."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = attrs.field(factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        """Only the main rank writes files, logs and evaluates."""
        return self.rank == 0

    def check_batch_size(self, batch_size: int) -> None:
        """``train.batch_size`` is the global batch: it must split evenly among the ranks."""
        if batch_size % self.world_size:
            raise SslregError(f"train.batch_size={batch_size} does not split among "
                              f"{self.world_size} processes; make it a multiple of "
                              f"{self.world_size}")

    def shard(self, rows: Tensor) -> Tensor:
        """This rank's disjoint slice of a global batch (a view, no copy)."""
        if self.world_size == 1:
            return rows
        per_rank = len(rows) // self.world_size
        return rows[self.rank * per_rank:(self.rank + 1) * per_rank]

    def rank_seed(self, seed: int) -> int:
        """A seed of this rank's own, so ranks draw different augmentations; rank 0 keeps
        the single-process seed."""
        return seed + self.rank * 2**40

    def seed_rank(self, seed: int) -> None:
        """Each rank its own global random stream (MAE's masks, dropout), set once the
        model is built: DDP gives every rank rank 0's weights. One process keeps its
        stream."""
        if self.world_size > 1:
            torch.manual_seed(self.rank_seed(seed) % 2**63)

    def describe(self, device: str) -> str:
        """The device a run used, with the number of processes when there are several."""
        return device if self.world_size == 1 else f"{self.world_size} x {device}"

    def for_training(self, method: nn.Module) -> tuple[nn.Module, Callable[..., Any] | None]:
        """The method with BatchNorm over the global batch, and its ``training_step``
        through DistributedDataParallel (``None`` with one process)."""
        method = _sync_batchnorm(method, self)
        return method, _data_parallel(method, self)

    def max_over_ranks(self, *values: int) -> tuple[int, ...]:
        """Each host-side value's maximum over the ranks, so every rank takes the same
        branch at the same step (a signal or a clock only one rank saw). The values
        themselves with one process: no collective, no device synchronisation. With
        several, one small all-reduce on the CPU (gloo) group, which does not wait for
        the device's queue."""
        if self.world_size == 1:
            return values
        peak = torch.tensor(values, dtype=torch.int64)
        dist.all_reduce(peak, op=dist.ReduceOp.MAX, group=_waiting_group())
        return tuple(peak.tolist())

    def any_rank(self, flag: Tensor) -> Tensor:
        """``flag`` (a bool tensor) true on any rank, so every rank takes the same branch."""
        if self.world_size == 1:
            return flag
        count = flag.to(torch.int32)
        dist.all_reduce(count)
        return count > 0

    def all_objects(self, value: Any) -> list[Any]:
        """Every rank's ``value`` (any picklable object) in rank order, on every rank;
        ``[value]`` with one process."""
        if self.world_size == 1:
            return [value]
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, value, group=_waiting_group())
        return gathered

    def main_value(self, value: Any) -> Any:
        """Rank 0's ``value`` (any picklable object) on every rank, so every rank takes
        the branch rank 0 chose (e.g. whether a run is already finished); ``value``
        itself with one process. Every rank waits here for rank 0, however long it
        takes."""
        if self.world_size == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0, group=_waiting_group())
        return box[0]

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def wait_for_main(self) -> None:
        """Every rank waits for rank 0 (evaluating, writing), however long it takes."""
        if self.world_size > 1:
            dist.barrier(group=_waiting_group())

    def on_main(self, function: Callable[..., Any], *args: Any) -> None:
        """Run ``function`` on the main rank only; if it fails there with an
        SslregError, every rank raises it, so no rank waits for a run that will not
        start."""
        error = None
        if self.is_main:
            try:
                function(*args)
            except SslregError as caught:
                error = caught
        if self.world_size > 1:
            message = [str(error) if error is not None else None]
            dist.broadcast_object_list(message, src=0)
            if error is None and message[0] is not None:
                raise SslregError(message[0])
        if error is not None:
            raise error


def current(device: torch.device | None = None) -> Topology:
    """This process's topology as it stands (one process unless a group was joined)."""
    return Topology(rank(), world_size(), device or torch.device("cpu"))


def join(device: torch.device) -> Topology:
    """Join torchrun's process group when WORLD_SIZE > 1; this process's topology.

    NCCL on CUDA, with the device chosen by LOCAL_RANK; gloo on the CPU. A group that is
    already initialised (by a caller or an earlier run in this process) is kept.
    """
    if not launched() and world_size() == 1:
        return current(device)
    if not dist.is_available():
        raise SslregError("WORLD_SIZE > 1 but this torch build has no torch.distributed; "
                          "run one process, or install a torch with distributed support")
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, device_id=device if device.type == "cuda" else None)
        atexit.register(_shutdown)  # NCCL warns at exit otherwise
    return current(device)


def _shutdown() -> None:
    global _wait_group
    if dist.is_initialized():
        dist.destroy_process_group()
    _wait_group = None


def newest(*names: str) -> Callable[..., Any]:
    """The first of ``names`` this torch's ``torch.distributed`` has: torch 2.14 renamed
    ``all_gather_into_tensor`` and ``reduce_scatter_tensor`` to ``all_gather_single`` and
    ``reduce_scatter_single`` (deprecating the old names), which torch 2.11 lacks."""
    for name in names:
        if hasattr(dist, name):
            return getattr(dist, name)
    raise SslregError(f"this torch's torch.distributed has none of {', '.join(names)}; "
                      "install torch>=2.4")


class _GatherWithGrad(torch.autograd.Function):
    """all_gather along dim 0; the backward sums the gradient of the gathered tensor over
    all ranks (every rank's loss used every rank's rows) and hands each rank its slice.

    torch.distributed.nn.functional.all_gather computes the same gradient, also with gloo
    (checked: 2 gloo ranks give W x the single-process rows), but it is deprecated in
    this torch and returns a list; this is the same thing with the public collectives.
    """

    @staticmethod
    def forward(ctx: Any, tensor: Tensor) -> Tensor:
        tensor = tensor.contiguous()
        gathered = tensor.new_empty((world_size() * tensor.shape[0], *tensor.shape[1:]))
        newest("all_gather_single", "all_gather_into_tensor")(gathered, tensor)
        return gathered

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        grad = grad.contiguous()
        mine = grad.new_empty((grad.shape[0] // world_size(), *grad.shape[1:]))
        # Sum over the ranks, then this rank's rows.
        newest("reduce_scatter_single", "reduce_scatter_tensor")(mine, grad)
        return mine


def gather_with_grad(tensor: Tensor) -> Tensor:
    """Every rank's ``tensor`` concatenated along dim 0 in rank order, with gradients
    flowing back to each rank's own rows. The tensor itself with one process."""
    if world_size() == 1:
        return tensor
    return _GatherWithGrad.apply(tensor)


def gather_pair(z1: Tensor, z2: Tensor) -> tuple[Tensor, Tensor]:
    """Both views of the global batch, gathered in one collective instead of two."""
    if world_size() == 1:
        return z1, z2
    both = gather_with_grad(torch.cat([z1, z2], dim=1))
    return both[:, :z1.shape[1]], both[:, z1.shape[1]:]


def global_mean(loss: Tensor) -> Tensor:
    """A loss averaged over this rank's rows, given the value of the mean over all ranks.

    The gradient stays the local one: summed over ranks, the local means are W times the
    global loss, which DDP's averaging turns into the single-process gradient. The value
    is the global loss, so every rank logs it and stops on a non-finite one together.
    """
    if world_size() == 1:
        return loss
    total = loss.detach().clone()
    dist.all_reduce(total)
    return loss + (total / world_size() - loss).detach()


@torch.no_grad()
def all_reduce_sum(tensor: Tensor) -> Tensor:
    """``tensor`` summed over the ranks, as a new tensor without gradient; ``tensor``
    itself with one process (so one-process arithmetic stays bit for bit the same)."""
    if world_size() == 1:
        return tensor
    total = tensor.detach().clone()
    dist.all_reduce(total)
    return total


@torch.no_grad()
def all_reduce_max(tensor: Tensor) -> Tensor:
    """The elementwise maximum of ``tensor`` over the ranks, without gradient; ``tensor``
    itself with one process."""
    if world_size() == 1:
        return tensor
    peak = tensor.detach().clone()
    dist.all_reduce(peak, op=dist.ReduceOp.MAX)
    return peak


@torch.no_grad()
def global_batch_mean(rows: Tensor) -> Tensor:
    """The mean over the global batch of this rank's ``rows`` (N, ...), shape (1, ...),
    without gradient: what one process computes on all ``W * N`` rows. Every rank holds
    as many rows (the global batch splits evenly), so the sum over the ranks divided by
    ``W * N`` is that mean (DINO's centre, as its reference code computes it)."""
    if world_size() == 1:
        return rows.mean(dim=0, keepdim=True)
    return all_reduce_sum(rows.sum(dim=0, keepdim=True)) / (len(rows) * world_size())


def _sync_batchnorm(method: nn.Module, topology: Topology) -> nn.Module:
    """BatchNorm over the global batch, as one process on all B images would compute it.

    Only on CUDA: torch's SyncBatchNorm refuses CPU tensors, so CPU (gloo) runs keep
    per-rank batch statistics. The parameter and buffer names are unchanged, so
    checkpoints load into a one-process model.
    """
    if topology.world_size == 1 or topology.device.type != "cuda":
        return method
    return nn.SyncBatchNorm.convert_sync_batchnorm(method)


class _Step(nn.Module):
    """DDP syncs gradients only for work done inside its forward, and the engine calls
    ``training_step``, not ``forward``: this thin module's forward is the step."""

    def __init__(self, method: nn.Module) -> None:
        super().__init__()
        self.method = method

    def forward(self, views: list[Tensor], **kwargs: Any) -> tuple[Tensor, Any]:
        output = self.method.training_step(views, **kwargs)
        # The loss first: DDP looks for tensors in the output to find unused parameters,
        # and cannot see inside a StepOutput.
        return output.loss, output


def _data_parallel(method: nn.Module, topology: Topology) -> Callable[..., Any] | None:
    """``training_step`` through DistributedDataParallel, or ``None`` with one process.

    find_unused_parameters: methods leave parameters out of some steps (SwAV and DINO
    freeze their prototypes early on); DDP then keeps those gradients ``None``, as one
    process would, at the cost of one walk over the autograd graph per step (DDP warns
    once when a method uses every parameter). forward_sync_buffers=False: buffers are
    synced once, at construction; SyncBatchNorm then keeps running statistics equal
    across ranks, and rank 0's queue of keys (MoCo) should not overwrite the others'
    every step.
    """
    if topology.world_size == 1:
        return None
    device = topology.device
    ddp = nn.parallel.DistributedDataParallel(
        _Step(method), device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=True, forward_sync_buffers=False)

    def step(views: list[Tensor], **kwargs: Any) -> Any:
        loss, output = ddp(views, **kwargs)
        return attrs.evolve(output, loss=loss)  # the loss as DDP returned it

    return step


# How long the other ranks may wait while rank 0 alone evaluates (``sslreg bench``): a
# linear probe can outlast NCCL's default timeout (10 minutes), which would abort them.
MAIN_WAIT = datetime.timedelta(hours=24)
_wait_group: Any = None


def _waiting_group() -> Any:
    """A gloo group with the long timeout, made at the first wait (every rank reaches it
    at the same point) and kept while the process group lives."""
    global _wait_group
    if _wait_group is None:
        _wait_group = dist.new_group(backend="gloo", timeout=MAIN_WAIT)
    return _wait_group


class NullWriter:
    """Stands in for TensorBoard's SummaryWriter on ranks other than the main one."""

    def __enter__(self) -> NullWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None
