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
import hashlib
import sys
import tempfile
import time

from tabulate import tabulate

from common import compare, files, make_dataset, plots, recipe, scaling
from common.errors import UserError
from common.flags import Parser


def config_arg(text):
    """'1x8' -> '1x8': nodes x devices per node."""
    nodes, _, per_node = text.partition("x")
    if not (nodes.isdigit() and per_node.isdigit() and int(nodes) > 0 and int(per_node) > 0):
        raise argparse.ArgumentTypeError(f"{text!r}: give nodes x devices per node, e.g. 1x8")
    return text


config_arg.refuses = "8"


def case_arg(text):
    """'vit_train' -> 'vit_train': a run_all.sh case, <model>_<train|infer>."""
    if text.rpartition("_")[2] not in ("train", "infer"):
        raise argparse.ArgumentTypeError(f"{text!r}: give a run_all.sh case, e.g. vit_train")
    return text


case_arg.refuses = "vit"


def get_args_parser():
    p = Parser(description="Render result tables from JSON records.")
    p.add_argument("paths", nargs="+", help="record files or directories of them")
    p.add_argument("--lang", choices=("en", "zh"), default="en")
    p.add_argument("--failed-case", type=case_arg, metavar="MODEL_CASE",
                   help="write a failed record for this run_all.sh case (e.g. vit_train) "
                        "into the one directory given, instead of rendering")
    p.add_argument("--reason", default="", help="with --failed-case: why it failed")
    p.add_argument("--config", type=config_arg, default="1x1",
                   help="with --failed-case: nodes x devices")
    p.add_argument("--compare", metavar="REFERENCE_DIR",
                   help="also print each record beside the reference row it matches, with "
                        "the ratio of every throughput (e.g. results/reference)")
    p.add_argument("--plots", metavar="OUTDIR",
                   help="also write PNGs (convergence, training loss and rate, scaling, "
                        "hardware monitor) to OUTDIR; needs matplotlib")
    return p


if __name__ == "__main__":  # flags first: --help and a mistyped flag answer before torch loads
    args = get_args_parser().parse_args()

import torch
import torchvision

from common import clocks, device, dist, exits, left_behind
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


def write_json(obj, path):
    """Write `obj` as JSON to path atomically: a temporary file beside it, then a rename."""
    return files.write_atomically(path, lambda f: json.dump(obj, f, indent=1, default=str))


def write_record(record, out_dir):
    """Write `record` as a new file in out_dir, never over another; returns its path."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    name = (f"{record['model']}-{record['case']}-{record['device']['label']}-"
            f"{record['config']}-{record['precision']}-{stamp}-{os.getpid()}.json")
    name = name.replace(" ", "_").replace("/", "_")
    return write_json(record, os.path.join(out_dir, name))


# where a record goes when --out has stopped taking files since the run began
FALLBACK_DIRS = (os.path.join(os.path.expanduser("~"), ".cache", "benchmark-records"),
                 os.path.join(tempfile.gettempdir(), "benchmark-records"))


def write_record_somewhere(record, out_dir):
    """(path, None) once written in out_dir; (path, why) when out_dir failed and a
    fallback folder took it; (None, why) when nothing could."""
    try:
        return write_record(record, out_dir), None
    except OSError as e:
        why = f"--out {out_dir}: cannot be written: {files.os_error_cause(e)}"
    for folder in FALLBACK_DIRS:
        try:
            return write_record(record, folder), why
        except OSError:
            continue
    return None, why


def finish(run, record, out_dir, writes=None):
    """Stamp e2e_time (script start -> now, plus the processes before a resume), write
    the record on rank 0 (on `writes`, where that is given); returns (its path, why it
    is not in out_dir or None)."""
    record["figures"]["e2e_time"] = clocks.e2e_time(record["figures"].get("resumed"))
    record["finished"] = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    writes = run.is_main if writes is None else writes
    return write_record_somewhere(record, out_dir) if writes else (None, None)


def conclude(run, args, record, served_checkpoint=None):
    """Write the record, print its table row, remove the checkpoint it makes needless,
    leave the process group. A run that did not finish well exits non-zero (1 failed,
    3 incomplete) once its record is written; so does one whose record could only go
    to a fallback folder (1), or nowhere (the record is printed, and the checkpoint
    kept). A run a lost rank cut short runs no collective here (it would wait for that
    rank again): the rank left_behind names writes the record, every rank says its line."""
    left = record["figures"].get("left_behind")
    writes = run.is_main if left is None else left_behind.writes_record(left, run.rank)
    path, why = finish(run, record, args.out, writes)
    if writes:
        table = train_table if record["case"] == "train" else infer_table
        print(f"\nrecord: {path}\n\n" + table([record], args.lang), flush=True)
        if why:
            where = (f"the record is in {path} instead" if path else
                     "the record is nowhere on disk; here it is:\n" +
                     json.dumps(record, default=str))
            print(f"error: {why}; {where}", file=sys.stderr, flush=True)
    if left is not None:
        exits.tell_error(record["error"])
        # the process group is left to the exit: shutting it down could wait on the
        # collective that timed out, where a backend has not aborted it
        exits.quiet_exit(1 if why else 3)
    (lost,) = dist.max_all(run, [1 if run.is_main and path is None else 0])
    if served_checkpoint is not None and not lost:
        served_checkpoint()
    dist.teardown(run)
    if why:
        exits.quiet_exit(1)
    if record["status"] != "ok":
        exits.quiet_exit(3 if record["status"] == "incomplete" else 1)
    return record


def conclude_training(run, args, parser, model_name, figures, flops_per_img):
    figures = dict(figures)
    served = figures.pop("served_checkpoint", None)
    return conclude(run, args, train_record(run, args, parser, model_name, figures,
                                            flops_per_img), served)


def load_records(paths):
    """Records from files and directories (searched recursively), oldest first. A file
    that is not a record (malformed JSON, another tool's file, a record these tables
    cannot show) is left out with a one-line warning naming it; an older record's
    missing keys become empty cells."""
    files_found = []
    for p in paths:
        # the folder as it is spelt: 'runs[1]' is a name, not a pattern
        files_found += sorted(glob.glob(os.path.join(glob.escape(p), "**", "*.json"),
                                        recursive=True)) if os.path.isdir(p) else [p]
    records = []
    for f in files_found:
        rec, why = _read_record(f)
        if why:
            print(f"warning: {f}: {why}; left out", file=sys.stderr, flush=True)
            continue
        if rec is not None:
            rec["_path"] = f
            records.append(rec)
    return sorted(records, key=lambda r: str(r.get("finished") or ""))


def _read_record(path):
    """(record, None), (None, None) for a file of this suite that is no run record (a
    bench result), or (None, why not)."""
    try:
        with open(path, encoding="utf-8") as fh:
            rec = json.load(fh)
    except (OSError, UnicodeDecodeError) as e:
        return None, f"cannot be read ({getattr(e, 'strerror', None) or e})"
    except json.JSONDecodeError as e:
        return None, f"not JSON ({e})"
    if isinstance(rec, dict) and rec.get("case") == "bench":
        return None, None
    if not isinstance(rec, dict) or rec.get("case") not in ("train", "infer") \
            or not isinstance(rec.get("figures"), dict):
        return None, "not a result record of this suite (no case and figures)"
    _fill_missing(rec)
    try:  # a record these tables cannot show is named here, not a traceback later
        (train_table if rec["case"] == "train" else infer_table)([rec])
        render(monitor_rows([rec]), MONITOR)
        scaling.scaling_table([rec])
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        return None, f"a record these tables cannot show ({type(e).__name__}: {e})"
    return rec, None


def _fill_missing(rec):
    """Keys an older record may lack, as empty cells."""
    for key, empty in (("model", ""), ("precision", ""), ("batch_size", ""), ("nodes", 1),
                       ("procs_per_node", 1), ("status", "ok")):
        rec.setdefault(key, empty)
    rec.setdefault("world_size", rec["nodes"] * rec["procs_per_node"])
    rec["device"] = {"label": "", "vendor": "", **(rec.get("device") or {})}


# cells

def config_label(label, nodes, per_node, lang="en"):
    """'A100单机8卡（1x8）' in Chinese as the seeds write it, 'A100 1 node x 8 (1x8)'
    otherwise."""
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


ROW_KINDS = {  # what a row is when it is not a run of the case as published: en, zh
    "reference": ("published seed row", "种子报告数据"),
    "synthetic": ("synthetic data", "合成数据"),
    "generated": ("generated data", "生成的数据集"),
    "random": ("random weights", "随机权重"),
    "short": ("short run, throughput only", "未完成配方, 仅吞吐量"),
    "device_decode": ("decoded on the device", "设备端解码"),
}


def row_kinds(rec):
    """What sets a row apart from a full run of the case on real data, as keys of
    ROW_KINDS: a seed's published row; synthetic data; a dataset common.make_dataset
    generated; images decoded on the device; random weights where the case serves or fine-tunes published ones; a
    training run that stopped before its recipe's end."""
    kinds = ["reference"] if "reference" in rec else []  # results/reference/: not ours
    data = scaling.data_source(rec)
    if data in ("synthetic", "generated"):  # generated: common.make_dataset's, not ImageNet
        kinds.append(data)
    if scaling.decode_mode(rec) == "device":  # the seeds decoded on the host
        kinds.append("device_decode")
    random = rec.get("weights_source", rec.get("weights")) == "random"
    # a training script with --weights fine-tunes; the others leave it None (or out)
    fine_tunes = rec.get("args", {}).get("weights") is not None
    if random and (rec["case"] == "infer" or fine_tunes):
        kinds.append("random")
    if (rec["case"] == "train" and rec.get("status", "ok") == "ok"
            and rec.get("recipe_complete") is False
            and "synthetic" not in kinds):  # synthetic data is throughput only anyway
        kinds.append("short")
    return kinds


def shows_acc(rec):
    """A training row shows acc only when the run finished its recipe (the record keeps
    every evaluation either way); older records without the mark show what they hold."""
    return rec.get("recipe_complete", rec["figures"].get("acc") is not None)


def kind_note(rec, lang="en"):
    kinds = row_kinds(rec)
    words = [ROW_KINDS[k][lang == "zh"] for k in kinds]
    return f" [{'; '.join(words)}]" if words else ""


def status_note(rec):
    """' [failed: reason]' for a run that did not finish well, '' for one that did."""
    status, reason = rec.get("status", "ok"), rec.get("error")
    if status == "ok":
        return ""
    return f" [{status}: {reason}]" if reason else f" [{status}]"


def infer_config(rec, lang="en"):
    """'nvidia A100' as seed 001 writes it (zh), 'NVIDIA A100' otherwise; (NxM) if several."""
    dev = rec["device"]
    vendor = dev.get("vendor", "")
    said = vendor.lower() if lang == "zh" else vendor  # the seed writes "nvidia A100"
    name = dev["label"] if vendor == dev["label"] else f"{said} {dev['label']}"
    if rec.get("world_size", 1) > 1:
        name += f" ({rec['nodes']}x{rec['procs_per_node']})"
    return name


def fmt_latency(seconds):
    if seconds is None:
        return ""
    return f"{seconds * 1e6:.0f}μs" if seconds < 1e-3 else f"{seconds * 1e3:.2f}ms"


# tables: each column declared once, its header (en, zh) and its cell together

EMPTY = "/"  # the seeds' mark for a figure a row does not have


def column(header, cell, zh=None):
    """A column: header in English and Chinese, and cell(record, lang) -> its text,
    None or '' where the row has no such figure."""
    return header, zh or header, cell


def figure(name, fmt):
    """The cell of figure `name`, formatted by fmt."""
    def cell(rec, lang):
        value = rec["figures"].get(name)
        return None if value is None else fmt(value)
    return cell


def _one_decimal(v):
    return f"{v:.1f}"


def _whole(v):
    return f"{v:.0f}"


def _two_decimals(v):
    return f"{v:.2f}"


def _precision(rec, lang):
    return rec.get("precision")


def _train_config(rec, lang):
    return (config_label(rec["device"]["label"], rec["nodes"], rec["procs_per_node"], lang)
            + status_note(rec) + kind_note(rec, lang))


def _infer_config_cell(rec, lang):
    return infer_config(rec, lang) + status_note(rec) + kind_note(rec, lang)


def _train_acc(rec, lang):
    acc = rec["figures"].get("acc") if shows_acc(rec) else None
    return None if acc is None else f"{acc:.1f}%"


def _infer_acc(rec, lang):
    """'validation/inference' top-1; an empty side as '/' too."""
    f = rec["figures"]
    if f.get("acc_val") is None and f.get("acc_infer") is None:
        return None
    return "/".join(EMPTY if v is None else f"{v:.2f}" for v in (f.get("acc_val"),
                                                                    f.get("acc_infer")))


def _infer_core(rec, lang):
    """p_infer_core; an engine slower than eager says so, with eager's figure beside it."""
    f = rec["figures"]
    if f.get("p_infer_core") is None:
        return None
    core = _one_decimal(f["p_infer_core"])
    if f.get("engine_slower"):  # never silently slower than eager
        core += f" (slower than eager {_one_decimal(f['p_val_core'])})"
    return core


def _infer_mem(rec, lang):
    f = rec["figures"]
    if f.get("mem_peak_gib") is None or f.get("mem_total_gib") is None:
        return None
    return f"{f['mem_peak_gib']:.2f}/{f['mem_total_gib']:.1f}"


def _batch(rec, lang):
    return None if rec.get("batch_size") in (None, "") else str(rec["batch_size"])


def _latency_b1(percentile):
    def cell(rec, lang):
        b1 = rec["figures"].get("latency_b1_ms") or {}
        return None if b1.get(percentile) is None else f"{b1[percentile]:.2f}"
    return cell


def _gflops(v):
    return f"{v / 1e9:.2f}"


def _mfu(v):
    return f"{100 * v:.1f}%"


CONFIG = column("config", _train_config, zh="配置")
PRECISION = column("precision", _precision)
MODEL = column("model", lambda rec, lang: rec["model"], zh="模型")

# seed 000's training table
TRAIN = (
    CONFIG, PRECISION,
    column("fix_hp", lambda rec, lang: fmt_fix_hp(rec.get("fix_hp"))),
    column("e2e_time", figure("e2e_time", _whole)),
    column("p_whole", figure("p_whole", fmt_rate)),
    column("p_train", figure("p_train", fmt_rate)),
    column("p_core", figure("p_core", fmt_rate)),
    column("acc", _train_acc),
    column("mem", lambda rec, lang: fmt_mem(rec["figures"])),
)

INFER_CONFIG = column("config", _infer_config_cell, zh="配置")
# seed 001's inference table; its glossary calls acc "推理/验证": the header says ours
INFER = (
    INFER_CONFIG, PRECISION, column("bs", _batch),
    column("e2e_time", figure("e2e_time", _one_decimal)),
    column("p_val_whole", figure("p_val_whole", _one_decimal)),
    column("p_val_core", figure("p_val_core", _one_decimal)),
    column("p_infer_whole", figure("p_infer_whole", _one_decimal)),
    column("p_infer_core", _infer_core),
    column("latency", figure("latency_s", fmt_latency)),
    column("acc (val/infer)", _infer_acc, zh="acc(验证/推理)"),
    column("mem", _infer_mem),
)

# extras: figures the seeds do not have, in tables of their own
LATENCY = (
    MODEL, INFER_CONFIG, PRECISION, column("bs", _batch),
    column("engine", lambda rec, lang: rec.get("engine"), zh="引擎"),
    column("build_s", figure("build_s", _one_decimal)),
    column("b1 p50 ms", _latency_b1("p50")),
    column("b1 p90 ms", _latency_b1("p90")),
    column("b1 p99 ms", _latency_b1("p99")),
)
EFFICIENCY = (
    MODEL,
    column("case", lambda rec, lang: rec["case"], zh="任务"),
    CONFIG, PRECISION,
    column("GFLOPs/img", figure("flops_per_image", _gflops)),
    column("TFLOP/s", figure("tflops", _two_decimals)),
    column("MFU", figure("mfu", _mfu)),
)


def _monitor_cell(name, fmt=_one_decimal):
    def cell(row, lang):
        value = row["monitor"].get(name)
        return None if value is None else fmt(value)
    return cell


# one row per monitored window: a record with "pass" and "monitor" added
MONITOR = (
    MODEL,
    column("config", lambda row, lang: config_label(row["device"]["label"], row["nodes"],
                                                    row["procs_per_node"], lang), zh="配置"),
    PRECISION,
    column("pass", lambda row, lang: row["pass"], zh="阶段"),
    column("source", lambda row, lang: row["monitor"].get("source"), zh="来源"),
    column("power max W", _monitor_cell("power_max_w"), zh="最大功耗 W"),
    column("power mean W", _monitor_cell("power_mean_w"), zh="平均功耗 W"),
    column("J/img", _monitor_cell("energy_per_image_j", lambda v: f"{v:.3g}"), zh="每图能耗 J"),
    column("device mem GiB", _monitor_cell("device_mem_peak_gib"), zh="设备内存 GiB"),
    column("util %", _monitor_cell("device_util_mean_pct"), zh="利用率 %"),
    column("host cpu %", _monitor_cell("host_cpu_mean_pct"), zh="主机 CPU %"),
    column("host mem GiB", _monitor_cell("host_mem_peak_gib"), zh="主机内存 GiB"),
)

# the seed tables' header names, config left out (the comparison builds on them)
TRAIN_COLUMNS = tuple(c[0] for c in TRAIN[1:])
INFER_COLUMNS = tuple(c[0] for c in INFER[1:])


def cells(rec, columns, lang="en"):
    """A row's cells; '/' wherever the row has no such figure."""
    return [text if text not in (None, "") else EMPTY
            for text in (cell(rec, lang) for _, _, cell in columns)]


def render(rows, columns, lang="en"):
    """A GitHub-markdown table of rows under the columns' headers in `lang`. With
    wcwidth installed, tabulate counts a Chinese character as two columns, so the
    table lines up in a terminal."""
    headers = [zh if lang == "zh" else en for en, zh, _ in columns]
    return tabulate([cells(row, columns, lang) for row in rows], headers=headers,
                    tablefmt="github", disable_numparse=True)


def train_row(rec, lang="en"):
    return cells(rec, TRAIN, lang)


def infer_row(rec, lang="en"):
    return cells(rec, INFER, lang)


# the seeds' row order: 1x8 as published, 1x8 filling the device, 1x1, 2x8, then others
SEED_ORDER = {(1, 8): 0, (1, 1): 2, (2, 8): 3}


def seed_order(rec):
    where = (rec["nodes"], rec["procs_per_node"])
    rank = SEED_ORDER.get(where, 4)
    if where == (1, 8) and rec.get("fix_hp"):
        rank = 1
    return rank, rec["nodes"] * rec["procs_per_node"]


def train_table(records, lang="en"):
    """Seed 000's table of these training records, rows in the seeds' order."""
    return render(sorted((r for r in records if r["case"] == "train"), key=seed_order),
                  TRAIN, lang)


def infer_table(records, lang="en"):
    """Seed 001's table of these inference records, rows in the seeds' order."""
    return render(sorted((r for r in records if r["case"] == "infer"), key=seed_order),
                  INFER, lang)


def _monitored(rec):
    """(pass name, monitor figures) of a record: training's timed region, or each
    inference pass."""
    mon = rec["figures"].get("monitor") or {}
    if rec["case"] == "train":
        return [("train", mon)] if mon else []
    return [(name, mon[name]) for name in ("val", "infer") if mon.get(name)]


def monitor_rows(records):
    """One row per monitored window (a record with its pass and monitor figures)."""
    return [{**rec, "pass": name, "monitor": m} for rec in records
            for name, m in _monitored(rec) if m.get("interval_s") is not None]


TITLES = {  # section titles, en and zh
    "train": ("Training", "训练"),
    "infer": ("Inference", "推理"),
    "latency": ("Inference: batch-1 latency of the engine and its build",
                "推理：引擎单样本延迟与构建时间"),
    "efficiency": ("Work and efficiency", "计算量与效率"),
    "scaling": ("Scaling (p_core per device; efficiency = p_core / (devices x p_core at 1x1))",
                "扩展性（每卡 p_core；效率 = p_core / (卡数 x 1x1 的 p_core)）"),
    "monitor": ("Hardware monitor (device cells '/' where no source answered)",
                "硬件监控（无数据源处为 /）"),
}


def title(key, lang, model=None):
    text = TITLES[key][lang == "zh"]
    return text if model is None else f"{text}{'：' if lang == 'zh' else ': '}{model}"


def tables(records, lang="en"):
    """Every table the records give: one per model and case as the seeds have them, then
    the extras (batch-1 latency, efficiency, scaling, hardware monitor)."""
    parts = []
    for case, table in (("train", train_table), ("infer", infer_table)):
        of_case = [r for r in records if r["case"] == case]
        for model in dict.fromkeys(r["model"] for r in of_case):
            parts.append((title(case, lang, model),
                          table([r for r in of_case if r["model"] == model], lang)))
    measured = [r for r in records if "reference" not in r]  # the seeds have no extras
    inferred = sorted((r for r in measured if r["case"] == "infer"), key=seed_order)
    if inferred:
        parts.append((title("latency", lang), render(inferred, LATENCY, lang)))
    if any(r["figures"].get("flops_per_image") for r in measured):
        parts.append((title("efficiency", lang), render(
            [r for r in measured if r["figures"].get("flops_per_image")], EFFICIENCY, lang)))
    if scaling.several_sizes(records):
        parts.append((title("scaling", lang), scaling.scaling_table(records, lang)))
    # host figures alone (a CPU run) stay in the records; the table is for devices
    monitored = [row for row in monitor_rows(records) if row["monitor"].get("source")]
    if monitored:
        parts.append((title("monitor", lang), render(monitored, MONITOR, lang)))
    return "\n\n".join(f"{heading}\n\n{table}" for heading, table in parts)


def load_references(path):
    """The reference records under path; a path without any is the user's mistake."""
    if not os.path.exists(path):
        raise UserError(f"--compare {path}: no such file or directory; give the folder of "
                        f"reference records, e.g. results/reference")
    refs = [r for r in load_records([path]) if "reference" in r]
    if not refs:
        raise UserError(f"--compare {path}: holds no reference records; give the folder of "
                        f"reference records, e.g. results/reference")
    return refs


# our records beside the seeds' rows (--compare): which rows match is common/compare.py's

def _comparison_columns(case):
    """Headers and row cells of a case, as the report's own tables render them."""
    if case == "train":
        return ["config", *TRAIN_COLUMNS], train_row
    return ["config", *INFER_COLUMNS], infer_row


def _seed_rows(ours, ref, headers, row, lang):
    """The reference row, its real precision class beside the seed's label, and the ratios."""
    cells = row(ref, lang)
    if ref.get("reported_precision") not in (None, ref["precision"]):
        cells[headers.index("precision")] = \
            f"{ref['precision']} (seed: {ref['reported_precision']})"
    ratios = [compare.ratio(ours, ref, *compare.RATIOS[h]) if h in compare.RATIOS else ""
              for h in headers]
    return [["", f"seed {ref['reference']['seed'][:3]}", *cells, ref["reference"]["seed"]],
            ["", "ours / seed", *ratios, ""]]


def _group(ours, references, headers, row, lang):
    """Our row; then each reference row it matches with the ratios, or why there is none."""
    refs = [r for r in references if not compare.differences(ours, r)]
    note = ""
    if not refs:
        found = compare.hints(ours, references)
        note = "no reference" + (f": {'; '.join(found)}" if found else "")
    rows = [[ours["model"], "ours", *row(ours, lang), note]]
    for ref in refs:
        rows += _seed_rows(ours, ref, headers, row, lang)
    return rows


def comparison_table(records, references, case, lang="en"):
    headers, row = _comparison_columns(case)
    rows = [cells for rec in records for cells in _group(rec, references, headers, row, lang)]
    return tabulate(rows, headers=["model", "row", *headers, "note"], tablefmt="github",
                    disable_numparse=True)


def comparison(records, references, lang="en"):
    """One table per case: each of our records beside the reference rows it matches."""
    ours = [r for r in records if "reference" not in r]
    parts = []
    for case, title in (("train", "Training"), ("infer", "Inference")):
        mine = [r for r in ours if r["case"] == case]
        if mine:
            parts.append(f"{title} beside the seeds' rows (ratios: ours / seed; latency: "
                         f"seed / ours; above 1 is faster)\n\n"
                         + comparison_table(mine, references, case, lang))
    return "\n\n".join(parts)


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


def main(argv=None, args=None):
    p = get_args_parser()
    a = args or p.parse_args(argv)
    if a.failed_case:
        print(write_record(failed_case_record(a.failed_case, a.reason, a.config), a.paths[0]))
        return 0
    missing = [path for path in a.paths if not os.path.exists(path)]
    if missing:
        p.error(f"{missing[0]}: no such file or directory; give record files or the "
                f"--out directories of runs")
    records = load_records(a.paths)
    if not records:
        print(f"no result records under {' '.join(a.paths)}", file=sys.stderr)
        return 1
    try:  # before the tables: a missing package or reference is said at once
        if a.plots:
            plots.pyplot()
            files.check_writable(a.plots, "--plots")
        references = load_references(a.compare) if a.compare else None
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(tables(records, a.lang))
    if a.compare:
        print("\n" + comparison(records, references, a.lang))
    if a.plots:
        print("\nPlots\n\n" + "\n".join(plots.write_all(records, a.plots)))
    return 0


if __name__ == "__main__":
    sys.exit(main(args=args))
