"""The training loop and exact evaluation every `train.py` calls.

A recipe hands over its model, optimizer, schedule, loss and batch transform; the loop
owns the clocks, mixed precision, DDP, evaluation, progress lines and stopping rules,
so every case is timed and evaluated the same way. A recipe that shards its model
itself (FSDP) says `sharded=True`: no DDP wrapper, and evaluation in lockstep.
"""
from __future__ import annotations

import contextlib
import itertools
import math
import time

import torch
import torch.nn.functional as F
import torch.utils.data as tud
from torch.nn.parallel import DistributedDataParallel as DDP

from common import data, dist, monitor
from common.clocks import TrainClocks
from common.errors import UserError
from common.flops import flops_per_image


def _lockstep_batches(loader, run):
    """(batch, counted) pairs: the loader's batches, then repeats of its last one that
    count for nothing, until this rank has run as many forwards as the busiest rank."""
    (most,) = dist.max_all(run, [len(loader)])
    batch = None
    for batch in loader:
        yield batch, True
    if batch is None and most > 0:
        # an empty shard (fewer images than ranks) still has to join every forward
        batch = tud.default_collate([loader.dataset[0]])
    for _ in range(int(most) - len(loader)):
        yield batch, False


def evaluate(model, loader, run, normalize, precision, lockstep=False):
    """Top-1/top-5 in percent over every image of the loader's dataset exactly once
    across ranks: correct counts summed over ranks, then divided by the image count.
    `model` must be the bare module (no DDP wrapper: shards may differ in length).
    lockstep=True for a sharded model, whose every forward is a collective: each rank
    runs the same number of forwards, the extra ones on a repeated batch not counted."""
    batches = _lockstep_batches(loader, run) if lockstep else ((b, True) for b in loader)
    was_training = model.training
    model.eval()
    dev = run.device.torch_device
    correct1 = torch.zeros((), dtype=torch.long, device=dev)
    correct5 = torch.zeros((), dtype=torch.long, device=dev)
    loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
    n = 0
    with torch.inference_mode(), run.device.autocast(precision):
        for batch, counted in batches:
            images, labels = data.to_device(batch, run)
            logits = model(normalize(images)).float()
            if not counted:
                continue
            loss_sum += F.cross_entropy(logits, labels, reduction="sum")
            top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices
            hits = top5.eq(labels[:, None])
            correct1 += hits[:, 0].sum()
            correct5 += hits.any(dim=1).sum()
            n += labels.shape[0]
    model.train(was_training)
    c1, c5, loss, n = dist.sum_all(run, [correct1.item(), correct5.item(), loss_sum.item(), n])
    if n == 0:
        return {"top1": None, "top5": None, "loss": None, "images": 0}
    return {"top1": 100.0 * c1 / n, "top5": 100.0 * c5 / n, "loss": loss / n, "images": int(n)}


def place_model(model, args, run):
    """Move the model to the device (channels-last if asked); returns it and its
    forward FLOPs per image, counted before training starts."""
    model = model.to(run.device.torch_device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, flops_per_image(model, args.image_size, run.device.torch_device)


def _fmt_eta(seconds):
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


@contextlib.contextmanager
def _local_grads(net):
    """Keep this micro-batch's gradients on the rank: DDP's no_sync, or FSDP2's switch."""
    if hasattr(net, "no_sync"):
        with net.no_sync():
            yield
        return
    net.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        net.set_requires_gradient_sync(True)


def train(run, args, model, optimizer, *, train_loader, val_loader, normalize, loss_fn,
          scheduler=None, scheduler_per="epoch", batch_transform=None, grad_accum=1,
          clip_grad=None, sharded=False):
    """Train until the target accuracy, --epochs or --max-steps, whichever comes first.

    sharded=True: the model is already sharded over the ranks (FSDP2 fully_shard), so
    it is not wrapped in DDP and is evaluated in lockstep.
    Uses args.{epochs, max_steps, warmup_steps, eval_every, target_acc, precision,
    print_freq}. Returns the figures of METRICS.md's training clocks plus accuracy."""
    dev = run.device
    dev.reset_peak_memory()
    clocks = TrainClocks(dev, args.warmup_steps)
    mon = monitor.start(run, args)
    scaler = dev.grad_scaler(args.precision)
    net = model
    if run.distributed and not sharded:
        net = DDP(model, device_ids=None if dev.type == "cpu" else [dev.index])
    steps_per_epoch = len(train_loader) // grad_accum
    if steps_per_epoch == 0:
        raise UserError(f"--grad-accum {grad_accum}: more than the {len(train_loader)} "
                         f"batches of one epoch; use a smaller value")
    total_steps = args.epochs * steps_per_epoch
    if args.max_steps:
        total_steps = min(total_steps, args.max_steps)
    step, evals, stop = 0, [], None
    last_print, last_print_step = time.perf_counter(), 0
    dist.print0(run, f"training {total_steps} steps ({steps_per_epoch} per epoch, "
                     f"{args.warmup_steps} warm-up steps untimed) on {run.world_size} x {dev.label}")
    for epoch in range(args.epochs):
        if getattr(train_loader, "sampler", None) is not None and hasattr(train_loader.sampler, "set_epoch"):
            train_loader.sampler.set_epoch(epoch)
        model.train()
        batches = itertools.islice(train_loader, steps_per_epoch * grad_accum)
        for i, batch in enumerate(batches):
            images, labels = data.to_device(batch, run)
            clocks.begin_step()
            last = (i + 1) % grad_accum == 0
            n_images = images.shape[0]
            images = normalize(images)
            if batch_transform is not None:
                images, labels = batch_transform(images, labels)
            # gradients are all-reduced once per optimizer step, not per micro-batch
            sync = contextlib.nullcontext() if last or not run.distributed else _local_grads(net)
            with sync:
                with dev.autocast(args.precision):
                    loss = loss_fn(net(images), labels) / grad_accum
                scaler.scale(loss).backward()
            if last:
                if clip_grad:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                if scheduler is not None and scheduler_per == "step":
                    scheduler.step()
            clocks.end_step(n_images, last=last)
            if not last:
                continue
            step += 1
            if step % args.print_freq == 0 or step == total_steps:
                loss_value = loss.item() * grad_accum
                if not math.isfinite(loss_value):
                    raise FloatingPointError(f"loss is {loss_value} at step {step}; lower --lr "
                                             f"or use another --precision")
                now = time.perf_counter()
                rate = (step - last_print_step) * n_images * grad_accum * run.world_size / (now - last_print)
                eta = (now - last_print) / (step - last_print_step) * (total_steps - step)
                dist.print0(run, f"epoch {epoch + 1} step {step}/{total_steps} loss {loss_value:.4f} "
                                 f"lr {optimizer.param_groups[0]['lr']:.4g} {rate:.1f} img/s "
                                 f"eta {_fmt_eta(eta)}")
                last_print, last_print_step = now, step
            if step >= total_steps:
                break
        if scheduler is not None and scheduler_per == "epoch":
            scheduler.step()
        finished = step >= total_steps
        if val_loader is not None and args.eval_every and (
                (epoch + 1) % args.eval_every == 0 or finished):
            with clocks.paused("eval"):
                result = evaluate(model, val_loader, run, normalize, args.precision,
                                  lockstep=sharded)
            evals.append({"epoch": epoch + 1, "step": step, **result})
            dist.print0(run, f"eval epoch {epoch + 1} step {step}: top1 {result['top1']:.2f} "
                             f"top5 {result['top5']:.2f} loss {result['loss']:.4f} "
                             f"over {result['images']} images")
            if args.target_acc and result["top1"] >= args.target_acc:
                stop = "target_acc"
                break
        if finished:
            stop = "max_steps" if args.max_steps and step >= args.max_steps else "epochs"
            break
    figures = clocks.figures(run)
    monitor.stop(mon)
    figures["monitor"] = monitor.summary(run, mon, clocks.window, figures["images"], args)
    figures.update(dist.memory_figures(run))
    figures.update(steps=step, epochs_run=epoch + 1, stopped=stop or "epochs", evals=evals,
                   acc=evals[-1]["top1"] if evals else None,
                   acc5=evals[-1]["top5"] if evals else None)
    return figures
