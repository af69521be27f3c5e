"""The loop: one process, one thread, one poll().

It only moves data between the outside world and the scheduler: it waits
for a signal (through the wake-up pipe of signals.py; SIGCHLD says a child
ended), an inotify event or the scheduler's next deadline; it hands what
happened to the scheduler (scheduler.py), and carries out the actions it
gets back. Children are owned by the runner (runner.py), events come from
the watcher (watch.py). With nothing to do it sleeps in poll() without a
timeout: idle CPU is zero.

One change, top to bottom: poll() wakes -> watcher.read() -> scheduler.changed()
-> (edelay later) scheduler.tick() -> StartRun -> files_list + plan_run ->
runner.start() -> (SIGCHLD) runner.reap() -> scheduler.run_ended().
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import select
import shutil
import stat
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable

from . import __version__, deletepolicy, keptstore, nodecheck, paths, scan, slots, statefile
from . import checkpoint as checkpointmod
from . import config as configmod
from . import metrics as metricsmod
from . import replay as replaymod
from .batch import (
    PathSet,
    RunPlan,
    collapse,
    files_list,
    full_sync_above,
    may_force,
    plan_run,
    plural,
)
from .check import preflight
from .checkpoint import CheckpointError, Here, Record
from .confdiff import changes
from .config import Config, ConfigError
from .kept import before_renames
from .keptstore import KeptError, KeptFile
from .mounts import SpecialMounts, read_mounts
from .notify import Notifier
from .paths import Identity, identity
from .replay import Move, can_replay, replay_argv, replay_input
from .rsync import (
    Kind,
    Outcome,
    batch_argv,
    full_argv,
    node_kind,
    protect_rule,
    settle,
    ssh_host,
)
from .runner import Ended, Replay, Runner
from .scheduler import (
    Action,
    CheckRoot,
    Exit,
    LogProgress,
    LogStatus,
    Reload,
    Rescan,
    Resumed,
    Rewatch,
    RootLost,
    RootMoved,
    RootSame,
    RootVerdict,
    Scheduler,
    SignalRun,
    StartRun,
    WriteStatus,
)
from .signals import STOP, Signals
from .sshcontrol import ControlMasters, connection_lost
from .statusline import summary
from .treelock import TreeLock, TreeLockError
from .unverified import Marks
from .watch import Watcher, WatchEvents, WatchLimitError

log = logging.getLogger("inosync")

# Seconds between looks for the ssh master a host's first run opens, while its
# other nodes wait for it (scheduler.CONNECT_WAIT at most): no event says when.
CONNECT_POLL = 0.05
MAX_SLEEP_MS = 3_600_000  # poll() takes at most 2**31-1 ms; waking hourly costs nothing
WATCH_LIMIT = "/proc/sys/fs/inotify/max_user_watches"


def replace_file(path: str, data: bytes, sync: bool = False) -> None:
    """Replace path's contents atomically: readers never see half a file.
    With sync, the data is on disk before the rename (a crash leaves the old
    file or the new one, never an empty one).

    The temporary file is created beside the target with a random name and
    O_EXCL|O_NOFOLLOW (mkstemp): a symlink planted there is never followed.
    Only a regular file is replaced: a symlink, FIFO or directory at path
    means someone else put it there (config load refuses them too).
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        mode = stat.S_IFREG
    if not stat.S_ISREG(mode):
        raise OSError(errno.EINVAL, f"{paths.file_kind(mode)}, not a regular file", path)
    statefile.replace(path, data, mode=0o644, durable=sync)  # monitoring reads it


def write_statusfile(config: Config, state: str, nodes: list[dict[str, object]],
                     stopped: int | None = None, **extra: object) -> None:
    """The statusfile, if the config names one: state ("starting", "running"), or
    "stopped" with the exit status once stopped, extra fields, and the nodes."""
    if not config.statusfile:
        return
    # Typed: mypy 1.19 takes the type of the first branch alone and refuses the int.
    fields: dict[str, object] = ({"state": state} if stopped is None else
                                 {"state": "stopped", "exit_status": stopped})
    data = {"pid": os.getpid(), "wpath": config.wpath, "time": time.time(), **fields, **extra,
            "nodes": nodes}
    try:
        replace_file(config.statusfile, json.dumps(data, indent=1).encode())
    except OSError as e:
        log.warning("cannot write statusfile %s: %s", config.statusfile, e.strerror)


class Daemon:
    def __init__(
        self,
        config: Config,
        watcher: Watcher,
        signals: Signals,
        pretend: bool = False,
        on_reload: Callable[[Config], None] | None = None,
        live: Callable[[str], None] | None = None,
        tree_lock: TreeLock | None = None,
        full: bool = False,
    ) -> None:
        # The host name seeds the order in which many ssh hosts first connect.
        self.scheduler = Scheduler(config, live=live is not None, seed=os.uname().nodename)
        self.live = live  # shows a line of progress on the terminal, if there is one
        self.watcher = watcher
        self.signals = signals
        self.runner = Runner(pretend)
        self.masters = ControlMasters(config.ssh_control and not pretend, tidy=not pretend)
        self.on_reload = on_reload
        self.poller = select.poll()
        self._list_cache: tuple[tuple[set[str], bool], list[str]] | None = None
        self._popt_cache: tuple[str | None] | None = None  # (popt_rsync_line(),) this wake
        # The move replay: off for every node when an rsync option would fight
        # it; per node once it cannot run there; locally without perl.
        self.no_replay: dict[str, str] = {}
        self.perl_here: bool | None = None
        self.marks = Marks(config.state_dir)  # read at start only
        # The kept mount points, recorded as they change: a crash or a restart
        # must not forget them (keptstore.py). None: the record is not known.
        self.kept_file = KeptFile(config.state_dir)
        self.kept_recorded: set[str] | None = None
        watcher.on_kept = self.record_kept
        self.comparing: set[str] = set()  # nodes whose run compares contents
        self.notify = Notifier.from_environ()  # here: behind -d, in the pid that stays
        self.special = SpecialMounts()  # proc and the like mounted inside wpath since
        self.tree_lock = tree_lock  # one inosync per tree: moves with wpath (treelock.py)
        self.pretended = 0  # -p: the runs it showed instead
        # Checkpoints (checkpoint.py): --full ignores them at start; the last point
        # recorded per node; the mounts inside the tree at start (a record is
        # valid for those: another disk mounted there since shows old ctimes).
        self.full_start = full
        self.checkpoints = checkpointmod.Store(config.state_dir)
        self.saved: dict[str, float] = {}
        self.saved_when: dict[str, tuple[float, int]] = {}  # wall clock and node's runs then
        self.save_at: float | None = None
        self.mounts_of: tuple[str, list[list[str]]] | None = None
        self.clock_of: tuple[str, str | None] | None = None  # see _clock_elsewhere
        self.voided: set[str] = set()  # nodes whose record was removed (see void_checkpoint)
        # metrics_file (metrics.py): when to write it, where it was written last
        # (a reload that moves or drops it removes the old one), the last error.
        self.metrics_refresh = metricsmod.Refresh()
        self.metrics_at: str | None = None
        self.metrics_error: str | None = None
        self.clock_back = 0.0  # the scheduler's when the records were last written

    @property
    def config(self) -> Config:
        return self.scheduler.config

    def run(self) -> int:
        self.signals.starting = False  # from now on TERM winds down through the loop
        self.poller.register(self.signals.wake_r, select.POLLIN)
        self.poller.register(self.watcher.fileno(), select.POLLIN)
        dirs = len(self.watcher)
        off = replaymod.off_because(self.config.replay_moves, self.config.rsync_args,
                                    self.config.delete)
        log.info("inosync %s, config %s: watching %s (%s); initial sync to %s%s",
                 __version__, self.config.path or "none (one-off mode)", self.config.wpath,
                 "1 directory" if dirs == 1 else f"{dirs:,} directories",
                 plural(len(self.config.rnodes), "node"),
                 f"; renames sent as data, not replayed: {off}"
                 if off and self.config.replay_moves else "")
        self.write_status(time.monotonic())  # this process's pid, after -d's fork
        try:
            with self.masters, self.runner:
                compare = self.marks.marked(self.config.rnodes)
                unreadable = self.restore_kept(self.watcher, "from before the restart")
                if unreadable:  # it could name a copy the full sync would delete
                    log.error("%s; stopping without syncing", unreadable)
                if self.watcher.started_at is not None:
                    self.scheduler.read_started(self.watcher.started_at)
                resumed = {} if unreadable else self.resume(compare)
                code = self.carry_out([Exit(1)] if unreadable else
                                      self.scheduler.begin(time.monotonic(), compare, resumed,
                                                           self.watcher.take_found_temps()))
                self.notify.ready()  # the tree is watched: systemctl start may return
                self.announce()
                self.write_metrics(time.monotonic())
                while code is None:
                    self.wait()
                    actions = self.inputs(time.monotonic())
                    code = self.carry_out(actions)
                    if actions:  # nothing done, nothing to tell: no status per event
                        self.announce()
                    self.save_checkpoints(time.monotonic())
                    if actions:
                        self.metrics_refresh.changed()
                    self.write_metrics(time.monotonic())
                self.last_checkpoints()
                self.write_metrics(time.monotonic(), force=True)  # the state it stopped in
        finally:
            self.watcher.close()  # ours from the start (a reload may have replaced it)
        self.write_status(time.monotonic(), stopped=code)
        log.info("stopped (exit status %d); %s", code, self.scheduler.pending_note())
        if self.runner.pretend:  # the last line: nothing of all that happened
            log.info("dry run: nothing was copied and no file written; %s would have run",
                     plural(self.pretended, "rsync run"))
        return code

    def wait(self) -> None:
        due = [t for t in (self.scheduler.next_deadline(), self.runner.next_deadline(),
                           self.save_at, self.metrics_deadline()) if t is not None]
        if self.scheduler.awaited_hosts():  # no event says when ssh's master listens: look
            due.append(time.monotonic() + CONNECT_POLL)
        deadline = min(due) if due else None
        timeout = None
        if deadline is not None:
            timeout = min(MAX_SLEEP_MS, max(0, int((deadline - time.monotonic()) * 1000) + 1))
        for fd, _ in self.poller.poll(timeout):
            if fd == self.signals.wake_r:
                self.signals.drain()

    def inputs(self, now: float) -> list[Action]:
        """Everything that happened since the last wait, handed to the scheduler."""
        s = self.scheduler
        self._list_cache = self._popt_cache = None
        actions: list[Action] = []
        signums = self.signals.take()
        for signum in signums:
            actions += s.signal(signum, now)
        self.runner.expire(now)
        actions += self.reaped(now)
        for host in s.awaited_hosts():
            if self.masters.connected(host):
                actions += s.host_connected(host, now)
        s.masters_gone([h for h in s.hosts_to_check() if not self.masters.connected(h)])
        read_at, read_mono = time.time(), time.monotonic()
        events = self.watcher.read()
        if signums or events.paths or events.unwatched or events.overflowed \
                or events.root_changed:  # not a wake for nothing (an event above wpath)
            self.metrics_refresh.changed()
        self.record_kept()  # a place found unmounted: recorded before any run
        if events.paths or events.temps or events.found:
            actions += s.changed(events.paths, now, events.moves, events.temps, events.found,
                      events.deleted)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%d change(s), e.g. %r; %s collected%s", len(events.paths),
                          (events.paths or [p for p, _ in events.temps + events.found])[0],
                          s.collected.describe(), self._temps_note(events))
        if events.unwatched:
            actions += s.watch_limit_hit(events.unwatched, now)
        if events.overflowed:
            actions += s.overflowed(now)
        if events.root_changed:
            actions += s.root_changed(now)
        s.read_started(read_at, read_mono)  # after this read's events went in (began before)
        return actions + s.tick(now)

    def _temps_note(self, events: WatchEvents) -> str:
        """For -v: how many events were of rsync's temporary files, and how many
        such files are held back now."""
        if not events.temps and not events.found:
            return ""
        return (f"; {plural(len(events.temps) + len(events.found), 'event')} of "
                f"temporary-shaped files, "
                f"{len(self.scheduler.temps)} held back")

    def reaped(self, now: float) -> list[Action]:
        actions: list[Action] = []
        ended = self.runner.reap()
        if ended:
            self.metrics_refresh.changed()
        for e in ended:
            self.pretended += e.pretended
            self.replay_ended(e)
            if e.dest in self.comparing:
                self.comparing.discard(e.dest)
                if e.returncode in (0, 24) and not e.pretended:
                    self.marks.clear(e.dest)  # what a replay moved is confirmed
            actions += self.scheduler.run_ended(e.dest, e.returncode, e.stderr, now,
                                                time.time(), e.took, e.what, e.pretended,
                                                self._settle(e), full=e.full, sent=e.sent)
            if node_kind(e.dest) is Kind.SSH and connection_lost(e.returncode):
                self.masters.connection_failed(ssh_host(e.dest))  # else every retry reuses it
        if ended and self.live is not None and not self.progress_texts():
            self.live("")  # the last full sync ended: no progress line left to show
        return actions

    def carry_out(self, actions: Iterable[Action]) -> int | None:
        """Do each action in order, and what the scheduler answers to it; the exit
        code once it says so."""
        queue = deque(actions)
        while True:
            while queue:
                action = queue.popleft()
                if isinstance(action, Exit):
                    return action.code
                queue.extend(self.do(action, time.monotonic()))
            queue.extend(self.reaped(time.monotonic()))  # runs that ended at once (-p)
            if not queue:
                return None

    def do(self, action: Action, now: float) -> list[Action]:
        s, w = self.scheduler, self.watcher
        if isinstance(action, StartRun):
            return self.start(action, now)
        if isinstance(action, SignalRun):
            self.runner.signal(action.dest, action.signum)
        elif isinstance(action, CheckRoot):
            return s.root_checked(self.check_root(), now)
        elif isinstance(action, Rescan):
            moved = self._relock(action.root)
            if moved:
                return s.root_checked(RootLost(moved), now)
            try:
                w.rescan(action.root)
            except OSError as e:  # no inotify instance left, say: nothing is watched now
                return s.root_checked(RootLost(f"cannot watch {self.config.wpath} again: "
                                               f"{e.strerror}"), now)
            if action.root is not None:  # a swapped-in tree: none of the old one's places
                self.apply_kept(w, set(), "")
            actions = s.watch_limit_hit(w.take_unwatched(), now)
            if action.since is not None:  # after the rewatch: what changes later, it sees
                actions += s.rescanned(*self.scan_lost(action.since), now)
            return actions
        elif isinstance(action, Rewatch):
            w.rewatch(action.paths)
            return s.watch_limit_hit(w.take_unwatched(), now)
        elif isinstance(action, Reload):
            self.notify.reloading()
            try:
                return self.reload(now)
            finally:
                self.notify.ready()  # a failed reload keeps the old config: ready too
        elif isinstance(action, WriteStatus):
            self.write_status(now)
        elif isinstance(action, LogStatus):
            for line in self.status_lines(now):
                log.info("status: %s", line)
        elif isinstance(action, LogProgress):
            self.report_progress(action.to_log, now)
        return []

    # ---- checkpoints: where each node is, across restarts (checkpoint.py)

    def resume(self, compare: set[str]) -> dict[str, Resumed]:
        """The nodes that start from their checkpoint, with what changed since
        (one scan of the tree for all); the others get a full sync. One line
        per node says which, and why."""
        c, w = self.config, self.watcher
        wall, boot = time.time(), checkpointmod.boot_clock()
        reasons: dict[str, str] = {}
        records: dict[str, Record] = {}
        lags: dict[str, float] = {}  # how far the clock was set back since each record
        general = "--full was given" if self.full_start else self.no_checkpoints()
        for dest in c.rnodes:
            why = general or ("a move replay there was never confirmed" if dest in compare
                              else None)
            record = None
            if why is None and w.identity is not None:
                try:
                    record = self.checkpoints.load(dest)
                except CheckpointError as e:
                    why = str(e)
                else:
                    here = Here(dest, w.root, w.identity, self.settings(), wall, boot=boot,
                                node_id=checkpointmod.node_identity(dest))
                    why = checkpointmod.refuse(record, here)
                    if why is None and record is not None:
                        lags[dest] = checkpointmod.clock_lag(record, here)
            if why is not None or record is None:
                reasons[dest] = why or "wpath has no identity"
            else:
                records[dest] = record
        said: dict[str, str] = {}  # each resumed node's start line
        resumed = self._scan_for(records, lags, reasons, wall, said) if records else {}
        for dest, why in self._check_nodes(resumed).items():
            if why is not None:  # the node lost what the checkpoint says it holds
                reasons[dest] = why
                del resumed[dest]
                self.saved.pop(dest, None)
        for dest in reasons:  # whatever the doubt (--full too), the record is not sure now
            self.void_checkpoint(dest, always=True)
        for dest in c.rnodes:
            if dest in resumed:
                log.info("%s: %s", dest, said[dest])
            if dest in reasons:
                log.info("%s: full sync: %s", dest, reasons[dest])
        return resumed

    def _scan_for(self, records: dict[str, Record], lags: dict[str, float],
                  reasons: dict[str, str], wall: float,
                  said: dict[str, str]) -> dict[str, Resumed]:
        """Scan the tree once from the oldest checkpoint; each node's batch."""
        c, w = self.config, self.watcher
        margin = checkpointmod.MARGIN
        since = {d: r.synced_to - margin - lags.get(d, 0.0) for d, r in records.items()}
        oldest = min(since.values())
        started = time.monotonic()
        try:
            found = scan.walk(w.root, int(oldest * 1e9), c.excludes, w.kept)
        except OSError as e:
            reasons.update({d: f"cannot scan {w.root}: {e.strerror}" for d in records})
            return {}
        took = time.monotonic() - started
        most = full_sync_above(c.full_threshold, max(w.entries, found.seen))
        resumed: dict[str, Resumed] = {}
        for dest, record in records.items():
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.synced_to))
            paths = scan.changed(found, int(since[dest] * 1e9))
            if paths is None:
                reasons[dest] = "the entries or attributes of wpath itself changed since " \
                                "its checkpoint"
                continue
            listed = collapse(paths)  # what lies below a changed directory goes with it
            if len(listed) > most:
                reasons[dest] = (f"{len(listed):,} paths changed since its checkpoint, more "
                                 f"than a list run is worth ({most:,})")
                continue
            batch = PathSet(c.max_pending)
            for path in listed:
                batch.add(path)
            batch.note_since(record.synced_to)
            # ctime says the inode changed, not that size or mtime tell it (an
            # mtime set back): what the scan found is compared by content.
            batch.checksum = bool(batch)
            resumed[dest] = Resumed(batch, wall, record.last_full)
            self.saved[dest] = record.synced_to
            if lags.get(dest, 0.0) > margin:
                log.info("%s: the clock was set back by %.0f s since its checkpoint was "
                         "written: the scan looked back that much further", dest, lags[dest])
            said[dest] = (f"starting from its checkpoint of {when}: "
                          f"{plural(len(paths), 'path')} changed since, {len(listed)} to send "
                          f"(scan of {found.seen:,} entries in {took:.1f} s); no full sync")
        return resumed

    def _check_nodes(self, resumed: dict[str, Resumed]) -> dict[str, str | None]:
        """Whether each node resumed still holds wpath's top level (nodecheck.py)."""
        if not resumed or self.runner.pretend:
            return {}
        c, w = self.config, self.watcher
        kept = tuple(sorted(w.kept))
        argvs = {dest: nodecheck.top_level_argv(
                     dataclasses.replace(c.rsync_options(), ssh=self._ssh_for(dest), kept=kept),
                     w.root, dest) for dest in resumed}
        ssh = {d: ssh_host(d) for d in argvs if node_kind(d) is Kind.SSH}
        opens = slots.open_times(ssh.values(), self.scheduler.seed, 0.0)
        first: dict[str, str] = {}  # host -> its node that opens the connection
        for dest, host in ssh.items():
            first.setdefault(host, dest)
        return nodecheck.check(argvs, limit=c.max_parallel,
                               delays={d: opens[h] for d, h in ssh.items()},
                               stopping=lambda: any(s in STOP for s in self.signals.queue),
                               after={d: first[h] for d, h in ssh.items()},
                               shared=lambda d: self.masters.connected(ssh[d]))

    def scan_lost(self, since: float) -> tuple[list[str] | None, str]:
        """After lost events: what changed in the tree since the wall-clock time since
        (the last read known complete), by one scan as at a start; or None and why
        the scan cannot say (then everything is sent)."""
        c, w = self.config, self.watcher
        untrusted = self._clock_elsewhere()  # a server's clock, FUSE, FAT: as at a start
        if untrusted:
            return None, untrusted
        if time.time() < since:
            return None, "the clock went backwards since the last complete read"
        threshold = int((since - checkpointmod.MARGIN) * 1e9)
        started = time.monotonic()
        try:
            found = scan.walk(w.root, threshold, c.excludes, w.kept)
        except OSError as e:
            return None, f"cannot scan {w.root}: {e.strerror}"
        took = time.monotonic() - started
        paths = scan.changed(found, threshold)
        if paths is None:
            return None, "the entries or attributes of wpath itself changed meanwhile"
        listed = collapse(paths)  # what lies below a changed directory goes with it
        most = full_sync_above(c.full_threshold, max(w.entries, found.seen))
        if len(listed) > most:
            return None, (f"{len(listed):,} paths changed, more than a list run is worth "
                          f"({most:,})")
        when = time.strftime("%H:%M:%S", time.localtime(since - checkpointmod.MARGIN))
        return listed, f"by ctime since {when}: {found.seen:,} entries in {took:.1f} s"

    def no_checkpoints(self) -> str | None:
        """Why this configuration keeps no checkpoints, or None."""
        c = self.config
        if c.delete is not True:  # the start's full sync is what deletes, or nothing does
            return (f"{deletepolicy.shown(c.delete)}: checkpoints are kept with delete = "
                    "True only")
        return checkpointmod.events_problem(c.emask) or self._clock_elsewhere()

    def _clock_elsewhere(self) -> str | None:
        """checkpoint.clock_elsewhere for the watched tree, read once per tree."""
        root = self.watcher.root
        if self.clock_of is None or self.clock_of[0] != root:
            self.clock_of = (root, checkpointmod.clock_elsewhere(root, read_mounts()))
        return self.clock_of[1]

    def settings(self) -> dict[str, str]:
        """The fingerprint of what decides what the nodes hold (checkpoint.fingerprint)."""
        c, w = self.config, self.watcher
        if self.mounts_of is None or self.mounts_of[0] != w.root:  # read once per tree
            self.mounts_of = (w.root, checkpointmod.mounts_inside(w.root, read_mounts()))
        return checkpointmod.fingerprint(c.excludes.patterns, c.rsync_args, w.kept,
                                         self.mounts_of[1], c.delete, (c.rsync, c.ssh))

    def save_checkpoints(self, now: float, force: bool = False) -> None:
        """Record each node's checkpoint that moved on, every SAVE_EVERY seconds
        (and at a clean stop): not per batch, a few small files a minute at most.
        A node that got nothing since its last record gets one every IDLE_SAVE_EVERY:
        an older checkpoint only makes the next start send a little more."""
        if self.save_at is None:
            self.save_at = now + checkpointmod.SAVE_EVERY
        if (now < self.save_at and not force) or self.runner.pretend:
            return
        self.save_at = now + checkpointmod.SAVE_EVERY
        c, w = self.config, self.watcher
        if w.identity is None or self.no_checkpoints():
            return
        settings, wall, boot = self.settings(), time.time(), checkpointmod.boot_clock()
        if self.scheduler.clock_back != self.clock_back:  # the records before: lowered too
            self.clock_back = self.scheduler.clock_back
            self.saved.clear()
            self.saved_when.clear()
        for dest in c.rnodes:
            point = self.scheduler.checkpoint(dest)
            if point is None or point <= self.saved.get(dest, 0.0):
                continue
            node = self.scheduler.nodes[dest]
            at, runs = self.saved_when.get(dest, (0.0, -1))
            if not force and runs == node.runs and wall - at < checkpointmod.IDLE_SAVE_EVERY:
                continue  # idle: no write a minute for nothing
            record = Record(dest, w.root, w.identity.dev, w.identity.ino, settings, __version__,
                            min(point, wall), wall, node.last_full, boot_id=boot[0] if boot
                            else "", boottime=boot[1] if boot else None,
                            node_id=checkpointmod.node_identity(dest))
            if self.checkpoints.save(record):
                self.saved[dest] = point
                self.saved_when[dest] = (wall, node.runs)
                self.voided.discard(dest)  # a record again: the next such run removes it

    def void_checkpoint(self, dest: str, always: bool = False) -> None:
        """Before a run of unknown effect (a full sync at a start that did not resume
        from the record, after a reload, on another tree): a record on disk written
        under other settings, another version or another wpath directory is
        removed. Killed before its next record, a later start under the old
        settings would trust it, and what this run changed (modes, deletions)
        would stay. One written under these settings stays valid, unless always
        (a start that found a reason to doubt it: a node that lost its data)."""
        w = self.watcher
        if dest in self.voided or self.runner.pretend or w.identity is None:
            return
        try:
            record = self.checkpoints.load(dest)
        except CheckpointError:
            record = None  # removed below: it says nothing
        if not always and record is not None and record.version == __version__ \
                and dict(record.settings) == self.settings() \
                and (record.dev, record.ino) == (w.identity.dev, w.identity.ino):
            return  # written under these very settings: this run only brings the node nearer
        if self.checkpoints.void(dest):
            self.voided.add(dest)
            self.saved.pop(dest, None)
            self.saved_when.pop(dest, None)

    def last_checkpoints(self) -> None:
        """At a stop: read what the watcher still holds, then record. Lost events
        or a moved wpath record nothing new (the last records stay)."""
        read_at, read_mono = time.time(), time.monotonic()
        events = self.watcher.read()
        if events.overflowed or events.root_changed or events.unwatched:
            return
        s, now = self.scheduler, time.monotonic()
        if events.paths or events.temps or events.found:
            s.changed(events.paths, now, events.moves, events.temps, events.found,
                      events.deleted)
        s.read_started(read_at, read_mono)
        self.save_checkpoints(now, force=True)

    # ---- the edges: runs, wpath, reload, status

    def start(self, action: StartRun, now: float) -> list[Action]:
        c = self.config
        if node_kind(action.dest) is Kind.LOCAL:  # a symlink or mount since?
            overlap = (configmod.local_node_problem([action.dest])
                       or paths.node_overlap(c.wpath, [action.dest]))
            if overlap:
                return self.scheduler.run_not_started(action.dest, Outcome.BROKEN, overlap, now,
                                                      time.time())
        popt = self._popt_line()
        if popt:
            return self.scheduler.run_not_started(action.dest, Outcome.BROKEN,
                                                  configmod.popt_refusal(popt), now, time.time())
        source = self._open_root()
        if source is None:
            return self.scheduler.root_not_same(action.dest, now)  # never sync another tree
        batch = action.batch
        if batch.since == 0.0:
            self.void_checkpoint(action.dest)
        listed = [] if batch.full else self._files_list(batch.paths)
        # Under delete = 'running' a whole-tree run deletes nothing: a long list
        # stays a list, or the deletions in it would be lost.
        above = sys.maxsize if c.delete == "running" else \
            full_sync_above(c.full_threshold, self.watcher.entries)
        plan = plan_run(batch.full, listed, above)
        phase = deletepolicy.phase_of(plan.full, batch.start)
        kept = self._kept_for(batch.moves)
        replay = None if plan.full else self._replay_for(action.dest, batch.moves, kept)
        progress = batch.full and c.progress_interval > 0  # the long runs it reports on
        # What a replay moved is compared by content: a node that did not hold
        # what the rename assumed (a failed run, drift) can never keep other data.
        checksum = replay is not None or batch.checksum
        if checksum:
            self.comparing.add(action.dest)
        failed = self.runner.start(
            action.dest, plan,
            self._argv_for(action.dest, f"/proc/self/fd/{source}", progress, checksum,
                           (*action.leave_out, *action.held), kept, phase,
                           force=may_force(batch, listed, c.wpath)),
            replay, (source, c.wpath), progress, self._stats())
        if failed is None:
            return []
        outcome, error = failed
        return self.scheduler.run_not_started(action.dest, outcome, error, now, time.time())

    def _popt_line(self) -> str | None:
        """configmod.popt_rsync_line(), read once per wake-up: a line made while we
        run would turn every run into what it says (an alias adding --dry-run:
        runs that "sync" and copy nothing), as the check at load refuses."""
        if self._popt_cache is None:
            self._popt_cache = (configmod.popt_rsync_line(),)
        return self._popt_cache[0]

    def _settle(self, e: Ended) -> dict[str, str] | None:
        """The paths the run could not read, found in wpath (if it still is the
        watched directory): how rsync prints a name can stand for several."""
        if e.returncode != 23 or e.stderr is None or e.pretended:
            return None
        source = self._open_root()
        if source is None:
            return {}  # not the tree rsync read: nothing to leave out
        try:
            return settle(source, e.stderr)
        finally:
            os.close(source)

    def _open_root(self) -> int | None:
        """wpath opened, if it still is the watched directory; else None.

        rsync reads the source through this fd: a swap of the path after
        this check (while ssh connects, say) cannot give it another tree.
        """
        if not self.watcher.root_is_same():
            return None
        try:
            fd = os.open(self.config.wpath, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                         | os.O_CLOEXEC)
        except OSError:
            return None
        st = os.fstat(fd)
        if Identity(st.st_dev, st.st_ino) != self.watcher.identity:
            os.close(fd)
            return None
        return fd

    def _argv_for(self, dest: str, source: str, progress: bool, checksum: bool = False,
                  leave_out: tuple[str, ...] = (), kept: Iterable[str] = (),
                  phase: deletepolicy.Phase = deletepolicy.Phase.START, force: bool = True
                  ) -> Callable[[RunPlan, str | None, str | None], list[str]]:
        """force: the run may take a directory with all it holds where its policy
        says so (--force); False for a list with no directory seen deleted
        (delete = 'running' keeps a node's own directory a new file lands on)."""
        # Empty mount points keep their copy on the nodes: every run, whole
        # tree or list, leaves them alone (see kept.py).
        opts = self.config.rsync_options(phase)
        if not force and opts.deletes.force:
            opts = dataclasses.replace(opts, deletes=dataclasses.replace(opts.deletes,
                                                                          force=False))
        opts = dataclasses.replace(opts, ssh=self._ssh_for(dest), kept=tuple(sorted(kept)),
                                   stats=self._stats())
        # Never read, never deleted on the node: what rsync cannot read, and
        # pseudo filesystems (proc...) mounted inside wpath since the start.
        mounted = self.special.left_out(self.config.wpath, self.config.excludes)
        rules = (*(protect_rule(p) for p in leave_out), *(f"{protect_rule(p)}/" for p in mounted))
        if rules:
            opts = dataclasses.replace(opts, excludes=(*opts.excludes, *rules))
        if checksum:
            opts = dataclasses.replace(opts, extra=(*opts.extra, "--checksum"))

        def argv(plan: RunPlan, list_file: str | None, rules_file: str | None) -> list[str]:
            if list_file is None:
                return full_argv(opts, source, dest, progress)
            return batch_argv(opts, source, dest, list_file, rules_file)

        return argv

    def _kept_for(self, moves: list[Move]) -> set[str]:
        """The kept mount points a run must leave alone: those the watcher found,
        and where a rename of this batch took them from (kept from now on too:
        the node may still hold the copy there)."""
        w = self.watcher
        if w.kept and moves:
            w.kept |= before_renames(w.kept, [(m.old, m.new) for m in moves])
            self.record_kept()  # before the run that leaves them alone
        return set(w.kept)

    def restore_kept(self, watcher: Watcher, since: str) -> str | None:
        """Keep in watcher's tree what its record says is still kept (see
        apply_kept); why not, if the record cannot be read (no run may start)."""
        try:
            recorded = self.kept_file.load(watcher.root)
        except KeptError as e:
            return str(e)
        self.apply_kept(watcher, recorded, since)
        return None

    def apply_kept(self, watcher: Watcher, recorded: set[str], since: str) -> None:
        """Keep the recorded places that are still not mounted again, and fstab's
        mount points in the tree that are not mounted; record the outcome."""
        in_fstab = keptstore.fstab_inside(keptstore.read_fstab(),
                                          {watcher.root, watcher.configured_root})
        found = keptstore.decide(recorded, in_fstab, keptstore.looker(watcher.root))
        watcher.kept |= found.kept
        keptstore.report(found, watcher.root, since, self.kept_file.path(watcher.root))
        self.kept_recorded = None  # the file may hold another tree's, or released places
        self.record_kept(watcher)

    def record_kept(self, watcher: Watcher | None = None) -> None:
        """Record the kept places in state_dir if they changed (-p writes nothing)."""
        w = watcher or self.watcher
        if self.runner.pretend or w.kept == self.kept_recorded:
            return
        if self.kept_file.save(w.root, w.kept):
            self.kept_recorded = set(w.kept)

    def _replay_for(self, dest: str, moves: list[Move], kept: set[str]) -> Replay | None:
        """The renames to replay on dest before its run, if any can be."""
        c = self.config
        # From the settings in force: a reload may add --backup, say.
        off = replaymod.off_because(c.replay_moves, c.rsync_args, c.delete)
        if not moves or not can_replay(dest) or off or dest in self.no_replay:
            return None
        if node_kind(dest) is Kind.LOCAL and not self._local_perl():
            return None
        if not self.runner.pretend and not self.marks.mark(dest):
            return None  # a stop before its rsync would go unnoticed at the next start
        data = replay_input(dest, moves, c.excludes, replaymod.sets_perms(c.rsync_args),
                            c.timeout, kept)
        return Replay(replay_argv(dest, self._ssh_for(dest)), data, len(moves),
                      [(m.old, m.new) for m in moves[:3]], timeout=float(c.timeout))

    def _local_perl(self) -> bool:
        """Whether perl can run here (for local nodes); said once when it cannot."""
        if self.perl_here is None:
            self.perl_here = shutil.which("perl") is not None
            if not self.perl_here:
                self._no_replay_here("no perl on this machine (PATH has none)")
        return self.perl_here

    def _no_replay_here(self, why: str) -> None:
        self.perl_here = False
        log.warning("%s: renames to local nodes are sent as data, not replayed", why)

    def replay_ended(self, e: Ended) -> None:
        """What a run's replay said: a node where it cannot run gets no more tries
        (said once); rsync sent what the replay did not move either way."""
        rc, said = e.replay_rc, e.replay_said
        if rc == 0 and "(untrusted: " in said and e.dest not in self.no_replay:
            why = said.split("(untrusted: ", 1)[1].rstrip(")\n ")
            self.no_replay[e.dest] = why
            log.warning("%s: %s: renames to this node are sent as data, not replayed (see "
                        "README, Moves and ssh connections)", e.dest, why)
            return
        if rc is None or rc <= 0 or e.dest in self.no_replay:
            return  # done; cut short by its time limit (the run failed: logged there) or by us
        cannot = rc in (127, replaymod.EXIT_UNSUPPORTED)
        if node_kind(e.dest) is Kind.LOCAL and rc == 127:  # no perl: no local node has it
            if self.perl_here is not False:
                self._no_replay_here(said or "cannot run perl")
            return
        if cannot:
            why = "no perl there" if rc == 127 else said.strip() or "unsupported system"
            self.no_replay[e.dest] = why
            log.warning("%s: %s: renames to this node are sent as data, not replayed",
                        e.dest, why)
        elif rc != 255:  # 255: ssh could not connect, which rsync's own exit tells
            log.warning("%s: the move replay failed (exit %d: %s); rsync sent the data",
                        e.dest, rc, said or "no message")

    def _ssh_for(self, dest: str) -> list[str]:
        """The ssh command for dest: through its shared connection, unless turned off."""
        if node_kind(dest) is not Kind.SSH:
            return list(self.config.ssh)
        return self.masters.command(self.config.ssh, ssh_host(dest), self.config.timeout)

    def _files_list(self, changed: set[str]) -> list[str]:
        """files_list(), computed once for all nodes that start at the same moment.

        After a flush every node has the same batch; the cache lives until
        the next wake-up only, because the list depends on what exists now.
        """
        cached = self._list_cache
        # Under delete = 'running' a gone path below a listed directory is listed
        # too: without --delete, that directory's run would not delete it.
        gone = self.config.delete == "running"
        if cached is None or cached[0] != (changed, gone):
            cached = self._list_cache = ((set(changed), gone), files_list(
                changed, self.config.wpath, self.config.excludes, keep_gone=gone))
        return cached[1]

    def check_root(self) -> RootVerdict:
        """Which directory wpath now is, and whether it may be followed.

        Following is what a restart would do, with the same checks as a
        start; a different filesystem (an unmount) or a failed check stops.
        """
        w, c = self.watcher, self.config
        configured = c.configured_wpath
        if w.root_is_same():
            w.watch_ancestors()  # a directory above may have moved: watch the new ones
            return RootSame()
        resolved = paths.resolve(configured)  # the checks of a start, on the same walk
        if resolved.problem:
            return RootLost(f"wpath {configured}: {resolved.problem}; not followed")
        real = resolved.path
        now_is = identity(real)
        if now_is is None:
            return RootLost(f"wpath {configured} disappeared")
        if w.identity is not None and now_is.dev != w.identity.dev:
            return RootLost(f"wpath {configured} now lies on another filesystem (device "
                            f"{now_is.dev}, was {w.identity.dev}): unmounted?")
        if real != w.root and paths.overlap(real, w.root):
            return RootLost(f"wpath {configured} now leads to {real}, which contains or lies "
                            f"inside the tree it was ({w.root}): surely a mistake")
        problem = configmod.layout_problem(c, real)
        if problem:
            return RootLost(f"wpath {configured} now leads to {real}, but {problem[1]}")
        return RootMoved(real, f"{real}, {now_is}; was {w.root}, {w.identity}")

    def reload(self, now: float) -> list[Action]:
        """Read the configuration again; any error keeps the old one, whole."""
        old, tree = self.config, self.watcher.identity
        leftover: WatchEvents | None = None
        try:
            new = configmod.load(old.path, old.base_dir)
            problem = preflight(new)  # what a start would refuse, a reload refuses
            if problem:
                raise ConfigError(problem)
            if self.on_reload:
                self.on_reload(new)  # first: opening a new log file may fail
            if (new.wpath, new.configured_wpath, new.emask, new.excludes.patterns) != (
                    old.wpath, old.configured_wpath, old.emask, old.excludes.patterns):
                leftover = self._switch_watcher(new)
        except (ConfigError, WatchLimitError) as e:
            return self.scheduler.reload_failed(str(e), now)
        except OSError as e:
            if self.on_reload:
                self.on_reload(old)
            where = f"{e.filename}: " if e.filename else ""
            return self.scheduler.reload_failed(f"{where}{e.strerror}", now)
        for line in changes(old, new):  # what the edit did, before what follows from it
            log.info("reload: %s", line)
        off = replaymod.off_because(new.replay_moves, new.rsync_args, new.delete)
        if off != replaymod.off_because(old.replay_moves, old.rsync_args, old.delete):
            log.info("renames are %s", f"sent as data, not replayed: {off}" if off
                     else "replayed again")
        same_tree = new.wpath == old.wpath and self.watcher.identity == tree
        actions = self._leftover(leftover, now) if leftover and same_tree else []
        actions += self.scheduler.reloaded(new, now, self.marks.marked(new.rnodes), same_tree,
                                           rewatched=leftover is not None)
        self._forget_checkpoints(self.scheduler.full_by_reload)
        return actions

    def _leftover(self, events: WatchEvents, now: float) -> list[Action]:
        """What the old watcher read last, of the same tree: still to be sent (the
        new watcher saw only what came after it started)."""
        s = self.scheduler
        actions = s.changed(events.paths, now, events.moves, events.temps, events.found,
                      events.deleted) \
            if events.paths or events.temps or events.found else []
        if events.overflowed:
            actions += s.overflowed(now)
        if events.root_changed:
            actions += s.root_changed(now)
        return actions

    def _forget_checkpoints(self, dests: list[str]) -> None:
        """Nodes the reload gave a full sync: their records (of the old settings)
        must not spare them that full sync at the next start, whatever the
        fingerprint holds (an ssh command, the rsync program are not in it)."""
        if self.runner.pretend:
            return  # -p writes nothing, removes nothing
        for dest in dests:
            self.saved.pop(dest, None)
            path = self.checkpoints.path(dest)
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as e:
                log.warning("cannot remove the checkpoint %s (%s): a start before %s's full "
                            "sync got through may trust it", path, e.strerror, dest)

    def _switch_watcher(self, new: Config) -> WatchEvents:
        """Watch the new tree; raises before changing anything. What the old watcher
        had not read yet is returned (the new one watches from its start on)."""
        watcher = Watcher(new.wpath, new.emask, new.excludes, new.configured_wpath)
        try:
            watcher.start()
        except BaseException:
            watcher.close()
            raise
        recorded = None
        if watcher.identity == self.watcher.identity:  # the same tree: its kept places too
            watcher.kept |= self.watcher.kept
        else:
            try:  # what was kept when inosync last watched it; not another tree's at this path
                recorded = set() if watcher.root == self.watcher.root else \
                    self.kept_file.load(watcher.root)
            except KeptError as e:
                watcher.close()
                raise ConfigError(str(e)) from None
            moved = self._relock(new.wpath)
            if moved:
                watcher.close()
                raise ConfigError(moved)
        leftover = self.watcher.read()
        self.poller.unregister(self.watcher.fileno())
        self.watcher.close()
        self.watcher = watcher
        watcher.on_kept = self.record_kept
        self.poller.register(watcher.fileno(), select.POLLIN)
        if recorded is not None:
            self.apply_kept(watcher, recorded, "from when inosync last watched this tree")
        return leftover

    def _relock(self, root: str | None) -> str | None:
        """Hold the lock of the tree root now is (a swap, a reload to another wpath);
        why not, if another inosync holds it. None: no new tree, or locked."""
        if root is None or self.tree_lock is None:
            return None
        tree = identity(root)
        if tree is None:
            return f"wpath {root} disappeared"
        try:
            self.tree_lock.acquire(tree, root)
        except TreeLockError as e:
            return str(e)
        return None

    def progress_texts(self) -> dict[str, str]:
        """For each node in a full sync: how long it has run and how far it got."""
        texts = {}
        for dest in self.config.rnodes:
            running = self.runner.progress(dest)
            if running is not None:
                took, done = running
                texts[dest] = (f"full sync running for {took:.0f} s, "
                               f"{done.describe() if done else 'listing the tree'}")
        return texts

    def report_progress(self, to_log: bool, now: float) -> None:
        texts = self.progress_texts()
        if to_log:
            for dest, text in texts.items():
                log.info("%s: %s", dest, text)
            self.write_status(now)
        if self.live is not None and texts:
            self.live("; ".join(f"{d}: {t}" for d, t in texts.items()))

    def announce(self) -> None:
        """systemd's view of us: STOPPING=1 once stopping, STATUS= when it changed."""
        if not self.notify.enabled:
            return
        if self.scheduler.stopping:
            self.notify.stopping()
        self.notify.status(summary(self.scheduler.status(time.monotonic(), time.time()),
                                   self.scheduler.stopping))

    def status_lines(self, now: float) -> list[str]:
        def when(t: object) -> str:
            return (time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))
                    if isinstance(t, float) else "never")

        return [
            f"{r['node']}: {r.get('slot') or r['state']}, pending {r['pending']}, "
            f"last ok {when(r['last_ok'])}, "
            f"last error {r['last_error'] or 'none'}, next retry "
            f"{when(r['next_retry']) if r['next_retry'] else '-'}"
            + (f"; {r['progress']}" if r.get("progress") else "")
            for r in self.status_rows(now)
        ]

    def status_rows(self, now: float) -> list[dict[str, object]]:
        """The scheduler's view of each node, with the progress of running full syncs."""
        texts = self.progress_texts()
        rows = self.scheduler.status(now, time.time())
        for row in rows:
            row["progress"] = texts.get(str(row["node"]))
        return rows

    def write_status(self, now: float, stopped: int | None = None) -> None:
        """The statusfile, for monitoring; stopped: the exit status, once stopped."""
        if self.config.statusfile and not self.runner.pretend:  # -p writes nothing
            write_statusfile(self.config, "running", self.status_rows(now), stopped)

    # ---- metrics_file: for node_exporter's textfile collector (metrics.py)

    def _metrics_path(self) -> str | None:
        return None if self.runner.pretend else self.config.metrics_file  # -p writes nothing

    def _stats(self) -> bool:
        """Whether runs print rsync's summary: the bytes it sent, for the metrics."""
        return self._metrics_path() is not None

    def metrics_deadline(self) -> float | None:
        """When the metrics are to be written next; None without metrics_file, so
        that an idle daemon without it still sleeps without a timeout."""
        if self._metrics_path() is None:
            return None
        at = self.metrics_refresh.next_write()
        return 0.0 if at is None else at

    def write_metrics(self, now: float, force: bool = False) -> None:
        """Write metrics_file if due (or forced); remove the one a reload moved away."""
        path = self._metrics_path()
        if self.metrics_at is not None and path != self.metrics_at:
            self._remove_metrics(self.metrics_at)
        if path is None or not (force or self.metrics_refresh.due(now)):
            return
        self.metrics_refresh.wrote(now)
        text = metricsmod.render(self.metrics_snapshot(), now)
        try:
            replace_file(path, text.encode())  # atomic; not worth a wait for the disk
        except OSError as e:
            error = f"cannot write metrics_file {path}: {e.strerror}"
            if error != self.metrics_error:  # once, not every second
                log.warning("%s (tried again at each refresh, said again if it "
                            "changes)", error)
            self.metrics_error = error
            return
        if self.metrics_error is not None:
            log.info("metrics_file %s written again", path)
        self.metrics_at, self.metrics_error = path, None

    def _remove_metrics(self, path: str) -> None:
        """The metrics of a file no longer configured would go on being served."""
        self.metrics_at = None
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            log.warning("cannot remove the old metrics_file %s: %s", path, e.strerror)

    def metrics_snapshot(self) -> metricsmod.Snapshot:
        c = self.config
        w = self.watcher  # a watch per directory of the tree, and on those above it
        return metricsmod.Snapshot(__version__, c.configured_wpath or c.wpath,
                                   len(w.wd_of) + len(w.ancestor_names), watch_limit(),
                                   self.scheduler.overflows, self.scheduler.metric_values())


def watch_limit() -> int | None:
    """fs.inotify.max_user_watches, if it can be read."""
    try:
        with open(WATCH_LIMIT, "rb") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None
