"""How a script ends: `entry` runs its main and exits with the code main returns; a
user's error ends in one line and exit 2, a lost rank in one line and exit 1, never in
a traceback (--debug shows it). No torch at the top: an entry script parses its flags
and calls `entry` before anything heavy has loaded, so `--help` answers at once.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time

from common import console, files
from common.cli import check_flags
from common.errors import UserError


def script(get_args_parser, main):
    """A script's end, for one whose torch imports are inside main: read its command line
    (before anything heavy has loaded), then entry()."""
    parser = get_args_parser()
    entry(main, parser, parser.parse_args())


def entry(main, parser, args):
    """Check the flags already parsed, then run main(args, parser) and exit with the code
    it returns (0, or None: the script ends as usual); a UserError ends in one line and
    exit 2, a Ctrl-C that reaches here (common/stops.py takes the training loop's) in one
    line and exit 130. What rank 0 prints from then on is kept in --out too
    (common/console.py)."""
    try:
        check_flags(args, parser)
    except UserError as e:
        _user_error(e, args)
    with console.kept(args):
        return _run(main, parser, args)


def _user_error(error, args):
    """A user's mistake: its one line and exit 2 (with --debug, its traceback)."""
    if args.debug:
        raise error
    tell_error(one_line(error))
    quiet_exit(2)


def _run(main, parser, args):
    """main(args, parser) as entry runs it, its console kept."""
    try:
        code = main(args, parser)
    except UserError as e:
        _user_error(e, args)
    except KeyboardInterrupt:  # before the training loop takes Ctrl-C, or a second one
        if args.debug:
            raise
        tell_error("stopped by Ctrl-C; no record was written: run the same command "
                   "again (a training run resumes from its last checkpoint, if it wrote one)")
        quiet_exit(128 + signal.SIGINT)
    except Exception as e:
        rank, hangs = os.environ.get("RANK", "?"), waited_in_vain(e)
        if args.debug or not (hangs or lost_a_peer(e)):
            raise
        if hangs:  # a rank hangs, outside the loops (which say more: common/left_behind.py)
            tell_error(f"rank {rank}: a collective waited {args.dist_timeout:g} s "
                       f"(--dist-timeout) for a rank that did not come, and timed out; if "
                       f"a step can take that long, raise --dist-timeout")
        else:  # the rank that ended first has told why; this one only lost it
            tell_error(f"rank {rank}: another rank ended (its error is above), so this "
                       f"one stops too")
        quiet_exit(1)
    if code:
        quiet_exit(code)  # what went wrong is told already, beside the record
    return 0


def tell_error(line):
    """The one line on stderr and, under torchrun, in the error file it gives each rank
    (TORCHELASTIC_ERROR_FILE): torchrun's failure summary then shows the line as the
    rank's traceback, instead of a pointer to its docs."""
    print(f"error: {line}", file=sys.stderr, flush=True)
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return
    # torchelastic's format: {"message": {"message": ..., "extraInfo": {"py_callstack", ...}}}
    found = {"message": {"message": line, "extraInfo": {
        "py_callstack": f"error: {line}", "timestamp": str(int(time.time()))}}}
    try:
        files.write_atomically(path, lambda f: json.dump(found, f))
    except OSError:
        pass  # the line is on stderr; torchrun's summary then points to its docs


PEER_GONE = ("Connection closed by peer", "Connection reset by peer", "remote worker crashing")


def lost_a_peer(error):
    """True for a collective that failed because another rank's process ended."""
    import torch.distributed as torch_dist
    if not torch_dist.is_available() or not torch_dist.is_initialized():
        return False
    return isinstance(error, getattr(torch_dist, "DistNetworkError", ())) or (
        isinstance(error, RuntimeError) and any(s in str(error) for s in PEER_GONE))


def waited_in_vain(error):
    """True for a collective that timed out waiting for a rank (common/left_behind.py)."""
    import torch.distributed as torch_dist

    from common.device import Device
    return (torch_dist.is_available() and torch_dist.is_initialized()
            and Device.is_collective_timeout(error))


def quiet_exit(code):
    """Exit after an error already told in one line. The loader's workers end with the
    process; torch's SIGCHLD handler would take that for a worker that died and print a
    traceback from the interpreter's exit, so it is put back to the default first."""
    if hasattr(signal, "SIGCHLD"):
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    sys.exit(code)


def one_line(error):
    """The message of a UserError; one raised in a data loader worker comes back with
    the worker's traceback in front of it, and its last line is the message."""
    last = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
    prefix = f"{type(error).__module__}.{type(error).__name__}: "
    return last[len(prefix):] if last.startswith(prefix) else last
