"""The console log beside a record, and `python -m common.report --bundle / --verify /
--redact`: a bundle that checks its hashes, its figures and its tables, refuses what it
may not extract, and drops from its copies what --redact names."""
import errno
import getpass
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile

import pytest
from conftest import ROOT, run_script

from common import console, plots, report
from common.rederive import differs, rederive
from common.errors import UserError

TINY = ["--image-size", 32, "--batch-size", 4, "--max-steps", 3, "--warmup-steps", 1,
        "--monitor-interval", 0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, dataset):
    """One short real training run through its entry point: its --out folder."""
    out = tmp_path_factory.mktemp("runs")
    proc = run_script(["resnet50/train.py", "--data-dir", dataset, *TINY, "--out", out])
    assert proc.returncode == 0, proc.stderr
    return out


def the_record(folder):
    (name,) = [f for f in os.listdir(folder) if f.endswith(".json")]
    return json.loads((folder / name).read_text()), name


@pytest.fixture(scope="module")
def bundle(runs, tmp_path_factory):
    path = tmp_path_factory.mktemp("bundle") / "runs.tar.gz"
    assert report.main([str(runs), "--bundle", str(path)]) == 0
    return path


def members(path):
    """{name: bytes} of a bundle's files."""
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def write_bundle(path, found):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in found.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def rehash(found, name):
    """The manifest made to agree with the changed file `name`, as a forger would."""
    manifest = json.loads(found["manifest.json"])
    manifest["files"][name]["sha256"] = hashlib.sha256(found[name]).hexdigest()
    found["manifest.json"] = json.dumps(manifest).encode()


def verify(path, capsys):
    code = report.main(["--verify", str(path)])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_console_log_is_beside_the_record_and_named_by_it(runs):
    rec, name = the_record(runs)
    log = (runs / rec["console_log"]).read_text()
    assert os.path.dirname(rec["console_log"]) == ""  # beside it, in --out
    assert log.startswith("data: listing the images of") and "resnet50 training on 1 x CPU" in log
    assert f"record: {runs / name}" in log and "| CPU 1 node x 1 (1x1)" in log


def test_a_bundle_verifies_with_one_line(bundle, runs, capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where --verify extracts
    rec, name = the_record(runs)
    found = members(bundle)
    manifest = json.loads(found["manifest.json"])
    assert {f"records/{name}", f"records/{rec['console_log']}", f"records/{rec['mlperf_log']}",
            "tables.en.md", "tables.zh.md"} <= set(manifest["files"])
    assert manifest["files"][f"records/{rec['mlperf_log']}"]["kind"] == "mlperf_log"
    assert manifest["suite_version"] == [rec["suite_version"]] and not manifest["redacted"]
    assert "训练" in found["tables.zh.md"].decode()
    code, out, err = verify(bundle, capsys)
    assert code == 0 and out.count("\n") == 1 and "all agree" in out, out + err
    assert " 0 figures" not in out
    assert os.listdir(tmp_path) == []  # its temporary folder is gone, nothing else written


def test_an_edited_figure_a_table_and_a_log_each_fail_by_name(bundle, runs, tmp_path, capsys):
    rec, name = the_record(runs)
    found = members(bundle)
    edited = json.loads(found[f"records/{name}"])
    edited["figures"]["p_core"] *= 2
    found[f"records/{name}"] = json.dumps(edited).encode()
    rehash(found, f"records/{name}")  # the hash hides it; the counts and clocks do not
    found["tables.en.md"] = found["tables.en.md"].replace(b"CPU", b"GPU")
    rehash(found, "tables.en.md")
    found[f"records/{rec['console_log']}"] += b"one more line\n"
    code, out, err = verify(write_bundle(tmp_path / "forged.tar.gz", found), capsys)
    assert code == 1, out + err
    assert f"records/{name}: p_core is {edited['figures']['p_core']!r} in the record" in out
    assert "tables.en.md: differs from the tables the bundled records render" in out
    assert f"records/{rec['console_log']}: sha256 differs" in out
    # the doubled p_core renders another zh table too; nothing else differs
    assert "tables.zh.md: differs" in out and out.count("differs:") == 4


@pytest.mark.parametrize("name, why", [
    ("../evil", "'..'"), ("/tmp/evil-absolute", "an absolute path"),
    ("records/link", "a symbolic link"), ("records/hard", "a hard link")])
def test_a_member_that_would_land_outside_is_refused_by_name(bundle, tmp_path, name, why,
                                                              capsys, monkeypatch):
    found = members(bundle)
    path = tmp_path / "bad.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for member, data in found.items():
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo(name)
        if name.endswith("link"):
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        elif name.endswith("hard"):
            info.type, info.linkname = tarfile.LNKTYPE, "manifest.json"
        data = b"" if name.startswith("records/") else b"x"
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    here = tmp_path / "cwd"
    here.mkdir()
    monkeypatch.chdir(here)
    code, out, err = verify(path, capsys)
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert f"{name!r}" in err and why in err and "nothing extracted" in err
    assert os.listdir(here) == [] and not (tmp_path / "evil").exists()
    assert not os.path.exists("/tmp/evil-absolute")


def test_what_is_no_bundle_is_one_line_and_exit_2(bundle, tmp_path, capsys):
    whole = bundle.read_bytes()
    (tmp_path / "truncated.tar.gz").write_bytes(whole[:len(whole) // 2])
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as z:
        z.writestr("manifest.json", "{}")
    found = members(bundle)
    write_bundle(tmp_path / "bare.tar.gz", {k: v for k, v in found.items() if k != "manifest.json"})
    write_bundle(tmp_path / "notjson.tar.gz", {**found, "manifest.json": b"{not json"})
    for name, said in (("truncated.tar.gz", "not a bundle"), ("other.zip", "not a bundle"),
                       ("bare.tar.gz", "no manifest.json"),
                       ("notjson.tar.gz", "manifest.json is not JSON")):
        code, out, err = verify(tmp_path / name, capsys)
        assert code == 2 and err.count("\n") == 1 and said in err, (name, err)
        assert err.startswith(f"error: --verify {tmp_path / name}") and "Traceback" not in err


def test_redact_drops_hosts_addresses_users_and_data_from_the_copies(runs, dataset, tmp_path):
    copy = tmp_path / "runs"
    shutil.copytree(runs, copy)
    rec, name = the_record(copy)
    log = copy / rec["console_log"]
    with open(log, "a") as f:
        f.write("MASTER_ADDR=10.1.2.3 --rdzv-endpoint node7:29400 /home/alice/x\n")
    before = {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()}
    path = tmp_path / "red.tar.gz"
    proc = subprocess.run([sys.executable, "-m", "common.report", str(copy), "--bundle",
                           str(path), "--redact"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "redacted in the bundle's copies" in proc.stdout and "data paths" in proc.stdout
    assert before == {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()}
    found = members(path)
    red_rec = json.loads(found[f"records/{name}"])
    red_log = found[f"records/{rec['console_log']}"].decode()
    assert red_rec["host"] == "<host>" and red_rec["data"] == "<data>"
    for gone in ("10.1.2.3", "node7", "/home/alice", dataset):
        assert gone not in red_log and gone not in found[f"records/{name}"].decode(), gone
    user = re.compile(rf"(?<![A-Za-z0-9]){re.escape(getpass.getuser())}(?![A-Za-z0-9])")
    assert user.search(before[copy / name].decode())  # pytest's folder names the user
    assert not user.search(found[f"records/{name}"].decode())
    assert json.loads(found["manifest.json"])["redacted"] is True
    again = subprocess.run([sys.executable, "-m", "common.report", "--verify", str(path)],
                           cwd=ROOT, capture_output=True, text=True)
    assert again.returncode == 0 and "all agree" in again.stdout, again.stdout + again.stderr


def test_a_log_that_cannot_be_written_is_one_warning_and_the_run_goes_on():
    class Full(io.StringIO):
        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")
    shown, warned = io.StringIO(), io.StringIO()
    tee = console.Tee(shown, {"file": Full(), "path": "runs/console.log"}, warned)
    tee.write("step 1\n")
    tee.write("step 2\n")
    tee.flush()
    assert shown.getvalue() == "step 1\nstep 2\n"
    assert warned.getvalue() == ("warning: console log runs/console.log: cannot be written "
                                 "(the disk is full (ENOSPC); free space there); the run "
                                 "goes on without it\n")


def test_without_matplotlib_a_bundle_says_so_once_and_has_no_plots(runs, tmp_path, capsys,
                                                                   monkeypatch):
    def no_matplotlib():
        raise UserError("--plots: needs matplotlib, which is not installed here")
    monkeypatch.setattr(plots, "pyplot", no_matplotlib)
    path = tmp_path / "plain.tar.gz"
    assert report.main([str(runs), "--bundle", str(path)]) == 0
    err = capsys.readouterr().err
    assert err.count("matplotlib is not installed") == 1
    assert not [m for m in members(path) if m.startswith("plots/")]
    assert verify(path, capsys)[0] == 0


def test_an_inference_record_is_worked_out_from_its_passes():
    rec = {"case": "infer", "world_size": 2, "data_source": "real", "weights_source": "published",
           "figures": {
               "val_pass": {"images": 50, "whole_s": 2.0, "core_s": 1.0, "top1_hits": 40},
               "infer_pass": {"images": 50, "whole_s": 1.0, "core_s": 0.5, "top1_hits": 41},
               "p_val_whole": 25.0, "p_val_core": 50.0, "p_infer_whole": 50.0,
               "p_infer_core": 100.0, "acc_val": 80.0, "acc_infer": 82.0, "latency_s": 0.02,
               "flops_per_image": 1e9, "tflops": 0.05, "mfu": 0.5, "peak_tflops": 0.1,
               "e2e_clock": {"before_s": 0.0, "start": 10.0, "end": 15.5}, "e2e_time": 5.5}}
    found = {cell: (mine, again) for cell, mine, again in rederive(rec)}
    assert set(found) == {"p_val_whole", "p_val_core", "p_infer_whole", "p_infer_core",
                          "acc_val", "acc_infer", "latency_s", "tflops", "mfu", "e2e_time"}
    assert not [cell for cell, (mine, again) in found.items() if differs(mine, again)]
    rec["figures"]["latency_s"] = 0.01  # 1 / (100 / 2 devices) is 0.02
    assert [c for c, mine, again in rederive(rec) if differs(mine, again)] == ["latency_s"]


def test_a_bundle_too_large_to_be_one_or_listing_a_file_twice_is_refused(bundle, tmp_path,
                                                                         capsys, monkeypatch):
    """A member declaring more bytes than MAX_BYTES, more members than MAX_MEMBERS, or a
    manifest that names a file twice (its first hash faked, its last true): one line,
    exit 2, nothing extracted; the limits are read from the headers, before any data."""
    from common import bundle as bundling
    found = members(bundle)
    name = next(n for n in found if n.endswith(".json") and n.startswith("records/"))
    listed = json.loads(found["manifest.json"])["files"]
    twice = json.dumps({"files": {name: {"sha256": "0" * 64, "kind": "record"}}})[:-2] + \
        ", " + json.dumps({"files": listed})[len('{"files": {'):]
    write_bundle(tmp_path / "twice.tar.gz", {**found, "manifest.json": twice.encode()})
    write_bundle(tmp_path / "many.tar.gz", {**found, **{f"records/m/{i}": b"" for i in range(30)}})
    monkeypatch.setattr(bundling, "MAX_MEMBERS", 25)
    for case, said in (("twice", f"lists {name!r} twice"), ("many", "more than 25 members")):
        code, out, err = verify(tmp_path / f"{case}.tar.gz", capsys)
        assert code == 2 and out == "" and err.count("\n") == 1 and said in err, (case, err)
    monkeypatch.setattr(bundling, "MAX_MEMBERS", 10_000)
    monkeypatch.setattr(bundling, "MAX_BYTES", max(len(v) for v in found.values()) - 1)
    code, out, err = verify(bundle, capsys)
    assert code == 2 and "nothing extracted" in err and "MiB in all" in err


def test_bundle_never_writes_over_what_it_packs_and_says_where_it_cannot_go(runs, tmp_path,
                                                                           capsys):
    """--bundle given a record's own path, a folder, a path under a file: one line, exit
    2, the record whole; a bundle written into the folder it packs verifies, and the
    next bundle of that folder does not pack it."""
    rec, name = the_record(runs)
    before = (runs / name).read_bytes()
    for out, said in ((runs / name, "which the bundle holds"), (runs, "is a directory"),
                      (runs / name / "b.tar.gz", "a file stands where the directory should be")):
        assert report.main([str(runs), "--bundle", str(out)]) == 2
        err = capsys.readouterr().err
        assert said in err and err.count("\n") == 1, err
    assert (runs / name).read_bytes() == before
    inside = runs / "inside.tar.gz"
    try:
        assert report.main([str(runs), "--bundle", str(inside)]) == 0
        assert report.main([str(runs), "--bundle", str(tmp_path / "again.tar.gz")]) == 0
        assert verify(inside, capsys)[0] == 0
        assert not any("inside" in m for m in members(tmp_path / "again.tar.gz"))
    finally:
        inside.unlink()


def test_a_folder_a_run_still_writes_into_bundles_whole_and_verifies(runs, tmp_path, capsys,
                                                                     monkeypatch):
    """While --bundle copies, the console log grows and a new record appears: the bundle
    holds the copies it hashed (the log as it was when copied; the new record left for
    the next bundle), and verifies."""
    from common import bundle as bundling
    folder = tmp_path / "live"
    shutil.copytree(runs, folder)
    rec, name = the_record(folder)
    copy = bundling._copy

    def copy_while_a_run_writes(src, *args):
        member = copy(src, *args)
        with open(folder / rec["console_log"], "a") as log:
            log.write("a line printed while the bundle was made\n")
        (folder / f"new-{len(os.listdir(folder))}.json").write_text((folder / name).read_text())
        return member
    monkeypatch.setattr(bundling, "_copy", copy_while_a_run_writes)
    path = tmp_path / "live.tar.gz"
    assert report.main([str(folder), "--bundle", str(path)]) == 0
    assert "bundle: " in capsys.readouterr().out
    assert sum(m.endswith(".json") and m.startswith("records/") for m in members(path)) == 1
    assert verify(path, capsys)[0] == 0
