"""Nothing lost, nothing cryptic: a non-finite loss, running out of memory, bad images,
a rank that dies, and a failing case in a batch run."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import ROOT, _free_port, loop_args, run_script
from test_resnet50 import only_record

from common import device, make_dataset, profile, train_loop
from common.dist import Run
from common.errors import UserError
from common.progress import step_line

QUICK = ["--image-size", 32, "--batch-size", 4, "--workers", 1, "--print-freq", 1,
         "--warmup-steps", 1]


def cpu_run():
    return Run(rank=0, local_rank=0, world_size=1, local_world_size=1, device=device.select("cpu"))


def tiny_training(tmp_path, loss_fn, model=None, steps=10, **flags):
    torch.manual_seed(0)
    model = model or torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
    batches = [(torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8), torch.randint(0, 4, (4,)))
               for _ in range(steps)]
    figures, _ = train_loop.train(
        cpu_run(), loop_args(tmp_path, print_freq=4, **flags), model,
        torch.optim.SGD(model.parameters(), lr=0.01), train_loader=batches, val_loader=None,
        normalize=lambda x: x.float() / 255, loss_fn=loss_fn)
    return figures


def test_the_profiler_covers_the_warm_up_steps_after_the_first(tmp_path, monkeypatch):
    """With 4 warm-up steps it starts once step 1 is done and stops once step 3 is: steps
    2 and 3 run under it, never step 1 (one-off costs) nor a timed one."""
    steps, calls = [], []

    def loss_fn(logits, labels):
        steps.append(1)
        return torch.nn.functional.cross_entropy(logits, labels)
    monkeypatch.setattr(profile, "start", lambda run: calls.append(("start", len(steps))) or "p")
    monkeypatch.setattr(profile, "finish", lambda prof, run, out: calls.append(
        ("finish", len(steps), prof)) or {"top": []})
    f = tiny_training(tmp_path, loss_fn, profile=True, warmup_steps=4)
    assert calls == [("start", 1), ("finish", 3, "p")]
    assert f["profile"] == {"top": []} and f["stopped"] == "epochs" and f["steps"] == 10


def test_a_non_finite_loss_stops_the_run_and_names_its_step(tmp_path):
    calls = []

    def loss_fn(logits, labels):  # finite for 5 steps, then nan
        calls.append(1)
        loss = torch.nn.functional.cross_entropy(logits, labels)
        return loss * float("nan") if len(calls) > 5 else loss
    f = tiny_training(tmp_path, loss_fn)
    assert f["status"] == "failed" and "not finite at step 6" in f["error"]
    # found at the next progress line (step 8), not by a sync on every step
    assert f["steps"] == 8 and f["stopped"] == "nan"


def test_running_out_of_memory_names_the_batch_size(tmp_path):
    class Greedy(torch.nn.Linear):
        def forward(self, x):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
    with pytest.raises(UserError, match=r"out of device memory at --batch-size 4 per device "
                                        r"\(peak .* GiB reserved on CPU\); use a smaller"):
        tiny_training(tmp_path, torch.nn.functional.cross_entropy, model=Greedy(2, 2))


def spoil(path, how):
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 3] if how == "truncated" else b"not a jpeg at all")


@pytest.fixture
def spoilt(tmp_path):
    root = make_dataset.write(str(tmp_path / "data"), classes=2, train_per_class=8,
                              val_per_class=3, size=40)
    bad = os.path.join(root, "train", "n00000001", sorted(os.listdir(
        os.path.join(root, "train", "n00000001")))[2])
    spoil(bad, "truncated")
    return root, bad


def test_a_bad_training_image_stops_the_run_naming_it(spoilt, tmp_path):
    root, bad = spoilt
    proc = run_script(["resnet50/train.py", "--data-dir", root, *QUICK, "--out", tmp_path])
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: {bad}: cannot be decoded (")
    assert lines[0].endswith("replace or delete it (or pass --skip-bad-images)")
    assert "Traceback" not in proc.stderr


def test_skip_bad_images_counts_them(spoilt, tmp_path):
    root, bad = spoilt
    proc = run_script(["resnet50/train.py", "--data-dir", root, *QUICK, "--epochs", 1,
                       "--skip-bad-images", "--out", tmp_path])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert only_record(tmp_path)["figures"]["bad_images_skipped"] == 1
    assert f"skipped {bad}" in proc.stderr


def test_a_bad_validation_image_is_never_skipped(spoilt, tmp_path):
    root, _ = spoilt
    bad = os.path.join(root, "val", "n00000000", sorted(os.listdir(
        os.path.join(root, "val", "n00000000")))[0])
    spoil(bad, "garbage")
    proc = run_script(["resnet50/infer.py", "--data-dir", root, "--image-size", 32,
                       "--batch-size", 4, "--workers", 1, "--engine", "eager",
                       "--latency-calls", 2, "--out", tmp_path])
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"error: {bad}: cannot be decoded" in proc.stderr
    assert "every validation image counts" in proc.stderr and "Traceback" not in proc.stderr


def rank_pids(agent_pid):
    """{rank: pid} of the worker processes a torchrun agent started."""
    found = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = dict(v.split(b"=", 1) for v in f.read().split(b"\0") if b"=" in v)
        except (OSError, ValueError):
            continue
        if ppid == agent_pid and b"RANK" in env:
            found[int(env[b"RANK"])] = int(entry)
    return found


def test_a_dead_rank_ends_the_run_soon_and_is_named(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-port", str(_free_port()), "resnet50/train.py", "--synthetic",
           "--image-size", 32, "--batch-size", 2, "--num-classes", 10, "--print-freq", 1,
           "--max-steps", 100000, "--out", tmp_path]
    proc = subprocess.Popen([str(c) for c in cmd], cwd=ROOT, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    for line in proc.stdout:
        if "step 3/" in line:
            break
    os.kill(rank_pids(proc.pid)[1], signal.SIGKILL)
    t0 = time.monotonic()
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode != 0 and time.monotonic() - t0 < 60
    assert "rank    : 1" in out or "rank: 1" in out, out[-3000:]
    assert "Signal 9 (SIGKILL)" in out


def test_run_all_goes_on_past_a_failing_case_and_marks_it(dataset, tmp_path):
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "BiT-M-R152x2.npz").write_bytes(b"not an npz")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DATA_DIR": str(dataset), "NPROC": "1",
           "OUT": str(tmp_path / "out"), "WEIGHTS_DIR": str(weights),
           "CASES": "bit_train mobilenetv2_train", "MASTER_PORT": str(_free_port()),
           "EXTRA_ARGS": "--max-steps 3 --warmup-steps 1 --image-size 32 --batch-size 4 "
                         "--workers 1 --eval-every 0"}
    proc = subprocess.run(["bash", "run_all.sh"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "run_all: failed: bit_train" in proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    failed = [r for r in rows if "BiT-M" in r or "bit" in r]
    assert len(failed) == 1 and "[failed: --weights" in failed[0] and "not an .npz" in failed[0]
    # the case after it ran to its end: a short run, not a failed one
    mobilenetv2 = proc.stdout.split("Training: mobilenetv2")[1].split("\n\n")[1]
    (row,) = [line for line in mobilenetv2.splitlines() if line.startswith("| CPU")]
    assert "[failed" not in row and "short run, throughput only]" in row


def test_debug_shows_the_traceback_of_a_user_error(tmp_path):
    args = ["resnet50/train.py", "--data-dir", tmp_path / "nowhere"]
    plain, debug = run_script(args), run_script([*args, "--debug"])
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    assert debug.returncode != 0 and "Traceback" in debug.stderr
    assert "DataError: --data-dir" in debug.stderr and "no such directory" in debug.stderr


def test_compile_keeps_compilation_out_of_the_timed_region(tmp_path):
    proc = run_script(["vit/train.py", "--model", "vit_tiny", "--synthetic", "--compile",
                       "--grad-accum", 1, "--image-size", 32, "--batch-size", 4, "--num-classes", 10,
                       "--max-steps", 4, "--warmup-steps", 2, "--synthetic-steps", 4,
                       "--out", tmp_path])
    assert proc.returncode == 0, proc.stderr[-3000:]
    f = only_record(tmp_path)["figures"]
    # the first step compiled; the timed region is steps 3 and 4
    assert f["compile_s"] > 0 and f["timed_steps"] == 2
    assert f["compile_s"] > f["step_core_ms"]["p99"] / 1000


def test_compile_without_warmup_is_refused_in_one_line():
    proc = run_script(["resnet50/train.py", "--synthetic", "--compile", "--warmup-steps", 0,
                       "--image-size", 32, "--batch-size", 2, "--num-classes", 10])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "error: --compile: compiling happens in the first step; give --warmup-steps 1" \
        in proc.stderr


def test_profile_covers_warmup_steps_only(tmp_path):
    proc = run_script(["resnet50/train.py", "--synthetic", "--profile", "--image-size", 32,
                       "--batch-size", 2, "--num-classes", 10, "--max-steps", 6,
                       "--warmup-steps", 4, "--synthetic-steps", 6, "--out", tmp_path])
    assert proc.returncode == 0, proc.stderr[-3000:]
    f = only_record(tmp_path)["figures"]
    top = f["profile"]["top"]
    assert f["profile"]["clock"] == "cpu" and 0 < len(top) <= 12
    assert sum(t["share"] for t in top) <= 1.0 + 1e-9
    assert any("convolution" in t["op"] for t in top[:3])  # a ResNet's time is in its convs
    assert os.path.getsize(f["profile"]["table"]) > 0
    assert f["timed_steps"] == 2  # steps 5 and 6, unprofiled


def test_profile_without_room_in_warmup_is_one_line():
    proc = run_script(["resnet50/train.py", "--synthetic", "--profile", "--warmup-steps", 2,
                       "--image-size", 32, "--batch-size", 2, "--num-classes", 10])
    assert proc.returncode == 2 and "give --warmup-steps 3 or more" in proc.stderr


class UnreadableLoss:
    """A loss that fails the test when read: reading it waits for the device."""

    def item(self):
        raise AssertionError("a rank that does not print read the loss")


def test_only_the_printing_rank_reads_the_loss(capsys):
    cpu = device.select("cpu")
    for rank in (1, 0):
        run = Run(rank=rank, local_rank=rank, world_size=2, local_world_size=2, device=cpu)
        progress = step_line(run, total_steps=10, step=0, rows=[], t0=0.0)
        loss = UnreadableLoss() if rank else torch.tensor(0.5)
        progress(0, 2, loss, 2, 0.1, 4)
    assert capsys.readouterr().out.startswith("epoch 1 step 2/10 loss 1.0000 lr 0.1 ")


@pytest.mark.parametrize("max_steps, epoch, batch, schedule_steps", [
    (14, 1, 4, 1),  # cut inside the second epoch: it stays unfinished, not stepped
    (20, 2, 0, 2),  # the second epoch ran to its end
])
def test_a_run_cut_short_inside_an_epoch_keeps_its_place(tmp_path, max_steps, epoch, batch,
                                                         schedule_steps):
    """--max-steps inside an epoch: the final checkpoint resumes inside that epoch, and
    its per-epoch schedule is not stepped for an epoch that did not finish."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
    batches = [(torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8),
                torch.randint(0, 4, (4,))) for _ in range(10)]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1, 0.5)
    args = loop_args(tmp_path, epochs=3, max_steps=max_steps, keep_checkpoint=True)
    f, _ = train_loop.train(cpu_run(), args, model, optimizer, train_loader=batches,
                         val_loader=None, normalize=lambda x: x.float() / 255,
                         loss_fn=torch.nn.CrossEntropyLoss(), scheduler=scheduler)
    assert f["stopped"] == "max_steps" and f["steps"] == max_steps
    (final,) = [p for p in (tmp_path / "checkpoints").iterdir() if p.name.endswith("-final.pt")]
    state = torch.load(final, weights_only=True)
    assert (state["epoch"], state["batch"]) == (epoch, batch)
    assert state["scheduler"]["last_epoch"] == schedule_steps
