"""The training loop and exact evaluation every `train.py` calls.

A recipe hands over its model, optimizer, schedule, loss and batch transform; the loop
owns the clocks, mixed precision, DDP, evaluation, progress lines and stopping rules,
so every case is timed and evaluated the same way. A recipe that shards its model
itself (FSDP) says `sharded=True`: no DDP wrapper, and evaluation in lockstep.
"""
from __future__ import annotations

import contextlib
import itertools
import signal
import sys
import threading
import time

import torch
import torch.nn.functional as F
import torch.utils.data as tud
from torch.nn.parallel import DistributedDataParallel as DDP

from common import checkpoint, cli, data, dist, history, monitor, optim, profile, progress
from common import clocks as clocks_mod
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


def evaluate(model, loader, run, normalize, *, lockstep=False):
    """Top-1/top-5 in percent over every image of the loader's dataset exactly once
    across ranks: correct counts summed over ranks, then divided by the image count.
    `model` must be the bare module (no DDP wrapper: shards may differ in length).
    lockstep=True for a sharded model, whose every forward is a collective: each rank
    runs the same number of forwards, the extra ones on a repeated batch not counted."""
    batches = _lockstep_batches(loader, run) if lockstep else ((b, True) for b in loader)
    tick = progress.pass_progress(run, "eval", progress.images_in(loader, run))
    was_training = model.training
    model.eval()
    dev = run.device.torch_device
    correct1 = torch.zeros((), dtype=torch.long, device=dev)
    correct5 = torch.zeros((), dtype=torch.long, device=dev)
    loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
    n = 0
    with torch.inference_mode(), run.device.autocast(run.precision):
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
            tick(n * run.world_size)
    model.train(was_training)
    c1, c5, loss, n = dist.sum_all(run, [correct1.item(), correct5.item(), loss_sum.item(), n])
    tick(int(n), final=True)
    if n == 0:
        return {"top1": None, "top5": None, "loss": None, "images": 0}
    return {"top1": 100.0 * c1 / n, "top5": 100.0 * c5 / n, "loss": loss / n, "images": int(n)}


def place_model(model, args, run):
    """Move the model to the device (channels-last if asked); returns it and its
    forward FLOPs per image, counted before training starts."""
    model = model.to(run.device.torch_device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, flops_per_image(model, args.image_size)


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


def fsdp_dtypes(precision):
    """FSDP2's mixed precision for a Precision: one that autocasts (amp, bf16) has the
    weights gathered in its autocast dtype (half the traffic, and no cast per layer),
    gradients reduced in fp32 (a sum over many ranks in fp16 or bf16 loses bits); fp32
    and tf32 keep everything fp32."""
    low = precision.autocast_dtype
    return {"param_dtype": low, "reduce_dtype": torch.float32} if low else {}


def _is_oom(e):
    oom = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    return isinstance(e, oom) or "out of memory" in str(e).lower()


def _oom_error(run, args):
    # this rank's figures only: a collective now could meet other ranks mid-step
    peak = run.device.peak_memory() or 0
    return UserError(f"out of device memory at --batch-size {args.batch_size} per device "
                     f"(peak {peak / 1024 ** 3:.1f} of {run.device.total_memory() / 1024 ** 3:.1f}"
                     f" GiB reserved on {run.device.label}); use a smaller --batch-size")


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
        if not _is_oom(e):
            raise
        return False
    finally:
        x = y = loss = None
        optimizer.zero_grad(set_to_none=True)
        dev.empty_cache()


def find_batch_size(run, args, model, optimizer, loss_fn, normalize, images=None):
    """--batch-size auto: the largest per-device batch that trains, halving from 1024
    (or a rank's share of the data) on out-of-memory; the smallest over ranks. The model,
    optimizer and random state are put back as they were. A cpu reports no
    out-of-memory (the system kills the process instead), so there the recipe's batch
    is kept, and said so."""
    if run.device.type == "cpu":
        return None, {"searched": False, "reason": "a cpu does not report out-of-memory"}
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


def _auto_batch(run, args, model, optimizer, scheduler, loss_fn, normalize, train_loader,
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
        cli.settle_recipe(args, run.world_size)
        scale_lr(optimizer, scheduler, args.lr / lr)
    return (data.rebatched(train_loader, args.batch_size, run),
            data.rebatched(val_loader, args.batch_size, run), search)


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


def _resume(state, clocks, run):
    """(step, evals, epoch, batch, the record's `resumed` block) where the checkpoint
    `state` stopped, its clocks carried on; a fresh start when `state` is None."""
    if state is None:
        return 0, [], 0, 0, None
    clocks.restore(state["clocks"])
    before = state.get("resumed") or {"restarts": 0, "restart_s": 0.0}
    resumed = {"checkpoint": state["path"], "from_step": state["step"],
               "restarts": before["restarts"] + 1,
               # start-up of this process (and of earlier restarts): in e2e_time only
               "restart_s": before["restart_s"] + clocks_mod.e2e_time(),
               "e2e_before_s": state["e2e_s"]}
    dist.print0(run, f"resuming from {state['path']} at step {state['step']} "
                     f"(epoch {state['epoch'] + 1})")
    return state["step"], state["evals"], state["epoch"], state["batch"], resumed


def _progress_line(run, total_steps, step, rows, t0):
    """A printer of the progress line: the rate and eta from the steps since its last
    line (a progress figure only: the record's figures come from the clocks). Each
    line's figures are appended to `rows` (history.STEP_COLUMNS, seconds from t0)."""
    last = {"t": time.perf_counter(), "step": step}

    def line(epoch, step, loss, grad_accum, lr, images_per_step):
        if not run.is_main:  # only rank 0 prints: the others never wait for the loss
            return
        now = time.perf_counter()
        steps, seconds = step - last["step"], now - last["t"]
        rate = steps * images_per_step * run.world_size / seconds
        eta = seconds / steps * (total_steps - step)
        loss = loss.item() * grad_accum  # a sync, on the printing rank only
        dist.print0(run, f"epoch {epoch + 1} step {step}/{total_steps} loss {loss:.4f} "
                         f"lr {lr:.4g} {rate:.1f} img/s eta {progress.fmt_eta(eta)}")
        rows.append([step, round(now - t0, 3), loss, rate])
        last.update(t=now, step=step)
    return line


def _data_words(args, train_loader, val_loader):
    if args.synthetic:
        return progress.data_words(args)
    return progress.data_words(args, train=len(train_loader.dataset),
                               val=len(val_loader.dataset))


class StopRequest:
    """SIGTERM, SIGHUP (a closed terminal or ssh session) or Ctrl-C asks the run to stop
    at the next agreed step, write its checkpoint and an incomplete record, and exit; a
    second Ctrl-C stops at once."""

    def __init__(self):
        self.signal = 0
        self._old = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        if self.signal and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signum  # the loader's workers ignore it (data.py): they carry on

    def close(self):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def train(run, args, model, optimizer, *, train_loader, val_loader, normalize, loss_fn,
          scheduler=None, scheduler_per="epoch", batch_transform=None, grad_accum=None,
          clip_grad=None, sharded=False):
    """Train until the target accuracy, --epochs or --max-steps, whichever comes first;
    resume from a checkpoint, write checkpoints, stop on a non-finite loss or a signal.

    sharded=True: the model is already sharded over the ranks (FSDP2 fully_shard), so
    it is not wrapped in DDP and is evaluated in lockstep.
    grad_accum defaults to args.grad_accum, as cli.settle_recipe set it.
    Uses args.{epochs, max_steps, warmup_steps, eval_every, target_acc,
    print_freq, checkpoint_every, resume, keep_checkpoint}. Returns the figures of
    docs/METRICS.md's training clocks plus accuracy, and the run's status."""
    dev = run.device
    compiling = getattr(args, "compile", False)  # its flag rules ran at start-up (cli)
    batch_search = None
    if args.batch_size == "auto":
        train_loader, val_loader, batch_search = _auto_batch(
            run, args, model, optimizer, scheduler, loss_fn, normalize, train_loader,
            val_loader, sharded)
    grad_accum = grad_accum or args.grad_accum
    dev.reset_peak_memory()
    clocks = TrainClocks(dev, args.warmup_steps)
    scaler = dev.grad_scaler(run.precision)
    ckpt = checkpoint.Checkpointer(run, args, model=model, optimizer=optimizer,
                                   scheduler=scheduler, scaler=scaler, sharded=sharded)
    step, evals, start_epoch, start_batch, resumed = _resume(ckpt.load(), clocks, run)
    mon = monitor.start(run, args)
    net = model
    if run.distributed and not sharded:
        # gradients live in the buckets DDP all-reduces: no copy in and out of them
        net = DDP(model, device_ids=None if dev.type == "cpu" else [dev.index],
                  gradient_as_bucket_view=True)
    profiling, profiler, profiled = getattr(args, "profile", False), None, None
    compile_s = None
    if compiling:
        net = torch.compile(net)  # evaluation stays eager, on `model`
        dist.print0(run, "torch.compile: the training step compiles in the first warm-up "
                         "step ...")
        dev.synchronize()
        compile_start = time.perf_counter()
    steps_per_epoch = len(train_loader) // grad_accum
    if batch_search is not None:  # rebatched: the epoch has another length now
        cli.check_steps(args, len(train_loader), f"the data at --batch-size {args.batch_size}")
    total_steps = args.epochs * steps_per_epoch
    if args.max_steps:
        total_steps = min(total_steps, args.max_steps)
    stop, error = None, None
    stopper = StopRequest()
    # the step at which the loss first was not finite, kept on the device: no sync per step
    first_bad = torch.zeros((), dtype=torch.long, device=dev.torch_device)
    started, step_rows = time.perf_counter(), []  # the history's clock and rows
    step_line = _progress_line(run, total_steps, step, step_rows, started)

    def save(epoch, batch, path=None):
        with clocks.paused("checkpoint"):
            e2e = clocks_mod.e2e_time(resumed)
            t0 = time.perf_counter()
            path = ckpt.save(step=step, epoch=epoch, batch=batch, evals=evals,
                             clocks_state=clocks.state(run), path=path,
                             extra={"e2e_s": e2e, "resumed": resumed})
            dist.print0(run, f"checkpoint: {path} at step {step} "
                             f"({time.perf_counter() - t0:.1f} s)")
            return path

    def check(now):
        """('nan', step), ('interrupted', signal) or None. The loss is read only when
        `now` (a sync); with several ranks they all ask then, and agree."""
        if run.distributed and not now:
            return None
        bad = first_bad.item() if now else 0
        sig = stopper.signal
        if run.distributed:
            bad, sig = dist.max_all(run, [bad, sig])
        if bad:
            return "nan", int(bad)
        return ("interrupted", int(sig)) if sig else None

    progress.header(run, args, "training", _data_words(args, train_loader, val_loader),
                    f"{total_steps} steps ({steps_per_epoch} per epoch), the first "
                    f"{args.warmup_steps} untimed (warm-up)",
                    cli.describe_recipe(args.recipe) if args.recipe else None)
    epoch, position = start_epoch, (start_epoch, start_batch)  # where a checkpoint resumes
    try:
        for epoch in range(start_epoch, args.epochs):
            sampler = getattr(train_loader, "sampler", None)
            if sampler is not None and hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch)
            skip = start_batch if epoch == start_epoch else 0
            if skip and hasattr(sampler, "skip"):
                sampler.skip = skip * train_loader.batch_size
            model.train()
            batches = itertools.islice(train_loader, steps_per_epoch * grad_accum - skip)
            for i, batch in enumerate(batches, start=skip):
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
                    with dev.autocast(run.precision):
                        loss = loss_fn(net(images), labels) / grad_accum
                    scaler.scale(loss).backward()
                first_bad = torch.where((first_bad == 0) & ~torch.isfinite(loss.detach()),
                                        step + 1, first_bad)
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
                position = (epoch, i + 1)
                if profiling and step == 1:
                    profiler = profile.start(args, run)
                elif profiler is not None and step == args.warmup_steps - 1:
                    profiled, profiler = profile.finish(profiler, run, args.out), None
                if compiling and compile_s is None:  # the first step: compilation and all
                    dev.synchronize()
                    compile_s = time.perf_counter() - compile_start
                    dist.print0(run, f"torch.compile: compiled in {compile_s:.1f} s")
                printing = step % args.print_freq == 0 or step == total_steps
                stop = check(printing)
                if stop:
                    break
                if printing:
                    step_line(epoch, step, loss, grad_accum,
                             optimizer.param_groups[0]["lr"], n_images * grad_accum)
                if step >= total_steps:
                    break
                if ckpt.due(step, None):
                    save(*position)
            if stop:
                break
            if scheduler is not None and scheduler_per == "epoch":
                scheduler.step()
            position = (epoch + 1, 0)
            finished = step >= total_steps
            if val_loader is not None and args.eval_every and (
                    (epoch + 1) % args.eval_every == 0 or finished):
                with clocks.paused("eval"):
                    result = evaluate(model, val_loader, run, normalize, lockstep=sharded)
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
            stop = check(True)
            if stop:
                break
            if ckpt.due(step, epoch + 1):
                save(*position)
    except Exception as e:
        if _is_oom(e):
            raise _oom_error(run, args) from None
        if "more than 1 value per channel" in str(e):  # batch norm over a single value
            raise UserError(f"--batch-size {args.batch_size} at --image-size {args.image_size}: "
                            f"batch norm needs more than one value per channel to train; give "
                            f"a larger --batch-size or --image-size") from None
        raise
    finally:
        stopper.close()
    status = "ok"
    if isinstance(stop, tuple) and stop[0] == "nan":
        status = "failed"
        error = (f"loss is not finite at step {stop[1]}; lower --lr or use another "
                 f"--precision")
        dist.print0(run, f"error: {error}", file=sys.stderr)
    elif isinstance(stop, tuple):
        status = "incomplete"
        path = save(*position)
        name = signal.Signals(stop[1]).name
        error = f"stopped by {name} at step {step}; the same command resumes from {path}"
        dist.print0(run, f"{error}", file=sys.stderr)
    if isinstance(stop, tuple):
        stop = stop[0]
    figures = clocks.figures(run)
    if figures.get("why_empty"):
        dist.print0(run, f"warning: p_whole, p_train and p_core are empty: "
                         f"{figures['why_empty']}", file=sys.stderr)
    monitor.stop(mon)
    figures["monitor"] = monitor.summary(run, mon, clocks.window, figures["images"], args)
    figures["history"] = {"steps": history.series(history.STEP_COLUMNS, step_rows),
                          "monitor": history.monitor_series(mon, started),
                          "timed_s": history.window_s(clocks.window, started)}
    figures.update(dist.memory_figures(run))
    bad = getattr(getattr(train_loader, "dataset", None), "bad", None)
    (skipped,) = dist.sum_all(run, [bad.value if bad is not None else 0])
    figures.update(steps=step, epochs_run=epoch + 1, stopped=stop or "epochs", evals=evals,
                   acc=evals[-1]["top1"] if evals else None,
                   acc5=evals[-1]["top5"] if evals else None,
                   bad_images_skipped=int(skipped), resumed=resumed, status=status, error=error,
                   batch_size_search=batch_search, compile_s=compile_s, profile=profiled,
                   optimizer=optim.describe(optimizer))
    if status == "ok":
        if args.keep_checkpoint:
            save(epoch + 1, 0, path=ckpt.path[:-3] + "-final.pt")
        # removed only once the record is on disk (report.conclude): never neither
        figures["served_checkpoint"] = ckpt.remove
    return figures
