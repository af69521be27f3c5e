"""Randomized soak: seeded random changes to a watched tree, then every node must equal it.

The random operations live in tests/randomops.py (``RandomOps``,
``drive``), shared with tests/test_random.py.

As a command: a temporary tree and K local replica directories, a real
``inosync`` daemon, N random operations, then a deadline for convergence::

    python bench/soak.py --ops 500 --seed 7 [--nodes 2] [--edelay 0.2] [--rate 50]

It prints one line ("converged after N ops, seed S, in X s", or the
differences) and exits 0 if every node equals the source, 1 if not. The
daemon is stopped and the temporary directories removed in every case.

The same seed makes the same operations as tests/test_random.py does.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # a script: the shared operations live there
from helpers import private_tmp_root  # noqa: E402
from randomops import NAMES, RandomOps, drive  # noqa: E402

# ---- the command


RSYNC = shutil.which("rsync") or "/usr/bin/rsync"


def make_start_tree(src: str) -> None:
    """The tree that tests/conftest.py's ``tree`` fixture starts with (same seeds, same ops)."""
    os.makedirs(os.path.join(src, "docs", "old"))
    for rel, text in (("index.html", "<h1>hello</h1>\n"), ("docs/a.txt", "a\n"),
                      ("docs/old/b.txt", "b\n")):
        with open(os.path.join(src, rel), "w") as f:
            f.write(text)


def tree_diff(src: str, dst: str) -> list[str]:
    """What rsync would still change to make dst equal src (as tests/conftest.py)."""
    argv = [RSYNC, "-anc", "--delete", "--itemize-changes", f"{src}/", f"{dst}/"]
    done = subprocess.run(argv, capture_output=True)
    lines = [line for line in done.stdout.decode(errors="replace").splitlines() if line.strip()]
    if done.returncode in (23, 24):
        lines.append(f"(comparison incomplete: rsync exit {done.returncode})")
    elif done.returncode:
        lines.append(f"(rsync comparison failed: {done.stderr.decode(errors='replace')})")
    return lines


def wait_for(predicate: Callable[[], object], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    delay = 0.02
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)
    return True


def inosync_argv() -> list[str]:
    script = shutil.which("inosync")
    return [script] if script else [sys.executable, "-m", "inosync"]


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: object) -> None:
    raise _Stop(signal.Signals(signum).name)


def soak(args: argparse.Namespace) -> int:
    work = tempfile.mkdtemp(prefix="inosync-soak-", dir=private_tmp_root())
    daemon: subprocess.Popen[bytes] | None = None
    log_file = None
    log_path = os.path.join(work, "inosync.log")
    try:
        src = os.path.join(work, "src")
        nodes = [os.path.join(work, f"node{i + 1}") for i in range(args.nodes)]
        for d in [src, *nodes]:
            os.mkdir(d)
        make_start_tree(src)
        conf = os.path.join(work, "inosync.conf")
        with open(conf, "w") as f:
            f.write(f"wpath = {src!r}\nrnodes = {nodes!r}\nedelay = {args.edelay!r}\n"
                    "retry_min = 0.5\nretry_max = 2\n")
        log_file = open(log_path, "wb")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}
        command = shlex.split(args.command) if args.command else inosync_argv()
        daemon = subprocess.Popen([*command, "-c", conf, "-v"], stdin=subprocess.DEVNULL,
                                  stdout=log_file, stderr=subprocess.STDOUT, env=env)

        def same() -> bool:
            return all(not tree_diff(src, n) for n in nodes)

        if not wait_for(lambda: same() or daemon.poll() is not None, 30) or not same():
            print(f"initial sync did not converge (seed {args.seed}); daemon log tail:\n"
                  + _tail(log_path))
            return 1
        names = [n for n in NAMES if n not in args.exclude_name]
        ops = RandomOps(src, args.seed, max_entries=args.max_entries,
                        hardlink_writes=args.hardlink_writes, same_size=args.same_size,
                        names=names)
        took = drive(ops, args.ops, args.rate)
        started = time.monotonic()
        ok = wait_for(lambda: same() or daemon.poll() is not None, args.timeout) and same()
        waited = time.monotonic() - started
        problems = []
        if daemon.poll() is not None:
            problems.append(f"daemon exited with {daemon.returncode} during the run")
        else:
            daemon.send_signal(signal.SIGTERM)
            try:
                rc = daemon.wait(30)
            except subprocess.TimeoutExpired:
                rc = None
            if rc != 0:
                problems.append(f"daemon exit status on SIGTERM: {rc}")
        log_text = Path(log_path).read_text(errors="replace")
        if "Traceback" in log_text:
            problems.append("Traceback in the daemon log")
        full = log_text.count("synced full sync") - len(nodes)  # the initial ones aside
        runs = len(re.findall(r"synced \d+ paths? in ", log_text))
        stats = (f"ops took {took:.1f} s, {ops.failed} failed, {len(ops.walk())} entries at the "
                 f"end; {runs} batch run(s) and {full} full sync(s) after the initial one")
        if ok and not problems:
            print(f"converged after {args.ops} ops, seed {args.seed}, in {waited:.1f} s ({stats})")
            return 0
        if ok:
            print(f"converged after {args.ops} ops, seed {args.seed}, but: "
                  f"{'; '.join(problems)} ({stats})")
        else:
            print(f"NOT converged within {args.timeout:g} s after {args.ops} ops, seed "
                  f"{args.seed} ({stats}){''.join('; ' + p for p in problems)}")
            for n in nodes:
                diff = tree_diff(src, n)
                if diff:
                    print(f"  {n}: {len(diff)} difference(s)")
                    for line in diff[:20]:
                        print(f"    {line}")
            if args.history:
                print("last operations:")
                for line in ops.history[-args.history:]:
                    print(f"  {line}")
        if args.verbose or problems:
            print("daemon log tail:\n" + _tail(log_path))
        return 1
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)  # lets it remove its own temporary files
            try:
                daemon.wait(20)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
        if log_file is not None:
            log_file.close()
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def _tail(path: str, lines: int = 40) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ops", type=int, default=500, help="number of operations (500)")
    p.add_argument("--seed", type=int, default=1, help="random seed (1)")
    p.add_argument("--nodes", type=int, default=2, help="local replica directories (2)")
    p.add_argument("--edelay", type=float, default=0.2, help="the daemon's edelay (0.2)")
    p.add_argument("--rate", type=float, default=None,
                   help="operations per second (default: bursts with short random pauses)")
    p.add_argument("--timeout", type=float, default=60.0,
                   help="seconds to wait for convergence after the last operation (60)")
    p.add_argument("--max-entries", type=int, default=200, help="tree size cap (200)")
    p.add_argument("--hardlink-writes", action="store_true",
                   help="also change files with several links in place (known not to converge)")
    p.add_argument("--same-size", action="store_true",
                   help="let new contents repeat earlier sizes (known not to converge when a "
                   "path gets a same-size content within the same second)")
    p.add_argument("--exclude-name", action="append", default=[], metavar="NAME",
                   help="leave NAME out of the names used (repeatable; to bisect a failure)")
    p.add_argument("--command", help="the daemon's command line "
                   "(default: inosync from PATH, else python -m inosync)")
    p.add_argument("--history", type=int, default=30, help="operations shown on failure (30)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.add_argument("-v", "--verbose", action="store_true", help="show the daemon log on failure")
    args = p.parse_args(argv)
    if args.nodes < 1 or args.ops < 0:
        p.error("--nodes must be at least 1 and --ops not negative")
    old = {s: signal.signal(s, _raise_stop) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        return soak(args)
    except (_Stop, KeyboardInterrupt) as e:
        print(f"interrupted ({str(e) or 'SIGINT'}); daemon stopped, temporary files removed")
        return 1
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


if __name__ == "__main__":
    sys.exit(main())
