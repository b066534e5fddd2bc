"""How common.bench measures and judges a comparison: rates timed between two device
synchronisations, both sides in paired rounds, and a verdict that says when the rounds
disagree."""
from __future__ import annotations

import statistics
import time


def timed_rate(step, steps, warmup, dev, images_per_step):
    """images/s of `steps` calls of step() after `warmup` untimed ones, from a
    synchronised start to a synchronised end."""
    for _ in range(warmup):
        step()
    dev.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    dev.synchronize()
    return steps * images_per_step / (time.perf_counter() - t0)


def alternate(repeat, *sides):
    """Each side's results over `repeat` rounds; in each round the sides run one after
    another, so that a round's results are paired (the same state of the machine)."""
    results = [[] for _ in sides]
    for _ in range(repeat):
        for i, side in enumerate(sides):
            results[i].append(side())
    return results


def row(name, ours, ref, unit, goal=None, note=""):
    """A table row from each side's results: a list per side (paired by round, from
    alternate()) or one figure. The figures are the medians; the ratio is theirs. The
    verdict is `met` when every round's ratio reaches the goal, `NOT met` when none
    does, and `within noise` when the rounds fall on both sides of it."""
    ours, ref = (v if isinstance(v, list) else [v] for v in (ours, ref))
    rounds = [a / b for a, b in zip(ours, ref) if a and b]
    mine = statistics.median(ours) if None not in ours else None
    theirs = statistics.median(ref) if None not in ref else None
    ratio = mine / theirs if mine and theirs else None
    verdict = ""
    if goal is not None and ratio is not None:
        verdict = ("met" if min(rounds) >= goal else "NOT met" if max(rounds) < goal
                   else "within noise")
    return {"comparison": name, "ours": mine, "reference": theirs, "unit": unit,
            "ratio": ratio, "rounds": rounds, "goal": goal, "verdict": verdict, "note": note}
