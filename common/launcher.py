"""Where this process sits among the ranks, from the launcher's environment; no torch,
so the flag checks can ask before torch loads.

- `torchrun --nnodes N --nproc_per_node P script.py` sets RANK, LOCAL_RANK, WORLD_SIZE and
  LOCAL_WORLD_SIZE (and MASTER_ADDR/MASTER_PORT).
- `srun` (SLURM, one task per device) sets SLURM_PROCID, SLURM_LOCALID, SLURM_NTASKS and
  SLURM_NTASKS_PER_NODE; MASTER_ADDR must be exported by the batch script (see
  common/slurm.sbatch), MASTER_PORT defaults to 29500.
- plain `python script.py` is rank 0 of 1.
"""
from __future__ import annotations

import os

from common.errors import UserError


def _slurm_tasks_per_node(env, world_size):
    # SLURM_NTASKS_PER_NODE is set with --ntasks-per-node; SLURM_TASKS_PER_NODE ("8(x2)") always
    for key in ("SLURM_NTASKS_PER_NODE", "SLURM_TASKS_PER_NODE"):
        if env.get(key):
            return int(env[key].split("(")[0].split(",")[0])
    return world_size // int(env.get("SLURM_NNODES", 1))


def world_from_env(env=os.environ):
    """(rank, local_rank, world_size, local_world_size) from torchrun, srun, or neither."""
    if "RANK" in env:
        world_size = int(env.get("WORLD_SIZE", 1))
        return (int(env["RANK"]), int(env.get("LOCAL_RANK", 0)), world_size,
                int(env.get("LOCAL_WORLD_SIZE", world_size)))
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", 1)) > 1:
        world_size = int(env["SLURM_NTASKS"])
        if "MASTER_ADDR" not in env:
            raise UserError("srun without torchrun: export MASTER_ADDR (the first node's "
                            "address) in the batch script, as common/slurm.sbatch does")
        os.environ.setdefault("MASTER_PORT", "29500")
        return (int(env["SLURM_PROCID"]), int(env.get("SLURM_LOCALID", 0)), world_size,
                _slurm_tasks_per_node(env, world_size))
    return 0, 0, 1, 1
