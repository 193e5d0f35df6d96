"""sslreg.syncs counts host synchronisations, and the engine's training step makes none,
for every registered method (through benchmarks/host_syncs.py's own measurement)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from sslreg import testing
from sslreg.syncs import (
    CONDITIONAL_SYNC_OPS,
    SYNC_OPS,
    count_host_syncs,
    cuda_sync_warnings,
    optimizer_host_tensors,
)

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "host_syncs.py"
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("host_syncs_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # attrs classes look their module up by name
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


class ItemInBackward(torch.autograd.Function):
    """Doubles in both directions; its backward reads a value on the host."""

    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, grad):
        grad.sum().item()
        return grad * 2


def backward_with_item(x: torch.Tensor) -> None:
    ItemInBackward.apply(x.detach().clone().requires_grad_()).sum().backward()


def arithmetic(x: torch.Tensor) -> torch.Tensor:
    y = (x * 2 + 1).sin().relu()
    return torch.where(y > 0.5, y, 0.0).sum() / x.numel()


def repeats(x: torch.Tensor) -> torch.Tensor:
    return torch.full((6,), 2, device=x.device)


# (what, code on a 6-element tensor, the ops it should count). Helper tensors are made on
# x's device without a copy, so that on CUDA each case syncs only where it says.
CASES = [
    ("item", lambda x: x.sum().item(), {"aten._local_scalar_dense": 1}),
    ("bool", lambda x: bool(x[0] > 0), {"aten._local_scalar_dense": 1}),
    ("float", lambda x: float(x[0]), {"aten._local_scalar_dense": 1}),
    ("mask index", lambda x: x[x > 0], {"aten.index": 1}),
    # A scalar assigned through a mask runs as masked_fill_.
    ("mask fill", lambda x: x.clone().__setitem__(x > 0, 0.0), {}),
    ("mask accumulate", lambda x: x.clone().index_put_(
        (x > 0,), torch.ones((), device=x.device), accumulate=True), {"aten.index_put_": 1}),
    ("integer index", lambda x: x[torch.arange(0, 4, 2, device=x.device)], {}),
    ("nonzero", lambda x: torch.where(x > 0), {"aten.nonzero": 1}),
    ("masked_select", lambda x: x.masked_select(x > 0), {"aten.masked_select": 1}),
    ("unique", lambda x: torch.unique(x), {"aten._unique2": 1}),
    ("unique dim", lambda x: torch.unique(x.view(2, 3), dim=0), {"aten.unique_dim": 1}),
    ("unique_consecutive", lambda x: torch.unique_consecutive(x),
     {"aten.unique_consecutive": 1}),
    ("repeat_interleave", lambda x: x.repeat_interleave(repeats(x)),
     {"aten.repeat_interleave": 1}),
    ("repeat_interleave sized", lambda x: x.repeat_interleave(repeats(x), output_size=12), {}),
    ("equal", lambda x: torch.equal(x, x.clone()), {"aten.equal": 1}),
    ("bincount", lambda x: torch.bincount((x > 0).long()), {"aten.bincount": 1}),
    ("histc", lambda x: torch.histc(x), {"aten.histc": 1}),
    ("histc in a range", lambda x: torch.histc(x, min=-1, max=1), {}),
    ("arithmetic", arithmetic, {}),
    ("item in backward", backward_with_item, {"aten._local_scalar_dense": 1}),
]
# Copies between the CPU and a device: on the CPU there is none to see.
CUDA_CASES = [
    ("torch.tensor on the device", lambda x: torch.tensor([1.0, 2.0], device=x.device),
     {"aten.lift_fresh": 1}),
    # On the CPU the one-element value is on the CPU too: a masked_fill_ there.
    ("mask assign of a device value", lambda x: x.clone().__setitem__(x > 0, x[0]),
     {"aten.index_put_": 1}),
    ("to the cpu", lambda x: x.cpu(), {"aten._to_copy": 1}),
    ("to the cpu, non-blocking", lambda x: x.to("cpu", non_blocking=True), {}),
    ("to the device", lambda x: torch.ones(3).to(x.device), {"aten._to_copy": 1}),
    ("copy_ from the cpu", lambda x: x.clone().copy_(torch.ones(6)), {"aten.copy_": 1}),
    ("item in backward on the device", backward_with_item, {"aten._local_scalar_dense": 1}),
]


# Cases CUDA's sync debug mode does not warn of (torch 2.11 on an H200), though their
# output's size is read on the host.
CUDA_SILENT = {"unique dim"}


def cases(table: list) -> dict:
    return {"argvalues": table, "ids": [case[0] for case in table]}


@pytest.mark.parametrize(("what", "code", "expected"), **cases(CASES))
def test_counts_the_ops_that_wait_for_the_device(what, code, expected) -> None:
    x = torch.randn(6, generator=torch.Generator().manual_seed(0))
    with count_host_syncs() as syncs:
        code(x)
    assert dict(syncs.breakdown) == expected
    assert syncs.count == sum(expected.values())


def test_every_listed_op_is_an_aten_op() -> None:
    for op in [*SYNC_OPS, *CONDITIONAL_SYNC_OPS]:
        assert getattr(torch.ops.aten, op.__name__) is op


def test_device_and_host_tensors_narrow_the_count() -> None:
    x = torch.randn(3)
    with count_host_syncs(device="cuda") as on_cuda:
        x.sum().item()  # a CPU tensor's value: no GPU waits for it
    assert on_cuda.count == 0
    parameter = torch.nn.Parameter(torch.randn(3))
    optimizer = torch.optim.AdamW([parameter])  # not fused: its step counts stay on the CPU

    def step() -> None:
        optimizer.zero_grad()
        parameter.square().sum().backward()
        optimizer.step()

    step()
    with count_host_syncs() as every:
        step()
    assert every.count >= 1  # AdamW reads its step count with .item()
    with count_host_syncs(host_tensors=optimizer_host_tensors(optimizer)) as device_only:
        step()
    assert device_only.count == 0


def test_cuda_sync_warnings_needs_cuda() -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is here")
    with pytest.raises(RuntimeError, match="needs a CUDA device"):
        with cuda_sync_warnings():
            pass


@CUDA
@pytest.mark.parametrize(("what", "code", "expected"), **cases(CASES + CUDA_CASES))
def test_cuda_agrees_with_the_dispatch_count(what, code, expected) -> None:
    """CUDA's sync debug mode warns where the dispatch counter counts, and only there
    (but for what it is known to miss)."""
    x = torch.randn(6, device="cuda")
    torch.cuda.synchronize()
    before = torch.cuda.get_sync_debug_mode()
    with count_host_syncs("cuda") as dispatch, cuda_sync_warnings() as warned:
        code(x)
    assert torch.cuda.get_sync_debug_mode() == before
    assert dict(dispatch.breakdown) == expected
    if what not in CUDA_SILENT:
        assert (warned.count > 0) == (dispatch.count > 0), warned.describe()


def test_the_measurement_counts_each_counted_step(bench, registry, monkeypatch,
                                                 tmp_path) -> None:
    """A train_step that reads its loss is counted once per counted step, never in the
    warm-up: the measurement below would catch a method that did this."""
    engine_step = bench.train_step

    def reading_the_loss(trainer, batch, labels, views_rng):
        output = engine_step(trainer, batch, labels, views_rng)
        output.loss.item()
        return output

    monkeypatch.setattr(bench, "train_step", reading_the_loss)
    measured = bench.measure(registry, "simclr", testing.TINY_BACKBONE, batch=4, device="cpu",
                             steps=2, warmup=1, data_root=None, folder=tmp_path)
    assert dict(measured.dispatch.breakdown) == {"aten._local_scalar_dense": 2}
    assert measured.syncs


def method_cases() -> list:
    """One case per registered method; a method known to synchronise every step is
    marked here, with where it does (none is, today)."""
    known: dict[str, str] = {}
    return [pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=known[name]))
            if name in known else name for name in testing.method_names()]


@pytest.mark.parametrize("method", method_cases())
def test_train_step_makes_no_host_sync(bench, registry, method, tmp_path) -> None:
    backbone = testing.tiny_backbone(method, registry)
    measured = bench.measure(registry, method, backbone, batch=4, device="cpu", steps=2,
                             warmup=1, data_root=None, folder=tmp_path)
    assert measured.warnings is None
    assert measured.dispatch.count == 0, (
        f"{method}: the engine's train_step synchronised with the host "
        f"{measured.dispatch.count} times in 2 steps: {measured.dispatch.describe()}")


@CUDA
@pytest.mark.parametrize("method", method_cases())
def test_train_step_makes_no_host_sync_on_cuda(bench, registry, method, tmp_path) -> None:
    """On a GPU, by both counts (bf16 autocast, channels_last and the fused optimizers)."""
    backbone = testing.tiny_backbone(method, registry)
    measured = bench.measure(registry, method, backbone, batch=4, device="cuda", steps=2,
                             warmup=1, data_root=None, folder=tmp_path)
    assert (measured.dispatch.count, measured.warnings.count) == (0, 0), (
        f"{method}: the engine's train_step synchronised with the host in 2 steps: "
        f"{measured.dispatch.describe()}; CUDA warned at {measured.warnings.describe()}")
