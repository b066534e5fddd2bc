"""The tables rendered from records: each column declared once, its header (en, zh) and
its cell together; the seeds' training and inference tables and the extras (batch-1
latency, efficiency, scaling, hardware monitor), and the spread of repeated runs, each
group of them one row (common/repeats.py). No torch here: records render where only
Python and tabulate are installed.
"""
from __future__ import annotations

from tabulate import tabulate

from common import repeats, scaling


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


def runs_note(rec, lang="en"):
    """' (3 runs)' after the configuration of a row that stands for repeated runs."""
    n = (rec.get("repeats") or {}).get("n")
    if not n:
        return ""
    return f"（{n}次运行）" if lang == "zh" else f" ({n} runs)"


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


# columns: header and cell together

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
            + runs_note(rec, lang) + status_note(rec) + kind_note(rec, lang))


def _infer_config_cell(rec, lang):
    return (infer_config(rec, lang) + runs_note(rec, lang) + status_note(rec)
            + kind_note(rec, lang))


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
                                                    row["procs_per_node"], lang)
           + runs_note(row, lang), zh="配置"),
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


# the spread of repeated runs: a row per group and figure, (figure, its name, its format
# as the seeds' tables show it); accuracy as mean ± std
SPREAD_FIGURES = {
    "train": (("e2e_time", "e2e_time", _whole), ("p_whole", "p_whole", fmt_rate),
              ("p_train", "p_train", fmt_rate), ("p_core", "p_core", fmt_rate)),
    "infer": (("e2e_time", "e2e_time", _one_decimal),
              *((name, name, _one_decimal) for name in ("p_val_whole", "p_val_core",
                                                        "p_infer_whole", "p_infer_core")),
              ("latency_s", "latency", fmt_latency)),
}
SPREAD_ACCURACY = {"train": (("acc", "acc", _one_decimal),),
                   "infer": (("acc_val", "acc_val", _two_decimals),
                             ("acc_infer", "acc_infer", _two_decimals))}


def _spread_central(row, lang):
    fmt = row["fmt"]
    if "mean_std" in row:
        mean, std = row["mean_std"]
        return f"{fmt(mean)} ± {fmt(std)}"
    return fmt(row["stats"]["central"])


def _spread_pct(row, lang):
    """(max - min) / central in %; none for accuracy, whose spread is its std."""
    spread = row["stats"]["spread"]
    return None if "mean_std" in row or spread is None else f"{100 * spread:.1f}%"


def _spread_config(row, lang):
    rec = row["rec"]
    return (_train_config if rec["case"] == "train" else _infer_config_cell)(rec, lang)


SPREAD = (
    column("model", lambda row, lang: row["rec"]["model"], zh="模型"),
    column("case", lambda row, lang: row["rec"]["case"], zh="任务"),
    column("config", _spread_config, zh="配置"),
    column("precision", lambda row, lang: row["rec"].get("precision")),
    column("figure", lambda row, lang: row["figure"], zh="指标"),
    column("n", lambda row, lang: str(row["stats"]["n"])),
    column("central", _spread_central, zh="中心值"),
    column("min", lambda row, lang: row["fmt"](row["stats"]["min"]), zh="最小"),
    column("max", lambda row, lang: row["fmt"](row["stats"]["max"]), zh="最大"),
    column("spread", _spread_pct, zh="离散度"),
    column("--seed", lambda row, lang: ",".join(str(s) for s in row["rec"]["repeats"]["seeds"]),
           zh="随机种子"),
)


def _spread_figures(rec, runs):
    """(name, format, the runs' values, whether it is an accuracy) of each figure of the
    spread table that every run of the group has."""
    found = [(*figure, False) for figure in SPREAD_FIGURES[rec["case"]]]
    if rec["case"] == "infer" or shows_acc(rec):  # a training row's acc: its recipe's end
        found += [(*figure, True) for figure in SPREAD_ACCURACY[rec["case"]]]
    for key, name, fmt, accuracy in found:
        values = [r["figures"].get(key) for r in runs]
        if all(v is not None for v in values):
            yield name, fmt, values, accuracy


def spread_rows(records):
    """The spread table's rows of these records (a record per group, repeats.summary),
    training first: each figure of a group of two runs or more."""
    rows = []
    for rec in sorted(records, key=lambda r: r["case"] != "train"):
        runs = (rec.get("repeats") or {}).get("runs")
        for name, fmt, values, accuracy in (_spread_figures(rec, runs) if runs else ()):
            row = {"rec": rec, "figure": name, "fmt": fmt, "stats": repeats.spread(values)}
            if accuracy:
                row["mean_std"] = repeats.mean_std(values)
            rows.append(row)
    return rows


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
    spread = spread_rows(records)
    if spread:
        parts.append((title("spread", lang), render(spread, SPREAD, lang)))
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
