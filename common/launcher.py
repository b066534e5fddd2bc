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


def _whole(env, key, default=None):
    """The environment variable `key` as a whole number (`default` where unset); a value
    that is none is one line naming it: a launcher sets these, a stale export breaks them."""
    try:
        return int(env[key]) if key in env else default
    except ValueError:
        raise UserError(f"{key}={env[key]!r}: not a whole number; launch with torchrun or "
                        f"srun, or unset {key} for one process") from None


def _torchrun_world(env):
    """(rank, local_rank, world_size, local_world_size) of RANK and the rest, checked: a
    shell with RANK and WORLD_SIZE left over from another job would wait for peers that
    never come, or fail in torch's rendezvous with a traceback."""
    rank, world_size = _whole(env, "RANK"), _whole(env, "WORLD_SIZE", 1)
    local_rank = _whole(env, "LOCAL_RANK", 0)
    local_world_size = _whole(env, "LOCAL_WORLD_SIZE", world_size)
    if not (0 <= rank < world_size and 0 <= local_rank < local_world_size):
        raise UserError(f"RANK={rank}, LOCAL_RANK={local_rank} do not fit WORLD_SIZE="
                        f"{world_size}, LOCAL_WORLD_SIZE={local_world_size}; launch with "
                        f"torchrun, or unset RANK for one process")
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if world_size > 1 and k not in env]
    if missing:
        raise UserError(f"RANK={rank} of WORLD_SIZE={world_size} without {' and '.join(missing)}: "
                        f"launch with torchrun (it sets them all), or unset RANK and "
                        f"WORLD_SIZE for one process")
    return rank, local_rank, world_size, local_world_size


def world_from_env(env=os.environ):
    """(rank, local_rank, world_size, local_world_size) from torchrun, srun, or neither."""
    if "RANK" in env:
        return _torchrun_world(env)
    if "SLURM_PROCID" in env and _whole(env, "SLURM_NTASKS", 1) > 1:
        world_size = int(env["SLURM_NTASKS"])
        if "MASTER_ADDR" not in env:
            raise UserError("srun without torchrun: export MASTER_ADDR (the first node's "
                            "address) in the batch script, as common/slurm.sbatch does")
        os.environ.setdefault("MASTER_PORT", "29500")
        return (int(env["SLURM_PROCID"]), int(env.get("SLURM_LOCALID", 0)), world_size,
                _slurm_tasks_per_node(env, world_size))
    return 0, 0, 1, 1
