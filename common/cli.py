"""Command-line flags shared by every training script, and the fix_hp they imply.

A script builds its parser with `train_parser(recipe defaults)`, adds its own recipe
flags, and reports as fix_hp every recipe value the user changed from those defaults.
"""
from __future__ import annotations

import argparse
import functools
import sys

from common import checkpoint, optim
from common.errors import UserError

# recipe hyper-parameters and their short names in the fix_hp column
HP_NAMES = {
    "batch_size": "bs", "lr": "lr", "momentum": "momentum", "weight_decay": "wd",
    "epochs": "epochs", "image_size": "img", "grad_accum": "accum",
    "label_smoothing": "ls", "lr_step_epochs": "lr_step", "lr_gamma": "lr_gamma",
    "mixup_alpha": "mixup", "cutmix_alpha": "cutmix", "clip_grad": "clip",
    "warmup_epochs": "warmup_ep", "warmup_lr_steps": "warmup_lr", "lr_decay_steps": "lr_decay",
    "total_steps": "steps",
}


def batch_size_arg(text, auto=True):
    if auto and text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a positive number of images per "
                                         f"device{', or auto' if auto else ''}")
    return value


def _parser(description, *, data_help, batch_size, image_size, image_help, precisions,
            precision_help, auto_batch=False, channels_last=False):
    """The flags every script has: data, batch, precision, device, output."""
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    data = p.add_mutually_exclusive_group()
    data.add_argument("--data-dir", help=data_help)
    data.add_argument("--synthetic", action="store_true",
                      help="random batches made once on the device: speed only, no acc")
    a("--batch-size", type=functools.partial(batch_size_arg, auto=auto_batch), default=batch_size,
      help="per device" + ("; auto: the largest that fits, halving from 1024 on "
                           "out-of-memory" if auto_batch else ""))
    a("--precision", choices=precisions, default="fp32", help=precision_help)
    a("--channels-last", action=argparse.BooleanOptionalAction, default=channels_last,
      help="NHWC activations and weights (the fast layout for convolutions on tensor cores)")
    a("--image-size", type=int, default=image_size, help=image_help)
    a("--workers", type=int, default=8, help="data loader processes per rank")
    a("--seed", type=int, default=0)
    a("--device", default="auto", help="torch device type (cuda, cpu, ...); auto picks")
    a("--num-classes", type=int, default=1000, help="classes with --synthetic")
    a("--out", default="runs", help="directory for the JSON result record")
    a("--lang", choices=("en", "zh"), default="en", help="labels of the printed table row")
    a("--debug", action="store_true", help="show the traceback of a user error")
    a("--dist-timeout", type=float, default=600,
      help="seconds a collective waits for a lost rank before the run ends with an error")
    a("--monitor-interval", type=float, default=1.0,
      help="seconds between samples of device power, memory, use and temperature (0: off)")
    return p


def train_parser(description, *, batch_size, lr, epochs, target_acc, image_size=224,
                 warmup_steps=5, channels_last=False):
    p = _parser(description, data_help="ImageNet root holding train/ and val/",
                batch_size=batch_size, image_size=image_size,
                image_help="training crop; eval crop too",
                precisions=("fp32", "tf32", "amp", "bf16"),
                precision_help="fp32 (no TF32), tf32, amp (fp16 autocast + grad scaler), "
                               "bf16 (autocast)", auto_batch=True, channels_last=channels_last)
    a = p.add_argument
    a("--lr", type=float, default=lr)
    a("--epochs", type=int, default=epochs)
    a("--max-steps", type=int, default=0, help="stop after this many optimizer steps (0: no limit)")
    a("--warmup-steps", type=int, default=warmup_steps,
      help="optimizer steps run before the clocks start; counted in no figure")
    a("--target-acc", type=float, default=target_acc, help="stop at this top-1 (percent)")
    a("--eval-every", type=int, default=1, help="evaluate every N epochs (0: never)")
    a("--print-freq", type=int, default=10, help="progress line every N steps")
    a("--synthetic-steps", type=int, default=100, help="steps per epoch with --synthetic")
    a("--compile", action="store_true",
      help="torch.compile the training step; compilation happens in the warm-up steps and "
           "is reported apart (compile_s)")
    a("--profile", action="store_true",
      help="torch.profiler over the warm-up steps (never the timed ones): the top operators "
           "in the record, the whole table beside it")
    a("--skip-bad-images", action="store_true",
      help="skip training images that cannot be decoded (counted in the record) instead "
           "of stopping; validation images are never skipped")
    checkpoint.add_flags(p)
    optim.add_flag(p)
    p.set_defaults(recipe_batch_size=batch_size)  # what --batch-size auto falls back to
    return p


def infer_parser(description, *, image_size=224, batch_size=256, channels_last=False):
    p = _parser(description, data_help="ImageNet root holding val/ (train/ is not read)",
                batch_size=batch_size, image_size=image_size, image_help="eval crop",
                precisions=("fp32", "tf32", "fp16", "bf16"),
                precision_help="the dtype the model runs in (fp32 without TF32 unless tf32)",
                channels_last=channels_last)
    a = p.add_argument
    a("--weights", help="published weights file; without it the model is random (speed only)")
    a("--engine", choices=("compile", "tensorrt", "eager"), default="compile",
      help="what runs the inference pass (validation is always eager)")
    a("--compile-mode", default=None,
      help="torch.compile mode (default: max-autotune, with CUDA graphs, on CUDA; "
           "default elsewhere)")
    a("--freeze", action=argparse.BooleanOptionalAction, default=True,
      help="--engine compile: fold the weights into the compiled graph as constants "
           "(inductor freezing), as a serving engine does")
    a("--repeat", type=int, default=1, help="timed passes over the validation set, each")
    a("--warmup-batches", type=int, default=5, help="untimed batches before each pass")
    a("--latency-calls", type=int, default=100, help="timed batch-1 calls for p50/p90/p99")
    a("--synthetic-batches", type=int, default=50, help="batches per pass with --synthetic")
    return p


def entry(main, parser, argv=None):
    """Parse flags and run main(args, parser); a UserError ends in one line and exit 2."""
    args = parser.parse_args(argv)
    try:
        return main(args, parser)
    except UserError as e:
        if args.debug:
            raise
        print(f"error: {one_line(e)}", file=sys.stderr, flush=True)
        sys.exit(2)


def one_line(error):
    """The message of a UserError; one raised in a data loader worker comes back with
    the worker's traceback in front of it, and its last line is the message."""
    last = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
    prefix = f"{type(error).__module__}.{type(error).__name__}: "
    return last[len(prefix):] if last.startswith(prefix) else last


def fix_hp(args, parser):
    """{short name: value} of the recipe values this run overrides, bs and lr first."""
    values = vars(args)
    return {short: values[k] for k, short in HP_NAMES.items()
            if k in values and values[k] != parser.get_default(k)}
