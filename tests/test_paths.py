"""Paths taken literally: a folder whose name looks like a pattern (`runs[1]`) is that
folder, wherever a path meets a pattern (the report's records, run_all.sh's count of
them, the engine bench the quick check reads)."""
import os
import shutil
import subprocess

from conftest import ROOT
from test_report import SEED_000_RECORDS

from common import bench, record, report

ODD = "runs[1] *?"  # a class, a star and a question mark: each matches other names


def test_the_report_reads_a_folder_named_like_a_pattern(tmp_path, capsys):
    folder = tmp_path / ODD
    folder.mkdir()
    (tmp_path / "runs1").mkdir()  # what the pattern runs[1] would match instead
    rec = SEED_000_RECORDS[0]
    record.write_record({**rec, "config": f"{rec['nodes']}x{rec['procs_per_node']}"}, str(folder))
    assert [r["_path"] for r in report.load_records([str(folder)])] == \
        [str(folder / os.listdir(folder)[0])]
    assert report.main([str(folder)]) == 0 and "A100 1 node x 8 (1x8)" in capsys.readouterr().out


def test_run_all_counts_the_records_of_an_out_named_like_a_pattern(tmp_path):
    out = tmp_path / ODD
    out.mkdir()
    rec = SEED_000_RECORDS[0]
    record.write_record({**rec, "config": f"{rec['nodes']}x{rec['procs_per_node']}"}, str(out))
    # CASES of no name: no case runs, and the records already in OUT are rendered
    env = {**os.environ, "OUT": str(out), "NPROC": "1", "CASES": " "}
    proc = subprocess.run(["bash", "run_all.sh"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # the record already there is found and rendered, not 'the records are on ...'
    assert "A100 1 node x 8 (1x8)" in proc.stdout, proc.stdout + proc.stderr


def test_the_engine_bench_is_read_from_a_results_folder_named_like_a_pattern(tmp_path):
    results = tmp_path / ODD
    (results / "cpu").mkdir(parents=True)
    shutil.copy(os.path.join(ROOT, "results", "cpu-2core", "bench-CPU-20261130-052456.json"),
                results / "cpu")
    engine, why = bench.engine_pays("resnet50", 64, results=str(results))
    assert engine == "eager" and why.startswith("building the engine took 15 s here"), why
