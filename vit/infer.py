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

from common import cli, exits, scripts
from vit.sizes import SIZES, check_image_size

def get_args_parser():
    p = cli.infer_parser(__doc__)
    p.add_argument("--model", choices=sorted(SIZES), default="vit_b_16")
    p.rules.append(check_image_size)
    return p


def main(args, parser):
    from vit.model import MODELS  # torch: after the flags
    # weights of another image size get their position embeddings resized
    return scripts.serve(args, args.model, lambda classes: MODELS[args.model](
        image_size=args.image_size, num_classes=classes))


if __name__ == "__main__":  # the flags are read before torch loads: --help answers at once
    exits.script(get_args_parser, main)
