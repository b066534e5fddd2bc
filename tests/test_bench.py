"""The comparison harness: each side measured, the ratio against its goal, a result file."""
import json
import os

import pytest
import torch
from conftest import run_script

from common import bench, cases, device


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


def test_engine_pays_only_where_its_build_costs_less_than_it_saves(tmp_path):
    """ResNet50 at 100 img/s eager, 300 through an engine that takes 40 s to build: it
    saves 1/150 s an image, so it pays from 6,000 images on, not on 64."""
    (tmp_path / "cpu").mkdir()
    rows = [dict(bench.row("engine: resnet50/infer.py compile / eager", 300.0, 100.0, "img/s"),
                 model="resnet50", precision="fp32", build_s=40.0)]
    (tmp_path / "cpu" / "bench-CPU-20260101-000000.json").write_text(json.dumps(
        {"device": {"label": device.select().label}, "rows": rows}))
    engine, why = bench.engine_pays("resnet50", 64, str(tmp_path))
    assert engine == "eager" and why == ("building the engine took 40 s here and would "
                                         "save 0.4 s on 64 images")
    assert bench.engine_pays("resnet50", 7000, str(tmp_path))[0] == "compile"
    assert bench.engine_pays("vit", 7000, str(tmp_path))[0] == "eager"  # never measured


def test_the_matmul_rate_is_the_arithmetic_of_the_fastest_timing(monkeypatch):
    """Four 64 x 64 matmuls between two synchronisations, timed six times, the first
    untimed: with a matmul taking 10, 1, 2, 1.5, 3 and 2 ms in those timings (a fake
    clock that moves only inside the matmul), the rate is 4 x 2 x 64^3 over 4 ms."""
    per_matmul = iter([10e-3] * 4 + [1e-3] * 4 + [2e-3] * 4 + [1.5e-3] * 4 + [3e-3] * 4
                      + [2e-3] * 4)
    clock = {"t": 0.0}
    monkeypatch.setattr(bench.time, "perf_counter", lambda: clock["t"])

    class Timed(torch.Tensor):
        def __matmul__(self, other):
            clock["t"] += next(per_matmul)
            return torch.Tensor.__matmul__(self, other)
    monkeypatch.setattr(bench.torch, "randn", lambda *s, **k: torch.zeros(*s).as_subclass(Timed))
    dev = device.select()
    rate = bench.matmul_rate(dev, torch.float32, 64, calls=5, per_call=4)
    assert rate == pytest.approx(4 * 2 * 64 ** 3 / 4e-3)


def test_an_engine_bound_says_how_far_eager_is_from_the_matmul_rate():
    # 1 GFLOP an image at 150 img/s eager is 150 GFLOP/s: 75% of a 200 GFLOP/s matmul,
    # so an engine doing the same arithmetic serves at most 200/150 of eager
    found = bench.engine_bound(1e9, 150.0, 200e9)
    assert found["eager_share"] == pytest.approx(0.75)
    assert found["bound"] == pytest.approx(4 / 3)


def test_train_compile_runs_each_model_as_a_throughput_run(monkeypatch):
    """Both sides of every model run without accumulation: ViT's recipe would otherwise
    accumulate up to its global batch of 4096 and refuse a short run."""
    calls = []

    def fake_python(*args, timeout=None, cold_cache_in=None):
        assert cold_cache_in is not None  # every compile timed as a first one
        calls.append([str(x) for x in args])
    monkeypatch.setattr(bench, "_python", fake_python)
    monkeypatch.setattr(bench, "_record", lambda out: {"figures": {"p_core": 10.0,
                                                                   "compile_s": 5.0}})
    a = bench.get_args_parser().parse_args(["--only", "train_compile"])
    for key, value in bench.defaults_for("cpu").items():
        setattr(a, key, value)
    rows = bench.train_compile(a)
    assert bench.MODELS == cases.folders()
    assert [r["model"] for r in rows] == list(bench.MODELS) and len(calls) == 2 * len(rows)
    for args in calls:
        assert args[args.index("--grad-accum") + 1] == "1"
    assert ["--compile" in args for args in calls] == [False, True] * len(rows)


def test_bench_decode_compares_the_device_path_with_the_host_path(tmp_path):
    """On a CPU the device side decodes in the main process: the same code, timed."""
    proc = run_script(["-m", "common.bench", "--only", "decode", "--repeat", 2,
                       "--batch-size", 4, "--loader-batches", 2, "--workers", 1,
                       "--out", tmp_path], timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (name,) = os.listdir(tmp_path)
    (r,) = json.loads((tmp_path / name).read_text())["rows"]
    assert r["comparison"] == "decode: on the device / on the host"
    assert r["ours"] > 0 and r["reference"] > 0 and len(r["rounds"]) == 2
    assert r["note"].endswith(" on cpu") and r["goal"] is None
