"""The daemon's whole life: one process, one thread, one poll loop.

Signals are queued by tiny handlers and woken up through a pipe
(``signal.set_wakeup_fd``), then handled in the loop by one short
``handle_<name>`` method each. rsync children run without blocking; their
exit arrives as SIGCHLD on the same pipe. With nothing to do the loop sleeps
in poll() without a timeout: idle CPU is zero.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import select
import shlex
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

from . import config as configmod
from .batch import PathSet, encode_list, files_list, top_level
from .config import Config, ConfigError
from .nodes import Node, State
from .paths import identity
from .rsync import Outcome, batch_argv, classify, describe, full_argv, root_rules
from .signals import Signals
from .watch import Watcher, WatchLimitError

log = logging.getLogger("inosync")

GRACE = 10.0  # seconds running rsyncs get to finish on SIGTERM
KILL_AFTER = 3.0  # seconds between SIGTERM and SIGKILL to a child
STDERR_LINES = 5
STDERR_READ = 1 << 20  # of a run's stderr, enough to tell churn from failure
MAX_SLEEP_MS = 3_600_000  # poll() takes at most 2**31-1 ms; waking hourly costs nothing


@dataclass
class Child:
    node: Node
    proc: subprocess.Popen[bytes]
    stderr: IO[bytes]
    scratch: list[str]  # its list and rules files, removed when it ends
    started: float
    what: str
    stopped_by_us: bool = False


def full_sync_above(threshold: int, tree_entries: int) -> int:
    """Most paths worth sending as a list; past it one whole-tree run is cheaper.

    Measured with rsync 3.5 on tmpfs (bench/threshold.py, 50,000 files): the
    list is faster up to 20% of the tree changed (0.80 s against 1.14 s) and
    slower from 30% (1.19 s against 1.04 s), so the cut is at a quarter of
    the entries seen. Small trees are cheap either way, so lists of up to
    1000 paths are always kept.
    """
    return min(threshold, max(1000, tree_entries // 4))


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def read_stderr(stream: IO[bytes]) -> str | None:
    """What a child wrote to stderr, or None past STDERR_READ (too much to judge)."""
    stream.seek(0)
    data = stream.read(STDERR_READ + 1)
    return None if len(data) > STDERR_READ else data.decode(errors="replace")


def stderr_tail(text: str, lines: int = STDERR_LINES) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


def replace_file(path: str, data: bytes) -> None:
    """Replace path's contents atomically: readers never see half a file.

    The temporary file is created beside the target with a random name and
    O_EXCL|O_NOFOLLOW (mkstemp): a symlink planted there is never followed.
    """
    folder, name = os.path.split(path)
    fd, tmp = tempfile.mkstemp(dir=folder or ".", prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o644)  # monitoring reads it; mkstemp makes 0600
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class Daemon:
    def __init__(
        self,
        config: Config,
        watcher: Watcher,
        signals: Signals,
        pretend: bool = False,
        on_reload: Callable[[Config], None] | None = None,
    ) -> None:
        self.config = config
        self.watcher = watcher
        self.signals = signals
        self.pretend = pretend
        self.on_reload = on_reload
        self.nodes = {dest: self._new_node(dest) for dest in config.rnodes}
        self.collected = PathSet(config.max_pending)
        self.flush_at: float | None = None
        self.children: dict[int, Child] = {}
        self.stopping = False
        self.exit_code = 0
        self.term_at: float | None = None  # when to SIGTERM children on shutdown
        self.kill_at: float | None = None
        self.rescan_at: float | None = None
        self.root_check_at: float | None = None  # when to decide what wpath now is
        self.lost_events = False  # the queue overflowed while a root check was due
        self.listdir = tempfile.mkdtemp(prefix="inosync-")
        self.poller = select.poll()
        self._list_cache: tuple[set[str], list[str]] | None = None

    def _new_node(self, dest: str) -> Node:
        c = self.config
        return Node(dest, retry_min=c.retry_min, retry_max=c.retry_max, limit=c.max_pending)

    # ---- the loop

    def run(self) -> int:
        self.signals.starting = False  # from now on TERM winds down through the loop
        self.poller.register(self.signals.wake_r, select.POLLIN)
        self.poller.register(self.watcher.fileno(), select.POLLIN)
        log.info("watching %s (%d directories); initial sync to %d node(s)",
                 self.config.wpath, len(self.watcher), len(self.nodes))
        for node in self.nodes.values():
            node.pending.set_full()
        try:
            while not (self.stopping and not self.children):
                self.tick(time.monotonic())
                if self.stopping and not self.children:
                    break
                self.wait()
        finally:
            self._cleanup_lists()
        return self.exit_code

    def wait(self) -> None:
        timeout = self.next_timeout(time.monotonic())
        for fd, _ in self.poller.poll(timeout):
            if fd == self.signals.wake_r:
                self.signals.drain()
        self.handle_signals()
        self.reap()
        self.read_changes()

    def next_timeout(self, now: float) -> int | None:
        """Milliseconds until something is due, or None to sleep until woken."""
        due = [t for t in (self.flush_at, self.term_at, self.kill_at, self.rescan_at,
                           self.root_check_at) if t]
        due += [n.retry_at for n in self.nodes.values()
                if n.state is State.WAITING and n.pending and n.retry_at]
        if not due:
            return None
        return min(MAX_SLEEP_MS, max(0, int((min(due) - now) * 1000) + 1))

    def tick(self, now: float) -> None:
        self._list_cache = None
        self.check_watcher(now)
        if self.flush_at is not None and now >= self.flush_at:
            self.flush()
        if self.stopping:
            self.stop_children(now)
            return
        if self.root_check_at is not None:
            return  # until we know which directory wpath is, nothing is synced
        for node in self.nodes.values():
            if node.ready(now):
                self.start(node, now)

    # ---- changes in

    def read_changes(self) -> None:
        changes = self.watcher.read()
        if not changes:
            return
        for path in changes:
            self.collected.add(path)
        if self.flush_at is None:
            self.flush_at = time.monotonic() + self.config.edelay
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%d change(s), e.g. %r; %s collected",
                      len(changes), changes[0], self.collected.describe())

    def flush(self) -> None:
        """The debounce delay is over: hand what was collected to every node."""
        batch = self.collected.take()
        self.flush_at = None
        for node in self.nodes.values():
            node.pending.update(batch)

    def check_watcher(self, now: float) -> None:
        w = self.watcher
        if w.overflowed:
            w.overflowed = False
            if w.root_is_same():
                self.rescan(now)
            else:
                self.lost_events = True
                self.suspect_root(now)
        if w.root_changed:
            w.root_changed = False
            self.suspect_root(now)
        if self.root_check_at is not None and now >= self.root_check_at and not self.stopping:
            self.root_check_at = None
            self.check_root(now)
        if w.unwatched and (self.rescan_at is None or now >= self.rescan_at):
            for rel in list(w.unwatched):
                self.collected.add(rel)  # no events there: sync it whole
                w.unwatched.discard(rel)
                w.add_tree(rel)  # the limit may have been raised meanwhile
            self.flush_at = self.flush_at or now
            self.rescan_at = now + self.config.rescan_interval if w.unwatched else None

    def rescan(self, now: float) -> None:
        log.warning("inotify queue overflowed: events were lost; rewatching "
                    "and syncing everything to every node")
        self.watcher.rescan()
        self.collected.set_full()
        self.flush_at = self.flush_at or now

    def suspect_root(self, now: float) -> None:
        """wpath, or a directory above it, was moved, deleted or unmounted.

        Decide what wpath is after the batch delay: a two-step swap
        (mv www www.old; mv www.new www) must be over by then. Nothing is
        synced meanwhile.
        """
        if self.root_check_at is None:
            self.root_check_at = now + self.config.edelay

    def check_root(self, now: float) -> None:
        """Follow wpath to the directory it now leads to, or stop without syncing.

        Following is what a restart would do, with the same checks as a
        start; a different filesystem (an unmount) or a failed check stops.
        """
        w, configured = self.watcher, self.config.configured_wpath
        lost, self.lost_events = self.lost_events, False
        if w.root_is_same():
            if lost:
                self.rescan(now)
            else:
                w.watch_ancestors()  # a directory above may have moved: watch the new ones
            return
        real = os.path.realpath(configured)
        now_is = identity(real)
        why = None
        if now_is is None:
            why = f"wpath {configured} disappeared"
        elif w.identity is not None and now_is.dev != w.identity.dev:
            why = (f"wpath {configured} now lies on another filesystem (device {now_is.dev}, "
                   f"was {w.identity.dev}): unmounted?")
        else:
            problem = configmod.layout_problem(self.config, real)
            if problem:
                why = f"wpath {configured} now leads to {real}, but {problem[1]}"
        if why:
            log.error("%s; stopping without syncing (nothing is deleted on the nodes)", why)
            self.exit_code = 1
            self.begin_stop(now, grace=0.0)
            return
        log.warning("wpath %s now leads to another directory (%s, %s; was %s, %s): "
                    "following it, with a full sync to every node",
                    configured, real, now_is, w.root, w.identity)
        self.config = dataclasses.replace(self.config, wpath=real)
        w.rescan(real)
        self.collected.set_full()
        self.flush_at = now

    # ---- rsync children

    def start(self, node: Node, now: float) -> None:
        batch = node.begin()
        wpath = self.config.wpath
        if not self.watcher.root_is_same():
            node.abandon()  # never sync from another directory than the one watched
            self.suspect_root(now)
            return
        paths = [] if batch.full else self._files_list(batch.paths)
        full = batch.full or len(paths) > full_sync_above(self.config.full_threshold,
                                                          self.watcher.entries)
        opts = self.config.rsync_options()
        scratch: list[str] = []
        try:
            if full:
                argv, what = full_argv(opts, wpath, node.dest), "full sync"
            else:
                top = top_level(paths)
                scratch.append(self._scratch_file(encode_list(["."] + paths if top else paths)))
                if top:
                    scratch.append(self._scratch_file(root_rules(top)))
                argv = batch_argv(opts, wpath, node.dest, *scratch)
                what = plural(len(paths), "path")
            stderr = tempfile.TemporaryFile(dir=self._scratch_dir())
        except OSError as e:
            for name in scratch:
                self._remove(name)
            self._report(node, node.finish(Outcome.RETRY, now, time.time(),
                                           f"cannot write rsync's list files in {self.listdir}: "
                                           f"{e.strerror}"), "")
            return
        if self.pretend:
            log.info("%s: would run (%s): %s", node.dest, what, shlex.join(argv))
            stderr.close()
            for name in scratch:
                self._remove(name)
            node.finish(Outcome.OK, now, time.time())
            return
        log.debug("%s: running (%s): %s", node.dest, what, shlex.join(argv))
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=stderr, start_new_session=True)
        except OSError as e:
            stderr.close()
            for name in scratch:
                self._remove(name)
            self._report(node, node.finish(Outcome.BROKEN, now, time.time(),
                                           f"cannot run {opts.rsync}: {e.strerror}"), "")
            return
        self.children[proc.pid] = Child(node, proc, stderr, scratch, now, what)

    def _files_list(self, changed: set[str]) -> list[str]:
        """files_list(), computed once for all nodes that start in one tick.

        After a flush every node has the same batch; the cache lives for one
        tick only, because the list depends on what exists on disk now.
        """
        cached = self._list_cache
        if cached is None or cached[0] != changed:
            cached = self._list_cache = (
                set(changed), files_list(changed, self.config.wpath, self.config.excludes))
        return cached[1]

    def _scratch_dir(self) -> str:
        """The private directory for rsync's list files, made again if it was removed
        (tmp cleaners remove what an idle daemon has not touched for days)."""
        if not os.path.isdir(self.listdir):
            self.listdir = tempfile.mkdtemp(prefix="inosync-")
            log.warning("the directory for rsync list files was removed; now using %s",
                        self.listdir)
        return self.listdir

    def _scratch_file(self, data: bytes) -> str:
        fd, name = tempfile.mkstemp(dir=self._scratch_dir(), suffix=".list")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        except OSError:
            self._remove(name)
            raise
        return name

    def reap(self) -> None:
        for pid, child in list(self.children.items()):
            rc = child.proc.poll()
            if rc is None:
                continue
            del self.children[pid]
            self.finished(child, rc)

    def finished(self, child: Child, rc: int) -> None:
        now, node = time.monotonic(), child.node
        stderr = read_stderr(child.stderr)
        child.stderr.close()
        for name in child.scratch:
            self._remove(name)
        if child.stopped_by_us:
            node.abandon()
        else:
            self._record(child, rc, stderr, now)
        self.write_status()

    def _record(self, child: Child, rc: int, stderr: str | None, now: float) -> None:
        """Tell the node how its run ended, and log it."""
        node = child.node
        outcome = classify(rc, stderr or "")
        changed = node.finish(outcome, now, time.time(), "" if rc in (0, 24) else describe(rc))
        tail = stderr_tail(stderr or "(more than 1 MB of errors)")
        if outcome in (Outcome.OK, Outcome.VANISHED):
            log.info("%s: synced %s in %.1f s", node.dest, child.what, now - child.started)
        elif outcome is Outcome.SOURCE_CHANGED and node.changed_runs:
            log.info("%s: the source changed during the run (%s); sending %s again in "
                     "%.1f s", node.dest, tail, child.what, node.retry_min)
            return
        self._report(node, changed, tail)  # a failure, or the recovery from one

    def _report(self, node: Node, changed: bool, tail: str) -> None:
        """Log a node's failures once per change of health, not once per retry."""
        if node.state is State.WAITING:
            wait = (node.retry_at or 0) - time.monotonic()
            level = logging.ERROR if changed else logging.DEBUG
            log.log(level, "%s: rsync failed: %s%s; %s pending, retry %d in %.0f s",
                    node.dest, node.last_error, f": {tail}" if tail else "",
                    node.pending.describe(), node.failures, max(0.0, wait))
        elif changed:
            log.info("%s: recovered", node.dest)

    def stop_children(self, now: float) -> None:
        for child in self.children.values():
            if self.term_at is not None and now >= self.term_at and not child.stopped_by_us:
                self._signal(child, signal.SIGTERM)
            if self.kill_at is not None and now >= self.kill_at:
                self._signal(child, signal.SIGKILL)
        if self.term_at is not None and now >= self.term_at:
            self.term_at = None
        if self.kill_at is not None and now >= self.kill_at:
            self.kill_at = None  # sent; SIGCHLD wakes us when they are gone

    def _signal(self, child: Child, sig: int) -> None:
        child.stopped_by_us = True
        try:
            os.killpg(child.proc.pid, sig)
        except ProcessLookupError:
            pass

    def begin_stop(self, now: float, grace: float = GRACE) -> None:
        self.stopping = True
        self.flush()
        self.term_at = now + grace
        self.kill_at = now + grace + KILL_AFTER
        for node in self.nodes.values():
            if node.pending or node.inflight is not None:
                log.info("%s: %s pending at shutdown; the next start's full sync "
                         "covers them", node.dest, node.pending_count())

    # ---- signals

    def handle_signals(self) -> None:
        for signum in self.signals.take():
            name = signal.Signals(signum).name
            getattr(self, f"handle_{name[3:].lower()}")()

    def handle_term(self) -> None:
        now = time.monotonic()
        if self.stopping:  # asked twice: do not wait for the grace period
            self.term_at, self.kill_at = now, now + KILL_AFTER
            return
        log.info("stopping (SIGTERM); waiting up to %.0f s for running rsyncs", GRACE)
        self.begin_stop(now)

    handle_int = handle_term

    def handle_usr1(self) -> None:
        for line in self.status_lines():
            log.info("status: %s", line)
        self.write_status()

    def handle_hup(self) -> None:
        if self.stopping:
            return
        log.info("SIGHUP: reloading %s", self.config.path)
        try:
            new = configmod.load(self.config.path, self.config.base_dir)
            self.apply(new)
        except (ConfigError, WatchLimitError) as e:
            log.error("reload failed, keeping the old configuration: %s", e)
            return
        log.info("reloaded; full sync to %d node(s)", len(self.nodes))

    def apply(self, new: Config) -> None:
        """Switch to a new configuration; raises before changing anything."""
        old = self.config
        watch_changed = (new.wpath, new.configured_wpath, new.emask, new.excludes.patterns) != (
            old.wpath, old.configured_wpath, old.emask, old.excludes.patterns)
        if watch_changed:
            watcher = Watcher(new.wpath, new.emask, new.excludes, new.configured_wpath)
            try:
                watcher.start()
            except WatchLimitError:
                watcher.close()
                raise
            self.poller.unregister(self.watcher.fileno())
            self.watcher.close()
            self.watcher = watcher
            self.poller.register(watcher.fileno(), select.POLLIN)
            self.collected = PathSet(new.max_pending)
        self.config = new
        for child in self.children.values():
            if child.node.dest not in new.rnodes:
                self._signal(child, signal.SIGTERM)
        self.nodes = {d: self.nodes.get(d) or self._new_node(d) for d in new.rnodes}
        for node in self.nodes.values():
            node.retry_min, node.retry_max = new.retry_min, new.retry_max
            node.pending.limit = new.max_pending
            node.pending.set_full()
        if self.on_reload:
            self.on_reload(new)

    # ---- status

    def status(self) -> list[dict[str, Any]]:
        now, wall = time.monotonic(), time.time()
        rows = []
        for node in self.nodes.values():
            retry = None
            if node.state is State.WAITING and node.retry_at is not None:
                retry = wall + max(0.0, node.retry_at - now)
            rows.append({
                "node": node.dest, "state": node.state.value,
                "pending": node.pending_count(), "failures": node.failures,
                "last_ok": node.last_ok, "last_error": node.last_error,
                "next_retry": retry, "runs": node.runs,
            })
        return rows

    def status_lines(self) -> list[str]:
        def when(t: float | None) -> str:
            return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "never"

        return [
            f"{r['node']}: {r['state']}, pending {r['pending']}, last ok {when(r['last_ok'])}, "
            f"last error {r['last_error'] or 'none'}, next retry "
            f"{when(r['next_retry']) if r['next_retry'] else '-'}"
            for r in self.status()
        ]

    def write_status(self) -> None:
        path = self.config.statusfile
        if not path:
            return
        data = json.dumps({"pid": os.getpid(), "wpath": self.config.wpath,
                           "time": time.time(), "nodes": self.status()}, indent=1)
        try:
            replace_file(path, data.encode())
        except OSError as e:
            log.warning("cannot write statusfile %s: %s", path, e.strerror)

    # ---- housekeeping

    def _remove(self, name: str | None) -> None:
        if name:
            try:
                os.unlink(name)
            except FileNotFoundError:
                pass

    def _cleanup_lists(self) -> None:
        try:
            for name in os.listdir(self.listdir):
                self._remove(os.path.join(self.listdir, name))
            os.rmdir(self.listdir)
        except FileNotFoundError:
            pass  # removed by someone else already
