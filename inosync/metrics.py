"""Metrics for Prometheus: the text of ``metrics_file``, and when to write it.

node_exporter's textfile collector reads every ``*.prom`` file of a
directory and serves what it holds with the machine's own metrics. This
module is pure: ``render`` makes the text (exposition format 0.0.4) from a
snapshot of values the scheduler keeps, and ``Refresh`` decides when the
daemon writes it: soon after anything happened (at most once a second) and
at least every 15 seconds, so ``inosync_node_lag_seconds`` keeps growing on
a dashboard while the daemon sleeps. The daemon only writes the file.

Every series carries ``wpath`` (as configured): one inosync runs per tree
(treelock.py), so two instances writing to one collector directory never
give node_exporter the same series twice (which fails its whole scrape).
Counters count from the daemon's start (Prometheus' rate() and increase()
take a restart's reset as such).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

MIN_GAP = 1.0  # seconds between two writes, however much happens
MAX_GAP = 15.0  # seconds without a write, however little happens
SUFFIX = ".prom"  # the only files node_exporter's textfile collector reads

Sample = tuple[tuple[tuple[str, str], ...], float]  # (label pairs, value)


@dataclass(frozen=True)
class NodeValues:
    """One node's state and counts (counters since the daemon started)."""

    node: str  # as configured
    pending_paths: int  # paths waiting for it: collected, queued, in flight
    pending_full: bool  # a whole-tree sync is pending (pending_paths says nothing then)
    oldest_change: float | None  # monotonic time the oldest change not on it was seen
    last_success: float | None  # wall-clock time its last run got through; None: none yet
    failures: int  # runs that failed (or could not start), in all
    list_runs: int  # runs of a list of paths that ended, whatever their outcome
    full_runs: int  # whole-tree runs that ended
    bytes_sent: int  # as rsync's "sent N bytes" summary counts them
    up: bool  # not in a spell of failures


@dataclass(frozen=True)
class Snapshot:
    version: str
    wpath: str  # as configured: the label that tells one daemon's series from another's
    watches: int  # inotify watches held: the tree's directories, and those above it
    watch_limit: int | None  # fs.inotify.max_user_watches; None: not readable
    overflows: int  # inotify queue overflows since the start
    nodes: tuple[NodeValues, ...]


def escape(value: str) -> str:
    """A label value as the text format writes it: \\, " and line feeds escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _help(text: str) -> str:
    """A HELP text: backslash and line feeds escaped (quotes stay as they are)."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    return repr(float(value))  # shortest exact form: 1764571234.5678


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    return "{" + ",".join(f'{k}="{escape(v)}"' for k, v in pairs) + "}"


def _family(name: str, kind: str, text: str,
            samples: Iterable[Sample]) -> list[str]:
    lines = [f"# HELP {name} {_help(text)}", f"# TYPE {name} {kind}"]
    lines += [f"{name}{_labels(labels)} {_number(value)}" for labels, value in samples]
    return lines


def lag(node: NodeValues, now: float) -> float:
    """Seconds since the oldest change not yet on the node was seen; 0: none."""
    if node.oldest_change is None:
        return 0.0
    return max(0.0, now - node.oldest_change)


def render(snap: Snapshot, now: float) -> str:
    """The whole file, for the monotonic time now (what the lag counts to)."""
    tree = (("wpath", snap.wpath),)

    def per_node(value: Callable[[NodeValues], float]) -> list[Sample]:
        return [((*tree, ("node", n.node)), value(n)) for n in snap.nodes]

    lines: list[str] = []
    lines += _family("inosync_build_info", "gauge", "inosync's version; always 1.",
                     [((*tree, ("version", snap.version)), 1)])
    lines += _family("inosync_watches", "gauge",
                     "inotify watches held: one per directory of the tree, and on the "
                     "directories above it (a move of one is followed).",
                     [(tree, snap.watches)])
    if snap.watch_limit is not None:
        lines += _family("inosync_watch_limit", "gauge",
                         "fs.inotify.max_user_watches: watches one user may hold.",
                         [(tree, snap.watch_limit)])
    lines += _family("inosync_overflows_total", "counter",
                     "inotify queue overflows (events lost, the tree rescanned).",
                     [(tree, snap.overflows)])
    lines += _family("inosync_node_up", "gauge",
                     "1 unless the node's last run failed (it is retried with backoff).",
                     per_node(lambda n: n.up))
    lines += _family("inosync_node_pending_paths", "gauge",
                     "Paths changed but not yet on the node (collected, queued, in flight).",
                     per_node(lambda n: n.pending_paths))
    lines += _family("inosync_node_full_sync_pending", "gauge",
                     "1 while a whole-tree sync of the node is pending or running.",
                     per_node(lambda n: n.pending_full))
    lines += _family("inosync_node_lag_seconds", "gauge",
                     "Age of the oldest change not yet on the node; 0 when it has every one.",
                     per_node(lambda n: round(lag(n, now), 3)))
    succeeded = [n for n in snap.nodes if n.last_success is not None]
    lines += _family("inosync_node_last_success_timestamp_seconds", "gauge",
                     "When the node's last run got through (absent before the first one "
                     "since the daemon started).",
                     [((*tree, ("node", n.node)), n.last_success or 0.0) for n in succeeded])
    lines += _family("inosync_node_failures_total", "counter",
                     "Runs to the node that failed or could not start.",
                     per_node(lambda n: n.failures))
    lines += _family("inosync_node_runs_total", "counter",
                     "rsync runs to the node that ended, by kind (list: changed paths; "
                     "full: the whole tree).",
                     [((*tree, ("node", n.node), ("kind", kind)), count) for n in snap.nodes
                      for kind, count in (("list", n.list_runs), ("full", n.full_runs))])
    lines += _family("inosync_node_bytes_sent_total", "counter",
                     "Bytes rsync sent to the node, by its own summary (none with -q).",
                     per_node(lambda n: n.bytes_sent))
    return "\n".join(lines) + "\n"


class Refresh:
    """When to write the file: soon after a change, MIN_GAP apart at least, and
    MAX_GAP apart at most. Times are monotonic; nothing here reads a clock."""

    def __init__(self, min_gap: float = MIN_GAP, max_gap: float = MAX_GAP) -> None:
        self.min_gap, self.max_gap = min_gap, max_gap
        self.written: float | None = None  # when it was written last
        self.dirty = True  # something happened since

    def changed(self) -> None:
        self.dirty = True

    def next_write(self) -> float | None:
        """When a write is due (None: at once, it never was written)."""
        if self.written is None:
            return None
        return self.written + (self.min_gap if self.dirty else self.max_gap)

    def due(self, now: float) -> bool:
        at = self.next_write()
        return at is None or now >= at

    def wrote(self, now: float) -> None:
        self.written, self.dirty = now, False
