"""The device shim: labels, selection, precision checks and peak FLOP/s lookup, on CPU."""
import argparse

import pytest
import torch

from common import cli, device, dist, kinds
from common.errors import UserError
from common.precision import PRECISIONS, peak_tflops_arg
from conftest import run_script
from test_resnet50 import only_record


@pytest.mark.parametrize("name, vendor, label", [
    ("NVIDIA A100-SXM4-40GB", "NVIDIA", "A100"),
    ("NVIDIA A100-PCIE-40GB", "NVIDIA", "A100"),
    ("NVIDIA H100 80GB HBM3", "NVIDIA", "H100"),
    ("Tesla V100-SXM2-32GB", "NVIDIA", "V100"),
    ("Iluvatar BI-V100", "Iluvatar", "BI-V100"),
    ("NVIDIA GeForce RTX 4090", "NVIDIA", "RTX 4090"),
    ("AMD Instinct MI300X", "AMD", "MI300X"),
    ("MetaX C550", "MetaX", "C550"),
    ("K100_AI", "Hygon", "K100_AI"),
    ("Moore Threads MTT S4000", "Moore Threads", "MTT S4000"),
    ("Intel(R) Data Center GPU Max 1550", "Intel", "GPU Max 1550"),
    ("Kunlunxin P800", "Kunlunxin", "P800"),
    ("Ascend910B3", "Ascend", "910B3"),
])
def test_short_label_drops_the_vendor(name, vendor, label):
    # the chips behind the cuda api share the cuda kind and its prefixes
    kind = next((k for k in kinds.KINDS if k.vendor == vendor), kinds.KINDS[0])
    assert device.short_label(name, (vendor, *kind.label_prefixes)) == label


def test_cpu_is_always_there():
    d = device.select("cpu")
    assert d.type == "cpu" and d.backend == "gloo" and d.label == "CPU"
    assert d.total_memory() > d.peak_memory() > 0
    assert d.timing_event() is None and not d.pin_memory
    assert device.local_device_count("cpu") == 1
    # a cpu run records no accelerator software, whatever the torch build carries
    assert d.stack() == {"vendor": "CPU"} and d.vendor == "CPU"


def test_auto_picks_the_first_available_kind():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert device.select("auto").type == expected


def test_unknown_or_absent_device_is_a_one_line_error():
    with pytest.raises(UserError, match="--device tpu: unknown device type"):
        device.select("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="--device cuda: no NVIDIA device"):
            device.select("cuda")


def test_unsupported_precision_names_the_flag_and_choices():
    d = device.select("cpu")
    with pytest.raises(UserError, match=r"--precision tf32: CPU .* choose one of fp32, bf16"):
        d.set_precision(PRECISIONS["tf32"])


def test_fp32_means_no_tf32():
    d = device.select("cpu")
    d.set_precision(PRECISIONS["fp32"])
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    assert torch.get_float32_matmul_precision() == "highest"


def test_a_run_tunes_kernels_to_fixed_shapes_apart_from_its_precision(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    device.select("cpu").set_precision(PRECISIONS["fp32"])
    assert not torch.backends.cudnn.benchmark  # the math mode only
    run = dist.start(argparse.Namespace(device="cpu", dist_timeout=60, precision="fp32",
                                        seed=0))
    assert run.precision is PRECISIONS["fp32"] and torch.backends.cudnn.benchmark


def named(name):
    """The cpu device dressed as a cuda chip of that name, its vendor told as select's."""
    d = device.select("cpu")
    d.name, d.vendor = name, device.cuda_vendor(name)
    return d


@pytest.mark.parametrize("name, precision, entry, tflops", [
    # names as torch.cuda.get_device_name gives them; each variant its own data sheet
    ("NVIDIA H100 80GB HBM3", "bf16", "H100 SXM", 989.4),
    ("NVIDIA H100 PCIe", "amp", "H100 PCIe", 756),
    ("NVIDIA H100 NVL", "bf16", "H100 NVL", 835.5),
    ("NVIDIA H200", "tf32", "H200 SXM", 494.7),
    ("NVIDIA H200 NVL", "fp16", "H200 NVL", 835.5),
    ("NVIDIA H800", "bf16", "H800 SXM", 989.4),
    ("NVIDIA H800 PCIe", "bf16", "H800 PCIe", 756),
    ("NVIDIA GH200 480GB", "bf16", "GH200", 989.4),
    ("NVIDIA H20", "bf16", "H20", 148),
    ("NVIDIA A100-SXM4-40GB", "tf32", "A100 SXM", 156),
    ("NVIDIA A100 80GB PCIe", "fp32", "A100 PCIe", 19.5),
    ("NVIDIA A100-PCIE-40GB", "fp16", "A100 PCIe", 312),
    ("NVIDIA A800-SXM4-80GB", "bf16", "A800 SXM", 312),
    ("NVIDIA A10", "fp16", "A10", 125),
    ("NVIDIA L40S", "bf16", "L40S", 362),
    ("NVIDIA L40", "bf16", "L40", 181),
    ("NVIDIA L4", "fp32", "L4", 30.3),
    ("Tesla V100-SXM2-32GB", "amp", "V100 SXM", 125),
    ("Tesla V100-PCIE-16GB", "amp", "V100 PCIe", 112),
    ("Tesla V100S-PCIE-32GB", "fp32", "V100S PCIe", 16.4),
])
def test_peak_from_the_device_name_most_specific_first(name, precision, entry, tflops):
    d = named(name)
    precision = PRECISIONS[precision]
    assert d.peak(precision) == (pytest.approx(tflops * 1e12), f"table: {entry}")


def test_no_peak_rather_than_a_guess():
    d = device.select("cpu")
    fp32, bf16 = PRECISIONS["fp32"], PRECISIONS["bf16"]
    assert d.peak(fp32)[0] is None
    d = named("Tesla V100-SXM2-32GB")
    assert d.peak(bf16)[0] is None  # no bf16 on the data sheet: not another entry's


@pytest.mark.parametrize("name", ["Iluvatar BI-V100", "MR-V100"])
def test_another_vendors_chip_is_not_matched_to_an_nvidia_entry(name):
    d = named(name)
    assert d.vendor == "Iluvatar"
    for precision in ("fp32", "fp16"):
        tflops, why = d.peak(PRECISIONS[precision])
        assert tflops is None
        assert why.endswith(f"has no {precision} peak in the table; give --peak-tflops")


def test_autocast_and_scaler_follow_precision():
    d = device.select("cpu")
    with d.autocast(PRECISIONS["bf16"]):
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.bfloat16
    with d.autocast(PRECISIONS["fp32"]):
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.float32
    assert not d.grad_scaler(PRECISIONS["bf16"]).is_enabled()


def test_the_peak_says_where_it_came_from():
    d = device.select("cpu")
    fp32, amp, bf16 = (PRECISIONS[name] for name in ("fp32", "amp", "bf16"))
    assert d.peak(fp32) == (None, "CPU has no fp32 peak in the table; give --peak-tflops")
    assert d.peak(amp, {"fp16": 312.0}) == (312e12, "--peak-tflops")
    assert d.peak(bf16, {"all": 100.0}) == (100e12, "--peak-tflops")
    assert d.peak(bf16, {"fp32": 19.5})[0] is None  # given for another precision only
    d = named("NVIDIA A100-SXM4-40GB")
    assert d.peak(amp) == (pytest.approx(312e12), "table: A100 SXM")
    assert d.peak(fp32, {"fp32": 20.0}) == (20e12, "--peak-tflops")  # the flag wins


@pytest.mark.parametrize("text, peaks", [("312", {"all": 312.0}),
                                         ("fp16=312, fp32=19.5", {"fp16": 312.0, "fp32": 19.5})])
def test_peak_tflops_flag_values(text, peaks):
    assert peak_tflops_arg(text) == peaks


@pytest.mark.parametrize("text", ["amp=312", "fp16=", "-5", "fast"])
def test_a_bad_peak_tflops_is_one_line_and_exit_2(text, capsys):
    parser = cli.infer_parser("test")
    with pytest.raises(SystemExit) as stop:
        parser.parse_args(["--synthetic", "--peak-tflops", text])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert stop.value.code == 2 and "--peak-tflops" in err and "fp16=N" in err


def test_peak_tflops_gives_mfu_on_a_device_the_table_lacks(tmp_path):
    proc = run_script(["resnet50/train.py", "--synthetic", "--image-size", 32, "--batch-size", 2,
                       "--max-steps", 2, "--warmup-steps", 1, "--monitor-interval", 0,
                       "--peak-tflops", "fp32=0.5,bf16=2", "--out", tmp_path])
    assert proc.returncode == 0, proc.stderr[-3000:]
    fig = only_record(tmp_path)["figures"]
    assert (fig["peak_tflops"], fig["peak_source"]) == (0.5, "--peak-tflops")
    assert fig["mfu"] == pytest.approx(fig["tflops"] / 0.5)
