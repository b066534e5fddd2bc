"""The scaling table: how throughput grows from one device to many.

From training records of the same case at several sizes, e.g. 1x1, 1x8 and 2x8: p_core
per device and the scaling efficiency, p_core at N devices / (N x p_core at one device).
Records are of the same case only when they agree on everything but the size: model,
device, data source (real or synthetic), where the images were decoded (host or
device: the input path is another), image size, precision, per-device batch and engine;
any other pair gets rows of its own. Repeated runs (common/repeats.py) count as one, at
their central figure. Without a 1x1 record the efficiency is left empty.
"""
from __future__ import annotations

from tabulate import tabulate

from common import repeats


def data_source(rec):
    """'real', 'synthetic' or 'generated'; records older than the field name their data
    path or 'synthetic'; None where a record says nothing of its data."""
    if "data_source" in rec:
        return rec["data_source"]
    if rec.get("data") is None:
        return None
    return "synthetic" if rec["data"] == "synthetic" else "real"


def decode_mode(rec):
    """'host' or 'device': where the run decoded its images; None for synthetic data.
    Records older than the field, and the seeds', decoded on the host."""
    if data_source(rec) == "synthetic":
        return None
    return (rec.get("decode") or {}).get("mode") or "host"


def like_with_like(rec):
    """What two records must share to be compared or combined: everything but the size,
    accumulation included (an optimizer step over K micro-batches is another step).
    Records older than these fields count their data from the data path."""
    data = data_source(rec)
    accum = rec.get("grad_accum", (rec.get("recipe") or {}).get("grad_accum"))
    return (rec["model"], rec["case"], rec["device"]["label"], data, decode_mode(rec),
            rec.get("image_size"), rec["precision"], rec.get("batch_size"), rec.get("engine"),
            accum)


def scaling_rows(records):
    """One row per (case, nodes x devices), the latest finished run (or group of repeats)
    of each."""
    latest = {}
    for r in repeats.summaries(records):  # oldest first: later runs replace earlier ones
        if r["case"] == "train" and r.get("status", "ok") == "ok" and r["figures"].get("p_core"):
            latest[like_with_like(r), r["nodes"], r["procs_per_node"]] = r
    base = {case: r["figures"]["p_core"] for (case, n, p), r in latest.items() if n * p == 1}
    rows = []
    for (case, nodes, per_node), r in sorted(latest.items(),
                                             key=lambda kv: (str(kv[0][0]), kv[0][1] * kv[0][2])):
        model, _, device, data, decoded, image_size, precision, bs, _, _ = case
        devices = nodes * per_node
        p_core = r["figures"]["p_core"]
        one = base.get(case)
        rows.append({"case": case, "model": model, "device": device,
                     "data": data if decoded != "device" else f"{data}, device decode",
                     "img": image_size, "precision": precision, "bs": bs,
                     "config": f"{nodes}x{per_node}", "devices": devices, "p_core": p_core,
                     "per_device": p_core / devices,
                     "efficiency": p_core / (devices * one) if one else None})
    return rows


def several_sizes(records):
    """True when some case was run at more than one size (one row per size)."""
    cases = [r["case"] for r in scaling_rows(records)]
    return len(cases) > len(set(cases))


# the headers in English and Chinese (the seeds keep the figures' own names in both)
HEADERS = {"en": ["model", "device", "data", "img", "precision", "bs", "config", "devices",
                  "p_core", "p_core/device", "efficiency"],
           "zh": ["模型", "设备", "数据", "图像尺寸", "precision", "bs", "配置", "卡数",
                  "p_core", "每卡 p_core", "效率"]}


def scaling_table(records, lang="en"):
    rows = [[r["model"], r["device"], r["data"], "/" if r["img"] is None else r["img"],
             r["precision"], r["bs"], r["config"], r["devices"],
             f"{r['p_core']:.0f}", f"{r['per_device']:.0f}",
             "/" if r["efficiency"] is None else f"{100 * r['efficiency']:.1f}%"]
            for r in scaling_rows(records)]
    return tabulate(rows, headers=HEADERS[lang], tablefmt="github", disable_numparse=True)
