"""`python -m common.report DIR --check`: a folder of records read as a reviewer reads it
before its tables are published, one line per finding and what to do about it.

For each table (model and case) the folder holds: the seed's configurations are there
(training: 1x8 at the recipe's batch, 1x8 filling the device, 1x1, 2x8; inference: fp16
and the fp32 class), one device, one suite version and one precision class per table;
for each record: every empty cell of the seed's columns explained by the record, mem
divided by the device's own memory, accuracy shown only from a complete recipe, a
warm-up shorter than the timed part; and each row run 3 times or more. Which
configurations a seed has is read from its reference records (results/reference/): a
configuration the seed has none of, an empty cell the record explains and a row of
fewer than 3 runs are warnings; the rest are errors. No torch here.
"""
from __future__ import annotations

import os
from collections import namedtuple

from common import cases, columns, repeats, tables

SEEDS_DIR = os.path.join(cases.ROOT, "results", "reference")
ERROR, WARNING = "error", "warning"
Finding = namedtuple("Finding", "level where what")

FILLING = "1x8 filling the device"
CONFIGS = {"train": ("1x8 at the recipe's batch", FILLING, "1x1", "2x8"),
           "infer": ("fp16", "fp32")}
FP32_CLASS = ("fp32", "tf32")  # the seeds' "fp32" rows ran as tf32: both are fp32 class
SEED_COLUMNS = {"train": [c for c in tables.TRAIN if c[0] not in ("config", "fix_hp")],
                "infer": [c for c in tables.INFER if c[0] != "config"]}
MIN_RUNS = 3
# why a row has no accuracy, by what the row is (common/tables.py's row kinds)
NO_ACC = {"synthetic": "synthetic data, whose labels are random",
          "random": "random weights, not the published ones",
          "short": "a short run, stopped before its recipe's end: its last evaluation is "
                   "not the recipe's accuracy"}
DATA = "DATA_DIR=/data/imagenet"  # the docs' ImageNet root


def ok(rec):
    return rec.get("status", "ok") == "ok"


def fills_device(rec):
    """A larger per-device batch than the recipe's, as the seeds show it: bs in fix_hp
    (a seed's row changes it only to fill the device; our records also say the recipe's)."""
    if "bs" not in (rec.get("fix_hp") or {}):
        return False
    recipe = (rec.get("args") or {}).get("recipe_batch_size")
    batch = rec.get("batch_size")
    return recipe is None or (isinstance(batch, int) and batch > recipe)


def config_of(rec):
    """The seed configuration a record is a run of, or its own size where it is none."""
    if rec["case"] == "infer":
        return "fp32" if rec.get("precision") in FP32_CLASS else rec.get("precision")
    size = f"{rec['nodes']}x{rec['procs_per_node']}"
    if size != "1x8":
        return size
    if fills_device(rec):
        return FILLING
    return CONFIGS["train"][0] if "bs" not in (rec.get("fix_hp") or {}) else \
        f"1x8 at bs={rec.get('batch_size')}"


def row_label(rec):
    """How a row is named in a line: its size, and what it changed or its precision."""
    size = f"{rec['nodes']}x{rec['procs_per_node']}"
    if rec["case"] == "infer":
        return f"{rec.get('precision')} {size}"
    return size + (f" {columns.fmt_fix_hp(rec['fix_hp'])}" if rec.get("fix_hp") else "")


def by_table(records):
    """{(model, case): records}, in the order the tables are rendered."""
    found = {}
    for case in ("train", "infer"):
        for rec in records:
            if rec["case"] == case:
                found.setdefault((rec["model"], case), []).append(rec)
    return found


# what to run for a missing configuration

def case_name(model, case):
    """run_all.sh's CASES name of a table (vit_train), or a placeholder for a model the
    registry does not name."""
    found = next((m for m in cases.MODELS if m.name == model), None)
    return found.case(case) if found is not None else f"<{model}'s case>"


def command(model, case, config, precision):
    """The run_all.sh line that makes a record of this configuration."""
    found = next((m for m in cases.MODELS if m.name == model), None)
    if case == "infer":
        where = "NPROC=1"  # the seed's inference rows are one device's
    else:
        where = {"1x1": "NPROC=1", "2x8": "NNODES=2 NODE_RANK=<0, then 1> "
                                          "MASTER_ADDR=<node 0> NPROC=8"}.get(config, "NPROC=8")
    flags = [f"--precision {precision}"] + (["--batch-size auto"] if config == FILLING else [])
    weights = " WEIGHTS_DIR=<the published weights' folder>" \
        if found is not None and found.weights(case) else ""
    return (f"{where} {DATA}{weights} CASES={case_name(model, case)} "
            f"EXTRA_ARGS='{' '.join(flags)}' bash run_all.sh")


def _precision_for(case, config, table, seeded):
    """The precision a missing configuration runs at: training, the table's own, else
    the seed's; inference, the seed row's; else the configuration's name (inference) or
    the scripts' default, fp32."""
    if case == "infer":
        theirs = [seeded[config]["precision"]] if config in seeded else []
        return (theirs + [config])[0]
    mine = [r["precision"] for r in table if ok(r) and r.get("precision")]
    return (mine + [r["precision"] for r in seeded.values()] + ["fp32"])[0]


def missing(model, case, config, table, seeded):
    """The finding of a configuration without a finished record. `seeded`: {config: the
    seed's row} of this case, or None where no seed was read."""
    seed_rec = (seeded or {}).get(config)
    run = command(model, case, config, _precision_for(case, config, table, seeded or {}))
    unfinished = [r for r in table if config_of(r) == config and not ok(r)]
    said = (f"only a run that did not finish ({unfinished[-1]['_path']}: "
            f"{unfinished[-1].get('status')}: {unfinished[-1].get('error')}); fix what it "
            f"says and run it again: {run}") if unfinished else f"no record; run {run}"
    where = f"{model} {case} {config}"
    if seeded is None or seed_rec is not None:
        return Finding(ERROR, where, said)
    seed = sorted({r["reference"]["seed"][:3] for r in seeded.values()})
    why = (f"seed {', '.join(seed)} has none either: nothing to set it beside" if seed
           else f"no seed publishes {model} {case} rows")
    return Finding(WARNING, where, f"{said.split(';')[0]}; {why}; to add it: {run}")


def configuration_findings(model, case, table, seeds):
    """Each seed configuration of a table without a finished record."""
    present = {config_of(r) for r in table if ok(r)}
    seeded = None if seeds is None else {
        config_of(r): r for r in seeds if (r["model"], r["case"]) == (model, case)}
    return [missing(model, case, config, table, seeded)
            for config in CONFIGS[case] if config not in present]


# one table: one device, one suite version, one precision class

def _values(table, key):
    found = {}
    for rec in table:
        found.setdefault(key(rec), []).append(rec)
    return found


def _listed(found):
    """Each value with its count of records and the first of them, the most used first."""
    ranked = sorted(found.items(), key=lambda kv: -len(kv[1]))
    return ", ".join(f"{value or 'unknown'} ({len(recs)}: {recs[0]['_path']}"
                     f"{', ...' if len(recs) > 1 else ''})" for value, recs in ranked)


def table_findings(model, case, table):
    """Devices, suite versions and precision classes mixed in one table's finished rows."""
    rows = [r for r in table if ok(r)]
    where = f"{model} {case}"
    out = []
    devices = _values(rows, lambda r: r["device"].get("name") or r["device"].get("label"))
    if len(devices) > 1:
        out.append(Finding(ERROR, where, f"{len(devices)} devices in one table: "
                           f"{_listed(devices)}; check one machine's records at a time"))
    versions = _values(rows, lambda r: r.get("suite_version"))
    if len(versions) > 1:
        out.append(Finding(ERROR, where, f"{len(versions)} suite versions in one table: "
                           f"{_listed(versions)}; run every configuration with one "
                           f"checkout of the suite"))
    precisions = _values(rows, lambda r: r.get("precision"))
    mixed = list(precisions) if case == "train" else [p for p in precisions if p in FP32_CLASS]
    if len(mixed) > 1:
        out.append(Finding(ERROR, where, f"{len(mixed)} precision classes in one table: "
                           f"{_listed({p: precisions[p] for p in mixed})}; rows of "
                           f"another class are not comparable: run every row at one "
                           f"--precision"))
    return out


# one record

def why_empty(rec, header):
    """What the record says of an empty cell of column `header`, or None: a
    <figure>_why_empty field, the run's status, the clocks' why_empty (rates), what the
    row is (no accuracy on synthetic data, random weights or a short run), or a device
    that reports no memory peak."""
    field = "acc" if header.startswith("acc") else header
    figures = rec["figures"]
    said = figures.get(f"{field}_why_empty") or rec.get(f"{field}_why_empty")
    if said:
        return said
    if not ok(rec):
        return f"the run is {rec['status']}" + (f": {rec['error']}" if rec.get("error") else "")
    if figures.get("why_empty") and field.startswith(("p_", "latency")):
        return figures["why_empty"]
    kinds = columns.row_kinds(rec)
    if field == "acc":
        for kind, why in NO_ACC.items():
            if kind in kinds:
                return why
    if field == "mem" and figures.get("mem_total_gib") is not None:
        return "the device reports no allocator peak (mem_peak_gib is null)"
    return None


def empty_cell_findings(rec):
    """One line per record with empty cells: a warning where the record says why of
    each, else an error naming the columns it leaves unexplained."""
    empty = [h for h, _, cell in SEED_COLUMNS[rec["case"]] if cell(rec, "en") in (None, "")]
    if not empty:
        return []
    reasons = {h: why_empty(rec, h) for h in empty}
    unexplained = [h for h in empty if reasons[h] is None]
    if unexplained:
        return [Finding(ERROR, rec["_path"], f"{', '.join(unexplained)} empty, and the record "
                        f"does not say why: run it again with this suite, whose records "
                        f"say why a figure is empty, or leave the record out")]
    grouped = {}
    for h in empty:
        grouped.setdefault(reasons[h], []).append(h)
    return [Finding(WARNING, rec["_path"], "; ".join(
        f"{', '.join(hs)} empty: {why}" for why, hs in grouped.items()))]


def memory_findings(rec):
    """mem divides by the device's own total memory, as the record's device block has it."""
    total = rec["figures"].get("mem_total_gib")
    device = rec["device"].get("total_memory_gib")
    if total is None:
        return []
    if device is None:
        return [Finding(WARNING, rec["_path"], f"mem's denominator {total:.1f} GiB cannot be "
                        f"checked: the record has no device.total_memory_gib")]
    if abs(total - device) > 0.05:  # the seeds write GiB to one decimal
        return [Finding(ERROR, rec["_path"], f"mem's denominator {total:.1f} GiB is not the "
                        f"device's total memory {device:.1f} GiB (device.total_memory_gib): "
                        f"mem is peak over one device's memory; write the record again "
                        f"from a run on that device")]
    return []


def accuracy_findings(rec):
    """A training row shows acc only from a run that finished its recipe."""
    acc = rec["figures"].get("acc")
    if rec["case"] != "train" or acc is None or not columns.shows_acc(rec) \
            or rec.get("recipe_complete") is True:
        return []
    mark = "missing" if "recipe_complete" not in rec else repr(rec["recipe_complete"])
    return [Finding(ERROR, rec["_path"], f"acc {acc} is shown, but the record does not mark "
                    f"its recipe complete (recipe_complete {mark}): only a run that "
                    f"finished its recipe has the recipe's accuracy; run the whole recipe "
                    f"with this suite")]


def _warmup_and_timed(rec):
    """(warm-up, timed, unit, how to time more) of a record: optimizer steps, or batches
    of the shorter inference pass; None where the record has no such field."""
    f = rec["figures"]
    if rec["case"] == "train":
        return rec.get("warmup_steps"), f.get("timed_steps"), "steps", "a larger --max-steps"
    passes = [(f.get(p) or {}).get("timed_batches") for p in ("val_pass", "infer_pass")]
    timed = None if None in passes else min(passes)
    return rec.get("warmup_batches"), timed, "batches", "more validation images"


def warmup_findings(rec):
    """The warm-up is shorter than the timed part it prepares. A seed's row publishes
    neither; a run that did not finish is named by its cells."""
    if "reference" in rec or not ok(rec):
        return []
    warm, timed, unit, more = _warmup_and_timed(rec)
    if warm is None or timed is None:
        return [Finding(WARNING, rec["_path"], f"warm-up and timed {unit} cannot be compared: "
                        f"the record has no count of them (an older record)")]
    if warm < timed:
        return []
    flag = "--warmup-steps" if unit == "steps" else "--warmup-batches"
    return [Finding(ERROR, rec["_path"], f"warm-up of {warm} {unit} is not shorter than the "
                    f"{timed} timed: the rates rest on too little; run it again with "
                    f"{more} or a smaller {flag}")]


def record_findings(rec):
    return (empty_cell_findings(rec) + memory_findings(rec) + accuracy_findings(rec)
            + warmup_findings(rec))


def repeat_findings(model, case, table):
    """Rows of fewer than MIN_RUNS runs (common/repeats.py's groups of finished runs)."""
    few = [g for g in repeats.groups([r for r in table if ok(r)]) if len(g) < MIN_RUNS]
    few.sort(key=lambda g: tables.seed_order(g[0]))
    if not few:
        return []
    rows = ", ".join(f"{row_label(g[0])} (n={len(g)})" for g in few)
    if all("reference" in g[0] for g in few):
        todo = "a seed publishes one run per row"
    else:
        todo = (f"run each {MIN_RUNS} times or more for its spread, with the settings "
                f"that made it: REPEAT={MIN_RUNS} {DATA} CASES={case_name(model, case)} "
                f"... bash run_all.sh")
    return [Finding(WARNING, f"{model} {case}", f"fewer than {MIN_RUNS} runs of {rows}; {todo}")]


def findings(records, seeds, skipped=()):
    """Every finding of a folder: `records` as common.report loaded them, `seeds` the
    reference records (None where none could be read), `skipped` (path, why) of the
    files the report leaves out. A folder of published seed rows is checked as the
    seeds' tables; seed rows among runs of ours are named once and left out."""
    out = [Finding(ERROR, path, f"{why}: the report leaves it out; mend it or move it "
                   f"out of the folder") for path, why in skipped]
    ours = [r for r in records if "reference" not in r]
    if ours and len(ours) < len(records):
        seeded = [r["_path"] for r in records if "reference" in r]
        rows = f"{len(seeded)} published seed row{'s' * (len(seeded) != 1)}"
        out.append(Finding(ERROR, seeded[0], f"{rows} among the runs: the tables would show them as rows of this folder; "
                           f"keep results/reference apart and set the runs beside it "
                           f"with --compare results/reference"))
    if seeds is None:
        out.append(Finding(WARNING, SEEDS_DIR, "no reference records: every seed "
                           "configuration is counted as needed"))
    for (model, case), table in by_table(ours or records).items():
        out += configuration_findings(model, case, table, seeds)
        out += table_findings(model, case, table)
        for rec in table:
            out += record_findings(rec)
        out += repeat_findings(model, case, table)
    return out


def lines(found, paths, records):
    """The lines to print, the ready line (or the count of errors) last, and the exit
    code: 1 where any finding is an error."""
    said = [f"{f.level}: {f.where}: {f.what}" for f in found]
    errors = sum(f.level == ERROR for f in found)
    warnings = len(found) - errors
    tables_found = len(by_table([r for r in records if "reference" not in r] or records))
    if errors:
        return said + [f"not ready: {errors} error{'s' * (errors != 1)}, {warnings} "
                       f"warning{'s' * (warnings != 1)}"], 1
    return said + [f"ready: {' '.join(paths)}: {len(records)} records in {tables_found} "
                   f"table{'s' * (tables_found != 1)}, no errors ({warnings} "
                   f"warning{'s' * (warnings != 1)} above)"], 0
