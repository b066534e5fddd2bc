"""Scale-out: two torchrun agents as two nodes, SLURM without torchrun, the scaling table."""
import os
import subprocess
import sys

import pytest
from conftest import ROOT, _free_port
from test_resnet50 import only_record

from common import dist, scaling
from common.errors import UserError

SYNTHETIC = ["--synthetic", "--max-steps", 4, "--warmup-steps", 1, "--image-size", 32,
             "--batch-size", 2, "--num-classes", 10, "--print-freq", 1]


def start_all(commands, envs):
    procs = [subprocess.Popen([str(c) for c in cmd], cwd=ROOT, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for cmd, env in zip(commands, envs)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]
    return outputs


def test_two_torchrun_agents_are_two_nodes(tmp_path):
    port = _free_port()
    agent = [sys.executable, "-m", "torch.distributed.run", "--nnodes", 2,
             "--nproc-per-node", 1, "--rdzv-backend", "c10d",
             "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "two-nodes"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start_all([agent + ["resnet50/train.py", *SYNTHETIC, "--out", tmp_path]] * 2, [env, env])
    rec = only_record(tmp_path)
    assert rec["config"] == "2x1" and rec["nodes"] == 2 and rec["world_size"] == 2
    # 3 timed steps x 2 images on each of the two nodes
    assert rec["figures"]["images"] == 3 * 2 * 2


@pytest.mark.parametrize("rendezvous", ["static", "c10d"])
def test_run_all_on_two_nodes_over_loopback(dataset, tmp_path, rendezvous):
    """run_all.sh as a user runs it on each of two nodes: NNODES=2 and a node rank each
    (static), or the identical command on both (c10d)."""
    port = str(_free_port())
    base = {**os.environ, "OMP_NUM_THREADS": "1", "NNODES": "2", "NPROC": "1",
            "DATA_DIR": str(dataset), "CASES": "resnet50_train",
            "EXTRA_ARGS": "--max-steps 4 --warmup-steps 1 --image-size 32 --batch-size 4 "
                          "--workers 1 --eval-every 0"}
    if rendezvous == "static":
        envs = [{**base, "NODE_RANK": str(r), "MASTER_PORT": port, "OUT": str(tmp_path / str(r))}
                for r in range(2)]
    else:
        envs = [{**base, "RDZV_ENDPOINT": f"127.0.0.1:{port}", "OUT": str(tmp_path / str(r))}
                for r in range(2)]
    outputs = start_all([["bash", "run_all.sh"]] * 2, envs)
    # the records are written by global rank 0, on whichever node that is
    written = [r for r in range(2) if (tmp_path / str(r)).is_dir()
               and any(f.suffix == ".json" for f in (tmp_path / str(r)).iterdir())]
    assert len(written) == 1, outputs
    rec = only_record(tmp_path / str(written[0]))
    assert rec["config"] == "2x1" and rec["world_size"] == 2
    assert rec["figures"]["images"] == 3 * 4 * 2  # both nodes' images
    assert "| CPU 2 nodes x 1 (2x1)" in outputs[written[0]]
    assert all("run_all: all cases passed" in out for out in outputs)


def test_srun_environment_without_torchrun(tmp_path):
    port = str(_free_port())
    envs = [{**os.environ, "OMP_NUM_THREADS": "1", "SLURM_PROCID": str(r),
             "SLURM_LOCALID": str(r), "SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2",
             "SLURM_NNODES": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
            for r in range(2)]
    for env in envs:
        for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
            env.pop(key, None)
    cmd = [sys.executable, "resnet50/train.py", *SYNTHETIC, "--out", tmp_path]
    outputs = start_all([cmd, cmd], envs)
    assert "on 2 x CPU" in outputs[0]
    rec = only_record(tmp_path)
    assert rec["config"] == "1x2" and rec["launcher"] == "python"
    assert rec["figures"]["images"] == 3 * 2 * 2


@pytest.mark.parametrize("env, world", [
    ({}, (0, 0, 1, 1)),
    ({"RANK": "5", "LOCAL_RANK": "1", "WORLD_SIZE": "16", "LOCAL_WORLD_SIZE": "8",
      "MASTER_ADDR": "n1", "MASTER_PORT": "29500"}, (5, 1, 16, 8)),
    ({"SLURM_PROCID": "9", "SLURM_LOCALID": "1", "SLURM_NTASKS": "16",
      "SLURM_TASKS_PER_NODE": "8(x2)", "MASTER_ADDR": "n1"}, (9, 1, 16, 8)),
    ({"SLURM_PROCID": "3", "SLURM_LOCALID": "3", "SLURM_NTASKS": "8", "SLURM_NNODES": "2",
      "MASTER_ADDR": "n1"}, (3, 3, 8, 4)),
    # a single-task allocation is one plain process
    ({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}, (0, 0, 1, 1)),
])
def test_world_from_env(env, world, monkeypatch):
    monkeypatch.setattr(os, "environ", dict(env))
    assert dist.world_from_env(env) == world


def test_srun_needs_master_addr():
    with pytest.raises(UserError, match="export MASTER_ADDR"):
        dist.world_from_env({"SLURM_PROCID": "0", "SLURM_NTASKS": "2"})


def rec(nodes, per_node, p_core, label="A100", model="resnet50", **fields):
    return {"case": "train", "model": model, "precision": "fp32", "batch_size": 256,
            "data_source": "real", "image_size": 224, **fields,
            "device": {"label": label}, "nodes": nodes, "procs_per_node": per_node,
            "world_size": nodes * per_node, "status": "ok", "finished": "",
            "figures": {"p_core": p_core}}


def test_scaling_from_seed_000_figures():
    rows = scaling.scaling_rows([rec(1, 1, 799), rec(1, 8, 6105), rec(2, 8, 11874)])
    by_config = {r["config"]: r for r in rows}
    assert by_config["1x1"]["efficiency"] == pytest.approx(1.0)
    assert by_config["1x8"]["per_device"] == pytest.approx(6105 / 8)
    assert by_config["1x8"]["efficiency"] == pytest.approx(6105 / (8 * 799))
    assert by_config["2x8"]["efficiency"] == pytest.approx(11874 / (16 * 799))
    table = scaling.scaling_table([rec(1, 1, 799), rec(1, 8, 6105), rec(2, 8, 11874)])
    assert "95.5%" in table and "92.9%" in table


def test_scaling_without_a_one_device_run_leaves_efficiency_empty():
    rows = scaling.scaling_rows([rec(1, 8, 6105)])
    assert rows[0]["efficiency"] is None


@pytest.mark.parametrize("other", [
    {"data_source": "synthetic"}, {"image_size": 64}, {"batch_size": 32},
    {"precision": "amp"}, {"grad_accum": 2}])
def test_runs_that_differ_in_more_than_size_never_share_a_scaling_row(other):
    # a synthetic 1x2 beside a real-data 1x1 once made an efficiency of 307.5%
    rows = scaling.scaling_rows([rec(1, 1, 100), rec(1, 2, 615, **other)])
    assert len({r["case"] for r in rows}) == 2
    assert [r["efficiency"] for r in rows if r["config"] == "1x2"] == [None]
    assert not scaling.several_sizes([rec(1, 1, 100), rec(1, 2, 615, **other)])
