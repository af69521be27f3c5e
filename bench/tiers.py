"""Relay tiers against a direct fan-out, over shaped links (issue 19.2).

Thirteen machines, each a network namespace with its own sshd (tests/hosts.py),
all plugged into one switch (a bridge) through their own veth, each veth
limited to ``--mbit`` (default 100 Mbit/s) each way with tc tbf:

* T (tiers): the source pushes to 3 relays; each relay runs its own inosync
  on its copy of the tree and pushes to its 3 edges (9 edges).
* D (direct): the source pushes to 12 edges (the same 12 machines).

Every daemon uses ssh (one connection per node, inosync's default) and
``edelay`` = ``--edelay`` (default 1 s). Why 100 Mbit/s on every machine: the
constraint tiers answer is the source's uplink (each byte leaves it once per
node it pushes to), and 100 Mbit/s is a common committed rate for an origin
server's port; giving relays and edges the same port makes the relays no
faster than the source, so tiers win only by spreading the fan-out, not by
better hardware. It also keeps the busiest moment (4 links at once in T) within
what 2 cores can encrypt, so the links, not the CPU, bound the transfers.
There is no added delay (this kernel has no netem, and tests/delayproxy.py
would copy every byte of the 600 MB through Python): a round trip is well
under a millisecond, plus tbf's queue when a link is full (up to 400 ms).

The same data in both layouts (``--seed``): a burst of ``--megabytes`` (50)
in ``--files`` (2,000) files of random sizes in directories of 100, then the
rename of one directory, then ``--changes`` (100) small changes (a line
appended to as many files). Each phase is timed from its first write on the
source (the burst's data is made beforehand: writing it takes under a
second) until each machine equals the source: a cheap probe per machine (the
changed paths' size and mtime, in order, polled every 50 ms; then one walk
of the whole tree: every name, mode, size and mtime), and, outside the
timing, ``rsync -anc --delete`` over every tree to confirm.
Bytes are what each machine sent on its veth (our end's rx counter) from the
change until the last machine was equal.

Per tier: the time until the last relay (T), and the last edge (T and D).
Targets of the issue: the source's bytes in T at most 0.3 x in D, and in T
the last edge within 2 x (edelay + one hop's sync) of the change; one hop is
measured in the same run as the time until the last relay equals the source
(edelay + the source's sync to its 3 relays), so the bound is 2 x that.

The trees live on a tmpfs the script mounts (on this shared machine's disk,
writing the burst took up to 13 s). Needs root, iproute2 (ip, tc), sshd,
rsync. Every namespace, veth, bridge, sshd, daemon and the tmpfs is removed
at the end, also after an error, Ctrl-C or SIGTERM; the work directory
(each daemon's config and log) too, unless ``--keep`` or a phase failed
(then its path is printed). Exit status 0 when
every machine equalled the source in every phase, 1 otherwise, 2 on a usage
error, 130 when stopped (Ctrl-C, SIGTERM, SIGHUP).

    python bench/tiers.py [--layouts T,D] [--json FILE] [--keep]
    python bench/tiers.py --relays 2 --fanout 2 --files 40 --megabytes 1  # tiny
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # a script: the test hosts live there
sys.path.insert(0, str(REPO / "bench"))
from helpers import inosync_argv, private_tmp_root, tree_diff, write_config  # noqa: E402
from hosts import Lan, TestHost  # noqa: E402
from restart import free_index, seed, stop, synced_all, wait_for  # noqa: E402

LAYOUTS = ("T", "D")
PER_DIR = 100  # files per directory of the burst
POLL = 0.05

Meta = tuple[int, int, int]  # mode, size (0 for a directory), mtime in ns


# ---------------------------------------------------------------- the data


@dataclass
class Change:
    began: float  # time.monotonic() of its first write: the phase's timings start here
    paths: list[str]  # files that must be on a machine as on the source, in rsync's order
    gone: list[str] = field(default_factory=list)  # paths that must no longer be there


class Workload:
    """The phases, made the same way for each layout from one seed."""

    def __init__(self, files: int, megabytes: float, changes: int, seed: int) -> None:
        self.rnd = random.Random(seed)
        self.files, self.changes = files, changes
        self.total = int(megabytes * 1_000_000)
        self.names: list[str] = []

    def phases(self) -> list[tuple[str, Callable[[Path], Change]]]:
        return [(f"burst: {self.total / 1e6:g} MB in {self.files:,} files", self.burst),
                ("rename a directory", self.rename),
                (f"{self.changes} small changes", self.small_changes)]

    def sizes(self) -> list[int]:
        """Random sizes (uniform around the mean) that add up to the total exactly."""
        raw = [self.rnd.randint(1, 1000) for _ in range(self.files)]
        sizes = [self.total * r // sum(raw) for r in raw]
        sizes[sizes.index(max(sizes))] += self.total - sum(sizes)
        return sizes

    def burst(self, src: Path) -> Change:
        """All the files, written as fast as they can be: their data is made first
        (random bytes cost CPU; on a busy machine making them took 13 s)."""
        self.names = [f"d{i // PER_DIR:02d}/f{i:04d}.bin" for i in range(self.files)]
        data = [self.rnd.randbytes(size) for size in self.sizes()]
        began = time.monotonic()
        for name, content in zip(self.names, data):
            (src / name).parent.mkdir(exist_ok=True)
            (src / name).write_bytes(content)
        return Change(began, list(self.names))

    def rename(self, src: Path) -> Change:
        began = time.monotonic()
        old = f"d{(self.files // PER_DIR) // 2:02d}" if self.files > PER_DIR else "d00"
        (src / old).rename(src / f"{old}-renamed")
        self.names = [n.replace(f"{old}/", f"{old}-renamed/", 1) if n.startswith(f"{old}/")
                      else n for n in self.names]
        return Change(began, sorted(n for n in self.names if n.startswith(f"{old}-renamed/")),
                      [old])

    def small_changes(self, src: Path) -> Change:
        picked = sorted(self.rnd.sample(self.names, min(self.changes, len(self.names))))
        began = time.monotonic()
        for name in picked:
            with open(src / name, "ab") as f:
                f.write(b"changed\n")
        return Change(began, picked)


# ---------------------------------------------------------------- equality


def meta(path: Path) -> Meta | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st.st_mode, 0 if os.path.isdir(path) else st.st_size, st.st_mtime_ns


def manifest(tree: Path) -> dict[str, Meta]:
    """Every entry below tree (and tree itself, as "."), as rsync -a keeps them."""
    found: dict[str, Meta] = {}
    stack = [""]
    while stack:
        rel = stack.pop()
        m = meta(tree / rel if rel else tree)
        if m is None:
            continue
        found[rel or "."] = m
        try:
            entries = list(os.scandir(tree / rel))
        except OSError:
            continue
        for entry in entries:
            name = f"{rel}/{entry.name}" if rel else entry.name
            if entry.is_dir(follow_symlinks=False):
                stack.append(name)
            else:
                found[name] = meta(Path(entry.path)) or (0, -1, 0)
    return found


class Probe:
    """Whether one machine equals the source, cheaply: the changed paths in the
    order rsync sends them (one stat each while they arrive), then one walk."""

    def __init__(self, tree: Path, change: Change, whole: dict[str, Meta]) -> None:
        self.tree, self.change, self.whole = tree, change, whole
        self.next = 0

    def done(self) -> bool:
        paths = self.change.paths
        while self.next < len(paths):
            if meta(self.tree / paths[self.next]) != self.whole[paths[self.next]]:
                return False
            self.next += 1
        if any(os.path.lexists(self.tree / p) for p in self.change.gone):
            return False
        return manifest(self.tree) == self.whole


def poll(probes: dict[str, Probe], since: float, limit: float) -> dict[str, float | None]:
    """Seconds from since until each probe is done; None for those not done by limit."""
    seen: dict[str, float | None] = {}
    waiting = dict(probes)
    while waiting and time.monotonic() - since <= limit:
        for name, probe in list(waiting.items()):
            if probe.done():
                seen[name] = time.monotonic() - since
                del waiting[name]
        if waiting:
            time.sleep(POLL)
    return {**seen, **dict.fromkeys(waiting)}


# ---------------------------------------------------------------- the machines


@dataclass
class Layout:
    name: str
    pushes: dict[str, list[str]]  # machine running inosync -> the machines it pushes to
    tiers: dict[str, list[str]]  # "relays", "edges" -> their machines

    @staticmethod
    def make(name: str, relays: int, fanout: int) -> Layout:
        tops = [f"relay{i + 1}" for i in range(relays)]
        edges = [f"edge{j + 1}" for j in range(relays * fanout)]
        if name == "D":  # the relays' machines are edges too: 12 edges on the same hardware
            return Layout(name, {"source": tops + edges}, {"edges": tops + edges})
        pushes = {"source": tops, **{r: edges[i * fanout:(i + 1) * fanout]
                                     for i, r in enumerate(tops)}}
        return Layout(name, pushes, {"relays": tops, "edges": edges})


class Farm:
    """The machines, each a namespace with its own sshd behind a shaped veth on one
    switch, and the daemons run on them. close() takes everything down; it runs on
    leaving the with-block and, should that be skipped, at exit."""

    def __init__(self, work: Path, relays: int, fanout: int, mbit: int, megabytes: float) -> None:
        self.work, self.mbit = work, mbit
        self.fs = work / "trees"  # a tmpfs: a shared machine's disk took 13 s to write 50 MB
        self.fs_mb = int((2 * relays * (fanout + 1) + 4) * megabytes) + 64
        self.mounted = False
        self.lan = Lan(free_index(40))
        tiers = Layout.make("T", relays, fanout).tiers
        names = ["source", *tiers["relays"], *tiers["edges"]]
        key = work / "client_ed25519"
        self.hosts = {n: TestHost(i + 1, work / n, key, lan=self.lan) for i, n in enumerate(names)}
        self.daemons: list[subprocess.Popen[bytes]] = []
        self.up = False

    def __enter__(self) -> Farm:
        self.up = True  # from here on, close() undoes whatever was made
        atexit.register(self.close)
        try:
            self.fs.mkdir(mode=0o700)
            subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.fs_mb}m,mode=0700",
                            "inosync-tiers", str(self.fs)], check=True, capture_output=True)
            self.mounted = True
            self.lan.create()
            for host in self.hosts.values():
                host.create()
                host.shape(self.mbit)
        except BaseException:  # no __exit__ for a failed __enter__
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if not self.up:
            return
        self.up = False
        self.stop_daemons()
        for host in self.hosts.values():
            try:
                host.destroy()
            except Exception as e:  # go on: the others must go too
                print(f"cleanup of {host.netns}: {e}", file=sys.stderr)
        self.lan.destroy()
        if self.mounted:  # every process that used it is gone with its namespace
            if subprocess.run(["umount", str(self.fs)], capture_output=True).returncode:
                subprocess.run(["umount", "-l", str(self.fs)], capture_output=True)
                print(f"{self.fs} was busy: unmounted lazily", file=sys.stderr)
            self.mounted = False

    def made(self) -> dict[str, object]:
        """What close() removes, by name (the smoke test checks it is gone)."""
        return {"namespaces": [h.netns for h in self.hosts.values()],
                "veths": [h.veth for h in self.hosts.values()], "bridge": self.lan.bridge,
                "work": str(self.work)}

    def tree(self, name: str) -> Path:
        return self.fs / name

    def sent(self, name: str) -> int:
        """Bytes the machine has sent: what our end of its veth received."""
        return int(Path(f"/sys/class/net/{self.hosts[name].veth}/statistics/rx_bytes")
                   .read_text())

    def reset(self) -> None:
        """Every tree a copy of a source holding one small file (an empty wpath is refused)."""
        for name in self.hosts:
            shutil.rmtree(self.tree(name), ignore_errors=True)
            self.tree(name).mkdir(parents=True)
        (self.tree("source") / "seed.txt").write_text("the tree before the burst\n")
        seed(self.tree("source"), [self.tree(n) for n in self.hosts if n != "source"])

    def start(self, layout: Layout, edelay: float, limit: float, verbose: bool) -> float:
        """inosync on every machine that pushes; seconds until all said synced."""
        ssh = next(iter(self.hosts.values())).sshd
        assert ssh is not None
        waits = []
        for name, targets in layout.pushes.items():
            dests = [self.hosts[t].dest(self.tree(t)) for t in targets]
            run = self.work / f"run-{layout.name}" / name  # a fresh state_dir each layout
            run.mkdir(parents=True)
            conf = write_config(run / "inosync.conf", wpath=str(self.tree(name)), rnodes=dests,
                                ssh=ssh.ssh_command(), edelay=edelay, pidfile=None)
            argv = ["ip", "netns", "exec", self.hosts[name].netns, *inosync_argv(),
                    "-c", str(conf), *(["-v"] if verbose else [])]
            with open(run / "inosync.log", "wb") as out:
                self.daemons.append(subprocess.Popen(
                    argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True))
            waits.append((run / "inosync.log", dests, self.daemons[-1]))
        started = time.monotonic()
        for log, dests, proc in waits:
            if wait_for(lambda: synced_all(log, dests), started, limit,  # noqa: B023
                        lambda: proc.poll() is None) is None:  # noqa: B023
                raise RuntimeError(f"inosync never synced at start: see {log}")
        return time.monotonic() - started

    def notes(self, layout: Layout) -> dict[str, list[str]]:
        """Each daemon's warnings and errors (its log says what a slow phase waited for)."""
        found = {}
        for name in layout.pushes:
            log = self.work / f"run-{layout.name}" / name / "inosync.log"
            text = log.read_text(errors="replace") if log.exists() else ""
            found[name] = [line[:300] for line in text.splitlines()
                           if " WARNING " in line or " ERROR " in line][:20]
        return found

    def stop_daemons(self) -> None:
        for proc in self.daemons:
            stop(proc)
        self.daemons = []

    def verify(self, names: list[str]) -> list[str]:
        """What rsync -anc --delete would still change, two trees at a time (2 cores)."""
        src = self.tree("source")
        with ThreadPoolExecutor(2) as pool:
            diffs = list(pool.map(lambda n: tree_diff(src, self.tree(n)), names))
        return [f"{n}: {line}" for n, diff in zip(names, diffs) for line in diff[:5]]


# ---------------------------------------------------------------- the runs


@dataclass
class Phase:
    label: str
    seconds: dict[str, float | None]  # per machine: from the change's start until equal
    sent_mb: dict[str, float]  # per machine that pushes: MB it sent meanwhile
    write_seconds: float  # how long making the change on the source took (in seconds)
    left: list[str] = field(default_factory=list)  # what rsync -anc still found

    def last(self, names: list[str]) -> float | None:
        times = [self.seconds[n] for n in names]
        return None if None in times else max(t for t in times if t is not None)


def measure(farm: Farm, layout: Layout, label: str, make: Callable[[Path], Change],
            args: argparse.Namespace) -> Phase:
    src = farm.tree("source")
    machines = [n for tier in layout.tiers.values() for n in tier]
    before = {n: farm.sent(n) for n in layout.pushes}
    change = make(src)
    written = time.monotonic() - change.began
    whole = manifest(src)
    seen = poll({n: Probe(farm.tree(n), change, whole) for n in machines}, change.began,
                args.limit)
    sent = {n: (farm.sent(n) - before[n]) / 1e6 for n in layout.pushes}
    time.sleep(args.edelay + 1)  # whatever runs late (a relay's last batch) is in the check
    return Phase(label, seen, sent, written, farm.verify(machines))


@dataclass
class Result:
    layout: Layout
    startup_seconds: float  # until every daemon had synced at start
    phases: list[Phase]
    notes: dict[str, list[str]]  # per daemon: the warnings and errors it logged


def run_layout(farm: Farm, name: str, args: argparse.Namespace) -> Result:
    layout = Layout.make(name, args.relays, args.fanout)
    farm.reset()
    try:
        startup = farm.start(layout, args.edelay, args.limit, args.verbose)
        time.sleep(args.edelay + 1)  # nothing in flight before the burst
        phases = []
        for label, make in Workload(args.files, args.megabytes, args.changes,
                                    args.seed).phases():
            phases.append(measure(farm, layout, label, make, args))
            print(f"{name}, {label}: {phase_line(phases[-1], layout)}", file=sys.stderr)
    finally:
        farm.stop_daemons()
    return Result(layout, startup, phases, farm.notes(layout))


def phase_line(phase: Phase, layout: Layout) -> str:
    tiers = ", ".join(f"last of {t} {_fmt(phase.last(m), '{:.2f}')} s"
                      for t, m in layout.tiers.items())
    equal = "equal" if not phase.left else "NOT EQUAL: " + "; ".join(phase.left[:3])
    return f"{tiers}; source sent {phase.sent_mb['source']:.2f} MB; {equal}"


# ---------------------------------------------------------------- the report


def _fmt(value: float | None, fmt: str) -> str:
    return "--" if value is None else fmt.format(value)


Row = dict[str, "float | bool | str | None"]


def summarize(results: dict[str, Result]) -> tuple[list[Row], dict[str, float | bool | None]]:
    """The per-phase figures side by side, and the issue's targets."""
    rows: list[Row] = []
    first = next(iter(results.values()))
    for i, phase in enumerate(first.phases):
        row: Row = {"phase": phase.label}
        for name, res in results.items():
            mine = res.phases[i]
            for tier, names in res.layout.tiers.items():
                row[f"{name} {tier} s"] = mine.last(names)
            row[f"{name} source MB"] = mine.sent_mb["source"]
            if name == "T":
                row["T relays sent MB"] = sum(v for k, v in mine.sent_mb.items()
                                              if k != "source")
            row[f"{name} equal"] = not mine.left
        if "T" in results:
            t = results["T"].phases[i]
            relays, edges = t.last(results["T"].layout.tiers["relays"]), \
                t.last(results["T"].layout.tiers["edges"])
            row["T bound s"] = None if relays is None else 2 * relays
            row["T hop 2 s"] = None if relays is None or edges is None else edges - relays
            row["latency target met"] = relays is not None and edges is not None \
                and edges <= 2 * relays
        rows.append(row)
    targets: dict[str, float | bool | None] = {}
    if "T" in results and "D" in results:
        mb = [sum(p.sent_mb["source"] for p in results[x].phases) for x in ("T", "D")]
        targets["source bytes T/D"] = mb[0] / mb[1] if mb[1] else None
        targets["source bytes T <= 0.3 x D"] = bool(mb[1]) and mb[0] <= 0.3 * mb[1]
    if "T" in results:
        targets["T last edge <= 2 x last relay, every phase"] = all(
            r["latency target met"] for r in rows)
    return rows, targets


def print_table(rows: list[Row], targets: dict[str, float | bool | None],
                args: argparse.Namespace) -> None:
    print(f"{args.relays + args.relays * args.fanout + 1} machines, {args.mbit} Mbit/s each "
          f"way each (tbf), edelay {args.edelay:g} s; T: 1 -> {args.relays} relays -> "
          f"{args.relays * args.fanout} edges, D: 1 -> {args.relays * (args.fanout + 1)} "
          "edges; seconds from the change until the last machine of a tier equals the "
          "source; MB sent by the source (and by the relays)")
    cols = [("T relays s", "{:.2f}"), ("T edges s", "{:.2f}"), ("T bound s", "{:.2f}"),
            ("D edges s", "{:.2f}"), ("T source MB", "{:.3f}"), ("D source MB", "{:.3f}"),
            ("T relays sent MB", "{:.3f}")]
    cols = [c for c in cols if any(c[0] in r for r in rows)]
    width = max(len(str(r["phase"])) for r in rows) + 2
    print(f"{'phase':{width}}" + "".join(f"{c:>18}" for c, _ in cols))
    for r in rows:
        cells = ""
        for c, f in cols:
            value = r.get(c)
            cells += f"{_fmt(value if isinstance(value, float) else None, f):>18}"
        print(f"{str(r['phase']):{width}}{cells}")
    for k, v in targets.items():
        shown = f"{v:.3g}" if isinstance(v, float) else "met" if v is True else "not met"
        print(f"target {k}: {shown}")


# ---------------------------------------------------------------- main


def which_inosync() -> dict[str, str]:
    """The command the daemons ran, and the commit of the code it imports (to run
    another checkout's daemon: PYTHONPATH=that checkout, from that directory)."""
    where = subprocess.run([sys.executable, "-c", "import inosync, os; "
                            "print(os.path.dirname(os.path.dirname(inosync.__file__)))"],
                           capture_output=True, text=True).stdout.strip()
    head = subprocess.run(["git", "-C", where or ".", "rev-parse", "HEAD"],
                          capture_output=True, text=True).stdout.strip()
    return {"command": " ".join(inosync_argv()), "checkout": where, "commit": head}


def _stop_signal(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # unwinds through every cleanup


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layouts", default="T,D", help="comma-separated, from T,D (default both)")
    p.add_argument("--relays", type=int, default=3, help="relays in T (default 3)")
    p.add_argument("--fanout", type=int, default=3, help="edges per relay in T (default 3)")
    p.add_argument("--files", type=int, default=2000, help="files of the burst (default 2,000)")
    p.add_argument("--megabytes", type=float, default=50, help="MB of the burst (default 50)")
    p.add_argument("--changes", type=int, default=100, help="small changes (default 100)")
    p.add_argument("--mbit", type=int, default=100, help="each machine's link, Mbit/s each way")
    p.add_argument("--edelay", type=float, default=1.0, help="every daemon's edelay (s)")
    p.add_argument("--seed", type=int, default=19)
    p.add_argument("--limit", type=float, default=600, help="seconds a phase may take")
    p.add_argument("--json", default=str(REPO / "bench" / "results" / "tiers.json"),
                   help="where the results go (default bench/results/tiers.json)")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    p.add_argument("--verbose", action="store_true",
                   help="run every daemon with -v (its log names each path; costs CPU)")
    args = p.parse_args(argv)
    args.layouts = [x for x in args.layouts.split(",") if x]
    if bad := [x for x in args.layouts if x not in LAYOUTS]:
        p.error(f"--layouts: unknown {', '.join(bad)}; choose from T,D")
    if not 1 <= args.relays * (args.fanout + 1) + 1 <= 250 or args.fanout < 1:
        p.error("--relays and --fanout: at least 1 each, at most 250 machines in all")
    if args.files < args.changes or args.files < 2 or args.megabytes * 1e6 < args.files:
        p.error("need --files >= --changes, --files >= 2 and a byte or more per file")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if os.geteuid() != 0:
        print("needs root (network namespaces, tc)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="inosync-tiers-", dir=private_tmp_root()))
    old = {s: signal.signal(s, _stop_signal) for s in (signal.SIGTERM, signal.SIGHUP)}
    results: dict[str, Result] = {}
    made: dict[str, object] = {}
    try:
        with Farm(work, args.relays, args.fanout, args.mbit, args.megabytes) as farm:
            made = farm.made()
            print(f"machines up: {json.dumps(made)}", file=sys.stderr)
            for name in args.layouts:
                results[name] = run_layout(farm, name, args)
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM/SIGHUP (_stop_signal)
        print(f"stopped by {e or 'Ctrl-C'}; all it made is taken down", file=sys.stderr)
        return 130
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        failed = any(p.left or None in p.seconds.values()
                     for r in results.values() for p in r.phases)
        if args.keep or failed:  # a failure's daemon logs are what explains it
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    rows, targets = summarize(results)
    print_table(rows, targets, args)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "args": {k: v for k, v in vars(args).items() if k != "json"},
        "made": made, "load_average": os.getloadavg(), "inosync": which_inosync(),
        "results": {k: asdict(v) for k, v in results.items()},
        "rows": rows, "targets": targets}, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
