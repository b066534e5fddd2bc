"""bit/train.py end to end, as a user runs it, and the pieces of its recipe."""
import json
import math
import os
import re

import numpy as np
import pytest
import torch
from conftest import run_script
from test_resnet50 import only_record

from bit.model import bit, save_npz
from bit.train import hyperrule_lr_factor, hyperrule_schedule
from common import make_dataset

HERE = os.path.dirname(os.path.abspath(__file__))
# 64 px crops from 68 px resizes: the recipe's 480 from 512, scaled down
QUICK = ["--model", "tiny", "--image-size", 64, "--workers", 1, "--print-freq", 1,
         "--warmup-steps", 2]


@pytest.fixture(scope="module")
def odd_dataset(tmp_path_factory):
    """3 classes x (16 train + 3 val): 9 val images, 5 + 4 over 2 ranks, so with batch 4
    one rank runs two evaluation batches and the other one."""
    return make_dataset.write(str(tmp_path_factory.mktemp("odd")), classes=3,
                              train_per_class=16, val_per_class=3, size=64)


def weights_file(path, num_classes, seed=0):
    """A random tiny BiT in the official .npz layout, with a non-zero head."""
    torch.manual_seed(seed)
    save_npz(bit("tiny", num_classes=num_classes, zero_head=False), path)
    return path


def test_hyperrule_lr_warms_up_then_steps_down_on_global_steps():
    factor = lambda step: hyperrule_lr_factor(  # noqa: E731
        step, warmup_steps=500, decay_steps=(3000, 6000, 9000))
    assert [factor(s) for s in (0, 250, 499, 500, 3000)] == [0, 0.5, 0.998, 1, 1]
    assert factor(3001) == pytest.approx(0.1) and factor(6000) == pytest.approx(0.1)
    assert factor(6001) == pytest.approx(0.01) and factor(9001) == pytest.approx(0.001)
    # stepped once per optimizer step, the lr of step k is 0.003 x factor(k)
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.003)
    scheduler = hyperrule_schedule(optimizer, warmup_steps=500, decay_steps=(3000, 6000, 9000))
    lrs = []
    for _ in range(10000):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == 0 and lrs[250] == pytest.approx(0.0015) and lrs[500] == 0.003
    assert {round(lr, 9) for lr in lrs[500:3001]} == {0.003}
    assert {round(lr, 9) for lr in lrs[3001:6001]} == {0.0003}
    assert {round(lr, 9) for lr in lrs[9001:]} == {0.000003}


def test_fine_tune_two_ranks_torchrun(dataset, tmp_path):
    # the checkpoint's 1000-class head does not fit 4 classes: it stays zero
    weights = weights_file(tmp_path / "tiny.npz", num_classes=1000)
    out = tmp_path / "runs"
    proc = run_script(["bit/train.py", "--data-dir", dataset, *QUICK, "--batch-size", 8,
                       "--weights", weights, "--warmup-lr-steps", 2, "--lr-decay-steps", "3,6",
                       "--total-steps", 8, "--out", out], nproc=2)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    rec = only_record(out)
    f = rec["figures"]
    assert rec["model"] == "tiny" and rec["config"] == "1x2"
    assert rec["args"]["weights"] == str(weights)
    assert f"weights: {weights} (head zero, 4 classes)" in proc.stdout
    # 96 images: 6 steps per epoch; the run ends at --total-steps in its second epoch
    assert f["steps"] == 8 and f["epochs_run"] == 2 and f["stopped"] == "max_steps"
    assert f["images"] == (8 - 2) * 8 * 2
    assert f["p_core"] >= f["p_train"] >= f["p_whole"] > 0
    assert f["acc"] is not None and rec["evals"][-1]["images"] == 20
    assert rec["fix_hp"] == {"bs": 8, "img": 64, "warmup_lr": 2, "lr_decay": [3, 6],
                             "steps": 8}
    # a zero head predicts every class alike: the first loss is ln 4, MixUp or not
    progress = re.findall(r"epoch (\d) step (\d+)/8 loss (\S+) lr (\S+)", proc.stdout)
    assert float(progress[0][2]) == pytest.approx(math.log(4), abs=1e-4)
    # the lr after step s, counted over both epochs, never restarted
    lrs = {int(step): float(lr) for _, step, _, lr in progress}
    # the recipe's 0.003 belongs to a global batch of 128; this run's is 2 x 8 = 16
    base = rec["recipe"]["lr"]
    assert base == pytest.approx(0.003 * 16 / 128)
    assert lrs == pytest.approx({s: base * hyperrule_lr_factor(s, warmup_steps=2,
                                                                decay_steps=(3, 6))
                                 for s in range(1, 9)}, rel=1e-3)
    assert lrs[7] == pytest.approx(base * 0.01) and progress[6][0] == "2"


def test_fsdp_and_checkpointing_evaluate_like_one_rank(odd_dataset, tmp_path):
    """Same weights (lr 0), 9 val images: FSDP on 2 ranks, where one rank runs an extra
    uncounted forward so that every collective is matched, and 1 plain rank agree."""
    weights = weights_file(tmp_path / "tiny3.npz", num_classes=3)
    common = ["--data-dir", odd_dataset, *QUICK, "--batch-size", 4, "--max-steps", 3,
              "--lr", 0, "--weights", weights]
    sharded = run_script(["bit/train.py", *common, "--fsdp", "--activation-checkpointing",
                          "--out", tmp_path / "fsdp"], nproc=2, timeout=240)
    assert sharded.returncode == 0, sharded.stdout[-2000:] + sharded.stderr[-3000:]
    single = run_script(["bit/train.py", *common, "--out", tmp_path / "one"])
    assert single.returncode == 0, single.stdout[-2000:] + single.stderr[-3000:]
    assert "(head loaded)" in sharded.stdout
    fsdp, one = only_record(tmp_path / "fsdp"), only_record(tmp_path / "one")
    assert fsdp["args"]["fsdp"] and fsdp["args"]["activation_checkpointing"]
    assert fsdp["figures"]["acc"] is not None and fsdp["figures"]["images"] == 1 * 4 * 2
    # fused SGD has no sharding rule for DTensor shards: auto leaves them to torch
    assert fsdp["figures"]["optimizer"]["impl"] != "fused"
    assert one["figures"]["optimizer"]["impl"] == "fused"
    e_fsdp, e_one = fsdp["evals"][-1], one["evals"][-1]
    assert e_fsdp["images"] == e_one["images"] == 9
    assert e_fsdp["top1"] == e_one["top1"] and e_fsdp["top5"] == e_one["top5"]
    assert e_fsdp["loss"] == pytest.approx(e_one["loss"], rel=1e-5)


def test_fsdp_with_accumulation_and_clipping_trains_like_ddp(tmp_path):
    out = tmp_path / "result.json"
    proc = run_script([os.path.join(HERE, "sharded_steps.py"), out], nproc=2, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["names_kept"]
    assert result["moved"] > 1e-3 and result["apart"] < 1e-6
    # under bf16 the shards are gathered in bf16: half the traffic, no cast per layer
    assert result["gathered"] == {"fp32": ["torch.float32"], "bf16": ["torch.bfloat16"]}


def test_fsdp_mixed_precision_follows_the_precision():
    from common.precision import PRECISIONS
    from common.train_loop import fsdp_dtypes
    fp32, tf32, amp, bf16 = (PRECISIONS[name] for name in ("fp32", "tf32", "amp", "bf16"))
    assert fsdp_dtypes(fp32) == fsdp_dtypes(tf32) == {}
    assert fsdp_dtypes(bf16) == {"param_dtype": torch.bfloat16, "reduce_dtype": torch.float32}
    assert fsdp_dtypes(amp) == {"param_dtype": torch.float16, "reduce_dtype": torch.float32}


def test_without_weights_warns_and_records_random(tmp_path):
    out = tmp_path / "runs"
    proc = run_script(["bit/train.py", "--synthetic", *QUICK, "--batch-size", 2,
                       "--num-classes", 5, "--max-steps", 3, "--out", out])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "NO --weights: FINE-TUNING FROM RANDOM WEIGHTS" in proc.stderr
    assert only_record(out)["args"]["weights"] == "random"


def checkpoint_missing_a_key(path):
    weights_file(path, num_classes=1000)
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files if k != "resnet/block2/unit01/b/group_norm/beta"}
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("flags, message", [
    (lambda d: ["--weights", d / "absent.npz"],
     "--weights {d}/absent.npz: no such file; download "
     "https://storage.googleapis.com/bit_models/tiny.npz"),
    (lambda d: ["--weights", checkpoint_missing_a_key(d / "cut.npz")],
     "--weights {d}/cut.npz: not a BiT checkpoint of --model tiny (missing key "
     "'resnet/block2/unit01/b/group_norm/beta' in BiT checkpoint); download"),
    (lambda d: ["--fsdp"], "--fsdp: shards the model over ranks"),
], ids=["absent file", "key missing", "fsdp on one process"])
def test_user_errors_are_one_line(tmp_path, flags, message):
    proc = run_script(["bit/train.py", "--synthetic", *QUICK, *flags(tmp_path)])
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert message.format(d=tmp_path) in lines[0]
