"""What a rank does once a collective has timed out: who still answers, and its one line.

A rank that hangs (a stuck device, driver or link; a stopped process) leaves the others
waiting in their next collective until --dist-timeout, when the backend raises (gloo in
the call that waits; nccl, under the device shim's settings, in the next one). From then
on no collective runs: it would wait for the lost rank again. Each rank left waiting says
so through the process group's own store and waits a little for the others' word
(dist.answering); the ranks that gave none are the lost ones. The lowest rank that
answered writes the record, from the figures it has alone.
"""
from __future__ import annotations

from dataclasses import dataclass

from common import dist


@dataclass(frozen=True)
class LeftBehind:
    rank: int
    world_size: int
    waited_at: str           # 'step 26', 'the end of the validation pass', ...
    timeout_s: float
    answered: tuple | None   # the ranks that said they were there; None: the store is gone too

    @property
    def lost(self):
        """The ranks that gave no word, or None where the store could not be asked."""
        if self.answered is None:
            return None
        return [r for r in range(self.world_size) if r not in self.answered]

    def line(self, kept):
        """The rank's one line: where it waited, how long, who did not answer, and what
        the run keeps (`kept`, in words)."""
        return (f"rank {self.rank}: a collective at {self.waited_at} waited "
                f"{self.timeout_s:g} s (--dist-timeout) and timed out: {self._who()}; {kept}")

    def _who(self):
        lost = self.lost
        if lost is None:
            return ("which ranks did not answer cannot be told (the rendezvous store does "
                    "not answer either)")
        if not lost:  # every rank came, late: one was slow, not hung
            return "every rank answered afterwards; if a step can take that long, raise --dist-timeout"
        return f"rank{'s' if len(lost) > 1 else ''} {', '.join(map(str, lost))} did not answer"

    def record(self):
        """The record's `left_behind` block."""
        return {"waited_at": self.waited_at, "timeout_s": self.timeout_s,
                "answered": None if self.answered is None else list(self.answered),
                "lost": self.lost, "rank": self.rank}


def writes_record(block, rank):
    """Whether `rank` writes the record of a run left behind (its `left_behind` block):
    the lowest rank that answered does; where the store could not tell who answered,
    each rank left writes its own rather than none."""
    answered = block["answered"]
    return answered is None or rank == min(answered)


# how long the ranks a collective left waiting wait for each other's word: they timed out
# within a step of each other, and a step is shorter than --dist-timeout
ANSWER_S = 10


def after_timeout(run, timeout_s, waited_at):
    """This rank's LeftBehind, once the ranks that are still there have said so."""
    answered = dist.answering(run, min(ANSWER_S, timeout_s / 2))
    return LeftBehind(run.rank, run.world_size, waited_at, timeout_s,
                      None if answered is None else tuple(answered))
