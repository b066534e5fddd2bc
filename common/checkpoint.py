"""Checkpoints a long run resumes from, so a crash in hour 19 costs minutes, not a day.

A checkpoint holds the model, optimizer, schedule, grad scaler, where the run stood
(global step, epoch, batches done in the epoch), the random state, the evaluations so
far and the clocks so far (over all ranks). Rank 0 writes it to a temporary file and
renames it, so a crash mid-write leaves the previous checkpoint whole.

It lives at `--out/checkpoints/<case>-<nodes>x<devices>-<fingerprint>.pt`; the
fingerprint is a hash of every flag that shapes the run (not --out, --workers and the
like), so `--resume auto` (the default) picks up only a run of the same command and
size. Once a run has finished, its checkpoint is removed (kept, as `...-final.pt`,
with --keep-checkpoint). Every rank reads the file itself: with several nodes, --out
must be storage they all see.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import sys
import tempfile

import torch

from common import dist
from common.errors import UserError

# flags that change how a run is carried out or reported, not what it computes
OPERATIONAL = {"out", "resume", "keep_checkpoint", "checkpoint_every", "debug", "print_freq",
               "workers", "lang", "monitor_interval", "skip_bad_images", "device",
               "dist_timeout", "profile"}


def fingerprint(args):
    shaping = {k: v for k, v in sorted(vars(args).items()) if k not in OPERATIONAL}
    return hashlib.sha1(json.dumps(shaping, default=str).encode()).hexdigest()[:10]


def default_path(args, run):
    case = os.path.basename(os.path.dirname(os.path.abspath(sys.argv[0])))
    return os.path.join(args.out, "checkpoints",
                        f"{case}-{run.config}-{fingerprint(args)}.pt")


def rng_state(device):
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "device": device.rng_state()}


def set_rng_state(state, device):
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    device.set_rng_state(state.get("device"))


def _sharded_state(model, optimizer):
    """Full (unsharded) model and optimizer state from an FSDP2 model, on rank 0's CPU;
    every rank must call it."""
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_state_dict)
    return get_state_dict(model, optimizer,
                          options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def _load_sharded(model, optimizer, model_sd, optim_sd):
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_state_dict)
    set_state_dict(model, optimizer, model_state_dict=model_sd, optim_state_dict=optim_sd,
                   options=StateDictOptions(full_state_dict=True))


class Checkpointer:
    """Saves and restores one training run's state; see the module docstring."""

    def __init__(self, run, args, *, model, optimizer, scheduler, scaler, sharded=False):
        self.run, self.args = run, args
        self.model, self.optimizer, self.scheduler, self.scaler = model, optimizer, scheduler, scaler
        self.sharded = sharded
        self.path = default_path(args, run)
        if args.checkpoint_every is None:  # a speed-only run has nothing worth resuming
            args.checkpoint_every = (0, None) if args.synthetic else (1, "epoch")
        self.count, self.unit = args.checkpoint_every

    def due(self, step, epoch_done):
        """True when the cadence asks for a checkpoint now: after optimizer step `step`,
        or at the end of an epoch (epoch_done = epochs finished so far)."""
        if self.unit == "step":
            return epoch_done is None and step % self.count == 0
        if self.unit == "epoch":
            return epoch_done is not None and epoch_done % self.count == 0
        return False

    def save(self, *, step, epoch, batch, evals, clocks_state, extra=None, path=None):
        """Every rank calls it (the clocks and a sharded model are gathered); rank 0 writes."""
        if self.sharded:
            model_sd, optim_sd = _sharded_state(self.model, self.optimizer)
        else:
            model_sd, optim_sd = self.model.state_dict(), self.optimizer.state_dict()
        path = path or self.path
        if self.run.is_main:
            state = {
                "fingerprint": fingerprint(self.args), "config": self.run.config,
                "step": step, "epoch": epoch, "batch": batch, "evals": evals,
                "model": model_sd, "optimizer": optim_sd,
                "scheduler": self.scheduler.state_dict() if self.scheduler else None,
                "scaler": self.scaler.state_dict(), "rng": rng_state(self.run.device),
                "clocks": clocks_state, **(extra or {}),
            }
            write_atomically(state, path)
        dist.barrier(self.run)  # nobody runs ahead while rank 0 writes
        return path

    def find(self):
        """The checkpoint to resume from, or None to start afresh."""
        resume = self.args.resume
        if resume == "never":
            return None
        if resume == "auto":
            return self.path if os.path.isfile(self.path) else None
        if not os.path.isfile(resume):
            raise UserError(f"--resume {resume}: no such file; give a checkpoint from "
                            f"{os.path.join(self.args.out, 'checkpoints')}, or --resume auto")
        return resume

    def load(self):
        """Restore the state of the checkpoint found; returns it (None when none)."""
        path = self.find()
        if path is None:
            return None
        state = read(path)
        if self.sharded:
            _load_sharded(self.model, self.optimizer, state["model"], state["optimizer"])
        else:
            try:
                self.model.load_state_dict(state["model"])
            except RuntimeError as e:
                raise UserError(f"--resume {path}: its model does not fit this one "
                                f"({str(e).splitlines()[0][:120]}); resume with the command "
                                f"that wrote it, or --resume never") from None
            self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"], self.run.device)
        if state["fingerprint"] != fingerprint(self.args) or state["config"] != self.run.config:
            dist.print0(self.run, f"warning: {path} was written by another command or size "
                                  f"({state['config']}); continuing from it as asked")
        return {**state, "path": path}

    def remove(self):
        """The run ended well: its checkpoint has served (the final state is kept only
        with --keep-checkpoint, written beside it)."""
        if self.run.is_main and os.path.isfile(self.path):
            os.remove(self.path)


def write_atomically(obj, path):
    """torch.save to a temporary file in the same folder, fsync, rename."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".tmp-",
                               suffix=".pt")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read(path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, not a torch file, or carrying code
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise UserError(f"--resume {path}: not a readable checkpoint ({first}); "
                        f"use --resume never to start afresh") from None
