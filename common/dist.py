"""Distributed setup from the launcher's environment (common/launcher.py), and the few
collectives the suite needs. Plain `python script.py` runs as one process with no
process group. The configuration a record reports (nodes x devices) comes from the
launcher, never from a flag.
"""
from __future__ import annotations

import datetime
import os
import re
import time
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
    # where this rank is, in words, where a step does not say it (evaluating, a pass):
    # what a collective that times out there says it waited at (common/left_behind.py)
    phase: str | None = None
    # a training run's MLPerf log (common/mlperf_log.py), which record.finish writes
    mlperf_log: object = None

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


def _backend_env(kind):
    """The shim's settings for how the backend meets a timed-out collective, where the
    user has not set them; torch before 2.2 reads nccl's variables without TORCH_."""
    renamed = tuple(int(n) for n in re.findall(r"\d+", torch.__version__)[:2]) >= (2, 2)
    for name, value in kind.dist_env:
        os.environ.setdefault(name if renamed else name.removeprefix("TORCH_"), value)


def setup(requested_device="auto", timeout_s=600):
    rank, local_rank, world_size, local_world_size = world_from_env()
    dev = devices.select(requested_device, local_rank)
    if world_size > 1:
        _backend_env(dev.kind)
        # a rank that dies makes the others fail after timeout_s instead of hanging
        dist.init_process_group(backend=dev.backend, init_method="env://", rank=rank,
                                world_size=world_size,
                                timeout=datetime.timedelta(seconds=timeout_s))
    return Run(rank, local_rank, world_size, local_world_size, dev)


def start(args):
    """setup() for a script's args: device, process group, precision, kernels tuned to
    fixed shapes, seed. The header comes later (common.progress), once data and batch
    have settled the config."""
    run = setup(args.device, args.dist_timeout)
    run.precision = PRECISIONS[args.precision]
    run.device.set_precision(run.precision)
    run.device.tune_for_fixed_shapes()
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


def answering(run, window_s):
    """After a collective timed out: the ranks still there to say so, each through the
    process group's own store (a collective would wait for the lost rank again), within
    window_s; None where the store does not answer either (its host was lost)."""
    get_store = getattr(dist.distributed_c10d, "_get_default_store", None)
    keys = [f"bench/answered/{r}" for r in range(run.world_size)]
    try:
        store = get_store()
        store.set_timeout(datetime.timedelta(seconds=window_s))  # a lost host: raise
        store.set(keys[run.rank], "1")
        deadline = time.monotonic() + window_s
        while True:  # polled: the store's own wait logs a warning when it times out
            answered = [r for r, key in enumerate(keys) if store.check([key])]
            if len(answered) == run.world_size or time.monotonic() > deadline:
                return answered
            time.sleep(0.2)
    except (RuntimeError, TypeError):  # the store's host is gone, or this torch has none
        return None


def memory_figures(run, gather=True):
    """mem of docs/METRICS.md: the largest peak any rank's allocator reserved and the device's
    total memory, in GiB; the peak is None where the device cannot tell it. gather=False:
    this rank's own peak, where the other ranks cannot be asked."""
    peak = run.device.peak_memory()
    mine = [-1 if peak is None else peak]
    (most,) = max_all(run, mine) if gather else mine
    total = run.device.total_memory()
    return {"mem_peak_gib": most / 1024 ** 3 if most >= 0 else None,
            "mem_total_gib": total / 1024 ** 3,
            "mem_peak_bytes": int(most) if most >= 0 else None, "mem_total_bytes": total}
