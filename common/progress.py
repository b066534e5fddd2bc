"""What a person sees while a run goes: a short header once every value is settled,
then a line every --print-freq training steps and through each long phase (the
dataset scan, each evaluation and inference pass, compilation, the engine build,
checkpoint writes).

Rank 0 prints. A pass prints at most every EVERY_S seconds and once when it ends. Its
rates are progress figures only: every figure of the record comes from the clocks.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import time

from common.dist import print0

EVERY_S = 5.0  # at most one line per pass this often: readable, and no cost to the pass


def fmt_eta(seconds):
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def script_case():
    """The folder of the running script (resnet50, vit, ...): the case's name."""
    return os.path.basename(os.path.dirname(os.path.abspath(sys.argv[0])))


def header(run, args, what, data_words, *extra, grad_accum=1):
    """A few lines that say what runs, printed once batch, classes and device are
    settled; the whole configuration goes in the record, and here only with --debug.
    `grad_accum`: the micro-batches of a training step."""
    model = args.model or script_case()
    per_device = args.batch_size
    layout = ", channels-last" if args.channels_last else ""
    print0(run, f"{model} {what} on {run.world_size} x {run.device.label} ({run.config}, "
                 f"{run.device.name})\n"
                 f"  batch {per_device} per device, {per_device * grad_accum * run.world_size} "
                 f"global{f' ({grad_accum} accumulated)' if grad_accum > 1 else ''}; "
                 f"precision {args.precision}{layout}\n"
                 f"  data: {data_words}" + "".join(f"\n  {e}" for e in extra if e))
    if args.debug:
        print0(run, "config: " + json.dumps(vars(args), default=str))


def data_words(args, **image_counts):
    """'DIR: 4 classes, 64 train / 16 val images', or what synthetic data is."""
    if args.synthetic:
        return "synthetic, one random batch made on the device (speed only)"
    counts = " / ".join(f"{n:,} {split}" for split, n in image_counts.items())
    return f"{args.data_dir}: {args.num_classes} classes, {counts} images"


def loader_words(args, **loaders):
    """data_words of these loaders' datasets, by split (a synthetic loader has none)."""
    if args.synthetic:
        return data_words(args)
    return data_words(args, **{split: len(loader.dataset) for split, loader in loaders.items()})


def step_line(run, total_steps, step, rows, t0):
    """A printer of training's progress line: the rate and eta from the steps since its
    last line (a progress figure only: the record's figures come from the clocks). Each
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
        print0(run, f"epoch {epoch + 1} step {step}/{total_steps} loss {loss:.4f} "
                    f"lr {lr:.4g} {rate:.1f} img/s eta {fmt_eta(eta)}")
        rows.append([step, round(now - t0, 3), loss, rate])
        last.update(t=now, step=step)
    return line


def images_in(loader, run):
    """Images one pass over the loader sees across ranks."""
    dataset = getattr(loader, "dataset", None)
    if dataset is not None:
        return len(dataset)
    return len(loader) * loader.batch[0].shape[0] * run.world_size  # synthetic


def pass_progress(run, name, total, every_s=None, clock=time.perf_counter):
    """tick(done) for a pass over `total` images: '<name>: done/total images, rate,
    eta' at most every `every_s` seconds; tick(done, final=True) prints the pass's
    last line. `done` counts over all ranks (a rank's count x ranks will do)."""
    every_s = EVERY_S if every_s is None else every_s
    start = clock()
    last = [start]

    def tick(done, final=False):
        now = clock()
        if not run.is_main or (not final and now - last[0] < every_s):
            return
        last[0] = now
        done = min(done, total) if total else done
        elapsed = now - start
        rate = done / elapsed if elapsed > 0 else 0.0
        if final:
            print(f"{name}: {done:,} images in {elapsed:.1f} s ({rate:.1f} img/s)", flush=True)
            return
        eta = fmt_eta((total - done) / rate) if rate and total else "?"
        print(f"{name}: {done:,}/{total:,} images, {rate:.1f} img/s, eta {eta}", flush=True)
    return tick


@contextlib.contextmanager
def phase(run, starting, done):
    """'<starting> ...' now, '<done> in N s' when the block ends."""
    print0(run, f"{starting} ...")
    t0 = time.perf_counter()
    yield
    print0(run, f"{done} in {time.perf_counter() - t0:.1f} s")
