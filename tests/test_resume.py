"""Checkpoints and resume: a run killed mid-epoch and resumed ends where an
uninterrupted one does; SIGTERM writes an incomplete record and a checkpoint."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import ROOT, _free_port, run_script
from test_resnet50 import only_record

# 96 train images over 2 ranks at batch 4: 12 steps an epoch; 16 steps end in epoch 2
RUN = ["mobilenetv2/train.py", "--image-size", 32, "--batch-size", 4, "--workers", 1,
       "--print-freq", 1, "--warmup-steps", 2, "--max-steps", 16, "--lr", 0.01,
       "--checkpoint-every", "4steps", "--keep-checkpoint"]


def torchrun(args, nproc=2):
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
            "--master-port", str(_free_port()), *[str(a) for a in args]]


def final_weights(out):
    (name,) = [f for f in os.listdir(out / "checkpoints") if f.endswith("-final.pt")]
    return torch.load(out / "checkpoints" / name, weights_only=True)["model"]


def mlperf_log_of(out, rec):
    """{key: its last line} of the MLPerf log beside `rec`; None where mlperf_logging
    is not installed (the record says so)."""
    if rec["mlperf_log"] is None:
        assert "not installed" in rec["mlperf_log_why"]
        return None
    with open(out / rec["mlperf_log"]) as f:
        return {x["key"]: x for x in (json.loads(line.split(" ", 1)[1]) for line in f)}


def descendants(pid):
    """pid and every process below it (torchrun starts its workers in sessions of their
    own, so a process group does not hold them)."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo += children.get(p, [])
    return found


def start_and_kill_at(cmd, line, sig=signal.SIGKILL):
    """Run cmd; send `sig` to it and every process under it once `line` is printed."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    seen = []
    deadline = time.monotonic() + 300
    for out in proc.stdout:
        seen.append(out)
        if line in out:
            for pid in descendants(proc.pid):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            break
        assert time.monotonic() < deadline, "".join(seen)[-3000:]
    rest = proc.communicate(timeout=120)[0]
    return proc.returncode, "".join(seen) + rest


@pytest.fixture(scope="module")
def uninterrupted(dataset, tmp_path_factory):
    """The output folder of RUN left to finish: what every interrupted run must end as."""
    whole = tmp_path_factory.mktemp("whole")
    proc = run_script([*RUN, "--data-dir", dataset, "--out", whole], nproc=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return whole


def test_killed_run_resumes_to_the_same_weights(dataset, uninterrupted, tmp_path):
    whole, broken = uninterrupted, tmp_path / "broken"
    # killed after step 10, mid-epoch 1: the last checkpoint is step 8's
    rc, log = start_and_kill_at(torchrun([*RUN, "--data-dir", dataset, "--out", broken]),
                                "step 10/16")
    assert rc != 0 and not any(f.endswith(".json") for f in os.listdir(broken)), log[-2000:]
    proc = run_script([*RUN, "--data-dir", dataset, "--out", broken], nproc=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resuming from" in proc.stdout and "at step 8" in proc.stdout
    a, b = final_weights(whole), final_weights(broken)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    rec, ref = only_record(broken), only_record(whole)
    f = rec["figures"]
    assert f["resumed"]["from_step"] == 8 and f["resumed"]["restarts"] == 1
    # the timed steps: 2..8 before the kill, 9..16 after; each image counted once
    assert f["images"] == ref["figures"]["images"] == 14 * 4 * 2
    assert f["timed_steps"] == 14
    assert f["p_core"] >= f["p_train"] >= f["p_whole"] > 0
    assert f["e2e_time"] > f["resumed"]["e2e_before_s"] > 0
    assert [e["step"] for e in rec["evals"]] == [e["step"] for e in ref["evals"]] == [12, 16]
    assert rec["evals"][-1]["top1"] == ref["evals"][-1]["top1"]
    # a finished run leaves no checkpoint to resume by accident
    assert [f for f in os.listdir(broken / "checkpoints") if not f.endswith("-final.pt")] == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP],
                         ids=["SIGTERM", "Ctrl-C", "SIGHUP"])
def test_sigterm_writes_an_incomplete_record_and_a_checkpoint(dataset, tmp_path, sig):
    """The signal reaches the process and its loader worker, as scancel or a terminal
    sends it (SIGHUP: the terminal or ssh session closed): the worker carries on until
    the rank has written its checkpoint."""
    args = ["resnet50/train.py", "--data-dir", dataset, "--image-size", 32, "--batch-size", 4,
            "--workers", 1, "--print-freq", 1, "--warmup-steps", 1, "--epochs", 3,
            "--checkpoint-every", "0", "--out", tmp_path]
    rc, log = start_and_kill_at([sys.executable, *map(str, args)], "step 3/", sig)
    assert rc == 3, log[-3000:]
    rec = only_record(tmp_path)
    assert rec["status"] == "incomplete" and sig.name in rec["error"]
    assert rec["figures"]["images"] >= 2 * 4 and rec["figures"]["p_whole"] > 0
    (ckpt,) = [f for f in os.listdir(tmp_path / "checkpoints") if f.endswith(".pt")]
    assert torch.load(tmp_path / "checkpoints" / ckpt, weights_only=True)["step"] >= 3
    assert "resumes from" in log


def test_sigterm_to_every_process_stops_the_ranks_together(dataset, uninterrupted, tmp_path):
    """SLURM's scancel and a terminal's Ctrl-C signal every process of the job, the
    loader workers too: the ranks still stop at one agreed step, write one checkpoint,
    and the same command ends where an uninterrupted run does."""
    rc, log = start_and_kill_at(torchrun([*RUN, "--data-dir", dataset, "--out", tmp_path]),
                                "step 10/16", signal.SIGTERM)
    stopped = only_record(tmp_path)
    assert stopped["status"] == "incomplete" and "SIGTERM" in stopped["error"], log[-3000:]
    step = stopped["figures"]["steps"]
    assert 10 <= step < 16
    log = mlperf_log_of(tmp_path, stopped)
    if log:  # its run_stop says aborted, and why
        assert {k: log["run_stop"]["metadata"][k] for k in ("status", "stopped")} == \
            {"status": "aborted", "stopped": "interrupted"}
    (name,) = [f for f in os.listdir(tmp_path) if f.endswith(".json")]
    os.rename(tmp_path / name, tmp_path / "stopped.record")  # so that one record is new
    proc = run_script([*RUN, "--data-dir", dataset, "--out", tmp_path], nproc=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"at step {step}" in proc.stdout
    a, b = final_weights(uninterrupted), final_weights(tmp_path)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    resumed = only_record(tmp_path)
    assert resumed["figures"]["images"] == 14 * 4 * 2
    log = mlperf_log_of(tmp_path, resumed)
    if log:  # the resumed process's own log: from its start, naming the step
        fig = resumed["figures"]
        assert log["run_start"]["metadata"]["resumed_from_step"] == step
        span = log["run_stop"]["time_ms"] - log["run_start"]["time_ms"]
        assert abs(span - 1000 * (fig["e2e_time"] - fig["resumed"]["e2e_before_s"])) < 1
        assert len(list(tmp_path.glob("*.mlperf.log"))) == 2  # rank 0's, one a process


@pytest.mark.parametrize("value", ["3", "2weeks"])
def test_bad_checkpoint_cadence_is_one_line(value):
    proc = run_script(["resnet50/train.py", "--synthetic", "--checkpoint-every", value])
    assert proc.returncode == 2, proc.stderr
    assert (f"argument --checkpoint-every: '{value}': give a count and a unit, e.g. 1epoch"
            in proc.stderr)


def test_resume_from_a_missing_or_broken_file(tmp_path):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"PK\x03\x04 not really")
    for path, message in [(tmp_path / "nowhere.pt", "no such file"),
                          (broken, "not a readable checkpoint")]:
        proc = run_script(["resnet50/train.py", "--synthetic", "--image-size", 32,
                           "--batch-size", 2, "--num-classes", 10, "--resume", path])
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr


def test_sharded_run_resumes_to_the_same_weights(dataset, tmp_path):
    """bit/train.py --fsdp: the checkpoint holds the whole (unsharded) model, gathered
    from both ranks, and a resumed sharded run ends where an uninterrupted one does."""
    run = ["bit/train.py", "--model", "tiny", "--data-dir", dataset, "--image-size", 32,
           "--batch-size", 4, "--workers", 1, "--print-freq", 1, "--warmup-steps", 1,
           "--max-steps", 6, "--fsdp", "--checkpoint-every", "2steps", "--keep-checkpoint",
           "--eval-every", 0]
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    proc = run_script([*run, "--out", whole], nproc=2, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rc, log = start_and_kill_at(torchrun([*run, "--out", broken]), "step 5/6")
    assert rc != 0, log[-2000:]
    proc = run_script([*run, "--out", broken], nproc=2, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "at step 4" in proc.stdout
    a, b = final_weights(whole), final_weights(broken)
    from bit.model import bit
    shapes = {k: v.shape for k, v in bit("tiny", num_classes=4).state_dict().items()}
    assert {k: v.shape for k, v in a.items()} == shapes  # whole tensors, not shards
    for k in a:
        assert torch.equal(a[k], b[k]), k
