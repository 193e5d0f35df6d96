"""Counting the host synchronisations of a piece of torch code, on the CPU or on CUDA.

A CUDA program runs ahead of its kernels until it needs a value from the device: an
``.item()``, a ``bool()`` of a tensor, an output whose size depends on the data
(``nonzero``, boolean-mask indexing), a copy to the CPU. Then the host waits for the
device to catch up, and a training step that does this every step leaves the GPU idle
between kernels. Two counters::

    from sslreg.syncs import count_host_syncs, cuda_sync_warnings

    with count_host_syncs() as syncs:
        loss = model(x).sum()
        loss.backward()
    syncs.count      # 0: no aten op that synchronises
    syncs.breakdown  # Counter({"aten._local_scalar_dense": 2, ...}) when some do

- :func:`count_host_syncs` (any device, the CPU too) watches every aten op through a
  ``TorchDispatchMode`` and counts those that make the host wait on CUDA
  (:data:`SYNC_OPS`, and :data:`CONDITIONAL_SYNC_OPS` for the arguments that do); it
  sees the ops of autograd's backward pass too. On the CPU it stands in for a GPU: it
  counts what *would* synchronise if the tensors were on one. It cannot see what never
  reaches the dispatcher: ``.tolist()`` and ``.numpy()`` of CPU tensors, ``.cpu()`` or
  ``.to(device)`` of a tensor already there (so on the CPU it misses the copies that
  would cross to a GPU), ``torch.cuda.synchronize()``; nor ops outside its lists (some
  ``linalg`` error checks, for one).
- :func:`cuda_sync_warnings` (CUDA only) is CUDA's own account: it sets
  ``torch.cuda.set_sync_debug_mode("warn")`` and counts the warnings that synchronising
  CUDA calls raise, by the Python line that made them (the warning names no op). torch
  calls the mode a prototype that does not detect every synchronisation: on an H200 with
  torch 2.11 it said nothing of ``torch.unique(x, dim=0)``, which must read its output's
  size. A synchronisation either counter reports is real; the dispatch counter says
  which op it was.

``benchmarks/host_syncs.py`` and ``tests/test_host_syncs.py`` use both on the engine's
training step (``sslreg.engine.trainer.train_step``), which makes no host
synchronisation (logging synchronises every ``train.log_every`` steps, outside it).
"""

from __future__ import annotations

import collections
import contextlib
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

import attrs
import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten

# The aten ops that make the host wait for a CUDA device, whatever their arguments. An op
# whose kernel runs below the dispatch mode hides the ops it calls, so none is counted twice.
SYNC_OPS = {
    # The value of a one-element tensor on the host: .item(), bool(), int(), float(),
    # `if tensor:`.
    aten._local_scalar_dense,
    # Composite in the torch versions checked, 2.11 and 2.14 (the mode sees the
    # _local_scalar_dense they call): listed in case a torch gives them kernels.
    aten.item,
    aten.is_nonzero,
    # Outputs whose size depends on the values: the host reads the size before allocating.
    # (nonzero_static has a fixed size and is left out on purpose.)
    aten.nonzero,
    aten.masked_select,
    aten._unique,
    aten._unique2,
    aten.unique_dim,
    aten.unique_consecutive,
    aten.unique_dim_consecutive,
    aten.bincount,  # as long as the largest value
    # One answer on the host: the device compares, the host gets the bool.
    aten.equal,
}


def _unsized(args: tuple, kwargs: dict) -> bool:
    # repeat_interleave.Tensor sums the repeats on the host to size its output.
    return kwargs.get("output_size") is None


def _unranged(args: tuple, kwargs: dict) -> bool:
    # histc(self, bins=100, min=0, max=0) reads the data's range when min == max.
    low = args[2] if len(args) > 2 else kwargs.get("min", 0)
    high = args[3] if len(args) > 3 else kwargs.get("max", 0)
    return low == high


def _filled_from_host(args: tuple, kwargs: dict) -> bool:
    # torch.tensor(data, device=...) copies the host data to the device out of the mode's
    # sight, then lifts the result: a lifted tensor off the CPU was so copied.
    return args[0].device.type != "cpu"


def _mask_indexing(args: tuple, kwargs: dict) -> bool:
    """Indexing with a boolean (or uint8) mask reads the mask's nonzero count on the host:
    x[mask] is aten.index, x[mask] = v aten.index_put_. Integer indices do not, nor does
    x[mask] = <one-element CPU value>, which torch runs as masked_fill_ (one mask on the
    tensor's device, no accumulation)."""
    indices = [index for index in args[1] if index is not None]
    if not any(index.dtype in (torch.bool, torch.uint8) for index in indices):
        return False
    if len(args) < 3:  # aten.index(self, indices)
        return True
    value = args[2]
    accumulate = args[3] if len(args) > 3 else kwargs.get("accumulate", False)
    return not (not accumulate and len(indices) == 1 and indices[0].device == args[0].device
                and value.numel() == 1 and value.device.type == "cpu")


def _blocking_copy(args: tuple, kwargs: dict) -> bool:
    """A copy between the CPU and a device waits for the device (CUDA copies pageable
    memory, then synchronises the stream, either way), unless non_blocking."""
    if len(args) > 1 and isinstance(args[1], torch.Tensor):  # copy_(self, src, non_blocking)
        source, target = args[1].device, args[0].device
        non_blocking = args[2] if len(args) > 2 else kwargs.get("non_blocking", False)
    else:  # _to_copy(self, *, device=None, non_blocking=False, ...)
        source, target = args[0].device, kwargs.get("device") or args[0].device
        non_blocking = kwargs.get("non_blocking", False)
    kinds = {source.type, torch.device(target).type}
    return "cpu" in kinds and len(kinds) == 2 and not non_blocking


# The ops that make the host wait for some arguments only: op -> whether this call does.
CONDITIONAL_SYNC_OPS = {
    aten.repeat_interleave: _unsized,  # only the Tensor overload reaches the mode
    aten.histc: _unranged,
    aten.lift_fresh: _filled_from_host,
    aten.index: _mask_indexing,
    aten.index_put: _mask_indexing,
    aten.index_put_: _mask_indexing,
    aten._index_put_impl_: _mask_indexing,
    aten._to_copy: _blocking_copy,
    aten.copy_: _blocking_copy,
}


@attrs.define
class HostSyncs:
    """Host synchronisations seen: ``breakdown`` maps what made them to how many; the key
    is the aten op for :func:`count_host_syncs` and the Python ``file:line`` for
    :func:`cuda_sync_warnings` (CUDA's warning names no op)."""

    breakdown: collections.Counter[str] = attrs.Factory(collections.Counter)

    @property
    def count(self) -> int:
        return sum(self.breakdown.values())

    def describe(self) -> str:
        """``"aten.nonzero x2, aten._local_scalar_dense x1"``, or ``"none"``."""
        return ", ".join(f"{key} x{n}" for key, n in self.breakdown.most_common()) or "none"


def sync_op(func: Any, args: tuple, kwargs: dict) -> str | None:
    """The name of ``func`` when this call of it synchronises on CUDA, else None."""
    packet = func.overloadpacket
    condition = CONDITIONAL_SYNC_OPS.get(packet)
    if packet in SYNC_OPS or (condition is not None and condition(args, kwargs)):
        return f"aten.{packet.__name__}"
    return None


class _Counter(TorchDispatchMode):
    def __init__(self, record: HostSyncs, device: str | None,
                 host_tensors: Iterable[torch.Tensor]) -> None:
        super().__init__()
        self.record, self.device = record, device
        # Keyed by identity (the mode is handed the very tensor objects); the values keep
        # them alive, so that no other tensor takes an id of theirs.
        self.host = {id(tensor): tensor for tensor in host_tensors}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = sync_op(func, args, kwargs)
        if name is not None and self._counts(args, kwargs):
            self.record.breakdown[name] += 1
        return func(*args, **kwargs)

    def _counts(self, args: tuple, kwargs: dict) -> bool:
        tensors = [arg for arg in args if isinstance(arg, torch.Tensor)]
        if tensors and all(id(tensor) in self.host for tensor in tensors):
            return False
        devices = [tensor.device.type for tensor in tensors]
        if kwargs.get("device") is not None:  # a copy's target counts too (_to_copy)
            devices.append(torch.device(kwargs["device"]).type)
        return self.device is None or self.device in devices


@contextlib.contextmanager
def count_host_syncs(device: str | None = None,
                     host_tensors: Iterable[torch.Tensor] = ()) -> Iterator[HostSyncs]:
    """Count the calls inside the block, backward passes included, of the aten ops that
    make the host wait on CUDA: :data:`SYNC_OPS`, and :data:`CONDITIONAL_SYNC_OPS` with
    arguments that do (mask indexing, blocking copies between the CPU and a device, ...).
    The record fills as the block runs.

    ``device`` (e.g. ``"cuda"``): count only calls on tensors of that device type (an
    ``.item()`` of a CPU tensor makes no GPU wait); None (the default, what a CPU run
    wants): every call, as if every tensor were on a GPU. ``host_tensors``: tensors that
    stay on the host in a GPU run too, whose reads are no synchronisation (e.g. the step
    counts of a non-fused torch optimizer, see :func:`optimizer_host_tensors`).
    """
    record = HostSyncs()
    with _Counter(record, device, host_tensors):
        yield record


def optimizer_host_tensors(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """The step counts a torch optimizer keeps as CPU scalars and reads with ``.item()``
    each step (Adam and AdamW unless fused or capturable): on a GPU they stay on the CPU,
    so those reads never wait for the device. Empty before the optimizer's first step."""
    return [value for state in optimizer.state.values() for key, value in state.items()
            if key == "step" and isinstance(value, torch.Tensor) and value.device.type == "cpu"
            and value.ndim == 0]


# What CUDA's sync debug mode warns with (c10/cuda/CUDAFunctions.cpp), and what setting
# the mode warns every time (the docstring above says it).
SYNC_WARNING = "called a synchronizing CUDA operation"
PROTOTYPE_WARNING = "Synchronization debug mode is a prototype feature"


@contextlib.contextmanager
def cuda_sync_warnings() -> Iterator[HostSyncs]:
    """Count the synchronising CUDA calls inside the block, by CUDA's sync debug mode
    (``"warn"``), keyed by the Python line that made each; the record is filled when the
    block ends. The mode in force before is put back, and other warnings raised in the
    block are raised again after it. Not every synchronisation warns (see the module's
    docstring).

    Raises:
        RuntimeError: CUDA is not available.
    """
    if not torch.cuda.is_available():
        raise RuntimeError("cuda_sync_warnings needs a CUDA device; on the CPU use "
                           "count_host_syncs")
    record = HostSyncs()
    previous = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # every warning, not the first per line
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield record
        finally:
            torch.cuda.set_sync_debug_mode(previous)
    for warning in caught:
        if SYNC_WARNING in str(warning.message):
            record.breakdown[f"{warning.filename}:{warning.lineno}"] += 1
        elif not str(warning.message).startswith(PROTOTYPE_WARNING):
            warnings.warn_explicit(warning.message, warning.category, warning.filename,
                                   warning.lineno)
