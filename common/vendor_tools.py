"""How to read each chip's power, temperature, use and memory: part of the device shim.

A `Tool` is one way to sample a node's devices: `open(ids)` returns `read()`, which
returns one reading per id ({"mem_bytes", "util_pct", "power_w", "temp_c"}, a field the
tool does not give is None); `open` raises, with a short reason, where the tool is not
there or does not answer. A `Kind` in common/kinds.py lists the tools of its chip in the
order to try them; nothing outside the shim names a tool.

The text parsers read the tools' default tables, which copy nvidia-smi's layout (a box of
two or three rows per device under a header of the same rows) or print one row per device
under a line of column names; where a tool has a query or JSON mode with every field, that
mode is used instead.
"""
from __future__ import annotations

import csv
import functools
import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Callable

MiB = 1024 ** 2
TOOL_TIMEOUT_S = 5.0
FIELDS = ("mem_bytes", "util_pct", "power_w", "temp_c")
EMPTY = dict.fromkeys(FIELDS)


@dataclass(frozen=True)
class Tool:
    name: str                  # what the record names as the monitor's source
    open: Callable             # open(ids) -> read(); raises where the tool is not there


def _number(cell):
    """'13.5' -> 13.5; '[N/A]', 'NA', '-' -> None; a unit right after it is dropped."""
    m = re.match(r"\s*(-?\d+(?:\.\d+)?)", str(cell))
    return float(m.group(1)) if m else None


def _reading(mem_mib=None, util=None, power=None, temp=None):
    return {"mem_bytes": None if mem_mib is None else mem_mib * MiB, "util_pct": util,
            "power_w": power, "temp_c": temp}


# commands whose output is parsed into {device id: reading}

def _run_tool(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S)
    if out.returncode != 0:
        raise RuntimeError(f"exit {out.returncode}: {(out.stderr or out.stdout).strip()[:120]}")
    return out.stdout


def _open_command(cmd, parse, ids):
    if shutil.which(cmd[0]) is None:
        raise RuntimeError("not on PATH")
    # once here, so a tool that runs but prints no device table is passed over
    if not parse(_run_tool(cmd)):
        raise RuntimeError("no device in its output")
    return lambda: _pick(parse(_run_tool(cmd)), ids)


def _pick(rows, ids):
    return [rows.get(i, EMPTY) for i in ids]


def command(name, cmd, parse):
    """A Tool that runs `cmd` and parses its text with `parse(text) -> {id: reading}`."""
    return Tool(name, functools.partial(_open_command, cmd, parse))


# nvidia-smi --query-gpu and the tools that copy it (ixsmi)

SMI_QUERY = "--query-gpu=index,uuid,memory.used,utilization.gpu,{power},temperature.gpu"


def parse_smi_csv(text):
    """--format=csv,noheader,nounits rows, by index and by uuid."""
    rows = {}
    for cells in csv.reader(text.strip().splitlines(), skipinitialspace=True):
        if len(cells) == 6:
            mem, util, power, temp = (_number(c) for c in cells[2:])
            rows[cells[0].strip()] = rows[cells[1].strip()] = _reading(mem, util, power, temp)
    return rows


def smi_csv(tool, power_field):
    return command(tool, [tool, SMI_QUERY.format(power=power_field),
                          "--format=csv,noheader,nounits"], parse_smi_csv)


# the box tables of nvidia-smi's layout (ixsmi, cnmon, mx-smi, mthreads-gmi, xpu-smi)

_RULE = re.compile(r"^\s*[-=+|]*[-=][-=+|]*\s*$")  # a line drawn with - = + | only
# header words of each figure, most specific first
_HEADERS = {"util_pct": ("Util", "%GPU"), "temp_c": ("Temp",), "power_w": ("Pwr", "Power"),
            "mem_bytes": ("Memory-Usage", "Mem")}
_VALUES = {"util_pct": r"(\d+(?:\.\d+)?)\s*%", "temp_c": r"(\d+(?:\.\d+)?)\s*°?C\b",
           "power_w": r"(\d+(?:\.\d+)?)\s*W\b",
           "mem_bytes": r"(\d+(?:\.\d+)?)\s*(?:MiB|MB)?\s*[/(]\s*\d+(?:\.\d+)?\s*(?:MiB|MB)"}


def _blocks(text):
    """Runs of lines between rules and blank lines."""
    block = []
    for line in text.splitlines() + [""]:
        if line.strip() and not _RULE.match(line):
            block.append(line)
        elif block:
            yield block
            block = []


def _cells(line):
    cells = line.rstrip().split("|")
    if line.startswith("|"):
        cells = cells[1:]
    if line.rstrip().endswith("|"):
        cells = cells[:-1]
    return cells


def _header_places(block):
    """{figure: (row, cell)} of the header words found in a block."""
    cells = [(r, c, text) for r, line in enumerate(block) for c, text in enumerate(_cells(line))]
    places = {}
    for field, words in _HEADERS.items():
        found = next(((r, c) for word in words for r, c, text in cells if word in text), None)
        if found is not None:
            places[field] = found
    return places


def _table_reading(block, places):
    values = {}
    for field, (r, c) in places.items():
        cells = _cells(block[r]) if r < len(block) else []
        m = re.search(_VALUES[field], cells[c]) if c < len(cells) else None
        values[field] = float(m.group(1)) if m else None
    if values.get("mem_bytes") is not None:
        values["mem_bytes"] *= MiB
    return {**EMPTY, **values}


def parse_smi_table(text):
    """Readings by device index from a box table: the first block naming Temp and a use
    column is the header, each later block starting with an index is one device."""
    rows, places = {}, None
    for block in _blocks(text):
        if any("Process" in line for line in block):
            break  # the processes table below the devices
        if places is None:
            found = _header_places(block)
            places = found if {"temp_c", "util_pct"} <= found.keys() else None
            continue
        index = re.match(r"\s*(\d+)\b", _cells(block[0])[0] if _cells(block[0]) else "")
        if index:
            rows[index.group(1)] = _table_reading(block, places)
    return rows


# npu-smi info: power and temperature share a cell, and so do AI core use and memory

def parse_npu_smi(text):
    """Readings by device id (the Device or Phy-ID column where there is one, else the
    NPU id) from `npu-smi info`; memory is HBM where the chip has it."""
    rows = {}
    for block in _blocks(text):
        if any("Process" in line for line in block):
            break
        first, second = ([_cells(line) for line in block] + [[], []])[:2]
        npu = first[0].split() if first else []
        if len(block) != 2 or not npu or not npu[0].isdigit() or min(len(first), len(second)) < 3:
            continue
        chip = second[0].split()
        power_temp = first[2].split() + [None, None]
        pairs = re.findall(r"(\d+)\s*/\s*\d+", second[2])
        rows[chip[1] if len(chip) > 1 else npu[0]] = _reading(
            mem_mib=float(pairs[-1]) if pairs else None, util=_number(second[2]),
            power=_number(power_temp[0]), temp=_number(power_temp[1]))
    return rows


# one row per device under a line of column names (hy-smi, and rocm-smi without --json)

def parse_column_table(text):
    """Readings by device index from `hy-smi`'s table (Temp, AvgPwr, DCU% or HCU%);
    it gives memory only as a share, so mem stays None."""
    rows, cols = {}, None
    for line in text.splitlines():
        words = line.split()
        if cols is None and "Temp" in words:
            cols = words
        elif cols and len(words) == len(cols) and words[0].isdigit():
            row = dict(zip(cols, words))
            util = next((v for k, v in row.items() if k.endswith("%") and k != "VRAM%"), None)
            power = row.get("AvgPwr", row.get("Power"))
            rows[words[0]] = _reading(util=_number(util), power=_number(power),
                                      temp=_number(row["Temp"]))
    return rows


# Intel's xpu-smi dump: CSV under a header that names each metric

def parse_xpu_dump(text):
    """Readings by device id from `xpu-smi dump ... -n 1` (header-named columns)."""
    rows, cols = {}, None
    for cells in csv.reader(text.strip().splitlines(), skipinitialspace=True):
        cells = [c.strip() for c in cells]
        if cells and cells[0] == "Timestamp":
            cols = cells
        elif cols and len(cells) == len(cols):
            row = dict(zip(cols, cells))
            temp = next((v for k, v in row.items() if k.startswith("GPU Core Temperature")), None)
            rows[row["DeviceId"]] = _reading(
                mem_mib=_number(row.get("GPU Memory Used (MiB)")),
                util=_number(row.get("GPU Utilization (%)")),
                power=_number(row.get("GPU Power (W)")), temp=_number(temp))
    return rows


# rocm-smi --json

def _first(card, *keys):
    return next((v for v in (_number(card.get(k, "")) for k in keys) if v is not None), None)


def parse_rocm_smi(text):
    """Readings by index from `rocm-smi --showuse --showpower --showtemp --showmeminfo vram
    --json` ({"card0": {...}}); older cards report an average power, MI300 a current one."""
    rows = {}
    for card, data in json.loads(text).items():
        if card.startswith("card"):
            rows[card[4:]] = {
                "mem_bytes": _first(data, "VRAM Total Used Memory (B)"),
                "util_pct": _first(data, "GPU use (%)"),
                "power_w": _first(data, "Average Graphics Package Power (W)",
                                  "Current Socket Graphics Package Power (W)"),
                "temp_c": _first(data, "Temperature (Sensor edge) (C)",
                                 "Temperature (Sensor junction) (C)"),
            }
    return rows


ROCM_SMI = command("rocm-smi", ["rocm-smi", "--showuse", "--showpower", "--showtemp",
                                "--showmeminfo", "vram", "--json"], parse_rocm_smi)


# libraries: NVML (nvidia-ml-py) and AMD SMI (amdsmi)

def _or_none(query):
    # a field the device does not support is an empty cell, not a failed sample
    try:
        return float(query())
    except Exception:
        return None


def _nvml_reading(pynvml, handle):
    return {k: _or_none(q) for k, q in {
        "mem_bytes": lambda: pynvml.nvmlDeviceGetMemoryInfo(handle).used,
        "util_pct": lambda: pynvml.nvmlDeviceGetUtilizationRates(handle).gpu,
        "power_w": lambda: pynvml.nvmlDeviceGetPowerUsage(handle) / 1000.0,  # mW
        "temp_c": lambda: pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU),
    }.items()}


def _open_nvml(ids):
    import pynvml
    pynvml.nvmlInit()
    handles = [pynvml.nvmlDeviceGetHandleByIndex(int(i)) if i.isdigit()
               else pynvml.nvmlDeviceGetHandleByUUID(i) for i in ids]
    return lambda: [_nvml_reading(pynvml, h) for h in handles]


def _amdsmi_reading(amdsmi, handle):
    def power():  # MI300 reports the current socket power, older cards an average
        info = amdsmi.amdsmi_get_power_info(handle)
        return next(v for v in (_number(info.get(k)) for k in ("current_socket_power",
                                                                "average_socket_power"))
                    if v is not None)
    return {k: _or_none(q) for k, q in {
        "mem_bytes": lambda: amdsmi.amdsmi_get_gpu_vram_usage(handle)["vram_used"] * MiB,
        "util_pct": lambda: amdsmi.amdsmi_get_gpu_activity(handle)["gfx_activity"],
        "power_w": power,
        "temp_c": lambda: amdsmi.amdsmi_get_temp_metric(
            handle, amdsmi.AmdSmiTemperatureType.EDGE, amdsmi.AmdSmiTemperatureMetric.CURRENT),
    }.items()}


def _open_amdsmi(ids):
    import amdsmi
    amdsmi.amdsmi_init()
    handles = amdsmi.amdsmi_get_processor_handles()
    chosen = [handles[int(i)] for i in ids]  # amdsmi numbers devices as HIP does
    return lambda: [_amdsmi_reading(amdsmi, h) for h in chosen]


NVML = Tool("nvml", _open_nvml)
AMDSMI = Tool("amdsmi", _open_amdsmi)
