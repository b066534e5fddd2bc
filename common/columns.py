"""Columns and their cells: a column is a header (en, zh) and the function that gives its
text for one record; the formats of the seeds' cells, the notes a row's configuration
carries (what kind of row it is, how many runs, how it ended), and a markdown table of
rows under columns. No torch here: records render where only Python and tabulate are
installed.
"""
from __future__ import annotations

from tabulate import tabulate

from common import scaling


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


def one_decimal(v):
    return f"{v:.1f}"


def whole(v):
    return f"{v:.0f}"


def two_decimals(v):
    return f"{v:.2f}"


def precision(rec, lang):
    return rec.get("precision")


def train_config(rec, lang):
    return (config_label(rec["device"]["label"], rec["nodes"], rec["procs_per_node"], lang)
            + runs_note(rec, lang) + status_note(rec) + kind_note(rec, lang))


def infer_config_cell(rec, lang):
    return (infer_config(rec, lang) + runs_note(rec, lang) + status_note(rec)
            + kind_note(rec, lang))


def train_acc(rec, lang):
    acc = rec["figures"].get("acc") if shows_acc(rec) else None
    return None if acc is None else f"{acc:.1f}%"


def infer_acc(rec, lang):
    """'validation/inference' top-1; an empty side as '/' too."""
    f = rec["figures"]
    if f.get("acc_val") is None and f.get("acc_infer") is None:
        return None
    return "/".join(EMPTY if v is None else f"{v:.2f}" for v in (f.get("acc_val"),
                                                                    f.get("acc_infer")))


def infer_core(rec, lang):
    """p_infer_core; an engine slower than eager says so, with eager's figure beside it."""
    f = rec["figures"]
    if f.get("p_infer_core") is None:
        return None
    core = one_decimal(f["p_infer_core"])
    if f.get("engine_slower"):  # never silently slower than eager
        core += f" (slower than eager {one_decimal(f['p_val_core'])})"
    return core


def infer_mem(rec, lang):
    f = rec["figures"]
    if f.get("mem_peak_gib") is None or f.get("mem_total_gib") is None:
        return None
    return f"{f['mem_peak_gib']:.2f}/{f['mem_total_gib']:.1f}"


def batch(rec, lang):
    return None if rec.get("batch_size") in (None, "") else str(rec["batch_size"])


def latency_b1(percentile):
    def cell(rec, lang):
        b1 = rec["figures"].get("latency_b1_ms") or {}
        return None if b1.get(percentile) is None else f"{b1[percentile]:.2f}"
    return cell


def gflops(v):
    return f"{v / 1e9:.2f}"


def mfu(v):
    return f"{100 * v:.1f}%"


def monitor_cell(name, fmt=one_decimal):
    def cell(row, lang):
        value = row["monitor"].get(name)
        return None if value is None else fmt(value)
    return cell



def row(rec, columns, lang="en"):
    """A row's cells; '/' wherever the row has no such figure."""
    return [text if text not in (None, "") else EMPTY
            for text in (cell(rec, lang) for _, _, cell in columns)]


def render(rows, columns, lang="en"):
    """A GitHub-markdown table of rows under the columns' headers in `lang`. With
    wcwidth installed, tabulate counts a Chinese character as two columns, so the
    table lines up in a terminal."""
    headers = [zh if lang == "zh" else en for en, zh, _ in columns]
    return tabulate([row(r, columns, lang) for r in rows], headers=headers,
                    tablefmt="github", disable_numparse=True)
