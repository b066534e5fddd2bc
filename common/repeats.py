"""Repeated runs: records that differ in nothing but the seed, and the figure that stands
for them.

Two records repeat each other when they share the like-with-like key of the scaling table
(common/scaling.py), the size (nodes x devices), the suite version, the recipe and every
flag except those that cannot change a figure: the seed, where the record is written, the
language of its lines and the checkpoint it resumed from. A group's throughput is its
central figure: MLPerf's rule where there are five runs or more (the fastest and the
slowest dropped, the mean of the rest), the median below that.
"""
from __future__ import annotations

import json
import statistics

from common.scaling import like_with_like

# flags that name no part of what was measured
SEED_INDEPENDENT = ("seed", "out", "lang", "resume")


def comparable(rec):
    """What every record of a group shares: all but the seed."""
    args = {k: v for k, v in (rec.get("args") or {}).items() if k not in SEED_INDEPENDENT}
    recipe = {k: v for k, v in (rec.get("recipe") or {}).items() if k != "seed"}
    return (like_with_like(rec), rec.get("nodes"), rec.get("procs_per_node"),
            rec.get("status"), rec.get("suite_version"),
            json.dumps(args, sort_keys=True, default=str),
            json.dumps(recipe, sort_keys=True, default=str))


def groups(records):
    """The records in groups of repeats, each in the order given, groups in the order of
    their first record."""
    found = {}
    for rec in records:
        found.setdefault(comparable(rec), []).append(rec)
    return list(found.values())


def central(values):
    """The figure a group's row shows: with n >= 5 the mean of all but the fastest and the
    slowest, else the median."""
    v = sorted(values)
    if len(v) >= 5:
        v = v[1:-1]
        return sum(v) / len(v)
    return statistics.median(v)
