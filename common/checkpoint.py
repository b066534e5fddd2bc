"""Checkpoints a long run resumes from, so a crash in hour 19 costs minutes, not a day.

A checkpoint holds the model, optimizer, schedule, grad scaler, where the run stood
(global step, epoch, batches done in the epoch), the random state, the evaluations so
far and the clocks so far (over all ranks). Rank 0 writes it to a temporary file and
renames it, so a crash mid-write leaves the previous checkpoint whole.

It lives at `--out/checkpoints/<case>-<nodes>x<devices>-<fingerprint>.pt`; the
fingerprint is a hash of every flag that shapes the run (not --out, --workers and the
like), so `--resume auto` (the default) picks up only a run of the same command and
size; paths in it are resolved first, so `data/`, `./data` and a symlink to it are one
run. One run at a time owns a checkpoint: rank 0 holds an flock on `<checkpoint>.lock`
(released by the system when its process ends, however it ends), and a second run of
the same command and --out stops at once instead of resuming from a live run's file.
Once a run has finished and its record is written, its checkpoint is removed (kept, as
`...-final.pt`, with --keep-checkpoint). Every rank reads the file itself: with several
nodes, --out must be storage they all see.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import random
import sys

import torch

from common import dist, files
from common.errors import UserError
from common.weights import mismatch

# flags that change how a run is carried out or reported, not what it computes
OPERATIONAL = {"out", "resume", "keep_checkpoint", "checkpoint_every", "debug", "print_freq",
               "workers", "lang", "monitor_interval", "skip_bad_images", "device",
               "dist_timeout", "profile",
               # both paths give the very same crops: a run may resume on the other
               "decode", "decoding"}
# flags that name a file or folder: the same one however it is spelt
PATHS = {"data_dir", "weights"}
# flags only some scripts have, which the parser sets to None for the others: left out
# while None, so that a script's checkpoints keep the name they had before it set them
SOME_SCRIPTS = {"model", "weights", "total_steps"}


def _resolved(key, value):
    if key in PATHS and isinstance(value, str) and os.path.exists(value):
        return os.path.realpath(value)
    return value


def fingerprint(args):
    shaping = {k: _resolved(k, v) for k, v in sorted(vars(args).items())
               if k not in OPERATIONAL and not (k in SOME_SCRIPTS and v is None)}
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
        self.lock = _own(self.path, run, args)
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
                "clocks": clocks_state, "batch_size": self.args.batch_size, **(extra or {}),
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
        return resume  # cli's check_resume found it at start-up

    def load(self):
        """Restore the state of the checkpoint found; returns it (None when none)."""
        path = self.find()
        if path is None:
            return None
        state = read(path)
        self._check_fits(state, path)
        if self.sharded:
            _load_sharded(self.model, self.optimizer, state["model"], state["optimizer"])
        else:
            try:
                self.model.load_state_dict(state["model"])
            except RuntimeError:  # torch's message lists every key; the first one says it
                raise UserError(f"--resume {path}: "
                                f"{mismatch(state['model'], self.model.state_dict())}: a "
                                f"checkpoint of another model or class count; resume with "
                                f"the command that wrote it, or --resume never") from None
            self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"], self.run.device)
        if state["fingerprint"] != fingerprint(self.args) or state["config"] != self.run.config:
            dist.print0(self.run, f"warning: {path} was written by another command or size "
                                  f"({state['config']}); continuing from it as asked")
        return {**state, "path": path}

    def _check_fits(self, state, path):
        """A file this suite's checkpoints are not (a weights file), or one whose
        position means other batches (another batch size), is refused in one line."""
        if not isinstance(state, dict) or not {"model", "step", "fingerprint"} <= state.keys():
            raise UserError(f"--resume {path}: a weights file, not a training checkpoint "
                            f"(it has no step, optimizer or clocks); give a checkpoint from "
                            f"{os.path.join(self.args.out, 'checkpoints')}, or --resume never")
        written = state.get("batch_size")
        if written is not None and written != self.args.batch_size:
            raise UserError(f"--resume {path}: written at --batch-size {written}, this run has "
                            f"--batch-size {self.args.batch_size}; its position in the epoch "
                            f"means other batches: resume with --batch-size {written}, or "
                            f"--resume never")

    def kept(self, resumed=None):
        """What a run that ends now keeps, in words: the checkpoint on disk (its own, or
        the one it resumed from, as its `resumed` block names it), its step, and the
        command that goes on."""
        own = os.path.isfile(self.path)
        path = self.path if own else (resumed or {}).get("checkpoint")
        step = step_of(path) if path else None
        if step is None:
            return ("no checkpoint was written yet (see --checkpoint-every); the same "
                    "command starts afresh")
        # --resume auto finds the run's own checkpoint; --resume PATH takes PATH again
        same = self.args.resume == "auto" or (not own and path == self.args.resume)
        how = "the same command" if same else "the command with --resume auto"
        return f"the last checkpoint (step {step}, {path}) is kept: {how} resumes from it"

    def remove(self):
        """The run ended well and its record is on disk: its checkpoint has served (the
        final state is kept only with --keep-checkpoint, written beside it)."""
        if self.run.is_main and os.path.isfile(self.path):
            os.remove(self.path)
        if self.lock is not None:  # still held: a run starting now makes a new one
            os.remove(self.lock.name)
            _HELD.pop(self.lock.name, None)
            self.lock.close()


def _own(path, run, args):
    """Rank 0's lock on the checkpoint `path` (an open file holding an flock), agreed by
    every rank: a live run of the same command and --out stops this one here."""
    lock_path = os.path.splitext(path)[0] + ".lock"
    held = _HELD.get(lock_path)  # this process runs the command again (a test, a sweep)
    if run.is_main and held is None:
        try:
            os.makedirs(os.path.dirname(os.path.abspath(lock_path)), exist_ok=True)
            held = open(lock_path, "a+")
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            held.close()
            held = None
        except OSError as e:
            raise files.write_failure("--out", lock_path, e) from None
    (busy,) = dist.max_all(run, [1 if run.is_main and held is None else 0])
    if busy:
        raise UserError(f"--out {args.out}: another run of this command is writing "
                        f"{path} now (it holds {lock_path}); wait for it to end, or give "
                        f"this run another --out")
    if held is not None:  # kept until the process ends: past train(), while the record is written
        _HELD[lock_path] = held
    return held


_HELD = {}


def write_atomically(obj, path):
    """torch.save to a temporary file in the same folder, fsync, rename; a failure is
    one line naming the file and the cause (a full disk, a read-only one, ...)."""
    try:
        files.write_atomically(path, lambda f: torch.save(obj, f), binary=True)
    except (OSError, RuntimeError) as e:
        cause = _os_error(e, path)
        if cause is None:
            raise
        raise files.write_failure("checkpoint", path, cause) from None


def _os_error(e, path):
    """The OSError behind a failed torch.save, or None; torch's zip writer can hide it
    in a RuntimeError ('enforce fail at inline_container.cc'), so then the disk is asked
    whether it is full."""
    while e is not None and not isinstance(e, OSError):
        e = e.__cause__ or e.__context__
    if e is not None:
        return e
    stats = os.statvfs(os.path.dirname(os.path.abspath(path)))
    if stats.f_bavail * stats.f_frsize < 1024 ** 2:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return None


def step_of(path):
    """The step a checkpoint on disk holds, its tensors left unread (mapped, not
    loaded); None where there is no readable checkpoint."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return state.get("step") if isinstance(state, dict) else None
    except Exception:  # noqa: BLE001  (no file, a partial one, not a torch file)
        return None


def read(path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, not a torch file, or carrying code
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise UserError(f"--resume {path}: not a readable checkpoint ({first}); "
                        f"use --resume never to start afresh") from None
