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

from common import cli, exits

def get_args_parser():
    return cli.infer_parser(__doc__, channels_last=True)


if __name__ == "__main__":  # flags first: --help and a mistyped flag answer before torch loads
    parser = get_args_parser()
    args = parser.parse_args()

import torchvision

from common import data, dist, infer_loop, record
from common.weights import load_weights


def main(args, parser):
    run = dist.start(args)
    loader, num_classes, normalize = data.val_inputs(args, run, data.eval_transform(args.image_size))
    model = torchvision.models.resnet50(num_classes=num_classes)
    if args.weights:
        load_weights(model, args.weights, run)
    else:
        dist.print0(run, "no --weights: random weights, the figures are speed only")
    figures = infer_loop.run_inference(run, args, model, loader, normalize)
    result = record.infer_record(run, args, "resnet50", figures, args.weights)
    return record.conclude(run, args, result)


if __name__ == "__main__":
    exits.entry(main, parser, args)
