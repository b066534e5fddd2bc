"""ResNet50 training on ImageNet-1k, the FlagPerf recipe (seed case 000).

torchvision resnet50 from scratch; SGD lr 0.1 at global batch 256, momentum 0.9,
weight decay 1e-4; StepLR x0.1 every 30 epochs; batch 32 per device; RandomResizedCrop
224 + flip for training, Resize 256 + CenterCrop 224 for evaluation; evaluate every
epoch; stop at top-1 75.5 or after 100 epochs. With no --lr the lr follows the global
batch linearly (0.0125 on one device at 32, 0.2 on 2x8).

    torchrun --nproc_per_node 8 resnet50/train.py --data-dir /data/imagenet
    torchrun --nproc_per_node 8 resnet50/train.py --data-dir /data/imagenet --batch-size 256 --lr 0.8
    python resnet50/train.py --synthetic --batch-size 256 --precision amp --channels-last
    torchrun --nnodes 2 --node-rank 0 --master-addr HOST --nproc_per_node 8 resnet50/train.py ...
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # repo root

from common import cli, exits, flags


def get_args_parser():
    p = cli.train_parser(__doc__, batch_size=32, global_batch=256, lr=0.1, epochs=100,
                         target_acc=75.5, channels_last=True)
    recipe = p.add_recipe_argument  # flag, its short name in fix_hp, as add_argument
    recipe("--momentum", "momentum", type=flags.fraction, default=0.9)
    recipe("--weight-decay", "wd", type=flags.non_negative_float, default=1e-4)
    recipe("--lr-step-epochs", "lr_step", type=flags.positive_int, default=30)
    recipe("--lr-gamma", "lr_gamma", type=flags.positive_float, default=0.1)
    return p


if __name__ == "__main__":  # flags first: --help and a mistyped flag answer before torch loads
    parser = get_args_parser()
    args = parser.parse_args()

import torch
import torchvision

from common import data, dist, optim, record, train_loop


def main(args, parser):
    run = dist.start(args)
    train_loader, val_loader, num_classes, normalize = data.imagenet_inputs(args, run)
    model, flops = train_loop.place_model(
        torchvision.models.resnet50(num_classes=num_classes), args, run)
    optimizer = optim.make(torch.optim.SGD, model.parameters(),
                           args.optimizer_impl, run.device, lr=args.lr,
                           momentum=args.momentum, weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, args.lr_step_epochs, args.lr_gamma)

    figures, served_checkpoint = train_loop.train(
        run, args, model, optimizer, train_loader=train_loader, val_loader=val_loader,
        normalize=normalize, loss_fn=torch.nn.CrossEntropyLoss(),
        scheduler=scheduler, scheduler_per="epoch")

    result = record.train_record(run, args, parser, "resnet50", figures, flops)
    return record.conclude(run, args, result, served_checkpoint)


if __name__ == "__main__":
    exits.entry(main, parser, args)
