"""The comparison harness: each side measured, the ratio against its goal, a result file."""
import json
import os

from conftest import run_script

from common import bench


def test_row_medians_ratio_and_verdict():
    assert bench.row("x", 99.0, 100.0, "img/s", 0.98)["verdict"] == "met"
    assert bench.row("x", 97.0, 100.0, "img/s", 0.98)["verdict"] == "NOT met"
    empty = bench.row("x", None, None, "img/s", 1.0, "timm is not installed")
    assert empty["ratio"] is None and empty["verdict"] == "" and empty["note"]
    # rounds paired by position: ratios 0.96, 1.01, 0.99; medians 99 / 100
    r = bench.row("x", [96.0, 101.0, 99.0], [100.0, 100.0, 100.0], "img/s", 0.98)
    assert (r["ours"], r["reference"], r["ratio"]) == (99.0, 100.0, 0.99)
    assert r["rounds"] == [0.96, 1.01, 0.99] and r["verdict"] == "within noise"
    assert bench.row("x", [98.0, 99.0], [100.0, 100.0], "img/s", 0.98)["verdict"] == "met"
    assert bench.row("x", [97.0, 90.0], [100.0, 100.0], "img/s", 0.98)["verdict"] == "NOT met"


def test_alternate_runs_the_sides_in_rounds():
    calls = []
    ours, ref = bench.alternate(3, lambda: calls.append("a") or len(calls),
                                lambda: calls.append("b") or 10 * len(calls))
    assert calls == ["a", "b"] * 3
    assert (ours, ref) == ([1, 3, 5], [20, 40, 60])


def test_bench_end_to_end_small(tmp_path):
    proc = run_script(["-m", "common.bench", "--only", "harness", "loader", "--repeat", 1,
                       "--steps", 2, "--warmup", 1, "--image-size", 32, "--batch-size", 4,
                       "--loader-batches", 2, "--workers", 1, "--out", tmp_path], timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (name,) = os.listdir(tmp_path)
    result = json.loads((tmp_path / name).read_text())
    rows = {r["comparison"].split(":")[0]: r for r in result["rows"]}
    assert set(rows) == {"harness", "loader", "loader + normalising on the device / the same"}
    for r in result["rows"]:
        assert r["ours"] > 0 and r["reference"] > 0
        assert r["ratio"] == r["ours"] / r["reference"] and len(r["rounds"]) == 1
    assert "| harness: resnet50/train.py p_core / bare loop" in proc.stdout
    assert "| rounds" in proc.stdout
