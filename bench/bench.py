#!/usr/bin/env python3
"""Side-by-side benchmark: inosync, plain rsync (the floor) and lsyncd.

Usage (as root; Linux; needs rsync, bash, mount/umount; lsyncd is optional,
``apt-get install lsyncd``)::

    python bench/bench.py [--quick] [--runs N] [--out FILE]
                          [--scenarios burst,latency,startup,sustained,idle]

``--quick`` is a smoke version for CI: tiny trees, one run, only burst,
latency and idle (5 s), well under a minute. Without it all five scenarios
run at full size with ``--runs`` (default 3) runs each; that takes about
23 minutes on a 2-core machine. The table goes to stdout and, as markdown
with the machine's details, to ``--out`` (default bench/results/latest.md).
Exit status: 0 when every run completed (whatever the targets say), 1 when
a run failed (a tool died, did not converge, or timed out), 2 on a usage
or setup error (not root, no tmpfs), 130 on Ctrl-C.

More options: ``--tools inosync,floor,lsyncd`` runs only some of them;
``--idle-seconds S`` and ``--sustained-seconds S`` shorten those
scenarios; ``--logs DIR`` keeps every daemon log and rsync start log;
``--profile DIR`` runs inosync under cProfile (one .prof per daemon start)
and ``--pyspy DIR`` attaches py-spy to it once it is set up (in start-up:
right after launch) and writes folded stacks, one .txt per daemon start;
``python bench/profsummary.py FILES`` summarizes either. Profiling slows
the daemon: its timings are not comparable.

Set-up
======

Everything happens on a tmpfs mounted on a fresh directory from
``tempfile.mkdtemp`` in ``~/.cache/inosync-scratch`` (not under ``/tmp``, which
inosync refuses: see its strict modes); it is unmounted and removed at the end, also after an
error, SIGTERM or Ctrl-C. Each tool replicates one source tree to 3 local
replica directories with the same 1 s debounce:

* inosync: ``wpath`` = the source, ``rnodes`` = the 3 replicas,
  ``edelay = 1``, no pidfile, started as ``python -m inosync -c CONF``
  (without ``-v``, as in production).
* floor: no daemon; the moment the writer is done, one
  ``rsync -a --delete src/ node/`` per node, all 3 in parallel. Its lag is
  the time until all three have exited. It is the least work that brings
  the nodes up to date without knowing what changed.
* lsyncd: ``settings { nodaemon = true, maxProcesses = 3 }`` and one
  ``sync { default.rsync, source, target, delay = 1, rsync = { binary,
  archive = true } }`` per node (lsyncd takes one target per sync; its
  ``rsync.binary`` is per sync, not in ``settings``). ``archive = true``
  makes it do the same work as ``rsync -a`` (its default is only ``-lts``).
  Everything else is lsyncd's default, e.g. ``maxDelays = 1000`` (it starts
  an rsync before the delay is over once 1,000 events are queued) and its
  "Normal" log level, which logs every path it syncs (part of its CPU).
  Skipped, with a note, when lsyncd is not installed.

Each tool's rsync is a bash wrapper that appends ``$EPOCHREALTIME <pid>
<last argument>`` to a log and execs /usr/bin/rsync: that counts rsync runs
per node and dates them. CPU is the daemon process's own utime+stime from
/proc/PID/stat (its rsync children are not counted: they do the same work
as the floor's rsyncs); memory is VmRSS from /proc/PID/status.

How "every node equals the source" is measured
==============================================

Polling ``rsync -anc --delete --itemize-changes`` against three 20,000-file
replicas costs about as much CPU as the replication itself on a 2-core
machine, so the checker would distort what it measures. Instead:

1. *When* a node became equal is read from the node itself: every change to
   a tree sets the ctime of the inode changed (rsync renames each file into
   place, which sets its ctime, and creating, deleting or renaming an entry
   sets its directory's ctime; setting a time or mode sets ctime too). So
   once a node equals the source, the largest ctime in the node tree is the
   moment of its last change, i.e. the moment it became equal (to the
   kernel's timestamp granularity, a few ms). Lag = max over nodes of that
   ctime - the wall-clock time the writer finished. The polling interval
   therefore does not bias the lag at all.
2. *Whether* a node equals the source is checked only once the tool is
   quiet (no rsync running and none started for delay + 0.25 s, and at
   least delay + 0.25 s after the last write, so no debounce timer can be
   pending): a walk of both trees in the same order comparing, per entry,
   (relative path, type and permission bits, uid, gid, mtime in whole
   seconds, size of files, symlink target), stopping at the first
   difference, then the bytes of every file. That is exactly what
   ``rsync -anc --delete --itemize-changes`` compares for ``-a``: rsync's
   default ``--modify-window=0`` compares mtimes in whole seconds (it
   leaves a directory's nanoseconds as they are when the seconds match), and
   an extra or missing entry is a difference. Both trees are on the same
   tmpfs, so there are no devices, ACLs or xattrs to compare.
3. After every burst run (and once per tool in the other scenarios) the
   nodes are checked again with the real ``rsync -anc --delete
   --itemize-changes``; a disagreement with the walk is reported as an
   error. The notes give the cost of both checks, measured on the burst
   tree.

Sample lags in the sustained scenario come from ctimes in the same way: each
sampled change creates a new file that is never touched again, so its ctime
on a node is the moment it arrived there.

Scenarios
=========

1. burst: a tree of 10,000 files of 512 bytes in 100 directories, already
   replicated; the tool is running and quiet. 10,000 more files of 512 bytes
   in 100 new directories are written at once (the writer's own time is in
   the notes). Lag: from the end of the write until every node equals the
   source. Daemon CPU seconds and rsync runs per node (most of any node) from
   the start of the write until quiet again. A fresh tree and daemon per run.
2. latency: a tree of 50,000 directories, replicated, tool quiet; one file
   in it is rewritten in place. Seconds from the write until it is on every
   node, minus the 1 s delay (the floor has no delay: its number is the
   time of its 3 whole-tree rsyncs). One daemon start, --runs writes, each
   after the tool is quiet again.
3. startup: trees of 50,000 and 200,000 directories (directories only) and
   3 empty replicas. Seconds from launching the tool until every node
   equals the source (inosync also logs "synced full sync" per node), the
   time until its first rsync starts (interpreter start, config, watching
   the tree), its CPU seconds by then, and VmRSS afterwards.
   fs.inotify.max_user_watches is raised to at least 1,048,576 for it and
   put back right after (and at exit, always).
4. sustained: on the burst's 10,000-file tree, 100 changes per second for
   60 s: 9 in 10 rewrite a random existing file (448-575 bytes, so now and
   then with the size it had), 1 in 10 creates a new file (the samples).
   Daemon CPU % during the writes; worst and median sample lag; rsync runs
   per node per delay window. The floor column is "one transfer": 3
   parallel whole-tree rsyncs after one delay window's worth of changes
   (100). A run whose nodes keep stale contents of a file with the
   source's size and mtime second (a same-size rewrite within the second
   of the previous sync: rsync's quick check skips it unless told
   ``--modify-window=-1``) is counted in its own row and reported as an
   error; its lag, CPU and run numbers still count.
5. idle: the daemon's CPU % over 60 s with no changes (and no rsync runs).

Numbers are medians over the runs ([min-max] when more than one). Each
target is checked against the medians and marked PASS or FAIL; a ratio
needs its comparator (an lsyncd target is n/a without lsyncd). Other
processes on a shared machine add noise: the load averages before and after
are in the output; compare ratios rather than absolute numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import random
import re
import shutil
import signal
import stat
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # a script: the shared helpers live there
from helpers import private_tmp_root  # noqa: E402

RSYNC = shutil.which("rsync") or "/usr/bin/rsync"
LSYNCD = shutil.which("lsyncd")
BASH = shutil.which("bash") or "/bin/bash"
DELAY = 1.0  # the debounce every tool gets, seconds
NODES = 3
QUIET = DELAY + 0.25  # no rsync activity for this long = the tool is done
WATCHES_FOR_STARTUP = 1_048_576
WATCHES_SYSCTL = "/proc/sys/fs/inotify/max_user_watches"
ALL_SCENARIOS = ("burst", "latency", "startup", "sustained", "idle")
QUICK_SCENARIOS = ("burst", "latency", "idle")
ALL_TOOLS = ("inosync", "floor", "lsyncd")
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Sizes:
    base_dirs: int = 100  # the tree a burst lands in (and sustained, idle)
    base_files_per_dir: int = 100
    burst_dirs: int = 100
    burst_files_per_dir: int = 100
    file_size: int = 512
    latency_dirs: int = 50_000
    startup_dirs: tuple[int, ...] = (50_000, 200_000)
    memory_target_dirs: int = 200_000  # the tree size the 100 MB target is for
    sustained_rate: int = 100  # changes per second
    sustained_seconds: float = 60.0
    sample_every: int = 10  # every n-th sustained change creates a sampled file
    idle_seconds: float = 60.0


FULL = Sizes()
QUICK = Sizes(base_dirs=5, burst_dirs=5, latency_dirs=1_000, startup_dirs=(2_000, 8_000),
              memory_target_dirs=8_000, sustained_seconds=5.0, idle_seconds=5.0)


class BenchError(Exception):
    """A set-up problem: the benchmark cannot run here."""


class RunFailed(Exception):
    """One run did not complete (tool died, no convergence, timeout)."""


class ContentDiverged(RunFailed):
    """The tool is done, every node's metadata equals the source, some file contents don't.

    That is rsync's quick check (same size, same mtime second: skip) hiding a
    change made within the second of the previous sync of the same file.
    """

    def __init__(self, message: str, ctimes: list[int]) -> None:
        super().__init__(message)
        self.ctimes = ctimes


# ---------------------------------------------------------------- processes


def _ppid_map() -> dict[int, int]:
    parents = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        parents[int(entry)] = int(data[data.rindex(b")") + 2:].split()[1])
    return parents


def descendants(pid: int) -> list[int]:
    parents = _ppid_map()
    children: dict[int, list[int]] = defaultdict(list)
    for child, parent in parents.items():
        children[parent].append(child)
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def children_of(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except FileNotFoundError:
        return []
    except OSError:  # kernel without CONFIG_PROC_CHILDREN
        return [c for c, p in _ppid_map().items() if p == pid]


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class Procs:
    """Every process the benchmark starts, each in its own process group."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[bytes]] = []

    def spawn(self, argv: list[str], **kw: Any) -> subprocess.Popen[bytes]:
        kw.setdefault("stdin", subprocess.DEVNULL)
        proc = subprocess.Popen(argv, start_new_session=True, **kw)
        self.started.append(proc)
        return proc

    def run(self, argv: list[str], timeout: float = 600.0,
            **kw: Any) -> subprocess.CompletedProcess[bytes]:
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        proc = self.spawn(argv, **kw)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop(proc, grace=0.0)
            raise RunFailed(f"{argv[0]} timed out after {timeout:.0f} s") from None
        finally:
            self.forget(proc)
        return subprocess.CompletedProcess(argv, proc.returncode, out, err)

    def forget(self, proc: subprocess.Popen[bytes]) -> None:
        if proc in self.started and proc.poll() is not None:
            self.started.remove(proc)

    def stop(self, proc: subprocess.Popen[bytes], grace: float = 5.0,
             sig: int = signal.SIGTERM) -> None:
        """Stop proc and everything below it (children in other sessions too)."""
        below = descendants(proc.pid) if proc.poll() is None else []
        if proc.poll() is None and grace > 0:
            _killpg(proc.pid, sig)
            _kill(proc.pid, sig)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        _killpg(proc.pid, signal.SIGKILL)
        if proc.poll() is None:
            _kill(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        for pid in below:
            _killpg(pid, signal.SIGKILL)
            _kill(pid, signal.SIGKILL)
        self.forget(proc)

    def stop_all(self) -> None:
        for proc in list(self.started):
            self.stop(proc, grace=2.0)

    @staticmethod
    def sweep(tag: str) -> int:
        """SIGKILL leftovers: processes whose command line or cwd is under our tmp dir."""
        killed = 0
        me = os.getpid()
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == me:
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmdline = f.read()
                cwd = os.readlink(f"/proc/{entry}/cwd")
            except OSError:
                continue
            if tag.encode() in cmdline or cwd == tag or cwd.startswith(tag + "/"):
                _kill(int(entry), signal.SIGKILL)
                killed += 1
        return killed


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process itself (not of its children)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    fields = data[data.rindex(b")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


# ---------------------------------------------------------------- trees


def write_file(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def content(tag: str, size: int) -> bytes:
    unit = (tag + "\n").encode()
    return (unit * (size // len(unit) + 1))[:size]


def make_files_tree(root: str, ndirs: int, per_dir: int, size: int,
                    prefix: str = "d") -> list[str]:
    """ndirs new directories of per_dir files each; returns the files' relative paths."""
    files = []
    for i in range(ndirs):
        d = f"{prefix}{i:04d}"
        os.mkdir(os.path.join(root, d))
        for j in range(per_dir):
            rel = f"{d}/f{j:04d}"
            write_file(os.path.join(root, rel), content(rel, size))
            files.append(rel)
    return files


def make_dirs_tree(root: str, ndirs: int) -> list[str]:
    """ndirs directories in two levels (about sqrt(ndirs) wide); returns the leaves."""
    width = max(1, math.isqrt(ndirs))
    made, i, leaves = 0, 0, []
    while made < ndirs:
        top = f"t{i:04d}"
        os.mkdir(os.path.join(root, top))
        made += 1
        for j in range(min(width, ndirs - made)):
            leaf = f"{top}/s{j:04d}"
            os.mkdir(os.path.join(root, leaf))
            leaves.append(leaf)
            made += 1
        i += 1
    return leaves


Sig = tuple[Any, ...]


def walk(root: str) -> Iterator[tuple[str, Sig, int]]:
    """(relpath, what rsync -a compares, ctime_ns) for root and everything below.

    Same order for equal trees (names sorted per directory, depth first).
    mtimes in whole seconds, as rsync's default --modify-window=0 compares them.
    """
    def sig(st: os.stat_result, path: str) -> Sig:
        mode = st.st_mode
        common = (mode, st.st_uid, st.st_gid, st.st_mtime_ns // 1_000_000_000)
        if stat.S_ISREG(mode):
            return (*common, st.st_size)
        if stat.S_ISLNK(mode):
            return (*common, os.readlink(path))
        return common

    st = os.lstat(root)
    yield "", sig(st, root), st.st_ctime_ns
    stack = [""]
    while stack:
        rel = stack.pop()
        with os.scandir(os.path.join(root, rel) if rel else root) as it:
            entries = sorted(it, key=lambda e: e.name)
        subdirs = []
        for e in entries:
            st = e.stat(follow_symlinks=False)
            path = f"{rel}/{e.name}" if rel else e.name
            yield path, sig(st, e.path), st.st_ctime_ns
            if stat.S_ISDIR(st.st_mode):
                subdirs.append(path)
        stack.extend(reversed(subdirs))


def snapshot(root: str) -> list[tuple[str, Sig]]:
    return [(rel, s) for rel, s, _ in walk(root)]


def node_equal(snap: list[tuple[str, Sig]], node: str) -> int | None:
    """The node's newest ctime (ns) if its metadata equals the snapshot, else None.

    Stops at the first difference, so a node far from done costs little.
    """
    newest = 0
    entries = walk(node)
    try:
        for rel, s in snap:
            got = next(entries, None)
            if got is None or got[0] != rel or got[1] != s:
                return None
            newest = max(newest, got[2])
        if next(entries, None) is not None:
            return None
    except OSError:  # a directory vanished under the walk: still changing
        return None
    return newest


def differing_files(snap: list[tuple[str, Sig]], src: str, node: str,
                    limit: int = 5) -> list[str]:
    """Regular files whose bytes differ between src and node (the first few)."""
    found = []
    for rel, s in snap:
        if stat.S_ISREG(s[0]):
            with open(os.path.join(src, rel), "rb") as a, open(os.path.join(node, rel), "rb") as b:
                if a.read() != b.read():
                    found.append(rel)
                    if len(found) >= limit:
                        break
    return found


# ---------------------------------------------------------------- workspaces


class Workspace:
    """root/{src,n1..n3,work} for one run of one tool."""

    def __init__(self, bench: Bench, name: str) -> None:
        self.bench = bench
        self.dir = os.path.join(bench.root, name)
        self.src = os.path.join(self.dir, "src")
        self.nodes = [os.path.join(self.dir, f"n{i + 1}") for i in range(NODES)]
        self.work = os.path.join(self.dir, "work")
        for d in (self.dir, self.src, *self.nodes, self.work):
            os.mkdir(d)

    def remove(self) -> None:
        self.bench.keep_logs(self.work)
        self.bench.procs.run(["rm", "-rf", "--one-file-system", self.dir], timeout=600)


def parallel_rsync(procs: Procs, src: str, nodes: list[str], rsync: str = RSYNC,
                   timeout: float = 900.0) -> float:
    """One rsync -a --delete src/ node/ per node, all at once; seconds until all exit."""
    t0 = time.monotonic()
    running = [procs.spawn([rsync, "-a", "--delete", src + "/", n + "/"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for n in nodes]
    deadline = t0 + timeout
    errors = []
    for p in running:
        try:
            _, err = p.communicate(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            procs.stop(p, grace=0)
            errors.append("timed out")
            continue
        procs.forget(p)
        if p.returncode != 0:
            errors.append(f"exit {p.returncode}: {err.decode(errors='replace').strip()[-300:]}")
    elapsed = time.monotonic() - t0
    if errors:
        raise RunFailed(f"plain rsync failed: {'; '.join(errors)}")
    return elapsed


def rsync_diff(procs: Procs, src: str, node: str) -> list[str]:
    done = procs.run([RSYNC, "-anc", "--delete", "--itemize-changes", src + "/", node + "/"])
    if done.returncode != 0:
        raise RunFailed(f"rsync -anc failed: {done.stderr.decode(errors='replace')[-300:]}")
    return [line for line in done.stdout.decode(errors="replace").splitlines() if line.strip()]


# ---------------------------------------------------------------- tools


WRAPPER = """#!{bash}
# rsync wrapper of the inosync benchmark: date and count each run, then exec rsync
for last; do :; done
printf '%s %s %s\\n' "$EPOCHREALTIME" "$$" "$last" >> {log}
exec {rsync} "$@"
"""


def _q(path: str) -> str:
    return "'" + path.replace("'", "'\\''") + "'"


class Daemon:
    """A replication daemon under test: started, watched, stopped."""

    name = ""
    overflow_marker = ""

    def __init__(self, bench: Bench, ws: Workspace, label: str) -> None:
        self.bench, self.ws, self.label = bench, ws, label
        self.wrapper = os.path.join(ws.work, "rsync-wrapper")
        self.starts_log = os.path.join(ws.work, "rsync-starts.log")
        self.log_path = os.path.join(ws.work, f"{self.name}.log")
        with open(self.wrapper, "w") as f:
            f.write(WRAPPER.format(bash=BASH, log=_q(self.starts_log), rsync=_q(RSYNC)))
        os.chmod(self.wrapper, 0o755)
        open(self.starts_log, "w").close()
        self.proc: subprocess.Popen[bytes] | None = None
        self.launched = 0.0  # wall clock
        self.pyspy: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        raise NotImplementedError

    def attach_profiler(self) -> None:
        """Only inosync is profiled."""

    def initial_done(self) -> bool:
        raise NotImplementedError

    def start(self) -> None:
        argv = self.argv()
        with open(self.log_path, "ab") as log:
            self.launched = time.time()
            self.proc = self.bench.procs.spawn(argv, stdout=log, stderr=subprocess.STDOUT,
                                               cwd=str(REPO), env=self.env())

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            rc = self.proc.returncode if self.proc else None
            raise RunFailed(f"{self.name} exited (status {rc}): {self.log_tail()}")

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def rss(self) -> float:
        return rss_mb(self.pid)

    def busy(self) -> bool:
        return bool(children_of(self.pid))

    def starts(self) -> list[tuple[float, str]]:
        runs = []
        with open(self.starts_log) as f:
            for line in f:
                parts = line.split(" ", 2)
                if len(parts) == 3:
                    runs.append((float(parts[0]), parts[2].rstrip("\n").rstrip("/")))
        return runs

    def log_text(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def log_tail(self, lines: int = 6) -> str:
        return " | ".join(self.log_text().strip().splitlines()[-lines:])

    def overflows(self) -> int:
        return self.log_text().count(self.overflow_marker)

    def stop(self) -> None:
        if self.proc is not None:
            self.bench.procs.stop(self.proc, grace=15.0)
        if self.pyspy is not None:
            # py-spy writes its output when its target exits (or on SIGINT)
            try:
                self.pyspy.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.bench.procs.stop(self.pyspy, grace=10.0, sig=signal.SIGINT)
            self.bench.procs.forget(self.pyspy)


class Inosync(Daemon):
    name = "inosync"
    overflow_marker = "inotify queue overflowed"

    def config_path(self) -> str:
        path = os.path.join(self.ws.work, "inosync.conf")
        settings = {"wpath": self.ws.src, "rnodes": self.ws.nodes, "edelay": DELAY,
                    "rsync": self.wrapper, "pidfile": None,
                    "state_dir": os.path.join(self.ws.work, "state")}
        with open(path, "w") as f:
            f.write("".join(f"{k} = {v!r}\n" for k, v in settings.items()))
        os.chmod(path, 0o644)
        return path

    def argv(self) -> list[str]:
        conf = self.config_path()
        prof = self.bench.args.profile
        if prof:
            out = os.path.join(prof, f"{self.label}.prof")
            return [sys.executable, "-m", "cProfile", "-o", out, "-m", "inosync", "-c", conf]
        return [sys.executable, "-m", "inosync", "-c", conf]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        return env

    def attach_profiler(self) -> None:
        """With --pyspy, sample this daemon from now on until it stops."""
        if self.bench.args.pyspy and self.pyspy is None:
            out = os.path.join(self.bench.args.pyspy, f"{self.label}.txt")
            self.pyspy = self.bench.procs.spawn(
                ["py-spy", "record", "--pid", str(self.pid), "--rate", "1000", "--nonblocking",
                 "--format", "raw", "--output", out],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.3)  # let it attach before the measured part starts

    def initial_done(self) -> bool:
        return self.log_text().count("synced full sync") >= NODES


class Lsyncd(Daemon):
    name = "lsyncd"
    overflow_marker = "OVERFLOW in event queue"

    def argv(self) -> list[str]:
        path = os.path.join(self.ws.work, "lsyncd.conf.lua")
        syncs = "".join(
            f"sync {{ default.rsync, source = {json.dumps(self.ws.src)}, "
            f"target = {json.dumps(node)}, delay = {DELAY:g}, "
            f"rsync = {{ binary = {json.dumps(self.wrapper)}, archive = true }} }}\n"
            for node in self.ws.nodes)
        with open(path, "w") as f:
            f.write(f"settings {{ nodaemon = true, maxProcesses = {NODES} }}\n{syncs}")
        assert LSYNCD is not None
        return [LSYNCD, path]

    def initial_done(self) -> bool:
        return len(re.findall(r"Startup of .* finished", self.log_text())) >= NODES


TOOL_CLASSES: dict[str, type[Daemon]] = {"inosync": Inosync, "lsyncd": Lsyncd}


# ---------------------------------------------------------------- results


@dataclass
class Row:
    key: str
    scenario: str
    metric: str
    fmt: str = "{:.2f}"
    count: bool = False  # a 0/1 per run: show "k of n" and judge the sum


class Results:
    def __init__(self) -> None:
        self.values: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        self.rows: dict[str, Row] = {}
        self.failed: dict[str, set[str]] = defaultdict(set)

    def row(self, key: str, scenario: str, metric: str, fmt: str = "{:.2f}",
            count: bool = False) -> str:
        self.rows.setdefault(key, Row(key, scenario, metric, fmt, count))
        return key

    def add(self, key: str, tool: str, value: float) -> None:
        self.values[key][tool].append(value)

    def fail(self, key: str, tool: str) -> None:
        self.failed[key].add(tool)

    def median(self, key: str, tool: str) -> float | None:
        """The median of the runs (the sum, for a count row)."""
        vals = self.values.get(key, {}).get(tool)
        if not vals:
            return None
        return sum(vals) if self.rows[key].count else statistics.median(vals)

    def cell(self, key: str, tool: str) -> str:
        vals = self.values.get(key, {}).get(tool)
        failed = tool in self.failed.get(key, set())
        if not vals:
            return "failed" if failed else "–"
        fmt = self.rows[key].fmt
        if self.rows[key].count:
            return f"{sum(vals):.0f} of {len(vals)}"
        text = fmt.format(statistics.median(vals))
        if len(vals) > 1:
            text += f" [{fmt.format(min(vals))}–{fmt.format(max(vals))}]"
        if failed:
            text += " (some runs failed)"
        return text


# ---------------------------------------------------------------- the benchmark


class Bench:
    def __init__(self, args: argparse.Namespace, sizes: Sizes, tools: list[str]) -> None:
        self.args, self.sizes = args, sizes
        self.tools = tools
        self.procs = Procs()
        self.results = Results()
        self.notes: list[str] = []
        self.errors: list[str] = []
        self.root = ""
        self.mounted = False
        self.saved_watches: str | None = None
        self.checker_cpu: dict[str, float] = defaultdict(float)
        self.counter = 0
        self.checker: str | None = None
        self.current = ""  # the scenario running

    # ---- set-up and the cleanup that always runs

    def __enter__(self) -> Bench:
        self.root = tempfile.mkdtemp(prefix="inosync-bench-", dir=private_tmp_root())
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8g,mode=0755",
                               "inosync-bench", self.root], capture_output=True, text=True)
        if done.returncode != 0:
            os.rmdir(self.root)
            raise BenchError(f"cannot mount a tmpfs on {self.root}: {done.stderr.strip()}")
        self.mounted = True
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def cleanup(self) -> None:
        old = {s: signal.signal(s, signal.SIG_IGN)
               for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        try:
            self.procs.stop_all()
            if self.root:
                for _ in range(3):
                    if not Procs.sweep(self.root):
                        break
                    time.sleep(0.2)
            self.restore_watches()
            if self.mounted:
                self.unmount()
            if self.root and os.path.isdir(self.root):
                os.rmdir(self.root)
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)

    def unmount(self) -> None:
        for _ in range(20):
            if subprocess.run(["umount", self.root], capture_output=True).returncode == 0:
                self.mounted = False
                return
            Procs.sweep(self.root)
            time.sleep(0.25)
        subprocess.run(["umount", "-l", self.root], capture_output=True)
        self.mounted = False
        print(f"warning: {self.root} was busy; lazily unmounted", file=sys.stderr)

    def raise_watches(self, needed: int) -> None:
        with open(WATCHES_SYSCTL) as f:
            current = f.read().strip()
        if int(current) >= needed:
            return
        if self.saved_watches is None:
            self.saved_watches = current
        with open(WATCHES_SYSCTL, "w") as f:
            f.write(str(needed))

    def restore_watches(self) -> None:
        if self.saved_watches is not None:
            with open(WATCHES_SYSCTL, "w") as f:
                f.write(self.saved_watches)
            self.saved_watches = None

    def keep_logs(self, work: str) -> None:
        if self.args.logs and os.path.isdir(work):
            dest = os.path.join(self.args.logs, os.path.basename(os.path.dirname(work)))
            shutil.copytree(work, dest, dirs_exist_ok=True)

    # ---- helpers

    def log(self, message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    def workspace(self, name: str) -> Workspace:
        self.counter += 1
        return Workspace(self, f"{self.counter:03d}-{name}")

    def launch(self, tool: str, ws: Workspace, label: str, timeout: float = 600.0) -> Daemon:
        """Start a daemon on ws and wait until its initial sync is done and it is quiet."""
        daemon = TOOL_CLASSES[tool](self, ws, label)
        daemon.start()
        snap = snapshot(ws.src)
        deadline = time.monotonic() + timeout
        while not daemon.initial_done():
            daemon.check_alive()
            if time.monotonic() > deadline:
                raise RunFailed(f"{tool}: no initial sync after {timeout:.0f} s")
            time.sleep(0.05)
        self.settle(daemon, ws, snap, time.monotonic(), f"{self.current} (set-up)",
                    timeout=timeout)
        daemon.attach_profiler()  # the measured part only
        return daemon

    def settle(self, daemon: Daemon, ws: Workspace, snap: list[tuple[str, Sig]],
               last_write: float, scenario: str, timeout: float = 300.0,
               content_check: bool = True) -> list[int]:
        """Wait until daemon is quiet and every node equals snap; return the nodes' newest ctimes.

        last_write is time.monotonic() when the last change was made.
        """
        start = time.monotonic()
        deadline = start + timeout
        last_activity = start
        seen = len(daemon.starts())
        failed_checks = 0
        while True:
            daemon.check_alive()
            now = time.monotonic()
            n = len(daemon.starts())
            if daemon.busy() or n != seen:
                last_activity, seen = now, n
            if now - last_write >= QUIET and now - last_activity >= QUIET:
                cpu0 = time.process_time()
                ctimes = [node_equal(snap, node) for node in ws.nodes]
                metadata_equal = all(c is not None for c in ctimes)
                stale: dict[str, list[str]] = {}
                if metadata_equal and content_check:
                    stale = {n: f for n in ws.nodes if (f := differing_files(snap, ws.src, n))}
                self.checker_cpu[scenario] += time.process_time() - cpu0
                if metadata_equal and not stale:
                    return [c for c in ctimes if c is not None]
                failed_checks += 1
                if now - last_activity > 15 * DELAY + 5:
                    if stale:
                        node, files = next(iter(stale.items()))
                        raise ContentDiverged(
                            f"{daemon.name}: nodes never converged: {len(stale)} node(s) keep "
                            f"stale contents of files whose size and mtime second equal the "
                            f"source's (rsync's quick check skips them), e.g. {files[:3]} on "
                            f"{os.path.basename(node)}", [c for c in ctimes if c is not None])
                    differ = [n for n, c in zip(ws.nodes, ctimes) if c is None]
                    sample = rsync_diff(self.procs, ws.src, differ[0])[:5]
                    raise RunFailed(f"{daemon.name}: quiet but nodes differ from the source, "
                                    f"e.g. {sample}")
            if now > deadline:
                raise RunFailed(f"{daemon.name}: nodes did not converge in {timeout:.0f} s")
            time.sleep(0.05 if failed_checks == 0 else 0.25 if failed_checks < 8 else 1.0)

    def verify(self, ws: Workspace, who: str) -> None:
        """The real rsync -anc comparison; a difference here is a checker bug or a tool bug."""
        for node in ws.nodes:
            diff = rsync_diff(self.procs, ws.src, node)
            if diff:
                raise RunFailed(f"{who}: rsync -anc still finds differences on {node} although "
                                f"the walk found none: {diff[:5]}")

    def run_guarded(self, key_rows: list[str], tool: str, what: str,
                    fn: Callable[[], None]) -> None:
        try:
            fn()
        except RunFailed as e:
            for key in key_rows:
                self.results.fail(key, tool)
            self.errors.append(f"{what}: {e}")
            self.log(f"FAILED {what}: {e}")

    # ---- scenario 1: burst

    def scenario_burst(self) -> None:
        s, r = self.sizes, self.results
        n_new = s.burst_dirs * s.burst_files_per_dir
        n_base = s.base_dirs * s.base_files_per_dir
        lag = r.row("burst_lag", "burst", f"lag after writing {n_new:,} files (s)")
        cpu = r.row("burst_cpu", "burst", "daemon CPU (s)")
        runs = r.row("burst_rsyncs", "burst", "rsync runs per node (most)", "{:.0f}")
        first = r.row("burst_first", "burst", "first rsync starts after the write's end (s)")
        writer: list[float] = []
        for i in range(self.args.runs):  # rounds: drifting background load hits all tools
            for tool in self.tools:
                label = f"burst-{tool}-{i + 1}"
                self.log(f"{label}: {n_base:,} files + {n_new:,} new")
                self.run_guarded([lag, cpu, runs, first], tool, label,
                                 lambda t=tool, lb=label: self._burst_run(t, lb, writer))
        if writer:
            self.notes.append(f"burst: the writer took {statistics.median(writer):.2f} s "
                              f"(median) to write {n_new:,} files in {s.burst_dirs} directories.")

    def _burst_run(self, tool: str, label: str, writer: list[float]) -> None:
        s, r = self.sizes, self.results
        ws = self.workspace(label)
        daemon = None
        try:
            make_files_tree(ws.src, s.base_dirs, s.base_files_per_dir, s.file_size)
            parallel_rsync(self.procs, ws.src, ws.nodes)
            if tool != "floor":
                daemon = self.launch(tool, ws, label)
                cpu0, before = daemon.cpu(), len(daemon.starts())
                overflows0 = daemon.overflows()
            w0 = time.monotonic()
            make_files_tree(ws.src, s.burst_dirs, s.burst_files_per_dir, s.file_size, prefix="b")
            end_wall, end = time.time(), time.monotonic()
            writer.append(end - w0)
            if daemon is None:
                r.add("burst_lag", tool, parallel_rsync(self.procs, ws.src, ws.nodes))
                r.add("burst_rsyncs", tool, 1)
                r.add("burst_first", tool, 0.0)
                self.verify(ws, label)
                return
            snap = snapshot(ws.src)
            ctimes = self.settle(daemon, ws, snap, end, "burst")
            cpu = daemon.cpu() - cpu0
            starts = daemon.starts()[before:]
            r.add("burst_lag", tool, max(ctimes) / 1e9 - end_wall)
            r.add("burst_cpu", tool, cpu)
            per_node = [sum(1 for _, n in starts if n == node) for node in ws.nodes]
            r.add("burst_rsyncs", tool, max(per_node))
            if starts:
                r.add("burst_first", tool, starts[0][0] - end_wall)
            if daemon.overflows() > overflows0:
                queue = _sysctl("max_queued_events")
                self.notes.append(f"{label}: the inotify queue overflowed (fs.inotify."
                                  f"max_queued_events is {queue}); {tool} recovered with a "
                                  "full sync.")
            if self.checker is None:
                self.checker = self.measure_checker(ws, snap)
            self.verify(ws, label)
        finally:
            if daemon is not None:
                daemon.stop()
            ws.remove()

    def measure_checker(self, ws: Workspace, snap: list[tuple[str, Sig]]) -> str:
        """What one equality check of one node costs, with the walk and with rsync -anc."""
        node = ws.nodes[0]
        w0, c0 = time.monotonic(), time.process_time()
        node_equal(snap, node)
        walk_wall, walk_cpu = time.monotonic() - w0, time.process_time() - c0
        w0, c0 = time.monotonic(), time.process_time()
        differing_files(snap, ws.src, node)
        bytes_wall = time.monotonic() - w0
        w0 = time.monotonic()
        rsync_diff(self.procs, ws.src, node)
        rsync_wall = time.monotonic() - w0
        return (f"equality check of one node ({len(snap):,} entries): metadata walk "
                f"{walk_wall * 1000:.0f} ms ({walk_cpu * 1000:.0f} ms CPU), file bytes "
                f"{bytes_wall * 1000:.0f} ms; `rsync -anc --delete --itemize-changes` "
                f"{rsync_wall * 1000:.0f} ms (plus its receiver process). The walk runs only "
                f"once a tool is quiet and lags come from ctimes, so neither biases the lags.")

    # ---- scenario 2: latency

    def scenario_latency(self) -> None:
        s, r = self.sizes, self.results
        key = r.row("latency", "latency",
                    f"one file in {s.latency_dirs:,} dirs: s above the {DELAY:g} s delay "
                    "(floor: no delay)")
        self.log(f"latency: building a tree of {s.latency_dirs:,} directories")
        base = self.workspace("latency-src")
        leaves = make_dirs_tree(base.src, s.latency_dirs)
        probe = f"{leaves[len(leaves) // 2]}/probe.txt"
        write_file(os.path.join(base.src, probe), b"initial\n")
        for tool in self.tools:
            self.log(f"latency: {tool}, {self.args.runs} run(s)")
            self.run_guarded([key], tool, f"latency-{tool}",
                             lambda t=tool: self._latency_tool(t, base, probe))
        base.remove()

    def _latency_tool(self, tool: str, base: Workspace, probe: str) -> None:
        r = self.results
        ws = self.workspace(f"latency-{tool}")
        daemon = None
        try:
            parallel_rsync(self.procs, base.src + "/", [ws.src])
            parallel_rsync(self.procs, ws.src, ws.nodes)
            if tool != "floor":
                daemon = self.launch(tool, ws, f"latency-{tool}")
            src_file = os.path.join(ws.src, probe)
            for i in range(self.args.runs):
                data = content(f"latency run {i} {time.time()}", 64 + 16 * i)
                write_file(src_file, data)
                end_wall, end = time.time(), time.monotonic()
                if daemon is None:
                    r.add("latency", tool, parallel_rsync(self.procs, ws.src, ws.nodes))
                    continue
                arrived = self._wait_file(daemon, ws, probe, data, timeout=60)
                r.add("latency", tool, max(arrived) - end_wall - DELAY)
                snap = snapshot(ws.src)
                self.settle(daemon, ws, snap, end, "latency", content_check=False)
            self.verify(ws, f"latency-{tool}")
        finally:
            if daemon is not None:
                daemon.stop()
            ws.remove()

    def _wait_file(self, daemon: Daemon, ws: Workspace, rel: str, data: bytes,
                   timeout: float) -> list[float]:
        """Wall-clock arrival (ctime) of rel with exactly data on every node."""
        src_st = os.lstat(os.path.join(ws.src, rel))
        deadline = time.monotonic() + timeout
        arrived: dict[str, float] = {}
        while len(arrived) < len(ws.nodes):
            daemon.check_alive()
            for node in ws.nodes:
                if node in arrived:
                    continue
                path = os.path.join(node, rel)
                try:
                    st = os.lstat(path)
                    if st.st_size == src_st.st_size and st.st_mtime_ns == src_st.st_mtime_ns:
                        with open(path, "rb") as f:
                            if f.read() == data:
                                arrived[node] = os.lstat(path).st_ctime_ns / 1e9
                except FileNotFoundError:
                    pass
            if time.monotonic() > deadline:
                raise RunFailed(f"{daemon.name}: {rel} not on every node after {timeout:.0f} s")
            time.sleep(0.005)
        return list(arrived.values())

    # ---- scenario 3: start-up

    def scenario_startup(self) -> None:
        s, r = self.sizes, self.results
        try:
            self.raise_watches(max(WATCHES_FOR_STARTUP, 4 * max(s.startup_dirs)))
            for ndirs in s.startup_dirs:
                keys = [
                    r.row(f"startup_{ndirs}", f"startup {ndirs:,} dirs",
                          "watch + initial sync (s)"),
                    r.row(f"startup_first_{ndirs}", f"startup {ndirs:,} dirs",
                          "until the first rsync starts (s)"),
                    r.row(f"startup_cpu_{ndirs}", f"startup {ndirs:,} dirs", "daemon CPU (s)"),
                    r.row(f"startup_rss_{ndirs}", f"startup {ndirs:,} dirs", "VmRSS after (MB)",
                          "{:.1f}"),
                ]
                self.log(f"startup: building a tree of {ndirs:,} directories")
                base = self.workspace(f"startup-{ndirs}")
                make_dirs_tree(base.src, ndirs)
                snap = snapshot(base.src)
                for i in range(self.args.runs):
                    for tool in self.tools:
                        label = f"startup-{ndirs}-{tool}-{i + 1}"
                        self.log(label)
                        self.run_guarded(keys, tool, label,
                                         lambda t=tool, lb=label, b=base, sn=snap, n=ndirs,
                                         first=(i == 0): self._startup_run(t, lb, b, sn, n, first))
                base.remove()
        finally:
            self.restore_watches()

    def _startup_run(self, tool: str, label: str, base: Workspace, snap: list[tuple[str, Sig]],
                     ndirs: int, verify: bool) -> None:
        r = self.results
        for node in base.nodes:  # empty replicas: a cold start
            self.procs.run(["rm", "-rf", "--one-file-system", node], timeout=600)
            os.mkdir(node)
        if tool == "floor":
            r.add(f"startup_{ndirs}", tool, parallel_rsync(self.procs, base.src, base.nodes))
            return
        daemon = TOOL_CLASSES[tool](self, base, label)
        open(daemon.log_path, "w").close()
        try:
            daemon.start()
            daemon.attach_profiler()  # misses the first ~0.1 s (interpreter start)
            deadline = time.monotonic() + 900
            while not daemon.initial_done():
                daemon.check_alive()
                if time.monotonic() > deadline:
                    raise RunFailed(f"{tool}: no initial sync after 900 s")
                time.sleep(0.05)
            done_cpu = daemon.cpu()
            ctimes = self.settle(daemon, base, snap, time.monotonic(), "startup",
                                 timeout=600, content_check=False)
            starts = daemon.starts()
            r.add(f"startup_{ndirs}", tool, max(ctimes) / 1e9 - daemon.launched)
            if starts:
                r.add(f"startup_first_{ndirs}", tool, starts[0][0] - daemon.launched)
            r.add(f"startup_cpu_{ndirs}", tool, done_cpu)
            r.add(f"startup_rss_{ndirs}", tool, daemon.rss())
            if verify:
                self.verify(base, label)
        finally:
            daemon.stop()
            self.keep_logs(base.work)

    # ---- scenario 4: sustained

    def scenario_sustained(self) -> None:
        s, r = self.sizes, self.results
        keys = [
            r.row("sustained_cpu", "sustained", f"daemon CPU at {s.sustained_rate} changes/s (%)"),
            r.row("sustained_lag", "sustained", "worst lag (s; floor: one transfer)"),
            r.row("sustained_lag_median", "sustained", "median lag (s)"),
            r.row("sustained_runs", "sustained", "rsync runs per node per delay window"),
            r.row("sustained_stale", "sustained",
                  "runs that left stale file contents (never converged)", count=True),
        ]
        for i in range(self.args.runs):  # rounds: drifting background load hits all tools
            for tool in self.tools:
                label = f"sustained-{tool}-{i + 1}"
                self.log(f"{label}: {s.sustained_rate} changes/s for {s.sustained_seconds:g} s")
                if tool == "floor":
                    self.run_guarded(keys, tool, label, lambda lb=label: self._transfer_run(lb))
                else:
                    self.run_guarded(keys, tool, label,
                                     lambda t=tool, lb=label: self._sustained_run(t, lb))

    def _changes(self, ws: Workspace, files: list[str], n: int, rate: float,
                 rng: random.Random, tag: str) -> list[tuple[str, float]]:
        """n changes at rate per second; returns the sampled new files and their write times."""
        s = self.sizes
        dirs = sorted({f.split("/", 1)[0] for f in files})
        samples = []
        t0 = time.monotonic()
        for i in range(n):
            wait = t0 + i / rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            if i % s.sample_every == 0:
                rel = f"{dirs[(i // s.sample_every) % len(dirs)]}/{tag}-{i:06d}"
                write_file(os.path.join(ws.src, rel), content(rel, s.file_size))
                samples.append((rel, time.time()))
            else:
                rel = rng.choice(files)
                write_file(os.path.join(ws.src, rel),
                           content(f"{rel} {tag} {i}", s.file_size - 64 + rng.randrange(128)))
        return samples

    def _sustained_run(self, tool: str, label: str) -> None:
        s, r = self.sizes, self.results
        ws = self.workspace(label)
        daemon = None
        try:
            files = make_files_tree(ws.src, s.base_dirs, s.base_files_per_dir, s.file_size)
            parallel_rsync(self.procs, ws.src, ws.nodes)
            daemon = self.launch(tool, ws, label)
            rng = random.Random(label)
            n = int(s.sustained_rate * s.sustained_seconds)
            cpu0, wall0, mono0 = daemon.cpu(), time.time(), time.monotonic()
            samples = self._changes(ws, files, n, s.sustained_rate, rng, "sample")
            cpu1, wall1, mono1 = daemon.cpu(), time.time(), time.monotonic()
            if mono1 - mono0 > s.sustained_seconds * 1.05:
                self.notes.append(f"{label}: the writer fell behind: {n} changes took "
                                  f"{mono1 - mono0:.1f} s")
            snap = snapshot(ws.src)
            diverged = None
            try:
                self.settle(daemon, ws, snap, mono1, "sustained", timeout=600)
            except ContentDiverged as e:
                diverged = e  # every sample arrived; the numbers below stand
            r.add("sustained_stale", tool, 0 if diverged is None else 1)
            lags = []
            for rel, written in samples:
                arrived = max(os.lstat(os.path.join(node, rel)).st_ctime_ns for node in ws.nodes)
                lags.append(arrived / 1e9 - written)
            windows = (wall1 - wall0) / DELAY
            starts = [(t, node) for t, node in daemon.starts() if wall0 <= t <= wall1]
            per_node = [sum(1 for _, x in starts if x == node) / windows for node in ws.nodes]
            r.add("sustained_cpu", tool, 100 * (cpu1 - cpu0) / (mono1 - mono0))
            r.add("sustained_lag", tool, max(lags))
            r.add("sustained_lag_median", tool, statistics.median(lags))
            r.add("sustained_runs", tool, max(per_node))
            if daemon.overflows():
                self.notes.append(f"{label}: {tool} reported an inotify queue overflow.")
            if diverged is not None:
                self.errors.append(f"{label}: {diverged}")
                self.log(f"FAILED {label}: {diverged}")
            else:
                self.verify(ws, label)
        finally:
            if daemon is not None:
                daemon.stop()
            ws.remove()

    def _transfer_run(self, label: str) -> None:
        """The floor's "one transfer": whole-tree rsyncs after one window's worth of changes."""
        s = self.sizes
        ws = self.workspace(label)
        try:
            files = make_files_tree(ws.src, s.base_dirs, s.base_files_per_dir, s.file_size)
            parallel_rsync(self.procs, ws.src, ws.nodes)
            rng = random.Random(label)
            per_window = max(1, int(s.sustained_rate * DELAY))
            self._changes(ws, files, per_window, 1e9, rng, "window")
            seconds = parallel_rsync(self.procs, ws.src, ws.nodes)
            self.results.add("sustained_lag", "floor", seconds)
            self.results.add("sustained_runs", "floor", 1.0)  # one run per window by design
            self.results.add("sustained_stale", "floor", 0)
            self.verify(ws, label)
        finally:
            ws.remove()

    # ---- scenario 5: idle

    def scenario_idle(self) -> None:
        s, r = self.sizes, self.results
        key = r.row("idle_cpu", "idle", f"daemon CPU over {s.idle_seconds:g} s, no changes (%)",
                    "{:.3f}")
        for i in range(self.args.runs):  # rounds: drifting background load hits all tools
            for tool in self.tools:
                label = f"idle-{tool}-{i + 1}"
                if tool == "floor":
                    r.add(key, tool, 0.0)  # no daemon, nothing runs
                    continue
                self.log(f"{label}: {s.idle_seconds:g} s")
                self.run_guarded([key], tool, label, lambda t=tool, lb=label: self._idle_run(t, lb))

    def _idle_run(self, tool: str, label: str) -> None:
        s = self.sizes
        ws = self.workspace(label)
        daemon = None
        try:
            make_files_tree(ws.src, s.base_dirs, s.base_files_per_dir, s.file_size)
            parallel_rsync(self.procs, ws.src, ws.nodes)
            daemon = self.launch(tool, ws, label)
            time.sleep(0.5)
            before, cpu0, t0 = len(daemon.starts()), daemon.cpu(), time.monotonic()
            deadline = t0 + s.idle_seconds
            while time.monotonic() < deadline:
                daemon.check_alive()
                time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
            cpu, elapsed = daemon.cpu() - cpu0, time.monotonic() - t0
            self.results.add("idle_cpu", tool, 100 * cpu / elapsed)
            extra = len(daemon.starts()) - before
            if extra:
                self.notes.append(f"{label}: {tool} started {extra} rsync(s) while idle.")
        finally:
            if daemon is not None:
                daemon.stop()
            ws.remove()

    # ---- the report

    def targets(self, key: str) -> list[tuple[str, bool | None]]:
        """(description, passed) for each target of a row; passed None = cannot tell."""
        r = self.results

        def m(k: str, tool: str) -> float | None:
            return r.median(k, tool)

        ino = m(key, "inosync")
        out: list[tuple[str, bool | None]] = []

        def check(desc: str, limit: float | None, strict: bool = False,
                  derived: bool = True) -> None:
            if limit is None or ino is None:
                out.append((f"{desc} (n/a)", None))
                return
            ok = ino < limit if strict else ino <= limit
            out.append((f"{desc} (= {limit:.3g})" if derived else desc, ok))

        floor, lsyncd = m(key, "floor"), m(key, "lsyncd")
        if key == "burst_lag":
            check("≤ delay + 1.5×floor", None if floor is None else DELAY + 1.5 * floor)
            check("≤ 0.4×lsyncd", None if lsyncd is None else 0.4 * lsyncd)
        elif key == "burst_cpu":
            check("≤ 0.5×lsyncd", None if lsyncd is None else 0.5 * lsyncd)
        elif key == "burst_rsyncs":
            check("≤ 2", 2, derived=False)
        elif key == "latency":
            check("≤ lsyncd", lsyncd)
        elif key.startswith("startup_") and key.split("_")[1].isdigit():
            check("≤ 1.3×floor", None if floor is None else 1.3 * floor)
        elif key == f"startup_rss_{self.sizes.memory_target_dirs}":
            check("≤ 100 MB", 100, derived=False)
        elif key == "sustained_runs":
            check("≤ 1", 1, derived=False)
        elif key == "sustained_lag":
            check("≤ 2×delay + one transfer", None if floor is None else 2 * DELAY + floor)
        elif key == "sustained_stale":
            check("= 0", 0, derived=False)
        elif key == "idle_cpu":
            check("< 0.1 %", 0.1, strict=True, derived=False)
        return out

    def table(self) -> str:
        r = self.results
        lines = [
            "| scenario | metric | inosync | floor | lsyncd | inosync/floor | inosync/lsyncd "
            "| target | result |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        def ratio(a: float | None, b: float | None) -> str:
            if a is None or b is None or b == 0:
                return "–"
            return f"{a / b:.2f}"

        for key, row in r.rows.items():
            ino, floor, lsy = (r.median(key, t) for t in ALL_TOOLS)
            if row.count:
                floor = lsy = None  # counts of failed runs: no ratios
            targets = self.targets(key)
            target = "; ".join(d for d, _ in targets) or "–"
            result = "; ".join("n/a" if ok is None else ("PASS" if ok else "FAIL")
                               for _, ok in targets) or "–"
            lines.append(f"| {row.scenario} | {row.metric} | {r.cell(key, 'inosync')} | "
                         f"{r.cell(key, 'floor')} | {r.cell(key, 'lsyncd')} | "
                         f"{ratio(ino, floor)} | {ratio(ino, lsy)} | {target} | {result} |")
        return "\n".join(lines)


def _sysctl(name: str) -> str:
    try:
        with open(f"/proc/sys/fs/inotify/{name}") as f:
            return f.read().strip()
    except OSError:
        return "?"


def _first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        text = (out.stdout or out.stderr).strip()
        return text.splitlines()[0] if text else "?"
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"


def machine_info() -> list[str]:
    model = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    commit = _first_line(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "inosync"],
                           capture_output=True, text=True).stdout.strip()
    return [
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M:%S} UTC",
        f"- CPU: {model}; nproc {os.cpu_count()}; memory {mem_kb / 1024 / 1024:.1f} GiB",
        f"- kernel: {platform.system()} {platform.release()}",
        f"- python: {platform.python_version()} ({sys.executable})",
        f"- rsync: {_first_line([RSYNC, '--version'])}",
        f"- lsyncd: {_first_line([LSYNCD, '--version']) if LSYNCD else 'not installed'}",
        f"- inosync: {commit}{' + uncommitted changes in inosync/' if dirty else ''}",
        f"- fs.inotify: max_user_watches {_sysctl('max_user_watches')}, max_queued_events "
        f"{_sysctl('max_queued_events')}",
    ]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Benchmark inosync against plain rsync (the floor) and lsyncd.")
    p.add_argument("--quick", action="store_true",
                   help="smoke version: tiny sizes, 1 run, burst+latency+idle (< 60 s)")
    p.add_argument("--runs", type=int, default=None, help="runs per scenario (default 3; quick 1)")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "latest.md"),
                   help="markdown report (default bench/results/latest.md)")
    p.add_argument("--scenarios", default=None,
                   help=f"comma-separated, from {','.join(ALL_SCENARIOS)}")
    p.add_argument("--tools", default=",".join(ALL_TOOLS),
                   help="comma-separated, from inosync,floor,lsyncd")
    p.add_argument("--idle-seconds", type=float, default=None)
    p.add_argument("--sustained-seconds", type=float, default=None)
    p.add_argument("--logs", metavar="DIR", help="copy daemon and rsync-start logs here")
    p.add_argument("--profile", metavar="DIR", help="run inosync under cProfile; .prof files here")
    p.add_argument("--pyspy", metavar="DIR", help="attach py-spy to inosync; folded stacks here")
    args = p.parse_args(argv)
    default = QUICK_SCENARIOS if args.quick else ALL_SCENARIOS
    args.scenarios = [x for x in (args.scenarios.split(",") if args.scenarios else default) if x]
    bad = [x for x in args.scenarios if x not in ALL_SCENARIOS]
    if bad:
        p.error(f"unknown scenario(s): {', '.join(bad)}")
    args.tools = [x for x in args.tools.split(",") if x]
    bad = [x for x in args.tools if x not in ALL_TOOLS]
    if bad:
        p.error(f"unknown tool(s): {', '.join(bad)}")
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    if args.runs < 1:
        p.error("--runs must be at least 1")
    for d in (args.logs, args.profile, args.pyspy):
        if d:
            os.makedirs(d, exist_ok=True)
    for name in ("logs", "profile", "pyspy"):
        if getattr(args, name):
            setattr(args, name, os.path.abspath(getattr(args, name)))
    return args


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if sys.platform != "linux" or os.geteuid() != 0:
        print("bench.py: must run as root on Linux (it mounts a tmpfs)", file=sys.stderr)
        return 2
    sizes = QUICK if args.quick else FULL
    if args.idle_seconds is not None:
        sizes = replace(sizes, idle_seconds=args.idle_seconds)
    if args.sustained_seconds is not None:
        sizes = replace(sizes, sustained_seconds=args.sustained_seconds)
    tools = list(args.tools)
    skipped = []
    if "lsyncd" in tools and not LSYNCD:
        tools.remove("lsyncd")
        skipped.append("lsyncd is not installed, its columns are empty "
                       "(install it with: apt-get install lsyncd)")
        print(f"note: {skipped[-1]}", file=sys.stderr)
    if args.pyspy and not shutil.which("py-spy"):
        print("bench.py: --pyspy needs py-spy (pip install py-spy)", file=sys.stderr)
        return 2
    # SIGINT too: a shell starts background jobs with SIGINT ignored, and
    # Python then never raises KeyboardInterrupt.
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, _interrupt)
    load_before = os.getloadavg()
    started = time.monotonic()
    try:
        with Bench(args, sizes, tools) as bench:
            bench.notes.extend(skipped)
            for scenario in args.scenarios:
                bench.current = scenario
                try:
                    getattr(bench, f"scenario_{scenario}")()
                except (RunFailed, OSError, subprocess.SubprocessError, ValueError) as e:
                    bench.errors.append(f"{scenario}: {type(e).__name__}: {e}")
                    bench.log(f"FAILED {scenario}: {e}")
            elapsed = time.monotonic() - started
            table = bench.table()
    except BenchError as e:
        print(f"bench.py: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench.py: interrupted; cleaned up", file=sys.stderr)
        return 130
    load_after = os.getloadavg()
    notes = list(bench.notes)
    if bench.checker:
        notes.append(bench.checker)
    for scenario, cpu in bench.checker_cpu.items():
        notes.append(f"{scenario}: the equality checks took {cpu:.2f} s of the benchmark's CPU "
                     "in all (only while tools were quiet).")
    notes.append(f"load average (1/5/15 min) before: {'/'.join(f'{x:.2f}' for x in load_before)},"
                 f" after: {'/'.join(f'{x:.2f}' for x in load_after)}. This {os.cpu_count()}-core "
                 "machine is shared with other engineers' jobs: absolute numbers are noisy, ratios "
                 "less so.")
    if args.profile or args.pyspy:
        notes.append("inosync ran under a profiler: its timings are not comparable.")
    notes += [f"error: {e}" for e in bench.errors]
    mode = "quick (smoke)" if args.quick else "full"
    report = "\n".join([
        "# inosync benchmark",
        "",
        f"Mode: {mode}; {args.runs} run(s) per scenario; delay {DELAY:g} s for every tool; "
        f"{NODES} local replicas on tmpfs; {elapsed / 60:.1f} min.",
        "",
        *machine_info(),
        "",
        table,
        "",
        "Notes:",
        "",
        *[f"- {n}" for n in notes],
        "",
    ])
    print(report)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    print(f"written to {out}", file=sys.stderr)
    return 1 if bench.errors else 0


if __name__ == "__main__":
    sys.exit(main())
