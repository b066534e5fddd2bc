"""Result records and the tables rendered from them.

Each run writes one JSON record (rank 0, atomically: temporary file, then rename),
never overwriting another run's. Tables are rebuilt from records, never typed:

    python -m common.report runs/ [--lang zh]
"""
from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time

import torch
import torchvision
from tabulate import tabulate

from common import cli, clocks, device, dist, scaling
from common.flops import efficiency

GiB = 1024 ** 3
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TRAIN_COLUMNS = ("precision", "fix_hp", "e2e_time", "p_whole", "p_train", "p_core", "acc", "mem")


def git_commit():
    try:
        out = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(run):
    dev = run.device
    launcher = "torchrun" if "TORCHELASTIC_RUN_ID" in os.environ else "python"
    return {
        "config": run.config, "nodes": run.nodes, "procs_per_node": run.local_world_size,
        "world_size": run.world_size,
        "device": {"vendor": dev.vendor, "type": dev.type, "name": dev.name,
                   "label": dev.label, "count": run.world_size,
                   "total_memory_gib": dev.total_memory() / GiB},
        "versions": {"torch": torch.__version__, "torchvision": torchvision.__version__,
                     "python": platform.python_version(), "stack": dev.stack()},
        "git_commit": git_commit(),
        "host": platform.node(),
        "launcher": launcher,
        "command": " ".join(shlex.quote(a) for a in [sys.executable] + sys.argv),
    }


def _record(run, args, case, model_name, figures, **fields):
    return {
        "schema": 1, "case": case, "model": model_name, "status": "ok",
        "precision": args.precision, "batch_size": args.batch_size,
        "data": "synthetic" if args.synthetic else os.path.abspath(args.data_dir),
        **fields, "args": vars(args),
        "started": datetime.datetime.fromtimestamp(
            time.time() - clocks.e2e_time()).astimezone().isoformat(timespec="seconds"),
        "figures": figures, **environment(run),
    }


def train_record(run, args, parser, model_name, figures, flops_per_img, grad_accum=1):
    """The training record of METRICS.md: figures, recipe and overrides, environment."""
    fig = dict(figures)
    evals = fig.pop("evals", [])
    status, error = fig.pop("status", "ok"), fig.pop("error", None)
    fig["flops_per_image"] = flops_per_img
    # a training step is a forward and a backward: about three forwards of work
    fig.update(efficiency(flops_per_img, fig.get("p_core"), run.device.peak(args.precision),
                          passes=3, world_size=run.world_size))
    fix_hp = cli.fix_hp(args, parser)
    if (fig.get("batch_size_search") or {}).get("searched"):
        fix_hp = {"bs": args.batch_size, **fix_hp}  # a searched batch is always shown
    record = _record(run, args, "train", model_name, fig, evals=evals,
                     global_batch_size=args.batch_size * grad_accum * run.world_size,
                     warmup_steps=args.warmup_steps, fix_hp=fix_hp)
    record.update(status=status, error=error)
    return record


def infer_record(run, args, model_name, figures, weights):
    """The inference record of METRICS.md."""
    fig = dict(figures)
    if args.synthetic:  # random labels: an accuracy would mean nothing
        for key in ("acc_val", "acc_infer", "acc5_val", "acc5_infer"):
            fig[key] = None
    fig.update(efficiency(fig["flops_per_image"], fig.get("p_infer_core"),
                          run.device.peak(args.precision), passes=1,
                          world_size=run.world_size))
    return _record(run, args, "infer", model_name, fig, weights=weights or "random",
                   engine=args.engine, warmup_batches=args.warmup_batches)


def write_json(obj, path):
    """Write `obj` as JSON to path atomically: a temporary file beside it, then a rename."""
    out_dir = os.path.dirname(os.path.abspath(path))
    os.makedirs(out_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1, default=str)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def write_record(record, out_dir):
    """Write `record` as a new file in out_dir, never over another; returns its path."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    name = (f"{record['model']}-{record['case']}-{record['device']['label']}-"
            f"{record['config']}-{record['precision']}-{stamp}-{os.getpid()}.json")
    name = name.replace(" ", "_").replace("/", "_")
    return write_json(record, os.path.join(out_dir, name))


def finish(run, record, out_dir):
    """Stamp e2e_time (script start -> now, plus the processes before a resume), write
    the record on rank 0, return its path."""
    record["figures"]["e2e_time"] = clocks.e2e_time(record["figures"].get("resumed"))
    record["finished"] = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    return write_record(record, out_dir) if run.is_main else None


def conclude(run, args, record):
    """Write the record, print its table row, leave the process group; a run that did
    not finish well exits non-zero (1 failed, 3 incomplete) once its record is written."""
    path = finish(run, record, args.out)
    if run.is_main:
        table = train_table if record["case"] == "train" else infer_table
        print(f"\nrecord: {path}\n\n" + table([record], args.lang), flush=True)
    dist.teardown(run)
    if record["status"] != "ok":
        sys.exit(3 if record["status"] == "incomplete" else 1)
    return record


def conclude_training(run, args, parser, model_name, figures, flops_per_img, grad_accum=1):
    return conclude(run, args, train_record(run, args, parser, model_name, figures,
                                            flops_per_img, grad_accum))


def load_records(paths):
    """Records from files and directories (searched recursively), oldest first."""
    files = []
    for p in paths:
        files += sorted(glob.glob(os.path.join(p, "**", "*.json"), recursive=True)) \
            if os.path.isdir(p) else [p]
    records = []
    for f in files:
        with open(f) as fh:
            try:
                rec = json.load(fh)
            except json.JSONDecodeError as e:
                raise ValueError(f"{f}: not a JSON result record ({e})") from None
        if isinstance(rec, dict) and "case" in rec and "figures" in rec:
            rec["_path"] = f
            records.append(rec)
    return sorted(records, key=lambda r: r.get("finished") or "")


# cells

def config_label(label, nodes, per_node, lang="en"):
    """'A100单机8卡（1x8）' in Chinese as the seeds write it, 'A100 1 node x 8 (1x8)' otherwise."""
    if lang == "zh":
        machines = {1: "单机", 2: "两机"}.get(nodes, f"{nodes}机")
        cards = "单卡" if per_node == 1 else f"{per_node}卡"
        return f"{label}{machines}{cards}（{nodes}x{per_node}）"
    return f"{label} {nodes} node{'s' if nodes > 1 else ''} x {per_node} ({nodes}x{per_node})"


def fmt_rate(v):
    if v is None:
        return ""
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}"


def fmt_fix_hp(fix_hp):
    if not fix_hp:
        return "/"
    return ",".join(f"{k}={format(v, 'g') if isinstance(v, float) else v}"
                    for k, v in fix_hp.items())


def fmt_mem(fig):
    if fig.get("mem_peak_gib") is None or fig.get("mem_total_gib") is None:
        return ""
    return f"{fig['mem_peak_gib']:.1f}/{fig['mem_total_gib']:.1f}"


def train_row(rec, lang="en"):
    fig = rec["figures"]
    e2e = fig.get("e2e_time")
    acc = fig.get("acc")
    row = [
        config_label(rec["device"]["label"], rec["nodes"], rec["procs_per_node"], lang),
        rec["precision"],
        fmt_fix_hp(rec.get("fix_hp")),
        "" if e2e is None else f"{e2e:.0f}",
        fmt_rate(fig.get("p_whole")), fmt_rate(fig.get("p_train")), fmt_rate(fig.get("p_core")),
        "" if acc is None else f"{acc:.1f}%",
        fmt_mem(fig),
    ]
    row[0] += status_note(rec)
    return row


def status_note(rec):
    """' [failed: reason]' for a run that did not finish well, '' for one that did."""
    status, reason = rec.get("status", "ok"), rec.get("error")
    if status == "ok":
        return ""
    return f" [{status}: {reason}]" if reason else f" [{status}]"


def _table(records, case, columns, row, lang, model_column):
    records = [r for r in records if r["case"] == case]
    if model_column is None:
        model_column = len({r["model"] for r in records}) > 1
    headers = ["配置" if lang == "zh" else "config", *columns]
    rows = [row(r) for r in records]
    if model_column:
        headers = ["model"] + headers
        rows = [[r["model"]] + cells for r, cells in zip(records, rows)]
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def train_table(records, lang="en", model_column=None):
    return _table(records, "train", TRAIN_COLUMNS, lambda r: train_row(r, lang), lang,
                  model_column)


INFER_COLUMNS = ("precision", "bs", "e2e_time", "p_val_whole", "p_val_core", "p_infer_whole",
                 "p_infer_core", "latency", "acc", "mem")


def infer_config(rec, lang="en"):
    """'nvidia A100' as seed 001 writes it (zh), 'NVIDIA A100' otherwise; (NxM) if several."""
    dev = rec["device"]
    vendor = dev.get("vendor", "")
    name = dev["label"] if vendor == dev["label"] else f"{vendor.lower() if lang == 'zh' else vendor} {dev['label']}"
    if rec.get("world_size", 1) > 1:
        name += f" ({rec['nodes']}x{rec['procs_per_node']})"
    return name


def fmt_latency(seconds):
    if seconds is None:
        return ""
    return f"{seconds * 1e6:.0f}μs" if seconds < 1e-3 else f"{seconds * 1e3:.2f}ms"


def infer_row(rec, lang="en", extra=True):
    fig = rec["figures"]
    one = lambda v: "" if v is None else f"{v:.1f}"  # noqa: E731
    acc = ("" if fig.get("acc_val") is None else
           f"{fig['acc_val']:.2f}/{'' if fig.get('acc_infer') is None else format(fig['acc_infer'], '.2f')}")
    mem = ("" if fig.get("mem_peak_gib") is None else
           f"{fig['mem_peak_gib']:.2f}/{fig['mem_total_gib']:.1f}")
    row = [infer_config(rec, lang), rec["precision"], str(rec["batch_size"]),
           one(fig.get("e2e_time")), one(fig.get("p_val_whole")), one(fig.get("p_val_core")),
           one(fig.get("p_infer_whole")), one(fig.get("p_infer_core")),
           fmt_latency(fig.get("latency_s")), acc, mem]
    row[0] += status_note(rec)
    if fig.get("engine_slower"):  # never silently slower than eager
        row[7] += f" (slower than eager {one(fig['p_val_core'])})"
    if extra:
        b1 = fig.get("latency_b1_ms") or {}
        row.append(f"{b1['p50']:.2f}/{b1['p99']:.2f}" if b1 else "")
    return row


def infer_table(records, lang="en", model_column=None, extra=True):
    """Seed 001's inference table; `extra` adds the measured batch-1 latency p50/p99 (ms)."""
    columns = INFER_COLUMNS + (("b1 p50/p99 ms",) if extra else ())
    return _table(records, "infer", columns, lambda r: infer_row(r, lang, extra), lang,
                  model_column)


POWER_COLUMNS = ("model", "config", "precision", "pass", "source", "power max W",
                 "power mean W", "J/img", "device mem GiB", "util %", "host cpu %",
                 "host mem GiB")


def _monitored(rec):
    """(pass name, monitor figures) of a record: training's timed region, or each
    inference pass."""
    mon = rec["figures"].get("monitor") or {}
    if rec["case"] == "train":
        return [("train", mon)] if mon else []
    return [(name, mon[name]) for name in ("val", "infer") if mon.get(name)]


def power_table(records, lang="en"):
    """What the hardware monitor saw in each run; empty cells where a source was missing."""
    one = lambda v: "" if v is None else f"{v:.1f}"  # noqa: E731
    rows = []
    for rec in records:
        for name, m in _monitored(rec):
            if m.get("interval_s") is None:  # monitor off
                continue
            rows.append([rec["model"],
                         config_label(rec["device"]["label"], rec["nodes"],
                                      rec["procs_per_node"], lang),
                         rec["precision"], name, m.get("source") or "", one(m.get("power_max_w")),
                         one(m.get("power_mean_w")),
                         "" if m.get("energy_per_image_j") is None
                         else f"{m['energy_per_image_j']:.3g}",
                         one(m.get("device_mem_peak_gib")), one(m.get("device_util_mean_pct")),
                         one(m.get("host_cpu_mean_pct")), one(m.get("host_mem_peak_gib"))])
    return tabulate(rows, headers=POWER_COLUMNS, tablefmt="github", disable_numparse=True)


def failed_case_record(case_name, reason, config):
    """The record of a run_all.sh case that ended before writing its own: which case,
    on what, and the last error line it printed."""
    model, case = case_name.rsplit("_", 1)
    nodes, per_node = (int(n) for n in config.split("x"))
    dev = device.select()
    return {"schema": 1, "case": case, "model": model, "status": "failed",
            "error": reason.removeprefix("error: ").strip()[:300], "precision": "",
            "batch_size": "", "config": config, "nodes": nodes, "procs_per_node": per_node,
            "world_size": nodes * per_node, "figures": {},
            "device": {"vendor": dev.vendor, "type": dev.type, "name": dev.name,
                       "label": dev.label, "count": nodes * per_node},
            "finished": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}


def main(argv=None):
    p = argparse.ArgumentParser(description="Render result tables from JSON records.")
    p.add_argument("paths", nargs="+", help="record files or directories of them")
    p.add_argument("--lang", choices=("en", "zh"), default="en")
    p.add_argument("--failed-case", metavar="MODEL_CASE",
                   help="write a failed record for this run_all.sh case (e.g. vit_train) "
                        "into the one directory given, instead of rendering")
    p.add_argument("--reason", default="", help="with --failed-case: why it failed")
    p.add_argument("--config", default="1x1", help="with --failed-case: nodes x devices")
    a = p.parse_args(argv)
    if a.failed_case:
        print(write_record(failed_case_record(a.failed_case, a.reason, a.config), a.paths[0]))
        return 0
    records = load_records(a.paths)
    if not records:
        print(f"no result records under {' '.join(a.paths)}", file=sys.stderr)
        return 1
    if any(r["case"] == "train" for r in records):
        print("Training\n")
        print(train_table(records, a.lang))
    if any(r["case"] == "infer" for r in records):
        print("\nInference\n")
        print(infer_table(records, a.lang))
    # several sizes of one training case: how it scales
    if scaling.several_sizes(records):
        print("\nScaling (p_core per device; efficiency = p_core / (devices x p_core at 1x1))\n")
        print(scaling.scaling_table(records))
    # host figures alone (a CPU run) stay in the records; the table is for devices
    if any(m.get("source") for r in records for _, m in _monitored(r)):
        print("\nHardware monitor (device cells empty where no source answered)\n")
        print(power_table(records, a.lang))
    return 0


if __name__ == "__main__":
    sys.exit(main())
