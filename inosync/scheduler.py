"""Every decision the daemon makes, as one state machine over values.

The loop (daemon.py) feeds it what happened, with the time it happened:
paths changed, a run ended, a signal arrived, the watcher overflowed or
lost its root, a reload finished, or just that time passed. Each input
returns the actions to carry out, in order: start a run on a node, signal a
node's run, rescan, check which directory wpath is, reload, write status,
exit. Nothing here reads a clock, touches a file or starts a process, so the
tests drive it through minutes of debounce, backoff and shutdown in
milliseconds.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Union

from . import deletepolicy, reloadplan, slots
from .batch import ROOT, PathSet, plural
from .config import Config
from .metrics import NodeValues
from .nodes import Node, State
from .replay import Move
from .rsync import Kind, Outcome, classify, describe, node_kind, ssh_host, unreadable
from .sshcontrol import connection_lost
from .temphold import TempHold
from .tempnames import looks_temporary

log = logging.getLogger("inosync")

GRACE = 10.0  # seconds running rsyncs get to finish on SIGTERM
KILL_AFTER = 3.0  # seconds between SIGTERM and SIGKILL to a run
STDERR_LINES = 5
PROGRESS_STEP = 5.0  # seconds between progress reports (most only for the terminal or none)
# Paths left out because rsync cannot read them: each is a rule of up to 4 KB on
# rsync's command line. Past this many, a run that finds more fails as before.
UNREADABLE_MAX = 100
# Seconds the wall clock may fall behind the monotonic one unnoticed: more than a
# preemption between reading the two under load, less than checkpoint.MARGIN.
CLOCK_STEP = 1.0
# Seconds a host's other nodes wait for the ssh connection its first run opens
# (host_connected) before each opens its own: a key exchange takes well under
# one on the links we serve; a master that never listens is not shared at all.
CONNECT_WAIT = 10.0


# ---- actions: what the loop must do


@dataclass(frozen=True)
class StartRun:
    """Start one rsync run for this node with this batch (full, or these paths)."""

    dest: str
    batch: PathSet
    # Paths of the source (relative to wpath) rsync cannot read: the run leaves
    # them out, so it neither reads them nor deletes them on the node.
    leave_out: tuple[str, ...] = ()
    # Files that may be rsync's temporary files (a relay's upstream writing them):
    # left out the same way, until they land or are let go (temphold.py).
    held: tuple[str, ...] = ()


@dataclass(frozen=True)
class SignalRun:
    dest: str
    signum: int


@dataclass(frozen=True)
class Rescan:
    """Rewatch the whole tree (events were lost), on root if given (wpath moved);
    then, if since is given (a wall-clock time), scan the tree for what changed
    since (scan.py) and answer with rescanned()."""

    root: str | None = None
    since: float | None = None


@dataclass(frozen=True)
class CheckRoot:
    """Find out which directory wpath now is; answer with root_checked()."""


@dataclass(frozen=True)
class Rewatch:
    """Try again to watch these directories (the watch limit left them unwatched)."""

    paths: tuple[str, ...]


@dataclass(frozen=True)
class Reload:
    """Read the configuration again; answer with reloaded() or reload_failed()."""


@dataclass(frozen=True)
class WriteStatus:
    pass


@dataclass(frozen=True)
class LogStatus:
    """Log one status line per node (SIGUSR1)."""


@dataclass(frozen=True)
class LogProgress:
    """Report how far the running full syncs got: to the terminal's live line if
    there is one, and to the log and statusfile when to_log."""

    to_log: bool = True


@dataclass(frozen=True)
class Exit:
    code: int


Action = Union[StartRun, SignalRun, Rescan, CheckRoot, Rewatch, Reload, WriteStatus, LogStatus,
               LogProgress, Exit]


# ---- answers the loop gives to CheckRoot


@dataclass(frozen=True)
class RootSame:
    """wpath is still the directory being watched."""


@dataclass(frozen=True)
class RootMoved:
    """wpath now leads to another directory that passed every start-up check."""

    real: str
    description: str  # for the log: old and new identities


@dataclass(frozen=True)
class RootLost:
    """wpath is gone or may not be followed (empty, other filesystem, overlaps)."""

    why: str


RootVerdict = Union[RootSame, RootMoved, RootLost]


def stderr_tail(text: str, lines: int = STDERR_LINES) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


@dataclass(frozen=True)
class Resumed:
    """A node that starts from its checkpoint: what changed since, to send first."""

    batch: PathSet
    wall: float  # the clock at start
    last_full: float | None  # when its last whole-tree sync ended (wall clock)


def _owed(path: str, sets: Iterable[PathSet]) -> bool:
    """Whether a node may still hold something at path that one of these sets
    (not yet delivered) is to change: path or a directory above it listed, or
    a whole-tree sync. A held file's exclude keeps that from deletion (review
    19a: a directory replaced by a file of temporary shape stayed on the nodes
    when the file then vanished, as no run had been seen to copy it)."""
    above = [path[:i] for i, c in enumerate(path) if c == "/"]
    return any(s.full or path in s.paths or any(a in s.paths for a in above) for s in sets)


class Scheduler:
    def __init__(self, config: Config, live: bool = False, seed: str = "") -> None:
        self.config = config
        self.seed = seed  # orders nodes among equals, e.g. many ssh hosts' first connections
        self.live = live  # a terminal shows a live progress line: update it every second
        self.progress_at: float | None = None  # next progress report while full syncs run
        self.progress_logged_at = 0.0
        self.nodes = {dest: self._new_node(dest) for dest in config.rnodes}
        self.retired: dict[str, Node] = {}  # removed by a reload, their run still ending
        self.collected = PathSet(config.max_pending)
        self.flush_at: float | None = None
        self.stopping = False
        self.exit_code = 0
        self.term_at: float | None = None  # when to SIGTERM the runs on shutdown
        self.kill_at: float | None = None
        self.stopped_by_us: set[str] = set()  # runs we signalled: their end is no failure
        self.unwatched: set[str] = set()  # directories the watch limit left without a watch
        self.limit_hit = False
        self.rewatch_at: float | None = None
        self.root_check_at: float | None = None  # when to ask which directory wpath is
        self.root_check_asked = False  # CheckRoot went out; no run starts until answered
        self.quick_check = False  # asked at once (overflow): a change of root gets a delay
        self.lost_events = False  # the queue overflowed: rescan once the root is known
        self.scan_asked = False  # a Rescan with a scan went out: no run until rescanned()
        self.full_by_reload: list[str] = []  # the nodes the last reload gave a full sync
        self.reloading = False  # a Reload went out: no run starts until it is answered
        self.exited = False
        # Paths rsync could not read (path -> why): left out of every run until
        # the next periodic resync tries them again. Said once each.
        self.unreadable: dict[str, str] = {}
        self.unreadable_said: set[str] = set()
        self.left_out: dict[str, frozenset[str]] = {}  # what each node's run leaves out
        # Checkpoints (checkpoint.py), in wall-clock time: when the last read of
        # the watcher began (what it has not read yet changed after that), when
        # events were lost that a full sync has not been collected for yet, and
        # since when a directory went without a watch (for good in this process).
        self.drained_at: float | None = None
        self.held_since: float | None = None
        self.blind_since: float | None = None
        # The wall clock's offset from the monotonic one, and how far it was set
        # back in all while running: a change made after a step back carries a
        # ctime that much older than the times noted before it (read_started).
        self.clock_offset: float | None = None
        self.clock_back = 0.0
        self.begun = False  # before begin() no node's state is known
        self.overflows = 0  # inotify queue overflows since the start (metrics.py)
        # Files of rsync's temporary shape, held back (temphold.py), and whether a
        # run may have read the tree since the read before the last one.
        self.temps = TempHold(limit=config.max_pending)
        self.ran_since_read = False
        # Run slots (max_parallel): since when each ready node waits for one (the
        # queue's order), the number of the last run each node started (turns
        # among equals). New ssh connections (slots.Bucket): the hosts whose next
        # run opens one, the nodes waiting for their turn, and when it comes.
        self.queued: dict[str, float] = {}
        self.started: dict[str, int] = {}
        self.run_number = 0
        self.connections = slots.Bucket()
        self.unconnected: set[str] = set()
        self.opening: set[str] = set()
        self.open_at: float | None = None
        # Hosts whose first run is opening the connection the others will share:
        # host -> when their other nodes stop waiting for it (host_connected).
        self.connecting: dict[str, float] = {}

    def _new_node(self, dest: str) -> Node:
        c = self.config
        return Node(dest, retry_min=c.retry_min, retry_max=c.retry_max, limit=c.max_pending)

    # ---- inputs

    def begin(self, now: float, compare: Iterable[str] = (),
              resumed: dict[str, Resumed] | None = None,
              temps: Iterable[tuple[str, float]] = ()) -> list[Action]:
        """The daemon starts: a full sync to every node, but for those resumed from
        their checkpoint (they get what changed since); those in compare (a
        replay there was never confirmed) compare file contents. temps: the
        files of rsync's temporary shape the start's walk found, with their
        ctimes: held back from every run (a stopped daemon may have sent them)."""
        resumed = resumed or {}
        self.begun = True
        self._hold_found(temps, now)
        for node in self.nodes.values():
            start = resumed.get(node.dest)
            if start is None:
                node.pending.set_start()
                node.pending.note_since(0.0)  # what the node holds is not known
                node.pending.note_seen(now)
                continue
            batch = self._hold_resumed(start.batch, now)
            if batch:  # empty: every change before the watches began is there
                node.pending.update(batch)
                node.pending.note_seen(now)  # changed while no inosync watched
            node.pending.drop_moves()  # no rename is known to lead from what it holds
            if start.last_full is not None:  # resync_interval counts from it, not from now
                node.full_synced_at = now - max(0.0, start.wall - start.last_full)
                node.last_full = start.last_full
            else:
                node.full_synced_at = now
        self._compare_contents(compare)
        self._to_connect(self.nodes)
        return self.tick(now)

    def _to_connect(self, dests: Iterable[str]) -> None:
        """The next runs to these nodes' ssh hosts open new connections: they go
        through the bucket (a start, new nodes, a new ssh command, a lost one)."""
        self.unconnected |= {ssh_host(d) for d in dests if node_kind(d) is Kind.SSH}

    def checkpoint(self, dest: str) -> float | None:
        """The wall-clock time before which every change of the tree is on dest:
        the start of the oldest change not yet delivered there (collected,
        pending, in flight) or not yet read; None if not known (a full sync of
        unknown need has not got through, no read happened yet)."""
        node = self.nodes.get(dest)
        if node is None or self.drained_at is None or not self.begun:
            return None
        bounds = [self.drained_at, self.held_since, self.blind_since, self.collected.since,
                  node.pending.since, node.inflight.since if node.inflight else None,
                  self.temps.since()]
        point = min(b for b in bounds if b is not None) - self.clock_back
        return point if point > 0 else None

    def read_started(self, wall: float, mono: float | None = None) -> None:
        """The loop is about to read the watcher to its end: what the read does not
        return happened after wall. Called after the previous read's events went
        in (changed(), overflowed()...), which began at the previous wall. mono:
        the monotonic clock at the same moment, to see the wall clock set back."""
        self.drained_at = wall
        self.ran_since_read = bool(self._running())  # a run still in flight reads on
        if mono is None:
            return
        offset = wall - mono
        if self.clock_offset is None or offset > self.clock_offset:
            self.clock_offset = offset  # first, or set forward: only later ctimes
        elif self.clock_offset - offset > CLOCK_STEP:
            self.clock_back += self.clock_offset - offset
            self.clock_offset = offset
            log.info("the clock was set back by %.1f s: checkpoints look back as much "
                     "further", self.clock_back)

    def _compare_contents(self, dests: Iterable[str]) -> None:
        for dest in dests:
            node = self.nodes.get(dest)
            if node is not None:
                node.pending.checksum = True
                log.info("%s: a move replay there was never confirmed; its full sync "
                         "compares file contents", dest)

    def changed(self, paths: Iterable[str], now: float, moves: list[Move] | None = None,
                temps: Iterable[tuple[str, bool]] = (),
                found: Iterable[tuple[str, float]] = (),
                deleted: Iterable[str] = ()) -> list[Action]:
        """The watcher saw these paths change (and these renames, in order):
        debounce them into one batch. The first change of a batch is news for
        the statusfile and systemd ("1 path waiting, sync in 10 s"). temps: the
        events of files of rsync's temporary shape, (path, gone), held back
        (temphold.py) unless a node may have them; found: such files a walk
        found (with their ctimes), held as possibly sent. deleted: the
        directories among them seen deleted or renamed away (PathSet.deleted)."""
        was_empty = not self.collected
        paths = list(paths)
        if self.temps.held:  # a directory made where a held file was, say
            for path in paths:
                self.temps.forget(path)
        self._hold_found(found, now)
        paths += self._admit_temps(temps, now, paths)
        # A change of wpath itself (its mode or times) is listed as "." (wpath
        # itself, not recursed: batch.plan_run), not as a whole-tree sync: that
        # would delete nothing under delete = 'running', and on a relay, whose
        # wpath gets its times set by every upstream batch naming a top-level
        # entry, it would walk the whole tree each time and replay no rename.
        was_full = self.collected.full
        for path in paths:
            self.collected.add("." if path == ROOT else path)
        for path in deleted:
            if path != ROOT:
                self.collected.add_deleted(path)
        self._deletions_lost(self.collected, was_full, "changed in one batch")
        if self.collected:  # these changes began after the read before the one that found them
            self.collected.note_since(self.drained_at if self.drained_at is not None else 0.0)
            self.collected.note_seen(now)
        if moves and self.config.replay_moves:
            self.collected.add_moves(moves)
        if self.flush_at is None and self.collected:  # (held files alone wait for nothing)
            self.flush_at = now + self.config.edelay
        return [WriteStatus()] if was_empty and self.collected else []

    def _admit_temps(self, temps: Iterable[tuple[str, bool]], now: float,
                     changed: Iterable[str] = ()) -> list[str]:
        """The paths of these temporary-shaped files' events that go out now."""
        temps = list(temps)
        if not temps:
            return []  # (no view of this batch's paths to build)
        since = self.drained_at if self.drained_at is not None else 0.0
        ran = self.ran_since_read or bool(self._running())
        owed = [PathSet.of(changed), self.collected,
                *(p for n in (*self.nodes.values(), *self.retired.values())
                  for p in (n.pending, n.inflight) if p is not None)]
        return [path for path, gone in temps
                if not self._holdable(path) or self.temps.seen(
                    path, gone, now, since, ran or (not gone and _owed(path, owed)))]

    def _hold_found(self, found: Iterable[tuple[str, float]], now: float) -> None:
        """Hold what a walk found, as exposed: runs before (of this daemon, whole
        syncs of unwatched directories, or of a daemon stopped since) may have
        copied it. One the user's rules decide is sent as any file."""
        for path, ctime in found:
            if self._holdable(path):
                self.temps.seen(path, False, now, ctime, True)

    def _holdable(self, path: str) -> bool:
        """Whether a run's exclude can hold path back: not if a rule of the user's
        decides it (theirs come first on the command line, and win)."""
        return not self.config.excludes.decides(path, False)

    def _hold_resumed(self, batch: PathSet, now: float) -> PathSet:
        """A start's batch from its checkpoint scan, without the files of temporary
        shape: held, as exposed (the stopped daemon may have sent them)."""
        if batch.full:
            return batch
        for path in [p for p in batch.paths
                     if looks_temporary(p.rpartition("/")[2]) and self._holdable(p)]:
            batch.paths.discard(path)
            if self.temps.seen(path, False, now, batch.since or 0.0, True):
                batch.paths.add(path)  # past the hold's limit
        return batch

    def overflowed(self, now: float) -> list[Action]:
        """Events were lost: once wpath is known to be the same, rewatch and send what
        a scan finds changed since the last read known complete (or everything)."""
        self.lost_events = True
        self.overflows += 1
        self._hold()  # the lost changes began after the last read; no checkpoint passes that
        self.collected.drop_moves()  # a rename may be among the lost events
        if self.root_check_at is not None or self.root_check_asked:
            return []  # a check is due anyway; its answer rescans
        self.quick_check = True
        return self._ask_root(now)

    def root_changed(self, now: float) -> list[Action]:
        """wpath or a directory above it moved, vanished or was unmounted.

        Which directory wpath is gets decided after the batch delay: a
        two-step swap (mv www www.old; mv www.new www) is over by then.
        Nothing is synced meanwhile.
        """
        if self.root_check_at is None and not self.root_check_asked:
            self.root_check_at = now + self.config.edelay
        return []

    def watch_limit_hit(self, paths: Iterable[str], now: float) -> list[Action]:
        """These directories got no watch: sync them whole, now and periodically."""
        new = set(paths) - self.unwatched
        if not new:
            if self.limit_hit and not self.unwatched:
                self.limit_hit = False
                log.info("every directory is watched again")
            return []
        if self.blind_since is None:  # changes there go unseen: checkpoints stop here
            self.blind_since = self.drained_at if self.drained_at is not None else 0.0
        if not self.limit_hit:
            self.limit_hit = True  # logged once, until every directory has a watch again
            log.error("inotify watch limit reached at %r: raise fs.inotify.max_user_watches; "
                      "until then such directories are synced whole, periodically",
                      sorted(new)[0])
        self.unwatched |= new
        if self.rewatch_at is None:
            self.rewatch_at = now
        return []

    def root_checked(self, verdict: RootVerdict, now: float) -> list[Action]:
        """The loop's answer to CheckRoot (and to a Rescan that failed)."""
        self.root_check_asked = self.scan_asked = False
        quick, self.quick_check = self.quick_check, False
        if quick and not isinstance(verdict, RootSame):
            return self.root_changed(now)  # give a swap under way the batch delay to finish
        lost, self.lost_events = self.lost_events, False
        if isinstance(verdict, RootLost):
            log.error("%s; stopping without syncing (nothing is deleted on the nodes)",
                      verdict.why)
            self.exit_code = 1
            return self._begin_stop(now, grace=0.0) + self.tick(now)
        actions: list[Action] = []
        if isinstance(verdict, RootMoved):
            log.warning("wpath %s now leads to another directory (%s): following it, with a "
                        "full sync to every node", self.config.configured_wpath,
                        verdict.description)
            self.config = dataclasses.replace(self.config, wpath=verdict.real)
            self.unreadable.clear()  # paths of the old tree
            self.temps = TempHold(limit=self.config.max_pending)  # so are the held files
            actions.append(Rescan(verdict.real))
            self._collect_everything(now, 0.0)  # another tree: the nodes hold none of it
        elif lost and self.held_since:  # the lost changes came after that read
            self.scan_asked = True
            return [Rescan(since=self.held_since)]  # held_since holds until rescanned()
        elif lost:
            self._lost_in_full(now, "no read of the watcher was known complete before")
            actions.append(Rescan())
        self.held_since = None  # carried by what was collected, if anything was lost
        return actions + self.tick(now)

    def rescanned(self, paths: list[str] | None, note: str, now: float) -> list[Action]:
        """The loop's answer to a Rescan with a scan: the paths that changed since
        (each sent whole, as the start's scan; note says how the scan went), or
        None when the scan cannot be trusted (note says why): everything."""
        self.scan_asked = False
        if paths is None:
            self._lost_in_full(now, note)
        else:
            for path in paths:
                if looks_temporary(path.rpartition("/")[2]) and self._holdable(path) and \
                        not self.temps.seen(path, False, now, self.held_since or 0.0, True):
                    continue  # held as the start holds them (lost events: exposed)
                self.collected.add(path)
            if paths:  # nothing found: nothing owed (an empty batch no run takes held it)
                self.collected.note_since(self.held_since)
                self.collected.note_seen(now)
            self.flush_at = now
            log.warning("inotify queue overflowed: events were lost; rewatched, and a scan "
                        "since the last complete read (%s) found %s changed: sent to every "
                        "node, no full sync", note, plural(len(paths), "path"))
        self.held_since = None
        return self.tick(now)

    def _lost_in_full(self, now: float, why: str) -> None:
        log.warning("inotify queue overflowed: events were lost; rewatched, full sync to "
                    "every node: %s", why)
        self._collect_everything(now, self.held_since)

    def run_ended(self, dest: str, returncode: int, stderr: str | None, now: float,
                  wall: float, took: float, what: str, pretended: bool = False,
                  settled: dict[str, str] | None = None, full: bool = False,
                  sent: int | None = None) -> list[Action]:
        """A node's run exited; stderr is None when it wrote too much to judge.
        settled: the paths rsync could not read, found in the source tree (see
        rsync.settle); without it, as unreadable() reads them from stderr.
        full: it was a whole-tree run; sent: the bytes rsync said it sent."""
        node = self.retired.pop(dest, None) or self.nodes.get(dest)
        if node is None:
            return []
        if pretended:  # -p: the command line was logged, nothing ran (nor is said to)
            self._opened(dest)  # no master either
            node.pretended()
            return self.tick(now)
        node.ended(full, sent)
        self._opened(dest)
        if dest in self.stopped_by_us:
            self.stopped_by_us.discard(dest)
            node.abandon()
            return [WriteStatus(), *self.tick(now)]
        outcome = classify(returncode, stderr or "")
        if connection_lost(returncode):  # sshcontrol retires the master: the retry opens one
            self._to_connect([dest])
        left_out = self.left_out.pop(dest, frozenset())
        if outcome is Outcome.RETRY and self._leave_out(returncode, stderr, left_out, settled):
            # Only what cannot be read failed, and rsync skipped every deletion
            # for it: run again without those paths, as if the source changed.
            node.finish(Outcome.SOURCE_CHANGED, now, wall)
            return [WriteStatus(), *self.tick(now)]
        if outcome is Outcome.OK and not left_out:
            self.unreadable_said.clear()  # read whole: say it again if it comes back
        error = "" if returncode in (0, 24) else describe(returncode)
        changed = node.finish(outcome, now, wall, error)
        tail = stderr_tail(stderr if stderr is not None else "(more than 1 MB of errors)")
        if outcome in (Outcome.OK, Outcome.VANISHED):
            log.info("%s: synced %s in %.1f s", dest, what, took)
        if outcome is Outcome.SOURCE_CHANGED and node.changed_runs:
            log.info("%s: the source changed during the run (%s); sending %s again in "
                     "%.1f s", dest, tail, what, node.retry_min)
        else:
            self._report(node, changed, tail, now)  # a failure, or the recovery from one
        return [WriteStatus(), *self.tick(now)]

    def _leave_out(self, returncode: int, stderr: str | None, left_out: frozenset[str],
                   settled: dict[str, str] | None = None) -> bool:
        """Whether the run failed only on paths it could read not, found new: they are
        left out of the next runs (and said once). A run that fails on paths it
        left out already is a real failure, as is one past UNREADABLE_MAX."""
        if returncode != 23 or stderr is None:
            return False
        found = unreadable(stderr) if settled is None else settled
        new = {path: why for path, why in found.items() if path not in left_out}
        if not new or len(self.unreadable) + len(new) > UNREADABLE_MAX:
            return False
        for path, why in sorted(new.items()):
            self.unreadable.setdefault(path, why)
            if path not in self.unreadable_said:
                self.unreadable_said.add(path)
                log.warning("cannot read %s on the source (%s); leaving it as it is on the "
                            "nodes, deletions elsewhere go on (tried again at the next "
                            "periodic resync)", os.path.join(self.config.wpath, path), why)
        return True

    def run_not_started(self, dest: str, outcome: Outcome, error: str,
                        now: float, wall: float) -> list[Action]:
        """The loop could not start the run it was asked to (no list file, no rsync)."""
        node = self.nodes[dest]
        self._opened(dest)
        self._report(node, node.finish(outcome, now, wall, error), "", now)
        return [WriteStatus(), *self.tick(now)]  # its slot is free for another node

    def root_not_same(self, dest: str, now: float) -> list[Action]:
        """The loop found, just before starting a run, that wpath is not the watched
        directory any more: the run is not started."""
        self._opened(dest)  # nor its connection
        self.nodes[dest].abandon()
        return self.root_changed(now)

    def signal(self, signum: int, now: float) -> list[Action]:
        name = signal.Signals(signum).name
        handler: Callable[[str, float], list[Action]] = getattr(self, f"_handle_{name[3:].lower()}")
        return handler(name, now)

    def reloaded(self, new: Config, now: float, compare: Iterable[str] = (),
                 same_tree: bool = True, rewatched: bool = False) -> list[Action]:
        """The new configuration is in effect (the loop switched the watcher if needed:
        rewatched). Only the nodes whose settings changed what they should hold get a
        full sync (reloadplan.py); the others go on with what they had pending.
        same_tree: wpath is the same directory as before; compare: nodes whose
        full sync compares contents (see begin)."""
        self.reloading = False
        old, self.config = self.config, new
        plan = reloadplan.full_syncs(old, new, same_tree)
        self.full_by_reload = list(plan)
        actions: list[Action] = []
        # A run started under a policy that deleted more would go on deleting
        # what the new one keeps: stopped, its batch sent again under the new.
        narrowed = old.delete != new.delete and new.delete is not True
        for dest, node in self.nodes.items():
            if node.state is not State.RUNNING:
                continue
            if dest not in new.rnodes:
                self.retired[dest] = node
            elif not narrowed or dest in self.stopped_by_us:
                continue
            self.stopped_by_us.add(dest)
            actions.append(SignalRun(dest, signal.SIGTERM))
        everything = set(plan) == set(new.rnodes)
        if not same_tree or old.excludes.patterns != new.excludes.patterns:
            self.unreadable.clear()  # paths of another tree, or read under other rules
        if rewatched:  # the new watcher watches every directory: those without one
            for path in () if everything else sorted(self.unwatched):
                self.collected.add(path)  # had no events: sent whole, as a rewatch does
            if self.unwatched and self.flush_at is None:
                self.flush_at = now
            self.unwatched, self.rewatch_at = set(), None
        if everything:  # every node gets the whole tree: nothing collected is needed
            self.collected = PathSet(new.max_pending)
            self.flush_at = None
        self.collected.limit = self.temps.limit = new.max_pending
        self.collected.drop_moves()
        added = [d for d in new.rnodes if d not in self.nodes and d not in self.retired]
        self.nodes = {d: self.nodes.get(d) or self.retired.pop(d, None) or self._new_node(d)
                      for d in new.rnodes}
        self._to_connect(new.rnodes if old.ssh != new.ssh else added)
        for node in self.nodes.values():
            node.retry_min, node.retry_max = new.retry_min, new.retry_max
            node.pending.limit = new.max_pending
        if plan:  # a new node's content is not known: held files' excludes keep it
            self.temps.expose_all()
        for dest, why in plan.items():
            self._full_after_reload(self.nodes[dest], now)
            log.info("reload: full sync to %s: %s", dest, why)
        unchanged = [d for d in new.rnodes if d not in plan]
        if unchanged:
            log.info("reload: unchanged nodes: no sync (%s)", ", ".join(unchanged))
        self._compare_contents(d for d in compare if d in plan)
        if not plan:
            log.info("reloaded; no sync: nothing that decides what the nodes hold changed")
        elif unchanged:
            log.info("reloaded; full sync to %s, no sync to %d", plural(len(plan), "node"),
                     len(unchanged))
        else:
            log.info("reloaded; full sync to %s", plural(len(plan), "node"))
        return actions + self.tick(now)

    def _full_after_reload(self, node: Node, now: float) -> None:
        """The deleting full sync of new settings (after a run in flight ends). A
        node failing under the old ones is tried again at once."""
        node.pending.set_start()
        node.pending.note_since(0.0)  # under settings whose effect on the node is not known
        node.pending.note_seen(now)
        node.pending.drop_moves()  # seen under the old settings (excludes, rsync_args)
        if node.state is State.WAITING:
            node.retry_at = now

    def reload_failed(self, error: str, now: float) -> list[Action]:
        self.reloading = False
        log.error("reload failed, keeping the old configuration: %s", error)
        return self.tick(now)

    def tick(self, now: float) -> list[Action]:
        """Time passed: whatever is due now."""
        if self.exited:
            return []
        actions = self._due(now)
        if self.exited:
            return actions
        return actions + self._progress(now)  # every tick moves progress_at on

    def _due(self, now: float) -> list[Action]:
        actions: list[Action] = []
        if self.connecting:  # a wait for a master is over: nobody looks for it any more
            self.connecting = {h: t for h, t in self.connecting.items() if now < t}
        if self.root_check_at is not None and now >= self.root_check_at and not self.stopping:
            actions += self._ask_root(now)
        if self.unwatched and self.rewatch_at is not None and now >= self.rewatch_at:
            actions += self._rewatch(now)
        self._release_temps(now)
        if self.flush_at is not None and now >= self.flush_at:
            self._flush()
        if self.stopping:
            actions += self._stop_runs(now)
            if not self._running():
                self.exited = True
                actions.append(Exit(self.exit_code))
            return actions
        if self.root_check_at is not None or self.root_check_asked or self.scan_asked:
            return actions  # until we know which directory wpath is, nothing is synced
        if self.reloading:
            return actions  # the node a run is for may be gone after it
        return actions + self._start_runs(now)

    def _start_runs(self, now: float) -> list[StartRun]:
        """Start the ready nodes that find a free slot (max_parallel), in turn."""
        ready = []
        for node in self.nodes.values():
            self._resync_if_due(node, now)
            if node.ready(now):
                ready.append(node)
        self.queued = {n.dest: self.queued.get(n.dest, now) for n in ready}
        free = self.config.max_parallel - len(self._running())  # retired runs hold one too
        starts: list[StartRun] = []
        self.opening, self.open_at = set(), None
        for node in sorted(ready, key=self._turn):
            if len(starts) >= free:
                break
            if not self._may_connect(node.dest, now):
                continue  # its turn to connect has not come: it holds no slot meanwhile
            del self.queued[node.dest]
            self.started[node.dest] = self.run_number = self.run_number + 1
            self.left_out[node.dest] = frozenset(self.unreadable)
            self.ran_since_read = True  # it may read a temporary file made from now on
            starts.append(StartRun(node.dest, node.begin(), tuple(sorted(self.unreadable)),
                                   self.temps.rules()))
        return starts

    def _may_connect(self, dest: str, now: float) -> bool:
        """Whether dest's run may start as far as new ssh connections go: its host
        is connected, or the bucket lets one more open now."""
        host = ssh_host(dest) if node_kind(dest) is Kind.SSH else None
        if host is None:
            return True
        held = self.connecting.get(host)  # (those past CONNECT_WAIT are gone: _due)
        if held is not None:  # a run to this host is opening the connection to share
            self.opening.add(dest)
            self.open_at = held if self.open_at is None else min(self.open_at, held)
            return False
        if host not in self.unconnected:
            return True
        if self.connections.take(now):
            # One run opens it; the host's other nodes wait until it is there
            # (ControlMaster=auto: started together, each would open its own).
            self.unconnected.discard(host)
            self.connecting[host] = now + CONNECT_WAIT
            return True
        self.opening.add(dest)
        self.open_at = self.connections.next_at(now)
        return False

    def awaited_hosts(self) -> set[str]:
        """The hosts whose first run is opening the connection that other nodes of
        theirs wait for: the daemon looks for its master (host_connected)."""
        if not self.connecting:
            return set()
        return {h for h in (ssh_host(d) for d in self.opening) if h in self.connecting}

    def hosts_to_check(self) -> set[str]:
        """The ssh hosts counted as connected, none of whose nodes runs, while
        runs may start soon: the daemon looks whether their master still
        listens (ControlPersist ends an idle one; masters_gone)."""
        if not self.collected and not any(n.pending for n in self.nodes.values()):
            return set()
        hosts = {ssh_host(d) for d in self.nodes if node_kind(d) is Kind.SSH}
        if not hosts:
            return set()
        busy = {ssh_host(n.dest) for n in self._running() if node_kind(n.dest) is Kind.SSH}
        return hosts - self.unconnected - self.connecting.keys() - busy

    def masters_gone(self, hosts: Iterable[str]) -> None:
        """These hosts' masters ended (idle past ControlPersist, or died): their
        next run opens a connection again, one at their turn, the others after it."""
        self.unconnected.update(hosts)

    def host_connected(self, host: str, now: float) -> list[Action]:
        """The connection a run to host opened is there to share (its master
        listens), or the runs to host share none: its other nodes may start."""
        if self.connecting.pop(host, None) is None:
            return []
        return self.tick(now)

    def _opened(self, dest: str) -> None:
        """dest's run ended or never started: if it was opening its host's
        connection, it is open now or never will be through that run; the host's
        other nodes wait no longer (a lost one is to open again: _to_connect)."""
        if node_kind(dest) is Kind.SSH:
            self.connecting.pop(ssh_host(dest), None)

    def _turn(self, node: Node) -> tuple[float, bool, float, float, int, str]:
        """Which ready node gets a slot first. The one that has waited longest for
        one: a node waits for at most the nodes queued before it, so none is ever
        starved. Among those queued at the same moment (a flush readies every
        node at once) the one furthest behind: one that needs a full sync, then
        the oldest change pending (wall clock, within one tick), the oldest
        success (never: first), then the one that started a run least recently,
        then a hash of the seed and its name (slots.rank)."""
        since = node.pending.since
        return (self.queued[node.dest], not node.pending.full,
                since if since is not None else float("inf"),
                node.last_ok if node.last_ok is not None else float("-inf"),
                self.started.get(node.dest, -1), slots.rank(self.seed, node.dest))

    def _release_temps(self, now: float) -> None:
        """Held files quiet (or seen) long enough go out as any changed path."""
        due = self.temps.due(now) if self.temps.held else []
        for path, since in due:
            self.collected.add(path)
            self.collected.note_since(since)
        if due:
            log.debug("let go %s of temporary shape, quiet or held long enough (e.g. %r)",
                      plural(len(due), "file"), due[0][0])
            if self.flush_at is None:
                self.flush_at = now

    def next_deadline(self) -> float | None:
        """When tick() has something to do next, or None: sleep until an input."""
        due = [t for t in (self.flush_at, self.term_at, self.kill_at, self.root_check_at,
                           self.progress_at, self.temps.next_due()) if t is not None]
        if self.unwatched and self.rewatch_at is not None:
            due.append(self.rewatch_at)
        if not self.stopping and self.root_check_at is None and not self.root_check_asked:
            # A node queued for a slot waits for a run to end, not for the clock: its
            # retry time, past, would make the loop spin until then.
            due += [n.retry_at for n in self.nodes.values() if n.state is State.WAITING
                    and n.pending and n.retry_at is not None and n.dest not in self.queued]
            if self.open_at is not None:  # a node waits for its turn to connect
                due.append(self.open_at)
            resync = [n.resync_at(self.config.resync_interval) for n in self.nodes.values()]
            due += [t for t in resync if t is not None]
        return min(due) if due else None

    # ---- status

    def status(self, now: float, wall: float) -> list[dict[str, object]]:
        rows: list[dict[str, object]] = []
        places, busy = self._queue_places(), len(self._running())
        for node in self.nodes.values():
            retry = None
            if node.state is State.WAITING and node.retry_at is not None:
                retry = wall + max(0.0, node.retry_at - now)
            pending = node.all_pending()
            pending.update(self.collected)  # every node gets it at the flush
            rows.append({
                "node": node.dest, "slot": self._slot_note(node, now, places, busy),
                "state": "queued" if node.dest in self.queued else node.state.value,
                "pending": self._pending_text(pending, now), "pending_paths": len(pending.paths),
                "pending_full": pending.full, "waiting_paths": len(self.collected.paths),
                "sync_in": self._sync_in(now), "failures": node.failures,
                "last_ok": node.last_ok, "last_error": node.last_error,
                "next_retry": retry, "runs": node.runs, "last_full_sync": node.last_full,
            })
        return rows

    def metric_values(self) -> tuple[NodeValues, ...]:
        """Each node's values for the metrics (metrics.render)."""
        values = []
        for node in self.nodes.values():
            # What the node is to get: queued, in flight, and what is collected
            # (every node gets it at the flush). Counted without copying a set
            # where one alone holds paths: a hundred nodes, a second apart.
            sets = [p for p in (node.pending, node.inflight, self.collected) if p]
            full = any(p.full for p in sets)
            count = 0 if full else len(sets[0]) if len(sets) == 1 else \
                len(set().union(*(p.paths for p in sets)))
            seen = [p.seen for p in sets if p.seen is not None]
            values.append(NodeValues(
                node.dest, count, full, min(seen) if seen else None, node.last_ok,
                node.failures_total, node.list_runs, node.full_runs, node.bytes_sent,
                up=node.failures == 0))
        return tuple(values)

    def _queue_places(self) -> dict[str, int]:
        """How many queued nodes are ahead of each one: sorted once (turns differ:
        each holds its name's rank), not one comparison with every other per node."""
        queued = sorted((d for d in self.queued if d in self.nodes),
                        key=lambda d: self._turn(self.nodes[d]))
        return {dest: place for place, dest in enumerate(queued)}

    def _slot_note(self, node: Node, now: float, places: dict[str, int],
                   busy: int) -> str | None:
        """Why a node with changes pending does not run: it waits for a run slot
        (max_parallel), or for its turn to open an ssh connection. None: neither.
        places: _queue_places(); busy: the runs in their slots."""
        held = self.connecting.get(ssh_host(node.dest)) \
            if node_kind(node.dest) is Kind.SSH else None
        if node.dest in self.opening and held is not None:
            return "waiting for the ssh connection a run to its host is opening, to share it"
        if node.dest in self.opening and self.open_at is not None:
            return (f"waiting to open its ssh connection ({len(self.opening)} waiting, "
                    f"next in {max(0.0, self.open_at - now):.1f} s: new connections are "
                    "spread out)")
        if node.dest in self.queued:
            return (f"waiting for a run slot ({places[node.dest]} ahead, {busy} of "
                    f"{self.config.max_parallel} running)")
        return None

    def _sync_in(self, now: float) -> float | None:
        """Seconds until what is collected goes to the nodes (None: nothing is)."""
        if not self.collected or self.flush_at is None:
            return None
        return max(0.0, self.flush_at - now)

    def _pending_text(self, pending: PathSet, now: float) -> str:
        """"2 paths", or with changes still collected during edelay "1 path waiting,
        sync in 28 s" or "3 paths (1 waiting, sync in 28 s)"."""
        sync_in = self._sync_in(now)
        if sync_in is None:
            return pending.describe()
        waiting = self.collected.describe() if not self.collected.full else "full sync"
        when = f"sync in {sync_in:.0f} s"
        if pending.full == self.collected.full and len(pending) == len(self.collected):
            return f"{waiting} waiting, {when}"
        return f"{pending.describe()} ({waiting.split()[0]} waiting, {when})"

    def pending_note(self) -> str:
        """What was left to do, for the last line of the log."""
        left = [f"{n.dest}: {n.pending_summary()}" for n in self.nodes.values()
                if n.pending or n.inflight is not None]
        if not left:
            return "nothing pending"  # what is known; a node may have drifted behind our back
        return "pending: " + ", ".join(left) + f" ({self._next_start('it')})"

    def _next_start(self, what: str) -> str:
        """What the next start does with what is pending at a stop: under delete =
        True it starts from the checkpoint (or a full sync), which sends it."""
        if self.config.delete is True:
            return f"the next start sends {what}"
        if deletepolicy.deletes(self.config.delete, deletepolicy.Phase.START).delete:
            return f"the next start's full sync covers {what}"
        return (f"the next start's full sync sends {what} but deletes nothing: "
                f"{deletepolicy.shown(self.config.delete)}")

    # ---- signals

    def _handle_term(self, name: str, now: float) -> list[Action]:
        if self.stopping:  # asked twice: do not wait for the grace period
            self.term_at, self.kill_at = now, now + KILL_AFTER
            return self.tick(now)
        log.info("stopping (%s); waiting up to %.0f s for running rsyncs", name, GRACE)
        return self._begin_stop(now) + self.tick(now)

    _handle_int = _handle_term

    def _handle_hup(self, name: str, now: float) -> list[Action]:
        if self.stopping:
            return []
        if not self.config.path:
            log.warning("SIGHUP ignored: one-off mode (inosync SRC DEST) has no configuration "
                        "file to read again")
            return []
        log.info("SIGHUP: reloading %s", self.config.path)
        self.reloading = True
        return [Reload()]

    def _handle_usr1(self, name: str, now: float) -> list[Action]:
        return [WriteStatus(), LogStatus()]

    # ---- the rest

    def _ask_root(self, now: float) -> list[Action]:
        self.root_check_at = None
        if self.root_check_asked or self.stopping:
            return []
        self.root_check_asked = True
        return [CheckRoot()]

    def _collect_everything(self, now: float, since: float | None) -> None:
        self.temps.expose_all()  # events were lost: a node may hold anything there
        self.collected.set_full()
        self.collected.note_since(0.0 if since is None else since)
        self.collected.note_seen(now)
        self.collected.drop_moves()
        self.flush_at = now

    def _hold(self) -> None:
        if self.held_since is None:
            self.held_since = self.drained_at if self.drained_at is not None else 0.0

    def _progress(self, now: float) -> list[Action]:
        """A progress report every progress_interval (every second on a terminal)
        while a full sync runs, counted from its start."""
        every = self.config.progress_interval
        full_runs = any(n.inflight is not None and n.inflight.full for n in self.nodes.values())
        if not every or not full_runs or self.stopping:
            self.progress_at = None
            return []
        # Each report also cuts rsync's progress output short (a record per file):
        # at least every PROGRESS_STEP seconds, whatever the interval.
        step = min(every, 1.0 if self.live else PROGRESS_STEP)
        if self.progress_at is None:
            self.progress_at, self.progress_logged_at = now + step, now
            return []
        if now < self.progress_at:
            return []
        self.progress_at = now + step
        to_log = now - self.progress_logged_at >= every - 1e-6
        if to_log:
            self.progress_logged_at = now
        return [LogProgress(to_log)]

    def _resync_if_due(self, node: Node, now: float) -> None:
        """The periodic whole-tree sync: repairs what changed on the node behind our back."""
        due = node.resync_at(self.config.resync_interval)
        if due is not None and now >= due:
            node.pending.set_full()
            self.unreadable.clear()  # try them again; a rerun leaves out what still fails
            log.info("%s: periodic full sync (resync_interval %g s)", node.dest,
                     self.config.resync_interval)

    def _rewatch(self, now: float) -> list[Action]:
        paths = tuple(sorted(self.unwatched))
        for path in paths:
            self.collected.add(path)  # no events came from there: sync it whole
        if self.flush_at is None:
            self.flush_at = now
        self.unwatched.clear()
        self.rewatch_at = now + self.config.rescan_interval
        return [Rewatch(paths)]  # what fails again comes back through watch_limit_hit

    def _flush(self) -> None:
        """The debounce delay is over: hand what was collected to every node."""
        batch = self.collected.take()
        self.flush_at = None
        for node in self.nodes.values():
            was_full = node.pending.full or batch.full
            node.pending.update(batch)
            self._deletions_lost(node.pending, was_full, f"are pending for {node.dest}")

    def _deletions_lost(self, paths: PathSet, was_full: bool, what: str) -> None:
        """Under delete = 'running', say when a set of paths became a whole-tree
        sync by its size (max_pending): that run deletes nothing of them."""
        if self.config.delete == "running" and paths.full and not was_full:
            log.warning("more than %d paths %s: a whole-tree sync, which deletes nothing "
                        "under delete = 'running' (deletions among them stay on the node); "
                        "raise max_pending", paths.limit, what)

    def _running(self) -> list[Node]:
        return [n for n in (*self.nodes.values(), *self.retired.values())
                if n.state is State.RUNNING]

    def _begin_stop(self, now: float, grace: float = GRACE) -> list[Action]:
        self.stopping = True
        self._flush()
        self.term_at = now + grace
        self.kill_at = now + grace + KILL_AFTER
        for node in self.nodes.values():
            if node.pending or node.inflight is not None:
                log.info("%s: %s pending at shutdown; %s", node.dest,
                         node.pending_summary(), self._next_start("them"))
        return []

    def _stop_runs(self, now: float) -> list[Action]:
        actions: list[Action] = []
        term = self.term_at is not None and now >= self.term_at
        kill = self.kill_at is not None and now >= self.kill_at
        for node in self._running():
            if term and node.dest not in self.stopped_by_us:
                self.stopped_by_us.add(node.dest)
                actions.append(SignalRun(node.dest, signal.SIGTERM))
            if kill:
                self.stopped_by_us.add(node.dest)
                actions.append(SignalRun(node.dest, signal.SIGKILL))
        if term:
            self.term_at = None
        if kill:
            self.kill_at = None  # sent; their exits come back through run_ended
        return actions

    def _report(self, node: Node, changed: bool, tail: str, now: float) -> None:
        """Log a node's failures once per change of health, not once per retry."""
        if node.state is State.WAITING:
            wait = (node.retry_at or 0) - now
            level = logging.ERROR if changed else logging.DEBUG
            log.log(level, "%s: rsync failed: %s%s; %s pending, retry %d in %.0f s",
                    node.dest, node.last_error, f": {tail}" if tail else "",
                    node.pending.describe(), node.failures, max(0.0, wait))
        elif changed:
            log.info("%s: recovered after %.0f s", node.dest, node.failed_for)

