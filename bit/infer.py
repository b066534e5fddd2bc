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
from common import cli, exits

def get_args_parser():
    p = cli.infer_parser(__doc__, image_size=480)
    p.add_argument("--model", choices=list(KNOWN_MODELS), default="BiT-M-R152x2")
    return p


if __name__ == "__main__":  # flags first: --help and a mistyped flag answer before torch loads
    parser = get_args_parser()
    args = parser.parse_args()

from bit import model as bit_model
from bit.weights import BIT_MEAN, BIT_STD, hyperrule_transforms, load_weights
from common import data, dist, infer_loop, record
from common.errors import UserError


def main(args, parser):
    run = dist.start(args)
    _, eval_tf = hyperrule_transforms(args.image_size)
    loader, num_classes, normalize = data.val_inputs(args, run, eval_tf, BIT_MEAN, BIT_STD)
    model = bit_model.bit(args.model, num_classes=num_classes)
    if args.weights:
        if not load_weights(model, args.weights, args.model):
            raise UserError(f"--weights {args.weights}: its head is not for "
                            f"{num_classes} classes; use the ILSVRC2012 fine-tuned file")
    else:
        dist.print0(run, "no --weights: random weights, the figures are speed only")
    # the weights are fixed from here: standardise them once, in float32, not every call
    bit_model.fold_weight_standardization(model)
    figures = infer_loop.run_inference(run, args, model, loader, normalize)
    result = record.infer_record(run, args, args.model, figures, args.weights)
    return record.conclude(run, args, result)


if __name__ == "__main__":
    exits.entry(main, parser, args)
