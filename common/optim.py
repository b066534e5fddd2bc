"""The recipe's optimizer in the fastest implementation that makes the same update.

torch has three implementations of SGD and AdamW: a loop over the parameters, `foreach`
(batched kernels) and `fused` (one kernel per parameter group). They make the same update
up to float rounding (fused SGD with momentum differs from the loop by one ulp in a few
weights: a fused multiply-add). One `optimizer.step()` on random gradients, median of 7,
on a 2-core CPU with torch 2.14.1:

    ResNet50 SGD      loop  34 ms   foreach  41 ms   fused 18 ms
    MobileNetV2 SGD   loop   8 ms   foreach   8 ms   fused  3 ms
    BiT-M-R50x1 SGD   loop  27 ms   foreach  28 ms   fused 15 ms
    ViT-B/16 AdamW    loop 443 ms   foreach 366 ms   fused 66 ms

`--optimizer-impl auto` takes fused on the devices whose fused kernels are torch's own
(the device shim's kinds say which) and torch's default elsewhere (a vendor's plug-in may
register the device without the kernels), and for parameters that are plain tensors: FSDP2's sharded
parameters (DTensor) have no sharding rule for the fused kernels. The record names the
implementation that ran.
"""
from __future__ import annotations

import torch

from common.kinds import kind_of_type
from common.errors import UserError


def _plain(params):
    """True when no parameter is a tensor subclass (FSDP2's DTensor shards)."""
    return all(type(p) in (torch.Tensor, torch.nn.Parameter) for p in params)


def make(cls, params, asked, device, **hyper):
    """`cls(params, **hyper)` in the implementation `asked` (--optimizer-impl) on
    `device` (the shim)."""
    params = list(params)
    impl = asked
    if asked == "auto":
        fused = kind_of_type(device.type).fused_optimizer
        impl = "fused" if fused and _plain(params) else None
    elif asked == "fused" and not _plain(params):
        # the kernel would fail at the first step, deep inside DTensor's dispatch
        raise UserError(f"--optimizer-impl fused: {cls.__name__}'s fused kernel does not "
                        f"take sharded (--fsdp) parameters; use --optimizer-impl foreach")
    kw = {"fused": {"fused": True}, "foreach": {"foreach": True},
          "loop": {"foreach": False}, None: {}}[impl]
    try:
        return cls(params, **hyper, **kw)
    except RuntimeError as e:
        if asked == "auto":  # e.g. parameters of a kind the fused kernels do not take
            return cls(params, **hyper)
        raise UserError(f"--optimizer-impl {impl}: {cls.__name__} has no such implementation "
                        f"on {device.type} ({str(e).splitlines()[0]}); use "
                        f"--optimizer-impl loop") from None


def describe(optimizer):
    """{'name': 'SGD', 'impl': 'fused' | 'foreach' | 'loop'}: what the step runs."""
    d = optimizer.defaults
    if d.get("fused"):
        impl = "fused"
    elif d.get("foreach") is not None:
        impl = "foreach" if d["foreach"] else "loop"
    else:  # torch decides per step: foreach when every parameter is on a native device
        params = [p for g in optimizer.param_groups for p in g["params"]]
        try:
            from torch.optim.optimizer import _default_to_fused_or_foreach
            impl = "foreach" if _default_to_fused_or_foreach(params, False, False)[1] else "loop"
        except (ImportError, TypeError):
            impl = "torch default"
    return {"name": type(optimizer).__name__, "impl": impl}
