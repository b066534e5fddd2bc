"""MobileNetV2 inference on the ImageNet validation set (the seed 001 case, for MobileNetV2).

torchvision mobilenet_v2 with the published weights (mobilenet_v2-b0353104.pth, loaded with
weights_only=True); Resize 256 + CenterCrop 224; batch 256. Two passes over all
50,000 images: the eager model (validation), then the engine (torch.compile by
default; --engine tensorrt where torch_tensorrt is installed). Also measures
batch-1 latency of the engine.

    python mobilenetv2/infer.py --data-dir /data/imagenet --weights mobilenet_v2-b0353104.pth --precision fp16
    python mobilenetv2/infer.py --synthetic --precision fp16 --channels-last
    torchrun --nproc_per_node 8 mobilenetv2/infer.py --data-dir /data/imagenet --weights ...
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # repo root

from common import cli, exits, scripts


def get_args_parser():
    return cli.infer_parser(__doc__, channels_last=True)


main = scripts.classifier_inference("mobilenetv2", model="torchvision.models.mobilenet_v2")

if __name__ == "__main__":  # the flags are read before torch loads: --help answers at once
    exits.script(get_args_parser, main)
