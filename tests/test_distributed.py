"""Two CPU processes (gloo) give what one process gives: 2 ranks x B/2 == 1 rank x B."""

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from sslreg import StepOutput, distributed
from sslreg.objectives import BarlowTwinsLoss, InfoNCELoss, NTXentLoss, VICRegLoss

WORLD = 2
BATCH, DIM_IN, DIM_OUT = 8, 10, 6
TIMEOUT_S = 60


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


def _step(model, name, x1, x2, queue):
    """Loss and gradients (inputs, then the layer's parameters) of one objective."""
    x1, x2 = x1.clone().requires_grad_(), x2.clone().requires_grad_()
    z1, z2 = model(torch.cat([x1, x2])).chunk(2)
    objectives = _objectives()
    if name == "info_nce_queue":
        loss = objectives["info_nce"](z1, z2, queue)
    else:
        loss = objectives[name](z1, z2)
    loss.backward()
    layer = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    return {"loss": loss.detach(), "x1": x1.grad, "x2": x2.grad,
            "weight": layer.weight.grad.clone(), "bias": layer.bias.grad.clone()}


NAMES = ["nt_xent", "info_nce", "info_nce_queue", "barlow_twins", "vicreg"]


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


def _worker(rank, port, folder):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD))
    torch.set_num_threads(1)
    distributed.init(torch.device("cpu"))
    x1, x2, queue = _inputs()
    rows = distributed.shard(torch.arange(BATCH))
    results = {}
    for name in NAMES:
        model = nn.parallel.DistributedDataParallel(_layer())
        results[name] = _step(model, name, x1[rows], x2[rows], queue)
    toy = _Toy()
    step = distributed.data_parallel(toy, torch.device("cpu"))
    results["engine"] = _engine_steps(step, toy, x1[rows], x2[rows])
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
    expected = _step(_layer(), name, x1, x2, queue)
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


def test_one_process_is_untouched():
    assert distributed.world_size() == 1 and distributed.is_main()
    rows = torch.arange(6)
    z = torch.randn(4, 3)
    assert distributed.shard(rows) is rows and distributed.gather_with_grad(z) is z
    assert distributed.data_parallel(nn.Linear(2, 2), torch.device("cpu")) is None


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


if __name__ == "__main__":  # one rank of _spawn
    _worker(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
