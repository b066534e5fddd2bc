"""ResNet50 inference on the ImageNet validation set (seed case 001).

torchvision resnet50 with the published weights (resnet50-0676ba61.pth, loaded with
weights_only=True); Resize 256 + CenterCrop 224; batch 256. Two passes over all
50,000 images: the eager model (validation), then the engine (torch.compile by
default; --engine tensorrt where torch_tensorrt is installed). Also measures
batch-1 latency of the engine.

    python resnet50/infer.py --data-dir /data/imagenet --weights resnet50-0676ba61.pth --precision fp16
    python resnet50/infer.py --synthetic --precision fp16 --channels-last
    torchrun --nproc_per_node 8 resnet50/infer.py --data-dir /data/imagenet --weights ...
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # repo root

from common import cli, exits, scripts


def get_args_parser():
    return cli.infer_parser(__doc__, channels_last=True)


main = scripts.classifier_inference("resnet50", model="torchvision.models.resnet50")

if __name__ == "__main__":  # the flags are read before torch loads: --help answers at once
    exits.script(get_args_parser, main)
