"""The device shim: the one place in the suite that knows about vendors.

Everything else asks a `Device` (or its `Kind`) for what it needs (synchronize,
memory, the distributed backend, autocast, timing events, peak FLOP/s, how to
monitor the chip, which variable lists its visible devices, fused optimizer
kernels, profiler activities) and never branches on a vendor. A new kind of chip
is one more entry in KINDS; its monitoring tools are read by common/vendor_tools.py.

Detection order is the order of KINDS: the first kind whose plug-in imports and
whose device module says `is_available()` wins; CPU is last and always there.

    cuda  NVIDIA, and the chips behind the CUDA API: AMD and Hygon DCU (ROCm builds),
          Iluvatar (CoreX builds), MetaX (MACA builds); told apart by `cuda_vendor`
    musa  Moore Threads (torch_musa)      mlu  Cambricon (torch_mlu)
    npu   Ascend (torch_npu)              xpu  Kunlunxin (torch_xmlir), then Intel (torch.xpu)
    mps   Apple, one process only         cpu  always

cuda comes first because it is cheap to ask and needs no plug-in import; a
Kunlunxin build that serves the CUDA API is found there too.
`--device TYPE` takes the first available kind of that torch device type instead
(`--device xpu` is Kunlunxin where torch_xmlir is installed, Intel otherwise).

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
from dataclasses import dataclass

import torch

from common import launcher
from common import vendor_tools as tools
from common.errors import UserError
from common.precision import PRECISIONS


@dataclass(frozen=True)
class Kind:
    vendor: str                # shown in records and tables (cuda: refined by cuda_vendor)
    type: str                  # torch device type
    backend: str | None        # torch.distributed backend; None: one process only
    plugin: str | None = None  # module that registers the device type with torch
    api: str | None = None     # module with the device calls, where it is not torch.<type>
    visible: tuple = ()        # environment variables that list the devices a process sees
    monitors: tuple = ()       # vendor_tools.Tool: how to sample the chip, tried in order
    fused_optimizer: bool = False       # torch's own fused SGD/AdamW kernels run on it
    profiler_activity: str | None = None  # torch.profiler.ProfilerActivity with device time
    compile_mode: str = "default"       # torch.compile mode of the inference engine
    label_prefixes: tuple = ()  # words before the model in device names, besides the vendor
    tf32_switches: tuple = ()   # attributes of `api` that let fp32 math run in a shorter form
    jpeg_decoders: tuple = ()   # image libraries that decode JPEG batches on it (--decode)
    dist_env: tuple = ()        # (variable, value): how the backend meets a timed-out collective

    def visible_ids(self, n):
        """The ids (index or uuid) the tools know the node's first n devices by."""
        for var in self.visible:
            listed = [s.strip() for s in os.environ.get(var, "").split(",") if s.strip()]
            if listed:
                return listed[:n]
        return [str(i) for i in range(n)]


# kunlunxin's tool is xpu-smi, xpu_smi in older releases; intel's xpu-smi is another tool
KUNLUNXIN_TOOLS = (tools.command("xpu-smi", ["xpu-smi"], tools.parse_smi_table),
                   tools.command("xpu_smi", ["xpu_smi"], tools.parse_smi_table))
# the cuda entry serves every chip behind the CUDA API: its tools are tried in turn and the
# first that answers is the chip's own (nvml or nvidia-smi, ixsmi, rocm-smi or amdsmi,
# hy-smi, mx-smi, kunlunxin's). ixsmi names its power field gpu.power.draw from corex 4 on.
CUDA_TOOLS = (tools.NVML, tools.smi_csv("nvidia-smi", "power.draw"),
              tools.smi_csv("ixsmi", "gpu.power.draw"), tools.smi_csv("ixsmi", "power.draw"),
              tools.command("ixsmi", ["ixsmi"], tools.parse_smi_table), tools.ROCM_SMI,
              tools.AMDSMI, tools.command("hy-smi", ["hy-smi"], tools.parse_column_table),
              tools.command("mx-smi", ["mx-smi"], tools.parse_smi_table), *KUNLUNXIN_TOOLS)
INTEL_DUMP = ["xpu-smi", "dump", "-d", "-1", "-m", "0,1,3,18", "-n", "1"]

# a collective that outlives --dist-timeout must raise in the rank that waits, so that the
# rank can say so in one line and write its record. nccl's default (3) ends the process
# from its watchdog thread instead; 2 aborts the communicators and the rank's next call
# raises. A dump of the flight recorder on a timeout (on by default in recent torch) would
# end the process too, from the monitor thread, once written; that thread still ends a
# process whose watchdog is stuck itself. torch 2.1 reads these names without TORCH_
# (dist.py). A variable the user has set is left as it is.
NCCL_ON_TIMEOUT = (("TORCH_NCCL_ASYNC_ERROR_HANDLING", "2"), ("TORCH_NCCL_DUMP_ON_TIMEOUT", "0"))

KINDS = [
    Kind("NVIDIA", "cuda", "nccl", visible=("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES"),
         monitors=CUDA_TOOLS, fused_optimizer=True, profiler_activity="CUDA",
         compile_mode="max-autotune", label_prefixes=("Tesla", "GeForce", "Instinct"),
         jpeg_decoders=("torchcodec", "torchvision"),  # nvJPEG, both
         dist_env=NCCL_ON_TIMEOUT),
    Kind("Moore Threads", "musa", "mccl", plugin="torch_musa", visible=("MUSA_VISIBLE_DEVICES",),
         monitors=(tools.command("mthreads-gmi", ["mthreads-gmi"], tools.parse_smi_table),)),
    Kind("Cambricon", "mlu", "cncl", plugin="torch_mlu", visible=("MLU_VISIBLE_DEVICES",),
         monitors=(tools.command("cnmon", ["cnmon"], tools.parse_smi_table),)),
    # torch_npu runs fp32 convolutions in hf32 unless told not to: conv.allow_hf32 defaults
    # to True, matmul.allow_hf32 to False (torch_npu's api reference: hiascend.com/document/
    # detail/zh/Pytorch/600/apiref/apilist/ptaoplist_000923.html and ptaoplist_000221.html)
    Kind("Ascend", "npu", "hccl", plugin="torch_npu", visible=("ASCEND_RT_VISIBLE_DEVICES",),
         monitors=(tools.command("npu-smi", ["npu-smi", "info"], tools.parse_npu_smi),),
         tf32_switches=("matmul.allow_hf32", "conv.allow_hf32")),
    # torch.xpu is intel's; kunlunxin's own calls live in torch_xmlir.xpu
    Kind("Kunlunxin", "xpu", "xccl", plugin="torch_xmlir", api="torch_xmlir.xpu",
         visible=("XPU_VISIBLE_DEVICES",), monitors=KUNLUNXIN_TOOLS, fused_optimizer=True),
    Kind("Intel", "xpu", "xccl", visible=("ZE_AFFINITY_MASK",),
         monitors=(tools.command("xpu-smi", INTEL_DUMP, tools.parse_xpu_dump),),
         fused_optimizer=True, label_prefixes=("Intel(R)", "Data Center")),
    Kind("Apple", "mps", None),
    # libjpeg-turbo, in the main process: --decode device only, never auto's choice
    Kind("CPU", "cpu", "gloo", fused_optimizer=True,
         jpeg_decoders=("torchcodec", "torchvision")),
]

# dense peak TFLOP/s of one device per precision, from each product's data sheet (the
# sheets' tensor-core figures "with sparsity" halved), listed under the vendor that makes
# the device: a name is matched only against its own vendor's entries (iluvatar's
# "BI-V100" is no V100). Matched on the device name, the first entry that matches wins,
# so a variant comes before the family it belongs to
# (torch names an H100 SXM "NVIDIA H100 80GB HBM3", an H200 SXM "NVIDIA H200");
# a device that is not listed gets no MFU rather than a guessed one.
_SXM_H = {"fp32": 66.9, "tf32": 494.7, "fp16": 989.4, "bf16": 989.4}
_PCIE_H = {"fp32": 51.2, "tf32": 378, "fp16": 756, "bf16": 756}
_NVL_H = {"fp32": 60, "tf32": 417.5, "fp16": 835.5, "bf16": 835.5}
_A100 = {"fp32": 19.5, "tf32": 156, "fp16": 312, "bf16": 312}
PEAK_TFLOPS = {"NVIDIA": [
    ("GH200", r"GH200", _SXM_H),
    ("H100 NVL", r"H100.*NVL", _NVL_H),
    ("H100 PCIe", r"H100.*PCIe", _PCIE_H),
    ("H100 SXM", r"H100", _SXM_H),
    ("H200 NVL", r"\bH200.*NVL", _NVL_H),
    ("H200 SXM", r"\bH200", _SXM_H),
    ("H800 PCIe", r"H800.*PCIe", _PCIE_H),
    ("H800 SXM", r"H800", _SXM_H),
    ("H20", r"\bH20\b", {"fp32": 44, "tf32": 74, "fp16": 148, "bf16": 148}),
    ("A100 PCIe", r"A100.*PCIe", _A100),
    ("A100 SXM", r"A100", _A100),
    ("A800 PCIe", r"A800.*PCIe", _A100),
    ("A800 SXM", r"A800", _A100),
    ("A40", r"\bA40\b", {"fp32": 37.4, "tf32": 74.8, "fp16": 149.7, "bf16": 149.7}),
    ("A30", r"\bA30\b", {"fp32": 10.3, "tf32": 82, "fp16": 165, "bf16": 165}),
    ("A10", r"\bA10\b", {"fp32": 31.2, "tf32": 62.5, "fp16": 125, "bf16": 125}),
    ("L40S", r"L40S", {"fp32": 91.6, "tf32": 183, "fp16": 362, "bf16": 362}),
    ("L40", r"\bL40\b", {"fp32": 90.5, "tf32": 90.5, "fp16": 181, "bf16": 181}),
    ("L4", r"\bL4\b", {"fp32": 30.3, "tf32": 60, "fp16": 121, "bf16": 121}),
    ("V100S PCIe", r"V100S", {"fp32": 16.4, "fp16": 130}),
    ("V100 PCIe", r"V100.*PCIe", {"fp32": 14, "fp16": 112}),
    ("V100 SXM", r"V100", {"fp32": 15.7, "fp16": 125}),
]}

# what a backend's timed-out collective says: gloo's wait; nccl's watchdog, as the reason
# its aborted communicator gives; nccl's blocking wait
COLLECTIVE_TIMEOUT_WORDS = ("Timed out waiting", "Watchdog caught collective operation timeout",
                            "timed out in blocking wait")

# torch.version attributes that name the vendor software a build runs on
_VERSION_ATTRS = ("cuda", "hip", "maca", "musa", "cann", "xpu")


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


def _api(kind):
    """The module with the kind's device calls (imports its plug-in first)."""
    if kind.plugin:
        importlib.import_module(kind.plugin)
    if kind.api:
        return importlib.import_module(kind.api)
    return getattr(torch, kind.type, None)


def _accelerator_serves(kind):
    # torch.accelerator speaks for the device type torch registered; a kind with its own
    # module does not go through it, and mps gained its memory calls there only lately
    acc = getattr(torch, "accelerator", None)
    if acc is None or kind.api or kind.type in ("cpu", "mps"):
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
        self.api = None if kind.type == "cpu" else _api(kind)
        self._accelerator = _accelerator_serves(kind)
        if kind.type == "cpu":
            self.name, self.label = _cpu_name(), "CPU"
            return
        set_device = self._call("set_device_index", "set_device")
        if set_device is not None:  # mps has one device and nothing to set
            set_device(index)
        get_name = getattr(self.api, "get_device_name", None)
        self.name = get_name(index) if get_name else _apple_chip()
        if kind.type == "cuda":
            self.vendor = cuda_vendor(self.name)
        self.label = short_label(self.name, (self.vendor, *kind.label_prefixes))

    @property
    def torch_device(self):
        # built on use, as torch knows a plug-in's type name only once the plug-in is imported
        return torch.device("cpu") if self.type == "cpu" else torch.device(self.type, self.index)

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
        if self.type != "cpu":
            # torch_xmlir.xpu has called it xpu_synchronize
            self._call("synchronize", "xpu_synchronize")()

    def timing_event(self):
        """A device event that records when the queued work reaches it, or None."""
        if self.type == "cpu":
            return None
        if self._accelerator and hasattr(torch, "Event"):
            return torch.Event(self.torch_device, enable_timing=True)
        event = getattr(self.api, "Event", None)  # absent from torch_xmlir.xpu and older mps
        return event(enable_timing=True) if event is not None else None

    # memory
    def reset_peak_memory(self):
        if self.type in ("cpu", "mps"):
            return
        # older torch_musa names it reset_peak_stats; some torch_xmlir builds have neither
        reset = self._call("reset_peak_memory_stats", "reset_peak_stats")
        with contextlib.suppress(AttributeError, RuntimeError, TypeError):
            if reset is not None:
                reset()

    def empty_cache(self):
        """Give the allocator's cached blocks back (after an out-of-memory attempt)."""
        if self.type not in ("cpu",):
            release = self._call("empty_cache")
            if release is not None:
                release()

    def peak_memory(self):
        """Bytes: the allocator's peak reservation, or the process's peak RSS on CPU;
        None where the device's module cannot tell (the mem cell stays empty)."""
        if self.type == "cpu":
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        if self.type == "mps":
            # mps keeps no peak: what the metal driver holds for this process, pools included
            return self.api.driver_allocated_memory()
        peak = self._call("max_memory_reserved")
        try:
            return peak() if peak is not None else None
        except (AttributeError, RuntimeError, TypeError):  # present but not wired (torch_xmlir)
            return None

    def total_memory(self):
        machine = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        if self.type == "cpu":
            return machine
        if self.type == "mps":
            # unified memory: metal's recommended working set where torch can read it
            recommended = getattr(self.api, "recommended_max_memory", None)
            return recommended() if recommended else machine
        return self.api.get_device_properties(self.index).total_memory

    @property
    def pin_memory(self):
        """True where page-locked host batches let the copy to the device run async; a
        cpu run has no copy."""
        return self.type != "cpu"

    @property
    def reports_out_of_memory(self):
        """False on a cpu: the system kills the process instead of raising an error."""
        return self.type != "cpu"

    def jpeg_decoders(self):
        """The image libraries whose batched JPEG decoder may run on this device, in
        the order to try them (common/decode.py tries each on a small JPEG first).
        ROCm builds: torchcodec's device decoder is nvJPEG, absent there (its rocJPEG
        one is still to come); torchvision's decode_jpeg(device='cuda') works only in
        AMD's builds with rocJPEG (ROCm/vision; upstream torchvision removed its
        rocJPEG decoder before releasing it), elsewhere it says 'torchvision not
        compiled with nvJPEG support'."""
        if self.type == "cuda" and torch.version.hip:
            return ("torchvision",)
        return self.kind.jpeg_decoders

    @property
    def decoding_frees_the_host(self):
        """True where decoding on the device takes the work off the host's cores; a
        cpu "device" is the main process itself, beside the loader's workers."""
        return self.type != "cpu"

    def ddp_device_ids(self):
        """DDP's device_ids: the one device of this process, None on a cpu."""
        return None if self.type == "cpu" else [self.index]

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
            words in str(error) for words in COLLECTIVE_TIMEOUT_WORDS)

    def device_count(self):
        """Devices of this kind on this node (1 for CPU and mps)."""
        if self.type in ("cpu", "mps"):
            return 1
        return self._call("device_count")()

    # random state (the host's is torch's own)
    def rng_state(self):
        get = None if self.type == "cpu" else getattr(self.api, "get_rng_state", None)
        return get() if get is not None else None

    def set_rng_state(self, state):
        put = None if self.type == "cpu" else getattr(self.api, "set_rng_state", None)
        if state is not None and put is not None:
            put(state)

    # precision: what a name means is common/precision.py's; how this device does it is here
    def supported_precisions(self):
        """The --precision names this device runs."""
        if self.type == "cpu":
            return ("fp32", "bf16")
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
        # every timed step has the same shapes: let cudnn pick its fastest kernels once
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
        for entry, pattern, table in PEAK_TFLOPS.get(self.vendor, ()):
            if re.search(pattern, self.name, re.I):
                if key in table:
                    return table[key] * 1e12, f"table: {entry}"
                return None, f"{entry} has no {key} peak on its data sheet; give --peak-tflops"
        return None, f"{self.label} has no {key} peak in the table; give --peak-tflops"

    def peak_flops(self, precision):
        """Dense peak FLOP/s of this device at `precision`, or None where unknown."""
        return self.peak(precision)[0]

    def stack(self):
        """The vendor and the versions of its software under torch, for the record."""
        found = {"vendor": self.vendor}
        if self.type != "cpu":  # a cpu run does not use the build's accelerator software
            found.update({a: getattr(torch.version, a, None) for a in _VERSION_ATTRS})
        if self.kind.plugin:
            found[self.kind.plugin] = getattr(sys.modules[self.kind.plugin], "__version__", None)
        if self.type == "cuda":
            found["cudnn"] = torch.backends.cudnn.version()
            corex = re.search(r"corex\.?([\d.]*\d)", _torch_build())
            found["corex"] = corex.group(1) if corex else None
            found["driver"] = _nvidia_driver() if self.vendor == "NVIDIA" else None
        if self.type == "mps":
            found["macos"] = platform.mac_ver()[0]
        return {k: v for k, v in found.items() if v}


def kind_of_type(device_type):
    """The first kind of a torch device type: what torch keeps per type (fused kernels,
    profiler activities, compile modes) is the same for every kind of that type."""
    return next((k for k in KINDS if k.type == device_type), Kind(device_type, device_type, None))


def monitor_tools(chip):
    """The monitoring tools of a Kind, or of every kind of a torch device type, in order."""
    kinds = [chip] if isinstance(chip, Kind) else [k for k in KINDS if k.type == chip]
    return list(dict.fromkeys(t for k in kinds for t in k.monitors))


def _available(kind):
    if kind.type == "cpu":
        return True
    try:
        api = _api(kind)
    except ImportError:  # the plug-in is not installed: not this kind
        return False
    return api is not None and api.is_available()


def select(requested="auto", local_rank=0):
    """The Device for this process: the first available kind, or the one asked for."""
    if requested == "auto":
        kind = next(k for k in KINDS if _available(k))
    else:
        matches = [k for k in KINDS if k.type == requested]
        if not matches:
            raise UserError(f"--device {requested}: unknown device type; choose auto or one "
                            f"of {', '.join(dict.fromkeys(k.type for k in KINDS))}")
        kind = next((k for k in matches if _available(k)), None)
        if kind is None:
            raise UserError(f"--device {requested}: no {' or '.join(k.vendor for k in matches)} "
                            f"device is available to this process; use --device auto to take "
                            f"what is there")
    if kind.backend is None and launcher.world_from_env()[2] > 1:
        raise UserError(f"--device {kind.type}: {kind.vendor} runs one process only; "
                        f"run the script without torchrun (or with --nproc_per_node 1)")
    return Device(kind, local_rank if kind.type != "cpu" else 0)


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
