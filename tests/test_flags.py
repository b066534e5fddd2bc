"""Every flag of every entry point is checked before any work: a wrong value is one
line naming the flag and what it takes, exit 2, no traceback, in seconds."""
import argparse
import os
import subprocess
import sys
import time

import pytest
from conftest import ROOT, load_script, run_script

from common import bench, cases, cli, make_dataset, report
from common.errors import UserError

SCRIPTS = cases.scripts()


def script_parser(script):
    return load_script(script).get_args_parser()


def takes_a_value(action):
    return action.option_strings and action.nargs != 0 and action.dest != "help" \
        and action.help != argparse.SUPPRESS


def bad_value(action):
    """A value the flag must refuse, or None for a plain string checked at start-up."""
    if action.choices:
        return "no-such-choice"
    if hasattr(action.type, "refuses"):
        return action.type.refuses
    assert action.type is None, f"{action.option_strings[0]}: type {action.type} says not what it allows"
    return None


def one_error_line(capsys, call):
    with pytest.raises(SystemExit) as e:
        call()
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    return e.value.code, lines, err


def entry_points():
    """(name, parser, the positional arguments it needs) of every entry point."""
    for script in SCRIPTS:
        yield script, script_parser(script), ["--synthetic"]
    for module, positional in ((report, ["records"]), (make_dataset, ["data"]), (bench, [])):
        yield module.__name__, module.get_args_parser(), positional


def test_every_typed_flag_refuses_a_wrong_value_in_one_line(capsys):
    tried = 0
    for name, parser, positional in entry_points():
        for action in filter(takes_a_value, parser._actions):
            value = bad_value(action)
            if value is None:
                continue
            flag = action.option_strings[0]
            code, lines, err = one_error_line(
                capsys, lambda: parser.parse_args([*positional, flag, value]))
            assert code == 2 and len(lines) == 1, (name, flag, err)
            assert f"argument {flag}" in lines[0] and "Traceback" not in err, (name, flag, err)
            tried += 1
    assert tried > 150  # about 20 flags in each of 11 entry points


def parsed(script, *argv):
    parser = script_parser(script)
    return parser, parser.parse_args([*map(str, argv)])


@pytest.mark.parametrize("script, argv, message", [
    ("resnet50/train.py", ["--synthetic", "--max-steps", 3, "--warmup-steps", 5],
     "--warmup-steps 5: the run has only 3 optimizer steps (--max-steps 3), none left to "
     "time after the warm-up; give more --max-steps or --warmup-steps below 3"),
    ("resnet50/train.py", ["--synthetic", "--max-steps", 5, "--warmup-steps", 5],
     "only 5 optimizer steps (--max-steps 5)"),
    ("mobilenetv2/train.py", ["--synthetic", "--epochs", 1, "--synthetic-steps", 4],
     "only 4 optimizer steps (--epochs 1 x 4 steps per epoch (--synthetic-steps)), none left "
     "to time after the warm-up; give more --epochs or --warmup-steps below 4"),
    ("bit/train.py", ["--synthetic", "--total-steps", 3], "(--total-steps 3)"),
    ("vit/train.py", ["--synthetic", "--grad-accum", 8, "--synthetic-steps", 4],
     "--grad-accum 8: more than the 4 batches of one epoch (--synthetic-steps); use a "
     "--grad-accum of 4 or less"),
    ("vit/train.py", ["--synthetic", "--image-size", 100],
     "--image-size 100: not a multiple of vit_b_16's patch size 16; use e.g. --image-size 96"),
    ("vit/infer.py", ["--synthetic", "--image-size", 8], "use e.g. --image-size 16"),
    ("resnet50/infer.py", ["--synthetic", "--compile-mode", "max-autotun"],
     "--compile-mode max-autotun: unknown to torch.compile; choose one of default"),
    ("resnet50/infer.py", ["--synthetic", "--compile-mode", "default", "--engine", "eager"],
     "--compile-mode default: only for --engine compile"),
    ("resnet50/train.py", ["--synthetic", "--compile", "--warmup-steps", 0],
     "--compile: compiling happens in the first step"),
    ("resnet50/train.py", ["--synthetic", "--profile", "--warmup-steps", 2],
     "give --warmup-steps 3 or more"),
    ("resnet50/train.py", ["--synthetic", "--resume", "/nowhere/x.pt"],
     "--resume /nowhere/x.pt: no such file"),
])
def test_cross_flag_rules_are_checked_at_start_up(script, argv, message, tmp_path):
    parser, args = parsed(script, *argv, "--out", tmp_path)
    with pytest.raises(UserError) as e:
        cli.check_flags(args, parser)
    assert message in str(e.value)


@pytest.mark.parametrize("where", ["under a file", "a file"])
def test_out_that_cannot_be_written_is_found_before_any_work(tmp_path, where):
    (tmp_path / "f").write_text("")
    out = tmp_path / "f" / "runs" if where == "under a file" else tmp_path / "f"
    parser, args = parsed("resnet50/train.py", "--synthetic", "--out", out)
    with pytest.raises(UserError, match=rf"--out {out}: cannot be written: "):
        cli.check_flags(args, parser)


# a sample through the real scripts: parse errors, start-up rules, the other tools
SAMPLE = [
    (["resnet50/train.py", "--synthetic", "--print-freq", 0], "argument --print-freq: '0'"),
    (["resnet50/train.py", "--synthetic", "--max-steps", 2], "--warmup-steps 5: the run has only 2"),
    (["vit/infer.py", "--synthetic", "--image-size", 33], "not a multiple of vit_b_16's patch size"),
    (["bit/infer.py", "--synthetic", "--compile-mode", "fast"], "unknown to torch.compile"),
    (["resnet50/train.py", "--synthetic", "--out", "/proc/version/runs"],
     "--out /proc/version/runs: cannot be written: a part of the path is a file"),
    (["-m", "common.report", "/nowhere/records"], "/nowhere/records: no such file or directory"),
    (["-m", "common.make_dataset", "/tmp/d", "--classes", 0], "argument --classes: '0'"),
]


@pytest.mark.parametrize("argv, message", SAMPLE, ids=[" ".join(map(str, a[:3])) for a, _ in SAMPLE])
def test_through_the_real_scripts_one_line_exit_2_in_seconds(argv, message, tmp_path):
    if "--out" not in argv and "-m" not in argv:
        argv = [*argv, "--out", tmp_path]
    t0 = time.monotonic()
    proc = run_script(argv)
    assert proc.returncode == 2 and proc.stdout == "", proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert time.monotonic() - t0 < 60  # an import of torch, nothing built, on a busy machine


def test_a_batch_too_small_for_batch_norm_is_one_line(tmp_path):
    proc = run_script(["resnet50/train.py", "--synthetic", "--image-size", 32, "--batch-size", 1,
                       "--num-classes", 10, "--max-steps", 2, "--warmup-steps", 1,
                       "--out", tmp_path])
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: --batch-size 1 at --image-size 32: batch norm needs more than one value per "
        "channel to train; give a larger --batch-size or --image-size"]


@pytest.mark.parametrize("script, args, says", [
    # found before the validation pass, not after it
    ("resnet50/infer.py", ["--engine", "tensorrt"],
     "--engine tensorrt: torch_tensorrt is not installed here"),
    # the recipe's accumulation, not a flag the user gave, is named with its fix
    ("vit/train.py", ["--model", "vit_tiny", "--image-size", 32, "--batch-size", 8],
     "give --grad-accum 1 for a throughput run"),
])
def test_mistakes_found_by_a_new_user_are_one_line(dataset, script, args, says):
    proc = run_script([script, "--data-dir", dataset, "--workers", 1, *args])
    assert proc.returncode == 2 and says in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_plots_into_a_file_is_one_line(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    proc = subprocess.run([sys.executable, "-m", "common.report", os.path.join(ROOT, "results",
                          "reference"), "--plots", str(afile / "p")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--plots" in proc.stderr and "Traceback" not in proc.stderr
