"""Our records beside the seeds' published rows, with the ratio of every throughput.

    python -m common.report runs/ --compare results/reference

results/reference/ holds one record per row of the seed case reports, in the format our
scripts write, with the precision class the row really ran in (the seeds' "fp32" rows
ran as tf32, ViT's as amp) and a note on how it was run. A record of ours is set beside
a reference row only when both ran the same thing: model, case, nodes x devices,
precision class and per-device batch, and image size, data source and engine where both
records name them. Anything else says "no reference"; where a reference row differs in
exactly one of those, the note says what to run to match it.
"""
from __future__ import annotations

import os

from tabulate import tabulate

from common import report, scaling
from common.errors import UserError

# keys every comparison matches on, and keys it matches on where both records name them
MATCH = ("model", "case", "config", "precision", "batch_size")
MATCH_IF_BOTH = ("image_size", "data_source", "engine")

# table column -> (figure, True where smaller is faster); the ratio is ours / reference,
# inverted for latency so that above 1 always means ours is faster
RATIOS = {"p_whole": ("p_whole", False), "p_train": ("p_train", False),
          "p_core": ("p_core", False), "p_val_whole": ("p_val_whole", False),
          "p_val_core": ("p_val_core", False), "p_infer_whole": ("p_infer_whole", False),
          "p_infer_core": ("p_infer_core", False), "latency": ("latency_s", True)}


def facts(rec):
    """The values a comparison matches on; None where the record does not say."""
    args = rec.get("args") or {}
    data = scaling.data_source(rec)
    return {"model": rec.get("model"), "case": rec.get("case"), "config": rec.get("config"),
            "precision": rec.get("precision"), "batch_size": rec.get("batch_size"),
            "image_size": rec.get("image_size", args.get("image_size")),
            "data_source": data, "engine": rec.get("engine")}


def differences(ours, ref):
    """The match keys on which two records disagree."""
    a, b = facts(ours), facts(ref)
    return [k for k in MATCH + MATCH_IF_BOTH if a[k] != b[k]
            and (k in MATCH or (a[k] is not None and b[k] is not None))]


def _precision_hint(ref):
    cls, seed = ref["precision"], ref.get("reported_precision")
    said = f"the seed's {seed} row ran as {cls}" if seed and seed != cls else \
        f"the seed's row ran as {cls}"
    return f"{said}: run with --precision {cls}"


# what to run to match a reference row that differs in this one key
HINTS = {
    "precision": _precision_hint,
    "batch_size": lambda ref: f"the seed's row has {ref['batch_size']} per device: "
                              f"run with --batch-size {ref['batch_size']}",
    "config": lambda ref: f"the seed's row ran at {ref['config']} (nodes x devices)",
    "image_size": lambda ref: f"the seed's row ran at {ref['image_size']} px: "
                              f"run with --image-size {ref['image_size']}",
    "data_source": lambda ref: "the seed's row ran on real ImageNet: run with --data-dir",
    "engine": lambda ref: f"the seed's row ran the {ref['engine']} engine: "
                          f"run with --engine {ref['engine']}",
}


def hints(ours, references):
    """What to run to match the reference rows that differ from ours in one key only."""
    found = []
    for ref in references:
        diff = differences(ours, ref)
        if len(diff) == 1 and diff[0] in HINTS:
            hint = HINTS[diff[0]](ref)
            if hint not in found:
                found.append(hint)
    return found


def load_references(path):
    """The reference records under path; a path without any is the user's mistake."""
    if not os.path.exists(path):
        raise UserError(f"--compare {path}: no such file or directory; give the folder of "
                        f"reference records, e.g. results/reference")
    refs = [r for r in report.load_records([path]) if "reference" in r]
    if not refs:
        raise UserError(f"--compare {path}: holds no reference records; give the folder of "
                        f"reference records, e.g. results/reference")
    return refs


def ratio(ours, ref, figure, inverse):
    a, b = ours["figures"].get(figure), ref["figures"].get(figure)
    if not a or not b:  # a figure one side did not measure gives no ratio
        return ""
    return f"{(b / a if inverse else a / b):.2f}x"


def _columns(case):
    """Headers and row cells of a case, as the report's own tables render them."""
    if case == "train":
        return ["config", *report.TRAIN_COLUMNS], report.train_row
    return ["config", *report.INFER_COLUMNS], report.infer_row


def _seed_rows(ours, ref, headers, row, lang):
    """The reference row, its real precision class beside the seed's label, and the ratios."""
    cells = row(ref, lang)
    if ref.get("reported_precision") not in (None, ref["precision"]):
        cells[headers.index("precision")] = \
            f"{ref['precision']} (seed: {ref['reported_precision']})"
    ratios = [ratio(ours, ref, *RATIOS[h]) if h in RATIOS else "" for h in headers]
    return [["", f"seed {ref['reference']['seed'][:3]}", *cells, ref["reference"]["seed"]],
            ["", "ours / seed", *ratios, ""]]


def _group(ours, references, headers, row, lang):
    """Our row; then each reference row it matches with the ratios, or why there is none."""
    refs = [r for r in references if not differences(ours, r)]
    note = ""
    if not refs:
        found = hints(ours, references)
        note = "no reference" + (f": {'; '.join(found)}" if found else "")
    rows = [[ours["model"], "ours", *row(ours, lang), note]]
    for ref in refs:
        rows += _seed_rows(ours, ref, headers, row, lang)
    return rows


def comparison_table(records, references, case, lang="en"):
    headers, row = _columns(case)
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
