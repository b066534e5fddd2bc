"""A folder of runs in one file that checks itself; no torch.

    python -m common.report runs/ --bundle runs.tar.gz [--redact]
    python -m common.report --verify runs.tar.gz

The bundle holds the records, the files each names (console log, MLPerf log, profile
table), the tables in English and Chinese (tables.en.md, tables.zh.md), the plots where
matplotlib is installed, and manifest.json: every file's sha256 and the suite version.
--verify checks every hash, works every table figure out again from the counts and clock
readings in the records (common/rederive.py), renders the tables again and compares them
with the bundled ones. A bundle is untrusted input: every member is checked before any is
read, and only regular files are written, into a temporary folder of its own.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import tarfile
import tempfile
import zlib
from collections import Counter

from common import files, plots, redact
from common.errors import UserError
from common.rederive import differs, rederive
from common.tables import tables

MANIFEST = "manifest.json"
RECORDS = "records"
TABLES = {"en": "tables.en.md", "zh": "tables.zh.md"}
NAMES_A_FILE = re.compile(r"(_log|_file|table)$")  # a record's key whose value is a file
# what --verify extracts at most: far above a folder of records, logs and plots, far below
# what fills a disk or takes hours to list
MAX_MEMBERS = 10_000
MAX_BYTES = 1 << 30


def named_files(rec, path):
    """(key, absolute path) of each file the record at `path` names (console_log,
    mlperf_log, figures.profile.table, ...): a string under a key ending in _log, _file or
    table that names a file, absolute or relative to the record's folder; one that is not
    there is said, and left out."""
    found = []

    def walk(node):
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value)
            elif isinstance(value, str) and value and NAMES_A_FILE.search(key):
                full = os.path.join(os.path.dirname(path), value)
                if os.path.isfile(full):
                    found.append((key, os.path.abspath(full)))
                else:
                    print(f"note: {path}: {key} {value} is not there; the bundle has "
                          f"no copy of it", file=sys.stderr)
    walk(rec)
    return found


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _copy(src, root, stage, redactor, is_record):
    """src copied into stage/records/ where it lies under root (a file outside it goes to
    records/_outside/); redacted on the way where asked, its name too; returns its
    member name."""
    rel = os.path.relpath(src, root)
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        tag = hashlib.sha1(src.encode()).hexdigest()[:8]
        rel = os.path.join("_outside", f"{tag}-{os.path.basename(src)}")
    member = "/".join([RECORDS, *rel.split(os.sep)])
    if redactor is not None:  # a folder's name can hold a host or user name too
        member = redactor.text(member)
    dest = os.path.join(stage, *member.split("/"))
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    if redactor is None:
        shutil.copyfile(src, dest)
    else:
        redactor.copy(src, dest, is_record)
    return member


def _stage(records, stage, redactor, out):
    """The records and the files they name, laid out in stage/records/ as under their
    common folder; returns {member: what it is}. Each is copied once and the bundle
    holds the copy: a log still growing, or a record that appears meanwhile, leaves it
    whole and agreeing with its manifest. A bundle `out` that is one of them (it would
    be written over) or a file that cannot be read is a UserError."""
    homes = [os.path.dirname(os.path.abspath(r["_path"])) for r in records]
    root = os.path.commonpath(homes)
    kinds = {}
    for rec in records:
        src = os.path.abspath(rec["_path"])
        for key, named in [("record", src)] + [n for n in named_files(rec, src) if n[1] != src]:
            if os.path.realpath(named) == os.path.realpath(out):
                raise UserError(f"--bundle {out}: is {named}, which the bundle holds; give "
                                f"the bundle a new name (e.g. runs.tar.gz)")
            try:
                kinds.setdefault(_copy(named, root, stage, redactor, key == "record"), key)
            except OSError as e:
                raise UserError(f"--bundle: {named}: cannot be read "
                                f"({e.strerror or e}); was it moved while the bundle "
                                f"was made? run --bundle again") from None
    return kinds


def _tables_and_plots(stage, kinds, load_records):
    """tables.en.md, tables.zh.md and the plots, from the staged records as --verify
    will load them; a missing matplotlib is said once."""
    staged = load_records([os.path.join(stage, RECORDS)])
    for lang, name in TABLES.items():
        with open(os.path.join(stage, name), "w", encoding="utf-8") as f:
            f.write(tables(staged, lang) + "\n")
        kinds[name] = "tables"
    try:
        drawn = plots.write_all(staged, os.path.join(stage, "plots"))
    except UserError:
        print("note: matplotlib is not installed: the bundle has no plots "
              "(pip install matplotlib adds them)", file=sys.stderr)
        drawn = []
    kinds.update({os.path.relpath(p, stage).replace(os.sep, "/"): "plot" for p in drawn})
    return staged


def make(records, out, load_records, redacting=False):
    """Write the bundle of `records` to `out` (a temporary file, then renamed); returns
    the line that says what it holds."""
    redactor = redact.Redactor(records) if redacting else None
    with tempfile.TemporaryDirectory() as stage:
        kinds = _stage(records, stage, redactor, out)
        staged = _tables_and_plots(stage, kinds, load_records)
        manifest = {
            "bundle": 1, "redacted": redacting,
            "redactions": redactor.counts if redactor else None,
            "suite_version": sorted({str(r.get("suite_version")) for r in staged
                                     if r.get("suite_version")}),
            "files": {m: {"sha256": sha256(os.path.join(stage, *m.split("/"))), "kind": k}
                      for m, k in sorted(kinds.items())}}
        with open(os.path.join(stage, MANIFEST), "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=1)

        def pack(fh):
            with tarfile.open(fileobj=fh, mode="w:gz") as tar:
                for member in [MANIFEST, *manifest["files"]]:
                    tar.add(os.path.join(stage, *member.split("/")), arcname=member,
                            recursive=False)
        try:
            files.write_atomically(out, pack, binary=True)
        except OSError as e:
            raise UserError(f"--bundle {out}: cannot be written: "
                            f"{files.os_error_cause(e)}; give a path you can write to") from None
    said = f"bundle: {out}: {len(staged)} records, {len(manifest['files'])} files"
    if redactor:
        said += "\n" + redactor.summary()
    return said


# --verify: a bundle is untrusted input

def refused(member):
    """Why a member may not be extracted, or None for a plain file or folder inside."""
    name = member.name
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "an absolute path"
    if ".." in parts:
        return "a path with '..', which climbs out of the folder"
    if member.issym() or member.islnk():
        return f"a {'symbolic' if member.issym() else 'hard'} link to {member.linkname!r}"
    if member.isdev() or member.isfifo():
        return "a device or fifo"
    if not (member.isfile() or member.isdir()):
        return "not a plain file"
    return None


def _listing(path):
    """The archive's members, read from their headers only; one past MAX_MEMBERS, or
    more than MAX_BYTES in all, is a UserError before anything is extracted."""
    members, size = [], 0
    try:
        with tarfile.open(path, "r:gz") as tar:
            while (m := tar.next()) is not None:
                members.append(m)
                size += m.size if m.isfile() else 0
                if len(members) > MAX_MEMBERS or size > MAX_BYTES:
                    raise UserError(f"--verify {path}: refused, nothing extracted: more "
                                    f"than {MAX_MEMBERS} members or {MAX_BYTES >> 20} MiB "
                                    f"in all, far more than --bundle writes")
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        why = " ".join(str(e).split()) or type(e).__name__
        raise UserError(f"--verify {path}: not a bundle: not a whole tar.gz ({why}); give "
                        f"a file that --bundle wrote") from None
    return members


def _members(path):
    """The archive's members, every one checked before anything is read; a file that is
    no bundle, or holds a member that may not be extracted, is a UserError naming it."""
    members = _listing(path)
    bad = [f"{m.name!r} ({why})" for m in members if (why := refused(m))]
    names = [m.name for m in members if m.isfile()]
    bad += [f"{n!r} (appears twice)" for n, k in sorted(Counter(names).items()) if k > 1]
    if bad:
        raise UserError(f"--verify {path}: refused, nothing extracted: members "
                        f"{', '.join(bad)}")
    if MANIFEST not in names:
        raise UserError(f"--verify {path}: not a bundle: no {MANIFEST} in it; give a file "
                        f"that --bundle wrote")
    return [m for m in members if m.isfile()]


def _extract(path, members, into):
    """Each checked regular file written by us under `into`; nothing else is created."""
    top = os.path.realpath(into)
    with tarfile.open(path, "r:gz") as tar:
        for m in members:
            dest = os.path.realpath(os.path.join(into, *m.name.split("/")))
            if not dest.startswith(top + os.sep):
                raise UserError(f"--verify {path}: refused: member {m.name!r} lands outside")
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with tar.extractfile(m) as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out)


def _unique(pairs):
    """A JSON object's keys, each once: a manifest that lists a file twice could hash one
    copy and point the check at the other."""
    twice = sorted(k for k, n in Counter(k for k, _ in pairs).items() if n > 1)
    if twice:
        raise ValueError(f"it lists {twice[0]!r} twice")
    return dict(pairs)


def _manifest(path, into):
    try:
        with open(os.path.join(into, MANIFEST), encoding="utf-8") as f:
            manifest = json.load(f, object_pairs_hook=_unique)
    except (UnicodeDecodeError, ValueError) as e:  # json.JSONDecodeError is a ValueError
        raise UserError(f"--verify {path}: not a bundle: {MANIFEST} is not JSON --bundle "
                        f"writes ({e})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise UserError(f"--verify {path}: not a bundle: {MANIFEST} lists no files")
    return manifest


def _listed(manifest, name, key):
    """A manifest entry's sha256 or kind; None where the entry is not what --bundle writes."""
    entry = manifest["files"].get(name)
    return entry.get(key) if isinstance(entry, dict) else None


def _hashes(manifest, members, into):
    """A line for each file whose sha256 is not the manifest's, missing, or unlisted."""
    found = {m.name for m in members} - {MANIFEST}
    listed = manifest["files"]
    lines = [f"{name}: in the manifest, not in the bundle" for name in sorted(set(listed) - found)]
    lines += [f"{name}: in the bundle, not in the manifest" for name in sorted(found - set(listed))]
    for name in sorted(set(listed) & found):
        if sha256(os.path.join(into, *name.split("/"))) != _listed(manifest, name, "sha256"):
            lines.append(f"{name}: sha256 differs from the manifest's (the file was changed)")
    return lines


def _cells(records, into):
    """A line for each re-derived figure that is not what the record says; the count."""
    lines, checked = [], 0
    for rec in records:
        name = os.path.relpath(rec["_path"], into).replace(os.sep, "/")
        try:
            found = rederive(rec)
        except (TypeError, ValueError, KeyError, AttributeError, ZeroDivisionError) as e:
            lines.append(f"{name}: its figures cannot be worked out ({type(e).__name__}: {e})")
            continue
        for cell, recorded, derived in found:
            checked += 1
            if differs(recorded, derived):
                lines.append(f"{name}: {cell} is {recorded!r} in the record, its counts and "
                             f"clocks give {derived!r}")
    return lines, checked


def _tables(records, into):
    """A line for each bundled table that is not what the bundled records render."""
    lines = []
    for lang, name in TABLES.items():
        try:
            with open(os.path.join(into, name), encoding="utf-8") as f:
                bundled = f.read()
        except (OSError, UnicodeDecodeError):
            lines.append(f"{name}: missing or unreadable")
            continue
        again = tables(records, lang) + "\n"
        if bundled != again:
            old, new = bundled.splitlines(), again.splitlines()
            at = next((i for i, (a, b) in enumerate(zip(old, new)) if a != b),
                      min(len(old), len(new)))
            lines.append(f"{name}: differs from the tables the bundled records render, "
                         f"first at line {at + 1}")
    return lines


def verify(path, load_records):
    """Check a bundle; returns (0, the one line that all agrees) or (1, a line per thing
    that differs). A file that is no bundle is a UserError."""
    if not os.path.isfile(path):
        raise UserError(f"--verify {path}: no such file; give a bundle --bundle wrote")
    members = _members(path)
    with tempfile.TemporaryDirectory() as into:
        _extract(path, members, into)
        manifest = _manifest(path, into)
        problems = _hashes(manifest, members, into)
        listed = [m for m in manifest["files"] if _listed(manifest, m, "kind") == "record"]
        # what is no record is named below by its manifest entry, not by a temporary path
        records = load_records([os.path.join(into, RECORDS)], skipped=[]) \
            if os.path.isdir(os.path.join(into, RECORDS)) else []
        loaded = {os.path.relpath(r["_path"], into).replace(os.sep, "/") for r in records}
        problems += [f"{m}: not a record the tables can show" for m in listed if m not in loaded]
        cells, checked = _cells(records, into)
        problems += cells + _tables(records, into)
    if problems:
        return 1, "\n".join(f"differs: {line}" for line in problems)
    return 0, (f"{path}: all agree: {len(manifest['files'])} files match their sha256, "
               f"{checked} figures of {len(records)} records re-derived from their counts "
               f"and clocks, both tables rendered again the same")
