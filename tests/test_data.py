"""Data: the generated dataset, exact sharded evaluation, and one-line errors."""
import json
import os
import shutil
import time

import numpy as np
import pytest
import torch
from conftest import ROOT, run_script

from common import data, device, make_dataset
from common.dist import Run
from common.errors import UserError

HERE = os.path.dirname(os.path.abspath(__file__))


def cpu_run(rank=0, world_size=1):
    return Run(rank, rank, world_size, world_size, device.select("cpu"))


def test_generated_dataset_is_an_imagenet_layout(dataset):
    train = data.image_folder(dataset, "train", data.train_transform(32))
    val = data.image_folder(dataset, "val", data.eval_transform(32))
    assert train.classes == val.classes == [f"n{c:08d}" for c in range(4)]
    assert len(train) == 4 * 24 and len(val) == 4 * 5
    image, label = train[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 32, 32)


def test_shards_cover_every_image_once():
    shards = [list(data.ShardSampler(23, r, 4)) for r in range(4)]
    assert sorted(sum(shards, [])) == list(range(23))
    assert [len(s) for s in shards] == [6, 6, 6, 5]


def test_exact_accuracy_same_on_one_and_two_ranks(dataset, tmp_path):
    results = {}
    for n in (1, 2):
        out = tmp_path / f"eval{n}.json"
        proc = run_script([os.path.join(HERE, "eval_shards.py"), dataset, out], nproc=n)
        assert proc.returncode == 0, proc.stderr[-2000:]
        results[n] = json.loads(out.read_text())
    assert results[1]["images"] == results[2]["images"] == 20
    assert results[2]["shard_sizes"] == [10, 10]
    for key in ("top1", "top5", "loss"):
        assert results[1][key] == pytest.approx(results[2][key], rel=1e-6)
    # a number of correct images over 20, not an average of per-batch rates
    assert (results[1]["top1"] * 20 / 100) == pytest.approx(round(results[1]["top1"] * 20 / 100))


def test_normalizer_matches_float_normalize():
    images = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    norm = data.normalizer(data.IMAGENET_MEAN, data.IMAGENET_STD, "cpu", channels_last=True)
    out = norm(images)
    mean = torch.tensor(data.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(data.IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(out, (images / 255.0 - mean) / std)
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_synthetic_loader_serves_one_device_batch():
    loader = data.SyntheticLoader(4, 16, 10, steps=3, device="cpu")
    batches = list(loader)
    assert len(batches) == len(loader) == 3
    assert batches[0][0] is batches[2][0] and batches[0][0].dtype == torch.uint8


@pytest.mark.parametrize("mess, message", [
    ("no_dir", "no such directory"),
    ("no_val", "val: missing"),
    ("empty_class", "n00000001"),
    ("other_classes", "class folders differ"),
    ("class_archives", r"find any class folder in \S+; train/ must hold one folder of images "
                       r"per class \(archives such as ImageNet's per-class .tar files extracted"),
])
def test_dataset_mistakes_are_one_line_errors(tmp_path, mess, message):
    root = make_dataset.write(str(tmp_path / "d"), classes=2, train_per_class=2,
                              val_per_class=1, size=16)
    if mess == "no_dir":
        root = str(tmp_path / "nowhere")
    elif mess == "no_val":
        shutil.rmtree(os.path.join(root, "val"))
    elif mess == "empty_class":
        for f in os.listdir(os.path.join(root, "train", "n00000001")):
            os.remove(os.path.join(root, "train", "n00000001", f))
    elif mess == "other_classes":
        os.rename(os.path.join(root, "val", "n00000001"), os.path.join(root, "val", "n00000009"))
    elif mess == "class_archives":  # train/ as ImageNet's download has it, not extracted
        for name in ("n00000000", "n00000001"):
            shutil.rmtree(os.path.join(root, "train", name))
            open(os.path.join(root, "train", name + ".tar"), "w").close()
    with pytest.raises(UserError, match=message) as e:
        train = data.image_folder(root, "train", None)
        data.check_same_classes(train, data.image_folder(root, "val", None))
    assert "\n" not in str(e.value)


def test_batch_larger_than_the_shard_is_refused(dataset):
    train = data.image_folder(dataset, "train", None)
    with pytest.raises(UserError, match="--batch-size 64"):
        data.train_loader(train, 64, 0, cpu_run(0, 2))


def test_loaders_pin_memory_where_the_device_says(dataset, monkeypatch):
    val = data.image_folder(dataset, "val", None)
    assert not data.eval_loader(val, 4, 0, cpu_run()).pin_memory
    monkeypatch.setattr(device.Device, "pin_memory", property(lambda self: True))
    assert data.train_loader(val, 4, 0, cpu_run()).pin_memory


@pytest.mark.parametrize("mode, fmt", [("RGB", "JPEG"), ("L", "JPEG"), ("CMYK", "JPEG"),
                                       ("RGB", "PNG")])
def test_read_image_gives_rgb_uint8_whatever_the_file_holds(tmp_path, mode, fmt):
    """ImageNet holds grayscale and CMYK JPEGs and a PNG named .JPEG; each reads as RGB."""
    from PIL import Image
    rgb = Image.fromarray(make_dataset.class_image(np.random.default_rng(0), 1, 4, 40, 30))
    path = tmp_path / "x.JPEG"
    rgb.convert(mode).save(path, format=fmt, quality=95)
    image = data.read_image(str(path))
    assert image.dtype == torch.uint8 and image.shape == (3, 30, 40)
    with Image.open(path) as f:
        reference = torch.from_numpy(np.array(f.convert("RGB"))).permute(2, 0, 1)
    # the same libjpeg-turbo underneath; colour conversion may round differently
    assert (image.int() - reference.int()).abs().float().mean() < 2


WORKER_SIGNALS = """
import os, signal, subprocess, sys, time
import torch
from common import data

class Pids(torch.utils.data.Dataset):
    def __len__(self):
        return 1000

    def __getitem__(self, i):
        return os.getpid()

loader = torch.utils.data.DataLoader(Pids(), batch_size=1, num_workers=1, prefetch_factor=1,
                                     worker_init_fn=data.leave_stop_signals_to_the_rank)
it = iter(loader)
pid = int(next(it))
for sig in ("TERM", "INT"):  # sent by another process, as slurmstepd or a terminal does
    subprocess.run(["kill", f"-{sig}", str(pid)], check=True)
time.sleep(0.5)
print("served", [int(next(it)) for _ in range(5)] == [pid] * 5, flush=True)
# only next() is to report the dead worker, not the loader's SIGCHLD handler at any moment
signal.signal(signal.SIGCHLD, signal.SIG_DFL)
os.kill(pid, signal.SIGTERM)  # from the worker's parent
try:
    for _ in range(100):
        next(it)
        time.sleep(0.05)
except (RuntimeError, EOFError, ConnectionError) as e:  # however the loader learns of it
    print("ended", type(e).__name__, flush=True)
    os._exit(0)  # no shutdown of a loader whose worker is gone
print("still serving", flush=True)
"""


def test_a_worker_outlives_stop_signals_but_not_its_rank():
    """scancel and a terminal signal every process of the job: the worker serves on, so
    that its rank reaches the agreed stop; its rank's own SIGTERM (Python's and the
    loader's shutdown) still ends it, so no exit waits on it. In a process of its own,
    so that nothing the dead worker leaves behind can reach the test run."""
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-c", WORKER_SIGNALS], capture_output=True,
                          text=True, timeout=120, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})
    lines = proc.stdout.splitlines()
    assert lines[:1] == ["served True"], proc.stdout + proc.stderr
    assert lines[1].startswith("ended "), proc.stdout + proc.stderr


@pytest.mark.parametrize("kind, rank_gone, told", [
    (BrokenPipeError, True, False),  # the rank's socket closed by its end: nothing to tell
    (EOFError, True, False),
    (BrokenPipeError, False, True),  # the rank still there: a real fault, told
    (ValueError, True, True),  # not a broken connection: told whoever has gone
])
def test_a_worker_says_nothing_of_the_broken_pipe_to_a_rank_that_has_ended(
        kind, rank_gone, told, monkeypatch):
    seen = []
    monkeypatch.setattr(data.time, "sleep", lambda s: None)
    hook = data._quiet_once_the_rank_is_gone(os.getppid() + (1 if rank_gone else 0),
                                              lambda *exc: seen.append(exc[0]))
    hook(kind, kind("x"), None)
    assert seen == ([kind] if told else [])
