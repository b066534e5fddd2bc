"""The training clocks of docs/METRICS.md, in one place.

    whole  wall time of the timed region (evaluations and checkpoints included)
    train  whole minus evaluation and checkpoint time (data loading stays in)
    core   sum of per-step compute times: batch on the device -> optimizer step done

The timed region starts once `warmup_steps` optimizer steps are done; their images and
time count nowhere. Every wall clock is read after `synchronize()`. Per-step core
times come from device events where the device has them (no stall between steps) and
from synchronize + perf_counter where it does not.
"""
from __future__ import annotations

import os
import statistics
import time
from contextlib import contextmanager

from common import dist


def process_age():
    """Seconds since this process started (Linux), so e2e_time covers imports too."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


# the e2e clock starts when the process did, not when this module was imported
E2E_START = time.perf_counter() - process_age()


def e2e_clock(resumed=None):
    """The readings e2e_time is made of, kept in the record so that it can be re-derived:
    the seconds of the processes before a resume (`resumed`, the record's block) up to
    their last checkpoint, and this process's start and now on the perf_counter clock."""
    return {"before_s": (resumed or {}).get("e2e_before_s", 0.0), "start": E2E_START,
            "end": time.perf_counter()}


def e2e_seconds(clock):
    """e2e_time from its readings (e2e_clock)."""
    return clock["before_s"] + clock["end"] - clock["start"]


def e2e_time(resumed=None):
    """Seconds since this process started, plus those of the processes before a resume
    up to their last checkpoint."""
    return e2e_seconds(e2e_clock(resumed))


def rate(images, seconds):
    """Throughput: total images over total time (None when no time was measured)."""
    return images / seconds if seconds > 0 else None


def percentiles(values, qs=(50, 90, 99)):
    """Nearest-rank percentiles of a list, {} when empty."""
    if not values:
        return {}
    ordered = sorted(values)
    return {f"p{q}": ordered[min(len(ordered) - 1, max(0, -(-q * len(ordered) // 100) - 1))]
            for q in qs}


class CoreTimer:
    """Sums compute intervals per step: `begin()` once the input is on the device,
    `end(last)` once the work is queued (last=False for a micro-batch that does not
    close its step). Device events where the device has them, so steps are not
    serialised; synchronize + perf_counter where it has none."""

    _FLUSH_EVERY = 256  # resolve device events now and then so they do not pile up

    def __init__(self, device):
        self.device = device
        self.step_times = []  # seconds per closed step
        self._pending = []    # (start, end) event pairs; None closes a step
        self._step_s = 0.0
        self._t = None

    def begin(self):
        event = self.device.timing_event()
        if event is not None:
            event.record()
            self._t = event
        else:
            self.device.synchronize()
            self._t = time.perf_counter()

    def end(self, last=True):
        if isinstance(self._t, float):
            self.device.synchronize()
            self._step_s += time.perf_counter() - self._t
            if last:
                self.step_times.append(self._step_s)
                self._step_s = 0.0
            return
        end = self.device.timing_event()
        end.record()
        self._pending.append((self._t, end))
        if last:
            self._pending.append(None)
            if len(self._pending) > self._FLUSH_EVERY:
                self.flush()

    def flush(self):
        """Wait for the device and turn recorded events into step times."""
        if not self._pending:
            return
        self.device.synchronize()
        for item in self._pending:
            if item is None:
                self.step_times.append(self._step_s)
                self._step_s = 0.0
            else:
                self._step_s += item[0].elapsed_time(item[1]) / 1000.0
        self._pending = []

    def total(self):
        self.flush()
        return sum(self.step_times)


class TrainClocks:
    """Call `begin_step()` once the batch is on the device, `end_step(images, last)`
    after each backward (last=True once the optimizer step is done), and wrap
    evaluation and checkpointing in `paused("eval")` / `paused("checkpoint")`.

    A resumed run carries the figures of the processes before it (`restore`): their
    images and times are added once; the restart itself is not in any of them."""

    _TIMES = ("whole_s", "train_s", "core_s", "eval_s", "checkpoint_s")

    def __init__(self, device, warmup_steps):
        self.device = device
        self.warmup_steps = warmup_steps
        self.steps = 0           # optimizer steps so far, warm-up included
        self.images = 0          # images in the timed region
        self.closed_images = 0   # of them, those of steps that are done
        self.region_start = None
        self.region_end = None   # set by figures(): the timed region is region_start..end
        self.paused_s = {"eval": 0.0, "checkpoint": 0.0}
        self._pause = None       # (what, start) of the pause under way
        self.core = CoreTimer(device)
        self.carried = {"images": 0, "step_times": [], **dict.fromkeys(self._TIMES, 0.0)}
        if warmup_steps == 0:
            self._start_region()

    @property
    def window(self):
        """(start, end) perf_counter seconds of the timed region, None until figures()."""
        if self.region_start is None or self.region_end is None or not self.images:
            return None  # the run ended within its warm-up: nothing was timed
        return self.region_start, self.region_end

    @property
    def timing(self):
        return self.region_start is not None

    def _start_region(self):
        self.device.synchronize()
        self.region_start = time.perf_counter()

    def begin_step(self):
        if self.timing:
            self.core.begin()

    def end_step(self, images, last=True):
        if self.timing:
            self.images += images
            self.core.end(last)
            if last:
                self.closed_images = self.images
        if last:
            self.steps += 1
            if self.steps == self.warmup_steps:
                self._start_region()

    @contextmanager
    def paused(self, what):
        """Time spent inside counts as `what` (eval or checkpoint), not as training."""
        if not self.timing:
            yield
            return
        self.device.synchronize()
        self._pause = (what, time.perf_counter())
        try:
            yield
        finally:
            self.device.synchronize()
            self.paused_s[what] += time.perf_counter() - self._pause[1]
            self._pause = None

    def _totals(self, run):
        """Images summed over ranks, each time the slowest rank's, plus what earlier
        processes of a resumed run carried; every rank must call it."""
        core = self.core.total()
        self.region_end = time.perf_counter()
        whole = self.region_end - self.region_start if self.timing else 0.0
        paused_s = dict(self.paused_s)
        if self._pause is not None:  # a checkpoint's snapshot: its pause so far is paused
            paused_s[self._pause[0]] += self.region_end - self._pause[1]
        paused = paused_s["eval"] + paused_s["checkpoint"]
        (images,) = dist.sum_all(run, [self.images])
        times = dist.max_all(run, [whole, whole - paused, core, paused_s["eval"],
                                   paused_s["checkpoint"]])
        c = self.carried
        totals = {"images": int(images) + c["images"],
                  "step_times": c["step_times"] + self.core.step_times}
        totals.update({k: t + c[k] for k, t in zip(self._TIMES, times)})
        return totals

    def state(self, run):
        """The clocks so far, for a checkpoint (collective)."""
        return {**self._totals(run), "steps": self.steps, "timing": self.timing}

    def restore(self, state):
        """Continue the clocks of a checkpoint: its figures are carried, its warm-up kept."""
        self.carried = {k: state[k] for k in ("images", "step_times", *self._TIMES)}
        self.steps = state["steps"]
        self.region_start = None
        if state["timing"] or self.steps >= self.warmup_steps:
            self._start_region()

    def figures(self, run):
        """p_whole, p_train, p_core (img/s): total images over total time. Empty figures,
        and why, when the run never timed a step."""
        t = self._totals(run)
        if not t["images"]:
            return {"images": 0, "timed_steps": 0, "why_empty": (
                f"no timed step: the run ended at step {self.steps}, within its "
                f"{self.warmup_steps} warm-up steps; give --max-steps (or the epochs' "
                f"steps) above --warmup-steps")}
        return {
            "images": t["images"],
            **{k: t[k] for k in self._TIMES},
            "p_whole": rate(t["images"], t["whole_s"]), "p_train": rate(t["images"], t["train_s"]),
            "p_core": rate(t["images"], t["core_s"]), **_steps(t["step_times"]),
        }

    def figures_alone(self):
        """This rank's own core figures over the steps it finished in this process, for
        a run whose other ranks cannot be asked (a rank was lost). Its wall clocks are
        left out: they hold the wait for the lost rank."""
        core = self.core.total()
        return {"images": self.closed_images, "core_s": core,
                "p_core": rate(self.closed_images, core), **_steps(self.core.step_times)}


def _steps(step_times):
    """The per-step compute figures: count, p50/p90/p99 and mean in ms."""
    return {
        "timed_steps": len(step_times),
        "step_core_ms": {k: v * 1000 for k, v in percentiles(step_times).items()},
        "step_core_ms_mean": statistics.fmean(step_times) * 1000 if step_times else None,
    }
