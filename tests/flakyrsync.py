"""An rsync that fails on purpose, for the config's ``rsync`` setting.

``write_flaky_rsync(path, ...)`` writes a small Python program that stands
in for rsync: it takes rsync's arguments as they come (a list, never
through a shell) and, run by run, either execs the real rsync or fails in
one of the ways a node fails:

* ``done-then-N``: runs the real rsync to completion, then exits N anyway
  (23 or 11: the node's disk filled up; 25: --max-delete). The transfer
  happened, the exit status says it did not: the batch goes back to the
  queue although the node has all of it, renames replayed included.
* ``killed``: runs the real rsync and SIGKILLs it after a short random
  delay (then dies of SIGKILL itself, as an rsync killed by the OOM killer).
* ``refused``: exits 12 without running anything (the connection dropped).

Which run fails, and how, is seeded: run n to a destination decides from
``random.Random(f"{seed}:{destination}:{n}")``, so each node sees the same
sequence of outcomes whatever the timing between nodes. With ``armed``, a
file's path, nothing is random: while that file exists the next batch run
(one with ``--files-from``) removes it and is ``done-then-23``; every other
run is the real rsync.

One line per run goes to ``<path>.log`` (its number, what was done, the
destination; written as the real rsync is exec'd, or once the run's fate
is known), so a test can show what happened.

rsync's descriptors are kept (the daemon hands rsync wpath as an open
descriptor and reads /proc/self/fd/N), and local and ssh nodes alike go
through it: for an ssh node it is the rsync client that runs ssh.
"""

from __future__ import annotations

from pathlib import Path

from helpers import RSYNC

# What the program does with a failing run, and how often (relative weights).
KINDS = {"done-then-23": 4, "done-then-11": 2, "done-then-25": 1, "killed": 2, "refused": 2}

PROGRAM = r'''#!/usr/bin/env python3
"""rsync that fails on purpose (written by tests/flakyrsync.py)."""
import fcntl, hashlib, os, random, signal, subprocess, sys

RSYNC = {rsync!r}
SEED = {seed!r}
CHANCE = {chance!r}
KINDS = {kinds!r}
ARMED = {armed!r}
DELAY = {delay!r}
STATE = {state!r}
LOG = STATE + ".log"


def number(dest):
    """This run's number among the runs to dest (0 for the first)."""
    key = hashlib.sha256(os.fsencode(dest)).hexdigest()[:16]
    fd = os.open(f"{{STATE}}.count-{{key}}", os.O_RDWR | os.O_CREAT, 0o600)
    with os.fdopen(fd, "r+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        n = int(f.read() or 0)
        f.seek(0)
        f.truncate()
        f.write(str(n + 1))
    return n


def note(n, dest, kind, outcome):
    """One line per run: number, kind, what came of it, destination (tab-separated)."""
    line = f"{{n}}\t{{kind}}\t{{outcome}}\t{{dest!r}}\n".encode()
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def choose(rng, argv):
    if ARMED is not None:
        if not any(a.startswith("--files-from") for a in argv):
            return "real"
        try:
            os.unlink(ARMED)
        except FileNotFoundError:
            return "real"
        return "done-then-23"
    if rng.random() >= CHANCE:
        return "real"
    return rng.choices(list(KINDS), list(KINDS.values()))[0]


def main():
    argv = [RSYNC, *sys.argv[1:]]
    dest = sys.argv[-1] if len(sys.argv) > 1 else ""
    n = number(dest)
    rng = random.Random(f"{{SEED}}:{{dest}}:{{n}}")
    kind = choose(rng, argv)
    if kind == "real":
        note(n, dest, kind, "exec")
        os.execv(RSYNC, argv)
    if kind == "refused":
        note(n, dest, kind, "exit 12")
        sys.stderr.write(f"flaky rsync: run {{n}} refused: exit 12 (the connection dropped)\n")
        sys.exit(12)
    # close_fds=False: rsync reads wpath through a descriptor the daemon passed on.
    proc = subprocess.Popen(argv, close_fds=False)
    if kind == "killed":
        delay = rng.uniform(0, DELAY)
        try:
            rc = proc.wait(delay)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            note(n, dest, kind, f"after {{delay:.3f}} s")
            os.kill(os.getpid(), signal.SIGKILL)
        note(n, dest, kind, f"too late: rsync exited {{rc}} within {{delay:.3f}} s")
        sys.exit(rc)
    rc = proc.wait()
    if rc:
        note(n, dest, kind, f"not done: rsync exited {{rc}}")
        sys.exit(rc)
    code = int(kind.rsplit("-", 1)[1])
    note(n, dest, kind, f"exit {{code}}")
    sys.stderr.write(f"flaky rsync: run {{n}} complete, exiting {{code}} all the same\n")
    sys.exit(code)


main()
'''


def write_flaky_rsync(path: Path, seed: int = 0, chance: float = 0.0,
                      armed: Path | None = None, kinds: dict[str, int] | None = None,
                      delay: float = 0.15, rsync: str = RSYNC) -> Path:
    """Write the program to path (executable); ``<path>.log`` will name each run."""
    text = PROGRAM.format(rsync=rsync, seed=seed, chance=chance, kinds=kinds or KINDS,
                          armed=None if armed is None else str(armed), delay=delay,
                          state=str(path))
    path.write_text(text)
    path.chmod(0o755)
    return path


def runs(path: Path) -> list[tuple[str, str]]:
    """What the program at path did, run by run: (kind, outcome)."""
    try:
        lines = path.with_name(path.name + ".log").read_text().splitlines()
    except FileNotFoundError:
        return []
    return [(kind, outcome) for _, kind, outcome, _ in (line.split("\t") for line in lines)]


def failed(path: Path) -> dict[str, int]:
    """How many runs the program failed, by kind (only those that did fail)."""
    counts = dict.fromkeys(KINDS, 0)
    for kind, outcome in runs(path):
        if kind != "real" and not outcome.startswith(("too late", "not done")):
            counts[kind] = counts.get(kind, 0) + 1
    return counts
