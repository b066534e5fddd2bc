"""What careful users break, beyond the common faults: a resume at the run's last step,
another model's checkpoint, a stale launcher environment, Ctrl-C before the training
loop, a foreign folder given to make_dataset, a record of odd shape, run_all's settings
checked before its first case. Each ends in what was measured, or in one line."""
import json
import os
import signal
import subprocess

import pytest
from conftest import ROOT, run_script
from test_nothing_lost import TINY, train_in_process

from common import bench, exits, launcher, make_dataset, report
from common.errors import UserError


def records(out):
    return [json.load(open(os.path.join(out, f))) for f in sorted(os.listdir(out))
            if f.endswith(".json")]


def test_a_resume_at_the_last_step_runs_no_step_past_it(tmp_path, capsys):
    """A checkpoint at the run's last step (the final one kept, or a stop that came in
    that step) goes on to the run's end: its evaluation and record, no extra step."""
    assert train_in_process(tmp_path, "--keep-checkpoint") == 0
    (final,) = [f for f in os.listdir(tmp_path / "checkpoints") if f.endswith("-final.pt")]
    final = str(tmp_path / "checkpoints" / final)
    assert train_in_process(tmp_path, "--resume", final) == 0
    resumed = [r for r in records(tmp_path) if r["figures"]["resumed"]]
    assert [r["figures"]["steps"] for r in resumed] == [3]
    assert resumed[0]["figures"]["stopped"] == "max_steps"
    capsys.readouterr()
    # the same checkpoint for a model of another class count: the first key that differs
    assert train_in_process(tmp_path, "--resume", final, "--num-classes", 4) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: --resume {final}: 'fc.weight' is (10, 2048), the model's is (4, 2048): a "
        f"checkpoint of another model or class count; resume with the command that wrote "
        f"it, or --resume never")


@pytest.mark.parametrize("env, message", [
    ({"RANK": "1", "WORLD_SIZE": "2"}, "RANK=1 of WORLD_SIZE=2 without MASTER_ADDR and "
                                       "MASTER_PORT: launch with torchrun"),
    ({"RANK": "0", "WORLD_SIZE": "two"}, "WORLD_SIZE='two': not a whole number"),
    ({"RANK": "0", "LOCAL_RANK": ""}, "LOCAL_RANK='': not a whole number"),
    ({"RANK": "2", "WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "1"},
     "RANK=2, LOCAL_RANK=0 do not fit WORLD_SIZE=2"),
    ({"SLURM_PROCID": "0", "SLURM_NTASKS": "x"}, "SLURM_NTASKS='x': not a whole number"),
])
def test_a_stale_launcher_environment_is_one_line(env, message):
    with pytest.raises(UserError, match=message):
        launcher.world_from_env(env)


def test_a_stale_launcher_environment_through_the_script(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("MASTER_ADDR", "MASTER_PORT")}
    proc = run_script(["resnet50/train.py", *TINY, "--out", tmp_path],
                      env={**env, "RANK": "1", "WORLD_SIZE": "2"})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: RANK=1 of WORLD_SIZE=2 without MASTER_ADDR and MASTER_PORT: launch with "
        "torchrun (it sets them all), or unset RANK and WORLD_SIZE for one process"]


def test_ctrl_c_outside_the_training_loop_is_one_line_and_exit_130(tmp_path, capsys):
    from common import cli
    parser = cli.train_parser("test", batch_size=4, global_batch=4, lr=0.01, epochs=1,
                              target_acc=0, warmup_steps=1)
    args = parser.parse_args(["--synthetic", "--max-steps", "3", "--warmup-steps", "1",
                              "--out", str(tmp_path)])

    def building_the_model(args, parser):
        raise KeyboardInterrupt
    with pytest.raises(SystemExit) as e:
        exits.entry(building_the_model, parser, args)
    assert e.value.code == 128 + signal.SIGINT
    assert capsys.readouterr().err.startswith("error: stopped by Ctrl-C; no record was written")


def test_empty_weights_are_a_mistake_not_random_weights(tmp_path):
    from common import cli
    parser = cli.infer_parser("test")
    args = parser.parse_args(["--synthetic", "--weights", "", "--out", str(tmp_path)])
    with pytest.raises(UserError, match="--weights: empty; give the path of the weights file"):
        cli.check_flags(args, parser)


def test_make_dataset_leaves_a_folder_of_the_users_alone(tmp_path):
    (tmp_path / "imagenet" / "train" / "n01440764").mkdir(parents=True)
    with pytest.raises(SystemExit) as e:
        make_dataset.main([str(tmp_path / "imagenet"), "--classes", "1"])
    assert e.value.code == 2
    assert not os.path.exists(tmp_path / "imagenet" / make_dataset.MARK)
    assert os.listdir(tmp_path / "imagenet" / "train") == ["n01440764"]
    # a dataset it wrote before is written again; a size that would not fit in memory is refused
    tiny = ["--classes", "1", "--train-per-class", "1", "--val-per-class", "1", "--size", "8"]
    make_dataset.main([str(tmp_path / "gen"), *tiny])
    make_dataset.main([str(tmp_path / "gen"), *tiny])
    with pytest.raises(SystemExit):
        make_dataset.main([str(tmp_path / "big"), "--size", "100000"])


def test_a_record_of_odd_shape_is_left_out_naming_it(tmp_path, capsys):
    rec = {"case": "train", "model": "resnet50", "figures": {}, "device": 5}
    (tmp_path / "odd.json").write_text(json.dumps(rec))
    assert report.load_records([str(tmp_path)]) == []
    assert "odd.json: a record these tables cannot show (TypeError" in capsys.readouterr().err


def test_bench_engine_pays_takes_a_model_and_a_count():
    for argv in (["resnet50", "many"], ["resnet5", "64"]):
        with pytest.raises(SystemExit) as e:
            bench.main(["--engine-pays", *argv])
        assert e.value.code == 2


@pytest.mark.parametrize("setting, message", [
    ({"CASES": "resnet50_train resnet50_infr"}, "run_all: CASES: no case 'resnet50_infr'"),
    ({"CASES": "resnet50_infer", "WEIGHTS_DIR": "FILE"}, "run_all: WEIGHTS_DIR=FILE: not a "
                                                         "directory"),
])
def test_run_all_checks_its_settings_before_the_first_case(tmp_path, setting, message):
    (tmp_path / "file").write_text("")
    setting = {k: v.replace("FILE", str(tmp_path / "file")) for k, v in setting.items()}
    env = {**os.environ, "OUT": str(tmp_path / "out"), "NPROC": "1", **setting}
    proc = subprocess.run(["bash", "run_all.sh"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "===" not in proc.stdout, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(
        message.replace("FILE", str(tmp_path / "file")))
