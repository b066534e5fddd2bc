"""Where the time goes: torch.profiler over warm-up steps, never over timed ones.

With --profile, the warm-up steps from the second (the first holds one-off costs:
compiling, autotuning, the allocator growing) to the one before the timed region run
under torch.profiler, and it is stopped and its table written before the clocks start. The record gets the operators that took the most device time (self time on
the device; on a CPU, self CPU time) with their share, and the full table is written
beside the record as <out>/profile-<pid>.txt.
"""
from __future__ import annotations

import os

from torch.profiler import ProfilerActivity, profile

TOP = 12


def start(run):
    """A running profiler over the host and, where the device has one, the device."""
    activities = [ProfilerActivity.CPU]
    on_device = run.device.kind.profiler_activity
    if on_device:
        activities.append(getattr(ProfilerActivity, on_device))
    prof = profile(activities=activities, record_shapes=False)
    prof.start()
    return prof


def finish(prof, run, out_dir):
    """Stop the profiler; the top operators for the record, the whole table to a file."""
    if prof is None:
        return None
    run.device.synchronize()
    prof.stop()
    on_device = run.device.kind.profiler_activity
    key = "self_device_time_total" if on_device else "self_cpu_time_total"
    events = [e for e in prof.key_averages() if getattr(e, key, 0) > 0]
    total = sum(getattr(e, key) for e in events) or 1
    top = sorted(events, key=lambda e: getattr(e, key), reverse=True)[:TOP]
    path = None
    if run.is_main:
        os.makedirs(out_dir, exist_ok=True)
        path = os.path.join(out_dir, f"profile-{os.getpid()}.txt")
        sort = f"self_{on_device.lower()}_time_total" if on_device else "self_cpu_time_total"
        with open(path, "w") as f:
            f.write(prof.key_averages().table(sort_by=sort, row_limit=40))
    return {"clock": "device" if on_device else "cpu", "table": path,
            "top": [{"op": e.key, "ms": getattr(e, key) / 1000, "share": getattr(e, key) / total}
                    for e in top]}

