"""The device shim: the `Device` of this process, and which kind of chip it is.

Together with its data (common/kinds.py) and the monitors' parsers
(common/vendor_tools.py) it is the one place in the suite that knows about vendors.
Everything else asks a `Device` (or its `Kind`) for what it needs (synchronize,
memory, the distributed backend, autocast, timing events, peak FLOP/s, how to
monitor the chip, which variable lists its visible devices, fused optimizer
kernels, profiler activities) and never branches on a vendor.

Each call goes to `torch.accelerator` where the installed torch has it and it
serves this kind, else to the kind's own module (torch.npu, torch_xmlir.xpu, ...).
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import importlib.metadata
import os
import platform
import re
import resource
import subprocess
import sys

import torch

from common import kinds, launcher
from common.errors import UserError
from common.precision import PRECISIONS


def short_label(name, prefixes=()):
    """The model without the leading `prefixes` (the vendor and its product lines), form
    factor or memory: 'NVIDIA A100-SXM4-40GB' -> 'A100', 'Ascend910B3' -> '910B3'."""
    # the longest first, so 'Intel(R)' goes whole rather than leaving its '(R)'
    words = "|".join(re.escape(p) for p in sorted(prefixes, key=len, reverse=True))
    label = re.sub(rf"^(({words})\s*)+", "", name.strip()) if words else name.strip()
    # drop form factor and memory size, whichever order they come in
    suffix = re.compile(r"[- ](SXM\d*|PCIE|\d+GB|HBM\d*e?)(?=$|[- ])", re.I)
    while suffix.search(label):
        label = suffix.sub("", label, count=1)
    return label.strip() or name


def _torch_build():
    """torch's version with its local tag; CoreX wheels keep `+corex.X` only in the metadata."""
    try:
        wheel = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        wheel = ""
    return f"{torch.__version__} {wheel}".lower()


def cuda_vendor(name):
    """Who made the chip behind torch.cuda, from the torch build and the device name."""
    if torch.version.hip:
        return "Hygon" if re.search(r"DCU|Hygon|K100|Z100|BW\d", name, re.I) else "AMD"
    if getattr(torch.version, "maca", None) or re.search(r"MetaX", name, re.I):
        return "MetaX"
    if re.search(r"Iluvatar|BI-V|MR-V", name) or "corex" in _torch_build():
        return "Iluvatar"
    # kunlunxin's cuda-compatible builds import torch_xmlir with torch and name the chip 'GPU'
    if sys.modules.get("torch_xmlir") is not None:
        return "Kunlunxin"
    return "NVIDIA"


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _apple_chip():
    """'Apple M2 Max': torch.mps has no device name; the chip's brand string is it."""
    try:
        return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True,
                              text=True, timeout=5).stdout.strip() or "Apple GPU"
    except (OSError, subprocess.SubprocessError):
        return "Apple GPU"


def _nvidia_driver():
    try:
        with open("/proc/driver/nvidia/version") as f:
            return re.search(r"Kernel Module\s+([\d.]+)", f.read()).group(1)
    except (OSError, AttributeError):
        return None


def _corex():
    corex = re.search(r"corex\.?([\d.]*\d)", _torch_build())
    return corex.group(1) if corex else None


# how the record's stack reads each name a kind lists in `software` (None: not there)
SOFTWARE = {
    "cudnn": lambda device: torch.backends.cudnn.version(),
    "corex": lambda device: _corex(),
    "driver": lambda device: _nvidia_driver() if device.vendor == "NVIDIA" else None,
    "macos": lambda device: platform.mac_ver()[0],
}


def _api(kind):
    """The module with the kind's device calls (imports its plug-in first)."""
    if kind.plugin:
        importlib.import_module(kind.plugin)
    if kind.api:
        return importlib.import_module(kind.api)
    return getattr(torch, kind.type, None)


def _accelerator_serves(kind):
    # torch.accelerator speaks for the device type torch registered; a kind with its own
    # module does not go through it, nor one that says so (via_accelerator)
    acc = getattr(torch, "accelerator", None)
    if acc is None or kind.api or kind.host or not kind.via_accelerator:
        return False
    current = acc.current_accelerator()
    return current is not None and current.type == kind.type


class Device:
    """One device of a kind, for one process (its local rank)."""

    def __init__(self, kind, index=0):
        self.kind = kind
        self.type = kind.type
        self.backend = kind.backend
        self.vendor = kind.vendor
        self.index = index
        self.api = None if kind.host else _api(kind)
        self._accelerator = _accelerator_serves(kind)
        if kind.host:
            self.name, self.label = _cpu_name(), kind.vendor
            return
        set_device = self._call("set_device_index", "set_device")
        if set_device is not None:  # mps has one device and nothing to set
            set_device(index)
        get_name = getattr(self.api, "get_device_name", None)
        self.name = get_name(index) if get_name else _apple_chip()
        if kind.cuda_api:
            self.vendor = cuda_vendor(self.name)
        self.label = short_label(self.name, (self.vendor, *kind.label_prefixes))

    @property
    def torch_device(self):
        # built on use, as torch knows a plug-in's type name only once the plug-in is imported
        return torch.device(self.type) if self.kind.host else torch.device(self.type, self.index)

    def __repr__(self):
        return f"Device({self.torch_device}, {self.name!r})"

    def _call(self, name, *older_names):
        """torch.accelerator's `name` where it serves this kind, else the device module's
        `name` or the first of `older_names` it has (None when it has none)."""
        if self._accelerator and hasattr(torch.accelerator, name):
            return getattr(torch.accelerator, name)
        return next((getattr(self.api, n) for n in (name, *older_names)
                     if getattr(self.api, n, None) is not None), None)

    # the calls below take no device index: they act on the process's current device,
    # set in __init__, and mps and torch_xmlir take none

    # clocks
    def synchronize(self):
        if not self.kind.host:
            # torch_xmlir.xpu has called it xpu_synchronize
            self._call("synchronize", "xpu_synchronize")()

    def timing_event(self):
        """A device event that records when the queued work reaches it, or None."""
        if self.kind.host:
            return None
        if self._accelerator and hasattr(torch, "Event"):
            return torch.Event(self.torch_device, enable_timing=True)
        event = getattr(self.api, "Event", None)  # absent from torch_xmlir.xpu and older mps
        return event(enable_timing=True) if event is not None else None

    # memory, read as the kind's `memory` says: "allocator" (the device's own memory and
    # its allocator's peak), "unified" (mps: memory shared with the host, no peak kept) or
    # "host" (the host's own: the process's peak RSS over the machine's memory)
    def reset_peak_memory(self):
        if self.kind.memory != "allocator":  # only an allocator keeps a peak to reset
            return
        # older torch_musa names it reset_peak_stats; some torch_xmlir builds have neither
        reset = self._call("reset_peak_memory_stats", "reset_peak_stats")
        with contextlib.suppress(AttributeError, RuntimeError, TypeError):
            if reset is not None:
                reset()

    def empty_cache(self):
        """Give the allocator's cached blocks back (after an out-of-memory attempt)."""
        if not self.kind.host:
            release = self._call("empty_cache")
            if release is not None:
                release()

    def peak_memory(self):
        """Bytes: the allocator's peak reservation, or the process's peak RSS on the host;
        None where the device's module cannot tell (the mem cell stays empty)."""
        if self.kind.memory == "host":
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        if self.kind.memory == "unified":
            # mps keeps no peak: what the metal driver holds for this process, pools included
            return self.api.driver_allocated_memory()
        peak = self._call("max_memory_reserved")
        try:
            return peak() if peak is not None else None
        except (AttributeError, RuntimeError, TypeError):  # present but not wired (torch_xmlir)
            return None

    def total_memory(self):
        machine = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        if self.kind.memory == "host":
            return machine
        if self.kind.memory == "unified":
            # unified memory: metal's recommended working set where torch can read it
            recommended = getattr(self.api, "recommended_max_memory", None)
            return recommended() if recommended else machine
        return self.api.get_device_properties(self.index).total_memory

    @property
    def pin_memory(self):
        """True where page-locked host batches let the copy to the device run async; a
        run on the host has no copy."""
        return not self.kind.host

    @property
    def reports_out_of_memory(self):
        """False on the host's memory: the system kills the process instead of raising."""
        return self.kind.memory != "host"

    def jpeg_decoders(self):
        """The image libraries whose batched JPEG decoder may run on this device, in
        the order to try them (common/decode.py tries each on a small JPEG first).
        ROCm builds: torchcodec's device decoder is nvJPEG, absent there (its rocJPEG
        one is still to come); torchvision's decode_jpeg(device='cuda') works only in
        AMD's builds with rocJPEG (ROCm/vision; upstream torchvision removed its
        rocJPEG decoder before releasing it), elsewhere it says 'torchvision not
        compiled with nvJPEG support'."""
        if self.kind.cuda_api and torch.version.hip:
            return ("torchvision",)
        return self.kind.jpeg_decoders

    @property
    def decoding_frees_the_host(self):
        """True where decoding on the device takes the work off the host's cores; a
        cpu "device" is the main process itself, beside the loader's workers."""
        return not self.kind.host

    def ddp_device_ids(self):
        """DDP's device_ids: the one device of this process, None on the host."""
        return None if self.kind.host else [self.index]

    @staticmethod
    def is_out_of_memory(error):
        """True for the allocator's out-of-memory error; plug-ins that raise a plain
        RuntimeError say so in its message."""
        oom = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
        return isinstance(error, oom) or "out of memory" in str(error).lower()

    @staticmethod
    def is_collective_timeout(error):
        """True for a collective that waited --dist-timeout for a rank that never came:
        gloo raises it in the call that waits; nccl, under dist_env's settings, in the
        next call once its watchdog has aborted the communicators."""
        return isinstance(error, RuntimeError) and any(
            words in str(error) for words in kinds.COLLECTIVE_TIMEOUT_WORDS)

    def device_count(self):
        """Devices of this kind on this node: 1 for the host, and for a kind that runs
        one process only (mps)."""
        if self.kind.host or self.backend is None:
            return 1
        return self._call("device_count")()

    # random state (the host's is torch's own: the host has no device module)
    def rng_state(self):
        get = getattr(self.api, "get_rng_state", None)
        return get() if get is not None else None

    def set_rng_state(self, state):
        put = getattr(self.api, "set_rng_state", None)
        if state is not None and put is not None:
            put(state)

    # precision: what a name means is common/precision.py's; how this device does it is here
    def supported_precisions(self):
        """The --precision names this device runs: the kind's own list, else those its
        module says it has."""
        if self.kind.precisions:
            return self.kind.precisions
        found = ["fp32", "amp", "fp16"]
        # tf32 is an nvidia ampere tensor-core mode; other cuda-api chips report capabilities
        # of their own (kunlunxin's compat layer says 8.6)
        if self.vendor == "NVIDIA" and torch.cuda.get_device_capability(self.index) >= (8, 0):
            found.append("tf32")
        bf16 = getattr(self.api, "is_bf16_supported", None)
        if bf16 is not None and bf16():
            found.append("bf16")
        return tuple(p for p in PRECISIONS if p in found)

    def set_precision(self, precision):
        """Fix the math mode: fp32 means full fp32 everywhere, tf32 only when asked."""
        if precision.name not in self.supported_precisions():
            raise UserError(
                f"--precision {precision.name}: {self.label} ({self.type}) does not support "
                f"it; choose one of {', '.join(self.supported_precisions())}")
        torch.backends.cuda.matmul.allow_tf32 = precision.tf32
        torch.backends.cudnn.allow_tf32 = precision.tf32
        torch.set_float32_matmul_precision("high" if precision.tf32 else "highest")
        for switch in self.kind.tf32_switches:
            self._set_switch(switch, precision.tf32)

    @staticmethod
    def tune_for_fixed_shapes():
        """Every timed step has the same shapes: let the convolution library try its
        kernels on the first call of each shape and keep the fastest."""
        torch.backends.cudnn.benchmark = True

    def _set_switch(self, path, on):
        """Set the device module's `path` ('conv.allow_hf32'); a build without it has
        nothing to switch."""
        *owners, attr = path.split(".")
        target = functools.reduce(lambda module, name: getattr(module, name, None), owners,
                                  self.api)
        if hasattr(target, attr):
            setattr(target, attr, on)

    def autocast(self, precision):
        """The training step's autocast context (none where the precision has none)."""
        if precision.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.type, dtype=precision.autocast_dtype)

    def grad_scaler(self, precision):
        """A loss scaler, enabled where the precision scales the loss (disabled: a no-op)."""
        if hasattr(torch.amp, "GradScaler"):  # torch >= 2.3
            return torch.amp.GradScaler(self.type, enabled=precision.loss_scaling)
        return torch.cuda.amp.GradScaler(enabled=precision.loss_scaling)

    def peak(self, precision, given=None):
        """(dense peak FLOP/s of one device at `precision`, where it came from): `given`
        (--peak-tflops) first, then the first entry of the device vendor's table matching
        the device name, which gives its own figure or none (never another entry's);
        (None, why) otherwise."""
        key = precision.peak_key
        tflops = (given or {}).get(key, (given or {}).get("all"))
        if tflops is not None:
            return tflops * 1e12, "--peak-tflops"
        for entry, pattern, table in kinds.PEAK_TFLOPS.get(self.vendor, ()):
            if re.search(pattern, self.name, re.I):
                if key in table:
                    return table[key] * 1e12, f"table: {entry}"
                return None, f"{entry} has no {key} peak on its data sheet; give --peak-tflops"
        return None, f"{self.label} has no {key} peak in the table; give --peak-tflops"
    def stack(self):
        """The vendor and the versions of its software under torch, for the record."""
        found = {"vendor": self.vendor}
        if not self.kind.host:  # a cpu run does not use the build's accelerator software
            found.update({a: getattr(torch.version, a, None) for a in kinds.VERSION_ATTRS})
        if self.kind.plugin:
            found[self.kind.plugin] = getattr(sys.modules[self.kind.plugin], "__version__", None)
        found.update({name: SOFTWARE[name](self) for name in self.kind.software})
        return {k: v for k, v in found.items() if v}


def _available(kind):
    if kind.host:
        return True
    try:
        api = _api(kind)
    except ImportError:  # the plug-in is not installed: not this kind
        return False
    return api is not None and api.is_available()


def select(requested="auto", local_rank=0):
    """The Device for this process: the first available kind, or the one asked for."""
    if requested == "auto":
        kind = next(k for k in kinds.KINDS if _available(k))
    else:
        matches = [k for k in kinds.KINDS if k.type == requested]
        if not matches:
            raise UserError(f"--device {requested}: unknown device type; choose auto or one "
                            f"of {', '.join(dict.fromkeys(k.type for k in kinds.KINDS))}")
        kind = next((k for k in matches if _available(k)), None)
        if kind is None:
            raise UserError(f"--device {requested}: no {' or '.join(k.vendor for k in matches)} "
                            f"device is available to this process; use --device auto to take "
                            f"what is there")
    if kind.backend is None and launcher.world_from_env()[2] > 1:
        raise UserError(f"--device {kind.type}: {kind.vendor} runs one process only; "
                        f"run the script without torchrun (or with --nproc_per_node 1)")
    return Device(kind, 0 if kind.host else local_rank)


def local_device_count(requested="auto"):
    """Devices of the selected kind on this node (1 for CPU): torchrun's --nproc_per_node."""
    return select(requested).device_count()


if __name__ == "__main__":
    argparse.ArgumentParser(description="Print the device, its vendor stack and count as "
                                        "the suite sees them.").parse_args()
    d = select()
    print(f"{d.vendor} {d.type} x{d.device_count()}: {d.name} ({d.label}); "
          f"precisions {', '.join(d.supported_precisions())}; backend {d.backend}; "
          f"stack {d.stack()}")
