"""--batch-size auto, each fact once: the search halves on out-of-memory and puts back
what it disturbed, a CPU keeps the recipe's batch, the recipe is settled again at the
batch found (its lr scaled into the schedule already built), and only training takes it."""
import pytest
import torch
from conftest import run_script
from test_recipes import settled
from test_resnet50 import only_record

from bit import train as bit_train
from common import auto_batch, recipe
from common.auto_batch import scale_lr
from common.dist import Run


def test_auto_batch_size_halves_on_oom_and_puts_everything_back(monkeypatch):
    """On an accelerator, --batch-size auto tries 1024, 512, ... until a step fits, then
    restores the weights, the optimizer state and the random states it disturbed: the
    host's and the device's (here a generator of its own, read through the shim)."""
    import types
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    tried = []

    def fake_step(run, args, model, optimizer, loss_fn, normalize, batch_size):
        tried.append(batch_size)
        model.weight.data.add_(1.0)  # what a real attempt's optimizer step does
        optimizer.state[model.weight]["momentum_buffer"] = torch.ones(2, 4)
        torch.rand(3)
        torch.rand(3, generator=device_rng)  # dropout or mixup on the device
        return batch_size <= 200  # fits up to 200 images
    monkeypatch.setattr(auto_batch, "_trains", fake_step)
    device_rng = torch.Generator().manual_seed(7)
    device_rng_before = device_rng.get_state()
    accelerator = types.SimpleNamespace(type="cuda", label="X", total_memory=lambda: 2 ** 30,
                                        reports_out_of_memory=True,
                                        rng_state=device_rng.get_state,
                                        set_rng_state=device_rng.set_state)
    run = Run(rank=0, local_rank=0, world_size=1, local_world_size=1, device=accelerator)
    found, search = auto_batch.find_batch_size(run, None, model, optimizer, None, None,
                                               images=700)
    assert found == 175  # 700 -> 350 -> 175: the first that fits
    assert tried == [700, 350, 175] and search == {"searched": True, "tried": [700, 350, 175]}
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not optimizer.state and torch.equal(torch.get_rng_state(), rng)
    assert torch.equal(device_rng.get_state(), device_rng_before)


def test_auto_batch_size_on_a_cpu_keeps_the_recipe_batch(tmp_path):
    proc = run_script(["resnet50/train.py", "--synthetic", "--batch-size", "auto",
                       "--image-size", 32, "--num-classes", 10, "--max-steps", 2,
                       "--warmup-steps", 1, "--synthetic-steps", 2, "--out", tmp_path])
    assert proc.returncode == 0, proc.stderr[-2000:]
    rec = only_record(tmp_path)
    assert rec["batch_size"] == 32 and rec["fix_hp"]["img"] == 32
    assert rec["figures"]["batch_size_search"]["searched"] is False
    assert "a cpu does not report out-of-memory" in proc.stdout


def test_settling_again_after_an_auto_batch_uses_what_the_user_gave():
    args, _ = settled("vit", 8, "--batch-size", "auto")
    assert (args.grad_accum, args.lr) == (2, 0.003)  # the recipe's batch while searching
    args.batch_size = 64
    recipe.settle(args, 8)
    assert (args.grad_accum, args.recipe["global_batch"], args.lr) == (8, 4096, 0.003)


def test_scaling_the_lr_later_is_the_schedule_built_at_that_lr():
    """--batch-size auto scales the lr once the optimizer and schedule exist."""
    def vit_schedule(lr):
        opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=lr)
        sched = torch.optim.lr_scheduler.SequentialLR(opt, [
            torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.033, total_iters=3),
            torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=5)], milestones=[3])
        return opt, sched

    def lrs(opt, sched):
        out = []
        for _ in range(8):
            opt.step()
            sched.step()
            out.append(opt.param_groups[0]["lr"])
        return out

    scaled = vit_schedule(0.003)
    scale_lr(*scaled, 0.25)
    assert lrs(*scaled) == pytest.approx(lrs(*vit_schedule(0.00075)))
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.003)
    sched = bit_train.hyperrule_schedule(opt, warmup_steps=2, decay_steps=(4,))
    scale_lr(opt, sched, 2)
    opt2 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.006)
    assert lrs(opt, sched) == pytest.approx(
        lrs(opt2, bit_train.hyperrule_schedule(opt2, warmup_steps=2, decay_steps=(4,))))


@pytest.mark.parametrize("script, value, message", [
    ("resnet50/train.py", "0", "'0': give a positive number of images per device, or auto"),
    ("resnet50/infer.py", "auto", "'auto': give a positive number of images per device"),
])
def test_bad_batch_size_is_one_line(script, value, message):
    proc = run_script([script, "--synthetic", "--batch-size", value])
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
