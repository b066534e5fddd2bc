"""Which of the seeds' published rows a record of ours sits beside, and the ratio of
every throughput; common/report.py renders the table:

    python -m common.report runs/ --compare results/reference

results/reference/ holds one record per row of the seed case reports, in the format our
scripts write, with the precision class the row really ran in (the seeds' "fp32" rows
ran as tf32, ViT's as amp) and a note on how it was run. A record of ours is set beside
a reference row only when both ran the same thing: model, case, nodes x devices,
precision class and per-device batch, and image size, data source, engine and where
the images were decoded (the seeds: on the host) where both records name them.
Anything else says "no reference"; where a reference row differs in exactly one of
those, the note says what to run to match it.
"""
from __future__ import annotations

from common import scaling

# keys every comparison matches on, and keys it matches on where both records name them
MATCH = ("model", "case", "config", "precision", "batch_size")
MATCH_IF_BOTH = ("image_size", "data_source", "engine", "decode")

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
            "data_source": data, "engine": rec.get("engine"),
            "decode": scaling.decode_mode(rec)}


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
    "decode": lambda ref: f"the seed's row decoded its images on the {facts(ref)['decode']}: "
                          f"run with --decode {facts(ref)['decode']}",
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


def ratio(ours, ref, figure, inverse):
    a, b = ours["figures"].get(figure), ref["figures"].get(figure)
    if not a or not b:  # a figure one side did not measure gives no ratio
        return ""
    return f"{(b / a if inverse else a / b):.2f}x"
