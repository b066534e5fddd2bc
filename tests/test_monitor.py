"""The hardware monitor: host sampling for real, device sources through stand-ins (no
accelerator here), the energy integral on known power, and the sampler's cost."""
import argparse
import json
import os
import stat
import sys
import time
import types

import pytest
import torch
from conftest import loop_args

from common import device, kinds, monitor, train_loop, vendor_tools
from common.clocks import TrainClocks
from common.dist import Run


def cpu_run():
    return Run(rank=0, local_rank=0, world_size=1, local_world_size=1, device=device.select("cpu"))


def busy(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_host_cpu_and_memory_are_sampled():
    mon = monitor.Monitor("cpu", [], interval=0.05).start()
    t0 = time.perf_counter()
    # the spinning thread holds the GIL, so on a loaded 2-core machine the sampler gets a
    # turn about every 0.1 s, not every 0.05 s: a 1 s window still leaves room for 4
    busy(1.0)
    t1 = time.perf_counter()
    mon.stop()
    window = [s for s in mon.samples if t0 <= s[0] <= t1]
    assert len(window) >= 4
    cpus = [s[2] for s in window if s[2] is not None]
    assert cpus and all(0.0 <= c <= 100.0 for c in cpus)
    # a spinning thread keeps at least a share of one cpu busy
    assert max(cpus) > 0
    assert all(s[3] > 0 for s in window)
    f = monitor.summary(cpu_run(), mon, (t0, t1), images=10)
    assert f["host_mem_peak_gib"] > 0 and f["host_cpu_max_pct"] >= f["host_cpu_mean_pct"] > 0


def test_no_device_source_leaves_empty_cells_and_a_reason():
    mon = monitor.Monitor("cpu", [], interval=0.05).start()
    t0 = time.perf_counter()
    time.sleep(0.15)
    t1 = time.perf_counter()
    mon.stop()
    f = monitor.summary(cpu_run(), mon, (t0, t1), images=10)
    for key in ("power_max_w", "power_mean_w", "energy_j", "energy_per_image_j",
                "device_mem_peak_gib", "device_util_mean_pct", "device_temp_max_c"):
        assert f[key] is None, key
    assert f["source"] is None and "no accelerator" in f["reason"]
    assert f["host_mem_peak_gib"] > 0


def test_monitor_off_and_no_window():
    off = monitor.summary(cpu_run(), None, (0.0, 1.0), 10, argparse.Namespace(monitor_interval=0))
    assert off["energy_j"] is None and off["host_cpu_mean_pct"] is None
    assert "off" in off["reason"]
    assert monitor.start(cpu_run(), argparse.Namespace(monitor_interval=0)) is None
    assert monitor.summary(cpu_run(), None, None, 0)["reason"].startswith("no timed window")


def test_energy_is_the_trapezoid_integral_of_power():
    times = [0.0, 1.0, 2.0, 3.0]
    # constant 100 W over 2 s
    assert monitor.trapezoid_energy(times, [100.0] * 4, 0.5, 2.5) == pytest.approx(200.0)
    # a ramp 0 -> 300 W: the window's edges are interpolated between samples
    ramp = [0.0, 100.0, 200.0, 300.0]
    assert monitor.trapezoid_energy(times, ramp, 0.5, 2.5) == pytest.approx(300.0)
    # held flat beyond the last sample
    assert monitor.trapezoid_energy(times, ramp, 3.0, 4.0) == pytest.approx(300.0)
    assert monitor.trapezoid_energy([], [], 0.0, 1.0) is None


def test_energy_per_image_from_synthetic_samples():
    mon = monitor.Monitor("cuda", ["0", "1"], interval=1.0)
    reading = lambda w: {"mem_bytes": 2 * monitor.GiB, "util_pct": 50.0,  # noqa: E731
                         "power_w": w, "temp_c": 60.0}
    # two devices at 100 W and 300 W for 10 s: 4000 J; 200 W mean per device
    mon.samples = [(float(t), [reading(100.0), reading(300.0)], 25.0, monitor.GiB)
                   for t in range(11)]
    f = monitor.cells(monitor.node_parts(mon, 0.0, 10.0), images=800)
    assert f["energy_j"] == pytest.approx(4000.0)
    assert f["energy_per_image_j"] == pytest.approx(5.0)
    assert f["power_mean_w"] == pytest.approx(200.0) and f["power_max_w"] == 300.0
    assert f["device_mem_peak_gib"] == pytest.approx(2.0)
    assert f["device_util_mean_pct"] == 50.0 and f["device_temp_max_c"] == 60.0
    assert f["host_cpu_mean_pct"] == 25.0 and f["host_mem_peak_gib"] == pytest.approx(1.0)


def test_a_device_without_power_gives_no_energy():
    mon = monitor.Monitor("cuda", ["0", "1"], interval=1.0)
    mon.samples = [(float(t), [{**monitor.EMPTY, "power_w": 100.0}, monitor.EMPTY], None, None)
                   for t in range(3)]
    f = monitor.cells(monitor.node_parts(mon, 0.0, 2.0), images=8)
    assert f["energy_j"] is None and f["energy_per_image_j"] is None
    assert f["power_max_w"] == 100.0


def fake_pynvml():
    """Stand-in for pynvml (nvidia-ml-py): two devices, the second without temperature."""
    m = types.ModuleType("pynvml")
    m.NVML_TEMPERATURE_GPU = 0
    m.nvmlInit = lambda: None
    m.nvmlDeviceGetHandleByIndex = lambda i: i
    m.nvmlDeviceGetHandleByUUID = lambda u: {"GPU-b": 1}[u]
    m.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(used=(h + 1) * monitor.GiB)
    m.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=90 + h)
    m.nvmlDeviceGetPowerUsage = lambda h: 250_000 + 1000 * h  # mW

    def temperature(h, sensor):
        if h == 1:
            raise RuntimeError("not supported")
        return 55
    m.nvmlDeviceGetTemperature = temperature
    return m


def test_nvml_source_through_a_stand_in(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml())
    name, read = monitor.open_device_source("cuda", ["0", "GPU-b"])
    assert name == "nvml"
    first, second = read()
    assert first == {"mem_bytes": monitor.GiB, "util_pct": 90.0, "power_w": 250.0,
                     "temp_c": 55.0}
    assert second["power_w"] == 251.0 and second["temp_c"] is None


FAKE_SMI = """#!/bin/sh
# stand-in for nvidia-smi: answers --query-gpu as the real one does with csv,noheader,nounits
echo "0, GPU-a, 1024, 35, 120.50, 41"
echo "1, GPU-b, 2048, 80, [N/A], 52"
echo "2, GPU-c, 4096, 99, 300.00, 70"
"""


def fake_tool(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(tmp_path)


def test_nvidia_smi_source_through_a_stand_in(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # nvml does not import
    monkeypatch.setenv("PATH", fake_tool(tmp_path, "nvidia-smi", FAKE_SMI))
    name, read = monitor.open_device_source("cuda", ["0", "GPU-b"])
    assert name == "nvidia-smi"
    first, second = read()
    assert first == {"mem_bytes": 1024 * monitor.MiB, "util_pct": 35.0, "power_w": 120.5,
                     "temp_c": 41.0}
    assert second["util_pct"] == 80.0 and second["power_w"] is None  # [N/A]


def test_sampler_thread_with_the_stand_in_tool(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    monkeypatch.setenv("PATH", fake_tool(tmp_path, "nvidia-smi", FAKE_SMI))
    mon = monitor.Monitor("cuda", ["0", "2"], interval=0.05).start()
    t0 = time.perf_counter()
    time.sleep(0.3)
    t1 = time.perf_counter()
    mon.stop()
    f = monitor.summary(cpu_run(), mon, (t0, t1), images=42)
    assert f["source"] == "nvidia-smi" and f["reason"] is None and f["devices"] == 2
    # 120.5 W + 300 W held over the window
    assert f["energy_j"] == pytest.approx(420.5 * (t1 - t0), rel=1e-6)
    assert f["energy_per_image_j"] == pytest.approx(f["energy_j"] / 42)
    assert f["power_max_w"] == 300.0 and f["device_temp_max_c"] == 70.0
    assert f["device_mem_peak_gib"] == pytest.approx(4.0)


def test_no_source_answers_says_what_was_tried(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    monkeypatch.setenv("PATH", str(tmp_path))  # no tool at all
    name, reason = monitor.open_device_source("cuda", ["0"])
    assert name is None
    assert "nvml" in reason and "nvidia-smi: not on PATH" in reason and "rocm-smi" in reason


def test_rocm_smi_json_readings():
    # as `rocm-smi --showuse --showpower --showtemp --showmeminfo vram --json` prints it
    data = {"card0": {"GPU use (%)": "12", "Temperature (Sensor edge) (C)": "47.0",
                      "Current Socket Graphics Package Power (W)": "9.215",
                      "VRAM Total Used Memory (B)": "482263040"}}
    (r, missing) = vendor_tools._pick(vendor_tools.parse_rocm_smi(json.dumps(data)), ["0", "1"])
    assert r == {"mem_bytes": 482263040.0, "util_pct": 12.0, "power_w": 9.215, "temp_c": 47.0}
    assert missing == monitor.EMPTY


def test_visible_ids_follow_the_visible_devices(monkeypatch):
    monkeypatch.delenv("HIP_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5,GPU-x")
    assert kinds.kind_of_type("cuda").visible_ids(2) == ["3", "5"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert kinds.kind_of_type("cuda").visible_ids(3) == ["0", "1", "2"]


def test_train_loop_puts_the_summary_in_its_figures(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
    batches = [(torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8), torch.randint(0, 4, (4,)))
               for _ in range(6)]
    args = loop_args(tmp_path, print_freq=100, monitor_interval=0.02)
    figures, _ = train_loop.train(
        cpu_run(), args, model, torch.optim.SGD(model.parameters(), lr=0.01),
        train_loader=batches, val_loader=None, normalize=lambda x: x.float() / 255,
        loss_fn=torch.nn.CrossEntropyLoss())
    m = figures["monitor"]
    assert m["interval_s"] == 0.02 and m["energy_j"] is None and m["reason"]
    assert m["host_mem_peak_gib"] > 0


def timed_compute(seconds_hint_steps, mon=None):
    """Seconds for a fixed CPU training loop (a small MLP's forward, backward, step)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(512, 512), torch.nn.ReLU(), torch.nn.Linear(512, 10))
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    x, y = torch.randn(256, 512), torch.randint(0, 10, (256,))
    started = mon.start() if mon is not None else None
    t0 = time.perf_counter()
    for _ in range(seconds_hint_steps):
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    elapsed = time.perf_counter() - t0
    if started is not None:
        started.stop()
    return elapsed


def overhead(steps=50, repeats=4, make=lambda: monitor.Monitor("cpu", [], 0.1)):
    """(best seconds without, best seconds with the sampler), runs interleaved."""
    timed_compute(20)  # warm-up
    plain, sampled = [], []
    for _ in range(repeats):
        plain.append(timed_compute(steps))
        sampled.append(timed_compute(steps, make()))
    return min(plain), min(sampled)


def test_sampler_does_not_slow_the_step():
    # the sampler sleeps between samples; reading /proc costs well under a millisecond.
    # a busy machine can slow either side, so a slowdown must show in three tries
    tries = []
    for _ in range(3):
        plain, sampled = overhead()
        tries.append((plain, sampled))
        if sampled < plain * 1.10 + 0.01:
            break
    else:
        pytest.fail(f"sampler at 0.1 s slowed every try (without, with): {tries}")


if __name__ == "__main__":
    # python tests/test_monitor.py: the overhead numbers, host only and with a stand-in tool
    import tempfile
    steps = int(os.environ.get("STEPS", 300))
    plain, sampled = overhead(steps)
    print(f"host sampler @0.1 s: without {plain:.3f} s, with {sampled:.3f} s, "
          f"{100 * (sampled / plain - 1):+.1f}%")
    with tempfile.TemporaryDirectory() as d:
        from pathlib import Path
        os.environ["PATH"] = fake_tool(Path(d), "nvidia-smi", FAKE_SMI) + ":" + os.environ["PATH"]
        sys.modules["pynvml"] = None
        plain, sampled = overhead(steps, make=lambda: monitor.Monitor("cuda", ["0"], 0.1))
        print(f"stand-in nvidia-smi @0.1 s: without {plain:.3f} s, with {sampled:.3f} s, "
              f"{100 * (sampled / plain - 1):+.1f}%")


@pytest.mark.parametrize("steps", [3, 5])
def test_a_run_within_its_warmup_says_why_its_cells_are_empty(steps):
    """--max-steps at or below --warmup-steps: no timed window, and words for why."""
    run = cpu_run()
    args = argparse.Namespace(monitor_interval=0.02)
    clocks = TrainClocks(run.device, warmup_steps=5)
    mon = monitor.start(run, args)
    for _ in range(steps):
        clocks.begin_step()
        busy(0.01)
        clocks.end_step(4)
    figures = clocks.figures(run)
    monitor.stop(mon)
    summary = monitor.summary(run, mon, clocks.window, figures["images"], args)
    assert clocks.window is None and figures["images"] == 0 and "p_core" not in figures
    assert figures["why_empty"].startswith(f"no timed step: the run ended at step {steps}, "
                                           f"within its 5 warm-up steps")
    assert summary["power_mean_w"] is None and summary["host_cpu_mean_pct"] is None
    assert summary["reason"] == "no timed window: the run ended within its warm-up steps"
