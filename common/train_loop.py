"""The training run every `train.py` calls: its steps, epochs, evaluations, checkpoints
and the figures it ends with.

A recipe hands over its model, optimizer, schedule, loss and batch transform; the run
owns the clocks, mixed precision, DDP, evaluation (common/evaluate.py), progress lines
and stopping rules (common/stops.py), so every case is timed and evaluated the same
way. A recipe that shards its model itself (FSDP) says `sharded=True`: no DDP wrapper,
and evaluation in lockstep.
"""
from __future__ import annotations

import contextlib
import itertools
import signal
import sys
import time
from dataclasses import dataclass, field

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from common import (auto_batch, checkpoint, data, dist, history, left_behind, mlperf_log,
                    monitor, optim, profile, progress, recipe)
from common import clocks as clocks_mod
from common.clocks import TrainClocks
from common.evaluate import evaluate
from common.flops import flops_per_image
from common.stops import Stop, StopRequest, failed_step


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


@dataclass
class State:
    """Where the run is: what a checkpoint saves and a resume starts from. A resume
    starts in `epoch` after its first `batch` batches (batch 0 once an epoch is done)."""
    step: int = 0
    epoch: int = 0
    batch: int = 0
    evals: list = field(default_factory=list)
    resumed: dict | None = None  # the record's `resumed` block


def _resume(state, clocks, run):
    """The State where the checkpoint `state` stopped, its clocks carried on; a fresh
    start when `state` is None."""
    if state is None:
        return State()
    clocks.restore(state["clocks"])
    before = state.get("resumed") or {"restarts": 0, "restart_s": 0.0}
    resumed = {"checkpoint": state["path"], "from_step": state["step"],
               "restarts": before["restarts"] + 1,
               # start-up of this process (and of earlier restarts): in e2e_time only
               "restart_s": before["restart_s"] + clocks_mod.e2e_time(),
               "e2e_before_s": state["e2e_s"]}
    dist.print0(run, f"resuming from {state['path']} at step {state['step']} "
                     f"(epoch {state['epoch'] + 1})")
    return State(state["step"], state["epoch"], state["batch"], state["evals"], resumed)


def _wrap(model, run, sharded):
    """The module the steps call: DDP over the ranks, unless the recipe sharded the model."""
    if not run.distributed or sharded:
        return model
    # gradients live in the buckets DDP all-reduces: no copy in and out of them
    return DDP(model, device_ids=run.device.ddp_device_ids(), gradient_as_bucket_view=True)


class Training:
    """One training run, set up once (wrapping, clocks, checkpointer, resume, monitor),
    then run epoch by epoch (epochs()) and summed up (outcome(), figures()). `state` is
    where the run is, which save() writes; check() reads the first non-finite step and
    any signal, and stops the run on either. `after_step` maps a step to what runs once
    it is done (the profiler's window, the compile time), so the steps between carry no
    such branch."""

    def __init__(self, run, args, model, optimizer, *, train_loader, val_loader, normalize,
                 loss_fn, scheduler, scheduler_per, batch_transform, grad_accum, clip_grad,
                 sharded):
        self.run, self.args, self.model, self.optimizer = run, args, model, optimizer
        self.train_loader, self.val_loader = train_loader, val_loader
        self.normalize, self.loss_fn, self.batch_transform = normalize, loss_fn, batch_transform
        self.scheduler, self.scheduler_per = scheduler, scheduler_per
        self.grad_accum, self.clip_grad, self.sharded = grad_accum, clip_grad, sharded
        dev = run.device
        dev.reset_peak_memory()
        self.clocks = TrainClocks(dev, args.warmup_steps)
        self.scaler = dev.grad_scaler(run.precision)
        self.ckpt = checkpoint.Checkpointer(run, args, model=model, optimizer=optimizer,
                                            scheduler=scheduler, scaler=self.scaler,
                                            sharded=sharded)
        self.state = _resume(self.ckpt.load(), self.clocks, run)
        self.monitor = monitor.start(run, args)
        # its epochs and evaluations; record.finish writes it beside the record
        self.mlperf = run.mlperf_log = mlperf_log.RunLog(
            run, args, optimizer, train_loader, val_loader, start=clocks_mod.E2E_START)
        self.net = _wrap(model, run, sharded)
        self.after_step, self.compile_s, self.profiler, self.profiled = {}, None, None, None
        if args.compile:
            self._compile()
        if args.profile:
            self._profile_warmup()
        self.steps_per_epoch = len(train_loader) // grad_accum
        self.total_steps = args.epochs * self.steps_per_epoch
        if args.max_steps:
            self.total_steps = min(self.total_steps, args.max_steps)
        self.stopper = StopRequest()
        # the step at which the loss first was not finite, kept on the device: no sync per step
        self.first_bad = torch.zeros((), dtype=torch.long, device=dev.torch_device)
        self.started, self.step_rows = time.perf_counter(), []  # the history's clock and rows
        self.step_line = progress.step_line(run, self.total_steps, self.state.step,
                                            self.step_rows, self.started)

    def _at(self, step, action):
        self.after_step.setdefault(step, []).append(action)

    def _compile(self):
        """torch.compile the training step; compile_s runs to the end of the first step."""
        run = self.run
        self.net = torch.compile(self.net)  # evaluation stays eager, on `model`
        dist.print0(run, "torch.compile: the training step compiles in the first warm-up "
                         "step ...")
        run.device.synchronize()
        start = time.perf_counter()

        def compiled():  # the first step: compilation and all
            run.device.synchronize()
            self.compile_s = time.perf_counter() - start
            dist.print0(run, f"torch.compile: compiled in {self.compile_s:.1f} s")
        self._at(self.state.step + 1, compiled)

    def _profile_warmup(self):
        """--profile: the profiler runs from the end of step 1 to the end of the step
        before the last warm-up step (cli.check_profile leaves room for both); a run
        resumed past step 1 is not profiled."""
        run, args = self.run, self.args

        def begin():
            self.profiler = profile.start(run)

        def end():
            self.profiled = profile.finish(self.profiler, run, args.out)
            self.profiler = None
        self._at(1, begin)
        self._at(args.warmup_steps - 1, end)

    def train_batch(self, batch, last):
        """One micro-batch: forward, backward, the optimizer step on the last micro-batch
        of a step, clocks. Returns the loss (on the device) and the images it saw."""
        images, labels = data.to_device(batch, self.run)
        self.clocks.begin_step()
        n_images = images.shape[0]
        images = self.normalize(images)
        if self.batch_transform is not None:
            images, labels = self.batch_transform(images, labels)
        loss = self._forward_backward(images, labels, last)
        if last:
            self._optimizer_step()
        self.clocks.end_step(n_images, last=last)
        return loss, n_images

    def _forward_backward(self, images, labels, last):
        run, dev, net = self.run, self.run.device, self.net
        # gradients are all-reduced once per optimizer step, not per micro-batch
        sync = contextlib.nullcontext() if last or not run.distributed else _local_grads(net)
        with sync:
            with dev.autocast(run.precision):
                loss = self.loss_fn(net(images), labels) / self.grad_accum
            self.scaler.scale(loss).backward()
        self.first_bad = torch.where((self.first_bad == 0) & ~torch.isfinite(loss.detach()),
                                     self.state.step + 1, self.first_bad)
        return loss

    def _optimizer_step(self):
        scaler, optimizer = self.scaler, self.optimizer
        if self.clip_grad:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_grad)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        if self.scheduler is not None and self.scheduler_per == "step":
            self.scheduler.step()

    def save(self, path=None):
        """Write the checkpoint of `state` (to `path`, or the run's own); its path."""
        s, run = self.state, self.run
        run.phase = f"the checkpoint of step {s.step}"
        with self.clocks.paused("checkpoint"):
            e2e = clocks_mod.e2e_time(s.resumed)
            t0 = time.perf_counter()
            path = self.ckpt.save(step=s.step, epoch=s.epoch, batch=s.batch, evals=s.evals,
                                  clocks_state=self.clocks.state(run), path=path,
                                  extra={"e2e_s": e2e, "resumed": s.resumed})
            dist.print0(run, f"checkpoint: {path} at step {s.step} "
                             f"({time.perf_counter() - t0:.1f} s)")
        run.phase = None
        return path

    def check(self, now):
        """Stop('nan'), Stop('interrupted') or None. The loss is read only when `now` (a
        sync); with several ranks they all ask then, and agree."""
        run = self.run
        if run.distributed and not now:
            return None
        bad = self.first_bad.item() if now else 0
        sig = self.stopper.signal
        if run.distributed:
            run.phase = f"step {self.state.step}"  # its end: the ranks agree on a stop
            bad, sig = dist.max_all(run, [bad, sig])
            run.phase = None
        if bad:
            return Stop("nan", step=int(bad))
        return Stop("interrupted", signal=int(sig)) if sig else None

    def run_eval(self, epoch):
        """Evaluate with the clocks paused; the result joins state.evals."""
        s = self.state
        self.run.phase = f"the evaluation after step {s.step}"
        with self.clocks.paused("eval"):
            self.mlperf.eval_start(epoch)
            result = evaluate(self.model, self.val_loader, self.run, self.normalize,
                              lockstep=self.sharded)
            self.mlperf.eval_stop(epoch, result)
        self.run.phase = None
        s.evals.append({"epoch": epoch + 1, "step": s.step, **result})
        dist.print0(self.run, f"eval epoch {epoch + 1} step {s.step}: top1 {result['top1']:.2f} "
                              f"top5 {result['top5']:.2f} loss {result['loss']:.4f} "
                              f"over {result['images']} images")
        return result

    def epochs(self):
        """Epochs from where the state stands until the run stops: (Stop, the last epoch)."""
        first, skip = self.state.epoch, self.state.batch
        if self.state.step >= self.total_steps and first < self.args.epochs:
            # resumed at its last step (--max-steps): no step is left, only the epoch's end
            return self.end_of_epoch(first), first
        epoch = first
        for epoch in range(first, self.args.epochs):
            self.mlperf.epoch_start(epoch)
            stop = self.train_epoch(epoch, skip if epoch == first else 0)
            if not stop:  # a signal or a non-finite loss stops it inside: no epoch_stop
                self.mlperf.epoch_stop(epoch)
            stop = stop or self.end_of_epoch(epoch)
            if stop:
                return stop, epoch
        return Stop("epochs"), epoch

    def train_epoch(self, epoch, skip):
        """Train `epoch` from its batch `skip` to its end or the run's last step; a Stop
        when the loss went non-finite or a signal came, else None."""
        loader, s, args, accum = self.train_loader, self.state, self.args, self.grad_accum
        sampler = getattr(loader, "sampler", None)
        if sampler is not None and hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        if skip and hasattr(sampler, "skip"):
            sampler.skip = skip * loader.batch_size
        self.model.train()
        batches = itertools.islice(loader, self.steps_per_epoch * accum - skip)
        for i, batch in enumerate(batches, start=skip):
            last = (i + 1) % accum == 0
            loss, n_images = self.train_batch(batch, last)
            if not last:
                continue
            s.step, s.epoch, s.batch = s.step + 1, epoch, i + 1
            if s.step in self.after_step:  # a few steps only: the profiler's window, compile_s
                for action in self.after_step.pop(s.step):
                    action()
            # the ranks agree on a stop (signal, non-finite loss) where rank 0 prints: one
            # sync per --print-freq steps, none between
            sync_point = s.step % args.print_freq == 0 or s.step == self.total_steps
            stop = self.check(sync_point)
            if stop:
                return stop
            if sync_point:
                self.step_line(epoch, s.step, loss, accum,
                               self.optimizer.param_groups[0]["lr"], n_images * accum)
            if s.step >= self.total_steps:
                return None
            if self.ckpt.due(s.step, None):
                self.save()
        return None

    def end_of_epoch(self, epoch):
        """The epoch's schedule step, evaluation when due, and the checks between epochs;
        a Stop when the run ends here, else None. An epoch the run's last step cut short
        is evaluated but stays unfinished: its schedule step is not taken and the state
        (what a final checkpoint resumes from) stays inside it."""
        s, args = self.state, self.args
        if s.batch == self.steps_per_epoch * self.grad_accum:  # the epoch ran to its end
            if self.scheduler is not None and self.scheduler_per == "epoch":
                self.scheduler.step()
            s.epoch, s.batch = epoch + 1, 0
        finished = s.step >= self.total_steps
        if self.val_loader is not None and args.eval_every and (
                (epoch + 1) % args.eval_every == 0 or finished):
            result = self.run_eval(epoch)
            if args.target_acc and result["top1"] >= args.target_acc:
                return Stop("target_acc")
        if finished:
            return Stop("max_steps" if args.max_steps and s.step >= args.max_steps
                        else "epochs")
        stop = self.check(True)
        if stop:
            return stop
        if self.ckpt.due(s.step, epoch + 1):
            self.save()
        return None

    def outcome(self, stop):
        """(status, error) of a run that ended for `stop`; a run stopped by a signal
        writes its checkpoint first, so that the same command resumes it."""
        if stop.reason == "nan":
            error = (f"loss is not finite at step {stop.step}; lower --lr or use another "
                     f"--precision")
            dist.print0(self.run, f"error: {error}", file=sys.stderr)
            return "failed", error
        if stop.reason == "interrupted":
            path = self.save()
            name = signal.Signals(stop.signal).name
            error = (f"stopped by {name} at step {self.state.step}; the same command "
                     f"resumes from {path}")
            dist.print0(self.run, f"{error}", file=sys.stderr)
            return "incomplete", error
        return "ok", None

    def figures(self):
        """The clocks' figures, the monitor's, the history, memory and accuracy."""
        run, clocks, s = self.run, self.clocks, self.state
        figures = clocks.figures(run)
        if figures.get("why_empty"):
            dist.print0(run, f"warning: p_whole, p_train and p_core are empty: "
                             f"{figures['why_empty']}", file=sys.stderr)
        monitor.stop(self.monitor)
        figures["monitor"] = monitor.summary(run, self.monitor, clocks.window,
                                             figures["images"], self.args)
        figures["history"] = {"steps": history.series(history.STEP_COLUMNS, self.step_rows),
                              "monitor": history.monitor_series(self.monitor, self.started),
                              "timed_s": history.window_s(clocks.window, self.started)}
        figures.update(dist.memory_figures(run))
        bad = getattr(getattr(self.train_loader, "dataset", None), "bad", None)
        (skipped,) = dist.sum_all(run, [bad.value if bad is not None else 0])
        figures.update(steps=s.step, evals=s.evals,
                       acc=s.evals[-1]["top1"] if s.evals else None,
                       acc5=s.evals[-1]["top5"] if s.evals else None,
                       bad_images_skipped=int(skipped), resumed=s.resumed,
                       compile_s=self.compile_s, profile=self.profiled,
                       optimizer=optim.describe(self.optimizer))
        return figures

    def left_behind(self):
        """The figures of a run whose collective timed out (a rank hangs): this rank's
        own, since a collective would wait for the lost rank again; the last checkpoint
        stays for the resume."""
        run, s = self.run, self.state
        lost = left_behind.after_timeout(run, self.args.dist_timeout,
                                         run.phase or f"step {s.step + 1}")
        monitor.stop(self.monitor)
        return {
            "status": "incomplete", "error": lost.line(self.ckpt.kept(s.resumed)),
            "stopped": "lost_rank",
            "left_behind": lost.record(), "steps": s.step, "epochs_run": s.epoch + 1,
            "why_empty": f"a collective timed out at {lost.waited_at}: the figures over "
                         f"every rank could not be gathered; rank {run.rank}'s own are in "
                         f"rank_alone",
            "rank_alone": {"rank": run.rank, **self.clocks.figures_alone(),
                           **dist.memory_figures(run, gather=False)},
            "monitor": {"reason": "a rank was lost: the nodes' samples could not be gathered"},
            "history": {"steps": history.series(history.STEP_COLUMNS, self.step_rows),
                        "monitor": history.monitor_series(self.monitor, self.started)},
            "evals": s.evals, "acc": s.evals[-1]["top1"] if s.evals else None,
            "resumed": s.resumed, "compile_s": self.compile_s,
            "optimizer": optim.describe(self.optimizer)}


def train(run, args, model, optimizer, *, train_loader, val_loader, normalize, loss_fn,
          scheduler=None, scheduler_per="epoch", batch_transform=None, grad_accum=None,
          clip_grad=None, sharded=False):
    """Train until the target accuracy, --epochs or --max-steps, whichever comes first;
    resume from a checkpoint, write checkpoints, stop on a non-finite loss or a signal.

    sharded=True: the model is already sharded over the ranks (FSDP2 fully_shard), so
    it is not wrapped in DDP and is evaluated in lockstep.
    grad_accum defaults to args.grad_accum, as recipe.settle set it.
    Uses args.{epochs, max_steps, warmup_steps, eval_every, target_acc,
    print_freq, checkpoint_every, resume, keep_checkpoint, compile, profile}. Returns
    the figures of docs/METRICS.md's training clocks plus accuracy and the run's status,
    and the checkpoint of a run that ended well (else None), which record.conclude
    removes only once the record is on disk: never neither."""
    batch_search = None
    if args.batch_size == "auto":
        train_loader, val_loader, batch_search = auto_batch.settle(
            run, args, model, optimizer, scheduler, loss_fn, normalize, train_loader,
            val_loader, sharded)
    t = Training(run, args, model, optimizer, train_loader=train_loader,
                 val_loader=val_loader, normalize=normalize, loss_fn=loss_fn,
                 scheduler=scheduler, scheduler_per=scheduler_per,
                 batch_transform=batch_transform, grad_accum=grad_accum or args.grad_accum,
                 clip_grad=clip_grad, sharded=sharded)
    progress.header(run, args, "training",
                    progress.loader_words(args, train=train_loader, val=val_loader),
                    f"{t.total_steps} steps ({t.steps_per_epoch} per epoch), the first "
                    f"{args.warmup_steps} untimed (warm-up)",
                    recipe.describe(args.recipe) if args.recipe else None,
                    grad_accum=t.grad_accum)
    try:
        stop, epoch = t.epochs()
    except Exception as e:
        if run.distributed and run.device.is_collective_timeout(e):
            return t.left_behind(), None  # the last checkpoint stays for the resume
        error = failed_step(e, run, args)
        if error is None:
            raise
        raise error from None
    finally:
        t.stopper.close()
    status, error = t.outcome(stop)
    figures = t.figures()
    figures.update(epochs_run=epoch + 1, stopped=stop.reason, status=status, error=error,
                   batch_size_search=batch_search)
    if status == "ok" and args.keep_checkpoint:
        t.save(path=t.ckpt.path[:-3] + "-final.pt")
    return figures, t.ckpt if status == "ok" else None


