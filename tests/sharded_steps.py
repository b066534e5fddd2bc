"""Train a seeded tiny BiT a few steps through train_loop.train, with gradient
accumulation and clipping, once under DDP and once sharded (FSDP2 + activation
checkpointing), and write how far apart the two end (rank 0):
    torchrun --nproc_per_node 2 sharded_steps.py OUT.json
Used by test_bit_train.py to show that sharding changes memory, not training, and that
under bf16 the shards are gathered in bf16."""
import dataclasses
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch
from conftest import loop_args

from bit import train as bit_train
from bit.model import bit
from bit.weights import BIT_MEAN, BIT_STD
from common import data, dist, train_loop
from common.precision import PRECISIONS

out = sys.argv[1]
run = dist.setup("cpu")
args = loop_args(os.path.dirname(out), print_freq=100)
normalize = data.normalizer(BIT_MEAN, BIT_STD, "cpu")
# different batches on each rank, so the gradients only agree once reduced
g = torch.Generator().manual_seed(run.rank)
batches = [(torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=g),
            torch.randint(0, 3, (4,), generator=g)) for _ in range(8)]


def trained_weights(sharded):
    torch.manual_seed(0)
    model = bit("tiny", num_classes=3, zero_head=False)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    if sharded:
        bit_train.checkpoint_units(model)
        bit_train.shard_units(model, run)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    # 4 optimizer steps of 2 micro-batches; a gradient norm far above 0.5 is clipped
    train_loop.train(run, args, model, optimizer, train_loader=batches, val_loader=None,
                     normalize=normalize, loss_fn=torch.nn.CrossEntropyLoss(), grad_accum=2,
                     clip_grad=0.5, sharded=sharded)
    end = {k: v.full_tensor() if hasattr(v, "full_tensor") else v
           for k, v in model.state_dict().items()}
    return start, end


def gathered_dtypes(name):
    """The dtypes of the weights a sharded unit computes with, under --precision `name`."""
    torch.manual_seed(0)
    model = bit("tiny", num_classes=3, zero_head=False)
    run_at = dataclasses.replace(run, precision=PRECISIONS[name])
    bit_train.shard_units(model, run_at)
    seen = set()
    conv = next(next(model.body.children()).children()).conv1
    conv.register_forward_pre_hook(lambda m, i: seen.add(str(m.weight.dtype)))
    with run_at.device.autocast(run_at.precision):
        model(normalize(batches[0][0]))
    return sorted(seen)


start, ddp = trained_weights(sharded=False)
_, fsdp = trained_weights(sharded=True)
result = {
    "names_kept": sorted(ddp) == sorted(fsdp),
    "moved": max((ddp[k] - start[k]).abs().max().item() for k in ddp),
    "apart": max((ddp[k] - fsdp[k]).abs().max().item() for k in ddp),
    "gathered": {p: gathered_dtypes(p) for p in ("fp32", "bf16")},
}
if run.is_main:
    with open(out, "w") as f:
        json.dump(result, f)
dist.teardown(run)
