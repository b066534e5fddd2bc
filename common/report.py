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

from common import cli, clocks, dist
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


def train_record(run, args, parser, model_name, figures, flops_per_img, grad_accum=1):
    """The training record of METRICS.md: figures, recipe and overrides, environment."""
    fig = dict(figures)
    evals = fig.pop("evals", [])
    fig["flops_per_image"] = flops_per_img
    # a training step is a forward and a backward: about three forwards of work
    fig.update(efficiency(flops_per_img, fig.get("p_core"),
                          run.device.peak_flops(args.precision), passes=3))
    return {
        "schema": 1, "case": "train", "model": model_name, "status": "ok",
        "precision": args.precision, "batch_size": args.batch_size,
        "global_batch_size": args.batch_size * grad_accum * run.world_size,
        "warmup_steps": args.warmup_steps,
        "data": "synthetic" if args.synthetic else os.path.abspath(args.data_dir),
        "fix_hp": cli.fix_hp(args, parser), "args": vars(args),
        "started": datetime.datetime.fromtimestamp(
            time.time() - clocks.e2e_time()).astimezone().isoformat(timespec="seconds"),
        "figures": fig, "evals": evals, **environment(run),
    }


def write_record(record, out_dir):
    """Atomically write `record` as a new file in out_dir; returns its path."""
    os.makedirs(out_dir, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    name = (f"{record['model']}-{record['case']}-{record['device']['label']}-"
            f"{record['config']}-{record['precision']}-{stamp}-{os.getpid()}.json")
    name = name.replace(" ", "_").replace("/", "_")
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(record, f, indent=1, default=str)
            f.flush()
            os.fsync(f.fileno())
        path = os.path.join(out_dir, name)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def finish(run, record, out_dir):
    """Stamp e2e_time (script start -> now), write the record on rank 0, return its path."""
    record["figures"]["e2e_time"] = clocks.e2e_time()
    record["finished"] = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    return write_record(record, out_dir) if run.is_main else None


def conclude_training(run, args, parser, model_name, figures, flops_per_img, grad_accum=1):
    """Write the training record, print its table row, leave the process group."""
    record = train_record(run, args, parser, model_name, figures, flops_per_img, grad_accum)
    path = finish(run, record, args.out)
    if run.is_main:
        print(f"\nrecord: {path}\n\n" + train_table([record], args.lang), flush=True)
    dist.teardown(run)
    return record


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
    status = rec.get("status", "ok")
    row = [
        config_label(rec["device"]["label"], rec["nodes"], rec["procs_per_node"], lang),
        rec["precision"],
        fmt_fix_hp(rec.get("fix_hp")),
        "" if e2e is None else f"{e2e:.0f}",
        fmt_rate(fig.get("p_whole")), fmt_rate(fig.get("p_train")), fmt_rate(fig.get("p_core")),
        "" if acc is None else f"{acc:.1f}%",
        fmt_mem(fig),
    ]
    if status != "ok":
        reason = rec.get("error")
        row[0] += f" [{status}: {reason}]" if reason else f" [{status}]"
    return row


def train_table(records, lang="en", model_column=None):
    records = [r for r in records if r["case"] == "train"]
    if model_column is None:
        model_column = len({r["model"] for r in records}) > 1
    headers = ["配置" if lang == "zh" else "config", *TRAIN_COLUMNS]
    rows = [train_row(r, lang) for r in records]
    if model_column:
        headers = ["model"] + headers
        rows = [[r["model"]] + row for r, row in zip(records, rows)]
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def main(argv=None):
    p = argparse.ArgumentParser(description="Render result tables from JSON records.")
    p.add_argument("paths", nargs="+", help="record files or directories of them")
    p.add_argument("--lang", choices=("en", "zh"), default="en")
    a = p.parse_args(argv)
    records = load_records(a.paths)
    if not records:
        print(f"no result records under {' '.join(a.paths)}", file=sys.stderr)
        return 1
    if any(r["case"] == "train" for r in records):
        print("Training\n")
        print(train_table(records, a.lang))
    return 0


if __name__ == "__main__":
    sys.exit(main())
