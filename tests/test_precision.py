"""--precision is one table: the flags' choices, the peak keys and every use come from it."""
import re
import subprocess
import sys

import pytest
import torch
from conftest import ROOT

from common import bench, cli, dist, kinds, precision
from common.precision import PRECISIONS, Precision


def precision_choices(parser):
    (action,) = [a for a in parser._actions if a.dest == "precision"]
    return action.choices


def parsers():
    """(case, parser) of every entry point that takes --precision."""
    train = cli.train_parser("test", batch_size=2, global_batch=2, lr=0.1, epochs=1,
                             target_acc=0)
    return [("training", train), ("inference", cli.infer_parser("test")),
            ("training", bench.get_args_parser())]


def test_the_choices_and_the_peak_keys_are_as_before():
    assert [precision_choices(p) for _, p in parsers()] == [
        ("fp32", "tf32", "amp", "bf16"), ("fp32", "tf32", "fp16", "bf16"),
        ("fp32", "tf32", "amp", "bf16")]
    assert precision.peak_keys() == ("fp32", "tf32", "fp16", "bf16")


def test_a_name_added_to_the_table_alone_is_a_choice_and_a_peak_key(monkeypatch):
    monkeypatch.setitem(PRECISIONS, "fp8", Precision("fp8", True, False, "float8_e4m3fn",
                                                     None, True, False, "fp8"))
    monkeypatch.setitem(PRECISIONS, "int8", Precision("int8", False, True, None, "int8",
                                                      False, False, "int8"))
    for case, parser in parsers():
        assert ("fp8" in precision_choices(parser)) == (case == "training")
        assert ("int8" in precision_choices(parser)) == (case == "inference")
    assert precision.peak_tflops_arg("fp8=1979,int8=3958") == {"fp8": 1979.0, "int8": 3958.0}


@pytest.mark.parametrize("name, training, inference, autocast, model, scaled, tf32, peak", [
    ("fp32", True, True, None, torch.float32, False, False, "fp32"),
    ("tf32", True, True, None, torch.float32, False, True, "tf32"),
    ("amp", True, False, torch.float16, None, True, False, "fp16"),
    ("fp16", False, True, None, torch.float16, False, False, "fp16"),
    # training autocasts over fp32 weights; inference casts the whole model
    ("bf16", True, True, torch.bfloat16, torch.bfloat16, False, False, "bf16"),
])
def test_each_name_means_what_the_docstring_says(name, training, inference, autocast, model,
                                                 scaled, tf32, peak):
    p = PRECISIONS[name]
    assert (p.training, p.inference) == (training, inference)
    assert (p.autocast_dtype, p.model_dtype) == (autocast, model)
    assert (p.loss_scaling, p.tf32, p.peak_key) == (scaled, tf32, peak)
    row = re.search(rf"^    {name} +(.+?)  +(.+)$", precision.__doc__, re.M)
    assert row, f"{name} has no row in common/precision.py's docstring"
    in_training, in_inference = row.groups()
    assert (in_training != "not taken", in_inference != "not taken") == (training, inference)
    assert ("autocast" in in_training) == (autocast is not None)
    assert ("loss scaled" in in_training) == scaled


def test_the_device_peak_table_uses_the_peak_keys():
    keys = {key for entries in kinds.PEAK_TFLOPS.values() for _, _, table in entries
            for key in table}
    assert keys <= set(precision.peak_keys())


def test_the_table_is_read_without_torch():
    code = "import sys, common.cli, common.precision; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.stdout.strip() == "False", proc.stderr


def test_the_run_resolves_the_name_once_and_the_args_keep_it():
    args = cli.infer_parser("test").parse_args(["--synthetic", "--precision", "bf16",
                                                "--device", "cpu"])
    run = dist.start(args)
    assert run.precision is PRECISIONS["bf16"] and args.precision == "bf16"
