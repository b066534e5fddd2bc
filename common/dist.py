"""Distributed setup from the launcher's environment (common/launcher.py), and the few
collectives the suite needs. Plain `python script.py` runs as one process with no
process group. The configuration a record reports (nodes x devices) comes from the
launcher, never from a flag.
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass

import torch
import torch.distributed as dist

from common import device as devices
from common.launcher import world_from_env
from common.precision import PRECISIONS, Precision


@dataclass
class Run:
    rank: int
    local_rank: int
    world_size: int
    local_world_size: int
    device: devices.Device
    # --precision as every later line needs it, resolved once by start()
    precision: Precision = PRECISIONS["fp32"]

    @property
    def nodes(self):
        return self.world_size // self.local_world_size

    @property
    def is_main(self):
        return self.rank == 0

    @property
    def distributed(self):
        return self.world_size > 1

    @property
    def config(self):
        """nodes x devices per node, from the real world size."""
        return f"{self.nodes}x{self.local_world_size}"


def setup(requested_device="auto", timeout_s=600):
    rank, local_rank, world_size, local_world_size = world_from_env()
    dev = devices.select(requested_device, local_rank)
    if world_size > 1:
        # a rank that dies makes the others fail after timeout_s instead of hanging
        dist.init_process_group(backend=dev.backend, init_method="env://", rank=rank,
                                world_size=world_size,
                                timeout=datetime.timedelta(seconds=timeout_s))
    return Run(rank, local_rank, world_size, local_world_size, dev)


def start(args):
    """setup() for a script's args: device, process group, precision, seed. The header
    comes later (common.progress), once data and batch have settled the config."""
    run = setup(args.device, args.dist_timeout)
    run.precision = PRECISIONS[args.precision]
    run.device.set_precision(run.precision)
    torch.manual_seed(args.seed)
    return run


def teardown(run):
    if run.distributed and dist.is_initialized():
        dist.destroy_process_group()


def print0(run, *args, **kwargs):
    if run.is_main:
        print(*args, **kwargs, flush=True)


def _reduce(run, values, op):
    if not run.distributed:
        return [float(v) for v in values]
    # nccl-like backends reduce device tensors, gloo reduces host tensors
    where = "cpu" if run.device.backend == "gloo" else run.device.torch_device
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=where)
    dist.all_reduce(t, op=op)
    return t.tolist()


def sum_all(run, values):
    return _reduce(run, values, dist.ReduceOp.SUM)


def max_all(run, values):
    return _reduce(run, values, dist.ReduceOp.MAX)


def barrier(run):
    if run.distributed:
        dist.barrier()


def memory_figures(run):
    """mem of docs/METRICS.md: the largest peak any rank's allocator reserved and the device's
    total memory, in GiB; the peak is None where the device cannot tell it."""
    peak = run.device.peak_memory()
    (most,) = max_all(run, [-1 if peak is None else peak])
    return {"mem_peak_gib": most / 1024 ** 3 if most >= 0 else None,
            "mem_total_gib": run.device.total_memory() / 1024 ** 3}
