"""ViT-B/16 training on ImageNet-1k, the torchvision reference recipe (seed case 003).

Our own ViT (vit/model.py, torchvision's vit_b_16 state dict) from scratch; AdamW lr
0.003 at global batch 4096, weight decay 0.3; label smoothing 0.11; MixUp 0.2 or CutMix
1.0 per batch; RandAugment magnitude 9 (bilinear); repeated augmentation (each image 3
times per epoch, on different ranks); linear warm-up over 30 epochs from factor 0.033,
then cosine; gradient clipping at norm 1.0; batch 256 per device; 300 epochs; stop at
top-1 79.982. Where the devices do not hold 4096 images at once, micro-batches are
accumulated up to it (8 x 256 x 2 on 1x8); --grad-accum K sets K yourself.

    # the seed's 1x8: global batch 4096 = 8 devices x 256 x 2 accumulated
    torchrun --nproc_per_node 8 vit/train.py --data-dir /data/imagenet
    python vit/train.py --synthetic --precision amp --grad-accum 1 --max-steps 100
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # repo root

from common import cli, exits, flags
from vit.sizes import SIZES, check_image_size


def get_args_parser():
    p = cli.train_parser(__doc__, batch_size=256, global_batch=4096, lr=0.003, epochs=300,
                         target_acc=79.982, grad_accum=None)
    p.add_argument("--model", choices=sorted(SIZES), default="vit_b_16")
    recipe = p.add_recipe_argument  # flag, its short name in fix_hp, as add_argument
    recipe("--weight-decay", "wd", type=flags.non_negative_float, default=0.3)
    recipe("--label-smoothing", "ls", type=flags.fraction, default=0.11)
    recipe("--mixup-alpha", "mixup", type=flags.non_negative_float, default=0.2)
    recipe("--cutmix-alpha", "cutmix", type=flags.non_negative_float, default=1.0)
    recipe("--randaugment-magnitude", "randaug", type=flags.number(int, low=0, high=30),
           default=9)
    recipe("--ra-reps", "ra_reps", type=flags.positive_int, default=3,
           help="repeated augmentation: copies of each image an epoch (1: off)")
    recipe("--warmup-epochs", "warmup_ep", type=flags.non_negative_int, default=30)
    recipe("--warmup-factor", "warmup_factor",
           type=flags.number(float, low=0, high=1, low_open=True), default=0.033)
    recipe("--clip-grad", "clip", type=flags.non_negative_float, default=1.0, help="0: off")
    p.rules.append(check_image_size)
    return p


if __name__ == "__main__":  # flags first: --help and a mistyped flag answer before torch loads
    parser = get_args_parser()
    args = parser.parse_args()

import torch
from torchvision.transforms import v2

from common import data, dist, optim, record, train_loop
from vit.model import MODELS


def mix_batches(args, num_classes):
    """MixUp or CutMix, one picked per batch, on the device; None when both are off."""
    mixes = []
    if args.mixup_alpha > 0:
        mixes.append(v2.MixUp(alpha=args.mixup_alpha, num_classes=num_classes))
    if args.cutmix_alpha > 0:
        mixes.append(v2.CutMix(alpha=args.cutmix_alpha, num_classes=num_classes))
    return v2.RandomChoice(mixes) if mixes else None


def main(args, parser):
    run = dist.start(args)
    train_loader, val_loader, num_classes, normalize = data.imagenet_inputs(
        args, run, randaugment_magnitude=args.randaugment_magnitude, repeats=args.ra_reps)
    model, flops = train_loop.place_model(
        MODELS[args.model](image_size=args.image_size, num_classes=num_classes), args, run)
    optimizer = optim.make(torch.optim.AdamW, model.parameters(),
                           args.optimizer_impl, run.device, lr=args.lr,
                           weight_decay=args.weight_decay)
    # per epoch, as the reference: linear warm-up, then cosine over the remaining epochs
    warmup = max(0, min(args.warmup_epochs, args.epochs - 1))
    scheduler = torch.optim.lr_scheduler.SequentialLR(optimizer, [
        torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=args.warmup_factor,
                                          total_iters=max(1, warmup)),
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs - warmup),
    ], milestones=[warmup])

    figures, served_checkpoint = train_loop.train(
        run, args, model, optimizer, train_loader=train_loader, val_loader=val_loader,
        normalize=normalize,
        loss_fn=torch.nn.CrossEntropyLoss(label_smoothing=args.label_smoothing),
        scheduler=scheduler, scheduler_per="epoch",
        batch_transform=mix_batches(args, num_classes), clip_grad=args.clip_grad)

    result = record.train_record(run, args, parser, args.model, figures, flops)
    return record.conclude(run, args, result, served_checkpoint)


if __name__ == "__main__":
    exits.entry(main, parser, args)
