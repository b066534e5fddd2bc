"""Commands run one after another against one deadline, each timed, none left running.

The deadline is when the whole run is over: the steps get it less `reserve_s`, the time
kept at the end for stopping a step and for what follows them (the tables). A step
starts only while its planned seconds still fit before that. One still running then, or
past its own limit, gets SIGTERM and after a grace SIGKILL,
sent to its whole process group (loader workers, compile workers): a training run given
SIGTERM writes its record marked incomplete, and the next step finds the device free.
A step that fails is named with its last error line and the rest go on. No torch here:
every step is a subprocess.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from typing import Callable

GRACE_S = 10  # after SIGTERM: a training run stops at its next step and writes its record
AFTER_S = 5   # what follows the steps: rendering the tables
# a step may take this many times its plan (plus a margin) before it is taken for hung
LIMIT_FACTOR, LIMIT_MARGIN_S = 3, 30


@dataclass
class Step:
    name: str
    argv: list                     # run from the repository root
    planned_s: float | None        # expected seconds on this device; None: untimed
    build_s: float | None = None   # the part of planned_s spent building an engine
    records: str | None = None     # the folder its records go to
    needs: tuple = ()              # steps that must have passed first (they write its data)
    check: Callable | None = None  # (records it wrote) -> why it failed, or None
    not_here: str = ""             # why it does not apply to this machine


@dataclass
class Outcome:
    status: str                    # passed, failed, stopped, skipped, not here
    why: str = ""
    actual_s: float | None = None
    built_s: float | None = None   # build_s or compile_s, as its records give them
    records: list = field(default_factory=list)


class Interrupted(Exception):
    """SIGTERM or Ctrl-C to the checks themselves: the running step is stopped."""


@dataclass
class Deadline:
    start: float                   # time.time() when the checks began
    seconds: float | None          # None: no deadline
    grace_s: float = GRACE_S
    margin_s: float = LIMIT_MARGIN_S
    reserve_s: float = GRACE_S + AFTER_S  # kept after the steps: a stopped step's grace, the tables

    def elapsed(self):
        return time.time() - self.start

    @property
    def steps_end(self):
        """Seconds from the start by which the steps are over."""
        return self.seconds - self.reserve_s

    def why_not_start(self, step):
        """Why `step` may not start now, or '' when it may."""
        if self.seconds is None:
            return ""
        now, end = self.elapsed(), self.steps_end
        if now >= end:
            return (f"past the deadline at {now:.0f} s ({self.seconds:.0f} s less "
                    f"{self.reserve_s:.0f} s kept for stopping and the tables)")
        if step.planned_s is not None and now + step.planned_s > end:
            return (f"would end past the deadline: planned {step.planned_s:.0f} s at "
                    f"{now:.0f} s of {end:.0f}")
        return ""

    def limit(self, step):
        """(seconds the step may run, what stops it then); (None, '') with no deadline."""
        if self.seconds is None:
            return None, ""
        # stopped early enough that its grace still ends before the reserve runs out
        left = self.steps_end - self.elapsed()
        if step.planned_s is not None:
            own = LIMIT_FACTOR * step.planned_s + self.margin_s
            if own < left:
                return own, f"stopped at its limit ({LIMIT_FACTOR}x its plan + {self.margin_s:g} s)"
        return max(left, 0), f"stopped at the deadline ({self.seconds:.0f} s)"


def run_steps(steps, deadline, log_dir, cwd, told=lambda name, outcome: None):
    """{step name: Outcome} of every step, in order; told(name, outcome) after each."""
    outcomes = {}
    interrupted = ""
    for step in steps:
        if interrupted:
            outcome = Outcome("skipped", interrupted)
        else:
            outcome = _skipped(step, outcomes, deadline)
        if outcome is None:
            try:
                outcome = run_step(step, deadline, os.path.join(log_dir, f"{step.name}.log"), cwd)
            except Interrupted as e:
                interrupted = f"the checks were interrupted ({e})"
                outcome = Outcome("stopped", interrupted)
        outcomes[step.name] = outcome
        told(step.name, outcome)
    return outcomes


def _skipped(step, outcomes, deadline):
    if step.not_here:
        return Outcome("not here", step.not_here)
    for need in step.needs:
        if outcomes[need].status != "passed":
            return Outcome("skipped", f"needs {need}, which was {outcomes[need].status}")
    why = deadline.why_not_start(step)
    return Outcome("skipped", why) if why else None


def run_step(step, deadline, log_path, cwd):
    """Run one step to its end or its limit; its output goes to log_path."""
    limit, stopped_why = deadline.limit(step)
    before = _json_files(step.records)
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    t0 = time.time()
    with open(log_path, "w") as log:
        log.write("+ " + " ".join(map(str, step.argv)) + "\n")
        log.flush()
        # a session of its own: the step and everything it starts are signalled together
        proc = subprocess.Popen([str(a) for a in step.argv], cwd=cwd, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            rc = None
        except BaseException:  # interrupted: the step must not outlive the checks
            stop(proc, deadline.grace_s)
            raise
        finally:
            if proc.poll() is None:
                stop(proc, deadline.grace_s)
            _kill_group(proc.pid, signal.SIGKILL)  # what it left behind
    took = time.time() - t0
    written = sorted(_json_files(step.records) - before)
    records = [r for r in map(_load, written) if r is not None]
    outcome = Outcome("passed", "", took, _built_s(records), written)
    if rc is None:
        outcome.status, outcome.why = "stopped", f"{stopped_why} after {took:.0f} s"
    elif rc != 0:
        outcome.status, outcome.why = "failed", f"exit {rc}: {error_line(log_path)}"
    elif step.check is not None:
        why = step.check(records)
        if why:
            outcome.status, outcome.why = "failed", f"exit 0, but {why}"
    return outcome


def stop(proc, grace_s):
    """SIGTERM to the step's process group; SIGKILL once `grace_s` has passed."""
    _kill_group(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid, signal.SIGKILL)
        proc.wait()


def _kill_group(pgid, sig):
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass  # the group has ended


def _json_files(folder):
    if not folder or not os.path.isdir(folder):
        return set()
    return {os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".json")}


def _load(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _built_s(records):
    """The engine builds and compilations of the records, summed; None when none has one."""
    found = [v for r in records for v in ((r.get("figures") or {}).get("build_s"),
                                          (r.get("figures") or {}).get("compile_s"))
             if isinstance(v, (int, float))]
    return sum(found) if found else None


def error_line(log_path, longest=240):
    """The suite's own one-line error (`error: ...`), else the last line naming an error,
    else the last line of the log."""
    try:
        with open(log_path, errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
    except OSError:
        return "no log"
    for pattern in (r"(^|\s)error: ", r"error", r""):
        found = [line for line in lines[1:] if re.search(pattern, line, re.I)]
        if found:
            return found[-1][:longest]
    return "no output"


def exit_status(outcomes):
    """0: every step ran and passed; 1: one failed or was stopped; 3: none failed, but
    some were skipped (steps that do not apply to this machine do not count)."""
    statuses = {o.status for o in outcomes.values()}
    if statuses & {"failed", "stopped"}:
        return 1
    return 3 if "skipped" in statuses else 0


def timings_table(steps, outcomes):
    """One line a step: planned and actual seconds, the engine builds apart, the outcome;
    a step not reached yet says so."""
    def seconds(v):
        return "-" if v is None else f"{v:.0f}" if v >= 10 else f"{v:.1f}"
    rows = [("step", "planned_s", "of_it_build", "took_s", "of_it_build", "outcome")]
    for step in steps:
        o = outcomes.get(step.name) or Outcome("not reached yet")
        rows.append((step.name, seconds(step.planned_s), seconds(step.build_s),
                     seconds(o.actual_s), seconds(o.built_s),
                     o.status + (f": {o.why}" if o.why else "")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1]
                     for r in rows)
