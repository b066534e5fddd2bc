"""Flag types that say what they allow, and a parser whose every error is one line.

Every numeric flag of every entry point takes one of these as its argparse `type=`, so
`--epochs 0` or `--lr -1` is refused while parsing, before torch does any work, with
the flag's name and what it takes. Each type carries a value it refuses (`.refuses`),
so a test can try every flag. No torch here: `common.make_dataset` uses it too.
"""
from __future__ import annotations

import argparse
import math
import os


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (`prog: error: ...`, exit 2), not
    the usage block in front of it; --help still shows the usage."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}; see --help\n")


def number(kind, *, low=None, high=None, low_open=False, high_open=False, what=None):
    """An argparse type: `kind` (int or float) within [low, high] (an open end with
    low_open / high_open); None is no bound."""
    above = ("above" if low_open else "at least") if low is not None else None
    below = ("below" if high_open else "at most") if high is not None else None
    noun = what or ("a whole number" if kind is int else "a number")
    bounds = " and ".join(f"{word} {bound}" for word, bound in ((above, low), (below, high))
                          if word)
    allowed = f"{noun} {bounds}".strip()

    def convert(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: give {allowed}") from None
        if not math.isfinite(value) or (low is not None and (value < low or low_open and value == low)) \
                or (high is not None and (value > high or high_open and value == high)):
            raise argparse.ArgumentTypeError(f"{text!r}: give {allowed}")
        return value

    convert.__name__ = allowed  # argparse names the type by it in its own messages
    convert.refuses = str(low - 1 if low is not None else (high + 1 if high is not None else "x"))
    if low is not None and low_open:
        convert.refuses = str(low)
    return convert


positive_int = number(int, low=1)
non_negative_int = number(int, low=0)
positive_float = number(float, low=0, low_open=True)
non_negative_float = number(float, low=0)
fraction = number(float, low=0, high=1, high_open=True, what="a fraction")


def int_list(text):
    """'3000,6000,9000' -> (3000, 6000, 9000): positive whole numbers, ascending."""
    try:
        values = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        values = ()
    if not values or min(values) < 1 or list(values) != sorted(values):
        raise argparse.ArgumentTypeError(f"{text!r}: give ascending positive whole numbers "
                                         f"separated by commas, e.g. 3000,6000,9000")
    return values


int_list.refuses = "0,-5"


def local_ranks():
    """Processes per node, from the launcher's environment (1 without one)."""
    for key in ("LOCAL_WORLD_SIZE", "SLURM_NTASKS_PER_NODE"):
        try:
            return max(1, int(os.environ.get(key, "").split("(")[0]))
        except ValueError:
            continue
    return 1


def default_workers():
    """Loader processes per rank: the cores this process may use, shared by the ranks of
    the node, at most 8 (more than the cores makes torch warn, and slows the step)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(8, (cores or 1) // local_ranks()))
