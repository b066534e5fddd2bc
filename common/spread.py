"""The spread table of repeated runs: a row per group of runs (common/repeats.py) and
figure, with the group's n, central figure, min, max, spread and seeds; accuracy as
mean ± std. No torch here.
"""
from __future__ import annotations

from common import repeats
from common.columns import (column, fmt_latency, fmt_rate, infer_config_cell, one_decimal,
                          shows_acc, train_config, two_decimals, whole)


# the spread of repeated runs: a row per group and figure, (figure, its name, its format
# as the seeds' tables show it); accuracy as mean ± std
FIGURES = {
    "train": (("e2e_time", "e2e_time", whole), ("p_whole", "p_whole", fmt_rate),
              ("p_train", "p_train", fmt_rate), ("p_core", "p_core", fmt_rate)),
    "infer": (("e2e_time", "e2e_time", one_decimal),
              *((name, name, one_decimal) for name in ("p_val_whole", "p_val_core",
                                                        "p_infer_whole", "p_infer_core")),
              ("latency_s", "latency", fmt_latency)),
}
ACCURACY = {"train": (("acc", "acc", one_decimal),),
                   "infer": (("acc_val", "acc_val", two_decimals),
                             ("acc_infer", "acc_infer", two_decimals))}


def _central(row, lang):
    fmt = row["fmt"]
    if "mean_std" in row:
        mean, std = row["mean_std"]
        return f"{fmt(mean)} ± {fmt(std)}"
    return fmt(row["stats"]["central"])


def _pct(row, lang):
    """(max - min) / central in %; none for accuracy, whose spread is its std."""
    spread = row["stats"]["spread"]
    return None if "mean_std" in row or spread is None else f"{100 * spread:.1f}%"


def _config(row, lang):
    rec = row["rec"]
    return (train_config if rec["case"] == "train" else infer_config_cell)(rec, lang)


COLUMNS = (
    column("model", lambda row, lang: row["rec"]["model"], zh="模型"),
    column("case", lambda row, lang: row["rec"]["case"], zh="任务"),
    column("config", _config, zh="配置"),
    column("precision", lambda row, lang: row["rec"].get("precision")),
    column("figure", lambda row, lang: row["figure"], zh="指标"),
    column("n", lambda row, lang: str(row["stats"]["n"])),
    column("central", _central, zh="中心值"),
    column("min", lambda row, lang: row["fmt"](row["stats"]["min"]), zh="最小"),
    column("max", lambda row, lang: row["fmt"](row["stats"]["max"]), zh="最大"),
    column("spread", _pct, zh="离散度"),
    column("--seed", lambda row, lang: ",".join(str(s) for s in row["rec"]["repeats"]["seeds"]),
           zh="随机种子"),
)


def _figures(rec, runs):
    """(name, format, the runs' values, whether it is an accuracy) of each figure of the
    spread table that every run of the group has."""
    found = [(*figure, False) for figure in FIGURES[rec["case"]]]
    if rec["case"] == "infer" or shows_acc(rec):  # a training row's acc: its recipe's end
        found += [(*figure, True) for figure in ACCURACY[rec["case"]]]
    for key, name, fmt, accuracy in found:
        values = [r["figures"].get(key) for r in runs]
        if all(v is not None for v in values):
            yield name, fmt, values, accuracy


def rows(records):
    """The spread table's rows of these records (a record per group, repeats.summary),
    training first: each figure of a group of two runs or more."""
    rows = []
    for rec in sorted(records, key=lambda r: r["case"] != "train"):
        runs = (rec.get("repeats") or {}).get("runs")
        for name, fmt, values, accuracy in (_figures(rec, runs) if runs else ()):
            row = {"rec": rec, "figure": name, "fmt": fmt, "stats": repeats.spread(values)}
            if accuracy:
                row["mean_std"] = repeats.mean_std(values)
            rows.append(row)
    return rows

