"""`python -m common.report DIR --check`: each check fires on a record made to break it,
names the file and says what to do, and stays quiet on a good folder; the seeds' own
folder lists what the seeds left out and nothing else; a real short run is read."""
import glob
import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT, run_script
from test_report import WITHOUT_TORCH

from common import check, report

SEEDS = check.SEEDS_DIR
RUNS = 3  # each configuration's runs in a good folder: enough for no warning


def train_record(nodes=1, per_node=8, bs=32, seed=0, **fields):
    """A finished ResNet50 training record as the suite writes one, recipe batch 32."""
    fix_hp = {} if bs == 32 else {"bs": bs, "lr": 0.1 * bs * nodes * per_node / 256}
    rec = {"schema": 1, "case": "train", "model": "resnet50", "status": "ok",
           "precision": "tf32", "batch_size": bs, "image_size": 224, "data_source": "real",
           "config": f"{nodes}x{per_node}", "nodes": nodes, "procs_per_node": per_node,
           "world_size": nodes * per_node, "fix_hp": fix_hp, "recipe_complete": True,
           "weights_source": "random", "warmup_steps": 5, "suite_version": "0123456789ab",
           "device": {"vendor": "NVIDIA", "name": "NVIDIA H200", "label": "H200",
                      "count": nodes * per_node, "total_memory_gib": 139.8},
           "args": {"seed": seed, "batch_size": bs, "recipe_batch_size": 32, "weights": None},
           "figures": {"e2e_time": 20000.0 + seed, "p_whole": 9000.0, "p_train": 9100.0,
                       "p_core": 9300.0 + seed, "acc": 75.6, "mem_peak_gib": 30.0,
                       "mem_total_gib": 139.8, "timed_steps": 400}}
    return {**rec, **fields}


def infer_record(precision="fp16", seed=0, **fields):
    passes = {"timed_batches": 196}
    rec = {"schema": 1, "case": "infer", "model": "resnet50", "status": "ok",
           "precision": precision, "batch_size": 256, "image_size": 224,
           "data_source": "real", "config": "1x1", "nodes": 1, "procs_per_node": 1,
           "world_size": 1, "weights_source": "published", "weights": "resnet50.pth",
           "engine": "compile", "warmup_batches": 5, "suite_version": "0123456789ab",
           "device": {"vendor": "NVIDIA", "name": "NVIDIA H200", "label": "H200", "count": 1,
                      "total_memory_gib": 139.8},
           "args": {"seed": seed, "precision": precision},
           "figures": {"e2e_time": 300.0, "p_val_whole": 3000.0, "p_val_core": 9000.0,
                       "p_infer_whole": 3100.0, "p_infer_core": 20000.0 + seed,
                       "latency_s": 5e-5, "acc_val": 76.1, "acc_infer": 76.1,
                       "mem_peak_gib": 20.0, "mem_total_gib": 139.8,
                       "val_pass": passes, "infer_pass": passes}}
    return {**rec, **fields}


TRAIN_CONFIGS = {"1x8": dict(), "1x8-fill": dict(bs=256), "1x1": dict(per_node=1, bs=256),
                 "2x8": dict(nodes=2, bs=256)}


def good_folder(folder):
    """Every seed configuration of ResNet50 training and inference, each run RUNS times."""
    for seed in range(RUNS):
        for name, sizes in TRAIN_CONFIGS.items():
            write(folder, f"train-{name}-{seed}", train_record(seed=seed, **sizes))
        for precision in ("fp16", "tf32"):
            write(folder, f"infer-{precision}-{seed}", infer_record(precision, seed))
    return folder


def write(folder, name, rec):
    path = os.path.join(folder, f"{name}.json")
    with open(path, "w") as f:
        json.dump(rec, f)
    return path


def checked(folder, capsys, *flags):
    """(exit code, the lines printed) of `python -m common.report folder --check`."""
    code = report.main([str(folder), "--check", *flags])
    return code, capsys.readouterr().out.strip().splitlines()


def test_a_complete_folder_is_ready_with_nothing_to_say(tmp_path, capsys):
    code, lines = checked(good_folder(tmp_path), capsys)
    assert (code, lines) == (0, [f"ready: {tmp_path}: 18 records in 2 tables, no errors "
                                 f"(0 warnings above)"])


def mend(folder, name, **changes):
    """Rewrite record `name` of the folder with `changes` (figures merged, a field set to
    None dropped); returns its path."""
    path = os.path.join(folder, f"{name}.json")
    with open(path) as f:
        rec = json.load(f)
    figures = {**rec["figures"], **changes.pop("figures", {})}
    rec.update(changes, figures=figures)
    for key in [k for k, v in changes.items() if v is None]:
        del rec[key]
    return write(folder, name, rec)


# (record to break, its changes, level, what the line says after the file's name)
BROKEN = {
    "unexplained empty cell": ("train-1x1-0", {"figures": {"p_core": None}}, "error",
                               "p_core empty, and the record does not say why: run it again"),
    "mem over another memory": ("train-2x8-1", {"figures": {"mem_total_gib": 80.0}}, "error",
                                "mem's denominator 80.0 GiB is not the device's total memory "
                                "139.8 GiB"),
    "acc of an unmarked recipe": ("train-1x8-2", {"recipe_complete": None}, "error",
                                  "acc 75.6 is shown, but the record does not mark its recipe "
                                  "complete (recipe_complete missing)"),
    "warm-up as long as the timed part": ("train-1x8-fill-0", {"figures": {"timed_steps": 5}},
                                          "error", "warm-up of 5 steps is not shorter than "
                                          "the 5 timed"),
    "inference warm-up too long": ("infer-fp16-1", {"warmup_batches": 200}, "error",
                                   "warm-up of 200 batches is not shorter than the 196 timed"),
    "warm-up not recorded": ("train-1x1-2", {"warmup_steps": None}, "warning",
                             "warm-up and timed steps cannot be compared"),
    "explained empty cell": ("train-1x1-1", {"figures": {"p_core": None, "why_empty": "no "
                             "timed step"}}, "warning", "p_core empty: no timed step"),
}


# changes of a setting, not of a figure: the record is no longer a repeat of the other two
SETTINGS = ("warmup_batches", "warmup_steps")


@pytest.mark.parametrize("name", BROKEN)
def test_each_record_check_fires_on_its_record_only(tmp_path, capsys, name):
    victim, changes, level, said = BROKEN[name]
    path = mend(good_folder(tmp_path), victim, **changes)
    code, lines = checked(tmp_path, capsys)
    split = any(k in SETTINGS for k in changes)
    assert len(lines) == 2 + split and lines[0].startswith(f"{level}: {path}: {said}")
    if split:  # the other two runs are two now, and the changed one is a row of its own
        assert lines[1].startswith("warning: resnet50 ") and "fewer than 3 runs" in lines[1]
    warnings = (level == "warning") + split
    assert code == (1 if level == "error" else 0)
    assert lines[-1] == (f"not ready: 1 error, {warnings} warning{'s' * (warnings != 1)}"
                         if level == "error" else
                         f"ready: {tmp_path}: 18 records in 2 tables, no errors "
                         f"({warnings} warning{'s' * (warnings != 1)} above)")


# (records to change, their changes, the one line after "error: resnet50 <case>: ")
MIXED = {
    "device": ("train-1x1-*", {"device": {"name": "NVIDIA A100", "label": "A100",
                                          "total_memory_gib": 139.8}},
               "train: 2 devices in one table: NVIDIA H200 (9: "),
    "suite version": ("infer-fp16-*", {"suite_version": "ba9876543210"},
                      "infer: 2 suite versions in one table: "),
    "precision": ("train-2x8-*", {"precision": "amp"},
                  "train: 2 precision classes in one table: tf32 (9: "),
    "fp32 class": ("infer-tf32-0", {"precision": "fp32"},
                   "infer: 2 precision classes in one table: "),
}


@pytest.mark.parametrize("name", MIXED)
def test_a_table_mixing_devices_versions_or_precisions_is_an_error(tmp_path, capsys, name):
    pattern, changes, said = MIXED[name]
    good_folder(tmp_path)
    for path in glob.glob(os.path.join(tmp_path, f"{pattern}.json")):
        mend(tmp_path, os.path.basename(path)[:-5], **changes)
    code, lines = checked(tmp_path, capsys)
    errors = [line for line in lines if line.startswith("error")]
    assert code == 1 and len(errors) == 1 and errors[0].startswith(f"error: resnet50 {said}")
    if name != "fp32 class":  # one fp32 run of three also leaves two groups under 3 runs
        assert lines[-1] == "not ready: 1 error, 0 warnings"


def test_a_missing_or_unfinished_configuration_says_what_to_run(tmp_path, capsys):
    good_folder(tmp_path)
    for seed in range(RUNS):
        os.remove(tmp_path / f"train-2x8-{seed}.json")
        os.remove(tmp_path / f"infer-fp16-{seed}.json")
    failed = write(tmp_path, "train-1x1-failed", train_record(  # as run_all.sh writes it
        per_node=1, bs=256, status="failed", error="out of memory", precision="", figures={}))
    for seed in range(RUNS):
        os.remove(tmp_path / f"train-1x1-{seed}.json")
    code, lines = checked(tmp_path, capsys)
    assert code == 1 and lines == [
        f"error: resnet50 train 1x1: only a run that did not finish ({failed}: failed: out "
        f"of memory); fix what it says and run it again: NPROC=1 DATA_DIR=/data/imagenet "
        f"CASES=resnet50_train EXTRA_ARGS='--precision tf32' bash run_all.sh",
        "error: resnet50 train 2x8: no record; run NNODES=2 NODE_RANK=<0, then 1> "
        "MASTER_ADDR=<node 0> NPROC=8 DATA_DIR=/data/imagenet CASES=resnet50_train "
        "EXTRA_ARGS='--precision tf32' bash run_all.sh",
        # the failed record's row is empty, and says why
        f"warning: {failed}: precision, e2e_time, p_whole, p_train, p_core, acc, mem empty: "
        f"the run is failed: out of memory",
        "error: resnet50 infer fp16: no record; run NPROC=1 DATA_DIR=/data/imagenet "
        "WEIGHTS_DIR=<the published weights' folder> CASES=resnet50_infer "
        "EXTRA_ARGS='--precision fp16' bash run_all.sh",
        "not ready: 3 errors, 1 warning"]


def test_a_configuration_the_seed_lacks_is_a_warning(tmp_path, capsys):
    """Seed 003 (ViT) has no 1x8 row filling the device: nothing to set one beside."""
    for seed in range(RUNS):
        for name, sizes in TRAIN_CONFIGS.items():
            if name != "1x8-fill":
                write(tmp_path, f"{name}-{seed}", train_record(seed=seed, model="vit_b_16",
                                                                **sizes))
    code, lines = checked(tmp_path, capsys)
    assert code == 0 and lines[0] == (
        "warning: vit_b_16 train 1x8 filling the device: no record; seed 003 has none "
        "either: nothing to set it beside; to add it: NPROC=8 DATA_DIR=/data/imagenet "
        "CASES=vit_train EXTRA_ARGS='--precision tf32 --batch-size auto' bash run_all.sh")
    assert lines[1].startswith(f"ready: {tmp_path}: 9 records in 1 table, no errors")


def test_fewer_than_three_runs_is_a_warning(tmp_path, capsys):
    good_folder(tmp_path)
    os.remove(tmp_path / "train-1x8-fill-2.json")
    code, lines = checked(tmp_path, capsys)
    assert code == 0 and lines[0] == (
        "warning: resnet50 train: fewer than 3 runs of 1x8 bs=256,lr=0.8 (n=2); run each 3 "
        "times or more for its spread, with the settings that made it: REPEAT=3 "
        "DATA_DIR=/data/imagenet CASES=resnet50_train ... bash run_all.sh")


def test_unreadable_files_and_seed_rows_among_runs_are_errors(tmp_path, capsys):
    good_folder(tmp_path)
    (tmp_path / "broken.json").write_text("{")
    seed_row = "seed000-resnet50-train-A100-1x1-tf32-bs256.json"
    shutil.copy(os.path.join(SEEDS, seed_row), tmp_path)
    code, lines = checked(tmp_path, capsys)
    assert code == 1 and len(lines) == 3 and lines[2] == "not ready: 2 errors, 0 warnings"
    assert lines[0].startswith(f"error: {tmp_path}/broken.json: not JSON (")
    assert lines[0].endswith("the report leaves it out; mend it or move it out of the folder")
    assert lines[1] == (f"error: {tmp_path}/{seed_row}: 1 published seed row among the runs: "
                        f"the tables would show them as rows of this folder; keep "
                        f"results/reference apart and set the runs beside it with "
                        f"--compare results/reference")


def test_a_folder_of_no_record_names_each_file(tmp_path, capsys):
    (tmp_path / "broken.json").write_text("{")
    code, lines = checked(tmp_path, capsys)
    assert code == 1 and len(lines) == 2 and lines[1] == "not ready: 1 error, 0 warnings"
    assert lines[0].startswith(f"error: {tmp_path}/broken.json: not JSON (")


def test_check_takes_no_tables_flags(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        report.main([str(good_folder(tmp_path)), "--check", "--compare", SEEDS])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip().endswith(
        ": error: --check reads the folders alone: leave out --compare and --plots; "
        "see --help")


# the seeds' 1x1 and 2x8 training rows: throughput only, e2e_time and acc left empty
SEED_ROWS_WITHOUT_E2E_AND_ACC = [
    "seed000-resnet50-train-A100-1x1-tf32-bs256", "seed000-resnet50-train-A100-2x8-tf32-bs256",
    "seed002-mobilenetv2-train-BI-V100-1x1-fp32-bs256",
    "seed002-mobilenetv2-train-BI-V100-2x8-fp32-bs256",
    "seed003-vit_b_16-train-A100-1x1-amp-bs256", "seed003-vit_b_16-train-A100-2x8-amp-bs256",
    "seed004-BiT-M-R152x2-train-A100-1x1-tf32-bs16",
    "seed004-BiT-M-R152x2-train-A100-2x8-tf32-bs20"]


def test_the_seeds_folder_lists_what_the_seeds_left_out_and_nothing_else():
    """Without torch: the ViT seed's missing row filling the device, the empty e2e_time
    and acc of every seed's 1x1 and 2x8 rows (each explained by its record), and one
    published run per row."""
    proc = subprocess.run([sys.executable, "-c", WITHOUT_TORCH, "results/reference", "--check"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert all(line.startswith("warning: ") for line in lines[:-1])
    assert lines[-1] == ("ready: results/reference: 17 records in 5 tables, no errors "
                         "(14 warnings above)")
    missing = [line for line in lines if " no record" in line]
    assert len(missing) == 1 and missing[0].startswith(
        "warning: vit_b_16 train 1x8 filling the device: no record; seed 003 has none either")
    empty = sorted(line.split(": ")[1] for line in lines if " empty: " in line)
    assert empty == [f"results/reference/{name}.json" for name in SEED_ROWS_WITHOUT_E2E_AND_ACC]
    assert all(line.endswith(": e2e_time, acc empty: the seed publishes none for this row "
                             "(a throughput-only row)") for line in lines if " empty: " in line)
    runs = [line for line in lines if "fewer than 3 runs" in line]
    assert len(runs) == 5 and all(line.endswith("a seed publishes one run per row")
                                  for line in runs)


def test_a_real_short_run_is_read_as_a_reviewer_would(tmp_path, dataset):
    """A real 1x1 run: its record is sound (only its acc, of a short run, is empty, and
    said so); the other seed configurations are missing."""
    out = tmp_path / "runs"
    run = run_script(["mobilenetv2/train.py", "--data-dir", dataset, "--image-size", "32",
                      "--batch-size", "4", "--max-steps", "3", "--warmup-steps", "1",
                      "--workers", "0", "--monitor-interval", "0", "--out", out])
    assert run.returncode == 0, run.stderr
    (path,) = glob.glob(os.path.join(out, "*.json"))
    proc = subprocess.run([sys.executable, "-m", "common.report", str(out), "--check"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 1 and proc.stderr == "", proc.stderr
    assert [line.split(": ")[1] for line in lines if line.startswith("error")] == [
        "mobilenetv2 train 1x8 at the recipe's batch", "mobilenetv2 train 1x8 filling the device",
        "mobilenetv2 train 2x8"]
    assert f"warning: {path}: acc empty: a short run, stopped before its recipe's end" \
        in proc.stdout
    assert [line for line in lines if path in line and not line.startswith("warning")] == []
    assert lines[-1] == "not ready: 3 errors, 2 warnings"
