"""resnet50/train.py end to end, as a user runs it."""
import json
import os
import shutil

import pytest
import torchvision
from conftest import ROOT, run_script


def only_record(out_dir):
    files = [f for f in os.listdir(out_dir) if f.endswith(".json")]
    assert len(files) == 1, files
    return json.load(open(os.path.join(out_dir, files[0])))


def test_resnet50_parameter_count():
    assert sum(p.numel() for p in torchvision.models.resnet50().parameters()) == 25_557_032


def test_train_two_ranks_torchrun(dataset, tmp_path):
    out = tmp_path / "runs"
    proc = run_script(["resnet50/train.py", "--data-dir", dataset, "--max-steps", 6,
                       "--warmup-steps", 2, "--image-size", 32, "--batch-size", 4,
                       "--workers", 1, "--print-freq", 2, "--lr", 0.01, "--out", out], nproc=2)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    rec = only_record(out)
    f = rec["figures"]
    assert rec["config"] == "1x2" and rec["world_size"] == 2 and rec["launcher"] == "torchrun"
    # 4 timed steps x 4 images x 2 ranks
    assert f["images"] == 4 * 4 * 2 and f["timed_steps"] == 4
    assert f["p_core"] >= f["p_train"] >= f["p_whole"] > 0
    assert f["e2e_time"] > f["whole_s"]
    assert f["acc"] is not None and rec["evals"][-1]["images"] == 20  # every val image once
    assert f["mem_peak_gib"] > 0 and f["flops_per_image"] > 0 and f["mfu"] is None
    assert rec["fix_hp"] == {"bs": 4, "lr": 0.01, "img": 32}
    assert rec["status"] == "ok" and rec["precision"] == "fp32"
    assert "| CPU 1 node x 2 (1x2) [generated data; short run, throughput only] | fp32" in proc.stdout
    # progress from rank 0 only, once the batch and the classes are settled
    assert proc.stdout.count("resnet50 training on 2 x CPU (1x2") == 1
    assert "  batch 4 per device, 8 global; precision fp32, channels-last\n" in proc.stdout
    assert proc.stdout.count(f"data: {dataset}: 4 classes, 96 train / 20 val images") == 2
    assert proc.stdout.count("eval: 20 images in ") == 1
    # the history the plots draw from: each progress line's loss and rate
    steps = rec["figures"]["history"]["steps"]
    assert steps["columns"] == ["step", "t_s", "loss", "img_per_s"]
    assert [row[0] for row in steps["rows"]] == [2, 4, 6]


def test_runs_from_a_copied_folder_in_another_directory(dataset, tmp_path):
    """A vendor copies resnet50/ and common/ into its image and runs from elsewhere."""
    image = tmp_path / "sdk"
    for folder in ("resnet50", "common"):
        shutil.copytree(os.path.join(ROOT, folder), image / folder)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    proc = run_script([image / "resnet50" / "train.py", "--synthetic", "--max-steps", 3,
                       "--warmup-steps", 1, "--image-size", 32, "--batch-size", 2,
                       "--num-classes", 10, "--out", "runs"], cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = only_record(elsewhere / "runs")
    assert rec["data"] == "synthetic" and rec["figures"]["acc"] is None
    assert rec["figures"]["images"] == 2 * 2


@pytest.mark.parametrize("args, message", [
    (["--synthetic", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    ([], "no data: give --data-dir DIR"),
    (["--data-dir", "/nonexistent"], "--data-dir /nonexistent: no such directory"),
    (["--synthetic", "--precision", "tf32"], "--precision tf32: CPU"),
])
def test_user_errors_are_one_line(args, message):
    proc = run_script(["resnet50/train.py", *args])
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_under_torchrun_its_failure_summary_carries_the_error_line():
    """torchrun ends a failed job with its own summary; the rank's error file puts our
    line there, where a job of many ranks and nodes is read from, instead of a link."""
    proc = run_script(["resnet50/train.py", "--data-dir", "/nonexistent"], nproc=2)
    assert proc.returncode != 0
    summary = proc.stderr[proc.stderr.index("Root Cause"):]
    assert "traceback : error: --data-dir /nonexistent: no such directory" in summary
    assert "To enable traceback see" not in proc.stderr
