"""The device shim: the one place in the suite that knows about vendors.

Everything else asks a `Device` for what it needs (synchronize, memory, the
distributed backend, autocast, timing events, peak FLOP/s) and never branches
on a vendor. A new kind of chip is one more entry in KINDS.

Detection order is the order of KINDS: the first kind whose plug-in imports and
whose `torch.<type>.is_available()` is true wins; CPU is last and always there.
`--device TYPE` picks a kind by its torch device type instead.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import platform
import re
import resource
from dataclasses import dataclass

import torch

from common.errors import UserError

GiB = 1024 ** 3


@dataclass(frozen=True)
class Kind:
    vendor: str             # shown in records and tables
    type: str               # torch device type
    backend: str            # torch.distributed backend
    plugin: str | None = None  # module that registers the device type with torch


KINDS = [
    # NVIDIA and the chips that expose the CUDA API (Iluvatar, MetaX, Hygon)
    Kind("NVIDIA", "cuda", "nccl"),
    Kind("CPU", "cpu", "gloo"),
]

# dense peak FLOP/s per precision (vendor data sheets), matched on the device name;
# a device that is not listed gets no MFU rather than a guessed one
PEAK_TFLOPS = [
    (r"H100.*PCIe", {"fp32": 51.2, "tf32": 378, "fp16": 756, "bf16": 756}),
    (r"H100|H200|H800|GH200", {"fp32": 66.9, "tf32": 494.7, "fp16": 989.4, "bf16": 989.4}),
    (r"A100|A800", {"fp32": 19.5, "tf32": 156, "fp16": 312, "bf16": 312}),
    (r"L40S", {"fp32": 91.6, "tf32": 183, "fp16": 362, "bf16": 362}),
    (r"V100", {"fp32": 15.7, "fp16": 125}),
]

# training: amp is fp16 autocast with loss scaling, bf16 is bf16 autocast;
# inference: fp16 and bf16 run the model in that dtype
PRECISIONS = ("fp32", "tf32", "amp", "fp16", "bf16")
_AUTOCAST = {"amp": torch.float16, "bf16": torch.bfloat16}
DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "amp": torch.float16,
          "fp16": torch.float16, "bf16": torch.bfloat16}


def short_label(name):
    """'NVIDIA A100-SXM4-40GB' -> 'A100', 'NVIDIA H100 80GB HBM3' -> 'H100'."""
    label = re.sub(r"^((NVIDIA|Tesla|GeForce|Iluvatar)\s+)+", "", name.strip())
    # drop form factor and memory size, whichever order they come in
    suffix = re.compile(r"[- ](SXM\d*|PCIE|\d+GB|HBM\d*e?)(?=$|[- ])", re.I)
    while suffix.search(label):
        label = suffix.sub("", label, count=1)
    return label.strip() or name


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class Device:
    """One device of a kind, for one process (its local rank)."""

    def __init__(self, kind, index=0):
        self.kind = kind
        self.type = kind.type
        self.backend = kind.backend
        self.vendor = kind.vendor
        self.index = index
        self.api = getattr(torch, kind.type)  # torch.cuda, torch.npu, torch.mlu, ...
        if kind.type == "cpu":
            self.torch_device = torch.device("cpu")
            self.name = _cpu_name()
            self.label = "CPU"
        else:
            self.api.set_device(index)
            self.torch_device = torch.device(kind.type, index)
            self.name = self.api.get_device_name(index)
            self.label = short_label(self.name)

    def __repr__(self):
        return f"Device({self.torch_device}, {self.name!r})"

    # clocks
    def synchronize(self):
        if self.type != "cpu":
            self.api.synchronize(self.index)

    def timing_event(self):
        """A device event that records when the queued work reaches it, or None."""
        event = getattr(self.api, "Event", None)
        return event(enable_timing=True) if event is not None and self.type != "cpu" else None

    # memory
    def reset_peak_memory(self):
        if self.type != "cpu":
            self.api.reset_peak_memory_stats(self.index)

    def peak_memory(self):
        """Bytes: the allocator's peak reservation, or the process's peak RSS on CPU."""
        if self.type == "cpu":
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return self.api.max_memory_reserved(self.index)

    def total_memory(self):
        if self.type == "cpu":
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return self.api.get_device_properties(self.index).total_memory

    # precision
    def supported_precisions(self):
        if self.type == "cpu":
            return ("fp32", "bf16")
        found = ["fp32", "amp", "fp16"]
        if self.type == "cuda" and torch.cuda.get_device_capability(self.index) >= (8, 0):
            found.append("tf32")
        bf16 = getattr(self.api, "is_bf16_supported", None)
        if bf16 is not None and bf16():
            found.append("bf16")
        return tuple(p for p in PRECISIONS if p in found)

    def set_precision(self, precision):
        """Fix the math mode: fp32 means full fp32 everywhere, tf32 only when asked."""
        if precision not in self.supported_precisions():
            raise UserError(
                f"--precision {precision}: {self.label} ({self.type}) does not support it; "
                f"choose one of {', '.join(self.supported_precisions())}")
        tf32 = precision == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        torch.set_float32_matmul_precision("high" if tf32 else "highest")

    def autocast(self, precision):
        dtype = _AUTOCAST.get(precision)
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.type, dtype=dtype)

    def grad_scaler(self, precision):
        """fp16 needs loss scaling; the others do not (a disabled scaler is a no-op)."""
        enabled = precision == "amp"
        if hasattr(torch.amp, "GradScaler"):  # torch >= 2.3
            return torch.amp.GradScaler(self.type, enabled=enabled)
        return torch.cuda.amp.GradScaler(enabled=enabled)

    def peak_flops(self, precision):
        """Dense peak FLOP/s of this device at `precision`, or None where unknown."""
        key = "fp16" if precision == "amp" else precision
        for pattern, table in PEAK_TFLOPS:
            if re.search(pattern, self.name) and key in table:
                return table[key] * 1e12
        return None

    def stack(self):
        """Versions of the vendor software under torch, for the record."""
        if self.type == "cuda":
            return {"cuda": torch.version.cuda, "hip": torch.version.hip,
                    "cudnn": torch.backends.cudnn.version()}
        if self.kind.plugin:
            mod = importlib.import_module(self.kind.plugin)
            return {self.kind.plugin: getattr(mod, "__version__", None)}
        return {}


def _available(kind):
    if kind.type == "cpu":
        return True
    if kind.plugin:
        try:
            importlib.import_module(kind.plugin)
        except ImportError:
            return False
    api = getattr(torch, kind.type, None)
    return api is not None and api.is_available()


def select(requested="auto", local_rank=0):
    """The Device for this process: the first available kind, or the one asked for."""
    if requested == "auto":
        kind = next(k for k in KINDS if _available(k))
    else:
        matches = [k for k in KINDS if k.type == requested]
        if not matches:
            raise UserError(f"--device {requested}: unknown device type; "
                             f"choose auto or one of {', '.join(k.type for k in KINDS)}")
        kind = matches[0]
        if not _available(kind):
            raise UserError(f"--device {requested}: no {kind.vendor} device is available "
                             f"to this process; use --device auto to take what is there")
    return Device(kind, local_rank if kind.type != "cpu" else 0)


def local_device_count(requested="auto"):
    """Devices of the selected kind on this node (1 for CPU): torchrun's --nproc_per_node."""
    kind = select(requested).kind
    return 1 if kind.type == "cpu" else getattr(torch, kind.type).device_count()


if __name__ == "__main__":
    # `python -m common.device`: what the suite sees here
    d = select()
    print(f"{d.vendor} {d.type} x{local_device_count()}: {d.name} ({d.label}); "
          f"precisions {', '.join(d.supported_precisions())}; backend {d.backend}")
