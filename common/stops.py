"""Why a training run stops before its last step: a signal, a non-finite loss, or a
step that failed for a reason the user can fix.

The loop asks for a stop only at the steps where the ranks agree (common/train_loop.py);
the signal handler only notes the signal (a second Ctrl-C aside), so that no step is
cut in half.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
from dataclasses import dataclass

from common.errors import UserError

PR_SET_PDEATHSIG = 1  # linux/prctl.h


class StopRequest:
    """SIGTERM, SIGHUP (a closed terminal or ssh session) or Ctrl-C asks the run to stop
    at the next agreed step, write its checkpoint and an incomplete record, and exit; a
    second Ctrl-C stops at once. A rank under torchrun also gets SIGTERM when torchrun
    dies (end_with_the_launcher)."""

    def __init__(self):
        self.signal = 0
        self._old = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
            end_with_the_launcher()

    def _handle(self, signum, frame):
        if self.signal and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signum  # the loader's workers ignore it (data.py): they carry on

    def close(self):
        """The handlers as they were; once a signal has stopped the run, SIGTERM and SIGHUP
        stay noted, not fatal, while the checkpoint and record are written (a launcher's
        death is told once per thread it had; scancel may signal twice)."""
        for sig, handler in self._old.items():
            if not (self.signal and sig != signal.SIGINT):
                signal.signal(sig, handler)


def end_with_the_launcher():
    """Under torchrun, SIGTERM to this rank when torchrun dies (Linux's PR_SET_PDEATHSIG).
    torchrun starts each rank in a session of its own, so a SIGKILL to the launcher
    (or to the process group of run_all.sh and its children) reaches no rank: without
    this the rank trains on unseen, and the same command run again meets it writing
    the checkpoint it should resume from. A launcher already gone is as good as dead."""
    if "TORCHELASTIC_RUN_ID" not in os.environ or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # no prctl: the rank keeps running, as before
        return
    if os.getppid() == 1:
        os.kill(os.getpid(), signal.SIGTERM)


@dataclass(frozen=True)
class Stop:
    """Why training ended: 'epochs', 'max_steps', 'target_acc', 'nan' (the loss was
    not finite first at `step`) or 'interrupted' (by `signal`)."""
    reason: str
    step: int = 0
    signal: int = 0


def failed_step(error, run, args):
    """The one-line UserError for a failed step the user can fix, else None."""
    if run.device.is_out_of_memory(error):
        # this rank's figures only: a collective now could meet other ranks mid-step
        peak = run.device.peak_memory() or 0
        return UserError(f"out of device memory at --batch-size {args.batch_size} per device "
                         f"(peak {peak / 1024 ** 3:.1f} of "
                         f"{run.device.total_memory() / 1024 ** 3:.1f} GiB reserved on "
                         f"{run.device.label}); use a smaller --batch-size")
    if "more than 1 value per channel" in str(error):  # batch norm over a single value
        return UserError(f"--batch-size {args.batch_size} at --image-size {args.image_size}: "
                         f"batch norm needs more than one value per channel to train; give "
                         f"a larger --batch-size or --image-size")
    return None
