"""Repeated runs: which records are one group, the central figure of a group, its row and
the spread table, and REPEAT=N through run_all.sh, started again after a cut."""
import argparse
import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT, _free_port
from test_report import cells, sections

from common import checkpoint, repeats, report, scaling, tables


def run(seed, p_core, acc=70.0, mem=20.0, **args):
    """A finished ResNet50 training record of --seed `seed`, its recipe run to its end."""
    return {"case": "train", "model": "resnet50", "status": "ok", "precision": "tf32",
            "batch_size": 256, "device": {"label": "A100", "vendor": "NVIDIA"}, "nodes": 1,
            "procs_per_node": 1, "world_size": 1, "config": "1x1", "fix_hp": {},
            "data_source": "real", "recipe_complete": True, "suite_version": "abc",
            "host": "node1", "finished": f"2026-01-01T00:00:0{seed}", "command": f"x {seed}",
            "args": {"seed": seed, "out": f"runs/{seed}", "workers": 8, "precision": "tf32",
                     **args},
            "figures": {"e2e_time": 1000.0 * 800 / p_core, "p_whole": p_core - 20,
                        "p_train": p_core - 5, "p_core": p_core, "acc": acc,
                        "mem_peak_gib": mem, "mem_total_gib": 40.0}}


def test_the_central_figure_is_the_median_below_five_runs_else_the_trimmed_mean():
    assert repeats.central([3.0, 1.0, 2.0]) == 2.0
    assert repeats.central([4.0, 1.0, 2.0, 3.0]) == 2.5
    assert repeats.central([1.0, 2.0, 3.0, 4.0, 100.0]) == 3.0  # 1 and 100 dropped
    assert repeats.central([10.0, 1.0, 2.0, 3.0, 4.0, 5.0]) == 3.5


def test_records_differing_in_anything_but_the_seed_are_not_one_group():
    base = [run(1, 800), run(2, 790), run(3, 810)]
    assert [len(g) for g in repeats.groups(base)] == [3]
    others = [run(4, 800, workers=4), run(5, 800, precision="fp32"),
              {**run(6, 800), "suite_version": "def"}, {**run(7, 800), "host": "node2"},
              {**run(8, 800), "status": "incomplete"}, {**run(9, 800), "args": {}},
              {**run(10, 800), "reference": {"seed": "000"}}]
    assert [len(g) for g in repeats.groups(base + others)] == [3] + [1] * len(others)
    # --workers alone apart: two rows in the seed's table
    rows = tables.train_table(repeats.summaries([*base, run(4, 700, workers=4)]))
    assert [r[0] for r in cells("\n".join(rows.splitlines()[2:]))] == \
        ["A100 1 node x 1 (1x1) (3 runs)", "A100 1 node x 1 (1x1)"]


def test_a_group_row_shows_its_central_figures_and_a_group_of_one_its_record():
    group = [run(1, 800, acc=70.0, mem=20.0), run(2, 760, acc=71.0, mem=22.5),
             run(3, 810, acc=72.5, mem=21.0)]
    found = sections(tables.tables(group))
    header, (row,) = found["Training: resnet50"]
    assert row == ["A100 1 node x 1 (1x1) (3 runs)", "tf32", "/", "1000", "780", "795", "800",
                   "71.2%", "22.5/40.0"]  # acc the mean, mem the highest
    one = run(1, 800)
    assert tables.tables([one]) == tables.tables([json.loads(json.dumps(one))])
    assert repeats.summary([one]) is one and tables.title("spread", "en") not in \
        tables.tables([one, run(2, 800, workers=1)])
    zh = sections(tables.tables(group, "zh"))
    assert zh["训练：resnet50"][1][0][0] == "A100单机单卡（1x1）（3次运行）"


def test_the_spread_table_gives_n_min_max_spread_and_seeds():
    group = [run(1, 800, acc=70.0), run(2, 760, acc=71.0), run(3, 810, acc=72.5),
             run(4, 790, acc=71.5), run(5, 1000, acc=71.0)]
    for lang in ("en", "zh"):
        header, rows = sections(tables.tables(group, lang))[tables.title("spread", lang)]
        assert header[-1] == ("随机种子" if lang == "zh" else "--seed")
        by_figure = {r[4]: r[5:] for r in rows}
        # central: 760 and 1000 dropped, the mean of 790, 800, 810; spread 240 / 800
        assert by_figure["p_core"] == ["5", "800", "760", "1000", "30.0%", "1,2,3,4,5"]
        assert by_figure["acc"] == ["5", "71.2 ± 0.9", "70.0", "72.5", "/", "1,2,3,4,5"]
        assert list(by_figure) == ["e2e_time", "p_whole", "p_train", "p_core", "acc"]


def test_an_inference_group_keeps_an_engine_slower_than_eager_in_sight():
    def served(seed, p_infer_core, slower=None):
        return {**run(seed, 1), "case": "infer", "engine": "compile",
                "weights_source": "published",
                "figures": {"e2e_time": 500.0, "p_val_core": 4000.0,
                            "p_infer_core": p_infer_core, "latency_s": 1 / p_infer_core,
                            "acc_val": 76.1, "acc_infer": 76.2, "engine_slower": slower}}
    found = sections(tables.tables([served(1, 3900.0, "engine slower than eager: ..."),
                                    served(2, 4100.0), served(3, 4200.0)]))
    (row,) = found["Inference: resnet50"][1]
    assert row[0] == "NVIDIA A100 (3 runs)"
    assert row[7] == "4100.0 (slower than eager 4000.0)" and row[9] == "76.10/76.20"
    rows = found[tables.title("spread", "en")][1]
    assert [r[4] for r in rows] == ["e2e_time", "p_val_core", "p_infer_core", "latency",
                                    "acc_val", "acc_infer"]
    assert rows[3][5:10] == ["3", "244μs", "238μs", "256μs", "7.5%"]  # 18.3 / 243.9
    assert rows[5][6] == "76.20 ± 0.00"


def test_scaling_and_the_comparison_take_a_group_at_its_central_figure():
    group = [run(1, 800), run(2, 700), run(3, 900)]
    eight = {**run(1, 6000), "nodes": 1, "procs_per_node": 8, "config": "1x8"}
    rows = scaling.scaling_rows([*group, eight])
    assert [(r["config"], r["p_core"]) for r in rows] == [("1x1", 800), ("1x8", 6000)]
    ref = {**run(0, 799), "reference": {"seed": "000-resnet50"}, "args": {}}
    table = report.comparison_table(repeats.summaries(group), [ref], "train")
    ours = [r for r in cells("\n".join(table.splitlines()[2:])) if r[1] == "ours"]
    assert len(ours) == 1 and ours[0][2] == "A100 1 node x 1 (1x1) (3 runs)"
    assert ours[0][8] == "800" and "3 runs" in report.comparison(group, [ref])


def test_each_seed_has_its_own_checkpoint_and_lock():
    """A repeat neither resumes from another's checkpoint nor waits on its lock."""
    def path(seed):
        return checkpoint.fingerprint(argparse.Namespace(seed=seed, lr=0.1, out="runs"))
    assert path(1) != path(2)


def test_a_repeat_has_its_record_only_with_the_same_command_and_size(tmp_path):
    argv = ["resnet50/train.py", "--out", str(tmp_path), "--seed", "2"]
    (tmp_path / "r.json").write_text(json.dumps(
        {"status": "ok", "config": "1x1", "command": "/usr/bin/python " + " ".join(argv)}))
    (tmp_path / "broken.json").write_text("{")
    assert repeats.has_record(str(tmp_path), "1x1", argv)
    assert not repeats.has_record(str(tmp_path), "1x8", argv)
    assert not repeats.has_record(str(tmp_path), "1x1", argv[:-1] + ["3"])


@pytest.mark.parametrize("settings, why", [
    ({"REPEAT": "0"}, "REPEAT=0: give REPEAT a count of runs"),
    ({"REPEAT": "-1"}, "REPEAT=-1: give REPEAT a count of runs"),
    ({"REPEAT": "abc"}, "REPEAT=abc: give REPEAT a count of runs"),
    # past bash's 64-bit arithmetic, or seeds past --seed's range
    ({"REPEAT": "99999999999999999999"}, "a whole number from 1 to 999999999"),
    ({"REPEAT": "2", "SEED0": "18446744073709551615"}, "SEED0=18446744073709551615: give SEED0"),
    ({"REPEAT": "2", "EXTRA_ARGS": "--seed 4"}, "set SEED0 instead")])
def test_run_all_refuses_a_repeat_it_cannot_run_in_one_line(tmp_path, settings, why):
    env = {**os.environ, "OUT": str(tmp_path), "NPROC": "1", "CASES": "resnet50_train",
           **settings}
    proc = subprocess.run(["bash", "run_all.sh"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "===" not in proc.stdout, proc.stdout + proc.stderr
    assert why in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_run_all_repeats_and_started_again_runs_only_the_missing_repeats(dataset, tmp_path):
    """REPEAT=1, then REPEAT=2 into the same OUT (a REPEAT=2 run cut after its first
    repeat, started again): one run more, with --seed 2; one row of two runs, and the
    spread table."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DATA_DIR": str(dataset), "NPROC": "1",
           "OUT": str(tmp_path), "CASES": "mobilenetv2_train",
           "EXTRA_ARGS": "--max-steps 2 --warmup-steps 1 --image-size 32 --batch-size 4 "
                         "--workers 1 --eval-every 0"}
    outputs = []
    for n in ("1", "2"):
        proc = subprocess.run(["bash", "run_all.sh"], cwd=ROOT, capture_output=True, text=True,
                              env={**env, "REPEAT": n, "MASTER_PORT": str(_free_port())},
                              timeout=300)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        outputs.append(proc.stdout)
    records = [json.load(open(f)) for f in glob.glob(os.path.join(glob.escape(str(tmp_path)),
                                                                  "*.json"))]
    assert sorted(r["args"]["seed"] for r in records) == [1, 2]
    assert "=== mobilenetv2_train, repeat 1 of 1 (--seed 1)" in outputs[0]
    assert ("=== mobilenetv2_train, repeat 1 of 2 (--seed 1): its record is in "
            f"{tmp_path} already; not run again") in outputs[1]
    assert outputs[1].count("\nrecord: ") == 1  # the second repeat alone ran
    report_part = outputs[1][outputs[1].index("Training: mobilenetv2"):]
    found = sections(report_part.rsplit("\nrun_all:", 1)[0])
    (row,) = found["Training: mobilenetv2"][1]
    assert row[0].startswith("CPU 1 node x 1 (1x1) (2 runs) [")
    spread = found[tables.title("spread", "en")][1]
    assert [r[4] for r in spread] == ["e2e_time", "p_whole", "p_train", "p_core"]
    assert all(r[5] == "2" and r[-1] == "1,2" for r in spread)


TINY_TRAIN = ("--image-size 32 --batch-size 4 --max-steps 40 --warmup-steps 1 --workers 0 "
              "--eval-every 0 --checkpoint-every 4steps --print-freq 1")


def start_until(cmd, env, line, **kw):
    """cmd started in a session of its own (as a terminal's job is), read until its
    stdout has `line`; returns the process."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, **kw)
    for said in proc.stdout:
        if line in said:
            return proc
    raise AssertionError(f"{line!r} never came: {proc.communicate()}")


def test_ctrl_c_during_a_repeat_stops_run_all_and_the_same_command_goes_on(dataset, tmp_path):
    """Ctrl-C (SIGINT to the job's processes, as a terminal sends it) in repeat 1 of 2:
    the run checkpoints, run_all starts no other repeat and says how to go on, exit
    130; the same command then resumes the cut repeat."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DATA_DIR": str(dataset), "NPROC": "1",
           "OUT": str(tmp_path), "CASES": "mobilenetv2_train", "REPEAT": "1",
           "MASTER_PORT": str(_free_port()), "EXTRA_ARGS": TINY_TRAIN}
    proc = start_until(["bash", "run_all.sh"], {**env, "REPEAT": "2"}, "step 5/40")
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out[-2000:] + err[-2000:]
    assert ("run_all: stopped by SIGINT during mobilenetv2_train, repeat 1 of 2 (--seed 1); "
            "the same command goes on from there") in err
    assert "repeat 2 of 2" not in out and "FAILED" not in out
    (rec,) = [json.load(open(f)) for f in glob.glob(os.path.join(glob.escape(str(tmp_path)), "*.json"))]
    assert rec["status"] == "incomplete" and "SIGINT" in rec["error"]
    # the case's log goes on past the signal, to what the stopping run said last
    with open(tmp_path / "logs" / "mobilenetv2_train-seed1.stderr") as f:
        assert "stopped by SIGINT at step" in f.read()
    again = subprocess.run(["bash", "run_all.sh"], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0 and "resuming from" in again.stdout, again.stdout[-3000:]


def test_a_rank_whose_torchrun_is_killed_stops_with_its_checkpoint_and_record(dataset, tmp_path):
    """torchrun starts each rank in a session of its own: a SIGKILL to torchrun (or to
    run_all.sh's process group) reaches no rank. The rank then stops as on SIGTERM, so
    that it trains on unseen no longer while the same command runs again."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "1",
           "--master-port", str(_free_port()), "mobilenetv2/train.py", "--data-dir",
           str(dataset), *TINY_TRAIN.replace("40", "400", 1).split(), "--out", str(tmp_path)]
    proc = start_until(cmd, {**os.environ, "OMP_NUM_THREADS": "1"}, "step 5/400")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()  # the rank's stdout and stderr now lead nowhere
    proc.stderr.close()
    deadline = time.time() + 60
    while not glob.glob(os.path.join(glob.escape(str(tmp_path)), "*.json")):
        assert time.time() < deadline, "the rank wrote no record after its torchrun died"
        time.sleep(0.2)
    (path,) = glob.glob(os.path.join(glob.escape(str(tmp_path)), "*.json"))
    rec = json.load(open(path))
    assert rec["status"] == "incomplete" and "SIGTERM" in rec["error"], rec.get("error")
    assert glob.glob(os.path.join(glob.escape(str(tmp_path)), "checkpoints", "*.pt"))


def test_a_seed_past_32_bits_is_refused_in_one_line(capsys):
    """SEED0 + REPEAT reach --seed: past 32 bits the samplers' generators would overflow
    (a traceback from torch); it is refused while parsing instead."""
    from common import cli
    parser = cli.train_parser("test", batch_size=4, global_batch=4, lr=0.01, epochs=1,
                              target_acc=0, warmup_steps=1)
    assert parser.parse_args(["--synthetic", "--seed", str(2 ** 32 - 1)]).seed == 2 ** 32 - 1
    with pytest.raises(SystemExit) as e:
        parser.parse_args(["--synthetic", "--seed", str(2 ** 32)])
    assert e.value.code == 2 and "at most 4294967295" in capsys.readouterr().err
