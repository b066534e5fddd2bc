"""--redact: what a bundle's copies of records and logs leave out, never the originals.

Dropped, each for a mark that says what stood there: data paths (the records' data and
--data-dir) as <data>; home folders (this user's, and any /home/NAME or /Users/NAME) as
<home>; the user's name ($USER) as <user>; host names (the records' host, this machine's,
MASTER_ADDR's) as <host>; IPv4 addresses, and the values of --master-addr and
--rdzv-endpoint, as <address>. An IPv6 address is dropped where it is one of those
values, not found by its shape (it looks too much like a clock time).
"""
from __future__ import annotations

import getpass
import json
import os
import platform
import re
import socket

KINDS = ("data paths", "user names", "host names", "addresses")
IPV4 = r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)(?![\w.])"
ENDPOINT_FLAGS = r"(--(?:master[-_]addr|rdzv[-_]endpoint)[= ])(\S+)"
ADDRESS_ENV = ("MASTER_ADDR", "PET_MASTER_ADDR", "PET_RDZV_ENDPOINT")


def _literal(text):
    """A pattern for a path or address `text`, not inside a longer one."""
    return r"(?<![\w.-])" + re.escape(text) + r"(?![\w-])"


def _name(text):
    """A pattern for a host or user name `text` wherever it is not part of a longer word
    ('pytest-of-alice' holds the user name alice)."""
    return r"(?<![A-Za-z0-9])" + re.escape(text) + r"(?![A-Za-z0-9])"


def _data_paths(records):
    found = set()
    for rec in records:
        for path in (rec.get("data"), (rec.get("args") or {}).get("data_dir")):
            if isinstance(path, str) and os.path.isabs(path) and len(path) > 1:
                found.add(os.path.normpath(path))
    return found


def _hosts(records):
    names = {rec.get("host") for rec in records} | {socket.gethostname(), platform.node()}
    names |= {os.environ.get(k, "").rsplit(":", 1)[0] for k in ADDRESS_ENV}
    return {n for n in names if isinstance(n, str) and len(n) > 1 and not re.fullmatch(IPV4, n)}


def _user():
    try:
        return os.environ.get("USER") or getpass.getuser()
    except (KeyError, OSError):
        return None


def rules(records):
    """(kind, pattern, mark) in the order they apply: the longest texts first."""
    found = [("data paths", _literal(p), "<data>")
             for p in sorted(_data_paths(records), key=len, reverse=True)]
    home = os.path.expanduser("~")
    if home not in ("/", "~") and len(home) > 1:
        found.append(("user names", _literal(home), "<home>"))
    found.append(("user names", r"/(?:home|Users)/[^/\s\"']+", "<home>"))
    found.append(("addresses", ENDPOINT_FLAGS, r"\1<address>"))
    found += [("addresses", _literal(v), "<address>")
              for v in {os.environ.get(k) for k in ADDRESS_ENV} if v and len(v) > 1]
    found.append(("addresses", IPV4, "<address>"))
    found += [("host names", _name(h), "<host>") for h in sorted(_hosts(records), key=len,
                                                                     reverse=True)]
    user = _user()
    if user and len(user) > 1:
        found.append(("user names", _name(user), "<user>"))
    return [(kind, re.compile(pattern), mark) for kind, pattern, mark in found]


class Redactor:
    """Applies rules() to text and to the strings of a record; counts what it dropped."""

    def __init__(self, records):
        self.rules = rules(records)
        self.counts = dict.fromkeys(KINDS, 0)

    def text(self, text):
        for kind, pattern, mark in self.rules:
            text, n = pattern.subn(mark, text)
            self.counts[kind] += n
        return text

    def value(self, node):
        """A record's JSON value with every string (keys too) redacted."""
        if isinstance(node, dict):
            return {self.text(k): self.value(v) for k, v in node.items()}
        if isinstance(node, list):
            return [self.value(v) for v in node]
        return self.text(node) if isinstance(node, str) else node

    def copy(self, src, dest, is_record):
        """src redacted into dest: a record as JSON, any other file as text (bytes that
        are not UTF-8 kept as they are)."""
        with open(src, "rb") as f:
            text = f.read().decode("utf-8", "surrogateescape")
        if is_record:
            text = json.dumps(self.value(json.loads(text)), indent=1)
        else:
            text = self.text(text)
        with open(dest, "wb") as f:
            f.write(text.encode("utf-8", "surrogateescape"))

    def summary(self):
        dropped = ", ".join(f"{n} {kind}" for kind, n in self.counts.items())
        return (f"redacted in the bundle's copies (the originals are unchanged): {dropped}")
