"""A compact history of a run, kept in its record for the plots (common/plots.py).

Training keeps the loss and the step rate of each progress line (every --print-freq
steps: reading the loss there costs no extra sync), and every run keeps the hardware
monitor's samples of its node; each series is cut down to at most POINTS points,
evenly spread, so a record stays small however long the run. The rates here are
progress figures: the record's throughput figures come from the clocks.
"""
from __future__ import annotations

import statistics

POINTS = 300
GiB = 1024 ** 3
STEP_COLUMNS = ("step", "t_s", "loss", "img_per_s")
MONITOR_COLUMNS = ("t_s", "power_w", "util_pct", "device_mem_gib", "host_cpu_pct",
                   "host_mem_gib")


def downsample(rows, n=POINTS):
    """At most n of the rows, evenly spread, the first and the last kept."""
    rows = list(rows)
    if len(rows) <= n:
        return rows
    keep = sorted({round(i * (len(rows) - 1) / (n - 1)) for i in range(n)})
    return [rows[i] for i in keep]


def series(columns, rows):
    return {"columns": list(columns), "rows": downsample(rows)}


def _sample_row(sample, t0):
    """One monitor sample as a MONITOR_COLUMNS row: power summed over the node's
    devices, utilisation their mean, memory the fullest device's."""
    t, devices, cpu, mem = sample
    readings = devices or []
    power = [r["power_w"] for r in readings]
    util = [r["util_pct"] for r in readings if r["util_pct"] is not None]
    dev_mem = [r["mem_bytes"] for r in readings if r["mem_bytes"] is not None]
    return [round(t - t0, 3),
            sum(power) if power and None not in power else None,
            statistics.fmean(util) if util else None,
            max(dev_mem) / GiB if dev_mem else None,
            cpu, None if mem is None else mem / GiB]


def monitor_series(mon, t0):
    """The samples of this node's monitor (None where there is none), seconds from t0."""
    if mon is None or not mon.samples:
        return None
    return series(MONITOR_COLUMNS, (_sample_row(s, t0) for s in list(mon.samples)))


def window_s(window, t0):
    """A perf_counter window as seconds from t0, for shading it in a plot."""
    return None if window is None else [round(window[0] - t0, 3), round(window[1] - t0, 3)]
