"""Why a training run stops before its last step: a signal, a non-finite loss, or a
step that failed for a reason the user can fix.

The loop asks for a stop only at the steps where the ranks agree (common/train_loop.py);
the signal handler only notes the signal (a second Ctrl-C aside), so that no step is
cut in half.
"""
from __future__ import annotations

import signal
import threading
from dataclasses import dataclass

from common.errors import UserError


class StopRequest:
    """SIGTERM, SIGHUP (a closed terminal or ssh session) or Ctrl-C asks the run to stop
    at the next agreed step, write its checkpoint and an incomplete record, and exit; a
    second Ctrl-C stops at once."""

    def __init__(self):
        self.signal = 0
        self._old = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        if self.signal and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signum  # the loader's workers ignore it (data.py): they carry on

    def close(self):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


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
