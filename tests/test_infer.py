"""The inference scripts end to end, weights loading, and seed 001's table."""
import os
import pickle

import pytest
import torch
import torchvision
from conftest import run_script
from test_report import cells
from test_resnet50 import only_record

from bit.model import bit, save_npz
from common import report
from vit.model import vit_tiny

QUICK = ["--image-size", 32, "--batch-size", 3, "--workers", 1, "--latency-calls", 5,
         "--warmup-batches", 1]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """State dicts for 4 classes, written as a user would download them."""
    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    files = {}
    for name, model in (("resnet50", torchvision.models.resnet50(num_classes=4)),
                        ("mobilenetv2", torchvision.models.mobilenet_v2(num_classes=4)),
                        ("vit_tiny", vit_tiny(image_size=64, num_classes=4))):
        files[name] = folder / f"{name}.pth"
        torch.save(model.state_dict(), files[name])
    return files


def check_record(rec, images=20):
    f = rec["figures"]
    assert rec["case"] == "infer" and f["images"] == images
    assert f["p_val_core"] >= f["p_val_whole"] > 0
    assert f["p_infer_core"] >= f["p_infer_whole"] > 0
    assert f["latency_s"] == pytest.approx(1 / f["p_infer_core"])
    assert set(f["latency_b1_ms"]) == {"p50", "p90", "p99"}
    assert f["build_s"] >= 0 and f["flops_per_image"] > 0 and f["mem_peak_gib"] > 0
    # the same weights give the same top-1 in the framework and in the engine
    assert f["acc_val"] == f["acc_infer"] is not None


def test_resnet50_two_ranks_eager_engine(dataset, weights, tmp_path):
    proc = run_script(["resnet50/infer.py", "--data-dir", dataset, "--weights",
                       weights["resnet50"], "--engine", "eager", *QUICK, "--out", tmp_path],
                      nproc=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = only_record(tmp_path)
    check_record(rec)
    assert rec["config"] == "1x2" and rec["weights"] == str(weights["resnet50"])
    # progress from rank 0 only: a header with the settled values, each pass's last line
    out = proc.stdout
    assert out.count("resnet50 inference on 2 x CPU (1x2") == 1
    assert "  batch 3 per device, 6 global; precision fp32, channels-last\n" in out
    assert f"  data: {dataset}: 4 classes, 20 val images\n" in out
    assert out.count("validation pass (eager): 20 images in ") == 1
    assert out.count("engine 'eager': building for batches of [1, 3] ...") == 1
    assert out.count("inference pass (eager): 20 images in ") == 1
    assert "config:" not in out  # the whole config is in the record, and under --debug


def test_vit_compiled_engine_matches_eager(dataset, weights, tmp_path):
    # our ViT at 32 px loads the 64 px state dict: position embeddings are resized
    proc = run_script(["vit/infer.py", "--model", "vit_tiny", "--data-dir", dataset,
                       "--weights", weights["vit_tiny"], "--engine", "compile", *QUICK,
                       "--out", tmp_path])
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = only_record(tmp_path)
    check_record(rec)
    assert rec["engine"] == "compile"


def test_bit_npz_two_ranks(dataset, tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "bit_tiny.npz"
    save_npz(bit("tiny", num_classes=4, zero_head=False), path)
    proc = run_script(["bit/infer.py", "--model", "tiny", "--data-dir", dataset, "--weights",
                       path, "--engine", "eager", *QUICK, "--out", tmp_path / "runs"], nproc=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = only_record(tmp_path / "runs")
    check_record(rec)
    assert rec["model"] == "tiny" and rec["config"] == "1x2"


def test_mobilenetv2_with_weights(dataset, weights, tmp_path):
    proc = run_script(["mobilenetv2/infer.py", "--data-dir", dataset, "--weights",
                       weights["mobilenetv2"], "--engine", "eager", "--channels-last", *QUICK,
                       "--out", tmp_path])
    assert proc.returncode == 0, proc.stderr[-3000:]
    check_record(only_record(tmp_path))


def test_without_weights_is_speed_only(tmp_path):
    proc = run_script(["vit/infer.py", "--model", "vit_tiny", "--synthetic",
                       "--synthetic-batches", 2, "--engine", "eager", *QUICK, "--out", tmp_path])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "no --weights: random weights" in proc.stdout
    rec = only_record(tmp_path)
    assert rec["weights"] == "random" and rec["figures"]["acc_val"] is None
    assert rec["figures"]["images"] == 2 * 3


class Payload:
    """A pickle that would run code when loaded without weights_only."""

    def __reduce__(self):
        return (os.system, ("echo owned",))


@pytest.mark.parametrize("make, message", [
    (lambda p, w: None, "no such file"),
    (lambda p, w: p.write_bytes(w["resnet50"].read_bytes()[:5000]), "not a readable PyTorch file"),
    (lambda p, w: p.write_bytes(w["mobilenetv2"].read_bytes()), "has no 'conv1.weight'"),
    (lambda p, w: torch.save({"fc.weight": Payload()}, p), "refused"),
    (lambda p, w: p.write_bytes(pickle.dumps(Payload())), "refused"),
])
def test_bad_weights_are_one_line_errors(weights, tmp_path, make, message):
    path = tmp_path / "weights.pth"
    make(path, weights)
    proc = run_script(["resnet50/infer.py", "--synthetic", "--weights", path, "--num-classes", 4,
                       "--engine", "eager", *QUICK])
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in proc.stderr and str(path) in proc.stderr
    assert "Traceback" not in proc.stderr and "owned" not in proc.stdout


def test_wrong_class_count_names_the_key_and_shapes(weights, tmp_path):
    proc = run_script(["resnet50/infer.py", "--synthetic", "--weights", weights["resnet50"],
                       "--engine", "eager", *QUICK])
    assert proc.returncode == 2
    assert "'fc.weight' is (4, 2048), the model's is (1000, 2048)" in proc.stderr


# seed 001 (ResNet50 inference, A100, TensorRT), as its table prints them
SEED_001_ROWS = """
| nvidia A100 | fp16      | 256  | 585.8    | 1353.3      | 4390.9     | 1384.5        | 11710.0      | 85μs | 76.17/76.21 | 19.88/40.0 |
| nvidia A100 | fp32      | 256  | 474.4    | 1487.3      | 2653.2     | 1560.3        | 6091.6  | 164μs   | 76.20/76.19 | 28.86/40.0 |
"""


def seed_infer_record(precision, e2e, val_whole, val_core, inf_whole, inf_core, acc_val,
                      acc_infer, mem):
    return {"case": "infer", "model": "resnet50", "precision": precision, "batch_size": 256,
            "device": {"vendor": "NVIDIA", "label": "A100"}, "world_size": 1, "nodes": 1,
            "procs_per_node": 1,
            "figures": {"e2e_time": e2e, "p_val_whole": val_whole, "p_val_core": val_core,
                        "p_infer_whole": inf_whole, "p_infer_core": inf_core,
                        "latency_s": 1 / inf_core, "acc_val": acc_val, "acc_infer": acc_infer,
                        "mem_peak_gib": mem, "mem_total_gib": 40.0}}


def test_seed_001_table_from_records():
    records = [seed_infer_record("fp16", 585.8, 1353.3, 4390.9, 1384.5, 11710.0, 76.17, 76.21, 19.88),
               seed_infer_record("fp32", 474.4, 1487.3, 2653.2, 1560.3, 6091.6, 76.20, 76.19, 28.86)]
    lines = report.infer_table(records, lang="zh").splitlines()
    assert cells(lines[0])[0] == ["配置", "precision", "bs", "e2e_time", "p_val_whole",
                                  "p_val_core", "p_infer_whole", "p_infer_core", "latency",
                                  "acc(验证/推理)", "mem"]
    assert cells("\n".join(lines[2:])) == cells(SEED_001_ROWS)
