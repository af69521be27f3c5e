"""A hundred nodes from one machine (issue 19.3): 100 local nodes, and 50 ssh nodes
on network-namespace hosts, each taking a burst of changes.

Cases (each on a fresh source tree and empty nodes, one daemon start):

* local: ``--local`` local nodes (100). inosync with its default
  ``max_parallel``, inosync with no limit (``max_parallel`` = 10000: every
  node at once, as before the setting), and lsyncd 2.2 (one ``sync {
  default.rsync }`` per node, ``delay`` the same, ``archive = true``, and
  ``settings { maxProcesses }`` = inosync's default ``max_parallel``: the
  same number of rsyncs at once).
* ssh: ``--ssh`` ssh nodes (50), one per host: a network namespace with its
  own sshd behind a veth (tests/hosts.py, set up by slowlink.Link with one
  key for all; links not shaped, no added delay). inosync only, with its
  default ``max_parallel``; its ssh masters are opened spread out (10 at
  once, then 20 a second).

The tree: ``--files`` files of 512 bytes in directories of 100 (1,000). The
burst: ``--burst`` more files (2,500) in new directories, written at once.
Figures per case and tool:

* initial sync: seconds from launching the daemon until the last node
  equals the source;
* burst: seconds from the end of the write until the last node equals the
  source. When a node became equal is read from the node itself (the
  newest ctime in its tree, as bench/bench.py does), so polling does not
  bias it; equality is a walk comparing what ``rsync -a`` compares, and at
  the end every node is checked again with ``rsync -anc --delete``;
* source CPU: seconds of CPU of the daemon and every child it reaped
  (``utime + stime + cutime + cstime`` of /proc/PID/stat: its rsyncs, their
  ssh clients) from the start of the write until every run ended, plus the
  ssh master connections' own CPU (they leave the daemon's process tree:
  the benchmark is a child subreaper, so they become its children);
* RSS: the daemon's peak (VmHWM), and the peak sum of the daemon and every
  process below it, sampled every 0.1 s;
* most rsyncs at once: the daemon's rsync children, sampled every 0.1 s.

Everything lives on a tmpfs mounted for the run (removed at the end).
Needs root (tmpfs, network namespaces, sshd); lsyncd is optional. Run with
``nice -n 5`` on a shared machine and say so: other processes add noise.

    python bench/fanout.py [--local 100] [--ssh 50] [--files 1000] [--burst 2500]
                           [--tools inosync,inosync-unlimited,lsyncd] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # a script: the test hosts and helpers live there
sys.path.insert(0, str(REPO / "bench"))
from helpers import inosync_argv, private_tmp_root, tree_diff, write_config  # noqa: E402
from hosts import SUBNET, can_make_namespaces  # noqa: E402
from slowlink import Link  # noqa: E402

from bench import (  # noqa: E402
    CLK_TCK,
    LSYNCD,
    Procs,
    _ppid_map,
    children_of,
    descendants,
    make_files_tree,
    node_equal,
    snapshot,
)

sys.path.insert(0, str(REPO))
from inosync.slots import default_max_parallel  # noqa: E402

DELAY = 1.0  # edelay, lsyncd's delay
QUIET = DELAY + 0.5  # no rsync child for this long: the daemon is done
UNLIMITED = 10_000
TOOLS = ("inosync", "inosync-unlimited", "lsyncd")


def free_indices(count: int, first: int = 60) -> list[int]:
    """count /30s of the test hosts' range that nothing uses now (another run, a
    test's host): two veths with one subnet would steal each other's route."""
    taken = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True,
                           text=True, check=True).stdout
    free = [i for i in range(first, 250) if f" {SUBNET}.{i}." not in taken]
    if len(free) < count:
        raise SystemExit(f"only {len(free)} free subnets left in {SUBNET}.0.0/16")
    return free[:count]


def stat_fields(pid: int) -> list[bytes]:
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    return data[data.rindex(b")") + 2:].split()


def tree_cpu(pid: int) -> float:
    """CPU seconds of pid and of every child it reaped (and theirs)."""
    f = stat_fields(pid)
    return sum(int(x) for x in f[11:15]) / CLK_TCK


def status_kb(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def become_subreaper() -> None:
    """Orphans below us become our children: the ssh masters, which detach from the
    daemon's tree (ControlPersist), can then be told from other daemons' masters."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def masters() -> list[int]:
    """Our ssh masters: children of ours (see become_subreaper) that ssh retitled
    "ssh: SOCKET [mux]"."""
    found = []
    for pid, parent in _ppid_map().items():
        if parent != os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"[mux]" in f.read():
                    found.append(pid)
        except OSError:
            continue
    return found


def masters_cpu() -> float:
    """CPU seconds of our ssh masters."""
    total = 0.0
    for pid in masters():
        try:
            f = stat_fields(pid)
        except OSError:
            continue
        total += (int(f[11]) + int(f[12])) / CLK_TCK
    return total


def reap_masters() -> None:
    """Masters told to exit at the daemon's stop are our zombies now."""
    for pid in masters() + [p for p, parent in _ppid_map().items() if parent == os.getpid()]:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)


class Sampler(threading.Thread):
    """Every 0.1 s: the daemon's rsync children, and the RSS of it and all below it."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.stopped = threading.Event()
        self.peak_rsyncs = 0
        self.peak_rss_kb = 0
        self.last_busy = time.monotonic()

    def run(self) -> None:
        while not self.stopped.wait(0.1):
            kids = children_of(self.pid)
            rsyncs = 0
            for kid in kids:
                try:
                    with open(f"/proc/{kid}/comm") as f:
                        rsyncs += f.read().strip() == "rsync"
                except OSError:
                    pass
            if kids:
                self.last_busy = time.monotonic()
            self.peak_rsyncs = max(self.peak_rsyncs, rsyncs)
            below = [self.pid, *descendants(self.pid), *masters()]
            rss = sum(status_kb(p, "VmRSS") for p in below)
            self.peak_rss_kb = max(self.peak_rss_kb, rss)

    def reset(self) -> None:
        self.peak_rsyncs = self.peak_rss_kb = 0


@dataclass
class Figures:
    case: str
    tool: str
    nodes: int
    max_parallel: int | None
    initial_s: float | None = None
    burst_s: float | None = None
    cpu_s: float | None = None
    masters_cpu_s: float = 0.0
    daemon_peak_rss_mb: float | None = None
    total_peak_rss_mb: float | None = None
    peak_rsyncs: int = 0
    equal: bool = False
    left: list[str] = field(default_factory=list)


def wait_equal(src: Path, nodes: list[Path], limit: float, alive: subprocess.Popen[bytes]
               ) -> float | None:
    """The wall-clock time the last node became equal to src (its newest ctime), or
    None after limit seconds."""
    snap = snapshot(str(src))
    newest: dict[Path, int] = {}
    deadline = time.monotonic() + limit
    while len(newest) < len(nodes):
        if time.monotonic() > deadline or alive.poll() is not None:
            return None
        for node in nodes:
            if node not in newest:
                got = node_equal(snap, str(node))
                if got is not None:
                    newest[node] = got
        time.sleep(0.2)
    return max(newest.values()) / 1e9


def wait_quiet(sampler: Sampler, limit: float = 120.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() - sampler.last_busy < QUIET and time.monotonic() < deadline:
        time.sleep(0.1)


def inosync_argv_for(work: Path, src: Path, dests: list[str], max_parallel: int,
                     ssh: str | None) -> list[str]:
    settings: dict[str, object] = {"wpath": str(src), "rnodes": dests, "edelay": DELAY,
                                   "pidfile": None, "max_parallel": max_parallel}
    if ssh:
        settings["ssh"] = [ssh]
    conf = write_config(work / "inosync.conf", **settings)
    return [*inosync_argv(), "-c", str(conf)]


def lsyncd_argv(work: Path, src: Path, nodes: list[Path], processes: int) -> list[str]:
    assert LSYNCD is not None
    syncs = "".join(f"sync {{ default.rsync, source = {json.dumps(str(src))}, "
                    f"target = {json.dumps(str(n))}, delay = {DELAY:g}, "
                    f"rsync = {{ archive = true }} }}\n" for n in nodes)
    conf = work / "lsyncd.conf.lua"
    conf.write_text(f"settings {{ nodaemon = true, maxProcesses = {processes} }}\n{syncs}")
    return [LSYNCD, str(conf)]


def run_one(procs: Procs, work: Path, fig: Figures, argv: list[str], env: dict[str, str],
            nodes: list[Path], files: int, burst: int, limit: float) -> Figures:
    src = work / "src"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir()
    make_files_tree(str(src), max(1, files // 100), min(files, 100), 512)
    for node in nodes:
        shutil.rmtree(node, ignore_errors=True)
        node.mkdir(parents=True)
    with open(work / f"{fig.case}-{fig.tool}.log", "wb") as log:
        launched = time.time()
        daemon = procs.spawn(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
    sampler = Sampler(daemon.pid)
    sampler.start()
    try:
        done = wait_equal(src, nodes, limit, daemon)
        if done is None:
            fig.left = ["(the initial sync did not finish)"]
            return fig
        fig.initial_s = done - launched
        wait_quiet(sampler)
        cpu0, masters0 = tree_cpu(daemon.pid), masters_cpu()
        sampler.reset()
        make_files_tree(str(src), max(1, burst // 100), min(burst, 100), 512, prefix="b")
        written = time.time()
        done = wait_equal(src, nodes, limit, daemon)
        wait_quiet(sampler)
        if done is not None:
            fig.burst_s = done - written
        fig.cpu_s = tree_cpu(daemon.pid) - cpu0
        fig.masters_cpu_s = masters_cpu() - masters0
        fig.daemon_peak_rss_mb = status_kb(daemon.pid, "VmHWM") / 1024
        fig.total_peak_rss_mb = sampler.peak_rss_kb / 1024
        fig.peak_rsyncs = sampler.peak_rsyncs
        fig.left = [f"{n.name}: {d}" for n in nodes for d in tree_diff(src, n)[:2]]
        fig.equal = done is not None and not fig.left
        return fig
    finally:
        sampler.stopped.set()
        procs.stop(daemon, grace=15.0)
        time.sleep(0.5)  # the masters it told to exit
        reap_masters()


def local_case(procs: Procs, work: Path, args: argparse.Namespace, tools: list[str],
               default: int) -> list[Figures]:
    found = []
    for tool in tools:
        nodes = [work / "local" / tool / f"n{i:03d}" for i in range(args.local)]
        if tool == "lsyncd":
            argv, limit = lsyncd_argv(work, work / "src", nodes, default), default
        else:
            limit = default if tool == "inosync" else UNLIMITED
            argv = inosync_argv_for(work, work / "src", [str(n) for n in nodes], limit, None)
        fig = Figures("local", tool, len(nodes), limit)
        found.append(run_one(procs, work, fig, argv, dict(os.environ), nodes, args.files,
                             args.burst, args.limit))
        shutil.rmtree(work / "local" / tool)
        print(f"local, {tool}: done", file=sys.stderr)
    return found


def ssh_case(procs: Procs, work: Path, args: argparse.Namespace, default: int) -> list[Figures]:
    with Link(work / "ssh", indices=free_indices(args.ssh), mbit=None, one_way_ms=0) as link:
        nodes = [work / "ssh" / "nodes" / f"n{i:03d}" for i in range(args.ssh)]
        dests = [h.dest(n) for h, n in zip(link.hosts, nodes)]
        argv = inosync_argv_for(work, work / "src", dests, default, link.ssh)
        fig = Figures("ssh", "inosync", len(nodes), default)
        found = run_one(procs, work, fig, argv, link.env(), nodes, args.files, args.burst,
                        args.limit)
    print("ssh, inosync: done", file=sys.stderr)
    return [found]


def cell(value: float | None, fmt: str = "{:.1f}") -> str:
    return "n/a" if value is None else fmt.format(value)


def table(figures: list[Figures]) -> str:
    head = ("| case | tool | max at once | initial sync (s) | burst: last node (s) | "
            "source CPU (s) | daemon RSS peak (MB) | daemon+children RSS peak (MB) | "
            "most rsyncs seen |")
    lines = [head, "|" + "---|" * 9]
    for f in figures:
        cpu = cell(f.cpu_s) + (f" + {f.masters_cpu_s:.1f} ssh masters" if f.masters_cpu_s
                               else "")
        lines.append(f"| {f.case} ({f.nodes} nodes) | {f.tool} | {f.max_parallel} | "
                     f"{cell(f.initial_s)} | {cell(f.burst_s)} | {cpu} | "
                     f"{cell(f.daemon_peak_rss_mb)} | {cell(f.total_peak_rss_mb)} | "
                     f"{f.peak_rsyncs} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--local", type=int, default=100, help="local nodes (100; 0: none)")
    p.add_argument("--ssh", type=int, default=50, help="ssh nodes, one host each (50; 0: none)")
    p.add_argument("--files", type=int, default=1000, help="files in the tree (1000)")
    p.add_argument("--burst", type=int, default=2500, help="files the burst writes (2500)")
    p.add_argument("--tools", default=",".join(TOOLS), help="for the local case, from "
                   + ",".join(TOOLS))
    p.add_argument("--max-parallel", type=int, default=None,
                   help="inosync's max_parallel and lsyncd's maxProcesses (inosync's default)")
    p.add_argument("--limit", type=float, default=300, help="seconds a sync may take")
    p.add_argument("--json", help="write the figures to this file too")
    p.add_argument("--keep", action="store_true", help="keep the daemons' logs")
    args = p.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces, sshd)", file=sys.stderr)
        return 2
    if args.ssh and can_make_namespaces():
        print(f"no ssh case: {can_make_namespaces()}", file=sys.stderr)
        args.ssh = 0
    tools = [t for t in args.tools.split(",") if t]
    if "lsyncd" in tools and not LSYNCD:
        print("lsyncd is not installed (apt-get install lsyncd): left out", file=sys.stderr)
        tools.remove("lsyncd")
    default = args.max_parallel or default_max_parallel()
    work = Path(tempfile.mkdtemp(prefix="inosync-fanout-", dir=private_tmp_root()))
    # A tmpfs: 150 nodes of the tree are half a million files, which a shared
    # disk would write (and remove) slower than the tools replicate them.
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16g,mode=0700", "fanout", str(work)],
                   check=True)
    become_subreaper()
    procs = Procs()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))
    figures: list[Figures] = []
    try:
        if args.local:
            figures += local_case(procs, work, args, tools, default)
        if args.ssh:
            figures += ssh_case(procs, work, args, default)
    finally:
        procs.stop_all()
        if args.keep:
            logs = Path(tempfile.mkdtemp(prefix="inosync-fanout-logs-", dir=private_tmp_root()))
            for log in work.glob("*.log"):
                shutil.copy(log, logs)
            print(f"logs kept in {logs}", file=sys.stderr)
        subprocess.run(["umount", str(work)], check=False)
        os.rmdir(work)
    load = os.getloadavg()
    print(f"{os.cpu_count()} CPUs, load {load[0]:.1f}; tree {args.files} files, burst "
          f"{args.burst} files of 512 bytes; delay {DELAY:g} s")
    print(table(figures))
    for f in figures:
        if not f.equal:
            print(f"{f.case}, {f.tool}: NOT EQUAL: {f.left[:5]}")
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(f) for f in figures], indent=1))
    return 0 if all(f.equal for f in figures) else 1


if __name__ == "__main__":
    sys.exit(main())
