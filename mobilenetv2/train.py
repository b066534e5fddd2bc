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

from common import exits, scripts


def get_args_parser():
    return scripts.step_lr_parser(__doc__, batch_size=32, global_batch=256, lr=0.045, epochs=300,
                                  target_acc=68.6, channels_last=True, weight_decay=4e-5,
                                  lr_step_epochs=1, lr_gamma=0.98)


main = scripts.step_lr_training("mobilenetv2", model="torchvision.models.mobilenet_v2")

if __name__ == "__main__":  # the flags are read before torch loads: --help answers at once
    exits.script(get_args_parser, main)
