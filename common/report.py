"""`python -m common.report DIR`: the tables of a folder of records, beside the seeds'
rows (--compare) and as pictures (--plots). Reading and rendering import no torch, so
records render where only Python and tabulate are installed, in well under a second:

    python -m common.report runs/ [--lang zh] [--compare results/reference] [--plots OUT]
    python -m common.report runs/ --check    # read as a reviewer would (common/check.py)
    python -m common.report runs/ --failed-case vit_train --reason "..."   # run_all.sh's
    python -m common.report runs/ --bundle runs.tar.gz [--redact]; --verify runs.tar.gz

A record is read here and checked against the tables (common/tables.py) before any is
rendered; --failed-case writes a record for a case that ended before writing its own
(common/record.py, which asks the device).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys

from tabulate import tabulate

from common import bundle, cases, check, compare, files, plots, repeats, scaling
from common.errors import UserError
from common.flags import Parser
from common.columns import render
from common.tables import (INFER_COLUMNS, MONITOR, TRAIN_COLUMNS, infer_row, monitor_rows,
                           seed_table, tables, train_row)


def config_arg(text):
    """--config: nodes x devices per node, as a record's config is written (1x8)."""
    nodes, _, per_node = text.partition("x")
    if not (nodes.isdigit() and per_node.isdigit() and int(nodes) > 0 and int(per_node) > 0):
        raise argparse.ArgumentTypeError(f"{text!r}: give nodes x devices per node, e.g. 1x8")
    return text


config_arg.refuses = "8"


def case_arg(text):
    """A run_all.sh case of the registry, <folder>_<train|infer>."""
    try:
        cases.case_model(text)
    except KeyError as e:
        raise argparse.ArgumentTypeError(e.args[0]) from None
    return text


case_arg.refuses = "vit"


def get_args_parser():
    p = Parser(description="Render result tables from JSON records.")
    p.add_argument("paths", nargs="*", help="record files or directories of them")
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
    p.add_argument("--check", action="store_true",
                   help="instead of the tables, read the records as a reviewer would before "
                        "they are published: one line per finding, exit 1 on an error")
    p.add_argument("--plots", metavar="OUTDIR",
                   help="also write PNGs (convergence, training loss and rate, scaling, "
                        "hardware monitor) to OUTDIR; needs matplotlib")
    p.add_argument("--bundle", metavar="OUT.tar.gz",
                   help="also pack the records, the logs they name, the tables and plots, "
                        "with every file's sha256, into one file (docs/reliability.md)")
    p.add_argument("--redact", action="store_true",
                   help="with --bundle: drop host names, addresses, user names and data "
                        "paths from the bundle's copies")
    p.add_argument("--verify", metavar="BUNDLE",
                   help="check a bundle: its hashes, every figure from its counts and "
                        "clocks, its tables; exit 1 naming what differs")
    return p


def load_records(paths, skipped=None):
    """Records from files and directories (searched recursively), oldest first. A file
    that is not a record (malformed JSON, another tool's file, a record these tables
    cannot show) is left out with a one-line warning naming it, or added to `skipped`
    as (path, why) where that list is given; an older record's missing keys become
    empty cells."""
    files_found = []
    for p in paths:
        # the folder as it is spelt: 'runs[1]' is a name, not a pattern
        files_found += sorted(glob.glob(os.path.join(glob.escape(p), "**", "*.json"),
                                        recursive=True)) if os.path.isdir(p) else [p]
    records = []
    for f in files_found:
        rec, why = _read_record(f)
        if why:
            if skipped is None:
                print(f"warning: {f}: {why}; left out", file=sys.stderr, flush=True)
            else:
                skipped.append((f, why))
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
    try:  # a record these tables cannot show is named here, not a traceback later
        _fill_missing(rec)
        seed_table(rec["case"])([rec])
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


def check_folder(paths, records, skipped):
    """--check: common/check.py's lines, the seeds' configurations read from their
    reference records; returns the exit code."""
    seeds = load_records([check.SEEDS_DIR]) if os.path.isdir(check.SEEDS_DIR) else None
    said, code = check.lines(check.findings(records, seeds or None, skipped), paths, records)
    print("\n".join(said))
    return code


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
    """One table per case: each of our records (a group of repeats as one) beside the
    reference rows it matches."""
    ours = repeats.summaries([r for r in records if "reference" not in r])
    parts = []
    for case, title in (("train", "Training"), ("infer", "Inference")):
        mine = [r for r in ours if r["case"] == case]
        if mine:
            parts.append(f"{title} beside the seeds' rows (ratios: ours / seed; latency: "
                         f"seed / ours; above 1 is faster)\n\n"
                         + comparison_table(mine, references, case, lang))
    return "\n\n".join(parts)


def _verify(path):
    """--verify: 0 and one line when the bundle agrees, 1 naming what differs, 2 for a
    file that is no bundle."""
    try:
        code, said = bundle.verify(path, load_records)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(said)
    return code


def main(argv=None):
    p = get_args_parser()
    a = p.parse_args(argv)
    if a.verify:
        return _verify(a.verify)
    if not a.paths:
        p.error("give record files or the --out directories of runs (or --verify BUNDLE)")
    if a.redact and not a.bundle:
        p.error("--redact: only with --bundle OUT.tar.gz")
    if a.failed_case:
        from common import record  # torch: the record names the device
        print(record.write_record(record.failed_case_record(a.failed_case, a.reason,
                                                            a.config), a.paths[0]))
        return 0
    if a.check and (a.compare or a.plots):
        p.error("--check reads the folders alone: leave out --compare and --plots")
    missing = [path for path in a.paths if not os.path.exists(path)]
    if missing:
        p.error(f"{missing[0]}: no such file or directory; give record files or the "
                f"--out directories of runs")
    skipped = [] if a.check else None
    records = load_records(a.paths, skipped)
    if a.check and (records or skipped):
        return check_folder(a.paths, records, skipped)
    if not records:
        print(f"no result records under {' '.join(a.paths)}", file=sys.stderr)
        return 1
    try:  # before the tables: a missing package or reference is said at once
        if a.plots:
            plots.pyplot()
            files.check_writable(a.plots, "--plots")
        if a.bundle:
            if os.path.isdir(a.bundle):
                raise UserError(f"--bundle {a.bundle}: is a directory; give the bundle's "
                                f"file name, e.g. {os.path.join(a.bundle, 'runs.tar.gz')}")
            files.check_writable(os.path.dirname(os.path.abspath(a.bundle)),
                                 "--bundle's folder")
        references = load_references(a.compare) if a.compare else None
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(tables(records, a.lang))
    if a.compare:
        print("\n" + comparison(records, references, a.lang))
    if a.plots:
        print("\nPlots\n\n" + "\n".join(plots.write_all(records, a.plots)))
    if a.bundle:
        try:
            print("\n" + bundle.make(records, a.bundle, load_records, a.redact))
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
