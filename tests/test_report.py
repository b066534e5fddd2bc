"""Records and tables: the seed's training table rebuilt from records, atomic writes."""
import json
import os
import subprocess
import sys
import time

import pytest
from conftest import ROOT

from common import columns, record, report, tables

# seed 000 (ResNet50 training, A100), as its table prints them, every empty cell as "/"
SEED_000_ROWS = """
| A100单机8卡（1x8） | fp32 | / | 28661 | 4475 | 4586    | 4659 | 75.0% | 5.8/40.0 |
| A100单机8卡（1x8） | fp32 | bs=256,lr=0.8 | 22653    | 5663    | 5866    | 6105   | 73.5% | 28.3/40.0 |
| A100单机单卡（1x1） | fp32 | bs=256,lr=0.8 | / | 782 | 795    | 799 | / | 27.6/40.0 |
| A100两机8卡（2x8） | fp32 | bs=256,lr=0.8 | / | 10576 | 11085    | 11874 | / | 27.9/40.0 |
"""


def cells(markdown_rows):
    return [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in markdown_rows.strip().splitlines()]


def seed_record(nodes, per_node, fix_hp, e2e, p_whole, p_train, p_core, acc, mem):
    return {"case": "train", "model": "resnet50", "status": "ok", "precision": "fp32",
            "device": {"label": "A100"}, "nodes": nodes, "procs_per_node": per_node,
            "fix_hp": fix_hp,
            "figures": {"e2e_time": e2e, "p_whole": p_whole, "p_train": p_train,
                        "p_core": p_core, "acc": acc, "mem_peak_gib": mem, "mem_total_gib": 40.0}}


SEED_000_RECORDS = [
    seed_record(1, 8, {}, 28661, 4475, 4586, 4659, 75.0, 5.8),
    seed_record(1, 8, {"bs": 256, "lr": 0.8}, 22653, 5663, 5866, 6105, 73.5, 28.3),
    seed_record(1, 1, {"bs": 256, "lr": 0.8}, None, 782, 795, 799, None, 27.6),
    seed_record(2, 8, {"bs": 256, "lr": 0.8}, None, 10576, 11085, 11874, None, 27.9),
]


def test_seed_000_table_from_records():
    table = tables.train_table(SEED_000_RECORDS, lang="zh")
    lines = table.splitlines()
    assert cells(lines[0])[0] == ["配置", "precision", "fix_hp", "e2e_time", "p_whole", "p_train",
                               "p_core", "acc", "mem"]
    assert cells("\n".join(lines[2:])) == cells(SEED_000_ROWS)


def test_config_labels():
    assert columns.config_label("A100", 1, 8, "zh") == "A100单机8卡（1x8）"
    assert columns.config_label("A100", 1, 1, "zh") == "A100单机单卡（1x1）"
    assert columns.config_label("A100", 2, 8, "zh") == "A100两机8卡（2x8）"
    assert columns.config_label("H100", 2, 8) == "H100 2 nodes x 8 (2x8)"


def test_small_rates_keep_a_decimal():
    assert columns.fmt_rate(23.14) == "23.1"
    assert columns.fmt_rate(782.4) == "782"
    assert columns.fmt_rate(None) == ""


def test_failed_run_is_marked_in_its_row():
    rec = dict(SEED_000_RECORDS[0], status="failed", error="loss is nan at step 7")
    assert tables.train_row(rec)[0].endswith("[failed: loss is nan at step 7]")


def test_write_record_is_atomic_and_never_overwrites(tmp_path):
    rec = {**SEED_000_RECORDS[0], "config": "1x8", "device": {"label": "A100"}}
    first = record.write_record(rec, str(tmp_path))
    second = record.write_record(rec, str(tmp_path))
    assert first != second  # same second, same process: still two files
    assert sorted(os.listdir(tmp_path)) == sorted([os.path.basename(first), os.path.basename(second)])
    assert json.load(open(first))["figures"]["p_core"] == 4659


def test_report_cli_renders_a_directory(tmp_path, capsys):
    for rec in SEED_000_RECORDS:
        record.write_record({**rec, "config": f"{rec['nodes']}x{rec['procs_per_node']}"},
                            str(tmp_path))
    (tmp_path / "notes.json").write_text('{"not": "a record"}')
    assert report.main([str(tmp_path), "--lang", "zh"]) == 0
    out = capsys.readouterr().out
    assert "A100两机8卡（2x8）" in out and "11874" in out


def test_report_skips_what_is_no_record_naming_it_and_renders_the_rest(tmp_path):
    """Through `python -m common.report`: a malformed file, another tool's JSON and a
    record the tables cannot show are each one warning; an older record (keys missing)
    still renders, its missing figures empty; the good records render."""
    for rec in SEED_000_RECORDS[:2]:
        record.write_record({**rec, "config": f"{rec['nodes']}x{rec['procs_per_node']}"},
                            str(tmp_path))
    (tmp_path / "broken.json").write_text("{")
    (tmp_path / "package.json").write_text('{"name": "left-pad", "version": "1.3.0"}')
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "wrong.json").write_text(json.dumps({**SEED_000_RECORDS[0], "figures": {
        **SEED_000_RECORDS[0]["figures"], "acc": "high"}}))
    (tmp_path / "old.json").write_text(json.dumps({  # an early record: no device, nodes
        "case": "infer", "model": "resnet50", "precision": "fp16", "batch_size": 256,
        "figures": {"p_val_core": 812.0}}))
    proc = subprocess.run([sys.executable, "-m", "common.report", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    warnings = sorted(proc.stderr.strip().splitlines())
    assert len(warnings) == 4 and all(w.endswith("; left out") for w in warnings), warnings
    assert warnings[0].startswith(f"warning: {tmp_path}/broken.json: not JSON (")
    assert warnings[1] == (f"warning: {tmp_path}/list.json: not a result record of this suite "
                           f"(no case and figures); left out")
    assert warnings[2].startswith(f"warning: {tmp_path}/package.json: not a result record")
    assert warnings[3].startswith(f"warning: {tmp_path}/wrong.json: a record these tables "
                                  f"cannot show (ValueError: ")
    assert "| A100单机8卡" not in proc.stdout and "| A100 1 node x 8 (1x8) | fp32" in proc.stdout
    assert "28661" in proc.stdout and "22653" in proc.stdout
    old = [line for line in proc.stdout.splitlines() if "812.0" in line]
    assert len(old) == 1 and "| fp16" in old[0] and "256" in old[0]


def test_report_of_a_missing_path_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "common.report", str(tmp_path / "nowhere")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"report.py: error: {tmp_path}/nowhere: no such file or directory; give record files "
        f"or the --out directories of runs; see --help"]


# `python -m common.report` where torch cannot be imported: an import of it raises
WITHOUT_TORCH = ("import runpy, sys; sys.modules['torch'] = sys.modules['torchvision'] = None; "
                 "runpy.run_module('common.report', run_name='__main__')")


@pytest.mark.parametrize("flags", [[], ["--lang", "zh", "--compare", "results/reference"]])
def test_records_render_without_torch_in_well_under_a_second(flags):
    argv = ["results/reference", *flags]
    with_torch = subprocess.run([sys.executable, "-m", "common.report", *argv], cwd=ROOT,
                                capture_output=True, text=True, timeout=60)
    start = time.perf_counter()
    without = subprocess.run([sys.executable, "-c", WITHOUT_TORCH, *argv], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
    took = time.perf_counter() - start
    assert without.returncode == 0 and without.stderr == "", without.stderr
    assert without.stdout == with_torch.stdout and "| A100" in without.stdout
    assert took < 1, f"python -m common.report {' '.join(argv)} took {took:.2f} s"


def test_report_command_adds_scaling_and_monitor_tables(tmp_path, capsys):
    """`python -m common.report DIR` on seed 000's 1x1, 1x8 and 2x8 rows (bs=256,lr=0.8),
    the 1x8 one carrying what the hardware monitor saw."""
    monitored = {"interval_s": 1.0, "source": "nvml", "power_max_w": 398.0,
                 "power_mean_w": 351.25, "energy_per_image_j": 0.4603,
                 "device_mem_peak_gib": 29.5, "device_util_mean_pct": 97.0,
                 "host_cpu_mean_pct": 41.0, "host_mem_peak_gib": 120.0}
    for i, rec in enumerate(SEED_000_RECORDS[1:]):
        rec = {**rec, "batch_size": 256, "world_size": rec["nodes"] * rec["procs_per_node"],
               "finished": f"2026-01-0{i + 1}",
               "figures": {**rec["figures"], "monitor": monitored if i == 0 else {}}}
        (tmp_path / f"{i}.json").write_text(json.dumps(rec))
    assert report.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out

    def body(section):  # the rows of the first table after `section`, headers left out
        return cells("\n".join(line for line in out.split(section)[1].split("\n\n")[1].splitlines()[2:]))
    scaling_rows = body("Scaling")
    assert [r[6:] for r in scaling_rows] == [["1x1", "1", "799", "799", "100.0%"],
                                            ["1x8", "8", "6105", "763", "95.5%"],
                                            ["2x8", "16", "11874", "742", "92.9%"]]
    monitor_rows = body("Hardware monitor")
    assert monitor_rows == [["resnet50", "A100 1 node x 8 (1x8)", "fp32", "train", "nvml",
                             "398.0", "351.2", "0.46", "29.5", "97.0", "41.0", "120.0"]]
    # in Chinese, every header is Chinese but the figures' own names, as in the seeds
    assert report.main([str(tmp_path), "--lang", "zh"]) == 0
    out = capsys.readouterr().out
    headers = [cells(part.split("\n\n")[1].splitlines()[0])[0]
               for part in (out.split("扩展性")[1], out.split("硬件监控")[1])]
    figure_names = {"precision", "bs", "p_core"}
    english = [h for row in headers for h in row if h.isascii() and h not in figure_names]
    assert english == [] and headers[0][0] == "模型" and headers[1][-1] == "主机内存 GiB"


def marked_rows(**fields):
    base = {"case": "train", "model": "resnet50", "status": "ok", "precision": "fp32",
            "device": {"label": "A100"}, "nodes": 1, "procs_per_node": 8, "fix_hp": {},
            "data_source": "real", "recipe_complete": True,
            "figures": {"p_core": 4659.0, "acc": 75.0}}
    return cells(tables.train_table([{**base, **fields}]).splitlines()[2])[0]


def test_rows_say_what_they_are():
    assert marked_rows()[0] == "A100 1 node x 8 (1x8)" and marked_rows()[-2] == "75.0%"
    # stopped by --max-steps: its last evaluation is not the recipe's result
    short = marked_rows(recipe_complete=False)
    assert short[0] == "A100 1 node x 8 (1x8) [short run, throughput only]"
    assert short[-2] == "/"
    synthetic = marked_rows(data_source="synthetic", recipe_complete=False)
    assert synthetic[0] == "A100 1 node x 8 (1x8) [synthetic data]"
    # BiT fine-tuning without its published weights
    random = marked_rows(model="BiT-M-R152x2", recipe_complete=False, weights_source="random",
                         args={"weights": "random"})
    assert "random weights" in random[0]
    infer = {"case": "infer", "model": "resnet50", "status": "ok", "precision": "fp16",
             "batch_size": 256, "device": {"label": "A100", "vendor": "NVIDIA"}, "nodes": 1,
             "procs_per_node": 1, "data_source": "real", "weights_source": "random",
             "figures": {"p_infer_core": 11710.0, "acc_val": None, "acc_infer": None}}
    row = cells(tables.infer_table([infer]).splitlines()[2])[0]
    assert row[0] == "NVIDIA A100 [random weights]" and row[-2] == "/"


# the seeds' headers, written out: seed 000 (training) and seed 001 (inference)
SEED_TRAIN_HEADER = {"en": ["config", "precision", "fix_hp", "e2e_time", "p_whole", "p_train",
                            "p_core", "acc", "mem"],
                     "zh": ["配置", "precision", "fix_hp", "e2e_time", "p_whole", "p_train",
                            "p_core", "acc", "mem"]}
SEED_INFER_HEADER = {"en": ["config", "precision", "bs", "e2e_time", "p_val_whole", "p_val_core",
                            "p_infer_whole", "p_infer_core", "latency", "acc (val/infer)", "mem"],
                     "zh": ["配置", "precision", "bs", "e2e_time", "p_val_whole", "p_val_core",
                            "p_infer_whole", "p_infer_core", "latency", "acc(验证/推理)", "mem"]}


def infer_record(precision, b1=None, acc_infer=76.2):
    return {"case": "infer", "model": "resnet50", "status": "ok", "precision": precision,
            "batch_size": 256, "engine": "compile", "nodes": 1, "procs_per_node": 1,
            "world_size": 1, "device": {"label": "A100", "vendor": "NVIDIA"},
            "figures": {"e2e_time": 585.8, "p_val_whole": 1353.3, "p_val_core": 4390.9,
                        "p_infer_whole": 1384.5, "p_infer_core": 11710.0,
                        "latency_s": 1 / 11710.0, "acc_val": 76.17, "acc_infer": acc_infer,
                        "mem_peak_gib": None, "mem_total_gib": 40.0, "build_s": 61.0,
                        "latency_b1_ms": b1}}


def sections(text):
    """{title: (header cells, row cells)} of tables.tables' output."""
    parts = text.split("\n\n")
    return {title: (cells(table.splitlines()[0])[0], cells("\n".join(table.splitlines()[2:])))
            for title, table in zip(parts[::2], parts[1::2])}


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_tables_follow_the_seeds_layout(lang):
    """One table per model and case with the seed's columns, rows in the seeds' order
    (1x8 default, 1x8 fix_hp, 1x1, 2x8, then others), '/' in every empty cell, titles in
    the language asked; extras in tables of their own."""
    resnet = SEED_000_RECORDS[::-1]  # finished in the opposite order
    other = dict(seed_record(1, 4, {}, None, 100.0, 110.0, 120.0, None, None), model="mobilenetv2")
    fp32 = infer_record("fp32", acc_infer=None)
    fp16 = infer_record("fp16", b1={"p50": 1.25, "p90": 1.5, "p99": 2.0})
    found = sections(tables.tables([*resnet, other, fp32, fp16], lang))
    train, infer = ("训练：", "推理：") if lang == "zh" else ("Training: ", "Inference: ")
    latency = "推理：引擎单样本延迟与构建时间" if lang == "zh" else \
        "Inference: batch-1 latency of the engine and its build"
    scaling = tables.title("scaling", lang)
    assert list(found) == [train + "resnet50", train + "mobilenetv2", infer + "resnet50",
                           latency, scaling]
    header, rows = found[train + "resnet50"]
    assert header == SEED_TRAIN_HEADER[lang]
    expected = cells(SEED_000_ROWS)
    if lang == "en":
        for row, config in zip(expected, ["A100 1 node x 8 (1x8)", "A100 1 node x 8 (1x8)",
                                          "A100 1 node x 1 (1x1)", "A100 2 nodes x 8 (2x8)"]):
            row[0] = config
    assert rows == expected
    header, rows = found[train + "mobilenetv2"]
    assert header == SEED_TRAIN_HEADER[lang]
    assert rows[0][1:] == ["fp32", "/", "/", "100", "110", "120", "/", "/"]
    header, rows = found[infer + "resnet50"]
    assert header == SEED_INFER_HEADER[lang]  # no column beyond the seed's
    vendor = "nvidia" if lang == "zh" else "NVIDIA"
    assert rows == [[f"{vendor} A100", "fp32", "256", "585.8", "1353.3", "4390.9", "1384.5",
                     "11710.0", "85μs", "76.17//", "/"],
                    [f"{vendor} A100", "fp16", "256", "585.8", "1353.3", "4390.9", "1384.5",
                     "11710.0", "85μs", "76.17/76.20", "/"]]
    header, rows = found[latency]
    # the model named in its own column: the rows of several models share this table
    assert header[0] == ("模型" if lang == "zh" else "model")
    assert [r[0] for r in rows] == ["resnet50", "resnet50"]
    assert header[4:] == ["引擎" if lang == "zh" else "engine", "build_s", "b1 p50 ms",
                          "b1 p90 ms", "b1 p99 ms"]
    assert [r[4:] for r in rows] == [["compile", "61.0", "/", "/", "/"],
                                     ["compile", "61.0", "1.25", "1.50", "2.00"]]


def test_chinese_cells_line_up_in_a_terminal():
    """With wcwidth, a Chinese character counts two columns: every line of the table
    has the same display width."""
    wcwidth = pytest.importorskip("wcwidth")
    lines = tables.train_table(SEED_000_RECORDS, lang="zh").splitlines()
    assert len({wcwidth.wcswidth(line) for line in lines}) == 1
