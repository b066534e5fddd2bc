"""The tables rendered from records: the seeds' training and inference tables and the
extras (batch-1 latency, efficiency, scaling, hardware monitor), each declared as its
columns (common/columns.py), and the spread of repeated runs (common/spread.py), each
group of them one row (common/repeats.py). No torch here: records render where only
Python and tabulate are installed.
"""
from __future__ import annotations

from common import repeats, scaling, spread
from common.columns import (batch, column, config_label, figure, fmt_fix_hp, fmt_latency,
                          fmt_mem, fmt_rate, gflops, infer_acc, infer_config_cell, infer_core,
                          infer_mem, latency_b1, mfu, monitor_cell, one_decimal, precision,
                          render, row, runs_note, train_acc, train_config, two_decimals, whole)


CONFIG = column("config", train_config, zh="配置")
PRECISION = column("precision", precision)
MODEL = column("model", lambda rec, lang: rec["model"], zh="模型")

# seed 000's training table
TRAIN = (
    CONFIG, PRECISION,
    column("fix_hp", lambda rec, lang: fmt_fix_hp(rec.get("fix_hp"))),
    column("e2e_time", figure("e2e_time", whole)),
    column("p_whole", figure("p_whole", fmt_rate)),
    column("p_train", figure("p_train", fmt_rate)),
    column("p_core", figure("p_core", fmt_rate)),
    column("acc", train_acc),
    column("mem", lambda rec, lang: fmt_mem(rec["figures"])),
)

INFER_CONFIG = column("config", infer_config_cell, zh="配置")
# seed 001's inference table; its glossary calls acc "推理/验证": the header says ours
INFER = (
    INFER_CONFIG, PRECISION, column("bs", batch),
    column("e2e_time", figure("e2e_time", one_decimal)),
    column("p_val_whole", figure("p_val_whole", one_decimal)),
    column("p_val_core", figure("p_val_core", one_decimal)),
    column("p_infer_whole", figure("p_infer_whole", one_decimal)),
    column("p_infer_core", infer_core),
    column("latency", figure("latency_s", fmt_latency)),
    column("acc (val/infer)", infer_acc, zh="acc(验证/推理)"),
    column("mem", infer_mem),
)

# extras: figures the seeds do not have, in tables of their own
LATENCY = (
    MODEL, INFER_CONFIG, PRECISION, column("bs", batch),
    column("engine", lambda rec, lang: rec.get("engine"), zh="引擎"),
    column("build_s", figure("build_s", one_decimal)),
    column("b1 p50 ms", latency_b1("p50")),
    column("b1 p90 ms", latency_b1("p90")),
    column("b1 p99 ms", latency_b1("p99")),
)
EFFICIENCY = (
    MODEL,
    column("case", lambda rec, lang: rec["case"], zh="任务"),
    CONFIG, PRECISION,
    column("GFLOPs/img", figure("flops_per_image", gflops)),
    column("TFLOP/s", figure("tflops", two_decimals)),
    column("MFU", figure("mfu", mfu)),
)

# one row per monitored window: a record with "pass" and "monitor" added
MONITOR = (
    MODEL,
    column("config", lambda rec, lang: config_label(rec["device"]["label"], rec["nodes"],
                                                    rec["procs_per_node"], lang)
           + runs_note(rec, lang), zh="配置"),
    PRECISION,
    column("pass", lambda rec, lang: rec["pass"], zh="阶段"),
    column("source", lambda rec, lang: rec["monitor"].get("source"), zh="来源"),
    column("power max W", monitor_cell("power_max_w"), zh="最大功耗 W"),
    column("power mean W", monitor_cell("power_mean_w"), zh="平均功耗 W"),
    column("J/img", monitor_cell("energy_per_image_j", lambda v: f"{v:.3g}"), zh="每图能耗 J"),
    column("device mem GiB", monitor_cell("device_mem_peak_gib"), zh="设备内存 GiB"),
    column("util %", monitor_cell("device_util_mean_pct"), zh="利用率 %"),
    column("host cpu %", monitor_cell("host_cpu_mean_pct"), zh="主机 CPU %"),
    column("host mem GiB", monitor_cell("host_mem_peak_gib"), zh="主机内存 GiB"),
)



# the seed tables' header names, config left out (the comparison builds on them)
TRAIN_COLUMNS = tuple(c[0] for c in TRAIN[1:])
INFER_COLUMNS = tuple(c[0] for c in INFER[1:])


def train_row(rec, lang="en"):
    return row(rec, TRAIN, lang)


def infer_row(rec, lang="en"):
    return row(rec, INFER, lang)


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


def seed_table(case):
    """The seed's table of a case: train_table or infer_table."""
    return train_table if case == "train" else infer_table


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
    "spread": ("Repeated runs: the spread of each figure (central: the median; from 5 runs "
               "the mean without the fastest and the slowest; spread = (max - min) / central; "
               "accuracy: mean ± std)",
               "重复运行：各指标的离散度（中心值：中位数；5 次及以上去掉最快与最慢后取平均；"
               "离散度 = (最大 - 最小) / 中心值；精度：均值 ± 标准差）"),
    "scaling": ("Scaling (p_core per device; efficiency = p_core / (devices x p_core at 1x1))",
                "扩展性（每卡 p_core；效率 = p_core / (卡数 x 1x1 的 p_core)）"),
    "monitor": ("Hardware monitor (device cells '/' where no source answered)",
                "硬件监控（无数据源处为 /）"),
}


def title(key, lang, model=None):
    text = TITLES[key][lang == "zh"]
    return text if model is None else f"{text}{'：' if lang == 'zh' else ': '}{model}"


def tables(records, lang="en"):
    """Every table the records give: one per model and case as the seeds have them, each
    group of repeated runs one row (common/repeats.py), the spread of those groups, then
    the extras (batch-1 latency, efficiency, scaling, hardware monitor)."""
    records = repeats.summaries(records)
    parts = []
    for case, table in (("train", train_table), ("infer", infer_table)):
        of_case = [r for r in records if r["case"] == case]
        for model in dict.fromkeys(r["model"] for r in of_case):
            parts.append((title(case, lang, model),
                          table([r for r in of_case if r["model"] == model], lang)))
    spread_rows = spread.rows(records)
    if spread_rows:
        parts.append((title("spread", lang), render(spread_rows, spread.COLUMNS, lang)))
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
