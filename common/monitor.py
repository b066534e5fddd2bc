"""Hardware monitor: a background sampler of this node's devices and its host.

One sampler per node (local rank 0) reads, every `--monitor-interval` seconds, the
memory used, utilisation, power and temperature of each device the node's ranks use,
and the host's CPU utilisation and memory in use (/proc/stat, /proc/meminfo). Device
figures come from the first of the chip's monitoring tools (its Kind in the device shim)
that answers; where none does, the device cells stay empty (None) and `reason` says why.

The summary of a window (perf_counter start .. end: the timed region of training, or
one inference pass) is gathered over the nodes and holds:

    power_max_w          highest power of any one device in a sample
    power_mean_w         energy_j / (window seconds x devices): mean power per device
    energy_j             power integrated over the window (trapezoids, power linear
                         between samples), summed over the devices of every node
    energy_per_image_j   energy_j / images processed in the window by all ranks
    device_mem_peak_gib  highest memory used on any one device as its tool sees it
                         (the whole device, every process; not the allocator's `mem`)
    device_util_mean_pct mean utilisation over the samples and devices
    device_temp_max_c    highest temperature of any device
    host_cpu_mean_pct, host_cpu_max_pct   host CPU busy share, over nodes and samples
    host_mem_peak_gib    highest host memory in use (MemTotal - MemAvailable) of a node
"""
from __future__ import annotations

import bisect
import threading
import time

from common import dist, kinds
from common.vendor_tools import EMPTY, MiB, TOOL_TIMEOUT_S  # noqa: F401  (readings' units)

GiB = 1024 ** 3


def open_device_source(chip, ids):
    """(name, read) of the first of the chip's monitoring tools that answers, or (None,
    reason). `chip` is a kinds.Kind, or a torch device type (every kind of that type)."""
    device_type = chip.type if isinstance(chip, kinds.Kind) else chip
    if not ids:
        return None, f"no accelerator to sample on a {device_type} run"
    tried = []
    for tool in kinds.monitor_tools(chip):
        try:
            return tool.name, tool.open(ids)
        except Exception as e:  # a missing module, tool, driver or field: try the next
            tried.append(f"{tool.name}: {str(e).strip() or type(e).__name__}"[:160])
    return None, "; ".join(tried) or f"no monitoring tool for {device_type} devices"


# host

def read_cpu_times():
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    # guest time is already inside user and nice
    total = sum(values[:8])
    return total - idle, total


def read_host_mem_bytes():
    """Memory in use: MemTotal - MemAvailable, from /proc/meminfo."""
    info = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, value = line.split(":", 1)
            info[key] = int(value.split()[0]) * 1024  # kB
    return info["MemTotal"] - info["MemAvailable"]


class Monitor:
    """A daemon thread that samples every `interval` seconds until `stop()`.
    samples: (perf_counter, [device readings], host cpu %, host memory bytes)."""

    def __init__(self, chip, ids, interval=1.0):
        # chip: a kinds.Kind, or a torch device type (see open_device_source)
        self.chip, self.ids, self.interval = chip, list(ids), interval
        self.samples = []
        self.source, self.reason = None, "not started"
        self.errors = []
        self._read = None
        self._cpu_last = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="monitor", daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        """Stop the thread and take one last sample, so the window's end is covered."""
        if self._stop.is_set():
            return self
        self._stop.set()
        self._thread.join(TOOL_TIMEOUT_S + 1)
        self._sample()
        return self

    def _loop(self):
        # opening a source (a vendor's tool can take seconds) happens here, off the step
        self.source, read = self._safe(lambda: open_device_source(self.chip, self.ids),
                                       (None, None))
        self._read = read if self.source else None
        self.reason = None if self.source else read
        self._sample()
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self):
        t = time.perf_counter()
        devices = self._safe(self._read, None) if self._read else None
        cpu = self._safe(self._cpu_pct, None)
        mem = self._safe(read_host_mem_bytes, None)
        self.samples.append((t, devices, cpu, mem))

    def _cpu_pct(self):
        busy, total = read_cpu_times()
        last, self._cpu_last = self._cpu_last, (busy, total)
        if last is None or total <= last[1]:
            return None  # utilisation needs two readings
        return 100.0 * (busy - last[0]) / (total - last[1])

    def _safe(self, fn, default):
        # the sampler never raises into the training loop; it notes the first errors
        try:
            return fn()
        except Exception as e:
            if len(self.errors) < 5:
                self.errors.append(f"{type(e).__name__}: {e}"[:200])
            return default


def start(run, args):
    """The node's monitor, started on local rank 0 (None elsewhere and when off)."""
    interval = args.monitor_interval
    if not interval or interval <= 0 or run.local_rank != 0:
        return None
    kind = run.device.kind
    n = 0 if kind.type == "cpu" else run.local_world_size
    return Monitor(kind, kind.visible_ids(n), interval).start()


# summary of a window

def interpolate(times, values, t):
    """values at t, linear between samples, held flat beyond the first and last."""
    i = bisect.bisect_left(times, t)
    if i == 0:
        return values[0]
    if i == len(times):
        return values[-1]
    t0, t1 = times[i - 1], times[i]
    return values[i - 1] + (values[i] - values[i - 1]) * (t - t0) / (t1 - t0)


def trapezoid_energy(times, watts, t0, t1):
    """Joules over [t0, t1]: the trapezoid integral of sampled power, the window's
    edges interpolated; None without samples or without a window."""
    if not times or t1 <= t0:
        return None
    inside = [(t, w) for t, w in zip(times, watts) if t0 < t < t1]
    points = [(t0, interpolate(times, watts, t0)), *inside, (t1, interpolate(times, watts, t1))]
    return sum((b[0] - a[0]) * (a[1] + b[1]) / 2 for a, b in zip(points, points[1:]))


def _max(values, default=-1.0):
    values = [v for v in values if v is not None]
    return max(values) if values else default


def node_parts(mon, t0, t1):
    """This node's sums and maxima over the window; a max of -1 means no data."""
    samples = list(mon.samples)
    # the first sample after the window too: the busy share it reports covers the
    # window's end, and a window shorter than the interval still gets one
    after = next((i for i, s in enumerate(samples) if s[0] > t1), len(samples))
    window = [s for s in samples[:after + 1] if s[0] >= t0]
    readings = [r for s in window for r in (s[1] or [])]
    powered = [(s[0], sum(r["power_w"] for r in s[1])) for s in samples
               if s[1] and all(r["power_w"] is not None for r in s[1])]
    energy = trapezoid_energy([t for t, _ in powered], [w for _, w in powered], t0, t1)
    utils = [r["util_pct"] for r in readings if r["util_pct"] is not None]
    cpus = [s[2] for s in window if s[2] is not None]
    return {
        "energy_j": energy or 0.0,
        "device_s": (t1 - t0) * len(mon.ids) if energy is not None else 0.0,
        "devices": float(len(mon.ids)),
        "powered": float(len(mon.ids)) if energy is not None else 0.0,
        "samples": float(len(window)),
        "util_sum": sum(utils), "util_n": float(len(utils)),
        "cpu_sum": sum(cpus), "cpu_n": float(len(cpus)),
        "power_max": _max(r["power_w"] for r in readings),
        "mem_max": _max(r["mem_bytes"] for r in readings),
        "temp_max": _max(r["temp_c"] for r in readings),
        "cpu_max": _max(cpus), "host_mem_max": _max(s[3] for s in window),
    }


SUMS = ("energy_j", "device_s", "devices", "powered", "samples", "util_sum", "util_n",
        "cpu_sum", "cpu_n")
MAXES = ("power_max", "mem_max", "temp_max", "cpu_max", "host_mem_max")


def _no_parts():
    return {**dict.fromkeys(SUMS, 0.0), **dict.fromkeys(MAXES, -1.0)}


def _gather(run, parts):
    """Sums and maxima over every rank (ranks without a monitor bring zeros and -1)."""
    parts = parts or _no_parts()
    sums = dict(zip(SUMS, dist.sum_all(run, [parts[k] for k in SUMS])))
    maxes = dict(zip(MAXES, dist.max_all(run, [parts[k] for k in MAXES])))
    return {**sums, **maxes}


def _ratio(a, b):
    return a / b if a is not None and b else None


def _scaled(v, unit=1.0):
    return None if v is None or v < 0 else v / unit


def cells(g, images):
    """The record's monitor figures from gathered parts (see the module docstring)."""
    # energy only where every sampled device of every node reported power
    energy = g["energy_j"] if g["devices"] and g["powered"] == g["devices"] else None
    return {
        "devices": int(g["devices"]), "samples": int(g["samples"]),
        "power_max_w": _scaled(g["power_max"]), "power_mean_w": _ratio(energy, g["device_s"]),
        "energy_j": energy, "energy_per_image_j": _ratio(energy, images),
        "device_s": g["device_s"],  # seconds sampled, summed over devices: power_mean_w's
        "device_mem_peak_gib": _scaled(g["mem_max"], GiB),
        "device_util_mean_pct": _ratio(g["util_sum"], g["util_n"]),
        "device_temp_max_c": _scaled(g["temp_max"]),
        "host_cpu_mean_pct": _ratio(g["cpu_sum"], g["cpu_n"]),
        "host_cpu_max_pct": _scaled(g["cpu_max"]),
        "host_mem_peak_gib": _scaled(g["host_mem_max"], GiB),
    }


def stop(mon):
    if mon is not None:
        mon.stop()


def summary(run, mon, window, images, args=None):
    """The monitor figures of a window (t0, t1) with `images` processed in it by all
    ranks. Every rank calls it, since it gathers over nodes; `mon` is None off local
    rank 0. With --monitor-interval 0 the cells are empty and nothing is gathered;
    args=None is a monitor at the flag's default, 1 s."""
    interval = args.monitor_interval if args is not None else 1.0
    if not interval or interval <= 0:
        return {**cells(_no_parts(), images), "source": None, "interval_s": None,
                "reason": "off (--monitor-interval 0)"}
    parts = node_parts(mon, *window) if mon is not None and window else None
    return {**cells(_gather(run, parts), images), "source": mon.source if mon else None,
            "interval_s": interval, "reason": _reason(mon, window)}


def _reason(mon, window):
    """Why cells are empty, as this rank sees it; None when its devices were sampled."""
    if not window:
        return "no timed window: the run ended within its warm-up steps"
    if mon is None:
        return "no monitor on this rank"
    return "; ".join(([mon.reason] if mon.reason else []) + mon.errors) or None
