"""Two CPU processes (gloo) give what one process gives: 2 ranks x B/2 == 1 rank x B."""

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from sslreg_dino import DINO, DINOConfig, DINOLoss
from sslreg_swav import SwAV, SwAVConfig, SwAVLoss, sinkhorn
from torch import nn

from sslreg import RunContext, StepOutput, distributed, testing
from sslreg.errors import SslregError
from sslreg.objectives import BarlowTwinsLoss, InfoNCELoss, NTXentLoss, VICRegLoss

WORLD = 2
BATCH, DIM_IN, DIM_OUT = 8, 10, 6
TIMEOUT_S = 60
# SwAV's prototypes and queue rows, and the Sinkhorn batch of the direct codes test.
PROTOTYPES, SWAV_QUEUE, CODES_BATCH = 5, 4, 16
# DINO and SwAV through the engine's DDP step: steps, image side.
METHOD_STEPS, SIDE = 2, 8


def _objectives():
    return {
        "nt_xent": NTXentLoss(temperature=0.5),
        "info_nce": InfoNCELoss(temperature=0.2),
        "barlow_twins": BarlowTwinsLoss(lambda_offdiag=5e-3),
        "vicreg": VICRegLoss(),
    }


def _inputs():
    generator = torch.Generator().manual_seed(0)
    x1, x2 = (torch.randn(BATCH, DIM_IN, generator=generator) for _ in range(2))
    queue = torch.randn(5, DIM_OUT, generator=generator)
    return x1, x2, queue


def _layer():
    torch.manual_seed(0)
    return nn.Linear(DIM_IN, DIM_OUT)


def _swav_inputs():
    """SwAV's unit prototypes (K, DIM_OUT) and, per global crop, a queue of past
    projections (2, SWAV_QUEUE, DIM_OUT); its own generator, so _inputs stays as it was."""
    generator = torch.Generator().manual_seed(1)
    prototypes = F.normalize(torch.randn(PROTOTYPES, DIM_OUT, generator=generator), dim=1)
    swav_queue = F.normalize(torch.randn(2, SWAV_QUEUE, DIM_OUT, generator=generator), dim=2)
    return prototypes, swav_queue


def _loss(name, z1, z2, queue, swav_queue):
    """One objective's loss on the two views' outputs. ``swav_queue`` is this process's
    (a rank's own rows under torchrun, as SwAV keeps its queue per rank)."""
    objectives = _objectives()
    if name == "info_nce_queue":
        return objectives["info_nce"](z1, z2, queue)
    if name == "dino":  # the teacher's logits: the outputs themselves (no gradient)
        center = torch.linspace(-0.1, 0.1, DIM_OUT)
        return DINOLoss(student_temp=0.1)([z1, z2], [z2, z1], center, 0.04)
    if name.startswith("swav"):
        prototypes, _ = _swav_inputs()
        scores = [F.normalize(z, dim=1) @ prototypes.T for z in (z1, z2)]
        queued = [q @ prototypes.T for q in swav_queue] if name == "swav_queue" else None
        return SwAVLoss()(scores, queued)
    return objectives[name](z1, z2)


def _step(model, name, x1, x2, queue, swav_queue=None):
    """Loss and gradients (inputs, then the layer's parameters) of one objective."""
    x1, x2 = x1.clone().requires_grad_(), x2.clone().requires_grad_()
    z1, z2 = model(torch.cat([x1, x2])).chunk(2)
    loss = _loss(name, z1, z2, queue, swav_queue)
    loss.backward()
    layer = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    return {"loss": loss.detach(), "x1": x1.grad, "x2": x2.grad,
            "weight": layer.weight.grad.clone(), "bias": layer.bias.grad.clone()}


NAMES = ["nt_xent", "info_nce", "info_nce_queue", "barlow_twins", "vicreg", "dino", "swav",
         "swav_queue"]


class _Toy(nn.Module):
    """A method with a parameter its step leaves out, as SwAV and DINO do early on."""

    def __init__(self):
        super().__init__()
        self.layer, self.unused = _layer(), nn.Linear(2, 2)

    def training_step(self, views):
        z1, z2 = self.layer(torch.cat(views)).chunk(2)
        return StepOutput(loss=NTXentLoss()(z1, z2))


def _engine_steps(step, toy, x1, x2):
    """Two steps the way the engine takes them; the second fails if DDP lost track."""
    for _ in range(2):
        toy.zero_grad(set_to_none=True)
        output = step([x1, x2])
        output.loss.backward()
    return {"loss": output.loss.detach(), "weight": toy.layer.weight.grad,
            "unused": toy.unused.weight.grad}


class _Net(nn.Module):
    """A backbone without BatchNorm: CPU ranks keep per-rank batch statistics
    (sync_batchnorm is CUDA-only), which would part them from one process."""

    output_dim = 8

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, self.output_dim, 3)

    def forward(self, images):
        return self.conv(images).mean(dim=(2, 3))


def _method(name):
    """A small DINO or SwAV, the same on every rank. DINO's prototypes are frozen for its
    first step and its teacher temperature warms up over it; SwAV's prototypes are frozen
    for its first step and its queue (BATCH rows, BATCH / W per rank) is used in the
    second."""
    torch.manual_seed(0)
    if name == "dino":
        method = DINO(DINOConfig(out_dim=16, hidden_dim=16, bottleneck_dim=8,
                                 use_bn_in_head=False), _Net(), DINOLoss())
    else:
        method = SwAV(SwAVConfig(proj_hidden_dim=16, proj_dim=8, num_prototypes=10,
                                 queue_length=BATCH, queue_start_epoch=0,
                                 freeze_prototypes_fraction=0.5), _Net(), SwAVLoss())
        method.projector = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 8))
    method.setup(RunContext(epochs=1, steps_per_epoch=METHOD_STEPS))
    return method


def _method_views(step):
    """Two global crops and one local crop (the same side: the backbone pools)."""
    generator = torch.Generator().manual_seed(100 + step)
    return [torch.randn(BATCH, 1, SIDE, SIDE, generator=generator) for _ in range(3)]


def _method_steps(name, rows, parallel):
    """METHOD_STEPS optimizer steps the way the engine takes them (the step through DDP
    under torchrun, then on_step_end); the losses, the last step's gradients and the
    state (weights, DINO's centre and teacher, SwAV's queue) after them."""
    method = _method(name)
    step = distributed.current().for_training(method)[1] if parallel else None
    optimizer = torch.optim.SGD(method.parameters(), lr=0.5)
    losses = []
    for index in range(METHOD_STEPS):
        optimizer.zero_grad(set_to_none=True)
        clock = testing.clock(method, index)
        output = (step or method.training_step)([v[rows] for v in _method_views(index)],
                                                clock=clock)
        output.loss.backward()
        optimizer.step()
        method.on_step_end(clock)
        losses.append(output.loss.detach())
    return {"losses": torch.stack(losses),
            "grads": {n: p.grad for n, p in method.named_parameters()},
            "state": {n: t.clone() for n, t in method.state_dict().items()}}


def _codes(rows, queue_rows):
    """Sinkhorn codes of the CODES_BATCH rows (``rows`` of them on this rank), alone and
    after a queue (``queue_rows`` of it on this rank, a queue being per rank)."""
    generator = torch.Generator().manual_seed(2)
    scores = torch.randn(CODES_BATCH, PROTOTYPES, generator=generator).tanh()
    queued = torch.randn(2 * CODES_BATCH, PROTOTYPES, generator=generator).tanh()
    loss = SwAVLoss()
    return {"codes": sinkhorn(scores[rows]),
            "codes_queue": loss.codes(scores[rows], queued[queue_rows])}


def _teacher_rows():
    return torch.randn(CODES_BATCH, 7, generator=torch.Generator().manual_seed(3))


def _worker(rank, port, folder):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD))
    torch.set_num_threads(1)
    topology = distributed.join(torch.device("cpu"))
    assert (topology.rank, topology.world_size) == (rank, WORLD)
    x1, x2, queue = _inputs()
    rows = topology.shard(torch.arange(BATCH))
    swav_queue = _swav_inputs()[1][:, topology.shard(torch.arange(SWAV_QUEUE))]
    results = {}
    for name in NAMES:
        model = nn.parallel.DistributedDataParallel(_layer())
        results[name] = _step(model, name, x1[rows], x2[rows], queue, swav_queue)
    toy = _Toy()
    step = topology.for_training(toy)[1]
    results["engine"] = _engine_steps(step, toy, x1[rows], x2[rows])
    results.update(_codes(topology.shard(torch.arange(CODES_BATCH)),
                          topology.shard(torch.arange(2 * CODES_BATCH))))
    results["center"] = distributed.global_batch_mean(
        _teacher_rows()[topology.shard(torch.arange(CODES_BATCH))])
    for name in ("dino", "swav"):
        results[f"{name}_steps"] = _method_steps(name, rows, parallel=True)
    torch.save(results, Path(folder) / f"rank{rank}.pt")


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _spawn(folder):
    """Run this file as a script once per rank (pytest's importlib mode leaves the test
    module unimportable by name, so multiprocessing's spawn cannot find _worker)."""
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    processes = [subprocess.Popen([sys.executable, __file__, str(rank), str(port), str(folder)],
                                  env=env) for rank in range(WORLD)]
    try:
        codes = [process.wait(timeout=TIMEOUT_S) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    assert codes == [0] * WORLD, "a worker failed"
    return [torch.load(Path(folder) / f"rank{rank}.pt") for rank in range(WORLD)]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    return _spawn(tmp_path_factory.mktemp("ranks"))


@pytest.mark.parametrize("name", NAMES)
def test_two_ranks_match_one_process(two_ranks, name):
    """The loss on every rank is the single-process loss of the whole batch; each rank's
    input gradients are WORLD x its rows of the single-process gradient (the convention
    in sslreg.distributed), and DDP's averaged parameter gradients are the single
    process's exactly."""
    x1, x2, queue = _inputs()
    expected = _step(_layer(), name, x1, x2, queue, _swav_inputs()[1])
    per_rank = BATCH // WORLD
    for rank, results in enumerate(two_ranks):
        got = results[name]
        rows = slice(rank * per_rank, (rank + 1) * per_rank)
        torch.testing.assert_close(got["loss"], expected["loss"], atol=1e-5, rtol=1e-5)
        for key in ("x1", "x2"):
            torch.testing.assert_close(got[key] / WORLD, expected[key][rows], atol=1e-5,
                                       rtol=1e-5, msg=f"{name} rank {rank} {key}")
        for key in ("weight", "bias"):
            torch.testing.assert_close(got[key], expected[key], atol=1e-5, rtol=1e-5,
                                       msg=f"{name} rank {rank} {key}")


def test_engine_step_through_ddp(two_ranks):
    """data_parallel: the step runs through DDP, unused parameters keep no gradient, and
    the averaged gradient is the single process's."""
    x1, x2, _ = _inputs()
    toy = _Toy()
    expected = _engine_steps(toy.training_step, toy, x1, x2)
    for results in two_ranks:
        got = results["engine"]
        assert got["unused"] is None
        torch.testing.assert_close(got["loss"], expected["loss"], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got["weight"], expected["weight"], atol=1e-5, rtol=1e-5)


def test_swav_codes_cover_the_global_batch(two_ranks):
    """Sinkhorn on 2 ranks x B/2 gives each rank its rows of the one-process codes of all
    B, with a queue too (each rank's own queue rows joining the global normalisation)."""
    per_rank = CODES_BATCH // WORLD
    expected = _codes(torch.arange(CODES_BATCH), torch.arange(2 * CODES_BATCH))
    for rank, results in enumerate(two_ranks):
        rows = slice(rank * per_rank, (rank + 1) * per_rank)
        for key in ("codes", "codes_queue"):
            torch.testing.assert_close(results[key], expected[key][rows], atol=1e-6,
                                       rtol=1e-5, msg=f"rank {rank} {key}")


def test_dino_center_is_the_global_batch_mean(two_ranks):
    expected = _teacher_rows().mean(dim=0, keepdim=True)
    for results in two_ranks:
        torch.testing.assert_close(results["center"], expected, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name", ["dino", "swav"])
def test_method_steps_through_ddp_match_one_process(two_ranks, name):
    """Two whole DINO / SwAV steps on 2 ranks (DDP) train like one process on the whole
    batch: the same losses, gradients (None where frozen), weights, DINO's centre and
    teacher; each rank's SwAV queue holds its rows of the one-process queue."""
    expected = _method_steps(name, torch.arange(BATCH), parallel=False)
    per_rank = BATCH // WORLD
    for rank, results in enumerate(two_ranks):
        got = results[f"{name}_steps"]
        torch.testing.assert_close(got["losses"], expected["losses"], atol=1e-5, rtol=1e-5)
        assert got["grads"].keys() == expected["grads"].keys()
        for key, grad in expected["grads"].items():
            assert (got["grads"][key] is None) == (grad is None), key
            if grad is not None:
                torch.testing.assert_close(got["grads"][key], grad, atol=1e-5, rtol=1e-5,
                                           msg=f"{name} rank {rank} grad {key}")
        state = dict(got["state"])
        if name == "swav":
            mine = slice(rank * per_rank, (rank + 1) * per_rank)
            queue = state.pop("queue")
            torch.testing.assert_close(queue[:, :per_rank], expected["state"]["queue"][:, mine])
            assert not queue[:, per_rank:].any()  # the rows one rank does not use
        for key, value in state.items():
            torch.testing.assert_close(value, expected["state"][key], atol=1e-5, rtol=1e-5,
                                       msg=f"{name} rank {rank} {key}")


def test_collectives_take_the_names_this_torch_has(monkeypatch):
    # torch 2.11 (a GPU machine's) has only the older names; 2.14 has both and warns on
    # the older ones.
    monkeypatch.delattr(dist, "all_gather_single", raising=False)
    assert distributed.newest("all_gather_single", "all_gather_into_tensor") is \
        dist.all_gather_into_tensor
    monkeypatch.setattr(dist, "all_gather_single", print, raising=False)
    assert distributed.newest("all_gather_single", "all_gather_into_tensor") is print
    with pytest.raises(SslregError, match="has none of gone_a, gone_b; install torch>=2.4"):
        distributed.newest("gone_a", "gone_b")


def test_one_process_is_untouched():
    topology = distributed.join(torch.device("cpu"))
    assert topology == distributed.Topology() and topology.is_main
    rows = torch.arange(6)
    z = torch.randn(4, 3)
    assert topology.shard(rows) is rows and distributed.gather_with_grad(z) is z
    linear = nn.Linear(2, 2)
    assert topology.for_training(linear) == (linear, None)
    assert topology.max_over_ranks(3, 0) == (3, 0) and topology.all_objects("a") == ["a"]
    assert topology.describe("cpu") == "cpu" and topology.rank_seed(5) == 5


def _tool(name):
    found = Path(sys.executable).parent / name
    return str(found) if found.exists() else shutil.which(name)


def test_torchrun_pretrain_two_processes(tmp_path):
    """`torchrun --nproc_per_node 2 sslreg pretrain` trains, and only rank 0 writes one
    run directory, its checkpoint, train.json, the evaluation and one index row."""
    torchrun, sslreg = _tool("torchrun"), _tool("sslreg")
    if torchrun is None or sslreg is None:
        pytest.skip("torchrun or the sslreg script is not installed")
    out = tmp_path / "runs"
    command = [torchrun, "--standalone", "--nproc_per_node", str(WORLD), "--no-python",
               sslreg, "pretrain", "--method", "simclr", "--dataset", "synthetic",
               "--backbone", "resnet18-narrow", "--epochs", "1", "--batch-size", "32",
               "--set", "train.train_subset=128", "--set", "eval.train_subset=200",
               "--set", "eval.test_subset=100", "--out", str(out), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SSLREG_OFFLINE": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = [path for path in out.iterdir() if path.is_dir()]
    assert (run / "checkpoint.pt").exists() and (run / "result.json").exists()
    info = (run / "train.json").read_text()
    assert '"status": "trained"' in info and '"steps": 4' in info  # 128 / 32 global
    assert '"device": "2 x cpu' in info
    writers = {path.name.split(".")[-2] for path in (run / "tb").rglob("events.*")}
    assert len(writers) == 1  # one process id: rank 0's
    from sslreg.runs.index import open_index

    rows = open_index(out).rows()
    assert len(rows) == 1 and rows[0]["status"].startswith("evaluated")


BENCH_SUITE = """
name = "tiny-dist"
dataset = "synthetic"
methods = ["dino", "swav"]
seeds = [0]
[budget.cpu]
backbone = "resnet18-narrow"
set = ["train.epochs=1", "train.batch_size=32", "train.train_subset=64",
       "method.num_local=2", "eval.train_subset=100", "eval.test_subset=50"]
[budget.gpu]
backbone = "resnet18-narrow"
set = ["train.epochs=1", "train.batch_size=32", "train.train_subset=64",
       "method.num_local=2", "eval.train_subset=100", "eval.test_subset=50"]
"""


def test_torchrun_bench_two_processes(tmp_path):
    """`torchrun --nproc_per_node 2 sslreg bench SUITE.toml` trains DINO and SwAV on both
    processes; rank 0 alone evaluates, records each run and the floors once, and prints
    the table once. A second time, rank 0's index says both runs are done and every rank
    skips them."""
    torchrun, sslreg = _tool("torchrun"), _tool("sslreg")
    if torchrun is None or sslreg is None:
        pytest.skip("torchrun or the sslreg script is not installed")
    (tmp_path / "tiny.toml").write_text(BENCH_SUITE)
    out = tmp_path / "runs"
    command = [torchrun, "--standalone", "--nproc_per_node", str(WORLD), "--no-python",
               sslreg, "bench", str(tmp_path / "tiny.toml"), "--out", str(out), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SSLREG_OFFLINE": "1"}
    from sslreg.runs.index import open_index

    finished = {}
    for _attempt in ("first", "again"):
        done = subprocess.run(command, env=env, capture_output=True, text=True,
                              timeout=2 * TIMEOUT_S)
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.count("## tiny-dist: synthetic, seeds 0") == 1, done.stdout
        for line in ("[1/2] dino", "[2/2] swav", "floors:", "suite tiny-dist done"):
            assert done.stderr.count(line) == 1, done.stderr  # rank 0 alone speaks
        results = {path.parent.name: path.stat().st_mtime_ns
                   for path in out.glob("*/result.json")}
        assert finished in ({}, results)  # the second time, no run is redone
        finished = results
        rows = open_index(out).rows()
        assert len(rows) == 4, [row["run"] for row in rows]  # dino, swav and two floors
        trained = [row for row in rows if row["method"] in ("dino", "swav")]
        assert sorted(row["method"] for row in trained) == ["dino", "swav"]
        for row in trained:
            assert row["status"] == "evaluated" and row["device"].startswith("2 x cpu"), row
    table = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert {line.split("|")[1].strip() for line in table[1:]} >= {"dino", "swav"}


if __name__ == "__main__":  # one rank of _spawn
    _worker(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
