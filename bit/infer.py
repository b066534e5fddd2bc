"""BiT-M-R152x2 inference on the ImageNet validation set.

Our own BiT ResNet-V2 (bit/model.py) loading the official ImageNet-fine-tuned
checkpoint (BiT-M-R152x2-ILSVRC2012.npz, read with allow_pickle=False); evaluation
as BiT does it: Resize 480x480, mean and std 0.5; batch 256. The kernels are
standardised once after loading (fold_weight_standardization), not on every call. Two
passes over every validation image: the eager model (validation), then the engine
(torch.compile by default). Also batch-1 latency.

    python bit/infer.py --data-dir /data/imagenet --weights BiT-M-R152x2-ILSVRC2012.npz --precision fp16
    python bit/infer.py --synthetic --precision fp16 --batch-size 64
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # repo root

from bit.sizes import KNOWN_MODELS
from common import cli, exits, scripts
from common.errors import UserError

def get_args_parser():
    p = cli.infer_parser(__doc__, image_size=480)
    p.add_argument("--model", choices=list(KNOWN_MODELS), default="BiT-M-R152x2")
    return p


def main(args, parser):
    from bit import model as bit_model  # torch: after the flags
    from bit.weights import BIT_MEAN, BIT_STD, hyperrule_transforms, load_weights

    def load(model, path, run):
        if not load_weights(model, path, args.model):
            raise UserError(f"--weights {path}: its head is not for {model.head.conv.out_channels} "
                            f"classes; use the ILSVRC2012 fine-tuned file")
    _, eval_tf = hyperrule_transforms(args.image_size)
    # the weights are fixed from then: standardised once, in float32, not every call
    return scripts.serve(args, args.model, lambda classes: bit_model.bit(
        args.model, num_classes=classes), load=load,
        fixed=bit_model.fold_weight_standardization, transform=eval_tf, mean=BIT_MEAN,
        std=BIT_STD)


if __name__ == "__main__":  # the flags are read before torch loads: --help answers at once
    exits.script(get_args_parser, main)
