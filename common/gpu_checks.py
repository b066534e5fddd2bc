"""results/gpu_checks.sh: the plan of common/gpu_plan.py run on this device against a
deadline, then tables.md and timings.txt.

    bash results/gpu_checks.sh quick   # in order of value, within GPU_CHECKS_S (default 480)
    bash results/gpu_checks.sh full    # every check at full size, untimed

Records go to OUT (default results/<device label>/), with tables.md rendered from them
and timings.txt: each step's planned and actual seconds, engine builds apart, and how it
ended. Exit 0: every step ran and passed; 1: a step failed or was stopped (timings.txt
names it); 3: none failed, but some were skipped at the deadline; 2: a wrong mode,
GPU_CHECKS_S or OUT. No torch here: the device is asked by a subprocess, as every step is.
"""
from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

from common import files
from common.deadline import (Deadline, Interrupted, Outcome, Step, exit_status, run_steps,
                             timings_table)
from common.errors import UserError
from common.flags import Parser
from common.gpu_plan import PY, Plan

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DEADLINE_S = 480
PROBE_S = 10  # python, torch and the device's context, the first time on a machine
PROBE_LIMIT_S = 120
PROBE = ("import json; from common.device import select; d = select(); "
         "print(json.dumps({'label': d.label, 'name': d.name, 'type': d.type, "
         "'count': d.device_count(), 'precisions': d.supported_precisions(), "
         "'compile_mode': d.kind.compile_mode}))")


def deadline_s(mode):
    """GPU_CHECKS_S, or quick's default; None (untimed) for full unless it is given."""
    text = os.environ.get("GPU_CHECKS_S", "").strip()
    if not text:
        return DEFAULT_DEADLINE_S if mode == "quick" else None
    try:
        value = float(text)
    except ValueError:
        value = 0
    if not value > 0:
        raise UserError(f"GPU_CHECKS_S={text!r}: give the seconds the checks may take, a "
                        f"number above 0 (default {DEFAULT_DEADLINE_S} for quick)")
    return value


def started_at():
    """When the script began (GPU_CHECKS_START, set by gpu_checks.sh), else now."""
    try:
        return float(os.environ.get("GPU_CHECKS_START", ""))
    except ValueError:
        return time.time()


def probe_device():
    """(the device as the shim sees it, the probe's Outcome); RuntimeError naming the
    probe's last line when it fails."""
    t0 = time.time()
    what = "the device probe (python -c 'from common.device import select; ...')"
    try:
        proc = subprocess.run([PY, "-c", PROBE], cwd=ROOT, capture_output=True, text=True,
                              timeout=PROBE_LIMIT_S)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{what} did not answer in {PROBE_LIMIT_S} s") from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"{what} failed: {last}")
    return json.loads(proc.stdout.strip().splitlines()[-1]), Outcome("passed", "", time.time() - t0)


def render_tables(out):
    """tables.md from every record under `out` (en), the bench's tables after them, or
    the report's line saying there were none; the Outcome of rendering."""
    t0 = time.time()
    try:
        proc = subprocess.run([PY, "-m", "common.report", out, "--lang", "en"], cwd=ROOT,
                              capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        return Outcome("failed", "common.report did not end in 300 s", time.time() - t0)
    if proc.returncode == 0:
        text = proc.stdout
    elif "no result records" in proc.stderr:
        text = proc.stderr.strip() + "\n"
    else:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return Outcome("failed", f"common.report exit {proc.returncode}: {last}",
                       time.time() - t0)
    for path in sorted(glob.glob(os.path.join(out, "**", "bench-*.json"), recursive=True)):
        with open(path, encoding="utf-8") as f:
            table = json.load(f).get("table")
        if table:  # a bench record is no run record: the report leaves it out
            text += f"\ncommon.bench ({os.path.relpath(path, out)})\n\n{table}\n"
    files.write_atomically(os.path.join(out, "tables.md"), lambda f: f.write(text))
    return Outcome("passed", "", time.time() - t0)


class Timings:
    """timings.txt, rewritten after every step: a run cut short still leaves it."""

    def __init__(self, mode, plan, deadline, rows):
        self.mode, self.plan, self.deadline, self.rows = mode, plan, deadline, rows
        self.outcomes = {}
        self.path = os.path.join(plan.out, "timings.txt")
        self.started = datetime.datetime.fromtimestamp(deadline.start).astimezone().isoformat(
            timespec="seconds")

    def told(self, name, outcome):
        self.outcomes[name] = outcome
        took = f" in {outcome.actual_s:.1f} s" if outcome.actual_s is not None else ""
        print(f"gpu_checks: {name}: {outcome.status}{took}" +
              (f": {outcome.why}" if outcome.why else ""), flush=True)
        self.write()

    def write(self, ended=False):
        text = self.text(ended)
        files.write_atomically(self.path, lambda f: f.write(text))
        return text

    def text(self, ended):
        dev, plan = self.plan.dev, self.plan
        planned = sum(s.planned_s or 0 for s in self.rows)
        lines = [f"results/gpu_checks.sh {self.mode} on {dev['label']} ({dev['name']}, "
                 f"{dev['type']} x{dev['count']}), started {self.started}",
                 f"deadline: {self.deadline.seconds:.0f} s from the script's start "
                 f"(GPU_CHECKS_S); planned: {planned:.0f} s" if self.deadline.seconds
                 else "untimed: no deadline"]
        lines += [*plan.settings(self.mode), "", timings_table(self.rows, self.outcomes), ""]
        if ended:
            short = [n for n, o in self.outcomes.items()
                     if o.status in ("failed", "stopped", "skipped")]
            lines.append(f"{self.deadline.elapsed():.0f} s in all; exit "
                         f"{exit_status(self.outcomes)}" +
                         (f"; not passed: {', '.join(short)}" if short
                          else ": every step ran and passed"))
        return "\n".join(lines) + "\n"


def _interrupt(signum, frame):
    raise Interrupted(signal.Signals(signum).name)


def run_plan(mode, deadline, dev, probed, out):
    """Every step of the plan, then the tables; the exit status."""
    with tempfile.TemporaryDirectory(prefix="gpu-checks-data-") as data:
        plan = Plan(dev, out, data)
        steps = plan.quick() if mode == "quick" else plan.full()
        rows = [Step("device", [PY, "-c", PROBE], PROBE_S), *steps,
                Step("tables", [PY, "-m", "common.report", out], plan.seconds(5, 3))]
        print(f"gpu_checks: {mode} on {dev['label']}: {len(steps)} steps, planned "
              f"{sum(s.planned_s or 0 for s in rows):.0f} s; records in {out}", flush=True)
        timings = Timings(mode, plan, deadline, rows)
        timings.told("device", probed)
        previous = {s: signal.signal(s, _interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            run_steps(steps, deadline, os.path.join(out, "logs"), ROOT, timings.told)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
    timings.told("tables", render_tables(out))
    print("\n" + timings.write(ended=True) + f"\ntables: {os.path.join(out, 'tables.md')}")
    return exit_status(timings.outcomes)


def get_args_parser():
    p = Parser(prog="results/gpu_checks.sh", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=("quick", "full"),
                   help="quick: in order of value within GPU_CHECKS_S; full: all, untimed")
    return p


def main(argv=None):
    args = get_args_parser().parse_args(argv)
    try:
        deadline = Deadline(started_at(), deadline_s(args.mode))
        dev, probed = probe_device()
        out = os.path.abspath(os.environ.get("OUT") or os.path.join(
            ROOT, "results", dev["label"].replace(" ", "_")))
        files.check_writable(out, "OUT")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:  # the device probe
        print(f"error: {e}", file=sys.stderr)
        return 1
    return run_plan(args.mode, deadline, dev, probed, out)


if __name__ == "__main__":
    sys.exit(main())
