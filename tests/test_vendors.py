"""Vendor entries of the device shim, without their chips.

Each plug-in is replaced by a stand-in module registered in sys.modules (and torch.<type>
set by monkeypatch), so the tests check which kind is picked and which calls each entry
makes; the numbers the stand-ins return are made up. Every test starts on a bare machine:
no plug-in importable, no cuda, xpu or mps device, torch.accelerator serving nothing.
"""
import argparse
import ast
import dataclasses
import glob
import os
import stat
import sys
import time
import types

import pytest
import torch
from conftest import ROOT

from common import columns, device, kinds, monitor, record, vendor_tools
from common.dist import Run
from common.errors import UserError
from common.precision import PRECISIONS

GiB = 1024 ** 3


class FakeEvent:
    """Stand-in for a device event (torch.Event, torch.npu.Event, ...)."""

    def __init__(self, device=None, enable_timing=False):
        self.device, self.enable_timing = device, enable_timing


class FakeDeviceModule(types.ModuleType):
    """Stand-in for a device module (torch.npu, torch.mlu, torch.musa, torch_xmlir.xpu,
    torch.xpu, torch.accelerator): records the calls the shim makes."""

    def __init__(self, name, device_name="stand-in chip", available=True, event=True):
        super().__init__(name)
        self.device_name, self.available, self.calls = device_name, available, []
        if event:
            self.Event = FakeEvent

    def _record(self, *call):
        self.calls.append(call)

    def is_available(self):
        return self.available

    def device_count(self):
        return 4

    def set_device(self, index):
        self._record("set_device", index)

    set_device_index = set_device

    def get_device_name(self, index=None):
        return self.device_name

    def get_device_properties(self, index=None):
        return types.SimpleNamespace(total_memory=64 * GiB)

    def synchronize(self, device=None):
        self._record("synchronize", device)

    def reset_peak_memory_stats(self, device=None):
        self._record("reset_peak_memory_stats", device)

    def max_memory_reserved(self, device=None):
        self._record("max_memory_reserved", device)
        return 3 * GiB

    def is_bf16_supported(self):
        return True


class FakeOldMusaModule(FakeDeviceModule):
    """Stand-in for an older torch.musa, whose peak reset is called reset_peak_stats."""

    reset_peak_memory_stats = None

    def reset_peak_stats(self, device=None):
        self._record("reset_peak_stats", device)


class FakeMpsModule(types.ModuleType):
    """Stand-in for torch.mps as older torch has it: no Event, no set_device, no name."""

    def __init__(self):
        super().__init__("torch.mps")
        self.calls = []

    def is_available(self):
        return True

    def synchronize(self):
        self.calls.append(("synchronize",))

    def driver_allocated_memory(self):
        return 5 * GiB

    def recommended_max_memory(self):
        return 48 * GiB


def fake_plugin(name):
    """Stand-in for a plug-in package (torch_npu, ...): importable, with a version."""
    module = types.ModuleType(name)
    module.__version__ = f"{name}-stand-in-1.0"
    return module


@pytest.fixture(autouse=True)
def bare_machine(monkeypatch):
    for kind in kinds.KINDS:
        if kind.plugin:
            monkeypatch.setitem(sys.modules, kind.plugin, None)  # None: the import fails
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.xpu, "is_available", lambda: False)
    monkeypatch.setattr(torch.mps, "is_available", lambda: False)
    monkeypatch.setattr(torch.accelerator, "current_accelerator", lambda *a, **k: None)
    for var in ("RANK", "WORLD_SIZE", "SLURM_NTASKS"):  # one process, however launched
        monkeypatch.delenv(var, raising=False)


def install(monkeypatch, device_type, plugin=None, api=None, **kwargs):
    """Make a plug-in importable and its device module answer; returns the module."""
    module = (FakeOldMusaModule if kwargs.pop("old", False) else FakeDeviceModule)(
        api or f"torch.{device_type}", **kwargs)
    if plugin:
        monkeypatch.setitem(sys.modules, plugin, fake_plugin(plugin))
    if api:
        monkeypatch.setitem(sys.modules, api, module)
    else:
        monkeypatch.setattr(torch, device_type, module, raising=False)
    return module


def install_cuda(monkeypatch, name, hip=None, maca=None):
    """torch.cuda answering as a cuda-api chip, with torch.accelerator serving it."""
    for attr, value in [("is_available", lambda: True), ("get_device_name", lambda i=0: name),
                        ("get_device_capability", lambda i=0: (9, 0)),
                        ("device_count", lambda: 8),
                        ("is_bf16_supported", lambda: True)]:
        monkeypatch.setattr(torch.cuda, attr, value)
    monkeypatch.setattr(torch.version, "hip", hip)
    monkeypatch.setattr(torch.version, "maca", maca, raising=False)
    accelerator = FakeDeviceModule("torch.accelerator")
    for attr in ("set_device_index", "synchronize", "reset_peak_memory_stats",
                 "max_memory_reserved", "device_count"):
        monkeypatch.setattr(torch.accelerator, attr, getattr(accelerator, attr))
    monkeypatch.setattr(torch.accelerator, "current_accelerator",
                        lambda *a, **k: torch.device("cuda"))
    monkeypatch.setattr(torch, "Event", FakeEvent)
    return accelerator


def test_a_bare_machine_runs_on_cpu():
    assert device.select().type == "cpu"
    assert not any(device._available(k) for k in kinds.KINDS if k.type != "cpu")


def test_detection_follows_the_order_of_kinds(monkeypatch):
    install(monkeypatch, "npu", "torch_npu")
    install(monkeypatch, "mlu", "torch_mlu")
    assert device.select().vendor == "Cambricon"  # mlu is listed before npu
    install_cuda(monkeypatch, "NVIDIA H100 80GB HBM3")
    assert device.select().vendor == "NVIDIA"  # cuda before every plug-in


def test_device_flag_overrides_the_order(monkeypatch):
    install(monkeypatch, "mlu", "torch_mlu")
    install(monkeypatch, "npu", "torch_npu")
    assert device.select("npu").vendor == "Ascend"
    assert device.select("cpu").vendor == "CPU"


def test_missing_plugin_or_device_is_not_available(monkeypatch):
    install(monkeypatch, "npu")  # torch.npu answers, but torch_npu does not import
    with pytest.raises(UserError, match="--device npu: no Ascend device is available"):
        device.select("npu")
    install(monkeypatch, "npu", "torch_npu", available=False)  # installed, no device
    with pytest.raises(UserError, match="--device npu: no Ascend device is available"):
        device.select("npu")
    assert device.select().type == "cpu"


def test_unknown_device_type_lists_the_types():
    with pytest.raises(UserError, match="--device tpu: unknown device type; choose auto or one "
                                        "of cuda, musa, mlu, npu, xpu, mps, cpu"):
        device.select("tpu")


@pytest.mark.parametrize("device_type, plugin, api, backend, vendor, name, label", [
    ("musa", "torch_musa", None, "mccl", "Moore Threads", "Moore Threads MTT S4000",
     "MTT S4000"),
    ("mlu", "torch_mlu", None, "cncl", "Cambricon", "MLU370-X8", "MLU370-X8"),
    ("npu", "torch_npu", None, "hccl", "Ascend", "Ascend910B", "910B"),
    ("xpu", "torch_xmlir", "torch_xmlir.xpu", "xccl", "Kunlunxin", "KL3", "KL3"),
])
def test_plugin_entry_calls_its_own_module(monkeypatch, device_type, plugin, api, backend,
                                           vendor, name, label):
    module = install(monkeypatch, device_type, plugin, api, device_name=name,
                     event=plugin != "torch_xmlir")  # torch_xmlir.xpu has no Event
    d = device.select(device_type, local_rank=1)
    assert (d.type, d.backend, d.vendor, d.name, d.label) == (device_type, backend, vendor,
                                                              name, label)
    assert d.api is module and d.device_count() == 4 and d.pin_memory
    d.reset_peak_memory()
    d.synchronize()
    assert d.peak_memory() == 3 * GiB and d.total_memory() == 64 * GiB
    assert module.calls == [("set_device", 1), ("reset_peak_memory_stats", None),
                            ("synchronize", None), ("max_memory_reserved", None)]
    event = d.timing_event()
    if plugin == "torch_xmlir":
        assert event is None  # the clocks fall back to synchronize + wall time
    else:
        assert isinstance(event, FakeEvent) and event.enable_timing
    assert d.supported_precisions() == ("fp32", "amp", "fp16", "bf16")
    assert d.stack()[plugin] == f"{plugin}-stand-in-1.0" and d.stack()["vendor"] == vendor
    # the table names the vendor once
    assert columns.infer_config(record.environment(Run(0, 0, 1, 1, d))) == f"{vendor} {label}"


def test_fp32_turns_off_ascends_hf32(monkeypatch):
    module = install(monkeypatch, "npu", "torch_npu")
    # hf32 convolutions are torch_npu's default; hf32 matmuls as a script may leave them
    module.conv = types.SimpleNamespace(allow_hf32=True)
    module.matmul = types.SimpleNamespace(allow_hf32=True)
    d = device.select("npu")
    d.set_precision(PRECISIONS["fp32"])
    assert (module.matmul.allow_hf32, module.conv.allow_hf32) == (False, False)


def test_older_torch_musa_resets_its_peak_by_its_own_name(monkeypatch):
    module = install(monkeypatch, "musa", "torch_musa", old=True)
    device.select("musa").reset_peak_memory()
    assert module.calls[-1] == ("reset_peak_stats", None)


def test_xpu_is_kunlunxin_where_torch_xmlir_is_installed_else_intel(monkeypatch):
    with pytest.raises(UserError, match="--device xpu: no Kunlunxin or Intel device"):
        device.select("xpu")
    intel = install(monkeypatch, "xpu", device_name="Intel(R) Data Center GPU Max 1550")
    monkeypatch.setattr(torch.version, "xpu", "20250101")
    d = device.select("xpu")
    assert (d.vendor, d.backend, d.api) == ("Intel", "xccl", intel)
    assert d.torch_device == torch.device("xpu", 0) and d.stack()["xpu"] == "20250101"
    kunlun = install(monkeypatch, "xpu", "torch_xmlir", "torch_xmlir.xpu")
    d = device.select("xpu")
    assert (d.vendor, d.api) == ("Kunlunxin", kunlun)


def test_cuda_entry_goes_through_torch_accelerator(monkeypatch):
    accelerator = install_cuda(monkeypatch, "NVIDIA A100-SXM4-80GB")
    d = device.select("cuda", local_rank=3)
    assert (d.vendor, d.label, d.backend, d.torch_device) == ("NVIDIA", "A100", "nccl",
                                                              torch.device("cuda", 3))
    d.reset_peak_memory()
    d.synchronize()
    assert d.peak_memory() == 3 * GiB and d.device_count() == 4
    assert accelerator.calls == [("set_device", 3), ("reset_peak_memory_stats", None),
                                 ("synchronize", None), ("max_memory_reserved", None)]
    event = d.timing_event()
    assert isinstance(event, FakeEvent) and event.enable_timing
    assert event.device == torch.device("cuda", 3)
    assert "tf32" in d.supported_precisions()


@pytest.mark.parametrize("name, hip, maca, build, vendor, label", [
    ("NVIDIA H100 80GB HBM3", None, None, "2.5.1", "NVIDIA", "H100"),
    ("AMD Instinct MI300X", "6.2.41133", None, "2.5.1+rocm6.2", "AMD", "MI300X"),
    ("K100_AI", "6.3.0", None, "2.9.0", "Hygon", "K100_AI"),
    ("Iluvatar BI-V100", None, None, "2.1.0", "Iluvatar", "BI-V100"),
    # a corex wheel keeps its tag only in the package metadata
    ("MR-V100", None, None, "2.10.0 2.10.0+corex.4.5.0", "Iluvatar", "MR-V100"),
    ("MetaX C550", None, "3.8.1.0", "2.8.0+metax3.5.3.9", "MetaX", "C550"),
])
def test_cuda_api_chips_are_told_apart(monkeypatch, name, hip, maca, build, vendor, label):
    install_cuda(monkeypatch, name, hip=hip, maca=maca)
    monkeypatch.setattr(device, "_torch_build", lambda: build)
    d = device.select()
    assert (d.type, d.backend, d.vendor, d.label) == ("cuda", "nccl", vendor, label)
    # tf32 is kept for nvidia's own tensor cores, whatever capability others report
    assert ("tf32" in d.supported_precisions()) == (vendor == "NVIDIA")
    stack = d.stack()
    assert stack["vendor"] == vendor and stack.get("hip") == hip and stack.get("maca") == maca
    assert stack.get("corex") == ("4.5.0" if "corex" in build else None)
    # only nvidia's own chips take a peak from nvidia's data sheets (not iluvatar's BI-V100)
    assert (d.peak(PRECISIONS["fp16"])[0] is not None) == (vendor == "NVIDIA")


def test_kunlunxin_behind_the_cuda_api(monkeypatch):
    install_cuda(monkeypatch, "GPU")
    monkeypatch.setitem(sys.modules, "torch_xmlir", fake_plugin("torch_xmlir"))
    assert device.select().vendor == "Kunlunxin"


def test_apple_mps_is_one_process_without_a_backend(monkeypatch):
    mps = FakeMpsModule()
    monkeypatch.setattr(torch, "mps", mps)
    monkeypatch.setattr(device, "_apple_chip", lambda: "Apple M2 Max")
    d = device.select()
    assert (d.vendor, d.type, d.backend, d.name) == ("Apple", "mps", None, "Apple M2 Max")
    assert d.timing_event() is None  # no torch.mps.Event on this torch
    d.reset_peak_memory()  # mps keeps no peak: nothing to reset
    d.synchronize()
    assert mps.calls == [("synchronize",)]
    assert d.peak_memory() == 5 * GiB and d.total_memory() == 48 * GiB
    assert d.device_count() == 1 and device.local_device_count() == 1
    for var, value in [("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "127.0.0.1"),
                       ("MASTER_PORT", "29500")]:  # as torchrun sets them
        monkeypatch.setenv(var, value)
    with pytest.raises(UserError, match="--device mps: Apple runs one process only"):
        device.select("mps")


def test_mps_under_srun_is_refused_too(monkeypatch):
    monkeypatch.setattr(torch, "mps", FakeMpsModule())
    monkeypatch.setattr(device, "_apple_chip", lambda: "Apple M2 Max")
    for var, value in [("SLURM_PROCID", "0"), ("SLURM_NTASKS", "2"),
                       ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "29500")]:
        monkeypatch.setenv(var, value)
    with pytest.raises(UserError, match="--device mps: Apple runs one process only"):
        device.select("mps")


class FakeXmlirXpuModule(FakeDeviceModule):
    """Stand-in for a torch_xmlir.xpu that names its sync xpu_synchronize and whose
    memory calls exist but are not wired (they raise)."""

    synchronize = None
    reset_peak_memory_stats = None

    def xpu_synchronize(self, device=None):
        self._record("xpu_synchronize", device)

    def max_memory_reserved(self, device=None):
        raise AttributeError("module 'torch_xmlir._XMLIRC' has no attribute '_xpu_memoryStats'")


def test_kunlunxin_calls_by_its_own_names_and_leaves_mem_empty(monkeypatch):
    module = FakeXmlirXpuModule("torch_xmlir.xpu", device_name="KL3", event=False)
    monkeypatch.setitem(sys.modules, "torch_xmlir", fake_plugin("torch_xmlir"))
    monkeypatch.setitem(sys.modules, "torch_xmlir.xpu", module)
    d = device.select("xpu")
    d.reset_peak_memory()  # nothing to reset: no error
    d.synchronize()
    assert module.calls[-1] == ("xpu_synchronize", None)
    assert d.peak_memory() is None  # an empty mem cell, not a made-up number


ACME_SMI = """#!/bin/sh
# stand-in for a new chip's tool, printing a table of nvidia-smi's layout
cat <<'TABLE'
+---------------------------+---------------------+
| Chip  Name       Temp     | Memory-Usage   Util |
| Pwr:Usage/Cap             |                     |
|===========================+=====================|
| 0     A1         40C      | 1024MiB / 65536MiB  20% |
| 150W / 300W               |                     |
+---------------------------+---------------------+
| 1     A1         55C      | 4096MiB / 65536MiB  80% |
| 250W / 300W               |                     |
+---------------------------+---------------------+
TABLE
"""


def test_the_chips_page_lists_every_kind_field():
    with open(os.path.join(ROOT, "docs", "chips.md")) as f:
        readme = f.read()
    assert [f.name for f in dataclasses.fields(kinds.Kind)
            if f"| `{f.name}` |" not in readme] == []


def test_a_new_vendor_is_one_kind_entry(monkeypatch, tmp_path):
    """Detected, synchronised, monitored and labelled from its Kind alone."""
    acme = kinds.Kind("Acme", "acme", "gloo", plugin="torch_acme",
                       visible=("ACME_VISIBLE_DEVICES",),
                       monitors=(vendor_tools.command("acme-smi", ["acme-smi"],
                                                      vendor_tools.parse_smi_table),))
    monkeypatch.setattr(kinds, "KINDS", [acme, *kinds.KINDS])
    module = install(monkeypatch, "acme", "torch_acme", device_name="A1-64GB")
    tool = tmp_path / "acme-smi"
    tool.write_text(ACME_SMI)
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.setenv("ACME_VISIBLE_DEVICES", "1")

    d = device.select()
    assert (d.vendor, d.type, d.backend, d.label) == ("Acme", "acme", "gloo", "A1")
    # an accelerator's facts are the Kind's defaults: batches pinned, out of memory raised
    assert d.pin_memory and d.reports_out_of_memory and d.decoding_frees_the_host
    assert d.ddp_device_ids() == [0] and d.device_count() == 4
    d.synchronize()
    assert module.calls[-1] == ("synchronize", None)

    run = Run(rank=0, local_rank=0, world_size=1, local_world_size=1, device=d)
    mon = monitor.start(run, argparse.Namespace(monitor_interval=0.05))
    t0 = time.perf_counter()
    time.sleep(0.2)
    t1 = time.perf_counter()
    mon.stop()
    m = monitor.summary(run, mon, (t0, t1), images=10)
    # the process sees the chip listed as 1: the tool's second row
    assert (m["source"], m["reason"]) == ("acme-smi", None)
    assert m["power_max_w"] == 250.0 and m["device_temp_max_c"] == 55.0
    assert m["device_util_mean_pct"] == 80.0 and m["device_mem_peak_gib"] == 4.0
    assert m["energy_j"] == pytest.approx(250.0 * (t1 - t0), rel=1e-6)

    env = record.environment(run)
    assert env["device"]["vendor"] == "Acme" and env["versions"]["stack"]["torch_acme"]
    assert columns.infer_config(env) == "Acme A1"


# the shim: every other module asks it, and never names a vendor, chip API or backend
SHIM = ("common/device.py", "common/kinds.py", "common/vendor_tools.py")
CUDA_API_VENDORS = ("AMD", "Hygon", "Iluvatar", "MetaX")  # told apart by device.cuda_vendor


def vendor_words():
    """What names a vendor: its name, its device type and backend (the host's aside)."""
    accelerators = [k for k in kinds.KINDS if not k.host]
    return ({k.vendor for k in accelerators} | set(CUDA_API_VENDORS)
            | {k.type for k in accelerators} | {k.backend for k in accelerators if k.backend})


def suite_sources():
    for package in ("common", "resnet50", "mobilenetv2", "vit", "bit"):
        for path in sorted(glob.glob(os.path.join(ROOT, package, "*.py"))):
            yield os.path.relpath(path, ROOT)


def dotted(node):
    """'torch.version.hip' for the attribute chain `node`, None for anything else."""
    if isinstance(node, ast.Name):
        return node.id
    owner = dotted(node.value) if isinstance(node, ast.Attribute) else None
    return f"{owner}.{node.attr}" if owner else None


def vendor_mentions(path, words):
    """'line: what' for each string equal to a vendor word (a comparison, a key) and each
    use of a device type's own torch module or of torch.version's vendor attributes."""
    lowered = {w.lower() for w in words}
    vendor_attrs = {f"torch.{w}" for w in words} | {f"torch.version.{a}"
                                                    for a in kinds.VERSION_ATTRS}
    found = []
    for node in ast.walk(ast.parse(open(os.path.join(ROOT, path)).read())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value.strip().lower() in lowered:
                found.append(f"{node.lineno}: {node.value!r}")
        elif isinstance(node, ast.Attribute) and dotted(node) in vendor_attrs:
            found.append(f"{node.lineno}: {dotted(node)}")
    return found


def test_vendor_names_live_only_in_the_shim():
    words = vendor_words()
    assert {"NVIDIA", "Ascend", "cuda", "npu", "nccl"} <= words and not {"CPU", "cpu"} & words
    outside = {path: vendor_mentions(path, words) for path in suite_sources()
               if path not in SHIM}
    assert {path: found for path, found in outside.items() if found} == {}
    # and the check sees a mention where there is one
    assert vendor_mentions("common/kinds.py", words) and vendor_mentions("common/device.py",
                                                                         words)
