"""The seeds' rows as reference records, and our records set beside them."""
import glob
import json
import os

import pytest

from common import columns, record, report
from common.precision import PRECISIONS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE = os.path.join(ROOT, "results", "reference")
FILES = sorted(glob.glob(os.path.join(REFERENCE, "*.json")))

REQUIRED = ("schema", "case", "model", "status", "precision", "reported_precision",
            "batch_size", "global_batch_size", "image_size", "data_source", "weights_source",
            "config", "nodes", "procs_per_node", "world_size", "device", "figures",
            "recipe_complete", "reference")
TRAIN_FIGURES = ("e2e_time", "p_whole", "p_train", "p_core", "acc", "mem_peak_gib",
                 "mem_total_gib")
INFER_FIGURES = ("e2e_time", "p_val_whole", "p_val_core", "p_infer_whole", "p_infer_core",
                 "latency_s", "acc_val", "acc_infer", "mem_peak_gib", "mem_total_gib")


def load(name):
    with open(os.path.join(REFERENCE, name), encoding="utf-8") as f:
        return json.load(f)


def seed_cells(rec):
    return [c.strip() for c in rec["reference"]["row"].strip().strip("|").split("|")]


def number(cell):
    return None if cell in ("", "/") else float(cell.rstrip("%"))


def test_one_reference_record_per_published_row():
    rows = sorted((r["reference"]["seed"][:3], r["model"], r["case"]) for r in map(load, FILES))
    assert rows == sorted(
        [("000", "resnet50", "train")] * 4 + [("001", "resnet50", "infer")] * 2
        + [("002", "mobilenetv2", "train")] * 4 + [("003", "vit_b_16", "train")] * 3
        + [("004", "BiT-M-R152x2", "train")] * 4)


@pytest.mark.parametrize("path", FILES, ids=os.path.basename)
def test_reference_record_is_complete_and_consistent(path):
    rec = load(path)
    assert all(k in rec for k in REQUIRED)
    assert rec["status"] == "ok" and rec["data_source"] == "real"
    assert rec["precision"] in PRECISIONS
    assert rec["config"] == f"{rec['nodes']}x{rec['procs_per_node']}"
    assert rec["world_size"] == rec["nodes"] * rec["procs_per_node"] == rec["device"]["count"]
    assert {"vendor", "name", "label", "count", "total_memory_gib"} <= set(rec["device"])
    assert {"seed", "row", "note"} <= set(rec["reference"]) and rec["reference"]["note"]
    figures = TRAIN_FIGURES if rec["case"] == "train" else INFER_FIGURES
    explained = {k for k in rec["figures"] if k.endswith("_why_empty")}
    assert set(rec["figures"]) - explained == set(figures)
    # a figure the seed left empty says so, and only such a figure
    assert explained == {f"{k}_why_empty" for k in figures if rec["figures"][k] is None}
    cells = seed_cells(rec)
    assert cells[1] == rec["reported_precision"]
    if rec["case"] == "train":
        # the seed's cells, in its order: e2e_time, p_whole, p_train, p_core, acc, mem
        assert [number(c) for c in cells[3:7]] == [rec["figures"][k] for k in TRAIN_FIGURES[:4]]
        acc = number(cells[7])  # percent, or a fraction as seed 004 writes it
        assert rec["figures"]["acc"] == (None if acc is None else
                                         pytest.approx(acc * 100 if acc < 1 else acc))
        assert rec["recipe_complete"] == (rec["figures"]["acc"] is not None)
        assert columns.fmt_fix_hp(rec["fix_hp"]) == cells[2]
        assert "engine" not in rec
    else:
        assert [number(c) for c in cells[3:8]] == [rec["figures"][k] for k in INFER_FIGURES[:5]]
        assert columns.fmt_latency(rec["figures"]["latency_s"]) == cells[8]
        # acc as the seed writes it: inference / validation
        assert cells[9] == f"{rec['figures']['acc_infer']:.2f}/{rec['figures']['acc_val']:.2f}"
        assert rec["engine"] == "tensorrt" and rec["weights_source"] == "published"
    assert rec["figures"]["mem_peak_gib"] == number(cells[-1].split("/")[0].strip())


def test_key_figures():
    resnet = load("seed000-resnet50-train-A100-1x1-tf32-bs256.json")
    assert (resnet["figures"]["p_core"], resnet["reported_precision"]) == (799, "fp32")
    assert resnet["figures"]["acc"] is None and not resnet["recipe_complete"]
    vit = load("seed003-vit_b_16-train-A100-1x8-amp-bs256.json")
    assert (vit["precision"], vit["figures"]["p_core"], vit["figures"]["acc"]) == ("amp", 5441, 80.024)
    assert (vit["batch_size"], vit["grad_accum"], vit["global_batch_size"]) == (256, 2, 4096)
    bit = load("seed004-BiT-M-R152x2-train-A100-1x8-tf32-bs16.json")
    assert (bit["figures"]["acc"], bit["image_size"], bit["weights_source"]) == (84.192, 480, "published")
    mobilenet = load("seed002-mobilenetv2-train-BI-V100-1x8-fp32-bs32.json")
    assert (mobilenet["device"]["label"], mobilenet["precision"]) == ("BI-V100", "fp32")
    fp16 = load("seed001-resnet50-infer-A100-1x1-fp16-bs256.json")["figures"]
    assert (fp16["p_infer_core"], fp16["latency_s"]) == (11710.0, 85e-6)
    assert (fp16["acc_infer"], fp16["acc_val"]) == (76.17, 76.21)  # the seed writes infer/val
    assert load("seed001-resnet50-infer-A100-1x1-tf32-bs256.json")["reported_precision"] == "fp32"


def test_every_reference_record_renders(capsys):
    assert report.main([REFERENCE]) == 0
    out = capsys.readouterr().out
    for rec in map(load, FILES):
        key = "p_core" if rec["case"] == "train" else "p_infer_core"
        assert columns.fmt_rate(rec["figures"][key]) in out or f"{rec['figures'][key]:.1f}" in out


def our_record(**changes):
    """A record as resnet50/train.py writes it, made to match seed 000's 1x1 row."""
    rec = {"schema": 1, "case": "train", "model": "resnet50", "status": "ok",
           "precision": "tf32", "batch_size": 256, "data": "/data/imagenet",
           "args": {"image_size": 224, "batch_size": 256}, "fix_hp": {"bs": 256, "lr": 0.8},
           "config": "1x1", "nodes": 1, "procs_per_node": 1, "world_size": 1,
           "device": {"vendor": "Vendor", "type": "xpu", "name": "Chip 9", "label": "Chip9",
                      "count": 1, "total_memory_gib": 64.0},
           "figures": {"e2e_time": None, "p_whole": 1564.0, "p_train": 1590.0, "p_core": 1997.5,
                       "acc": None, "mem_peak_gib": 30.0, "mem_total_gib": 64.0},
           "finished": "2026-11-30T03:00:00+00:00"}
    rec.update(changes)
    return rec


def compare_cli(tmp_path, capsys, rec):
    record.write_record(rec, str(tmp_path))
    assert report.main([str(tmp_path), "--compare", REFERENCE]) == 0
    out = capsys.readouterr().out
    return out.split("beside the seeds' rows")[1]


def rows_of(table):
    return [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in table.strip().splitlines()[4:]]


def test_a_matching_record_prints_the_ratio_of_every_throughput(tmp_path, capsys):
    rows = rows_of(compare_cli(tmp_path, capsys, our_record()))
    ours, seed, ratio = rows[:3]
    assert ours[1] == "ours" and ours[-1] == ""
    assert seed[1] == "seed 000" and seed[-1] == "000_f92dad79ed47c72d.txt"
    assert seed[3] == "tf32 (seed: fp32)" and seed[6:9] == ["782", "795", "799"]
    # ours / seed: 1564 / 782, 1590 / 795, 1997.5 / 799; no ratio of e2e_time, acc or mem
    assert ratio[1] == "ours / seed" and ratio[6:9] == ["2.00x", "2.00x", "2.50x"]
    assert ratio[5] == ratio[9] == ratio[10] == ""


def test_latency_ratio_is_seed_over_ours(tmp_path, capsys):
    ref = load("seed001-resnet50-infer-A100-1x1-fp16-bs256.json")
    rec = {k: v for k, v in ref.items() if k not in ("reference", "reported_precision")}
    rec.update(device=our_record()["device"], weights="resnet50-0676ba61.pth",
               figures={**ref["figures"], "p_infer_core": 23420.0, "latency_s": 42.5e-6})
    ratio = rows_of(compare_cli(tmp_path, capsys, rec))[2]
    assert ratio[1] == "ours / seed" and ratio[9:11] == ["2.00x", "2.00x"]  # p_infer_core, latency


@pytest.mark.parametrize("changes, hint", [
    ({"precision": "fp32"}, "the seed's fp32 row ran as tf32: run with --precision tf32"),
    ({"batch_size": 128}, "the seed's row has 256 per device: run with --batch-size 256"),
    ({"data": "synthetic"}, "the seed's row ran on real ImageNet: run with --data-dir"),
    ({"args": {"image_size": 64}}, "the seed's row ran at 224 px: run with --image-size 224"),
    ({"model": "vit_b_16", "precision": "fp32"},
     "the seed's fp32 row ran as amp: run with --precision amp"),
    ({"config": "1x2", "procs_per_node": 2, "world_size": 2, "batch_size": 64}, None),
])
def test_another_precision_batch_or_data_source_has_no_reference(tmp_path, capsys, changes, hint):
    rows = rows_of(compare_cli(tmp_path, capsys, our_record(**changes)))
    assert len(rows) == 1 and rows[0][1] == "ours"
    assert rows[0][-1] == (f"no reference: {hint}" if hint else "no reference")


def test_records_of_a_reference_folder_are_not_compared_with_themselves():
    refs = report.load_references(REFERENCE)
    assert report.comparison(refs, refs) == ""


def test_a_compare_path_without_references_is_one_line(tmp_path, capsys):
    record.write_record(our_record(), str(tmp_path))
    for path in (str(tmp_path / "missing"), str(tmp_path)):
        assert report.main([str(tmp_path), "--compare", path]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: --compare {path}: ") and err.count("\n") == 1
