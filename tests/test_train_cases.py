"""mobilenetv2/train.py and vit/train.py end to end, as a user runs them."""
import math

import pytest
import torchvision
from conftest import run_script
from test_resnet50 import only_record

QUICK = ["--image-size", 32, "--batch-size", 4, "--workers", 1, "--print-freq", 2,
         "--warmup-steps", 2]


def test_mobilenetv2_parameter_count():
    assert sum(p.numel() for p in torchvision.models.mobilenet_v2().parameters()) == 3_504_872


@pytest.mark.parametrize("script, extra, model", [
    ("mobilenetv2/train.py", ["--max-steps", 6], "mobilenetv2"),
    ("vit/train.py", ["--model", "vit_tiny", "--max-steps", 4, "--grad-accum", 2,
                      "--target-acc", 101], "vit_tiny"),
])
def test_two_ranks_torchrun(dataset, tmp_path, script, extra, model):
    out = tmp_path / "runs"
    proc = run_script([script, "--data-dir", dataset, *QUICK, *extra, "--out", out], nproc=2)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    rec = only_record(out)
    f = rec["figures"]
    accum = rec["args"].get("grad_accum", 1)
    assert rec["model"] == model and rec["config"] == "1x2"
    assert f["images"] == (f["steps"] - 2) * 4 * accum * 2
    assert f["p_core"] >= f["p_train"] >= f["p_whole"] > 0
    assert f["acc"] is not None and rec["evals"][-1]["images"] == 20
    assert rec["global_batch_size"] == rec["recipe"]["global_batch"] == 4 * accum * 2
    # no --lr: the recipe's lr, scaled from its reference global batch to this one's
    reference = {"mobilenetv2": (0.045, 256), "vit_tiny": (0.003, 4096)}[model]
    assert rec["recipe"]["lr"] == pytest.approx(reference[0] * 4 * accum * 2 / reference[1])
    assert "lr" not in rec["fix_hp"]
    # a run stopped at --max-steps is throughput only: its row shows no acc
    assert rec["recipe_complete"] is False and "short run" in proc.stdout
    # common.make_dataset's images, not ImageNet: every row on them says so
    assert rec["data_source"] == "generated" and "[generated data;" in proc.stdout


def test_a_few_steps_on_an_easy_dataset_lower_the_loss(dataset, tmp_path):
    # the zero-initialised head starts our ViT at loss ln(classes) = ln 4; the recipe's
    # lr as given (scaled to a global batch of 16 it would be 4096/16 times smaller)
    out = tmp_path / "runs"
    proc = run_script(["vit/train.py", "--model", "vit_tiny", "--data-dir", dataset,
                       "--epochs", 2, "--image-size", 64, "--batch-size", 16, "--grad-accum", 1,
                       "--lr", 0.003, "--workers", 1,
                       "--warmup-steps", 1, "--target-acc", 101, "--out", out])
    assert proc.returncode == 0, proc.stderr[-3000:]
    evals = only_record(out)["evals"]
    assert evals[-1]["loss"] < 0.8 * math.log(4)
    assert evals[-1]["top1"] > 50  # chance is 25
