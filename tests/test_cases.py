"""The registry of the models (common/cases.py) is the one list: the model folders, their
scripts, the names their records carry, the GPU check's training steps and the README's
cases table agree with it, and a fifth model is its folder plus one entry."""
import glob
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, _free_port, load_script

from common import cases, record
from common.gpu_plan import Plan

CPU = {"label": "CPU", "name": "a CPU", "type": "cpu", "count": 1,
       "precisions": ["fp32", "bf16"], "compile_mode": "default"}
H200 = {"label": "H200", "name": "NVIDIA H200", "type": "cuda", "count": 1,
        "precisions": ["fp32", "tf32", "amp", "fp16", "bf16"], "compile_mode": "max-autotune"}
SCRIPT = re.compile(r"(?<![\w<>/.-])([\w-]+)/(?:train|infer)\.py")  # not <model>/infer.py


def test_every_model_folder_is_in_the_registry_and_every_entry_has_its_scripts():
    on_disk = {os.path.basename(os.path.dirname(p))
               for p in glob.glob(os.path.join(ROOT, "*", "train.py"))}
    assert on_disk == set(cases.folders())
    for script in cases.scripts():
        assert os.path.isfile(os.path.join(ROOT, script)), script


def test_the_shell_reads_the_cases_without_torch():
    """run_all.sh asks `python -m common.cases` before torch loads: case, script, weights."""
    proc = subprocess.run([sys.executable, "-c", "import sys; sys.modules['torch'] = None; "
                           "from common import cases; cases.main([])"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = [line.split(" ") for line in proc.stdout.splitlines()]
    assert lines[0] == ["resnet50_train", "resnet50/train.py", "-"]
    assert ["bit_train", "bit/train.py", "BiT-M-R152x2.npz"] in lines
    assert ["vit_infer", "vit/infer.py", "vit_b_16-c867db91.pth"] in lines
    assert [name for name, _, _ in lines] == [name for name, _, _ in cases.cases()]
    assert len(lines) == 2 * len(cases.MODELS)


def test_each_entrys_name_is_the_one_its_scripts_write():
    """A failed case's row lands in the table of the model's own records only when the
    registry's name is the scripts' (a --model default, else the name they pass)."""
    for _, model, kind in cases.cases():
        default = load_script(model.script(kind)).get_args_parser().get_default("model")
        if default is not None:
            assert default == model.name, model.script(kind)
        else:
            with open(os.path.join(ROOT, model.script(kind))) as f:
                assert f'"{model.name}"' in f.read(), model.script(kind)


def test_a_failed_case_is_recorded_under_its_models_name():
    rec = record.failed_case_record("vit_train", "error: --x: bad", "1x2")
    assert (rec["model"], rec["case"], rec["error"], rec["world_size"]) == (
        "vit_b_16", "train", "--x: bad", 2)
    assert record.failed_case_record("bit_infer", "", "1x1")["model"] == "BiT-M-R152x2"


def test_the_gpu_check_trains_each_model_at_its_registry_step(tmp_path):
    cpu = {s.name: s for s in Plan(CPU, str(tmp_path), "data").quick()}
    h200 = {s.name: s for s in Plan(H200, str(tmp_path), "data").quick()}
    full = {s.name for s in Plan(H200, str(tmp_path), "data").full()}
    for m in cases.MODELS:
        name = f"{m.folder}-train-amp"
        assert (cpu[name].planned_s, h200[name].planned_s) == (m.gpu.cpu_s, m.gpu.planned_s)
        argv = [str(a) for a in h200[name].argv]
        assert argv[argv.index("--batch-size") + 1] == str(m.gpu.batch)
        assert argv[argv.index("--warmup-steps") + 1] == str(m.gpu.warmup)
        assert argv[argv.index("--max-steps") + 1] == str(m.gpu.warmup + m.gpu.timed)
        assert f"{m.folder}-train-amp-auto" in full


def tables(text):
    """The markdown tables of `text`, each as its lines joined."""
    found, table = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            table.append(line)
        elif table:
            found.append("\n".join(table))
            table = []
    return found


def test_the_readme_cases_table_names_every_script_of_the_registry():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    listed = [set(re.findall(r"[\w-]+/(?:train|infer)\.py", t)) for t in tables(readme)]
    missing = min((set(cases.scripts()) - found for found in listed), key=len,
                  default=set(cases.scripts()))
    assert not missing, f"no table of README.md names every case: the closest lacks {missing}"
    # and no page names a model script the registry does not know
    pages = glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True)
    for path in [os.path.join(ROOT, "README.md"), *pages]:
        with open(path, encoding="utf-8") as f:
            named = set(SCRIPT.findall(f.read()))
        assert named <= set(cases.folders()), (os.path.relpath(path, ROOT), named)


# the fifth model: a folder and one entry, run by run_all.sh, benched and in the tables

TINYNET = '''"""TinyNet: one strided convolution and a linear head, a fifth model in a few lines."""
from torch import nn


def tinynet(num_classes=1000):
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=4), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))
'''
ENTRY = ('    Model("tinynet", "tinynet", "TinyNet", "tinynet-0000.pth", 1.5,\n'
         '          GpuStep(64, 2, 8, 15, 3)),\n')


def replaced(text, old, new):
    assert old in text, f"{old!r} is no longer in the script the fake model is made from"
    return text.replace(old, new)


def tinynet_script(kind):
    """MobileNetV2's <kind>.py with TinyNet as its net: an entry script as the real ones
    are, whatever their calls into common/ are now."""
    with open(os.path.join(ROOT, "mobilenetv2", f"{kind}.py")) as f:
        _, _, body = f.read().split('"""', 2)
    body = replaced(body, '"torchvision.models.mobilenet_v2"', '"tinynet.model.tinynet"')
    return f'"""TinyNet {kind}: MobileNetV2\'s recipe, a tiny net."""' + replaced(
        body, '"mobilenetv2"', '"tinynet"')


def suite_with_tinynet(root):
    """The suite's code with no model folder but the new one, and its registry entry."""
    shutil.copytree(os.path.join(ROOT, "common"), root / "common",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("run_all.sh", "requirements.txt"):
        shutil.copy(os.path.join(ROOT, name), root)
    (root / "tinynet").mkdir()
    (root / "tinynet" / "model.py").write_text(TINYNET)
    for kind in cases.KINDS:
        (root / "tinynet" / f"{kind}.py").write_text(tinynet_script(kind))
    registry = root / "common" / "cases.py"
    end_of_models = ")\n\n\ndef folders"
    registry.write_text(replaced(registry.read_text(), f"\n{end_of_models}",
                                 f"\n{ENTRY}{end_of_models}"))
    # the shell scripts' python is this one: `python3` first on PATH
    (root / "bin").mkdir()
    (root / "bin" / "python3").write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    (root / "bin" / "python3").chmod(0o755)


def tinynet_weights(root, path):
    spec = importlib.util.spec_from_file_location("tinynet_model", root / "tinynet" / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.save(module.tinynet(num_classes=4).state_dict(), path)  # the quick data's classes


def test_a_fifth_model_is_its_folder_and_one_entry(tmp_path):
    root = tmp_path / "suite"
    suite_with_tinynet(root)
    (tmp_path / "weights").mkdir()
    tinynet_weights(root, tmp_path / "weights" / "tinynet-0000.pth")
    env = {**os.environ, "PATH": f"{root / 'bin'}:{os.environ['PATH']}", "NPROC": "1",
           "OMP_NUM_THREADS": "1", "OUT": str(tmp_path / "out"), "MASTER_PORT": str(_free_port()),
           "WEIGHTS_DIR": str(tmp_path / "weights"), "CASES": "tinynet_train tinynet_infer"}
    proc = subprocess.run(["bash", "run_all.sh"], cwd=root, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "run_all: all cases passed" in proc.stdout
    assert "=== engine: eager (no engine bench of a CPU" in proc.stdout  # asked of the bench
    # listed: its rows in the tables, the inference case with the weights named in its entry
    for section in ("Training: tinynet", "Inference: tinynet"):
        table = proc.stdout.split(section)[1].split("\n\n")[1]
        assert [line for line in table.splitlines() if line.startswith("| CPU")], table
    (infer,) = [json.loads(p.read_text()) for p in (tmp_path / "out").glob("*.json")
                if json.loads(p.read_text())["case"] == "infer"]
    assert infer["model"] == "tinynet" and infer["weights"] == str(tmp_path / "weights" /
                                                                   "tinynet-0000.pth")
    # benched: its infer.py's two passes, the goal from its entry, the engine built (a few
    # layers compile in seconds) and the row's rates, build and bound
    bench_argv = ["--only", "engine", "--models", "tinynet", "--repeat", 1, "--steps", 2,
                  "--image-size", 32, "--batch-size", 4, "--matmul-size", 64,
                  "--out", tmp_path / "b"]
    proc = subprocess.run([sys.executable, "-m", "common.bench", *map(str, bench_argv)],
                          cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (bench,) = [json.loads(p.read_text()) for p in (tmp_path / "b").glob("*.json")]
    (row,) = bench["rows"]
    assert row["model"] == "tinynet" and row["goal"] == 1.5 and row["ours"] > 0
    assert row["precision"] == "fp32" and row["build_s"] > 0 and row["matmul_flops"] > 0
    assert row["ratio"] == row["ours"] / row["reference"]
    assert row["bound"] == pytest.approx(1 / row["eager_share"])
    assert "of the fp32 matmul rate" in row["note"] and "room for about" in row["note"]
    # and the GPU check plans its training step
    proc = subprocess.run([sys.executable, "-c", "from common.gpu_plan import Plan; print(*("
                           f"s.name for s in Plan({CPU!r}, 'o', 'd').quick()))"], cwd=root,
                          capture_output=True, text=True, timeout=60)
    assert "tinynet-train-amp" in proc.stdout.split(), proc.stdout + proc.stderr
