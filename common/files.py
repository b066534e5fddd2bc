"""Files the suite writes (records, checkpoints): atomically, readable by others as any
new file is, and with a failure named for what it is (disk full, read-only, no
permission) and where."""
from __future__ import annotations

import errno
import json
import os
import tempfile

from common.errors import UserError

# what a user can do about the usual reasons a write fails
CAUSES = {
    errno.ENOSPC: "the disk is full (ENOSPC); free space there",
    errno.EDQUOT: "the disk quota is used up (EDQUOT); free space there",
    errno.EROFS: "the file system is read-only (EROFS)",
    errno.EACCES: "no permission to write there (EACCES)",
    errno.EPERM: "no permission to write there (EPERM)",
    errno.ENOTDIR: "a part of the path is a file, not a directory (ENOTDIR)",
    errno.EEXIST: "a file stands where the directory should be (EEXIST)",
}


def os_error_cause(e):
    """The reason an OSError gives, in words a user acts on."""
    return CAUSES.get(e.errno) or (e.strerror or str(e))


def write_failure(what, path, e):
    """The UserError for a file that could not be written."""
    return UserError(f"{what} {path}: cannot be written: {os_error_cause(e)}; "
                     f"give --out a directory with space that you can write to")


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomically(path, write, binary=False):
    """write(file object) into a temporary file beside `path`, fsync, rename: a crash
    mid-write leaves the old file whole. The file gets the mode any new file gets
    (0666 less the umask), not mkstemp's 0600, so a shared results folder stays
    readable. An OSError is passed on as it is, for the caller to name."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.splitext(path)[1])
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_json(obj, path):
    """Write `obj` as JSON to path atomically (write_atomically); values JSON has no
    type for (a path, a dtype) as their text."""
    return write_atomically(path, lambda f: json.dump(obj, f, indent=1, default=str))


def check_writable(folder, flag="--out"):
    """Create `folder` and write a probe file in it (then remove it): a run finds out
    now, not after hours of work, that its results could not be kept."""
    if not folder:
        raise UserError(f"{flag}: empty; give {flag} a directory")
    try:
        os.makedirs(folder, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise UserError(f"{flag} {folder}: cannot be written: {os_error_cause(e)}; give "
                        f"{flag} a directory you can write to") from None
