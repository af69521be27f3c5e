"""An rsync that counts how many of its kind run at once, for the config's ``rsync``.

``write_counting_rsync(path)`` writes a small Python program that stands in
for rsync: it runs the real rsync with the arguments it was given (a list,
never through a shell; its descriptors kept, as the daemon hands rsync wpath
as /proc/self/fd/N), and around it, under an flock of ``<path>.count``,
adds one to the number of runs in progress and takes it away again. Each
change is one line in ``<path>.log``: "start" or "end", the monotonic time,
the number running after it, the destination. ``hold`` seconds are spent
after rsync ends, inside the count: a short local run then still overlaps
with the others, so a limit that does not hold shows.

peak() reads the most that ever ran at once from that log: what happened,
counted by the runs themselves, not what the daemon says it did.
"""

from __future__ import annotations

from pathlib import Path

from helpers import RSYNC

PROGRAM = r'''#!/usr/bin/env python3
"""rsync that counts the runs in progress (written by tests/countrsync.py)."""
import fcntl, os, subprocess, sys, time

RSYNC = {rsync!r}
STATE = {state!r}
HOLD = {hold!r}


def count(step, what, dest):
    fd = os.open(STATE + ".count", os.O_RDWR | os.O_CREAT, 0o600)
    with os.fdopen(fd, "r+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        n = int(f.read() or 0) + step
        f.seek(0)
        f.truncate()
        f.write(str(n))
        f.flush()
        line = f"{{what}}\t{{time.monotonic():.6f}}\t{{n}}\t{{dest!r}}\n".encode()
        log = os.open(STATE + ".log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(log, line)
        finally:
            os.close(log)


def main():
    dest = sys.argv[-1] if len(sys.argv) > 1 else ""
    count(1, "start", dest)
    try:
        rc = subprocess.call([RSYNC, *sys.argv[1:]], close_fds=False)
        time.sleep(HOLD)
    finally:
        count(-1, "end", dest)
    sys.exit(rc if rc >= 0 else 128 - rc)


main()
'''


def write_counting_rsync(path: Path, hold: float = 0.3, rsync: str = RSYNC) -> Path:
    """Write the program to path (executable); ``<path>.log`` will hold its runs."""
    path.write_text(PROGRAM.format(rsync=rsync, state=str(path), hold=hold))
    path.chmod(0o755)
    return path


def events(path: Path) -> list[tuple[str, float, int, str]]:
    """Each start and end: (what, monotonic time, number running after it, destination)."""
    try:
        lines = path.with_name(path.name + ".log").read_text().splitlines()
    except FileNotFoundError:
        return []
    return [(what, float(t), int(n), dest) for what, t, n, dest in
            (line.split("\t") for line in lines)]


def peak(path: Path) -> int:
    """The most runs that were ever in progress at once."""
    return max((n for _, _, n, _ in events(path)), default=0)


def runs(path: Path) -> int:
    return sum(1 for what, *_ in events(path) if what == "start")
