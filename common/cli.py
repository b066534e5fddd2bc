"""Command-line flags shared by every entry script, and the rules that join them.

A training script builds its parser with `train_parser(recipe defaults)` and adds its
own recipe flags with `add_recipe_argument`, into the parser's "recipe" group under the
short name fix_hp shows (common/recipe.py). The rules (`parser.rules`) check what one
flag alone cannot, before any work starts. Nothing here imports torch: a script parses
its flags before it loads torch, so `--help` and a mistyped flag answer at once.
"""
from __future__ import annotations

import argparse
import functools
import os
import re

from common import files, recipe
from common.errors import UserError
from common.flags import (Parser, default_workers, non_negative_float, non_negative_int,
                          number, positive_float, positive_int)
from common.launcher import world_from_env
from common.precision import choices_for, peak_tflops_arg

OPTIMIZER_IMPLS = ("auto", "fused", "foreach", "loop")
DECODE_MODES = ("auto", "host", "device")  # common/decode.py's


class RecipeParser(Parser):
    """A Parser whose recipe flags sit in one argument group, "recipe", each with the
    short name fix_hp gives it (bs, lr, wd, ...): fix_hp reads them from the group."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.recipe_group = self.add_argument_group(
            "recipe", "the case's settings; a training record's fix_hp lists those changed")

    def add_recipe_argument(self, flag, short, **kwargs):
        """add_argument into the recipe group; `short` is the flag's name in fix_hp."""
        if short in self.recipe_names().values():
            raise ValueError(f"{flag}: the short name {short!r} is another recipe flag's")
        action = self.recipe_group.add_argument(flag, **kwargs)
        action.short_name = short
        return action

    def recipe_names(self):
        """{dest: short name} of the recipe flags, in the order they were added."""
        # argparse keeps a group's own actions in _group_actions, and says so nowhere else
        return {a.dest: a.short_name for a in self.recipe_group._group_actions}


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


def _batch_size_type(auto):
    convert = functools.partial(batch_size_arg, auto=auto)
    convert.refuses = "0"
    return convert


def _parser(description, *, data_help, batch_size, image_size, image_help, precisions,
            precision_help, auto_batch=False, channels_last=False):
    """The flags every script has: data, batch, precision, device, output."""
    p = RecipeParser(description=description,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    p.rules = [check_out]  # cross-flag checks, run by check_flags() before any work
    a = p.add_argument
    data = p.add_mutually_exclusive_group()
    data.add_argument("--data-dir", help=data_help)
    data.add_argument("--synthetic", action="store_true",
                      help="random batches made once on the device: speed only, no acc")
    p.add_recipe_argument(
        "--batch-size", "bs", type=_batch_size_type(auto_batch), default=batch_size,
        help="per device" + ("; auto: the largest that fits, halving from 1024 on "
                             "out-of-memory" if auto_batch else ""))
    a("--precision", choices=precisions, default="fp32", help=precision_help)
    a("--channels-last", action=argparse.BooleanOptionalAction, default=channels_last,
      help="NHWC activations and weights (the fast layout for convolutions on tensor cores)")
    p.add_recipe_argument("--image-size", "img", type=positive_int, default=image_size,
                          help=image_help)
    a("--workers", type=non_negative_int, default=default_workers(),
      help="data loader processes per rank (default: the cores per local rank, at most 8)")
    a("--decode", choices=DECODE_MODES, default="auto",
      help="where JPEGs are decoded: host (the loader's workers), device (the batch on the "
           "device, nvJPEG on NVIDIA; other images still on the host), auto: device where "
           "its decoder works, host elsewhere (and on a CPU)")
    # 32 bits: the samplers' generators take it with the epoch added, within 64 bits
    a("--seed", type=number(int, low=0, high=2 ** 32 - 1), default=0)
    a("--device", default="auto", help="torch device type (cuda, cpu, ...); auto picks")
    a("--num-classes", type=positive_int, default=1000, help="classes with --synthetic")
    a("--out", default="runs", help="directory for the JSON result record")
    a("--lang", choices=("en", "zh"), default="en", help="labels of the printed table row")
    a("--debug", action="store_true", help="show the traceback of a user error")
    a("--dist-timeout", type=positive_float, default=600,
      help="seconds a collective waits for a lost rank before the run ends with an error")
    a("--monitor-interval", type=non_negative_float, default=1.0,
      help="seconds between samples of device power, memory, use and temperature (0: off)")
    a("--peak-tflops", type=peak_tflops_arg, default=None,
      help="the device's dense peak for MFU, where the table lacks it: 312 or fp16=312,fp32=19.5")
    p.set_defaults(model=None)  # a script of several model sizes adds --model
    p.set_defaults(decoding=None)  # the path --decode resolves to, for the record (data.py)
    p.rules.append(check_decode)
    return p


def train_parser(description, *, batch_size, global_batch, lr, epochs, target_acc,
                 image_size=224, warmup_steps=5, channels_last=False, grad_accum=1):
    """The flags every training script has. The recipe's `lr` belongs to its reference
    `global_batch`: with no --lr the run scales it linearly to its own global batch.
    grad_accum=None: accumulate micro-batches up to the reference global batch where the
    devices do not hold it at once. A rule settles the recipe (settle_recipe) before
    the checks that need it, so main finds args.lr and args.grad_accum as the run
    trains with them."""
    p = _parser(description, data_help="ImageNet root holding train/ and val/",
                batch_size=batch_size, image_size=image_size,
                image_help="training crop; eval crop too",
                precisions=choices_for("training"),
                precision_help="fp32 (no TF32), tf32, amp (fp16 autocast + grad scaler), "
                               "bf16 (autocast)", auto_batch=True, channels_last=channels_last)
    recipe_flag, a = p.add_recipe_argument, p.add_argument
    recipe_flag("--lr", "lr", type=non_negative_float, default=None,
                help=f"learning rate (default: the recipe's {lr:g} at global batch "
                     f"{global_batch}, scaled linearly to this run's global batch; 0: the "
                     f"weights stay, speed only)")
    recipe_flag("--grad-accum", "accum", type=positive_int, default=grad_accum,
                help="micro-batches per optimizer step (the loss is divided by it)" +
                     (f"; default: as many as reach the global batch {global_batch}"
                      if grad_accum is None else ""))
    recipe_flag("--epochs", "epochs", type=positive_int, default=epochs)
    a("--max-steps", type=non_negative_int, default=0,
      help="stop after this many optimizer steps (0: no limit)")
    a("--warmup-steps", type=non_negative_int, default=warmup_steps,
      help="optimizer steps run before the clocks start; counted in no figure")
    a("--target-acc", type=non_negative_float, default=target_acc,
      help="stop at this top-1 (percent; 0, or above 100: never)")
    a("--eval-every", type=non_negative_int, default=1, help="evaluate every N epochs (0: never)")
    a("--print-freq", type=positive_int, default=10,
      help="progress line every N steps; on several ranks also how often they agree on a "
           "stop (a signal, a non-finite loss): the one host sync between those steps")
    a("--synthetic-steps", type=positive_int, default=100, help="steps per epoch with --synthetic")
    a("--compile", action="store_true",
      help="torch.compile the training step; compilation happens in the warm-up steps and "
           "is reported apart (compile_s)")
    a("--profile", action="store_true",
      help="torch.profiler over the warm-up steps (never the timed ones): the top operators "
           "in the record, the whole table beside it")
    a("--skip-bad-images", action="store_true",
      help="skip training images that cannot be decoded (counted in the record) instead "
           "of stopping; validation images are never skipped")
    checkpoint_flags(p)
    a("--optimizer-impl", choices=OPTIMIZER_IMPLS, default="auto",
      help="fused, foreach or loop: the same update, at different speeds; auto: fused "
           "where torch has the kernels for the device, torch's default elsewhere")
    a("--mlperf-org", default="unnamed",
      help="the organization the run's MLPerf log names (submission_org)")
    # what --batch-size auto falls back to, and what the learning rate is scaled from
    p.set_defaults(recipe_batch_size=batch_size, reference_global_batch=global_batch,
                   reference_lr=lr, recipe_grad_accum=grad_accum, recipe=None)
    # what a recipe adds when it has them: published weights to start from, an end in steps
    p.set_defaults(weights=None, total_steps=None)
    p.rules += [settle_recipe, check_resume, check_run_length, check_compile,
                check_profile]
    return p


def every(text):
    """--checkpoint-every: '1epoch', '2epochs', '500steps', or '0' for never ->
    (count, 'epoch' | 'step'), (0, None) for never."""
    m = re.fullmatch(r"\s*(\d+)\s*(epochs?|steps?)?\s*", text)
    if not m or (m.group(1) != "0" and not m.group(2)):
        raise argparse.ArgumentTypeError(
            f"{text!r}: give a count and a unit, e.g. 1epoch, 2epochs or 500steps (0: never)")
    n = int(m.group(1))
    return (n, m.group(2).rstrip("s")) if n else (0, None)


every.refuses = "3"


def checkpoint_flags(parser):
    a = parser.add_argument
    a("--checkpoint-every", type=every, default=None, metavar="N{epochs,steps}",
      help="write a checkpoint every N epochs or optimizer steps (default: 1epoch with "
           "--data-dir, never with --synthetic; 0: never)")
    a("--resume", default="auto", metavar="auto|never|PATH",
      help="auto: continue from this command's checkpoint in --out if there is one; "
           "never: start afresh; PATH: continue from that checkpoint")
    a("--keep-checkpoint", action="store_true",
      help="keep the final state as <checkpoint>-final.pt instead of removing the checkpoint")


def infer_parser(description, *, image_size=224, batch_size=256, channels_last=False):
    p = _parser(description, data_help="ImageNet root holding val/ (train/ is not read)",
                batch_size=batch_size, image_size=image_size, image_help="eval crop",
                precisions=choices_for("inference"),
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
    a("--repeat", type=positive_int, default=1, help="timed passes over the validation set, each")
    a("--warmup-batches", type=non_negative_int, default=5,
      help="untimed batches before each pass")
    a("--latency-calls", type=positive_int, default=100, help="timed batch-1 calls for p50/p90/p99")
    a("--synthetic-batches", type=positive_int, default=50,
      help="batches per pass with --synthetic")
    p.rules += [check_compile_mode, check_engine, check_weights_given]
    return p


def check_weights_given(args):
    """`--weights ""` (a script's unset variable) is a mistake, not a wish for random
    weights: those are asked for by leaving --weights out."""
    if args.weights == "":
        raise UserError("--weights: empty; give the path of the weights file, or leave "
                        "--weights out for random weights (speed only)")


def check_out(args):
    files.check_writable(args.out)


def check_decode(args):
    if args.synthetic and args.decode == "device":
        raise UserError("--decode device: --synthetic decodes no images; leave one of them out")


def check_resume(args):
    if args.resume not in ("auto", "never") and not os.path.isfile(args.resume):
        raise UserError(f"--resume {args.resume}: no such file; give a checkpoint from "
                        f"{os.path.join(args.out, 'checkpoints')}, or --resume auto")


def check_compile(args):
    if args.compile and args.warmup_steps < 1:
        raise UserError("--compile: compiling happens in the first step; give "
                        "--warmup-steps 1 or more so that it is not timed")


def compile_modes():
    try:
        from torch._inductor import list_mode_options
        return tuple(list_mode_options())
    except ImportError:  # older torch: the modes its torch.compile documents
        return ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def check_profile(args):
    """--profile profiles warm-up steps after the first and before the last: it needs 3."""
    if args.profile and args.warmup_steps < 3:
        raise UserError("--profile: it profiles warm-up steps (the second to the one before "
                        "the timed region), never timed ones; give --warmup-steps 3 or more")


def check_engine(args):
    """--engine tensorrt needs torch_tensorrt: said before the validation pass, not after."""
    import importlib.util
    if args.engine == "tensorrt" and importlib.util.find_spec("torch_tensorrt") is None:
        raise UserError("--engine tensorrt: torch_tensorrt is not installed here; install "
                        "it or use --engine compile")


def check_compile_mode(args):
    if args.compile_mode is None:
        return
    if args.engine != "compile":
        raise UserError(f"--compile-mode {args.compile_mode}: only for --engine compile "
                        f"(this run uses --engine {args.engine}); leave it out")
    if args.compile_mode not in compile_modes():
        raise UserError(f"--compile-mode {args.compile_mode}: unknown to torch.compile; "
                        f"choose one of {', '.join(compile_modes())}")


def settle_recipe(args):
    """The run's global batch, accumulation and lr (common/recipe.py), settled before
    the rules after it, so that they check the accumulation the run will use. The
    launcher's world size is the run's: dist.setup reads the same world_from_env."""
    recipe.settle(args, world_from_env()[2])


def check_run_length(args):
    if args.synthetic:
        check_steps(args, args.synthetic_steps, "--synthetic-steps")


def check_steps(args, batches, source):
    """The run must have a step after its warm-up to time, and an epoch must hold at
    least one optimizer step; `batches` per epoch, as `source` decides them."""
    accum = args.grad_accum
    per_epoch = batches // accum
    if per_epoch == 0 and args.recipe and args.recipe["given"]["grad_accum"] is None:
        r = args.recipe
        raise UserError(f"accumulating {accum} micro-batches (the recipe's global batch "
                        f"{r['reference_global_batch']} / ({r['world_size']} x "
                        f"{r['batch_size']})) needs more than the {batches} batches of one "
                        f"epoch ({source}); give --grad-accum 1 for a throughput run, or a "
                        f"larger --batch-size")
    if per_epoch == 0:
        raise UserError(f"--grad-accum {accum}: more than the {batches} batches of one "
                        f"epoch ({source}); use a --grad-accum of {batches} or less")
    limits = [(args.epochs * per_epoch, f"--epochs {args.epochs} x {per_epoch} steps per "
                                        f"epoch ({source})", "--epochs")]
    if args.max_steps:
        limits.append((args.max_steps, f"--max-steps {args.max_steps}", "--max-steps"))
    if args.total_steps:
        limits.append((args.total_steps, f"--total-steps {args.total_steps}", "--total-steps"))
    total, why, flag = min(limits)
    if total <= args.warmup_steps:
        raise UserError(f"--warmup-steps {args.warmup_steps}: the run has only {total} "
                        f"optimizer steps ({why}), none left to time after the warm-up; give "
                        f"more {flag} or --warmup-steps below {total}")


def check_flags(args, parser):
    """Every cross-flag rule of the parser, before any work starts."""
    for rule in getattr(parser, "rules", ()):
        rule(args)
