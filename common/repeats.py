"""Repeated runs: records that differ in nothing but the seed, the record that stands for
each group in the tables, and whether a repeat of run_all.sh already has its record.

Two records repeat each other when they agree on every field but those one run alone
has (its figures, evaluations, clocks of the day, command line, commit and whether it
finished its recipe) and every flag but those that cannot change a figure: the seed,
where the record is written, the language of its lines and the checkpoint it resumed
from. The host, the versions, the suite version and the recipe are part of it: a row
never mixes runs that differ in anything else. Only finished runs of ours are grouped: a
failed or cut-short run, a seed's published row and a record without its flags (an
older one) stay rows of their own. A group's throughput is its central figure: MLPerf's
rule where there are five runs or more (the fastest and the slowest dropped, the mean
of the rest), the median below that.

    python -m common.repeats OUT CONFIG -- SCRIPT ARGS...   # exit 0: OUT has its record
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import shlex
import statistics
import sys

# flags that name no part of what was measured
SEED_INDEPENDENT = ("seed", "out", "lang", "resume")
# a record's fields that are one run's own, not what it ran
RUN_ONLY = ("figures", "evals", "started", "finished", "command", "git_commit",
            "recipe_complete", "error", "repeats", "mlperf_log", "console_log", "_path")
# figures whose group value is the highest of the runs, and those that are the mean;
# every other number is the central figure
HIGHEST = ("mem_peak_gib", "mem_total_gib", "power_max_w", "device_mem_peak_gib",
           "device_temp_max_c", "host_cpu_max_pct", "host_mem_peak_gib")
MEAN = ("acc", "acc5", "acc_val", "acc_infer", "acc5_val", "acc5_infer")


def comparable(rec):
    """What every record of a group shares: all but the seed and one run's own fields."""
    shared = {k: v for k, v in rec.items() if k not in RUN_ONLY}
    shared["args"] = {k: v for k, v in (rec.get("args") or {}).items()
                      if k not in SEED_INDEPENDENT}
    return json.dumps(shared, sort_keys=True, default=str)


def repeatable(rec):
    """A finished run of ours with its flags: the records that can form a group."""
    return rec.get("status", "ok") == "ok" and "reference" not in rec and bool(rec.get("args"))


def groups(records):
    """The records in groups of repeats, each in the order given, groups in the order of
    their first record; a record that cannot repeat another is a group of its own."""
    found = {}
    for i, rec in enumerate(records):
        found.setdefault(comparable(rec) if repeatable(rec) else i, []).append(rec)
    return list(found.values())


def central(values):
    """The figure a group's row shows: with n >= 5 the mean of all but the fastest and the
    slowest, else the median."""
    v = sorted(values)
    if len(v) >= 5:
        v = v[1:-1]
        return sum(v) / len(v)
    return statistics.median(v)


def _number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def combined(values, key=None):
    """One value for the group of the runs' `values` of figure `key`: the value they all
    have; dicts key by key; the highest (HIGHEST), the mean (MEAN) or the central figure
    of numbers; None where some run lacks it, or a text or list differs between runs."""
    first = values[0]
    if all(v == first for v in values):
        return first
    if all(isinstance(v, dict) for v in values):
        keys = dict.fromkeys(k for v in values for k in v)
        return {k: combined([v.get(k) for v in values], k) for k in keys}
    if not all(_number(v) for v in values):
        return None
    if key in HIGHEST:
        return max(values)
    return statistics.fmean(values) if key in MEAN else central(values)


def seeds(group):
    return [(r.get("args") or {}).get("seed") for r in group]


def summary(group):
    """The record a group's row renders: a group of one is its record, unchanged; else the
    fields the runs share, their figures combined, "repeats" (n, seeds, the runs), the
    last run's finish, and the recipe finished only where every run finished it. An
    engine slower than eager in any run says in how many."""
    if len(group) == 1:
        return group[0]
    first, figures = group[0], [r["figures"] for r in group]
    rec = {k: v for k, v in first.items() if k not in RUN_ONLY}
    rec["figures"] = dict(combined(figures))  # a copy: the runs' own stay as they are
    slower = sum(bool(f.get("engine_slower")) for f in figures)
    if slower:
        rec["figures"]["engine_slower"] = \
            f"engine slower than eager in {slower} of {len(group)} runs"
    if "recipe_complete" in first:
        rec["recipe_complete"] = all(r.get("recipe_complete") for r in group)
    rec["finished"] = max(str(r.get("finished") or "") for r in group)
    rec["repeats"] = {"n": len(group), "seeds": seeds(group), "runs": group}
    return rec


def summaries(records):
    """One record per group of repeats (summary), in the order of groups()."""
    return [summary(g) for g in groups(records)]


def spread(values):
    """n, central, min, max and spread = (max - min) / central of a figure's values."""
    mid = central(values)
    return {"n": len(values), "central": mid, "min": min(values), "max": max(values),
            "spread": (max(values) - min(values)) / mid if mid else None}


def mean_std(values):
    """(mean, sample standard deviation) of two values or more: how accuracy varies."""
    return statistics.fmean(values), statistics.stdev(values)


def has_record(out, config, argv):
    """Whether folder `out` holds the finished record of a run of `argv` (the script and
    its flags, as the record's command line has them after the Python) at nodes x
    devices `config`: run_all.sh asks it before each repeat, so that a REPEAT run started
    again runs only the repeats still missing."""
    for path in glob.glob(os.path.join(glob.escape(out), "*.json")):
        try:
            with open(path, encoding="utf-8") as f:
                rec = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue  # no record of this repeat; the report names the file
        if (isinstance(rec, dict) and rec.get("status") == "ok"
                and rec.get("config") == config
                and shlex.split(rec.get("command") or "")[1:] == argv):
            return True
    return False


def get_args_parser():
    p = argparse.ArgumentParser(
        description="Exit 0 when OUT holds the finished record of this command at CONFIG, "
                    "1 when it does not (run_all.sh's test before each repeat).")
    p.add_argument("out", help="the record directory")
    p.add_argument("config", help="nodes x devices per node, e.g. 1x8")
    p.add_argument("command", nargs=argparse.REMAINDER,
                   help="after --: the script and its flags, as run")
    return p


def main(argv=None):
    a = get_args_parser().parse_args(argv)
    command = a.command[1:] if a.command[:1] == ["--"] else a.command
    return 0 if has_record(a.out, a.config, command) else 1


if __name__ == "__main__":
    sys.exit(main())
