"""The scaling table: how throughput grows from one device to many.

From training records of the same case (model, device, precision, per-device batch) at
several sizes, e.g. 1x1, 1x8 and 2x8: p_core per device and the scaling efficiency,
p_core at N devices / (N x p_core at one device). Without a 1x1 record the efficiency
is left empty.
"""
from __future__ import annotations

from tabulate import tabulate


def _case(rec):
    return (rec["model"], rec["device"]["label"], rec["precision"], rec.get("batch_size"))


def scaling_rows(records):
    """One row per (case, nodes x devices), the latest finished run of each."""
    latest = {}
    for r in records:  # oldest first: later runs replace earlier ones
        if r["case"] == "train" and r.get("status", "ok") == "ok" and r["figures"].get("p_core"):
            latest[_case(r), r["nodes"], r["procs_per_node"]] = r
    base = {case: r["figures"]["p_core"] for (case, n, p), r in latest.items() if n * p == 1}
    rows = []
    for (case, nodes, per_node), r in sorted(latest.items(),
                                             key=lambda kv: (kv[0][0], kv[0][1] * kv[0][2])):
        devices = nodes * per_node
        p_core = r["figures"]["p_core"]
        one = base.get(case)
        rows.append({"model": case[0], "device": case[1], "precision": case[2], "bs": case[3],
                     "config": f"{nodes}x{per_node}", "devices": devices, "p_core": p_core,
                     "per_device": p_core / devices,
                     "efficiency": p_core / (devices * one) if one else None})
    return rows


def several_sizes(records):
    """True when some case was run at more than one size (one row per size)."""
    cases = [(r["model"], r["device"], r["precision"], r["bs"]) for r in scaling_rows(records)]
    return len(cases) > len(set(cases))


def scaling_table(records):
    rows = [[r["model"], r["device"], r["precision"], r["bs"], r["config"], r["devices"],
             f"{r['p_core']:.0f}", f"{r['per_device']:.0f}",
             "" if r["efficiency"] is None else f"{100 * r['efficiency']:.1f}%"]
            for r in scaling_rows(records)]
    return tabulate(rows, headers=["model", "device", "precision", "bs", "config", "devices",
                                   "p_core", "p_core/device", "efficiency"],
                    tablefmt="github", disable_numparse=True)
