"""Plots from a directory of records; a one-line error where matplotlib is missing."""
import json
import sys

from common import history, report

PNG = b"\x89PNG\r\n\x1a\n"


def train_record(config, p_core, evals=(), monitor_rows=()):
    nodes, per_node = (int(n) for n in config.split("x"))
    steps = [[s, s * 0.5, 5.0 / s, 100.0 + s] for s in range(2, 1000, 2)]
    return {
        "case": "train", "model": "resnet50", "status": "ok", "precision": "fp32",
        "batch_size": 32, "config": config, "nodes": nodes, "procs_per_node": per_node,
        "world_size": nodes * per_node, "device": {"label": "A100", "vendor": "NVIDIA"},
        "fix_hp": {}, "warmup_steps": 5, "args": {"target_acc": 75.5},
        "evals": [{"epoch": i + 1, "step": 100 * (i + 1), "top1": top1}
                  for i, top1 in enumerate(evals)],
        "figures": {"p_core": p_core, "p_train": 0.9 * p_core, "history": {
            "steps": history.series(history.STEP_COLUMNS, steps),
            "monitor": history.series(history.MONITOR_COLUMNS, monitor_rows),
            "timed_s": [2.0, 8.0]}},
        "finished": f"2026-01-01T00:00:0{nodes * per_node}",
    }


def write_records(folder):
    samples = [[t, 300.0, 90.0, 30.0, 50.0, 12.0] for t in range(10)]
    for i, rec in enumerate([train_record("1x1", 800.0, [30.0, 60.0, 76.1], samples),
                             train_record("1x8", 6100.0), train_record("2x8", 11800.0)]):
        (folder / f"r{i}.json").write_text(json.dumps(rec))


def test_history_keeps_a_few_hundred_evenly_spread_points():
    rows = [[i] for i in range(10_000)]
    kept = history.downsample(rows)
    assert len(kept) == history.POINTS and kept[0] == [0] and kept[-1] == [9_999]
    assert history.downsample(rows[:50]) == rows[:50]


def test_plots_from_a_directory_of_records(tmp_path, capsys):
    write_records(tmp_path)
    out = tmp_path / "plots"
    assert report.main([str(tmp_path), "--plots", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["convergence-resnet50.png", "monitor-r0.png", "scaling.png",
                     "train-r0.png", "train-r1.png", "train-r2.png"]
    for path in out.iterdir():
        assert path.read_bytes()[:8] == PNG and path.stat().st_size > 10_000
    assert str(out / "scaling.png") in capsys.readouterr().out


def test_without_matplotlib_one_line_names_the_package(tmp_path, monkeypatch, capsys):
    write_records(tmp_path)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib fails
    assert report.main([str(tmp_path), "--plots", str(tmp_path / "plots")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: --plots: needs matplotlib, which is not installed here; "
                   "pip install matplotlib")
    assert not (tmp_path / "plots").exists()
