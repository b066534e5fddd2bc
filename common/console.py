"""The console log: what global rank 0 prints (stdout and stderr: the header, progress
lines, the table row, warnings and errors) copied into a file in --out while it is still
printed, so a record keeps beside it how the run went.

The log's name is known from the start (the record's only at the end):
`console-<folder>-<script>-<time>-<pid>.log`; the record names it in `console_log`,
relative to the record's folder. Other ranks print as before and keep no file (torchrun's
`--log-dir` keeps every rank's). A Python-level copy: what C++ code writes to the file
descriptors directly is not in it. A write to the log that fails never stops the run:
the log is dropped with one warning and the run goes on printing; nor does a write to a
terminal that closed or a pipe whose reader died (the log still takes it).
"""
from __future__ import annotations

import contextlib
import datetime
import os
import sys
import traceback

from common import files
from common.launcher import world_from_env

_kept = {"path": None}  # the log of the run under way in this process, if any


def path():
    """The absolute path of the console log being kept, or None."""
    return _kept["path"]


class Tee:
    """A stream that writes to `stream` and to the log `log` (shared by stdout and stderr);
    a failed write to the log drops it, with one warning on `warn`."""

    def __init__(self, stream, log, warn):
        self.stream, self.log, self.warn = stream, log, warn

    def write(self, text):
        try:
            written = self.stream.write(text)
        except OSError:  # the terminal closed, or run_all's tee was killed: the log and
            written = len(text)  # the record still get what the run has to say
        if self.log["file"] is not None:
            try:
                self.log["file"].write(text)
            except (OSError, ValueError) as e:
                self.log["file"] = None
                cause = files.os_error_cause(e) if isinstance(e, OSError) else str(e)
                self.warn.write(f"warning: console log {self.log['path']}: cannot be "
                                f"written ({cause}); the run goes on without it\n")
        return written

    def flush(self):
        with contextlib.suppress(OSError):
            self.stream.flush()
        with contextlib.suppress(OSError, ValueError, AttributeError):
            self.log["file"].flush()

    def __getattr__(self, name):  # isatty, fileno, encoding ...: the real stream's
        return getattr(self.stream, name)


def log_name(script=None):
    """console-resnet50-train-20260101-120000-123456-4242.log for resnet50/train.py."""
    script = os.path.abspath(script or sys.argv[0])
    folder = os.path.basename(os.path.dirname(script))
    stem = os.path.splitext(os.path.basename(script))[0]
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    return f"console-{folder}-{stem}-{stamp}-{os.getpid()}.log"


def _is_rank0():
    try:
        return world_from_env()[0] == 0
    except Exception:  # a launcher's setting that is wrong is told later, by dist.setup
        return False


@contextlib.contextmanager
def kept(args):
    """Copy sys.stdout and sys.stderr into a log in args.out while the block runs, on
    global rank 0; the streams are put back, and the log flushed and closed, however the
    block ends. A log that cannot be opened is one warning: the run goes on."""
    if not _is_rank0():
        yield None
        return
    where = os.path.join(args.out, log_name())
    try:
        handle = open(where, "a", buffering=1, encoding="utf-8", errors="replace")
    except OSError as e:
        print(f"warning: console log {where}: cannot be opened "
              f"({files.os_error_cause(e)}); the run goes on without it", file=sys.stderr)
        yield None
        return
    log = {"file": handle, "path": where}
    real = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = Tee(real[0], log, real[1]), Tee(real[1], log, real[1])
    _kept["path"] = os.path.abspath(where)
    try:
        yield where
    except Exception:  # the interpreter prints it once the streams are put back
        with contextlib.suppress(OSError, ValueError, AttributeError):
            log["file"].write(traceback.format_exc())
        raise
    finally:
        sys.stdout, sys.stderr = real
        _kept["path"] = None
        with contextlib.suppress(OSError, ValueError):
            handle.close()


def name_in(record, out_dir):
    """The record's `console_log`: the log's path relative to the folder the record goes
    to, where a log is kept."""
    if path() is not None:
        record["console_log"] = os.path.relpath(path(), out_dir)
    return record
