"""--help of every entry point answers before torch loads."""
import time

import pytest
from conftest import run_script

from common import cases

ENTRY_POINTS = [[script] for script in cases.scripts()]
ENTRY_POINTS += [["-m", module] for module in ("common.report", "common.make_dataset",
                                                "common.bench", "common.gpu_checks")]


@pytest.mark.parametrize("entry", ENTRY_POINTS, ids=lambda e: e[-1])
def test_help_answers_in_seconds(entry):
    start = time.perf_counter()
    proc = run_script(entry + ["--help"], timeout=60)
    took = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    assert "usage:" in proc.stdout and "options:" in proc.stdout
    # under 2 s on an idle machine; 5 s leaves room for a loaded one
    assert took < 5, f"{' '.join(entry)} --help took {took:.1f} s"
    print(f"{' '.join(entry)} --help: {took:.2f} s")


def test_help_of_the_dataset_maker_shows_defaults():
    out = run_script(["-m", "common.make_dataset", "--help"]).stdout
    assert "(default: 40)" in out and "(default: 96)" in out


def test_help_of_the_bench_ends_its_sentences():
    out = run_script(["-m", "common.bench", "--help"]).stdout
    assert "the settings to `--out` as JSON." in out
    assert "default: 64 on a CPU, 224 on an accelerator" in out
