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

from common import exits, scripts


def get_args_parser():
    return scripts.step_lr_parser(__doc__, batch_size=32, global_batch=256, lr=0.1, epochs=100,
                                  target_acc=75.5, channels_last=True, weight_decay=1e-4,
                                  lr_step_epochs=30, lr_gamma=0.1)


main = scripts.step_lr_training("resnet50", model="torchvision.models.resnet50")

if __name__ == "__main__":  # the flags are read before torch loads: --help answers at once
    exits.script(get_args_parser, main)
