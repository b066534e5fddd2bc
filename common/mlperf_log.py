"""The MLPerf training log of a run: `:::MLLOG` lines that MLPerf's compliance checker
reads, written beside the record by mlperf_logging's mllog where it is installed.

The loop notes its epochs and evaluations (a few events an epoch, none per step);
rank 0 writes the lines once, with the record (record.finish), from the record's own
clock readings: run_start is the process start that e2e_time counts from, run_stop
lies e2e_time after it. Init is empty (init_start = init_stop = run_start) because
e2e_time counts the set-up: the log sets none of it aside. A resumed run's log covers
its own process, from its start, and its run_start names the step it resumed from.
What each line holds and the checker commands: docs/METRICS.md#the-mlperf-log.
"""
from __future__ import annotations

import io
import logging
import os
import re
import time

from common import files

# MLPerf's benchmark name for a model; the others, which MLPerf has none for, keep ours
BENCHMARKS = {"resnet50": "resnet"}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the rules the models without an MLPerf benchmark are checked against (--config)
RULES = os.path.join(ROOT, "common", "mlperf_rules", "open_common_image.yaml")
WITHOUT = "pip install mlperf-logging"  # what a run without the library is told


class RunLog:
    """The events of one training run, noted by every rank (a handful an epoch) and
    written by global rank 0 only. `start` is the perf_counter reading of the process
    start (clocks.E2E_START); each reading becomes wall-clock ms by one offset."""

    def __init__(self, run, args, optimizer, train_loader, val_loader, *, start):
        self.run, self.start, self.events = run, start, []
        self.offset = time.time() - time.perf_counter()
        self.facts = {
            "global_batch_size": (args.recipe or {}).get("global_batch"), "seed": args.seed,
            "opt_name": type(optimizer).__name__.lower(), "opt_base_learning_rate": args.lr,
            "gradient_accumulation_steps": args.grad_accum,
            "train_samples": _samples(train_loader), "eval_samples": _samples(val_loader)}
        self.org = args.mlperf_org

    def note(self, kind, key, value=None, **metadata):
        """One event now: kind 'start', 'end' or 'event' (mllog's three)."""
        self.events.append((time.perf_counter(), kind, key, value, metadata))

    def epoch_start(self, epoch):
        self.note("start", "epoch_start", epoch_num=epoch + 1)

    def epoch_stop(self, epoch):
        self.run.device.synchronize()  # the epoch's work is done, not only queued
        self.note("end", "epoch_stop", epoch_num=epoch + 1)

    def eval_start(self, epoch):
        self.note("start", "eval_start", epoch_num=epoch + 1)

    def eval_stop(self, epoch, result):
        """The evaluation's end and its top-1, as MLPerf gives it: a fraction."""
        self.note("end", "eval_stop", epoch_num=epoch + 1)
        self.note("event", "eval_accuracy", result["top1"] / 100, epoch_num=epoch + 1)

    def write(self, record, path):
        """Write the log of the run `record` ends (rank 0) atomically at `path`; returns
        (its file name, None), or (None, why) when no log was written."""
        try:
            from mlperf_logging.mllog.mllog import MLLogger
        except ImportError:
            return None, f"mlperf_logging is not installed; {WITHOUT} to get one"
        stream = io.StringIO()
        # a logger of its own, into the buffer: mllog's shared one prints to stdout
        logger = logging.Logger("benchmark.mlperf_log", logging.INFO)
        logger.addHandler(logging.StreamHandler(stream))
        # each line's call site is named from the suite's root (re.escape: a path, no pattern)
        out = MLLogger(logger=logger, root_dir=re.escape(ROOT))
        for perf, kind, key, value, metadata in self.lines(record):
            getattr(out, kind)(key, value, metadata=metadata or None,
                               time_ms=round((perf + self.offset) * 1000, 3))
        try:
            files.write_atomically(path, lambda f: f.write(stream.getvalue()))
        except OSError as e:
            return None, f"{path}: cannot be written: {files.os_error_cause(e)}"
        return os.path.basename(path), None

    def lines(self, record):
        """Every event of the log in order: the submission, init and run_start at the
        process start, the run's facts, the epochs and evaluations, run_stop."""
        fig, at = record["figures"], self.start
        e2e_here = fig["e2e_time"] - (fig.get("resumed") or {}).get("e2e_before_s", 0.0)
        resumed = {"resumed_from_step": fig["resumed"]["from_step"]} if fig.get("resumed") else {}
        head = [("submission_benchmark", BENCHMARKS.get(record["model"], record["model"])),
                ("submission_division", "open"),  # the seeds' recipe, not MLPerf's closed one
                ("submission_org", self.org),
                ("submission_platform", f"{record['device']['label']} {record['config']}"),
                # research: what ran is claimed neither on sale (onprem) nor rentable (cloud)
                ("submission_status", "research")]
        yield from ((at, "event", key, value, {}) for key, value in head)
        yield at, "event", "cache_clear", False, {
            "why": "the suite does not drop the operating system's file cache"}
        yield at, "start", "init_start", None, {}
        yield at, "end", "init_stop", None, {}
        yield at, "start", "run_start", None, resumed
        yield from ((at, "event", key, value, {}) for key, value in self.facts.items()
                    if value is not None)
        yield from self.events
        success = fig.get("stopped") == "target_acc"  # MLPerf's success: the target reached
        yield (at + e2e_here, "end", "run_stop", None,
               {"status": "success" if success else "aborted", "stopped": fig.get("stopped")})


def _samples(loader):
    """The images of a loader's dataset (every rank's), None without a dataset."""
    dataset = getattr(loader, "dataset", None)
    return len(dataset) if dataset is not None else None


def written(run, record, stem, out_dir):
    """Write the run's log (none for an inference run) as `stem`.mlperf.log in out_dir,
    name it in the record, and say where it is, or why there is none."""
    if run.mlperf_log is None:
        return
    if run.is_main:
        name, why = run.mlperf_log.write(record, os.path.join(out_dir, stem + ".mlperf.log"))
    else:  # the record's writer when rank 0 was lost (common/left_behind.py)
        name, why = None, "global rank 0 writes the MLPerf log, and it was lost"
    record["mlperf_log"] = name
    if why:
        record["mlperf_log_why"] = why
    print(f"mlperf log: {os.path.join(out_dir, name)}" if name else
          f"no MLPerf log written: {why}", flush=True)
