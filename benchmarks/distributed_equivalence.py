"""2 gloo processes x B/2 against 1 process x B for DINO and SwAV: the largest absolute
differences of what each computes on the same global batch.

Under torchrun DINO's centre is the teacher's mean over the global batch and SwAV's
Sinkhorn-Knopp codes are normalised over it (sslreg.distributed), so each rank should
get what one process gets, up to float32 summation order. Measured here, at the
methods' default sizes (4096 DINO prototypes, 3000 SwAV prototypes, 128-d projections):

* objective level (a linear layer under DDP feeds the loss, as tests/test_distributed.py
  does for the contrastive losses): the loss, each rank's input gradients (W x its rows
  of the one-process gradient), the layer's averaged gradients; DINO's centre after one
  ``update_center``; SwAV's codes of each rank's rows, alone and after a queue;
* method level: three whole steps through the engine's DDP step (SGD, then
  ``on_step_end``) of DINO and SwAV on a BatchNorm-free backbone (CPU ranks keep
  per-rank BatchNorm statistics, sync_batchnorm being CUDA-only): the losses, the last
  gradients, the weights after the steps, DINO's centre and teacher, SwAV's queue.

    OMP_NUM_THREADS=1 python benchmarks/distributed_equivalence.py \\
        --out benchmarks/results/distributed-equivalence-cpu.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from sslreg_dino import DINO, DINOConfig, DINOLoss
from sslreg_swav import SwAV, SwAVConfig, SwAVLoss
from torch import nn

from sslreg import RunContext, distributed, testing
from sslreg.engine.device import device_name

WORLD = 2
BATCH = 64  # the global batch of the objective level; the method level takes half
DIM_IN, DINO_K, SWAV_K, SWAV_D = 64, 4096, 3000, 128
QUEUE = 2 * BATCH  # SwAV's queue rows at the objective level, QUEUE / W per rank
STEPS, SIDE, LOCAL_SIDE = 3, 16, 8


def _inputs():
    generator = torch.Generator().manual_seed(0)
    x1, x2 = (torch.randn(BATCH, DIM_IN, generator=generator) for _ in range(2))
    prototypes = F.normalize(torch.randn(SWAV_K, SWAV_D, generator=generator), dim=1)
    queue = F.normalize(torch.randn(2, QUEUE, SWAV_D, generator=generator), dim=2)
    return x1, x2, prototypes, queue


def _layer(out_dim):
    torch.manual_seed(0)
    return nn.Linear(DIM_IN, out_dim)


def objective(name, rows, queue_rows, parallel):
    """One loss on a linear layer's outputs: the loss, the input and layer gradients."""
    x1, x2, prototypes, queue = _inputs()
    x1, x2 = x1[rows].clone().requires_grad_(), x2[rows].clone().requires_grad_()
    layer = _layer(DINO_K if name == "dino" else SWAV_D)
    model = nn.parallel.DistributedDataParallel(layer) if parallel else layer
    z1, z2 = model(torch.cat([x1, x2])).chunk(2)
    if name == "dino":  # the teacher: a fixed second layer (its targets take no gradient)
        with torch.no_grad():
            teacher = _layer(DINO_K)(torch.cat([x2, x1]) * 0.5).chunk(2)
        center = torch.linspace(-0.2, 0.2, DINO_K)
        loss = DINOLoss()([z1, z2], list(teacher), center, 0.04)
    else:
        scores = [F.normalize(z, dim=1) @ prototypes.T for z in (z1, z2)]
        loss = SwAVLoss()(scores, [q[queue_rows] @ prototypes.T for q in queue])
    loss.backward()
    return {"loss": loss.detach(), "x1 grad": x1.grad, "x2 grad": x2.grad,
            "layer weight grad": layer.weight.grad, "layer bias grad": layer.bias.grad}


def codes(rows, queue_rows):
    """SwAV's codes of the global crop's rows, alone and after a queue."""
    x1, _, prototypes, queue = _inputs()
    scores = F.normalize(_layer(SWAV_D)(x1), dim=1).detach() @ prototypes.T
    loss = SwAVLoss()
    return {"codes": loss.codes(scores[rows]),
            "codes after a queue": loss.codes(scores[rows], queue[0, queue_rows] @ prototypes.T)}


def dino_center(rows):
    """DINO's centre after one update from the teacher outputs of the rows."""
    method = DINO(DINOConfig(use_bn_in_head=False), _Net(), DINOLoss())
    method.center.normal_(generator=torch.Generator().manual_seed(4))
    teacher = torch.randn(2 * BATCH, DINO_K, generator=torch.Generator().manual_seed(5))
    method.update_center(torch.cat([teacher[:BATCH][rows], teacher[BATCH:][rows]]))
    return {"centre after one update": method.center.clone()}


class _Net(nn.Module):
    """A small BatchNorm-free convnet (it pools, so global and local crops fit)."""

    output_dim = 64

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3))

    def forward(self, images):
        return self.net(images).mean(dim=(2, 3))


def _method(name):
    torch.manual_seed(0)
    if name == "dino":
        method = DINO(DINOConfig(use_bn_in_head=False), _Net(), DINOLoss())
    else:
        method = SwAV(SwAVConfig(queue_length=BATCH // 2, queue_start_epoch=0,
                                 freeze_prototypes_fraction=1 / STEPS), _Net(), SwAVLoss())
        config = method.config  # the projector without its BatchNorm
        method.projector = nn.Sequential(nn.Linear(_Net.output_dim, config.proj_hidden_dim),
                                         nn.ReLU(), nn.Linear(config.proj_hidden_dim,
                                                              config.proj_dim))
    method.setup(RunContext(epochs=1, steps_per_epoch=STEPS))
    return method


def _views(step, batch):
    generator = torch.Generator().manual_seed(100 + step)
    return ([torch.randn(batch, 1, SIDE, SIDE, generator=generator) for _ in range(2)]
            + [torch.randn(batch, 1, LOCAL_SIDE, LOCAL_SIDE, generator=generator)
               for _ in range(2)])


def method_steps(name, rows, parallel):
    """STEPS engine steps; losses, the last gradients, the state after them."""
    method = _method(name)
    step = distributed.current().for_training(method)[1] if parallel else None
    optimizer = torch.optim.SGD(method.parameters(), lr=0.1)
    losses = []
    for index in range(STEPS):
        optimizer.zero_grad(set_to_none=True)
        clock = testing.clock(method, index)
        output = (step or method.training_step)(
            [v[rows] for v in _views(index, BATCH // 2)], clock=clock)
        output.loss.backward()
        optimizer.step()
        method.on_step_end(clock)
        losses.append(output.loss.detach())
    grads = [p.grad.flatten() for p in method.parameters() if p.grad is not None]
    state = method.state_dict()
    result = {"losses (every step)": torch.stack(losses), "last gradients": torch.cat(grads),
              "weights after the steps": torch.cat([p.detach().flatten()
                                                    for p in method.parameters()])}
    if name == "dino":
        result["centre after the steps"] = state["center"].clone()
        result["teacher after the steps"] = torch.cat(
            [state[k].flatten() for k in state if k.startswith("teacher_")])
    else:
        result["queue after the steps"] = state["queue"][:, :method.queue_rows].clone()
    return result


def compute(rank, parallel):
    """Everything measured, on the rows of ``rank`` (all of them with one process)."""
    size = WORLD if parallel else 1
    rows = _slice(BATCH, rank, size)
    queue_rows = _slice(QUEUE, rank, size)
    method_rows = _slice(BATCH // 2, rank, size)
    results = {}
    for name in ("dino", "swav"):
        results[name] = {**objective(name, rows, queue_rows, parallel),
                         **(dino_center(rows) if name == "dino" else codes(rows, queue_rows)),
                         **{f"engine: {k}": v
                            for k, v in method_steps(name, method_rows, parallel).items()}}
    return results


def _slice(total, rank, size):
    per_rank = total // size
    return slice(rank * per_rank, (rank + 1) * per_rank)


# How a rank's result lines up with the one-process result.
ROWS = {"x1 grad", "x2 grad", "codes", "codes after a queue"}  # the rank's rows
TIMES_W = {"x1 grad", "x2 grad"}  # W x the rows (sslreg.distributed's convention)


def difference(key, got, expected, rank):
    if key == "engine: queue after the steps":  # newest first: this rank's rows
        per_rank = got.shape[1]
        expected = expected[:, rank * per_rank:(rank + 1) * per_rank]
    elif key in ROWS:
        expected = expected[_slice(len(expected), rank, WORLD)]
    if key in TIMES_W:
        got = got / WORLD
    return (got - expected).abs().max().item(), expected.abs().max().item()


def spawn(folder, local=False):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    processes = [subprocess.Popen([sys.executable, __file__, "--rank", str(rank),
                                   "--port", str(port), "--folder", str(folder),
                                   *(["--local"] if local else [])], env=env)
                 for rank in range(WORLD)]
    if [process.wait(timeout=600) for process in processes] != [0] * WORLD:
        raise SystemExit("a rank failed")
    return [torch.load(Path(folder) / f"rank{rank}.pt") for rank in range(WORLD)]


def rank_local():
    """The behaviour before the centre and Sinkhorn covered the global batch: each rank's
    centre update and Sinkhorn normalisation see its own rows only (the SwAV queue keeps
    its per-rank share, so the queue rows still line up)."""
    import sslreg_dino
    import sslreg_swav.loss

    sslreg_dino.global_batch_mean = lambda rows: rows.mean(dim=0, keepdim=True)
    sslreg_swav.loss.all_reduce_sum = sslreg_swav.loss.all_reduce_max = lambda t: t
    sslreg_swav.loss.world_size = lambda: 1


def rank_main(rank, port, folder, local):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD))
    torch.set_num_threads(1)
    distributed.join(torch.device("cpu"))
    if local:
        rank_local()
    torch.save(compute(rank, parallel=True), Path(folder) / f"rank{rank}.pt")


def worst(expected, ranks, name, key):
    """The largest difference over the ranks, and the largest one-process value."""
    pairs = [difference(key, got[name][key], expected[name][key], rank)
             for rank, got in enumerate(ranks)]
    return max(diff for diff, _ in pairs), max(size for _, size in pairs)


def table(expected, ranks, local):
    lines = ["| method | quantity | max abs difference, 2 ranks vs 1 | rank-local centre "
             "and Sinkhorn (before) | max abs value |", "|:--|:--|--:|--:|--:|"]
    for name, values in expected.items():
        for key in values:
            diff, scale = worst(expected, ranks, name, key)
            before, _ = worst(expected, local, name, key)
            lines.append(f"| {name} | {key} | {diff:.2e} | {before:.2e} | {scale:.3g} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="Also write the table to this file.")
    parser.add_argument("--rank", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--local", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rank is not None:
        rank_main(args.rank, args.port, args.folder, args.local)
        return
    torch.set_num_threads(1)
    started = time.perf_counter()
    expected = compute(0, parallel=False)
    with tempfile.TemporaryDirectory() as folder:
        ranks = spawn(folder)
    with tempfile.TemporaryDirectory() as folder:
        local = spawn(folder, local=True)
    text = (f"## DINO and SwAV: {WORLD} gloo ranks x B/{WORLD} against 1 process x B\n\n"
            f"{table(expected, ranks, local)}\n\n"
            f"Objective level: global batch {BATCH}, SwAV queue {QUEUE} rows ({QUEUE // WORLD}"
            f" per rank); engine level: global batch {BATCH // 2}, {STEPS} steps, SwAV "
            f"queue {BATCH // 2} rows ({BATCH // 2 // WORLD} per rank), in use from the "
            "second step, prototypes frozen for the first. Input gradients are compared as "
            f"each rank's / {WORLD} against its rows (sslreg.distributed's convention); "
            "codes against the rank's rows; the rest whole. float32 throughout. The "
            "'before' column switches the all-reductions of DINO's centre and SwAV's "
            "Sinkhorn off (each rank normalising its own rows, as before they covered the "
            "global batch), to show what the measurement catches.\n\n"
            f"Made by `{' '.join(['python', *sys.argv])}` in "
            f"{time.perf_counter() - started:.0f} s on {device_name(torch.device('cpu'))}, "
            f"{os.cpu_count()} CPU cores, no GPU, torch {torch.__version__}, "
            f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC.\n")
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
