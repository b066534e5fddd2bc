"""What a run writes: its JSON record (figures, recipe, environment, MFU), atomically and
never over another run's, and the end of the run, which returns its exit code.

Each run writes one record on rank 0 (temporary file, then rename); tables are rebuilt
from records by `python -m common.report`, never typed.
"""
from __future__ import annotations

import datetime
import glob
import hashlib
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

from common import (cases, clocks, console, device, dist, exits, files, left_behind,
                    make_dataset, mlperf_log, recipe, tables)
from common.flops import efficiency

GiB = 1024 ** 3
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def git_commit():
    try:
        out = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def suite_version():
    """A short hash of the suite's own source (common/, the model folders' .py files,
    run_all.sh): which code made a record, where there is no git to ask."""
    digest = hashlib.sha1()
    # what is there: a vendor image may hold only common/ and one model folder
    root = glob.escape(ROOT)  # a checkout under 'runs[1]/' is a folder, not a pattern
    sources = sorted(glob.glob(os.path.join(root, "*", "*.py")) +
                     glob.glob(os.path.join(root, "run_all.sh")))
    for path in sources:
        if os.path.basename(os.path.dirname(path)) in ("tests", "results"):
            continue
        with open(path, "rb") as f:
            digest.update(os.path.relpath(path, ROOT).encode() + b"\0" + f.read())
    return digest.hexdigest()[:12]


def device_block(dev, count):
    """The record's "device": what ran, and how many of it."""
    return {"vendor": dev.vendor, "type": dev.type, "name": dev.name, "label": dev.label,
            "count": count}


def environment(run):
    dev = run.device
    launcher = "torchrun" if "TORCHELASTIC_RUN_ID" in os.environ else "python"
    return {
        "config": run.config, "nodes": run.nodes, "procs_per_node": run.local_world_size,
        "world_size": run.world_size,
        "device": {**device_block(dev, run.world_size),
                   "total_memory_gib": dev.total_memory() / GiB},
        "versions": {"torch": torch.__version__, "torchvision": torchvision.__version__,
                     "python": platform.python_version(), "stack": dev.stack()},
        "git_commit": git_commit(), "suite_version": suite_version(),
        "host": platform.node(),
        "launcher": launcher,
        "command": " ".join(shlex.quote(a) for a in [sys.executable] + sys.argv),
    }


def _record(run, args, case, model_name, figures, **fields):
    return {
        "schema": 1, "case": case, "model": model_name, "status": "ok",
        "precision": args.precision, "batch_size": args.batch_size,
        "image_size": args.image_size,
        "data_source": "synthetic" if args.synthetic else
                       "generated" if make_dataset.is_generated(args.data_dir) else "real",
        "data": "synthetic" if args.synthetic else os.path.abspath(args.data_dir),
        "decode": args.decoding,  # where and by what the images were decoded; None: synthetic
        **fields, "args": vars(args),
        "started": datetime.datetime.fromtimestamp(
            time.time() - clocks.e2e_time()).astimezone().isoformat(timespec="seconds"),
        "figures": figures, **environment(run),
    }


def recipe_complete(args, figures, weights_source):
    """Whether the run's accuracy is its recipe's result: it evaluated real data and
    stopped at the target or after every epoch (BiT: at the recipe's last step), not at
    --max-steps or a signal; a fine-tuning recipe also needs the published weights."""
    if figures.get("status", "ok") != "ok" or args.synthetic or figures.get("acc") is None:
        return False
    if weights_source == "random" and args.weights is not None:
        return False  # a fine-tuning case started from random weights
    end = args.total_steps  # a recipe counted in steps
    return (figures.get("stopped") in ("target_acc", "epochs") or
            bool(end) and figures.get("steps", 0) >= end)


def weights_source(weights):
    """'published' when the run loaded a weights file, 'random' otherwise."""
    return "random" if weights in (None, "random") else "published"


def train_record(run, args, parser, model_name, figures, flops_per_img):
    """The training record of docs/METRICS.md: figures, recipe and overrides, environment."""
    fig = dict(figures)
    evals = fig.pop("evals", [])
    status, error = fig.pop("status", "ok"), fig.pop("error", None)
    fig["flops_per_image"] = flops_per_img
    # a training step is a forward and a backward: about three forwards of work
    fig.update(efficiency(flops_per_img, fig.get("p_core"),
                          run.device.peak(run.precision, args.peak_tflops), passes=3,
                          world_size=run.world_size))
    fix_hp = recipe.fix_hp(args, parser)
    if (fig.get("batch_size_search") or {}).get("searched"):
        fix_hp = {"bs": args.batch_size, **fix_hp}  # a searched batch is always shown
    weights = weights_source(args.weights)  # from scratch: random
    record = _record(run, args, "train", model_name, fig, evals=evals,
                     global_batch_size=args.recipe["global_batch"], recipe=args.recipe,
                     recipe_complete=recipe_complete(args, figures, weights),
                     weights_source=weights, warmup_steps=args.warmup_steps, fix_hp=fix_hp)
    record.update(status=status, error=error)
    return record


def infer_record(run, args, model_name, figures, weights):
    """The inference record of docs/METRICS.md."""
    fig = dict(figures)
    status, error = fig.pop("status", "ok"), fig.pop("error", None)
    source = weights_source(weights)
    if args.synthetic or source == "random":  # random labels or weights: no accuracy
        for key in ("acc_val", "acc_infer", "acc5_val", "acc5_infer"):
            fig[key] = None
    fig.update(efficiency(fig.get("flops_per_image"), fig.get("p_infer_core"),
                          run.device.peak(run.precision, args.peak_tflops), passes=1,
                          world_size=run.world_size))
    return _record(run, args, "infer", model_name, fig, weights=weights or "random",
                   weights_source=source, engine=args.engine,
                   warmup_batches=args.warmup_batches, status=status, error=error)


def failed_case_record(case_name, reason, config):
    """The record of a run_all.sh case that ended before writing its own: which case,
    on what, and the last error line it printed."""
    model, case = cases.case_model(case_name)
    nodes, per_node = (int(n) for n in config.split("x"))
    return {"schema": 1, "case": case, "model": model.name, "status": "failed",
            "error": reason.removeprefix("error: ").strip()[:300], "precision": "",
            "batch_size": "", "config": config, "nodes": nodes, "procs_per_node": per_node,
            "world_size": nodes * per_node, "figures": {},
            "device": device_block(device.select(), nodes * per_node),
            "finished": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}


def record_name(record):
    """A new record's file name, never another's: what ran, when, and the process."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    name = (f"{record['model']}-{record['case']}-{record['device']['label']}-"
            f"{record['config']}-{record['precision']}-{stamp}-{os.getpid()}.json")
    return name.replace(" ", "_").replace("/", "_")


def write_record(record, out_dir, name=None):
    """Write `record` as a new file in out_dir (as `name`, or a new record_name), never
    over another; returns its path. It names the console log being kept, if any."""
    return files.write_json(console.name_in(record, out_dir),
                            os.path.join(out_dir, name or record_name(record)))


# where a record goes when --out has stopped taking files since the run began
FALLBACK_DIRS = (os.path.join(os.path.expanduser("~"), ".cache", "benchmark-records"),
                 os.path.join(tempfile.gettempdir(), "benchmark-records"))


def write_record_somewhere(record, out_dir, name=None):
    """(path, None) once written in out_dir; (path, why) when out_dir failed and a
    fallback folder took it; (None, why) when nothing could."""
    try:
        return write_record(record, out_dir, name), None
    except OSError as e:
        why = f"--out {out_dir}: cannot be written: {files.os_error_cause(e)}"
    for folder in FALLBACK_DIRS:
        try:
            return write_record(record, folder, name), why
        except OSError:
            continue
    return None, why


def finish(run, record, out_dir, writes=None):
    """Stamp e2e_time (script start -> now, plus the processes before a resume), write
    the record on rank 0 (on `writes`, where that is given), and beside it rank 0's
    MLPerf log of a training run, named after it; returns (the record's path, why it
    is not in out_dir or None)."""
    clock = clocks.e2e_clock(record["figures"].get("resumed"))
    record["figures"].update(e2e_time=clocks.e2e_seconds(clock), e2e_clock=clock)
    record["finished"] = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    writes = run.is_main if writes is None else writes
    if not writes:
        return None, None
    name = record_name(record)
    mlperf_log.written(run, record, name[:-5], out_dir)
    return write_record_somewhere(record, out_dir, name)


# the exit code of each status a record ends in (1 too where it is not in --out)
EXIT_CODES = {"ok": 0, "failed": 1, "incomplete": 3}


def _say_where(record, path, why, lang):
    """The record's path and its table row; where it is not in --out, why, on stderr."""
    print(f"\nrecord: {path}\n\n" + tables.seed_table(record["case"])([record], lang),
          flush=True)
    if why:
        where = (f"the record is in {path} instead" if path else
                 "the record is nowhere on disk; here it is:\n" + json.dumps(record, default=str))
        print(f"error: {why}; {where}", file=sys.stderr, flush=True)


def conclude(run, args, record, served_checkpoint=None):
    """Write the record, print its table row, remove `served_checkpoint` (the
    checkpoint.Checkpointer of a run that ended well: its record makes it needless),
    leave the process group; returns the exit code. A run that did not finish well
    returns non-zero (1 failed, 3 incomplete) once its record is written; so does one
    whose record could only go to a fallback folder (1), or nowhere (the record is
    printed, and the checkpoint kept). A run a lost rank cut short runs no collective
    here (it would wait for that rank again): the rank left_behind names writes the
    record, every rank says its line."""
    left = record["figures"].get("left_behind")
    writes = run.is_main if left is None else left_behind.writes_record(left, run.rank)
    path, why = finish(run, record, args.out, writes)
    if writes:
        _say_where(record, path, why, args.lang)
    if left is not None:
        exits.tell_error(record["error"])
        # the process group is left to the exit: shutting it down could wait on the
        # collective that timed out, where a backend has not aborted it
        return 1 if why else EXIT_CODES["incomplete"]
    (lost,) = dist.max_all(run, [1 if run.is_main and path is None else 0])
    if served_checkpoint is not None and not lost:
        served_checkpoint.remove()
    dist.teardown(run)
    return 1 if why else EXIT_CODES.get(record["status"], 1)
