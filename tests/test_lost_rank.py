"""A rank that hangs rather than dies (a stopped process stands in for a stuck device,
driver or link): after --dist-timeout each rank left says in one line where it waited,
for how long, which rank did not answer and what the run keeps; the lowest rank that
answered writes an incomplete record from its own figures; no traceback follows."""
import json
import os
import re
import signal
import subprocess
import sys
import time
import types

import pytest
import torch
from conftest import ROOT, _free_port
from test_reliability import rank_pids

from common import checkpoint, device, dist, exits, kinds, left_behind
from common.dist import Run

TIMEOUT = 10  # --dist-timeout of these runs: a stopped rank ends them in seconds


def start(args, log):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-port", str(_free_port()), *map(str, args),
           "--dist-timeout", TIMEOUT, "--monitor-interval", 0]
    return subprocess.Popen([str(c) for c in cmd], cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})


def stop_rank_when(proc, log_path, said, rank):
    """SIGSTOP `rank` once the log holds `said`; returns (its pid, the others' pids, when)."""
    deadline = time.monotonic() + 240
    while said not in open(log_path).read():
        assert proc.poll() is None and time.monotonic() < deadline, open(log_path).read()[-3000:]
        time.sleep(0.05)
    pids = rank_pids(proc.pid)
    os.kill(pids[rank], signal.SIGSTOP)
    return pids[rank], [p for r, p in pids.items() if r != rank], time.monotonic()


def run_with_a_stopped_rank(args, tmp_path, said, rank):
    """The log of a two-rank run whose `rank` is stopped once `said` is printed, and the
    seconds the rank left took to end after that."""
    log_path = tmp_path / "log"
    with open(log_path, "w") as log:
        proc = start(args, log)
        stopped = None
        try:
            stopped, others, t0 = stop_rank_when(proc, log_path, said, rank)
            while any(os.path.exists(f"/proc/{p}") and _alive(p) for p in others):
                assert time.monotonic() - t0 < 3 * TIMEOUT + 30, open(log_path).read()[-3000:]
                time.sleep(0.2)
            took = time.monotonic() - t0
        finally:  # whatever happened: the stopped rank and the launcher go too
            if stopped is not None:
                os.kill(stopped, signal.SIGKILL)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
    return open(log_path).read(), took, proc.returncode


def _alive(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended


def before_the_launcher(log):
    """What the ranks printed, before torchrun's own summary of the failure."""
    return log.split("failed (exitcode")[0]


def test_a_stopped_rank_ends_training_in_one_line_and_a_record(dataset, tmp_path):
    out = tmp_path / "out"
    args = ["resnet50/train.py", "--data-dir", dataset, "--image-size", 32, "--batch-size", 2,
            "--workers", 1, "--print-freq", 1, "--warmup-steps", 1, "--epochs", 1, "--lr", 0,
            "--checkpoint-every", "3steps", "--out", out]
    # rank 0 stopped: rank 1, the lowest that answers, writes the record
    log, took, rc = run_with_a_stopped_rank(args, tmp_path, "step 7/24", rank=0)
    assert rc != 0
    ranks = before_the_launcher(log)
    (line,) = [x for x in ranks.splitlines() if x.startswith("error:")]
    m = re.fullmatch(r"error: rank 1: a collective at (.+) waited 10 s \(--dist-timeout\) and "
                     r"timed out: rank 0 did not answer; the last checkpoint \(step (\d+), (.+)\) "
                     r"is kept: the same command resumes from it", line)
    assert m, line
    step, path = int(m[2]), m[3]
    assert step >= 6 and checkpoint.step_of(path) == step  # what the resume starts from
    assert "Traceback" not in ranks and "exited unexpectedly" not in log
    assert took < TIMEOUT + left_behind.ANSWER_S + 20
    (name,) = [f for f in os.listdir(out) if f.endswith(".json")]
    rec = json.load(open(out / name))
    f = rec["figures"]
    assert rec["status"] == "incomplete" and rec["error"] == line[len("error: "):]
    assert f["left_behind"] == {"waited_at": m[1], "timeout_s": 10.0, "answered": [1],
                                "lost": [0], "rank": 1}
    # its own figures, apart: the group's cannot be gathered, and stay empty
    assert f.get("p_core") is None and "could not be gathered" in f["why_empty"]
    mine = f["rank_alone"]
    assert mine["rank"] == 1 and mine["images"] == 2 * mine["timed_steps"] > 0
    assert mine["p_core"] == pytest.approx(mine["images"] / mine["core_s"])


def test_a_stopped_rank_ends_inference_in_one_line(dataset, tmp_path):
    out = tmp_path / "out"
    args = ["resnet50/infer.py", "--data-dir", dataset, "--image-size", 32, "--batch-size", 2,
            "--workers", 1, "--engine", "eager", "--repeat", 20, "--out", out]
    log, took, rc = run_with_a_stopped_rank(args, tmp_path, "validation pass eager", rank=1)
    assert rc != 0
    ranks = before_the_launcher(log)
    lines = [x for x in ranks.splitlines() if x.startswith("error:")]
    assert lines == ["error: rank 0: a collective at the end of the validation pass (eager) "
                     "waited 10 s (--dist-timeout) and timed out: rank 1 did not answer; an "
                     "inference run keeps no state: the same command runs it again"], ranks
    assert "Traceback" not in ranks and "exited unexpectedly" not in log
    (name,) = [f for f in os.listdir(out) if f.endswith(".json")]
    rec = json.load(open(out / name))
    assert rec["status"] == "incomplete" and rec["figures"]["left_behind"]["lost"] == [1]
    assert rec["figures"].get("p_val_core") is None


def lone(rank, world_size=3):
    return Run(rank, rank, world_size, world_size, device.select("cpu"))


@pytest.mark.parametrize("rank, answered, lost, writes", [
    (0, (0, 2), [1], True), (2, (0, 2), [1], False),  # the lowest that answered writes
    (1, (1,), [0, 2], True),
    (2, None, None, True),  # the store is gone too: each rank left writes rather than none
])
def test_who_did_not_answer_and_who_writes(rank, answered, lost, writes):
    found = left_behind.LeftBehind(rank, 3, "step 5", 30, answered)
    assert found.lost == lost
    assert left_behind.writes_record(found.record(), rank) is writes
    line = found.line("KEPT")
    assert line.startswith(f"rank {rank}: a collective at step 5 waited 30 s (--dist-timeout)")
    assert line.endswith("; KEPT")
    if lost:
        assert f"rank{'s' if len(lost) > 1 else ''} {', '.join(map(str, lost))} did not answer" \
            in line


def test_a_store_that_does_not_answer_names_no_rank(monkeypatch):
    class Gone:
        def set_timeout(self, timeout):
            pass

        def set(self, key, value):
            raise torch.distributed.DistStoreError("Socket Timeout")
    monkeypatch.setattr(torch.distributed.distributed_c10d, "_get_default_store", Gone)
    assert dist.answering(lone(1), 0.1) is None


@pytest.mark.parametrize("message, timed_out", [
    # gloo, in the call that waits
    ("[../third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting "
     "30000ms for recv operation to complete", True),
    # nccl under the shim's settings: the next call, once the watchdog has aborted
    ("NCCL communicator was aborted on rank 0. Original reason for failure was: [PG ID 0 PG "
     "GUID 0(default_pg) Rank 0] Watchdog caught collective operation timeout: "
     "WorkNCCL(SeqNum=9, OpType=ALLREDUCE, NumelIn=1, NumelOut=1, Timeout(ms)=30000) ran "
     "for 30012 milliseconds before timing out.", True),
    ("[Rank 0] Work WorkNCCL(SeqNum=9, OpType=ALLREDUCE) timed out in blocking wait.", True),
    ("Connection closed by peer [127.0.0.1]:29500", False),  # a rank that died
    ("CUDA out of memory. Tried to allocate 2.00 GiB", False),
])
def test_a_timed_out_collective_is_told_from_other_errors(message, timed_out):
    error = torch.distributed.DistBackendError(message)
    assert device.Device.is_collective_timeout(error) is timed_out


@pytest.mark.parametrize("version, prefix", [("2.14.1+cu130", "TORCH_"), ("2.1.2+cu121", "")])
def test_nccl_raises_a_timeout_where_the_user_has_not_said_otherwise(monkeypatch, version,
                                                                      prefix):
    """The cuda entry's backend settings go into the environment before the process
    group starts (faked here: no nccl on this machine), by the names of the torch that
    runs; a user's own setting stays."""
    env = {f"{prefix}NCCL_DUMP_ON_TIMEOUT": "1"}
    monkeypatch.setattr(os, "environ", env)
    monkeypatch.setattr(dist.torch, "__version__", version)
    cuda = next(k for k in kinds.KINDS if k.type == "cuda")
    monkeypatch.setattr(dist.devices, "select", lambda requested, local_rank:
                        types.SimpleNamespace(kind=cuda, backend="nccl"))
    monkeypatch.setattr(dist, "world_from_env", lambda: (0, 0, 2, 2))
    seen = {}

    def init_process_group(backend, timeout, **kwargs):
        seen.update(backend=backend, timeout=timeout.total_seconds(), env=dict(env))
    monkeypatch.setattr(dist.dist, "init_process_group", init_process_group)
    dist.setup("cuda", timeout_s=30)
    assert seen == {"backend": "nccl", "timeout": 30.0,
                    "env": {f"{prefix}NCCL_ASYNC_ERROR_HANDLING": "2",
                            f"{prefix}NCCL_DUMP_ON_TIMEOUT": "1"}}


def test_a_timeout_outside_the_loops_is_one_line_too(monkeypatch, capsys):
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setenv("RANK", "3")

    def main(args, parser):
        raise RuntimeError("Timed out waiting 600000ms for send operation to complete")
    args = types.SimpleNamespace(debug=False, dist_timeout=600.0)
    with pytest.raises(SystemExit) as ended:
        exits.entry(main, types.SimpleNamespace(rules=[]), args)
    assert ended.value.code == 1
    assert capsys.readouterr().err == (
        "error: rank 3: a collective waited 600 s (--dist-timeout) for a rank that did not "
        "come, and timed out; if a step can take that long, raise --dist-timeout\n")
