"""Per-node replication state: what is pending, what is in flight, retries.

A Node holds no process; the daemon starts and reaps rsync children and tells
the node what happened. That keeps every decision here testable with plain
values (times are passed in, never read from a clock).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from .batch import PathSet
from .rsync import Outcome


class State(enum.Enum):
    IDLE = "idle"
    RUNNING = "running"
    WAITING = "waiting"  # failed; retries at retry_at


def backoff(failures: int, lo: float, hi: float) -> float:
    """Seconds to wait after the n-th failure in a row: lo, 2*lo, 4*lo ... hi."""
    if failures <= 0:
        return 0.0
    return min(hi, lo * 2 ** min(failures - 1, 30))


@dataclass
class Node:
    dest: str
    retry_min: float = 1.0
    retry_max: float = 60.0
    limit: int = 100_000
    state: State = State.IDLE
    pending: PathSet = field(init=False)
    inflight: PathSet | None = None
    failures: int = 0
    retry_at: float | None = None
    last_ok: float | None = None  # wall-clock time of the last success
    last_error: str | None = None
    runs: int = 0
    full_synced_at: float | None = None  # when the last whole-tree sync ended well
    last_full: float | None = None  # the same, wall-clock time
    changed_runs: int = 0  # runs in a row the source changed under
    failing_since: float | None = None  # when the current spell of failures began
    failed_for: float = 0.0  # how long the last spell of failures lasted
    # Counts for the metrics (metrics.py), since the daemon started: failed
    # runs in all (failures counts those in a row), runs that ended by kind,
    # and the bytes rsync said it sent.
    failures_total: int = 0
    list_runs: int = 0
    full_runs: int = 0
    bytes_sent: int = 0

    # After this many runs in a row that the source changed under, the next
    # one counts as a failure: a "vanished" error that never ends is not churn.
    CHANGED_RUNS_LIMIT = 5

    def __post_init__(self) -> None:
        self.pending = PathSet(self.limit)

    def ready(self, now: float) -> bool:
        """Should an rsync start for this node now?"""
        if not self.pending or self.state is State.RUNNING:
            return False
        return self.state is State.IDLE or (self.retry_at is not None and now >= self.retry_at)

    def resync_at(self, interval: float) -> float | None:
        """When this node's periodic whole-tree sync is due (None: not while it runs,
        fails or has one pending anyway, or when turned off)."""
        if not interval or self.full_synced_at is None or self.state is not State.IDLE \
                or self.pending.full:
            return None
        return self.full_synced_at + interval

    def begin(self) -> PathSet:
        """Move everything pending into flight and mark the node running."""
        self.inflight = self.pending.take()
        self.state = State.RUNNING
        self.runs += 1
        return self.inflight

    def ended(self, full: bool, sent: int | None) -> None:
        """Count a run that ended (whatever its outcome): its kind, what it sent."""
        if full:
            self.full_runs += 1
        else:
            self.list_runs += 1
        self.bytes_sent += sent or 0

    def pretended(self) -> None:
        """-p showed the run instead: idle again, and nothing recorded as synced."""
        self.inflight, self.state = None, State.IDLE

    def finish(self, outcome: Outcome, now: float, wall: float, error: str = "") -> bool:
        """Record how the run ended; return True if the node's health changed.

        A failed batch goes back into pending, merged with whatever arrived
        meanwhile, so nothing is lost however often a node fails.
        """
        was_failing = self.failures > 0
        batch, self.inflight = self.inflight, None
        if outcome in (Outcome.OK, Outcome.VANISHED):
            self.state, self.failures, self.retry_at = State.IDLE, 0, None
            if self.failing_since is not None:
                self.failed_for = now - self.failing_since  # for "recovered after N s"
            self.failing_since = None
            self.last_ok, self.changed_runs = wall, 0
            if batch is not None and batch.full:
                self.full_synced_at, self.last_full = now, wall
            return was_failing
        if batch is not None:
            self.pending.requeue(batch)
        if outcome is Outcome.SOURCE_CHANGED and self.changed_runs < self.CHANGED_RUNS_LIMIT:
            # Healthy: send the batch again soon, without counting a failure.
            self.changed_runs += 1
            self.retry_at = now + self.retry_min
            self.state = State.WAITING
            return False
        self.changed_runs = 0
        if not was_failing:
            self.failing_since = now
        self.failures += 1
        self.failures_total += 1
        lo = self.retry_max if outcome is Outcome.BROKEN else self.retry_min
        self.retry_at = now + backoff(self.failures, lo, self.retry_max)
        self.state = State.WAITING
        changed = not was_failing or error != self.last_error
        self.last_error = error
        return changed

    def abandon(self) -> None:
        """The run was stopped by us (shutdown, reload): keep its batch pending."""
        if self.inflight is not None:
            self.pending.requeue(self.inflight)
        self.inflight = None
        self.state = State.IDLE if not self.failures else State.WAITING

    def pending_summary(self) -> str:
        """What is waiting for this node, queued and in flight: "3 paths", "full sync"."""
        return self.all_pending().describe()

    def all_pending(self) -> PathSet:
        """Queued and in flight together."""
        both = PathSet(self.limit)
        both.update(self.pending)
        if self.inflight is not None:
            both.update(self.inflight)
        return both
