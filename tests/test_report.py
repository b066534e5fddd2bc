"""Records and tables: the seed's training table rebuilt from records, atomic writes."""
import json
import os

import pytest

from common import report

# seed 000 (ResNet50 training, A100), as its table prints them
SEED_000_ROWS = """
| A100单机8卡（1x8） | fp32 | / | 28661 | 4475 | 4586    | 4659 | 75.0% | 5.8/40.0 |
| A100单机8卡（1x8） | fp32 | bs=256,lr=0.8 | 22653    | 5663    | 5866    | 6105   | 73.5% | 28.3/40.0 |
| A100单机单卡（1x1） | fp32 | bs=256,lr=0.8 |  | 782 | 795    | 799 |  | 27.6/40.0 |
| A100两机8卡（2x8） | fp32 | bs=256,lr=0.8 |  | 10576 | 11085    | 11874 | | 27.9/40.0 |
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
    table = report.train_table(SEED_000_RECORDS, lang="zh")
    lines = table.splitlines()
    assert cells(lines[0])[0] == ["配置", "precision", "fix_hp", "e2e_time", "p_whole", "p_train",
                               "p_core", "acc", "mem"]
    assert cells("\n".join(lines[2:])) == cells(SEED_000_ROWS)


def test_config_labels():
    assert report.config_label("A100", 1, 8, "zh") == "A100单机8卡（1x8）"
    assert report.config_label("A100", 1, 1, "zh") == "A100单机单卡（1x1）"
    assert report.config_label("A100", 2, 8, "zh") == "A100两机8卡（2x8）"
    assert report.config_label("H100", 2, 8) == "H100 2 nodes x 8 (2x8)"


def test_small_rates_keep_a_decimal():
    assert report.fmt_rate(23.14) == "23.1"
    assert report.fmt_rate(782.4) == "782"
    assert report.fmt_rate(None) == ""


def test_failed_run_is_marked_in_its_row():
    rec = dict(SEED_000_RECORDS[0], status="failed", error="loss is nan at step 7")
    assert report.train_row(rec)[0].endswith("[failed: loss is nan at step 7]")


def test_write_record_is_atomic_and_never_overwrites(tmp_path):
    rec = {**SEED_000_RECORDS[0], "config": "1x8", "device": {"label": "A100"}}
    first = report.write_record(rec, str(tmp_path))
    second = report.write_record(rec, str(tmp_path))
    assert first != second  # same second, same process: still two files
    assert sorted(os.listdir(tmp_path)) == sorted([os.path.basename(first), os.path.basename(second)])
    assert json.load(open(first))["figures"]["p_core"] == 4659


def test_report_cli_renders_a_directory(tmp_path, capsys):
    for rec in SEED_000_RECORDS:
        report.write_record({**rec, "config": f"{rec['nodes']}x{rec['procs_per_node']}"},
                            str(tmp_path))
    (tmp_path / "notes.json").write_text('{"not": "a record"}')
    assert report.main([str(tmp_path), "--lang", "zh"]) == 0
    out = capsys.readouterr().out
    assert "A100两机8卡（2x8）" in out and "11874" in out


def test_report_cli_names_a_broken_file(tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text("{")
    with pytest.raises(ValueError, match="broken.json"):
        report.load_records([str(tmp_path)])
