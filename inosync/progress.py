"""How far a long rsync run has got, read from its own ``--info=progress2`` output.

rsync rewrites one line with carriage returns, about once per file sent
and once a second within a big file::

    "     1,200,000   2%  371.05MB/s    0:00:00 (xfr#6, ir-chk=1023/2345)"

bytes sent so far, percent of the total known so far, rate, time, files
sent, and files left to check of those found so far: "ir-chk" while its
incremental scan of the tree is still going (the total still grows: the
percent is of the part found so far), "to-chk" once the whole list is known.
Parsing is pure: the runner hands over the tail of the output file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_RECORD = re.compile(
    rb"\s*([\d.,]+)([KMGTP]?)\s+(\d+)%\s+(\S+)\s+\S+"
    rb"(?:\s+\(xfr#(\d+),\s+(ir|to)-chk=(\d+)/(\d+)\))?\s*$")


@dataclass(frozen=True)
class Progress:
    sent: int  # bytes sent (or found unchanged) so far
    percent: int  # of what rsync knows of so far
    rate: str  # as rsync prints it, e.g. "12.30MB/s"
    files: int  # files sent so far
    left: int | None  # files still to check, of ...
    total: int | None  # ... the files found so far
    scanning: bool  # rsync is still walking the tree: total and percent still grow

    def describe(self) -> str:
        """For the log and status: "45% (3.2 GB sent, 1,204 files, 5,000 of 80,000
        left to check, 12.30MB/s)"; no percent while the total is not known yet."""
        files = "1 file" if self.files == 1 else f"{self.files:,} files"
        counts = f"{human_bytes(self.sent)} sent, {files}"
        if self.scanning and self.total is not None:
            return f"still scanning the tree ({counts}, {self.total:,} found so far, {self.rate})"
        if self.left is not None and self.total is not None:
            counts += f", {self.left:,} of {self.total:,} left to check"
        return f"{self.percent}% ({counts}, {self.rate})"


def parse(tail: bytes) -> Progress | None:
    """The last whole progress record in this tail of rsync's output, if any."""
    for record in reversed(re.split(rb"[\r\n]", tail)[:-1]):  # the last piece may be cut
        m = _RECORD.match(record)
        if m:
            files, kind, left, total = m.group(5, 6, 7, 8)
            return Progress(
                sent=_number(m.group(1), m.group(2)), percent=int(m.group(3)),
                rate=m.group(4).decode(errors="replace"), files=int(files or 0),
                left=int(left) if left else None, total=int(total) if total else None,
                scanning=kind == b"ir")
    return None


# The summary of --info=stats1 (and -v, --stats), the last lines rsync prints:
#   "sent 1,500,544 bytes  received 57 bytes  3,001,202.00 bytes/sec"
_SENT = re.compile(rb"^sent ([\d.,]+)([KMGTP]?) bytes\s+received ")


def sent(tail: bytes) -> int | None:
    """The bytes rsync says it sent, from the tail of its output; None if it did
    not say (stopped, failed before the end, -q in rsync_args)."""
    for line in reversed(re.split(rb"[\r\n]", tail)):
        m = _SENT.match(line)
        if m:
            return _number(m.group(1), m.group(2))
    return None


def _number(digits: bytes, unit: bytes) -> int:
    """rsync's number: 1,234,567 (or 1.234.567 where the locale says so), or with
    rsync_args' -h a unit: 1.23M (-h: powers of 1000; -hh: 1024, read as 1000)."""
    if not unit:
        return int(digits.replace(b",", b"").replace(b".", b""))
    return int(float(digits.replace(b",", b".")) * 1000 ** (b"KMGTP".index(unit) + 1))


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")
