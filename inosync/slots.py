"""How many rsync runs at once, and when many new ssh connections may open.

Pure functions of plain values, for the scheduler: no clock is read, nothing
sleeps.

max_parallel's default. A run to a node spends most of its time waiting:
for a network round trip, for the node's disk, for ssh; the source's CPU
is busy only while rsync lists and checksums. Eight runs per CPU keep the
CPUs busy through those waits, and the bounds keep a small machine from
being starved of runs (at least 8) and a big one from opening hundreds of
processes, connections and file lists at once (at most 128): past that the
uplink, not the number of runs, sets the pace.

Opening ssh connections. Each ssh node's first run opens its master
connection (sshcontrol.py): key exchange and authentication, a few round
trips and some CPU on both ends. A hundred nodes that all start at once (the
daemon's start, a restart) would do that in the same instant: a burst on
the network, on the source's CPU, and on firewalls and sshd's MaxStartups
where hosts share them. So the first OPEN_BURST hosts open at once and the
others follow OPEN_RATE per second, in an order fixed by a seed (the
source's host name) and the host's name: reproducible, and not the same
for every source that feeds the same nodes.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable

PER_CPU = 8
MIN_DEFAULT, MAX_DEFAULT = 8, 128
OPEN_BURST = 10  # ssh hosts whose first connection opens at once
OPEN_RATE = 20.0  # further hosts per second
# How the man page states the default (it is not one number on every machine).
DEFAULT_SHOWN = f"{PER_CPU} per CPU, at least {MIN_DEFAULT}, at most {MAX_DEFAULT}"


def cpus() -> int:
    """The CPUs this process may run on (a container's or cgroup's cpuset counts)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_max_parallel(cpu_count: int | None = None) -> int:
    """max_parallel when the config does not set it (see the module's text)."""
    count = cpus() if cpu_count is None else cpu_count
    return max(MIN_DEFAULT, min(MAX_DEFAULT, PER_CPU * count))


def _rank(seed: str, host: str) -> str:
    return hashlib.sha256(f"{seed}\0{host}".encode()).hexdigest()


def open_times(hosts: Iterable[str], seed: str, now: float) -> dict[str, float]:
    """When each ssh host's first connection may open: the first OPEN_BURST hosts
    at now, then one every 1/OPEN_RATE seconds, in the order of a hash of seed
    and host. Hosts given twice count once."""
    order = sorted(set(hosts), key=lambda h: (_rank(seed, h), h))
    return {host: now + max(0, i - OPEN_BURST + 1) / OPEN_RATE for i, host in enumerate(order)}
