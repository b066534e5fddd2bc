"""Distributed setup from torchrun's environment, and the few collectives the suite needs.

`torchrun --nnodes N --nproc_per_node P script.py` sets RANK, LOCAL_RANK, WORLD_SIZE and
LOCAL_WORLD_SIZE; plain `python script.py` runs as one process with no process group.
"""
from __future__ import annotations

import datetime
import json
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from common import device as devices


@dataclass
class Run:
    rank: int
    local_rank: int
    world_size: int
    local_world_size: int
    device: devices.Device

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
    env = os.environ
    rank = int(env.get("RANK", 0))
    world_size = int(env.get("WORLD_SIZE", 1))
    local_rank = int(env.get("LOCAL_RANK", 0))
    local_world_size = int(env.get("LOCAL_WORLD_SIZE", world_size))
    dev = devices.select(requested_device, local_rank)
    if world_size > 1:
        # a rank that dies makes the others fail after timeout_s instead of hanging
        dist.init_process_group(backend=dev.backend, rank=rank, world_size=world_size,
                                timeout=datetime.timedelta(seconds=timeout_s))
    return Run(rank, local_rank, world_size, local_world_size, dev)


def start(args):
    """setup() for a script's args: device, process group, precision, seed; prints the config."""
    run = setup(args.device)
    run.device.set_precision(args.precision)
    torch.manual_seed(args.seed)
    print0(run, "config:", json.dumps(vars(args)))
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
