"""Every table figure of a record worked out again from the raw counts and clock readings
the record keeps beside it (docs/METRICS.md), so that a reader can check a record without
the machine that wrote it; no torch.

    rederive(record) -> [(cell, recorded, derived), ...]   differs(recorded, derived)

A figure is re-derived only where its inputs are in the record (an older record, a run
that timed nothing, has fewer). What no stored input gives is listed in NOT_DERIVED.
"""
from __future__ import annotations

import math

GiB = 1024 ** 3

# table cells that are measured once and kept as they are, and why they cannot be re-derived
NOT_DERIVED = {
    "build_s": "one interval of the clock around the engine's build; no smaller readings",
    "b1 p50/p90/p99 ms": "percentiles of the batch-1 calls, whose times are not kept",
    "power max W, device mem GiB, util %, host cpu %, host mem GiB":
        "maxima and means over every monitor sample; the record keeps at most 300 of them",
    "config, precision, fix_hp, bs, engine": "settings as written, no arithmetic: checked "
                                             "by rendering the tables again",
}


def _ratio(top, bottom):
    return top / bottom if top is not None and bottom else None


def _pass_figures(p, prefix):
    """p_<prefix>_whole and _core of an inference pass: its images over its seconds."""
    return {f"p_{prefix}_whole": _ratio(p.get("images"), p.get("whole_s")),
            f"p_{prefix}_core": _ratio(p.get("images"), p.get("core_s"))}


def _accuracy(counted):
    """Top-1 in percent from an evaluation's hits and images (None: no hits stored)."""
    if counted.get("top1_hits") is None or not counted.get("images"):
        return None
    return 100.0 * counted["top1_hits"] / counted["images"]


def _rates(rec):
    """The throughputs and accuracy, from images, seconds and hits; {} without them."""
    f = rec["figures"]
    if rec["case"] == "train":
        if not f.get("images") or f.get("whole_s") is None:
            return {}
        got = {name: _ratio(f["images"], f[secs]) for name, secs in
               (("p_whole", "whole_s"), ("p_train", "train_s"), ("p_core", "core_s"))}
        last = (f.get("evals") or rec.get("evals") or [{}])[-1]
        if last.get("top1_hits") is not None:
            got["acc"] = _accuracy(last)
        return got
    if not f.get("val_pass") or not f.get("infer_pass"):
        return {}
    got = {**_pass_figures(f["val_pass"], "val"), **_pass_figures(f["infer_pass"], "infer")}
    no_acc = rec.get("data_source") == "synthetic" or rec.get("weights_source") == "random"
    for name, p in (("acc_val", f["val_pass"]), ("acc_infer", f["infer_pass"])):
        if p.get("top1_hits") is not None:
            got[name] = None if no_acc else _accuracy(p)
    per_device = _ratio(got["p_infer_core"], rec.get("world_size", 1))
    got["latency_s"] = None if f.get("latency_why_empty") else _ratio(1.0, per_device)
    return got


def _work(rec, got):
    """TFLOP/s and MFU from FLOPs per image, the core rate and the peak (3 passes a
    training step, 1 an inference)."""
    f = rec["figures"]
    core = got.get("p_core" if rec["case"] == "train" else "p_infer_core")
    if not f.get("flops_per_image") or "tflops" not in f:
        return {}
    passes = 3 if rec["case"] == "train" else 1
    rate = _ratio(core, rec.get("world_size", 1))
    achieved = f["flops_per_image"] * passes * rate if rate else None
    peak = f.get("peak_tflops")
    return {"tflops": _ratio(achieved, 1e12),
            "mfu": _ratio(achieved, peak * 1e12 if peak else None)}


def _clock_and_memory(f):
    """e2e_time from its clock readings, mem from bytes."""
    got = {}
    clock = f.get("e2e_clock")
    if clock:
        got["e2e_time"] = clock["before_s"] + clock["end"] - clock["start"]
    if "mem_total_bytes" in f:
        got["mem_peak_gib"] = _ratio(f.get("mem_peak_bytes"), GiB)
        got["mem_total_gib"] = _ratio(f["mem_total_bytes"], GiB)
    return got


def _monitor(rec):
    """Each window's J/img (energy over its images) and mean power (energy over the
    seconds sampled, summed over devices)."""
    f = rec["figures"]
    mon = f.get("monitor") or {}
    windows = [("train", mon, f.get("images"))] if rec["case"] == "train" else [
        (name, mon.get(name) or {}, (f.get(f"{name}_pass") or {}).get("images"))
        for name in ("val", "infer")]
    got = {}
    for name, m, images in windows:
        if m.get("energy_j") is not None and "device_s" in m:
            where = "monitor" if rec["case"] == "train" else f"monitor.{name}"
            got[f"{where}.energy_per_image_j"] = _ratio(m["energy_j"], images)
            got[f"{where}.power_mean_w"] = _ratio(m["energy_j"], m["device_s"])
    return got


def recorded(rec, cell):
    """The record's own value of a cell ('monitor.val.power_mean_w': a nested figure)."""
    value = rec["figures"]
    for part in cell.split("."):
        value = (value or {}).get(part)
    return value


def rederive(rec):
    """(cell, recorded, derived) for every figure of the tables whose inputs the record
    holds: p_whole/p_train/p_core (training), p_val_*/p_infer_* and latency (inference),
    acc, e2e_time, mem, TFLOP/s, MFU, and the monitor's J/img and mean power."""
    got = _rates(rec)
    got.update(_work(rec, got))
    got.update(_clock_and_memory(rec["figures"]))
    got.update(_monitor(rec))
    return [(cell, recorded(rec, cell), value) for cell, value in got.items()]


def differs(recorded_value, derived):
    """True when a recorded figure is not what its inputs give (to 1e-9, float noise)."""
    if recorded_value is None or derived is None:
        return recorded_value is not derived
    if not isinstance(recorded_value, (int, float)) or isinstance(recorded_value, bool):
        return True
    return not math.isclose(recorded_value, derived, rel_tol=1e-9, abs_tol=1e-12)
