"""Each chip's monitoring tool, read from an output sample published with the tool or
with a framework's install guide for that chip (the source is named above each sample;
a sample cut to fewer devices says so). The numbers asserted are the sample's own."""
import json
import stat
import sys
import types

import pytest

from common import kinds, vendor_tools
from common.vendor_tools import MiB

# youyve/nputop, tests/test_libascend.py ("npusmi_hbm"): npu-smi info on two 910B2C
NPU_SMI_910B = """\
+------------------------------------------------------------------------------------------------+
| npu-smi 23.0.2.1                 Version: 23.0.2.1                                             |
+---------------------------+---------------+----------------------------------------------------+
| NPU   Name                | Health        | Power(W)    Temp(C)           Hugepages-Usage(page)|
| Chip                      | Bus-Id        | AICore(%)   Memory-Usage(MB)  HBM-Usage(MB)        |
+===========================+===============+====================================================+
| 0     910B2C              | OK            | 88.6        51                0    / 0             |
| 0                         | 0000:5A:00.0  | 0           0    / 0          20701/ 65536         |
+===========================+===============+====================================================+
| 1     910B2C              | OK            | 99.6        50                0    / 0             |
| 0                         | 0000:19:00.0  | 0           0    / 0          20687/ 65536         |
+===========================+===============+====================================================+
+---------------------------+---------------+----------------------------------------------------+
| NPU     Chip              | Process id    | Process name             | Process memory(MB)      |
+===========================+===============+====================================================+
| 0       0                 | 124528        | python3.8                | 17400                   |
+---------------------------+---------------+----------------------------------------------------+
"""

# youyve/nputop, tests/test_libascend.py (npu-smi 24.1.0.1): two 310P3 cards of two chips,
# no power reading, a Device column, and a process table of two-row blocks
NPU_SMI_310P = """\
+--------------------------------------------------------------------------------------------------------+
| npu-smi 24.1.0.1                                 Version: 24.1.0.1                                     |
+-------------------------------+-----------------+------------------------------------------------------+
| NPU     Name                  | Health          | Power(W)     Temp(C)           Hugepages-Usage(page) |
| Chip    Device                | Bus-Id          | AICore(%)    Memory-Usage(MB)                        |
+===============================+=================+======================================================+
| 1       310P3                 | OK              | NA           62                7210  / 7210          |
| 0       0                     | 0000:01:00.0    | 0            16302/ 44280                            |
+-------------------------------+-----------------+------------------------------------------------------+
| 1       310P3                 | OK              | NA           62                7210  / 7210          |
| 1       1                     | 0000:01:00.0    | 0            15543/ 43693                            |
+===============================+=================+======================================================+
| 2       310P3                 | OK              | NA           61                17057 / 17057         |
| 0       2                     | 0000:02:00.0    | 0            35563/ 44280                            |
+-------------------------------+-----------------+------------------------------------------------------+
| 2       310P3                 | OK              | NA           61                16823 / 16823         |
| 1       3                     | 0000:02:00.0    | 0            35204/ 43693                            |
+===============================+=================+======================================================+
+-------------------------------+-----------------+------------------------------------------------------+
| NPU     Chip                  | Process id      | Process name             | Process memory(MB)        |
+===============================+=================+======================================================+
| 1       0                     | 3277562         | mindie_llm_back          | 14513                     |
| 1       1                     | 3277565         | mindie_llm_back          | 14513                     |
+===============================+=================+======================================================+
"""

# PaddlePaddle/docs, docs/guides/hardware_support/mlu/install_cn.md: cnmon on two MLU370-X8
CNMON = """\
+------------------------------------------------------------------------------+
| CNMON v5.10.13                                               Driver v5.10.13 |
+-------------------------------+----------------------+-----------------------+
| Card  VF  Name       Firmware |               Bus-Id | Util        Ecc-Error |
| Fan   Temp      Pwr:Usage/Cap |         Memory-Usage | SR-IOV   Compute-Mode |
|===============================+======================+=======================|
| 0     /   MLU370-X8    v1.1.6 |         0000:39:00.0 | 0%                N/A |
|  0%   32C        106 W/ 250 W |     0 MiB/ 23374 MiB | N/A           Default |
+-------------------------------+----------------------+-----------------------+
| 1     /   MLU370-X8    v1.1.6 |         0000:3D:00.0 | 0%                N/A |
|  0%   39C        106 W/ 250 W |     0 MiB/ 23374 MiB | N/A           Default |
+-------------------------------+----------------------+-----------------------+

+------------------------------------------------------------------------------+
| Processes:                                                                   |
|  Card  MI  PID     Command Line                             MLU Memory Usage |
|==============================================================================|
|  No running processes found                                                  |
+------------------------------------------------------------------------------+
"""

# PaddlePaddle/ERNIE, docs/devices/README_METAX_GPU.md: mx-smi 2.2.4, the first two of
# eight MetaX C550
MX_SMI = """\
mx-smi  version: 2.2.4

=================== MetaX System Management Interface Log ===================
Timestamp                                         : Tue Jul 29 12:16:08 2025

Attached GPUs                                     : 8
+---------------------------------------------------------------------------------+
| MX-SMI 2.2.4                        Kernel Mode Driver Version: 2.15.9          |
| MACA Version: 2.32.0.6              BIOS Version: 1.25.1.0                      |
|------------------------------------+---------------------+----------------------+
| GPU         NAME                   | Bus-id              | GPU-Util             |
| Temp        Pwr:Usage/Cap          | Memory-Usage        | GPU-State            |
|====================================+=====================+======================|
| 0           MetaX C550             | 0000:0f:00.0        | 0%                   |
| 29C         53W / 450W             | 858/65536 MiB       | Available            |
+------------------------------------+---------------------+----------------------+
| 1           MetaX C550             | 0000:34:00.0        | 0%                   |
| 29C         53W / 450W             | 858/65536 MiB       | Available            |
+------------------------------------+---------------------+----------------------+

+---------------------------------------------------------------------------------+
| Process:                                                                        |
|  GPU                    PID         Process Name                 GPU Memory     |
|                                                                  Usage(MiB)     |
|=================================================================================|
|  no process found                                                               |
+---------------------------------------------------------------------------------+
"""

# PaddlePaddle/ERNIE, docs/devices/README_XPU.md: kunlunxin xpu_smi, the first two of
# eight P800 (three rows per device)
KUNLUNXIN_XPU_SMI = """\
Wed Jun 25 19:45:10 2025
+-----------------------------------------------------------------------------+
| XPU-SMI               Driver Version: 5.0.21.21    XPU-RT Version: 5.0.21   |
|-------------------------------+----------------------+----------------------+
| XPU  Name        Persistence-M| Bus-Id        Disp.A | Volatile Uncorr. ECC |
| Fan  Temp  Perf  Pwr:Usage/Cap|         Memory-Usage | XPU-Util  Compute M. |
|                               |             L3-Usage |            SR-IOV M. |
|===============================+======================+======================|
|   0  P800 OAM           N/A   | 00000000:03:00.0 N/A |                    0 |
| N/A   37C  N/A     88W / 400W |      0MiB / 98304MiB |      0%      Default |
|                               |      0MiB /    96MiB |             Disabled |
+-------------------------------+----------------------+----------------------+
|   1  P800 OAM           N/A   | 00000000:05:00.0 N/A |                    0 |
| N/A   41C  N/A     90W / 400W |      0MiB / 98304MiB |      0%      Default |
|                               |      0MiB /    96MiB |             Disabled |
+-------------------------------+----------------------+----------------------+

+-----------------------------------------------------------------------------+
| Processes:                                                                  |
|  XPU   XI   CI        PID   Type   Process name                  XPU Memory |
|        ID   ID                                                   Usage      |
|=============================================================================|
|  No running processes found                                                 |
+-----------------------------------------------------------------------------+
"""

# PaddlePaddle/docs, docs/hardware_support/iluvatar_gpu/install_cn.md: ixsmi on two
# BI-V150, the first without a power reading
IXSMI = """\
+-----------------------------------------------------------------------------+
|  IX-ML: 4.3.0       Driver Version: 4.3.0       CUDA Version: 10.2          |
|-------------------------------+----------------------+----------------------|
| GPU  Name                     | Bus-Id               | Clock-SM  Clock-Mem  |
| Fan  Temp  Perf  Pwr:Usage/Cap|      Memory-Usage    | GPU-Util  Compute M. |
|===============================+======================+======================|
| 0    Iluvatar BI-V150         | 00000000:10:00.0     | 1500MHz   1600MHz    |
| N/A  40C   P0    N/A / N/A    | 64MiB / 32768MiB     | 0%        Default    |
+-------------------------------+----------------------+----------------------+
| 1    Iluvatar BI-V150         | 00000000:13:00.0     | 1500MHz   1600MHz    |
| N/A  39C   P0    104W / 350W  | 64MiB / 32768MiB     | 0%        Default    |
+-------------------------------+----------------------+----------------------+

+-----------------------------------------------------------------------------+
| Processes:                                                       GPU Memory |
|  GPU        PID      Process name                                Usage(MiB) |
|=============================================================================|
|  No running processes found                                                 |
+-----------------------------------------------------------------------------+
"""

# PaddlePaddle/PaddleFormers, docs/zh/MUSA-GPU_installation_guide.md: mthreads-gmi 2.4.1,
# the first two of eight MTT S5000 (its table has no power column)
MTHREADS_GMI = """\
Tue Jun 23 17:48:04 2026
---------------------------------------------------------------------
    mthreads-gmi:2.4.1           Driver Version:5.1.0-server
---------------------------------------------------------------------
ID   Name                 |PCIe                |%GPU  Mem
     Device Type   Perf   |Pcie Lane Width     |Temp  MPC Capable
                                               |      ECC Mode
+-------------------------------------------------------------------+
0    MTT S5000            |00000000:18:00.0    |0%    0MiB(81920MiB)
     Physical      P0     |16x(16x)            |48C   YES
                                               |      On-die, EDC
+-------------------------------------------------------------------+
1    MTT S5000            |00000000:3a:00.0    |0%    0MiB(81920MiB)
     Physical      P0     |16x(16x)            |48C   YES
                                               |      On-die, EDC
---------------------------------------------------------------------

---------------------------------------------------------------------
Processes:
ID   PID           Process name                           GPU Memory
                                                               Usage
+-------------------------------------------------------------------+
   No running processes found
---------------------------------------------------------------------
"""

# PaddlePaddle/docs, docs/guides/hardware_support/dcu/install_cn.md: the system
# management table of hygon's DTK on four Z100 (hy-smi prints the same columns, with HCU
# for DCU in newer DTK)
HYGON_SMI = """\
============System Management Interface ============
====================================================
DCU  Temp   AvgPwr  Fan   Perf  PwrCap  VRAM%  DCU%
0    30.0c  38.0W   0.0%  auto  280.0W    0%   0%
1    30.0c  41.0W   0.0%  auto  280.0W    0%   0%
2    29.0c  38.0W   0.0%  auto  280.0W    0%   0%
3    29.0c  39.0W   0.0%  auto  280.0W    0%   0%
====================================================
===================End of SMI Log===================
"""

# intel/xpumanager, doc/smi_user_guide.md: xpu-smi dump -d 0 -m 0,1,2 -i 1 -n 5 (the
# metrics asked for are columns named in the header; this dump has no temperature or
# memory column)
INTEL_XPU_DUMP = """\
Timestamp, DeviceId, GPU Utilization (%), GPU Power (W), GPU Frequency (MHz)
06:14:46.000,    0, 0.00, 14.61,    0
06:14:47.000,    0, 0.00, 14.59,    0
06:14:48.000,    0, 0.00, 14.61,    0
06:14:49.000,    0, 0.00, 14.61,    0
06:14:50.000,    0, 0.00, 14.61,    0
"""


def reading(mem_mib=None, util=None, power=None, temp=None):
    return {"mem_bytes": None if mem_mib is None else mem_mib * MiB, "util_pct": util,
            "power_w": power, "temp_c": temp}


def test_npu_smi_on_910b_reads_hbm_and_stops_at_the_processes():
    assert vendor_tools.parse_npu_smi(NPU_SMI_910B) == {
        "0": reading(20701, 0.0, 88.6, 51.0), "1": reading(20687, 0.0, 99.6, 50.0)}


def test_npu_smi_on_310p_keys_chips_by_their_device_column():
    rows = vendor_tools.parse_npu_smi(NPU_SMI_310P)
    assert sorted(rows) == ["0", "1", "2", "3"]  # the process rows are not devices
    assert rows["1"] == reading(15543, 0.0, None, 62.0)  # power NA: an empty cell
    assert rows["2"] == reading(35563, 0.0, None, 61.0)


@pytest.mark.parametrize("sample, expected", [
    (CNMON, {"0": reading(0, 0.0, 106.0, 32.0), "1": reading(0, 0.0, 106.0, 39.0)}),
    (MX_SMI, {"0": reading(858, 0.0, 53.0, 29.0), "1": reading(858, 0.0, 53.0, 29.0)}),
    (KUNLUNXIN_XPU_SMI, {"0": reading(0, 0.0, 88.0, 37.0), "1": reading(0, 0.0, 90.0, 41.0)}),
    (IXSMI, {"0": reading(64, 0.0, None, 40.0), "1": reading(64, 0.0, 104.0, 39.0)}),
    (MTHREADS_GMI, {"0": reading(0, 0.0, None, 48.0), "1": reading(0, 0.0, None, 48.0)}),
], ids=["cnmon", "mx-smi", "kunlunxin-xpu-smi", "ixsmi", "mthreads-gmi"])
def test_box_tables_are_read_by_their_header(sample, expected):
    assert vendor_tools.parse_smi_table(sample) == expected


def test_hygon_table_reads_temperature_power_and_use():
    rows = vendor_tools.parse_column_table(HYGON_SMI)
    assert sorted(rows) == ["0", "1", "2", "3"]
    assert rows["1"] == reading(None, 0.0, 41.0, 30.0)  # memory only as a share: empty


def test_intel_xpu_smi_dump_reads_the_named_columns():
    assert vendor_tools.parse_xpu_dump(INTEL_XPU_DUMP) == {"0": reading(None, 0.0, 14.61)}


def test_a_tool_printing_no_table_is_passed_over(tmp_path, monkeypatch):
    # intel's xpu-smi run bare prints its help: not a kunlunxin table
    script = tmp_path / "xpu-smi"
    script.write_text("#!/bin/sh\necho 'Intel XPU System Management Interface -- v1.0'\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(tmp_path))
    kunlunxin = next(k for k in kinds.KINDS if k.vendor == "Kunlunxin")
    with pytest.raises(RuntimeError, match="no device in its output"):
        kunlunxin.monitors[0].open(["0"])


def fake_amdsmi():
    """Stand-in for the amdsmi library: two devices, the second without power."""
    m = types.ModuleType("amdsmi")
    m.AmdSmiTemperatureType = types.SimpleNamespace(EDGE="edge")
    m.AmdSmiTemperatureMetric = types.SimpleNamespace(CURRENT="current")
    m.amdsmi_init = lambda: None
    m.amdsmi_get_processor_handles = lambda: [0, 1]
    m.amdsmi_get_gpu_vram_usage = lambda h: {"vram_used": 1024 * (h + 1), "vram_total": 196608}
    m.amdsmi_get_gpu_activity = lambda h: {"gfx_activity": 90 + h}
    powers = [{"current_socket_power": 550, "average_socket_power": "N/A"},
              {"current_socket_power": "N/A", "average_socket_power": "N/A"}]
    m.amdsmi_get_power_info = lambda h: powers[h]
    m.amdsmi_get_temp_metric = lambda h, sensor, metric: {("edge", "current"): 45}[sensor, metric]
    return m


def test_amdsmi_library_through_a_stand_in(monkeypatch):
    monkeypatch.setitem(sys.modules, "amdsmi", fake_amdsmi())
    first, second = vendor_tools.AMDSMI.open(["0", "1"])()
    assert first == reading(1024, 90.0, 550.0, 45.0)
    assert second == reading(2048, 91.0, None, 45.0)


def test_rocm_smi_keys_cards_by_index():
    rows = vendor_tools.parse_rocm_smi(json.dumps({"card1": {"GPU use (%)": "7"}, "system": {}}))
    assert rows == {"1": {**vendor_tools.EMPTY, "util_pct": 7.0}}
