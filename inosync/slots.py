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
daemon's start, a restart, a reload that changes the ssh command, a network
blip that cut every connection) would do that in the same instant: a burst
on the network, on the source's CPU, and on firewalls and sshd's
MaxStartups where hosts share them. So new connections go through a token
bucket (Bucket): OPEN_BURST at once, then OPEN_RATE per second. Among the
hosts waiting, the order is fixed by a seed (the source's host name) and
the host's name (rank): reproducible, and not the same for every source
that feeds the same nodes.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

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


def rank(seed: str, name: str) -> str:
    """Where name stands among equals: a hash of the seed and the name."""
    return hashlib.sha256(f"{seed}\0{name}".encode()).hexdigest()


def open_times(hosts: Iterable[str], seed: str, now: float) -> dict[str, float]:
    """When each ssh host's connection may open if all want one at now: what a
    full Bucket allows, in the order of rank. Hosts given twice count once."""
    order = sorted(set(hosts), key=lambda h: (rank(seed, h), h))
    return {host: now + max(0, i - OPEN_BURST + 1) / OPEN_RATE for i, host in enumerate(order)}


@dataclass
class Bucket:
    """New ssh connections: at most burst at once, then rate per second."""

    burst: int = OPEN_BURST
    rate: float = OPEN_RATE
    tokens: float = field(init=False)  # full at first
    at: float | None = None  # when tokens was last brought up to date

    def __post_init__(self) -> None:
        self.tokens = float(self.burst)

    def _fill(self, now: float) -> None:
        if self.at is not None and now > self.at:
            self.tokens = min(float(self.burst), self.tokens + (now - self.at) * self.rate)
        self.at = now if self.at is None else max(self.at, now)

    def take(self, now: float) -> bool:
        """One connection may open now (and is counted), or not yet."""
        self._fill(now)
        if self.tokens >= 1.0 - 1e-9:  # a float sum of fractions may fall short of 1
            self.tokens -= 1.0
            return True
        return False

    def next_at(self, now: float) -> float:
        """When the next connection may open."""
        self._fill(now)
        return now + max(0.0, (1.0 - self.tokens) / self.rate)
