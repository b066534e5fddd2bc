"""ViT-B/16 inference on the ImageNet validation set.

Our own ViT (vit/model.py) loading torchvision's published vit_b_16 weights
(vit_b_16-c867db91.pth) as they are, with weights_only=True; Resize 256 +
CenterCrop 224; batch 256. Two passes over every validation image: the eager model
(validation), then the engine (torch.compile by default). Also batch-1 latency.

    python vit/infer.py --data-dir /data/imagenet --weights vit_b_16-c867db91.pth --precision fp16
    python vit/infer.py --synthetic --precision fp16
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # repo root

from common import cli, exits
from vit.sizes import SIZES, check_image_size

def get_args_parser():
    p = cli.infer_parser(__doc__)
    p.add_argument("--model", choices=sorted(SIZES), default="vit_b_16")
    p.rules.append(check_image_size)
    return p


if __name__ == "__main__":  # flags first: --help and a mistyped flag answer before torch loads
    parser = get_args_parser()
    args = parser.parse_args()

from common import data, dist, infer_loop, record
from common.weights import load_weights
from vit.model import MODELS


def main(args, parser):
    run = dist.start(args)
    loader, num_classes, normalize = data.val_inputs(args, run, data.eval_transform(args.image_size))
    model = MODELS[args.model](image_size=args.image_size, num_classes=num_classes)
    if args.weights:
        load_weights(model, args.weights, run)  # another image size: position embeddings resized
    else:
        dist.print0(run, "no --weights: random weights, the figures are speed only")
    figures = infer_loop.run_inference(run, args, model, loader, normalize)
    result = record.infer_record(run, args, args.model, figures, args.weights)
    return record.conclude(run, args, result)


if __name__ == "__main__":
    exits.entry(main, parser, args)
