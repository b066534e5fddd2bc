"""--batch-size auto: the largest per-device batch whose training step fits in memory.

The search runs before the first step, on the model and optimizer the recipe built:
it halves from AUTO_BATCH_START (or a rank's share of the data) on out-of-memory, puts
back every weight, optimizer state and random state it disturbed, and settles the
recipe again at the batch found (the lr and accumulation follow the global batch).
"""
from __future__ import annotations

import torch

from common import cli, data, dist, recipe
from common.errors import UserError

AUTO_BATCH_START = 1024


def _trains(run, args, model, optimizer, loss_fn, normalize, batch_size):
    """True when a training step at `batch_size` fits in device memory."""
    dev = run.device
    loss = None
    try:
        x = torch.randint(0, 256, (batch_size, 3, args.image_size, args.image_size),
                          dtype=torch.uint8, device=dev.torch_device)
        y = torch.zeros(batch_size, dtype=torch.long, device=dev.torch_device)
        with dev.autocast(run.precision):
            loss = loss_fn(model(normalize(x)), y)
        loss.backward()
        optimizer.step()  # the optimizer's state takes memory too
        dev.synchronize()
        return True
    except Exception as e:
        if not dev.is_out_of_memory(e):
            raise
        return False
    finally:
        x = y = loss = None
        optimizer.zero_grad(set_to_none=True)
        dev.empty_cache()


def find_batch_size(run, args, model, optimizer, loss_fn, normalize, images=None):
    """The largest per-device batch that trains, halving from 1024 (or a rank's share
    of the data) on out-of-memory; the smallest over ranks. The model, optimizer and
    random state are put back as they were. A cpu reports no out-of-memory (the system
    kills the process instead), so there the recipe's batch is kept, and said so."""
    if not run.device.reports_out_of_memory:
        return None, {"searched": False,
                      "reason": f"a {run.device.type} does not report out-of-memory"}
    weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    # the trial steps draw on both random states (dropout, mixup on the device)
    rng, device_rng = torch.get_rng_state(), run.device.rng_state()
    batch = AUTO_BATCH_START if images is None else min(AUTO_BATCH_START,
                                                        images // run.world_size)
    tried = []
    while batch >= 1:
        tried.append(batch)
        if _trains(run, args, model, optimizer, loss_fn, normalize, batch):
            break
        batch //= 2
    model.load_state_dict(weights)
    optimizer.state.clear()
    torch.set_rng_state(rng)
    run.device.set_rng_state(device_rng)
    if batch < 1:
        raise UserError(f"--batch-size auto: not even one image per device fits in the "
                        f"{run.device.total_memory() / 1024 ** 3:.1f} GiB of "
                        f"{run.device.label}")
    (smallest,) = dist.max_all(run, [-batch])
    return int(-smallest), {"searched": True, "tried": tried}


def settle(run, args, model, optimizer, scheduler, loss_fn, normalize, train_loader,
           val_loader, sharded):
    """Settle --batch-size auto: args.batch_size becomes the batch found (or the
    recipe's), the loaders are rebatched; returns them and what the search did."""
    if sharded:
        raise UserError("--batch-size auto: not with --fsdp (a sharded step is a "
                        "collective); give a number")
    dataset = getattr(train_loader, "dataset", None)
    found, search = find_batch_size(run, args, model, optimizer, loss_fn, normalize,
                                    len(dataset) if dataset is not None else None)
    args.batch_size = search["batch_size"] = found or args.recipe_batch_size
    how = f"tried {search['tried']}" if found else f"{search['reason']}: the recipe's batch"
    dist.print0(run, f"--batch-size auto: {args.batch_size} per device ({how})")
    if args.recipe:  # the lr (and accumulation) follow the global batch found
        lr = args.lr
        recipe.settle(args, run.world_size)
        scale_lr(optimizer, scheduler, args.lr / lr)
    train_loader = data.rebatched(train_loader, args.batch_size, run)
    # the epoch has another length now
    cli.check_steps(args, len(train_loader), f"the data at --batch-size {args.batch_size}")
    return train_loader, data.rebatched(val_loader, args.batch_size, run), search


def scale_lr(optimizer, scheduler, factor):
    """Multiply the learning rate of every group, and every lr its schedule scales from,
    by `factor`: each schedule the recipes use is linear in its base lr, so this is the
    schedule as built at the new lr."""
    for group in optimizer.param_groups:
        for key in ("lr", "initial_lr"):
            if key in group:
                group[key] *= factor
    for sched in [scheduler, *getattr(scheduler, "_schedulers", [])]:  # SequentialLR's parts
        if hasattr(sched, "base_lrs"):
            sched.base_lrs = [lr * factor for lr in sched.base_lrs]
