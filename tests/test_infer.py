"""The inference scripts end to end, weights loading, and seed 001's table."""
import json
import os
import pickle
import sys
import time

import pytest
import torch
import torchvision
from conftest import run_script
from test_report import cells
from test_resnet50 import only_record

from bit.model import bit, save_npz
from common import data, dist, infer_loop, tables
from common.precision import PRECISIONS
from vit.model import vit_tiny

HERE = os.path.dirname(os.path.abspath(__file__))
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
    # the seed's latency: per image on one device
    assert f["latency_s"] == pytest.approx(rec["world_size"] / f["p_infer_core"])
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
    (lambda p, w: p.write_text("not a weights file"), "not a readable PyTorch file"),
    (lambda p, w: p.write_bytes(w["mobilenetv2"].read_bytes()), "has no 'conv1.weight'"),
    (lambda p, w: torch.save({"fc.weight": Payload()}, p), "refused"),
    (lambda p, w: p.write_bytes(pickle.dumps(Payload())), "refused"),
    (lambda p, w: torch.jit.save(torch.jit.script(torchvision.models.resnet50(num_classes=4)), p),
     "a TorchScript archive (torch.jit.save), not a state dict"),
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
    lines = tables.infer_table(records, lang="zh").splitlines()
    assert cells(lines[0])[0] == ["配置", "precision", "bs", "e2e_time", "p_val_whole",
                                  "p_val_core", "p_infer_whole", "p_infer_core", "latency",
                                  "acc(验证/推理)", "mem"]
    assert cells("\n".join(lines[2:])) == cells(SEED_001_ROWS)


def test_an_engine_slower_than_eager_says_so_in_its_row():
    rec = seed_infer_record("fp32", 474.4, 1487.3, 2653.2, 1560.3, 2000.0, 76.20, 76.19, 28.86)
    rec["figures"]["engine_slower"] = "engine slower than eager: 2000.0 against 2653.2 img/s"
    row = tables.infer_row(rec)
    assert row[7] == "2000.0 (slower than eager 2653.2)"
    del rec["figures"]["engine_slower"]
    assert tables.infer_row(rec)[7] == "2000.0"


def test_latency_tflops_and_mfu_are_per_device(tmp_path):
    """Every batch takes 20 ms on each rank: one device serves 4 images per 20 ms
    whether 1 or 2 of them run, so its latency, TFLOP/s and MFU do not change."""
    figures = {}
    for n in (1, 2):
        out = tmp_path / f"{n}.json"
        proc = run_script([os.path.join(HERE, "infer_per_device.py"), out], nproc=n)
        assert proc.returncode == 0, proc.stderr[-3000:]
        figures[n] = json.loads(out.read_text())
    one, two = figures[1], figures[2]
    assert two["world_size"] == 2 and two["images"] == 2 * one["images"]
    assert two["p_infer_core"] == pytest.approx(2 * one["p_infer_core"], rel=0.25)
    assert one["latency_s"] == pytest.approx(0.005, rel=0.25)
    assert two["latency_s"] == pytest.approx(one["latency_s"], rel=0.25)
    assert two["tflops"] == pytest.approx(one["tflops"], rel=0.25)
    assert two["mfu"] == pytest.approx(one["mfu"], rel=0.25)
    assert one["mfu"] == pytest.approx(one["tflops"] / 1.0)  # the test's 1 TFLOP/s peak
    assert one["peak_source"] == "test" and one["peak_tflops"] == 1.0


class LoggedDecode:
    """The dataset's image reader, writing (clock, path) of each decode to a file, so
    that the loader's worker processes report theirs too."""

    def __init__(self, read, log):
        self.read, self.log = read, log

    def __call__(self, path):
        with open(self.log, "a") as f:
            f.write(f"{time.perf_counter()} {path}\n")
        return self.read(path)


class LoggedShapes(torch.nn.Module):
    """A tiny classifier that notes (clock, batch size) of each call."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, stride=4),
                                       torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        self.calls = []

    def forward(self, x):
        self.calls.append((time.perf_counter(), x.shape[0]))
        return self.net(x)


def test_a_timed_pass_holds_the_pass_and_nothing_else(dataset, tmp_path):
    """Two passes over 20 images in batches of 3 (so a last batch of 2), with the loader
    of a real run (2 persistent workers, prefetching): inside each pass every image is
    decoded once, nothing is decoded outside the passes, and every batch size a pass
    runs was warmed up before its clock started."""
    run = dist.setup("cpu")
    log = tmp_path / "decodes.txt"
    val = data.image_folder(dataset, "val", data.eval_transform(32))
    val.loader = LoggedDecode(val.loader, log)
    loader = data.eval_loader(val, batch_size=3, workers=2, run=run)
    normalize = data.normalizer(data.IMAGENET_MEAN, data.IMAGENET_STD, "cpu")
    model = LoggedShapes().eval()
    before = 0.0
    for _ in range(2):  # the validation pass, then the engine's
        result = infer_loop.timed_pass(model, loader, run, normalize, warmup_batches=1,
                                       image_size=32)
        t0, t1 = result["window"]
        decoded = [line.split(" ", 1) for line in log.read_text().splitlines()]
        inside = [path for t, path in decoded if t0 <= float(t) <= t1]
        assert result["images"] == 20 and sorted(inside) == sorted(p for p, _ in val.samples)
        warmed = {bs for t, bs in model.calls if before <= t < t0}
        timed = {bs for t, bs in model.calls if t0 <= t <= t1}
        assert timed == {3, 2} and timed <= warmed
        before = t1
    assert len(log.read_text().splitlines()) == 2 * 20


@pytest.mark.parametrize("precision, tf32_off, dtype", [("fp32", True, torch.float32),
                                                         ("fp16", True, torch.float16),
                                                         ("tf32", False, torch.float32)])
def test_tensorrt_runs_tf32_only_when_asked(monkeypatch, precision, tf32_off, dtype):
    """TensorRT allows TF32 unless told not to: --precision fp32 is fp32 there too."""
    import types
    compiled = {}
    monkeypatch.setitem(sys.modules, "torch_tensorrt", types.ModuleType("torch_tensorrt"))
    monkeypatch.setattr(torch, "compile", lambda model, **kw: compiled.update(kw) or model)
    run = types.SimpleNamespace(device=types.SimpleNamespace(type="cuda"),
                                precision=PRECISIONS[precision])
    _, options = infer_loop.build_engine(torch.nn.Identity(), "tensorrt", run)
    assert compiled["backend"] == "torch_tensorrt"
    assert compiled["options"]["disable_tf32"] is tf32_off
    assert compiled["options"]["enabled_precisions"] == {dtype}
    assert options["disable_tf32"] is tf32_off  # and the record says so


def test_frozen_engine_folds_the_weights_and_agrees_with_eager():
    """--engine compile freezes the weights while it builds, and only then."""
    run = dist.setup("cpu")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8),
                                torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(8, 5)).eval()
    x = torch.randn(6, 3, 16, 16)
    engine, options = infer_loop.build_engine(model, "compile", run)
    assert options == {"backend": "inductor", "mode": "default", "freezing": True}
    frozen = torch._inductor.config.freezing
    with infer_loop.building(options), torch.inference_mode():
        assert torch._inductor.config.freezing
        out = engine(x)
    assert torch._inductor.config.freezing == frozen
    with torch.inference_mode():
        assert torch.equal(out.argmax(1), model(x).argmax(1))
        assert torch.allclose(out, model(x), atol=1e-4)
    _, unfrozen = infer_loop.build_engine(model, "compile", run, freeze=False)
    assert unfrozen["freezing"] is False
