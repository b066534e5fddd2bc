"""results/gpu_checks.sh: the quick plan rehearsed on this CPU within its deadline, a
deadline too short for any step, and the runner's stops, skips and failures."""
import os
import re
import subprocess
import sys
import time

import pytest
from conftest import ROOT, load_script

from common import bench, cli, make_dataset, report, tables
from common.deadline import Deadline, Step, exit_status, run_steps
from common.gpu_plan import Plan, passes_agree

H200 = {"label": "H200", "name": "NVIDIA H200", "type": "cuda", "count": 1,
        "precisions": ["fp32", "tf32", "amp", "fp16", "bf16"], "compile_mode": "max-autotune"}
CPU = {"label": "CPU", "name": "a CPU", "type": "cpu", "count": 1,
       "precisions": ["fp32", "bf16"], "compile_mode": "default"}


def gpu_checks(tmp_path, seconds):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GPU_CHECKS_S": str(seconds),
           "OUT": str(tmp_path / "out")}
    start = time.perf_counter()
    proc = subprocess.run(["bash", "results/gpu_checks.sh", "quick"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=seconds + 120)
    return proc, time.perf_counter() - start


def timings(out):
    """{step: (planned, took, outcome)} from timings.txt, and its last line."""
    with open(out / "timings.txt") as f:
        text = f.read()
    table = text.split("\n\n")[1].splitlines()
    assert table[0].split() == ["step", "planned_s", "of_it_build", "took_s", "of_it_build",
                                "outcome"]
    rows = {}
    for line in table[1:]:
        name, planned, _, took, _, outcome = re.split(r"\s{2,}", line, maxsplit=5)
        rows[name] = (planned, took, outcome)
    return rows, text.strip().splitlines()[-1]


def test_the_cpu_rehearsal_runs_every_step_or_skips_it_at_the_deadline(tmp_path):
    proc, took = gpu_checks(tmp_path, 90)
    out = tmp_path / "out"
    rows, last = timings(out)
    steps = Plan(CPU, str(out), "data").quick()
    assert list(rows) == ["device", *(s.name for s in steps), "tables"]
    for name, (planned, actual, outcome) in rows.items():
        float(planned)  # every step has its planned seconds
        if outcome.startswith("skipped"):
            assert actual == "-" and re.search(r"deadline|needs", outcome), (name, outcome)
        else:
            assert outcome == "passed", (name, outcome, proc.stdout[-3000:])
            float(actual)
    statuses = [o.split(":")[0] for _, _, o in rows.values()]
    expected = 1 if "failed" in statuses else 3 if "skipped" in statuses else 0
    assert proc.returncode == expected and last.split("; ")[1].split(":")[0] == f"exit {expected}", last
    assert took < 90 + 5  # the deadline is the end: a stopped step's grace and the tables inside
    # tables.md: the report of every record the steps wrote
    records = report.load_records([str(out)])
    wrote = [s for s in steps if s.records and s.check is not None and "bench" not in s.name
             and rows[s.name][2] == "passed"]
    assert len(records) == len(wrote) > 0
    with open(out / "tables.md") as f:
        assert f.read().startswith(tables.tables(records, "en"))
    stand_ins = "tf32 ran as fp32; amp ran as bf16; fp16 ran as bf16"
    assert stand_ins in (out / "timings.txt").read_text()
    print(f"rehearsal: {took:.0f} s, exit {proc.returncode}")


def test_a_deadline_too_short_for_any_step_skips_them_all_and_says_so(tmp_path):
    proc, _ = gpu_checks(tmp_path, 1)
    rows, last = timings(tmp_path / "out")
    assert rows.pop("device")[2] == "passed" and rows.pop("tables")[2] == "passed"
    for name, (planned, actual, outcome) in rows.items():
        assert actual == "-" and re.fullmatch(
            r"skipped: (past the deadline at \d+ s \(1 s less 15 s kept for stopping and "
            r"the tables\)|needs (odd|photo)-data, which was skipped)",
            outcome), (name, outcome)
    assert proc.returncode == 3 and "exit 3; not passed: resnet50-train-tf32" in last
    with open(tmp_path / "out" / "tables.md") as f:
        assert f.read() == f"no result records under {tmp_path / 'out'}\n"


def test_a_step_that_overruns_gets_sigterm_then_sigkill_and_the_rest_go_on(tmp_path):
    """One step catches SIGTERM and writes what it has; one ignores it and is killed;
    a failing step is named by its error line, one that needs it is skipped, one that
    would end past the deadline is not started; the others run."""
    records = tmp_path / "records"
    records.mkdir()
    graceful = ("import json, signal, sys, time\n"
                "def stop(*_):\n"
                f"    with open({str(records / 'r.json')!r}, 'w') as f:\n"
                "        json.dump({'status': 'incomplete'}, f)\n"
                "    sys.exit(3)\n"
                "signal.signal(signal.SIGTERM, stop)\n"
                "time.sleep(30)\n")
    steps = [Step("graceful", [sys.executable, "-c", graceful], 0.2, records=str(records)),
             Step("stubborn", ["sh", "-c", "trap '' TERM; sleep 30"], 0.2),
             Step("fails", ["sh", "-c", "echo 'error: --x 1: bad; give 2' >&2; exit 2"], 1),
             Step("needs-it", ["true"], 1, needs=("fails",)),
             Step("too-long", ["true"], 100),
             Step("fits", ["true"], 1)]
    start = time.time()
    got = run_steps(steps, Deadline(start, 60, grace_s=1, margin_s=0.5, reserve_s=2),
                    str(tmp_path / "logs"), ROOT)
    took = time.time() - start
    assert got["graceful"].status == "stopped" and got["graceful"].records == [
        str(records / "r.json")]
    assert got["graceful"].why.startswith("stopped at its limit (3x its plan + 0.5 s)")
    assert got["stubborn"].status == "stopped" and 2 <= got["stubborn"].actual_s < 5
    assert (got["fails"].status, got["fails"].why) == (
        "failed", "exit 2: error: --x 1: bad; give 2")
    assert (got["needs-it"].status, got["needs-it"].why) == (
        "skipped", "needs fails, which was failed")
    assert got["too-long"].status == "skipped" and got["too-long"].why.startswith(
        "would end past the deadline: planned 100 s at ")
    assert got["fits"].status == "passed" and exit_status(got) == 1
    assert took < 10
    # a deadline stops a running step as its own limit does
    late = run_steps([Step("sleeps", ["sleep", "30"], None)],
                     Deadline(time.time(), 1, grace_s=1, reserve_s=0), str(tmp_path / "logs"),
                     ROOT)["sleeps"]
    assert late.status == "stopped"
    assert late.why.startswith("stopped at the deadline (1 s) after 1 s")


def scripts_parser(argv):
    """The parser of the entry point a step runs, and the arguments it gets."""
    args = [str(a) for a in argv[1:]]
    if args[:2] == ["-m", "torch.distributed.run"]:
        args = args[4:]
    if args[0] == "-m":
        module = {"common.bench": bench, "common.make_dataset": make_dataset}[args[1]]
        return module.get_args_parser(), args[2:]
    return load_script(args[0]).get_args_parser(), args[1:]


@pytest.mark.parametrize("dev", [H200, {**H200, "count": 8}, CPU], ids=["1gpu", "8gpu", "cpu"])
def test_every_command_of_both_plans_takes_its_flags(dev, tmp_path):
    """The full set never runs in the tests: its commands are parsed here, as quick's."""
    plan = Plan(dev, str(tmp_path), str(tmp_path / "data"))
    for step in plan.quick() + plan.full():
        if step.argv[0] != sys.executable:
            continue
        parser, args = scripts_parser(step.argv)
        if not step.not_here:
            cli.check_flags(parser.parse_args(args), parser)  # the rules that join flags too


def test_the_quick_plan_fits_its_deadline_on_an_h200_with_time_for_the_tables():
    plan = Plan(H200, "out", "data")
    steps = plan.quick()
    # the probe first; at the end the grace of a step stopped there, and the tables
    assert 10 + sum(s.planned_s for s in steps) <= Deadline(0, 480).steps_end
    assert all(s.build_s < s.planned_s for s in steps if s.build_s)
    assert "--compile-mode reduce-overhead" in " ".join(map(str, steps[2].argv))
    assert plan.compile_mode in cli.compile_modes()


def test_eager_and_engine_passes_must_agree_on_every_image():
    def record(val, infer):
        return [{"figures": {"val_pass": val, "infer_pass": infer}}]
    same = {"images": 65, "top1": 20.0}
    assert passes_agree(record(same, same), 65) is None
    assert passes_agree(record(same, {"images": 65, "top1": 18.4615}), 65) == (
        "figures.val_pass.top1 20.0000 (eager) and figures.infer_pass.top1 18.4615 (engine) "
        "differ on the same 65 images")
    assert passes_agree(record(same, {"images": 64, "top1": 20.0}), 65) == (
        "of 65 images, the eager pass counted 65 and the engine pass 64")
