"""Command-line flags shared by every training script, and the fix_hp they imply.

A script builds its parser with `train_parser(recipe defaults)`, adds its own recipe
flags, and reports as fix_hp every recipe value the user changed from those defaults.
Nothing here imports torch: a script parses its flags before it loads torch, so
`--help` and a mistyped flag answer at once.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import re
import signal
import sys
import time

from common import files
from common.errors import UserError
from common.flags import (Parser, default_workers, non_negative_float, non_negative_int,
                          positive_float, positive_int)
from common.launcher import world_from_env
from common.precision import choices_for, peak_tflops_arg

OPTIMIZER_IMPLS = ("auto", "fused", "foreach", "loop")
DECODE_MODES = ("auto", "host", "device")  # common/decode.py's

# recipe hyper-parameters and their short names in the fix_hp column
HP_NAMES = {
    "batch_size": "bs", "lr": "lr", "momentum": "momentum", "weight_decay": "wd",
    "epochs": "epochs", "image_size": "img", "grad_accum": "accum",
    "label_smoothing": "ls", "lr_step_epochs": "lr_step", "lr_gamma": "lr_gamma",
    "mixup_alpha": "mixup", "cutmix_alpha": "cutmix", "clip_grad": "clip",
    "warmup_epochs": "warmup_ep", "warmup_lr_steps": "warmup_lr", "lr_decay_steps": "lr_decay",
    "total_steps": "steps", "ra_reps": "ra_reps",
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


def _batch_size_type(auto):
    convert = functools.partial(batch_size_arg, auto=auto)
    convert.refuses = "0"
    return convert


def _parser(description, *, data_help, batch_size, image_size, image_help, precisions,
            precision_help, auto_batch=False, channels_last=False):
    """The flags every script has: data, batch, precision, device, output."""
    p = Parser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.rules = [check_out]  # cross-flag checks, run by check_flags() before any work
    a = p.add_argument
    data = p.add_mutually_exclusive_group()
    data.add_argument("--data-dir", help=data_help)
    data.add_argument("--synthetic", action="store_true",
                      help="random batches made once on the device: speed only, no acc")
    a("--batch-size", type=_batch_size_type(auto_batch), default=batch_size,
      help="per device" + ("; auto: the largest that fits, halving from 1024 on "
                           "out-of-memory" if auto_batch else ""))
    a("--precision", choices=precisions, default="fp32", help=precision_help)
    a("--channels-last", action=argparse.BooleanOptionalAction, default=channels_last,
      help="NHWC activations and weights (the fast layout for convolutions on tensor cores)")
    a("--image-size", type=positive_int, default=image_size, help=image_help)
    a("--workers", type=non_negative_int, default=default_workers(),
      help="data loader processes per rank (default: the cores per local rank, at most 8)")
    a("--decode", choices=DECODE_MODES, default="auto",
      help="where JPEGs are decoded: host (the loader's workers), device (the batch on the "
           "device, nvJPEG on NVIDIA; other images still on the host), auto: device where "
           "its decoder works, host elsewhere (and on a CPU)")
    a("--seed", type=non_negative_int, default=0)
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
    devices do not hold it at once."""
    p = _parser(description, data_help="ImageNet root holding train/ and val/",
                batch_size=batch_size, image_size=image_size,
                image_help="training crop; eval crop too",
                precisions=choices_for("training"),
                precision_help="fp32 (no TF32), tf32, amp (fp16 autocast + grad scaler), "
                               "bf16 (autocast)", auto_batch=True, channels_last=channels_last)
    a = p.add_argument
    a("--lr", type=non_negative_float, default=None,
      help=f"learning rate (default: the recipe's {lr:g} at global batch {global_batch}, "
           f"scaled linearly to this run's global batch; 0: the weights stay, speed only)")
    a("--grad-accum", type=positive_int, default=grad_accum,
      help="micro-batches per optimizer step (the loss is divided by it)" +
           (f"; default: as many as reach the global batch {global_batch}"
            if grad_accum is None else ""))
    a("--epochs", type=positive_int, default=epochs)
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
    # what --batch-size auto falls back to, and what the learning rate is scaled from
    p.set_defaults(recipe_batch_size=batch_size, reference_global_batch=global_batch,
                   reference_lr=lr, recipe_grad_accum=grad_accum, recipe=None)
    # what a recipe adds when it has them: published weights to start from, an end in steps
    p.set_defaults(weights=None, total_steps=None)
    p.rules += [settle_for_checks, check_resume, check_run_length, check_compile,
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
    p.rules += [check_compile_mode, check_engine]
    return p


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


def settle_for_checks(args):
    """The recipe settled as the launcher's world size implies, so that the start-up
    checks see the accumulation the run will use; settled again once the group is up."""
    settle_recipe(args, world_from_env()[2])


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


def entry(main, parser, args):
    """Check the flags already parsed, then run main(args, parser); a UserError ends in
    one line and exit 2."""
    try:
        check_flags(args, parser)
        return main(args, parser)
    except UserError as e:
        if args.debug:
            raise
        tell_error(one_line(e))
        quiet_exit(2)
    except Exception as e:
        rank, hangs = os.environ.get("RANK", "?"), waited_in_vain(e)
        if args.debug or not (hangs or lost_a_peer(e)):
            raise
        if hangs:  # a rank hangs, outside the loops (which say more: common/left_behind.py)
            tell_error(f"rank {rank}: a collective waited {args.dist_timeout:g} s "
                       f"(--dist-timeout) for a rank that did not come, and timed out; if "
                       f"a step can take that long, raise --dist-timeout")
        else:  # the rank that ended first has told why; this one only lost it
            tell_error(f"rank {rank}: another rank ended (its error is above), so this "
                       f"one stops too")
        quiet_exit(1)


def tell_error(line):
    """The one line on stderr and, under torchrun, in the error file it gives each rank
    (TORCHELASTIC_ERROR_FILE): torchrun's failure summary then shows the line as the
    rank's traceback, instead of a pointer to its docs."""
    print(f"error: {line}", file=sys.stderr, flush=True)
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return
    # torchelastic's format: {"message": {"message": ..., "extraInfo": {"py_callstack", ...}}}
    found = {"message": {"message": line, "extraInfo": {
        "py_callstack": f"error: {line}", "timestamp": str(int(time.time()))}}}
    try:
        files.write_atomically(path, lambda f: json.dump(found, f))
    except OSError:
        pass  # the line is on stderr; torchrun's summary then points to its docs


PEER_GONE = ("Connection closed by peer", "Connection reset by peer", "remote worker crashing")


def lost_a_peer(error):
    """True for a collective that failed because another rank's process ended."""
    import torch.distributed as torch_dist
    if not torch_dist.is_available() or not torch_dist.is_initialized():
        return False
    return isinstance(error, getattr(torch_dist, "DistNetworkError", ())) or (
        isinstance(error, RuntimeError) and any(s in str(error) for s in PEER_GONE))


def waited_in_vain(error):
    """True for a collective that timed out waiting for a rank (common/left_behind.py)."""
    import torch.distributed as torch_dist

    from common.device import Device
    return (torch_dist.is_available() and torch_dist.is_initialized()
            and Device.is_collective_timeout(error))


def quiet_exit(code):
    """Exit after an error already told in one line. The loader's workers end with the
    process; torch's SIGCHLD handler would take that for a worker that died and print a
    traceback from the interpreter's exit, so it is put back to the default first."""
    if hasattr(signal, "SIGCHLD"):
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    sys.exit(code)


def one_line(error):
    """The message of a UserError; one raised in a data loader worker comes back with
    the worker's traceback in front of it, and its last line is the message."""
    last = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
    prefix = f"{type(error).__module__}.{type(error).__name__}: "
    return last[len(prefix):] if last.startswith(prefix) else last


def settle_recipe(args, world_size):
    """Set args.grad_accum and args.lr to what this run trains with, and args.recipe to
    how they were derived: the global batch is world size x per-device batch x
    accumulation; with no --lr the recipe's lr scales linearly from its reference global
    batch to that one. Called again once --batch-size auto has found its batch."""
    given = args.recipe["given"] if args.recipe else {
        "lr": args.lr, "grad_accum": args.grad_accum}
    batch = args.recipe_batch_size if args.batch_size == "auto" else args.batch_size
    reference = args.reference_global_batch
    accum = given["grad_accum"] or max(1, reference // (world_size * batch))
    global_batch = world_size * batch * accum
    if given["lr"] is None:
        lr = args.reference_lr * global_batch / reference
        lr_from = f"{args.reference_lr:g} x {global_batch} / {reference} (linear scaling)"
    else:
        lr, lr_from = given["lr"], "--lr"
    args.lr, args.grad_accum = lr, accum
    args.recipe = {
        "given": given, "reference_global_batch": reference, "reference_lr": args.reference_lr,
        "global_batch": global_batch, "batch_size": batch, "world_size": world_size,
        "grad_accum": accum, "lr": lr, "lr_from": lr_from,
        "grad_accum_from": _grad_accum_from(args, given["grad_accum"])}
    return args.recipe


def _grad_accum_from(args, given):
    if given is None:
        return f"to reach the global batch {args.reference_global_batch}"
    return "the recipe" if given == args.recipe_grad_accum else "--grad-accum"


def describe_recipe(recipe):
    """One line, e.g. 'global batch 1 x 32 x 1 = 32 (recipe: 256 at lr 0.1), lr 0.0125 =
    0.1 x 32 / 256 (linear scaling)'."""
    r = recipe
    return (f"global batch {r['world_size']} x {r['batch_size']} x {r['grad_accum']} = "
            f"{r['global_batch']} (recipe: {r['reference_global_batch']} at lr "
            f"{r['reference_lr']:g}), lr {r['lr']:.4g}" +
            ("" if r["lr_from"] == "--lr" else f" = {r['lr_from']}"))


def fix_hp(args, parser):
    """{short name: value} of the recipe values this run overrides, bs and lr first: the
    values the user gave, not those derived from the recipe (lr, grad_accum)."""
    values = {**vars(args), **(args.recipe or {}).get("given", {})}
    return {short: values[k] for k, short in HP_NAMES.items()
            if k in values and values[k] != parser.get_default(k)}
