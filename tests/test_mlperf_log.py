"""The MLPerf log beside a training record: MLPerf's own compliance checker accepts it
(ResNet50 under MLPerf's rules, MobileNetV2 under the suite's rules file), its run
lasts the record's e2e_time, and a run without mlperf_logging says so in one line."""
import errno
import glob
import importlib.util
import json
import os
import subprocess
import sys
import types

import pytest
from conftest import run_script

from common import make_dataset, mlperf_log

needs_mlperf_logging = pytest.mark.skipif(
    importlib.util.find_spec("mlperf_logging") is None,
    reason="mlperf_logging is not installed (tests/run.sh installs it)")
CHECKER = ("mlperf_logging.compliance_checker", "--usage", "training", "--ruleset", "4.0.0")


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory):
    """A dataset of 2 steps an epoch at batch 4 (8 train, 8 val images)."""
    return make_dataset.write(str(tmp_path_factory.mktemp("mlperf-data")), classes=4,
                              train_per_class=2, val_per_class=2, size=40)


def train_two_epochs(script, data, out):
    """The record and the MLPerf log lines of a 2-epoch run of `script`."""
    proc = run_script([script, "--data-dir", data, "--image-size", 32, "--batch-size", 4,
                       "--epochs", 2, "--warmup-steps", 1, "--checkpoint-every", 0,
                       "--monitor-interval", 0, "--mlperf-org", "Example Org", "--out", out])
    assert proc.returncode == 0, proc.stderr[-2000:]
    (path,) = glob.glob(os.path.join(glob.escape(str(out)), "*.json"))
    with open(path) as f:
        record = json.load(f)
    assert record["mlperf_log"] == os.path.basename(path)[:-5] + ".mlperf.log"
    assert proc.stdout.count("mlperf log: ") == 1
    return record, os.path.join(out, record["mlperf_log"])


def check(log, tmp_path, *config):
    """MLPerf's compliance checker on `log`: its exit code and what it said."""
    proc = subprocess.run([sys.executable, "-m", *CHECKER, *config, "--log_output",
                           str(tmp_path / "checker.log"), log], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stdout + proc.stderr


def lines_of(log):
    with open(log) as f:
        return [json.loads(line.split(":::MLLOG ", 1)[1]) for line in f]


def the(lines, key):
    (line,) = [x for x in lines if x["key"] == key]
    return line


@needs_mlperf_logging
def test_resnet50_log_passes_mlperf_open_resnet_rules(two_epochs, tmp_path):
    record, log = train_two_epochs("resnet50/train.py", two_epochs, tmp_path / "runs")
    rc, said = check(log, tmp_path)
    assert rc == 0 and "open_resnet.yaml" in said and "SUCCESS" in said, said
    lines = lines_of(log)
    span = the(lines, "run_stop")["time_ms"] - the(lines, "run_start")["time_ms"]
    assert abs(span - record["figures"]["e2e_time"] * 1000) < 1
    assert the(lines, "submission_benchmark")["value"] == "resnet"
    assert the(lines, "submission_division")["value"] == "open"
    assert the(lines, "submission_org")["value"] == "Example Org"
    assert the(lines, "global_batch_size")["value"] == record["global_batch_size"] == 4
    accuracy = [(x["metadata"]["epoch_num"], x["value"]) for x in lines
                if x["key"] == "eval_accuracy"]
    assert accuracy == [(e["epoch"], e["top1"] / 100) for e in record["evals"]]
    assert [x["metadata"]["epoch_num"] for x in lines if x["key"] == "epoch_stop"] == [1, 2]
    # MLPerf's success is the target reached; two epochs of a toy reach no 75.5%
    assert the(lines, "run_stop")["metadata"]["status"] == "aborted"


@needs_mlperf_logging
def test_mobilenetv2_log_passes_the_suites_rules_file(two_epochs, tmp_path):
    record, log = train_two_epochs("mobilenetv2/train.py", two_epochs, tmp_path / "runs")
    rc, said = check(log, tmp_path, "--config", mlperf_log.RULES)
    assert rc == 0 and "SUCCESS" in said, said
    assert the(lines_of(log), "submission_benchmark")["value"] == "mobilenetv2"


def test_the_rules_file_is_mlperfs_common_rules_but_where_marked():
    yaml = pytest.importorskip("yaml")
    pytest.importorskip("mlperf_logging")
    import mlperf_logging.compliance_checker as cc
    with open(os.path.join(os.path.dirname(cc.__file__), "training_4.0.0", "common.yaml")) as f:
        theirs = yaml.safe_load(f)
    with open(mlperf_log.RULES) as f:
        ours = yaml.safe_load(f)
    differs = {"submission_division", "submission_benchmark"}  # marked "differs" there
    assert [r for r in ours if r.get("KEY", {}).get("NAME") not in differs] == \
        [r for r in theirs if r.get("KEY", {}).get("NAME") not in differs]
    assert "enqueue_config" not in json.dumps(ours)


def a_run_log(**facts):
    """A RunLog of a rank-0 CPU run with no data, started at perf_counter 100 s."""
    run = types.SimpleNamespace(is_main=True, device=None)
    args = types.SimpleNamespace(recipe={"global_batch": 8}, seed=0, lr=0.1, grad_accum=1,
                                 mlperf_org="unnamed", **facts)
    return mlperf_log.RunLog(run, args, object(), None, None, start=100.0)


def a_record(**figures):
    return {"model": "mobilenetv2", "config": "1x1", "device": {"label": "CPU"},
            "figures": {"e2e_time": 7.5, "stopped": "epochs", **figures}}


def test_run_stop_is_aborted_but_at_the_target_and_a_resumed_log_covers_its_process():
    log = a_run_log()
    for stopped, status in (("target_acc", "success"), ("epochs", "aborted"),
                            ("nan", "aborted"), ("interrupted", "aborted"),
                            ("lost_rank", "aborted")):
        *_, (at, _, key, _, meta) = log.lines(a_record(stopped=stopped))
        assert (key, meta["status"], at) == ("run_stop", status, 107.5)
    resumed = list(log.lines(a_record(resumed={"from_step": 40, "e2e_before_s": 5.0})))
    start = [line for line in resumed if line[2] == "run_start"][0]
    assert start[0] == 100.0 and start[4] == {"resumed_from_step": 40}
    assert resumed[-1][0] == 102.5  # this process's 2.5 s of the record's 7.5


def test_without_mlperf_logging_the_run_says_so_once_and_the_record_why(
        tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mlperf_logging", None)  # its import raises ImportError
    monkeypatch.setitem(sys.modules, "mlperf_logging.mllog.mllog", None)
    record = a_record()
    run = types.SimpleNamespace(is_main=True, mlperf_log=a_run_log())
    mlperf_log.written(run, record, "stem", str(tmp_path))
    assert capsys.readouterr().out == ("no MLPerf log written: mlperf_logging is not "
                                       "installed; pip install mlperf-logging to get one\n")
    assert record["mlperf_log"] is None and "pip install mlperf-logging" in \
        record["mlperf_log_why"]
    assert os.listdir(tmp_path) == []


def test_a_record_written_by_another_rank_than_a_lost_rank_0_says_why_it_has_no_log(
        tmp_path, capsys):
    record, run = a_record(), types.SimpleNamespace(is_main=False, mlperf_log=a_run_log())
    mlperf_log.written(run, record, "stem", str(tmp_path))
    assert record["mlperf_log"] is None and "rank 0" in record["mlperf_log_why"]
    assert capsys.readouterr().out.count("no MLPerf log written: ") == 1
    assert os.listdir(tmp_path) == []


@needs_mlperf_logging
def test_a_log_the_disk_refuses_is_one_line_and_the_record_says_why(tmp_path, monkeypatch,
                                                                     capsys):
    """The disk takes the record but not the log (full, read-only): the run says so in
    one line and its record keeps why, as without the package; no file is left behind."""
    def full(path, write, binary=False):
        raise OSError(errno.ENOSPC, "No space left on device", path)
    monkeypatch.setattr(mlperf_log.files, "write_atomically", full)
    record = a_record()
    run = types.SimpleNamespace(is_main=True, mlperf_log=a_run_log())
    mlperf_log.written(run, record, "stem", str(tmp_path))
    said = capsys.readouterr().out
    assert said == (f"no MLPerf log written: {tmp_path / 'stem.mlperf.log'}: cannot be "
                    f"written: the disk is full (ENOSPC); free space there\n")
    assert record["mlperf_log"] is None and "ENOSPC" in record["mlperf_log_why"]
    assert os.listdir(tmp_path) == []
