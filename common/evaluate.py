"""Exact top-1/top-5 counting, and the evaluation pass of a training run.

The rule of docs/METRICS.md lives in `Accuracy`, which training's evaluation and both
inference passes count with: each rank adds its hits on the device (no sync per batch),
the hits are summed over ranks once, then divided by the images every rank saw, so that
one rank and eight give the same accuracy from the same weights.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from common import data, dist, progress


class Accuracy:
    """Top-1 and top-5 hits of this rank's batches, kept on the device."""

    def __init__(self, torch_device):
        self.top1 = torch.zeros((), dtype=torch.long, device=torch_device)
        self.top5 = torch.zeros((), dtype=torch.long, device=torch_device)
        self.images = 0  # this rank's
        self.hits = {}   # top1_hits, top5_hits over every rank, once over_ranks has counted

    def add(self, logits, labels):
        top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = top5.eq(labels[:, None])
        self.top1 += hits[:, 0].sum()
        self.top5 += hits.any(dim=1).sum()
        self.images += labels.shape[0]

    def over_ranks(self, run, *sums):
        """(top-1 %, top-5 %, images, *sums) over every rank, in one collective with the
        host numbers `sums` (each summed over ranks too); the percentages are None where
        no rank saw an image."""
        top1, top5, images, *sums = dist.sum_all(
            run, [self.top1.item(), self.top5.item(), self.images, *sums])
        self.hits = {"top1_hits": int(top1), "top5_hits": int(top5)}  # the raw counts
        if not images:
            return (None, None, 0, *sums)
        return (100.0 * top1 / images, 100.0 * top5 / images, int(images), *sums)


def lockstep_batches(loader, run):
    """(batch, counted) pairs: the loader's batches, then repeats of its last one that
    count for nothing, until this rank has run as many forwards as the busiest rank."""
    (most,) = dist.max_all(run, [len(loader)])
    batch = None
    for batch in loader:
        yield batch, True
    if batch is None and most > 0:
        # an empty shard (fewer images than ranks) still has to join every forward
        batch = data.batch_of(loader, [0])
    for _ in range(int(most) - len(loader)):
        yield batch, False


def evaluate(model, loader, run, normalize, *, lockstep=False):
    """Top-1/top-5 in percent and the mean loss over every image of the loader's dataset
    exactly once across ranks. `model` must be the bare module (no DDP wrapper: shards
    may differ in length). lockstep=True for a sharded model, whose every forward is a
    collective: each rank runs the same number of forwards, the extra ones on a repeated
    batch not counted."""
    batches = lockstep_batches(loader, run) if lockstep else ((b, True) for b in loader)
    tick = progress.pass_progress(run, "eval", progress.images_in(loader, run))
    was_training = model.training
    model.eval()
    accuracy = Accuracy(run.device.torch_device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=run.device.torch_device)
    with torch.inference_mode(), run.device.autocast(run.precision):
        for batch, counted in batches:
            images, labels = data.to_device(batch, run)
            logits = model(normalize(images)).float()
            if not counted:
                continue
            loss_sum += F.cross_entropy(logits, labels, reduction="sum")
            accuracy.add(logits, labels)
            tick(accuracy.images * run.world_size)
    model.train(was_training)
    top1, top5, n, loss = accuracy.over_ranks(run, loss_sum.item())
    tick(n, final=True)
    if n == 0:
        return {"top1": None, "top5": None, "loss": None, "images": 0}
    return {"top1": top1, "top5": top5, "loss": loss / n, "images": n, **accuracy.hits}
