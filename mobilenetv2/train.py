"""MobileNetV2 training on ImageNet-1k, the FlagPerf recipe (seed case 002).

torchvision mobilenet_v2 from scratch; SGD lr 0.045 at global batch 256 (scaled
linearly to the run's global batch when --lr is not given), momentum 0.9, weight decay
4e-5; StepLR x0.98 every epoch; batch 32 per device; RandomResizedCrop 224 + flip for training,
Resize 256 + CenterCrop 224 for evaluation (in eval() mode, which the seed's harness
forgot); 300 epochs; stop at top-1 68.6.

    torchrun --nproc_per_node 8 mobilenetv2/train.py --data-dir /data/imagenet
    torchrun --nproc_per_node 8 mobilenetv2/train.py --data-dir /data/imagenet --batch-size 256 --lr 0.72
    python mobilenetv2/train.py --synthetic --batch-size 256 --precision amp --channels-last
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # repo root

from common import cli, exits, flags


def get_args_parser():
    p = cli.train_parser(__doc__, batch_size=32, global_batch=256, lr=0.045, epochs=300,
                         target_acc=68.6, channels_last=True)
    recipe = p.add_recipe_argument  # flag, its short name in fix_hp, as add_argument
    recipe("--momentum", "momentum", type=flags.fraction, default=0.9)
    recipe("--weight-decay", "wd", type=flags.non_negative_float, default=4e-5)
    recipe("--lr-step-epochs", "lr_step", type=flags.positive_int, default=1)
    recipe("--lr-gamma", "lr_gamma", type=flags.positive_float, default=0.98)
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
        torchvision.models.mobilenet_v2(num_classes=num_classes), args, run)
    optimizer = optim.make(torch.optim.SGD, model.parameters(),
                           args.optimizer_impl, run.device, lr=args.lr,
                           momentum=args.momentum, weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, args.lr_step_epochs, args.lr_gamma)

    figures, served_checkpoint = train_loop.train(
        run, args, model, optimizer, train_loader=train_loader, val_loader=val_loader,
        normalize=normalize, loss_fn=torch.nn.CrossEntropyLoss(),
        scheduler=scheduler, scheduler_per="epoch")

    result = record.train_record(run, args, parser, "mobilenetv2", figures, flops)
    return record.conclude(run, args, result, served_checkpoint)


if __name__ == "__main__":
    exits.entry(main, parser, args)
