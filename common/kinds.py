"""The device shim's data: each kind of chip, how to monitor it, and its peak FLOP/s.

A new kind of chip is one more entry in KINDS (common/device.py's `Device` serves
every entry the same way); its monitoring tools are read by common/vendor_tools.py.

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
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from common import vendor_tools as tools


@dataclass(frozen=True)
class Kind:
    """What the suite needs to know of one kind of chip. The defaults are those of an
    accelerator with its own memory and device module; the CPU and Apple entries say
    where they differ (the README's table explains each field)."""
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
    host: bool = False          # the host's own processors: no device module, index or copy
    memory: str = "allocator"   # how mem is read: "allocator", "unified" or "host" (Device)
    via_accelerator: bool = True  # torch.accelerator may speak for it (where it serves the type)
    precisions: tuple = ()      # the --precision names it runs; empty: asked of the device
    cuda_api: bool = False      # the CUDA API, which several vendors' chips serve (cuda_vendor)
    software: tuple = ()        # what the record's stack names besides torch.version's

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
         dist_env=NCCL_ON_TIMEOUT, cuda_api=True, software=("cudnn", "corex", "driver")),
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
    # mps gained its memory calls in torch.accelerator only lately, and keeps no peak
    Kind("Apple", "mps", None, memory="unified", via_accelerator=False, software=("macos",)),
    # libjpeg-turbo, in the main process: --decode device only, never auto's choice
    Kind("CPU", "cpu", "gloo", fused_optimizer=True,
         jpeg_decoders=("torchcodec", "torchvision"), host=True, memory="host",
         precisions=("fp32", "bf16")),
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
VERSION_ATTRS = ("cuda", "hip", "maca", "musa", "cann", "xpu")



def kind_of_type(device_type):
    """The first kind of a torch device type: what torch keeps per type (fused kernels,
    profiler activities, compile modes) is the same for every kind of that type."""
    return next((k for k in KINDS if k.type == device_type), Kind(device_type, device_type, None))


def monitor_tools(chip):
    """The monitoring tools of a Kind, or of every kind of a torch device type, in order."""
    chosen = [chip] if isinstance(chip, Kind) else [k for k in KINDS if k.type == chip]
    return list(dict.fromkeys(t for k in chosen for t in k.monitors))
