"""BiT-M-R152x2 fine-tuning on ImageNet-1k, the BiT-HyperRule (seed case 004).

Our own BiT ResNet-V2 (bit/model.py) starting from the official BiT-M checkpoint
(https://storage.googleapis.com/bit_models/BiT-M-R152x2.npz), its head zero-initialised
for the dataset's classes; SGD lr 0.003 at global batch 128 (the seed's 8 x 16; scaled
linearly to the run's global batch when --lr is not given), momentum 0.9, no weight
decay; linear warm-up over 500 steps, x0.1 after steps 3000, 6000 and 9000, end at step
10000, all counted in global optimizer steps; MixUp alpha 0.1; training Resize 512x512 + RandomCrop 480 + flip,
evaluation Resize 480x480; mean and std 0.5; batch 16 per device; stop at top-1 83.
For memory, --fsdp shards every bottleneck unit over the ranks (FSDP2) and
--activation-checkpointing recomputes each unit's activations in the backward pass.

    torchrun --nproc_per_node 8 bit/train.py --data-dir /data/imagenet --weights BiT-M-R152x2.npz
    torchrun --nproc_per_node 8 bit/train.py --data-dir /data/imagenet --weights BiT-M-R152x2.npz \\
        --batch-size 20
    torchrun --nproc_per_node 8 bit/train.py --data-dir /data/imagenet --model BiT-M-R152x4 \\
        --weights BiT-M-R152x4.npz --fsdp --activation-checkpointing
    python bit/train.py --synthetic --weights BiT-M-R152x2.npz --max-steps 100
    torchrun --nnodes 2 --node-rank 0 --master-addr HOST --nproc_per_node 8 bit/train.py ...
"""
import os
import sys
import warnings
from collections import OrderedDict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # repo root

from bit.sizes import KNOWN_MODELS
from common import cli, exits, flags


def get_args_parser():
    # --epochs only bounds the run: the recipe ends at --total-steps
    p = cli.train_parser(__doc__, batch_size=16, global_batch=128, lr=0.003, epochs=100,
                         target_acc=83, image_size=480)
    p.add_argument("--model", choices=list(KNOWN_MODELS), default="BiT-M-R152x2")
    p.add_argument("--weights", default="random", metavar="PATH.npz",
                   help="official BiT checkpoint to fine-tune (random: none, with a warning)")
    recipe = p.add_recipe_argument  # flag, its short name in fix_hp, as add_argument
    recipe("--momentum", "momentum", type=flags.fraction, default=0.9)
    recipe("--mixup-alpha", "mixup", type=flags.non_negative_float, default=0.1)
    recipe("--warmup-lr-steps", "warmup_lr", type=flags.non_negative_int, default=500,
           help="optimizer steps of linear lr warm-up from 0")
    recipe("--lr-decay-steps", "lr_decay", type=flags.int_list, default=(3000, 6000, 9000),
           help="lr x0.1 after each of these optimizer steps")
    recipe("--total-steps", "steps", type=flags.positive_int, default=10000,
           help="optimizer steps of the whole recipe")
    p.add_argument("--fsdp", action="store_true",
                   help="shard parameters, gradients and momentum over the ranks (FSDP2)")
    p.add_argument("--activation-checkpointing", action="store_true",
                   help="recompute each bottleneck unit in the backward pass")
    return p


if __name__ == "__main__":  # flags first: --help and a mistyped flag answer before torch loads
    parser = get_args_parser()
    args = parser.parse_args()

import torch
from torch.distributed.device_mesh import init_device_mesh
from torch.utils.checkpoint import checkpoint
from torchvision.transforms import v2

from bit import model as bit_model
from bit.weights import BIT_MEAN, BIT_STD, CHECKPOINTS_URL, hyperrule_transforms, load_weights
from common import data, dist, optim, record, train_loop
from common.errors import UserError


def hyperrule_lr_factor(step, *, warmup_steps, decay_steps):
    """Factor of the base lr at a global optimizer step, as big_transfer's
    bit_hyperrule.get_lr: linear from 0 over the warm-up, then x0.1 for every decay
    step already passed (step 3000 itself still runs at the full rate)."""
    if step < warmup_steps:
        return step / warmup_steps
    return 0.1 ** sum(step > d for d in decay_steps)


def hyperrule_schedule(optimizer, *, warmup_steps, decay_steps):
    """LambdaLR to step once per optimizer step; its count is the global step."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: hyperrule_lr_factor(step, warmup_steps=warmup_steps,
                                                    decay_steps=decay_steps))


def warn_random_weights(run, model_name):
    bar = "!" * 78
    dist.print0(run, f"\n{bar}\n"
                     f"!!  NO --weights: FINE-TUNING FROM RANDOM WEIGHTS, NOT FROM BiT-M.\n"
                     f"!!  Throughput is still the case's; accuracy is not. For the real case\n"
                     f"!!  download {CHECKPOINTS_URL}/{model_name}.npz\n"
                     f"!!  and pass --weights PATH.npz.\n"
                     f"{bar}\n", file=sys.stderr)


class CheckpointedUnits(torch.nn.Sequential):
    """A block whose units keep only their inputs for the backward pass."""

    def forward(self, x):
        for unit in self:
            x = checkpoint(unit, x, use_reentrant=False)
        return x


def checkpoint_units(model):
    # the same units under the same names, so parameter names still mirror the checkpoint
    for name, block in list(model.body.named_children()):
        setattr(model.body, name, CheckpointedUnits(OrderedDict(block.named_children())))


def shard_units(model, run):
    """FSDP2: each bottleneck unit, then the root (stem, head), sharded over all ranks;
    under amp or bf16 the weights are gathered in that dtype (train_loop.fsdp_dtypes)."""
    try:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard  # torch >= 2.6
    except ImportError:
        try:  # torch 2.4, 2.5
            from torch.distributed._composable.fsdp import MixedPrecisionPolicy, fully_shard
        except ImportError:
            raise UserError(f"--fsdp: torch {torch.__version__} has no FSDP2 fully_shard; "
                            f"use torch >= 2.4 or leave --fsdp out") from None
    # the head ends in flatten, a view; nothing changes the logits in place
    warnings.filterwarnings("ignore", message="FSDP2-wrapped module .* returned a view")
    mesh = init_device_mesh(run.device.type, (run.world_size,))
    policy = MixedPrecisionPolicy(**train_loop.fsdp_dtypes(run.precision))
    for block in model.body.children():
        for unit in block.children():
            fully_shard(unit, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)


def main(args, parser):
    # the recipe is counted in optimizer steps: it ends at --total-steps, or at --max-steps
    args.max_steps = min(args.max_steps or args.total_steps, args.total_steps)
    run = dist.start(args)
    if args.fsdp and not run.distributed:
        raise UserError("--fsdp: shards the model over ranks; launch several with "
                        "torchrun --nproc_per_node N, or leave --fsdp out")
    train_tf, eval_tf = hyperrule_transforms(args.image_size)
    train_loader, val_loader, num_classes = data.loaders(args, run, train_tf, eval_tf)
    normalize = data.normalizer(BIT_MEAN, BIT_STD, run.device.torch_device, args.channels_last)

    model = bit_model.bit(args.model, num_classes=num_classes)  # zero-initialised head
    if args.weights == "random":
        warn_random_weights(run, args.model)
    else:
        head_loaded = load_weights(model, args.weights, args.model)
        dist.print0(run, f"weights: {args.weights} (head "
                         f"{'loaded' if head_loaded else f'zero, {num_classes} classes'})")
    model, flops = train_loop.place_model(model, args, run)
    if args.activation_checkpointing:
        checkpoint_units(model)
    if args.fsdp:
        shard_units(model, run)
    # made after sharding: FSDP2 swaps the parameters for sharded ones; no weight decay
    optimizer = optim.make(torch.optim.SGD, model.parameters(),
                           args.optimizer_impl, run.device, lr=args.lr,
                           momentum=args.momentum)
    scheduler = hyperrule_schedule(optimizer, warmup_steps=args.warmup_lr_steps,
                                   decay_steps=args.lr_decay_steps)
    # one mixing weight per batch from Beta(0.1, 0.1), on the device; soft targets out
    mixup = v2.MixUp(alpha=args.mixup_alpha, num_classes=num_classes) if args.mixup_alpha else None

    figures, served_checkpoint = train_loop.train(
        run, args, model, optimizer, train_loader=train_loader, val_loader=val_loader,
        normalize=normalize, loss_fn=torch.nn.CrossEntropyLoss(),
        scheduler=scheduler, scheduler_per="step", batch_transform=mixup, sharded=args.fsdp)

    result = record.train_record(run, args, parser, args.model, figures, flops)
    return record.conclude(run, args, result, served_checkpoint)


if __name__ == "__main__":
    exits.entry(main, parser, args)
