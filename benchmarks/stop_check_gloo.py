"""What the per-step stop/clock agreement costs under torchrun:
``Topology.max_over_ranks`` of two integers on the CPU gloo group, 2 processes on this
machine.

Run: ``OMP_NUM_THREADS=1 python benchmarks/stop_check_gloo.py [--port 29533]``.
"""

import argparse
import os
import time

import torch.distributed as dist
import torch.multiprocessing as mp

from sslreg import distributed

CALLS = 2000


def work(rank: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    topology = distributed.current()
    for _ in range(50):  # warm-up, and the group is made
        topology.max_over_ranks(0, 0)
    started = time.perf_counter()
    for _ in range(CALLS):
        topology.max_over_ranks(0, 1)
    if rank == 0:
        spent = (time.perf_counter() - started) / CALLS
        print(f"{spent * 1e6:.0f} us per max_over_ranks, 2 gloo processes")
    dist.destroy_process_group()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=29533)
    mp.spawn(work, args=(parser.parse_args().port,), nprocs=2)
