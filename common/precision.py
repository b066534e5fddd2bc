"""What each --precision name means: the one table every script reads.

            training (a step of the recipe)              inference (the model as served)
    fp32    fp32 everywhere, TF32 off                    the model in fp32, TF32 off
    tf32    fp32 weights, TF32 matmuls and convolutions  the same
    amp     fp16 autocast, fp32 weights, loss scaled     not taken
    fp16    not taken                                    the whole model cast to fp16
    bf16    bf16 autocast, fp32 weights                  the whole model cast to bf16

Why training and inference differ: a training step updates fp32 master weights, so a
low precision there is autocast, each operation in the dtype that is safe for it; fp16's
narrow range lets small gradients underflow, so amp scales the loss, while bf16 has
fp32's range and needs no scaling. Inference has no gradients to keep: a serving engine
runs the whole model, weights included, in the low dtype, and so do fp16 and bf16 here.
amp names the training recipe (autocast and a grad scaler) and means nothing without a
backward pass; fp16 for training would be a model without fp32 master weights, which no
recipe here trains. fp32 means fp32 on every engine: TF32 only when tf32 asks for it.
MFU divides by the device's peak at the dtype the matmuls run in, so amp's is fp16's.

The name itself is what a record, its table row and the reference rows carry.
Nothing here imports torch: the flags are parsed before torch loads, so the dtypes are
named here and looked up in torch only when used.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass


@dataclass(frozen=True)
class Precision:
    name: str
    training: bool          # a --precision of the training scripts
    inference: bool         # a --precision of the inference scripts
    autocast: str | None    # torch dtype a training step autocasts to; None: no autocast
    model: str | None       # torch dtype the inference model is cast to
    loss_scaling: bool      # the training loss is scaled before backward
    tf32: bool              # matmuls and convolutions may use TF32
    peak_key: str           # the key of the device's peak FLOP/s for MFU

    @property
    def autocast_dtype(self):
        return _torch_dtype(self.autocast)

    @property
    def model_dtype(self):
        return _torch_dtype(self.model)


def _torch_dtype(name):
    if name is None:
        return None
    import torch  # only once a run has started, never while flags are parsed
    return getattr(torch, name)


PRECISIONS = {p.name: p for p in [
    #         name    training inference autocast    model       scaled  tf32   peak_key
    Precision("fp32", True,    True,     None,       "float32",  False,  False, "fp32"),
    Precision("tf32", True,    True,     None,       "float32",  False,  True,  "tf32"),
    Precision("amp",  True,    False,    "float16",  None,       True,   False, "fp16"),
    Precision("fp16", False,   True,     None,       "float16",  False,  False, "fp16"),
    Precision("bf16", True,    True,     "bfloat16", "bfloat16", False,  False, "bf16"),
]}


def choices_for(case):
    """The names a "training" or an "inference" script takes, in the table's order."""
    return tuple(name for name, p in PRECISIONS.items() if getattr(p, case))


def peak_keys():
    """The keys of a device's peak table that some precision is measured against."""
    return tuple(dict.fromkeys(p.peak_key for p in PRECISIONS.values()))


def peak_tflops_arg(text):
    """--peak-tflops: '312' (at the run's precision) or 'fp16=312,fp32=19.5'."""
    peaks = {}
    for part in text.split(","):
        key, _, value = part.rpartition("=")
        key = key.strip() or "all"
        number = _number_or_none(value)
        if key not in peak_keys() + ("all",) or not number or number <= 0:
            raise argparse.ArgumentTypeError(
                f"{text!r}: give dense peak TFLOP/s as a number (312) or per precision "
                f"({','.join(f'{k}=N' for k in peak_keys())})")
        peaks[key] = number
    return peaks


peak_tflops_arg.refuses = "fast"  # a value it refuses, for the test of every flag


def _number_or_none(text):
    try:
        return float(text)
    except ValueError:
        return None
