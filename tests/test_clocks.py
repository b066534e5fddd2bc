"""The training clocks on a fake step whose data, compute and eval times are known."""
import time

import pytest

from common import device
from common.clocks import TrainClocks, percentiles
from common.dist import Run

DATA_S, COMPUTE_S, EVAL_S = 0.02, 0.03, 0.1


def cpu_run():
    return Run(rank=0, local_rank=0, world_size=1, local_world_size=1, device=device.select("cpu"))


def fake_training(clocks, steps, batch, eval_at=()):
    for step in range(steps):
        time.sleep(DATA_S)               # data loading: outside core, inside train
        clocks.begin_step()
        time.sleep(COMPUTE_S)            # forward, backward, optimizer step
        clocks.end_step(batch)
        if step in eval_at:
            with clocks.paused("eval"):  # evaluation: inside whole only
                time.sleep(EVAL_S)


def test_clock_order_and_warmup_excluded():
    run = cpu_run()
    clocks = TrainClocks(run.device, warmup_steps=3)
    fake_training(clocks, steps=13, batch=4, eval_at=(1, 6, 12))
    f = clocks.figures(run)
    # warm-up steps count nowhere: neither their images nor the eval inside them
    assert f["images"] == 10 * 4
    assert f["timed_steps"] == 10
    assert f["eval_s"] == pytest.approx(2 * EVAL_S, abs=0.05)
    assert f["p_core"] >= f["p_train"] >= f["p_whole"]
    assert f["core_s"] == pytest.approx(10 * COMPUTE_S, rel=0.3)
    assert f["train_s"] == pytest.approx(10 * (COMPUTE_S + DATA_S), rel=0.3)
    # throughput is total images over total time
    assert f["p_core"] == pytest.approx(f["images"] / f["core_s"])
    assert f["p_whole"] == pytest.approx(f["images"] / f["whole_s"])
    assert set(f["step_core_ms"]) == {"p50", "p90", "p99"}
    assert f["step_core_ms"]["p50"] == pytest.approx(COMPUTE_S * 1000, rel=0.5)


def test_gradient_accumulation_counts_every_micro_batch():
    run = cpu_run()
    clocks = TrainClocks(run.device, warmup_steps=1)
    for _ in range(4):  # 4 optimizer steps of 2 micro-batches each
        for micro in range(2):
            clocks.begin_step()
            time.sleep(0.005)
            clocks.end_step(8, last=micro == 1)
    f = clocks.figures(run)
    assert f["images"] == 3 * 2 * 8
    assert f["timed_steps"] == 3


def test_never_left_warmup_gives_no_rates():
    run = cpu_run()
    clocks = TrainClocks(run.device, warmup_steps=5)
    fake_training(clocks, steps=2, batch=4)
    f = clocks.figures(run)
    assert f["images"] == 0 and "p_core" not in f and "p_whole" not in f
    assert f["why_empty"].startswith("no timed step: the run ended at step 2, within its 5")


def test_percentiles_nearest_rank():
    values = list(range(1, 101))
    assert percentiles(values) == {"p50": 50, "p90": 90, "p99": 99}
    assert percentiles([7.0]) == {"p50": 7.0, "p90": 7.0, "p99": 7.0}
    assert percentiles([]) == {}


def test_snapshot_inside_a_checkpoint_counts_its_pause_as_checkpoint_time():
    """A checkpoint takes the clocks inside its own pause: what that pause has taken so
    far is checkpoint time in the snapshot, not training time."""
    run = cpu_run()
    clocks = TrainClocks(run.device, warmup_steps=0)
    fake_training(clocks, steps=2, batch=4)
    with clocks.paused("checkpoint"):
        time.sleep(EVAL_S)                # writing the checkpoint's first part
        state = clocks.state(run)
    assert state["checkpoint_s"] == pytest.approx(EVAL_S, abs=0.03)
    assert state["train_s"] == pytest.approx(2 * (COMPUTE_S + DATA_S), abs=0.03)
    assert state["whole_s"] == pytest.approx(state["train_s"] + state["checkpoint_s"])
    f = clocks.figures(run)               # and the pause, once over, is counted once
    assert f["checkpoint_s"] == pytest.approx(EVAL_S, abs=0.03)
