"""Progress lines: at most one per interval, the pass's count, rate and eta, rank 0 only."""
from types import SimpleNamespace

from common import progress


def ticks(is_main, times):
    """A pass over 1000 images whose progress is asked at the given clock readings."""
    clock = iter(times)
    run = SimpleNamespace(is_main=is_main)
    return progress.pass_progress(run, "eval", 1000, every_s=5, clock=lambda: next(clock))


def test_a_pass_prints_at_most_every_interval_then_its_last_line(capsys):
    tick = ticks(True, [0.0, 1.0, 5.0, 6.0, 10.0, 12.5])
    for done in (100, 250, 300, 500):  # at 1, 5, 6 and 10 s
        tick(done)
    tick(1000, final=True)  # at 12.5 s
    assert capsys.readouterr().out.splitlines() == [
        "eval: 250/1,000 images, 50.0 img/s, eta 0:00:15",
        "eval: 500/1,000 images, 50.0 img/s, eta 0:00:10",
        "eval: 1,000 images in 12.5 s (80.0 img/s)",
    ]


def test_other_ranks_print_nothing(capsys):
    tick = ticks(False, [0.0, 6.0, 7.0])
    tick(500)
    tick(1000, final=True)
    assert capsys.readouterr().out == ""
