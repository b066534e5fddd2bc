"""A finished run's figures are never lost: --out is tried before the work, a record that
still cannot be written goes elsewhere (and the checkpoint stays until it is on disk),
write failures are named for what they are, and one run at a time owns a checkpoint."""
import argparse
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import threading

import pytest
import torch
import torchvision
from conftest import ROOT, _free_port, load_script, run_script
from test_resnet50 import only_record
from test_resume import descendants

from common import cases, checkpoint, exits, files, record
from common.errors import UserError

TINY = ["--synthetic", "--image-size", 32, "--batch-size", 2, "--num-classes", 10,
        "--warmup-steps", 1, "--synthetic-steps", 3, "--monitor-interval", 0]


def train_in_process(tmp_path, *extra):
    """resnet50/train.py run in this process, as its command line would run it."""
    script = load_script("resnet50/train.py")
    argv = [str(a) for a in [*TINY, "--max-steps", 3, "--out", tmp_path, *extra]]
    parser = script.get_args_parser()
    with pytest.raises(SystemExit) as e:
        exits.entry(script.main, parser, parser.parse_args(argv))
        raise SystemExit(0)
    return e.value.code


def failing_json_writes(monkeypatch, where, code=errno.ENOSPC):
    """Writes of .json files under any of `where` fail as a full disk (or `code`) would."""
    real = files.tempfile.mkstemp

    def mkstemp(dir=None, prefix=None, suffix=None):
        if suffix == ".json" and any(str(dir).startswith(str(w)) for w in where):
            raise OSError(code, os.strerror(code))
        return real(dir=dir, prefix=prefix, suffix=suffix)
    monkeypatch.setattr(files.tempfile, "mkstemp", mkstemp)


def test_a_record_out_cannot_take_goes_to_a_fallback_named_on_stderr(tmp_path, monkeypatch,
                                                                      capsys):
    fallback = tmp_path / "fallback"
    monkeypatch.setattr(record, "FALLBACK_DIRS", (str(tmp_path / "ro"), str(fallback)))
    failing_json_writes(monkeypatch, [tmp_path / "out", tmp_path / "ro"])
    assert train_in_process(tmp_path / "out", "--keep-checkpoint") == 1
    out, err = capsys.readouterr()
    (name,) = os.listdir(fallback)
    assert f"record: {fallback / name}" in out and "| CPU 1 node x 1 (1x1)" in out
    assert (f"error: --out {tmp_path / 'out'}: cannot be written: the disk is full (ENOSPC); "
            f"free space there; the record is in {fallback / name} instead") in err
    rec = json.loads((fallback / name).read_text())
    assert rec["status"] == "ok" and rec["figures"]["steps"] == 3
    assert len(rec["suite_version"]) == 12 and "git_commit" in rec


def test_a_record_no_folder_takes_is_printed_and_the_checkpoint_kept(tmp_path, monkeypatch,
                                                                     capsys):
    monkeypatch.setattr(record, "FALLBACK_DIRS", (str(tmp_path / "ro"),))
    failing_json_writes(monkeypatch, [tmp_path], errno.EROFS)
    assert train_in_process(tmp_path / "out", "--checkpoint-every", "1steps") == 1
    out, err = capsys.readouterr()
    assert "| CPU 1 node x 1 (1x1)" in out  # the table row regardless
    assert "the file system is read-only (EROFS); the record is nowhere on disk; here it is:" in err
    printed = json.loads(err.strip().splitlines()[-1])
    assert printed["figures"]["steps"] == 3
    ckpts = [f for f in os.listdir(tmp_path / "out" / "checkpoints") if f.endswith(".pt")]
    assert len(ckpts) == 1  # the run's state survives: nothing is lost


def test_a_finished_run_removes_its_checkpoint_once_the_record_is_written(tmp_path):
    assert train_in_process(tmp_path, "--checkpoint-every", "1steps") == 0
    assert os.listdir(tmp_path / "checkpoints") == []  # and its lock file
    assert only_record(tmp_path)["status"] == "ok"


@pytest.mark.parametrize("code, cause", [
    (errno.ENOSPC, "the disk is full (ENOSPC)"),
    (errno.EROFS, "the file system is read-only (EROFS)"),
    (errno.EACCES, "no permission to write there (EACCES)"),
])
def test_checkpoint_write_failures_are_named_with_the_path(tmp_path, monkeypatch, code, cause):
    def save(obj, f):
        raise OSError(code, os.strerror(code))
    monkeypatch.setattr(torch, "save", save)
    path = tmp_path / "c.pt"
    with pytest.raises(UserError, match=rf"^checkpoint {path}: cannot be written: "
                                        rf"{cause.replace('(', '[(]').replace(')', '[)]')}"):
        checkpoint.write_atomically({}, str(path))
    assert os.listdir(tmp_path) == []  # no temporary file left


def test_torchs_enforce_fail_on_a_full_disk_is_named(tmp_path, monkeypatch):
    def save(obj, f):
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64")
    monkeypatch.setattr(torch, "save", save)
    full = os.statvfs_result((4096, 4096, 100, 0, 0, 10, 0, 0, 0, 255))
    monkeypatch.setattr(checkpoint.os, "statvfs", lambda p: full)
    with pytest.raises(UserError, match=r"cannot be written: the disk is full \(ENOSPC\)"):
        checkpoint.write_atomically({}, str(tmp_path / "c.pt"))


def test_a_full_disk_mid_run_is_one_line_naming_the_checkpoint(tmp_path, monkeypatch, capsys):
    def save(obj, f):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(torch, "save", save)
    assert train_in_process(tmp_path, "--checkpoint-every", "1steps") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: checkpoint {tmp_path / 'checkpoints'}")
    assert "cannot be written: the disk is full (ENOSPC)" in err[0]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_records_and_checkpoints_get_the_mode_of_any_new_file(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        written = files.write_atomically(str(tmp_path / "r.json"), lambda f: f.write("{}"))
        ckpt = checkpoint.write_atomically({"a": 1}, str(tmp_path / "c.pt")) or tmp_path / "c.pt"
    finally:
        os.umask(old)
    assert os.stat(written).st_mode & 0o777 == mode
    assert os.stat(ckpt).st_mode & 0o777 == mode


def test_suite_version_hashes_the_suites_own_sources(tmp_path, monkeypatch):
    copy = tmp_path / "suite"  # no .git: a copy as a vendor image holds it
    for folder in ("common", *cases.folders(), "tests"):
        shutil.copytree(os.path.join(ROOT, folder), copy / folder,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(os.path.join(ROOT, "run_all.sh"), copy)
    here = record.suite_version()
    monkeypatch.setattr(record, "ROOT", str(copy))
    assert record.suite_version() == here and len(here) == 12
    (copy / "tests" / "test_x.py").write_text("# tests are not the suite\n")
    assert record.suite_version() == here
    with open(copy / "vit" / "model.py", "a") as f:
        f.write("\n")
    assert record.suite_version() != here


def test_the_fingerprint_does_not_change_with_the_spelling_of_a_path(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    (tmp_path / "other").mkdir()
    os.symlink(tmp_path / "data", tmp_path / "link")
    monkeypatch.chdir(tmp_path)

    def fp(data_dir):
        return checkpoint.fingerprint(argparse.Namespace(data_dir=data_dir, lr=0.1, out="x"))
    same = {fp(d) for d in ("data", "data/", "./data", str(tmp_path / "data"), "link")}
    assert len(same) == 1 and fp("other") not in same


def test_a_flag_the_script_does_not_have_leaves_its_checkpoints_name_alone():
    """cli sets model, weights and total_steps to None where a script has no such flag:
    the fingerprint is the one of the flags the script has, as before those defaults."""
    from resnet50 import train as resnet50_train
    args = resnet50_train.get_args_parser().parse_args(["--synthetic"])
    assert (args.model, args.weights, args.total_steps) == (None, None, None)
    own = {k: v for k, v in vars(args).items() if k not in checkpoint.SOME_SCRIPTS}
    assert checkpoint.fingerprint(args) == checkpoint.fingerprint(argparse.Namespace(**own))


def test_a_second_run_of_a_live_one_stops_and_a_killed_one_leaves_no_lock(tmp_path):
    """Two ranks each: the second run's ranks agree that the first holds the lock, and
    stop before touching its checkpoint; once the first is killed, the same command
    starts at once."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-port", str(_free_port()), "resnet50/train.py", *TINY,
           "--max-steps", 100000, "--synthetic-steps", 100000, "--print-freq", 1,
           "--checkpoint-every", "1steps", "--out", tmp_path]
    first = start(cmd)
    try:
        wait_for(first, "step 2/")
        second = run_script(cmd[cmd.index("resnet50/train.py"):], nproc=2, timeout=300)
    finally:
        for pid in descendants(first.pid):
            os.kill(pid, signal.SIGKILL)
        first.wait()
    assert second.returncode != 0
    assert (f"error: --out {tmp_path}: another run of this command is writing "
            f"{tmp_path}/checkpoints/resnet50-1x2-") in second.stderr, second.stderr[-3000:]
    assert "resuming" not in second.stdout
    third = start(cmd[:6] + [str(_free_port())] + cmd[7:])
    try:  # past the lock: resumed from the killed run's checkpoint
        wait_for(third, "resuming from")
    finally:
        for pid in descendants(third.pid):
            os.kill(pid, signal.SIGKILL)
        third.wait()


def start(cmd):
    return subprocess.Popen([str(c) for c in cmd], cwd=ROOT, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})


def wait_for(proc, text, timeout=240):
    seen = []
    # a run that never prints `text` is ended, so that the read below ends too
    timer = threading.Timer(timeout, lambda: [os.kill(p, signal.SIGKILL)
                                              for p in descendants(proc.pid)])
    timer.start()
    try:
        for line in proc.stdout:
            seen.append(line)
            if text in line:
                return
    finally:
        timer.cancel()
    raise AssertionError("".join(line for line in seen if "error" in line.lower())[-3000:])


def test_resume_of_a_weights_file_or_another_batch_size_is_one_line(tmp_path):
    first = run_script(["resnet50/train.py", *TINY, "--max-steps", 2, "--keep-checkpoint",
                        "--out", tmp_path])
    assert first.returncode == 0, first.stderr[-2000:]
    (final,) = [f for f in os.listdir(tmp_path / "checkpoints") if f.endswith("-final.pt")]
    weights = tmp_path / "weights.pth"
    torch.save(torchvision.models.resnet50(num_classes=10).state_dict(), weights)
    for resume, batch, message in [
            (tmp_path / "checkpoints" / final, 4, "written at --batch-size 2, this run has "
                                                  "--batch-size 4"),
            (weights, 2, "a weights file, not a training checkpoint")]:
        proc = run_script(["resnet50/train.py", *TINY, "--max-steps", 2, "--batch-size", batch,
                           "--resume", resume, "--out", tmp_path])
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr
        assert lines[0].startswith(f"error: --resume {resume}: {message}")


def test_run_all_checks_out_before_its_first_case(tmp_path):
    (tmp_path / "file").write_text("")
    env = {**os.environ, "OUT": str(tmp_path / "file" / "out"), "NPROC": "1",
           "CASES": "resnet50_train"}
    proc = subprocess.run(["bash", "run_all.sh"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "===" not in proc.stdout, proc.stdout + proc.stderr
    assert "Not a directory" in proc.stderr
    assert f"run_all: OUT={tmp_path}/file/out: cannot be written" in proc.stderr
