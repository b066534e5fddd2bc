"""Shared fixtures: a generated JPEG dataset, and helpers to run the scripts as a user would."""
import atexit
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from common import make_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SCRATCH = tempfile.mkdtemp(prefix="suite-")  # what the scripts write where no test says
atexit.register(shutil.rmtree, _SCRATCH, True)


@pytest.fixture(scope="session")
def dataset(tmp_path_factory):
    """4 classes x (24 train + 5 val) small JPEGs: an odd val count, uneven over 2 ranks."""
    return make_dataset.write(str(tmp_path_factory.mktemp("data")), classes=4,
                              train_per_class=24, val_per_class=5, size=48)


def run_script(args, cwd=ROOT, timeout=600, nproc=None, env=None):
    """Run a suite script as `python ...` or `torchrun --nproc_per_node N ...`; a model
    script given no --out writes into a folder of the test run's, not into the clone's
    runs/ (its console log, at least, would land there)."""
    args = [str(a) for a in args]
    if "--out" not in args and any(a.endswith(("/train.py", "/infer.py")) for a in args):
        args += ["--out", tempfile.mkdtemp(prefix="runs-", dir=_SCRATCH)]
    cmd = [sys.executable]
    if nproc:
        cmd += ["-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
                "--master-port", str(_free_port())]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(cmd + args, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=full_env)


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_script(script):
    """An entry script (e.g. 'resnet50/train.py') as a module, to run in this process."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(script.replace("/", "_")[:-3],
                                                  os.path.join(ROOT, script))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def loop_args(out, **flags):
    """The flags train_loop.train reads, from a real training parser (so a flag the loop
    reads that no parser defines fails here, as in a run), then `flags` set on top."""
    from common import cli
    parser = cli.train_parser("test", batch_size=4, global_batch=4, lr=0.01, epochs=1,
                              target_acc=0, warmup_steps=1)
    args = parser.parse_args(["--synthetic", "--out", str(out), "--resume", "never",
                              "--checkpoint-every", "0", "--eval-every", "0",
                              "--monitor-interval", "0"])
    vars(args).update(flags)
    return args
