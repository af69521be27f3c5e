"""Restarts on a big tree (issue 18): from the checkpoint, with ``--full``, and
lsyncd's start-up, plus a SIGHUP that adds a node.

Three nodes: two local directories and one ssh node in a network namespace
behind 20 Mbit/s each way (tc tbf) and 50 ms of round trip (a delaying
ProxyCommand, as in slowlink.py: this kernel has no netem). The tree
(``--dirs`` leaf directories in groups of 100, ``--files`` small files spread
over them) is copied to the nodes with a local ``rsync -a`` first (the
namespace shares our filesystem), never over the slow link; then one inosync
start and clean stop records the checkpoints.

For each of (a) inosync from its checkpoint, (b) inosync ``--full`` (a full
``rsync -a --delete`` to every node) and (c) lsyncd (default.rsync; its
start-up is a full rsync per node, over ssh for the slow one), in turn:
``--changes`` changes are made to the tree while nothing runs (files created
and rewritten, a directory renamed, files deleted), the tool is started, and
the time from its start until each node is in sync is taken from its log
(inosync's "<node>: synced" line per node, lsyncd's "Startup of ... finished"
per sync), with the bytes on the slow link's veth (both ways) meanwhile. Each
node is then compared with ``rsync -anc --delete`` (outside the timing). (d)
inosync runs, a fourth (local, already equal) node is added to its
configuration and it gets SIGHUP: the time until all four nodes say "synced"
again, and the bytes on the slow link.

Needs root, iproute2, sshd; lsyncd if installed (``apt-get install lsyncd``).

    python bench/restart.py                               # 20,000 dirs, 100,000 files
    python bench/restart.py --dirs 200000 --files 1000000 # the issue's size (long)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # a script: the test hosts live there
sys.path.insert(0, str(REPO / "bench"))
from helpers import RSYNC, inosync_argv, private_tmp_root, tree_diff, write_config  # noqa: E402
from hosts import SUBNET, subnet_index  # noqa: E402
from slowlink import ONE_WAY_MS, Link, wire_bytes  # noqa: E402

from inosync.checkpoint import MARGIN  # noqa: E402

MODES = ("checkpoint", "full", "lsyncd")
LSYNCD = shutil.which("lsyncd")
WATCHES = Path("/proc/sys/fs/inotify/max_user_watches")
PER_GROUP = 100  # leaf directories per top-level directory
EDELAY = 1.0


# ---------------------------------------------------------------- the tree


def leaf(i: int) -> str:
    return f"g{i // PER_GROUP:04d}/d{i % PER_GROUP:02d}"


def file_path(j: int, dirs: int) -> str:
    return f"{leaf(j % dirs)}/f{j:07d}"


def make_tree(src: Path, dirs: int, files: int) -> None:
    """Small files (a few bytes each: one block), plain syscalls: 1M files in minutes."""
    for i in range(dirs):
        os.makedirs(src / leaf(i))
    (src / "mark").mkdir()  # prime() changes a file here: something to send each time
    for j in range(files):
        fd = os.open(src / file_path(j, dirs), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, b"%d\n" % j)
        os.close(fd)


@dataclass
class Changes:
    created: int = 0
    modified: int = 0
    renamed: int = 0
    deleted: int = 0

    def total(self) -> int:
        return self.created + self.modified + self.renamed + self.deleted


def change_tree(src: Path, dirs: int, files: int, count: int, rnd: random.Random,
                tag: str) -> Changes:
    """count changes made while nothing runs: about 40% created files, 40%
    rewritten ones, one leaf directory renamed, the rest deleted files."""
    done = Changes()
    victim = src / leaf(rnd.randrange(dirs))
    while not victim.is_dir():  # renamed away in an earlier round
        victim = src / leaf(rnd.randrange(dirs))
    victim.rename(victim.with_name(f"{victim.name}-{tag}"))
    done.renamed = 1
    creates = count * 2 // 5
    while done.created < creates:
        where = src / leaf(rnd.randrange(dirs))
        if where.is_dir():  # not a leaf renamed away before
            (where / f"new-{tag}-{done.created}").write_bytes(b"new %d\n" % done.created)
            done.created += 1
    while done.total() < count:
        path = src / file_path(rnd.randrange(files), dirs)
        if not path.exists():  # deleted or renamed away before
            continue
        if done.modified < creates:
            path.write_bytes(b"changed in round " + tag.encode() + b"\n")
            done.modified += 1
        else:
            path.unlink()
            done.deleted += 1
    return done


def seed(src: Path, nodes: list[Path]) -> None:
    """The nodes as copies of the tree, locally (never over the slow link)."""
    procs = [subprocess.Popen([RSYNC, "-a", "--delete", f"{src}/", f"{n}/"]) for n in nodes]
    if any(p.wait() for p in procs):
        raise RuntimeError("seeding the nodes with rsync -a failed")


# ---------------------------------------------------------------- figures


@dataclass
class Figure:
    seconds: float | None  # None: not in sync within the limit
    megabytes: float  # on the slow link, both ways
    how: str = ""  # what the tool said it did, in short
    equal: bool = True  # every node equal to the source by rsync -anc afterwards
    left: list[str] = field(default_factory=list)


def wait_for(done: Callable[[], bool], started: float, limit: float,
             alive: Callable[[], bool]) -> float | None:
    """Seconds from started until done(); None after limit or if the process died."""
    while not done():
        if time.monotonic() - started > limit or not alive():
            return None
        time.sleep(0.05)
    return time.monotonic() - started


def synced_all(log: Path, dests: list[str], offset: int = 0) -> bool:
    text = log.read_text(errors="replace")[offset:]
    return all(f"{d}: synced " in text for d in dests)


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Rig:
    """The link, the tree, the nodes, and the tools started on them."""

    def __init__(self, link: Link, work: Path, limit: float) -> None:
        self.link, self.work, self.limit = link, work, limit
        self.src = work / "src"
        self.nodes = [work / "node1", work / "node2", work / "slow"]
        self.dests = [str(self.nodes[0]), str(self.nodes[1]), link.host.dest(self.nodes[2])]
        self.conf = work / "inosync.conf"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.runs = 0
        self.primed = 0
        self.changed_at = time.time()  # of the tree's last change (made just before)

    def write_conf(self, dests: list[str]) -> None:
        write_config(self.conf, wpath=str(self.src), rnodes=dests, ssh=[self.link.ssh],
                     edelay=EDELAY, pidfile=None)

    def spawn(self, argv: list[str], name: str) -> tuple[subprocess.Popen[bytes], Path]:
        self.runs += 1
        log = self.work / f"{self.runs:02d}-{name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=self.link.env())
        self.procs.append(proc)
        return proc, log

    def stop_all(self) -> None:
        for proc in self.procs:
            stop(proc)

    def verify(self, nodes: list[Path]) -> list[str]:
        """What still differs, by rsync -anc --delete (all nodes at once: on a tree
        of a million files each comparison takes minutes)."""
        with ThreadPoolExecutor(len(nodes)) as pool:
            diffs = list(pool.map(lambda node: tree_diff(self.src, node), nodes))
        return [f"{node.name}: {line}" for node, diff in zip(nodes, diffs) for line in diff[:5]]

    def prime(self) -> None:
        """One start (the first time a full sync: no checkpoint yet) and a clean
        stop that records each node's checkpoint. It stops only once the tree's
        last change is MARGIN old, so that the checkpoint's margin holds nothing
        made before (as a real tree's untouched parts are not in it)."""
        self.write_conf(self.dests)
        if self.primed:  # a start with nothing to send says no "synced": give it a file
            (self.src / "mark" / "primed").write_text(f"{self.primed}\n")
            self.changed_at = time.time()
        self.primed += 1
        proc, log = self.spawn([*inosync_argv(), "-c", str(self.conf)], "prime")
        started = time.monotonic()
        if wait_for(lambda: synced_all(log, self.dests), started, self.limit,
                    lambda: proc.poll() is None) is None:
            raise RuntimeError(f"the start before the runs never synced every node: see {log}")
        time.sleep(max(0.0, self.changed_at + MARGIN + 0.5 - time.time()))
        stop(proc)

    def restart(self, mode: str) -> Figure:
        """Start the tool on the changed tree; time and bytes until every node is in sync."""
        veth = self.link.host.veth
        if mode == "lsyncd":
            argv, done_of = self.lsyncd_argv(), self.lsyncd_done
        else:
            self.write_conf(self.dests)
            argv = [*inosync_argv(), "-c", str(self.conf), *(["--full"] if mode == "full" else [])]
            done_of = self.inosync_done
        b0, started = wire_bytes(veth), time.monotonic()
        proc, log = self.spawn(argv, mode)
        took = wait_for(lambda: done_of(log), started, self.limit, lambda: proc.poll() is None)
        megabytes = (wire_bytes(veth) - b0) / 1e6
        stop(proc)
        text = log.read_text(errors="replace")
        figure = Figure(took, megabytes, how=self.how(mode, text))
        figure.left = self.verify(self.nodes)
        figure.equal = not figure.left
        if took is None:
            figure.left.insert(0, f"not in sync within {self.limit:.0f} s: see {log}")
        return figure

    def inosync_done(self, log: Path) -> bool:
        return synced_all(log, self.dests)

    def lsyncd_done(self, log: Path) -> bool:
        text = log.read_text(errors="replace")
        return len(re.findall(r"Startup of .* finished", text)) >= len(self.dests)

    def lsyncd_argv(self) -> list[str]:
        """default.rsync for each node; over the same ssh wrapper for the slow one."""
        assert LSYNCD is not None
        syncs = ""
        for dest in self.dests:
            rsh = f", rsh = {json.dumps(self.link.ssh)}" if "@" in dest else ""
            syncs += (f"sync {{ default.rsync, source = {json.dumps(str(self.src))}, "
                      f"target = {json.dumps(dest)}, delay = {EDELAY:g}, "
                      f"rsync = {{ archive = true{rsh} }} }}\n")
        conf = self.work / "lsyncd.conf.lua"
        conf.write_text(f"settings {{ nodaemon = true, maxProcesses = {len(self.dests)} }}\n"
                        f"{syncs}")
        return [LSYNCD, str(conf)]

    @staticmethod
    def how(mode: str, text: str) -> str:
        if mode == "lsyncd":
            return f"{len(re.findall(r'Startup of .* finished', text))} start-up rsyncs"
        resumed = len(re.findall(r": starting from its checkpoint", text))
        full = len(re.findall(r": synced full sync", text))
        return f"{resumed} from checkpoint, {full} full syncs"

    def hup_adds_node(self) -> Figure:
        """(d) inosync running and in sync; a fourth node (local, already equal)
        added to the configuration, then SIGHUP: until all four say synced."""
        extra = self.work / "node4"
        self.write_conf(self.dests)
        proc, log = self.spawn([*inosync_argv(), "-c", str(self.conf)], "hup")
        alive = lambda: proc.poll() is None  # noqa: E731
        if wait_for(lambda: synced_all(log, self.dests), time.monotonic(), self.limit,
                    alive) is None:
            stop(proc)
            return Figure(None, 0.0, "never in sync before the HUP", False, [str(log)])
        time.sleep(EDELAY + 1)  # nothing left in flight
        seed(self.src, [extra])
        dests = [*self.dests, str(extra)]
        self.write_conf(dests)
        offset = len(log.read_text(errors="replace"))
        veth = self.link.host.veth
        b0, started = wire_bytes(veth), time.monotonic()
        proc.send_signal(signal.SIGHUP)
        # Only the new node gets a run (issue 18.4): the others, unchanged and in
        # sync, get none, so their equality is checked by verify() below.
        took = wait_for(lambda: "reloaded" in log.read_text(errors="replace")[offset:]
                        and synced_all(log, [str(extra)], offset), started, self.limit, alive)
        megabytes = (wire_bytes(veth) - b0) / 1e6
        stop(proc)
        after = log.read_text(errors="replace")[offset:]
        said = re.search(r"reloaded; [^\n]*", after)
        full = len(re.findall(r": synced full sync", after))
        figure = Figure(took, megabytes, f"{said.group(0) if said else 'no reload line'}; "
                        f"{full} full syncs")
        figure.left = self.verify([*self.nodes, extra])
        figure.equal = not figure.left
        return figure


# ---------------------------------------------------------------- the run


@contextmanager
def watches(needed: int) -> Iterator[None]:
    """Enough inotify watches for a tree of this size, put back afterwards."""
    saved = WATCHES.read_text().strip()
    if int(saved) < needed:
        WATCHES.write_text(str(needed))
    try:
        yield
    finally:
        WATCHES.write_text(saved)


def free_index(first: int = 18) -> int:
    """A /30 of the test hosts' range that nothing here uses now (another run,
    a test's host): two veths with one subnet would steal each other's route."""
    taken = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True,
                           text=True, check=True).stdout
    for index in range(first, 250):
        if f" {SUBNET}.{subnet_index(index)}." not in taken:
            return index
    raise RuntimeError(f"no free subnet left in {SUBNET}.0.0/16")


def _stop_signal(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # unwinds through every cleanup


def median(figures: list[Figure]) -> Figure:
    times = [f.seconds for f in figures]
    seconds = None if None in times else statistics.median(t for t in times if t is not None)
    return Figure(seconds, statistics.median(f.megabytes for f in figures),
                  "; ".join(sorted({f.how for f in figures})),
                  all(f.equal for f in figures), [x for f in figures for x in f.left])


def measure(args: argparse.Namespace, modes: list[str], work: Path) -> dict[str, object]:
    rnd = random.Random(args.seed)
    src = work / "src"
    started = time.monotonic()
    make_tree(src, args.dirs, args.files)
    print(f"tree made in {time.monotonic() - started:.1f} s", file=sys.stderr)
    with Link(work, index=free_index()) as link:
        rig = Rig(link, work, args.limit)
        try:
            seed(src, rig.nodes)
            print(f"nodes seeded at {time.monotonic() - started:.1f} s", file=sys.stderr)
            rig.prime()
            runs: dict[str, list[Figure]] = {m: [] for m in modes}
            changes: list[Changes] = []
            for r in range(args.runs):
                for mode in modes:
                    if mode == "checkpoint" and r:  # as fresh a checkpoint as the first run's,
                        rig.prime()  # not one older than the other tools' rounds since
                    changes.append(change_tree(src, args.dirs, args.files, args.changes, rnd,
                                               f"{mode}{r}"))
                    rig.changed_at = time.time()
                    runs[mode].append(rig.restart(mode))
                    print(f"{mode}, run {r + 1}: {runs[mode][-1]}", file=sys.stderr)
            hup = rig.hup_adds_node() if args.hup else None
        finally:
            rig.stop_all()
    return {"figures": {m: median(f) for m, f in runs.items()}, "hup": hup,
            "changes": asdict(changes[0]) if changes else {}}


def ratio(a: Figure | None, b: Figure | None, attr: str) -> float | None:
    if a is None or b is None:
        return None
    x, y = getattr(a, attr), getattr(b, attr)
    return None if x is None or not y else x / y


def report(args: argparse.Namespace, result: dict[str, object],
           modes: list[str]) -> dict[str, object]:
    figures: dict[str, Figure] = result["figures"]  # type: ignore[assignment]
    hup: Figure | None = result["hup"]  # type: ignore[assignment]
    ck, full, ls = (figures.get(m) for m in MODES)
    ratios = {"time checkpoint/full": ratio(ck, full, "seconds"),
              "bytes checkpoint/full": ratio(ck, full, "megabytes"),
              "time checkpoint/lsyncd": ratio(ck, ls, "seconds"),
              "bytes checkpoint/lsyncd": ratio(ck, ls, "megabytes")}
    targets = {"time <= 0.2 x full": _le(ratios["time checkpoint/full"], 0.2),
               "bytes <= 0.05 x full": _le(ratios["bytes checkpoint/full"], 0.05)}
    dirs = args.dirs + (args.dirs + PER_GROUP - 1) // PER_GROUP
    print(f"tree: {dirs:,} directories ({args.dirs:,} leaves), {args.files:,} files; "
          f"{args.changes} changes while stopped ({result['changes']}); nodes: 2 local, "
          f"1 ssh at 20 Mbit/s, {2 * ONE_WAY_MS} ms round trip; median of {args.runs}")
    print(f"{'':28}" + "".join(f"{m:>12}" for m in modes) + f"{'ckpt/full':>12}"
          f"{'ckpt/lsyncd':>13}")
    for label, attr, key, fmt in (("restart until in sync (s)", "seconds", "time", "{:.2f}"),
                                  ("slow-link bytes (MB)", "megabytes", "bytes", "{:.3f}")):
        cells = "".join(f"{_fmt(getattr(figures[m], attr), fmt):>12}" for m in modes)
        print(f"{label:28}{cells}{_fmt(ratios[f'{key} checkpoint/full'], '{:.3g}'):>12}"
              f"{_fmt(ratios[f'{key} checkpoint/lsyncd'], '{:.3g}'):>13}")
    for m in modes:
        f = figures[m]
        print(f"{m}: {f.how}; {'equal' if f.equal else 'NOT EQUAL: ' + '; '.join(f.left[:5])}")
    if hup is not None:
        print(f"SIGHUP adding a 4th (local) node: {_fmt(hup.seconds, '{:.2f}')} s until all "
              f"4 synced, {hup.megabytes:.3f} MB on the slow link; {hup.how}; "
              f"{'equal' if hup.equal else 'NOT EQUAL: ' + '; '.join(hup.left[:5])}")
    print("targets: " + ", ".join(f"{k}: {'met' if v else 'not met' if v is False else '--'}"
                                  for k, v in targets.items()))
    return {"tree": {"directories": dirs, "leaf_directories": args.dirs, "files": args.files},
            "changes": result["changes"], "runs": args.runs,
            "link": {"mbit": 20, "rtt_ms": 2 * ONE_WAY_MS},
            "figures": {m: asdict(f) for m, f in figures.items()},
            "ratios": ratios, "targets": targets,
            "hup_adds_node": asdict(hup) if hup is not None else None}


def _fmt(value: float | None, fmt: str) -> str:
    return "--" if value is None else fmt.format(value)


def _le(value: float | None, bound: float) -> bool | None:
    return None if value is None else value <= bound


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dirs", type=int, default=20_000, help="leaf directories (default 20,000)")
    p.add_argument("--files", type=int, default=100_000, help="files (default 100,000)")
    p.add_argument("--changes", type=int, default=100, help="changes made while stopped")
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated, from "
                   + ",".join(MODES))
    p.add_argument("--runs", type=int, default=1, help="runs of each mode (medians shown)")
    p.add_argument("--no-hup", dest="hup", action="store_false", help="leave out (d)")
    p.add_argument("--seed", type=int, default=18)
    p.add_argument("--limit", type=float, default=3600,
                   help="seconds a start may take before it counts as never in sync")
    p.add_argument("--json", default=str(REPO / "bench" / "results" / "restart.json"),
                   help="where the results go as JSON (default bench/results/restart.json)")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = p.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces, tc)", file=sys.stderr)
        return 2
    modes = [m for m in args.modes.split(",") if m]
    if bad := [m for m in modes if m not in MODES]:
        print(f"--modes: unknown {', '.join(bad)}; choose from {', '.join(MODES)}",
              file=sys.stderr)
        return 2
    if "lsyncd" in modes and not LSYNCD:
        print("lsyncd is not installed (apt-get install lsyncd): its column is left out",
              file=sys.stderr)
        modes.remove("lsyncd")
    if args.files < args.dirs or args.changes < 10 or args.files < 10 * args.changes:
        print("need --files >= --dirs, --changes >= 10 and --files >= 10 x --changes",
              file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="inosync-restart-", dir=private_tmp_root()))
    old = {s: signal.signal(s, _stop_signal) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        with watches(args.dirs * 2 + 10_000):
            result = measure(args, modes, work)
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    data = report(args, result, modes)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2) + "\n")
    figures: dict[str, Figure] = result["figures"]  # type: ignore[assignment]
    hup: Figure | None = result["hup"]  # type: ignore[assignment]
    ok = all(f.equal and f.seconds is not None for f in figures.values())
    return 0 if ok and (hup is None or hup.equal) else 1


if __name__ == "__main__":
    sys.exit(main())
