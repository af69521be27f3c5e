"""Before a node starts from its checkpoint: does it still hold the tree's top level?

A checkpoint says what reached a node, not that the node kept it: a host
reinstalled, a disk replaced, an old backup restored there while inosync was
stopped hold none of it, and a start from the checkpoint would send only what
changed since. The check is cheap and catches a node that lost its data: one
dry run of the top level of wpath (no recursion) per node, max_parallel at once. wpath's
own entries did not change since the checkpoint (or its start would be a full
sync anyway), so the node must hold every name there and nothing else: a name
rsync would create or delete means the node is not what the checkpoint says.
A node that cannot be asked gets a full sync, as every start did before
checkpoints. Deeper losses (one subdirectory wiped) are not seen: --full.
"""

from __future__ import annotations

import dataclasses
import os
import selectors
import subprocess
import time
from collections.abc import Callable, Mapping

from .rsync import Options, _common, child_environment, with_slash

DEADLINE = 30.0  # seconds for each check
STOP_POLL = 0.2  # seconds between two looks at whether the daemon is to stop
# While a host's first check opens the connection its other nodes' checks are
# to share: seconds between two looks for its master, and the most they wait
# for it (as the scheduler's runs: scheduler.CONNECT_WAIT).
SHARE_POLL = 0.05
SHARE_WAIT = 10.0
STOPPED = "not confirmed: inosync is stopping"


def top_level_argv(opts: Options, wpath: str, dest: str) -> list[str]:
    """A dry run of wpath's top level to dest that names what it would change."""
    opts = dataclasses.replace(opts, extra=(*opts.extra, "--no-recursive", "--dirs", "--dry-run",
                                            "--itemize-changes", "--out-format=%i %n"))
    return [*_common(opts, dest), with_slash(wpath), with_slash(dest)]


def verdict(returncode: int | None, stdout: str) -> str | None:
    """Why the node does not hold wpath's top level, or None: it does."""
    if returncode is None:
        return f"it did not answer within {DEADLINE:.0f} s whether it holds the tree"
    if returncode != 0:
        return f"asking whether it holds the tree failed (rsync exit {returncode})"
    for line in stdout.splitlines():
        if line.startswith("*deleting") or "+++++++" in line[:11]:
            name = line.split(" ", 1)[-1].strip()
            what = "it has" if line.startswith("*deleting") else "it lacks"
            return (f"the node does not hold the tree's top level ({what} {name!r}): its data "
                    "was lost or replaced since the checkpoint")
    return None


def check(argvs: Mapping[str, list[str]], deadline: float = DEADLINE, limit: int | None = None,
          delays: Mapping[str, float] | None = None,
          stopping: Callable[[], bool] = lambda: False,
          after: Mapping[str, str] | None = None,
          shared: Callable[[str], bool] = lambda dest: True) -> dict[str, str | None]:
    """Run every node's check, at most limit at once (max_parallel: a restart of a
    hundred nodes is no burst of a hundred rsyncs), each not before its delay
    (seconds: the spread of first ssh connections, slots.open_times); each
    check ends deadline seconds after its delay at the latest. Each node's verdict.

    The whole is bounded, not only each check: checks that hang would
    otherwise hold every slot for a deadline, round after round (a hundred
    nodes on a hung NFS server: minutes in which no node syncs, a stop goes
    unheeded, systemd kills the start). A check whose slot did not come in
    time gets the verdict of one that did not answer: a full sync.

    stopping: whether TERM or INT came (asked every STOP_POLL seconds): the
    checks end at once, every node not answered yet unconfirmed (a stop must
    not wait out a deadline: systemd's own runs out as soon).

    after: node -> the first node of its ssh host, whose check opens the
    connection (started together, each would open its own). The others start
    once shared(node) says the connection is there to share, or that check
    ended, or SHARE_WAIT after it began (a first check that hangs on its own
    node's disk holds no one for its whole deadline)."""
    delays, after = delays or {}, after or {}
    began: dict[str, float] = {}  # when each check started
    waiting = sorted(argvs, key=lambda d: delays.get(d, 0.0))  # stable: the given order
    limit = limit or len(waiting) or 1
    found: dict[str, str | None] = {}
    running: dict[int, tuple[str, subprocess.Popen[bytes], float, bytearray]] = {}
    begun = time.monotonic()

    def end(dest: str) -> float:
        return begun + delays.get(dest, 0.0) + deadline

    def blocked(dest: str, now: float) -> bool:
        """Whether dest's check waits for the connection its host's first opens."""
        first = after.get(dest)
        if first is None or first == dest:
            return False
        if first in waiting:
            return True
        opening = any(d == first for d, _, _, _ in running.values())
        return opening and now < began[first] + SHARE_WAIT and not shared(dest)

    with selectors.DefaultSelector() as sel:
        while waiting or running:
            now = time.monotonic()
            if stopping():
                _give_up(waiting, running, sel, found)
                break
            while len(running) < limit:
                dest = next((d for d in waiting if begun + delays.get(d, 0.0) <= now
                             and not blocked(d, now)), None)
                if dest is None:
                    break
                waiting.remove(dest)
                began[dest] = now
                proc = _start(argvs[dest], found, dest)
                if proc is not None and proc.stdout is not None:
                    running[proc.stdout.fileno()] = (dest, proc, end(dest), bytearray())
                    sel.register(proc.stdout, selectors.EVENT_READ)
            _expire(running, sel, found, now)
            for dest in [d for d in waiting if now >= end(d)]:
                waiting.remove(dest)  # no slot came for it in time (max_parallel)
                found[dest] = verdict(None, "")
            due = [stop for _, _, stop, _ in running.values()] + [end(d) for d in waiting]
            held = [d for d in waiting if blocked(d, now)]  # for a connection to share
            free = [d for d in waiting if d not in held]
            if free and len(running) < limit:
                due.append(begun + min(delays.get(d, 0.0) for d in free))
            if not due:
                continue  # the last ones ran out of time just now
            wait = min(min(due) - time.monotonic(), SHARE_POLL if held else STOP_POLL)
            for key, _ in sel.select(max(0.0, wait)):
                _read(key.fd, running, sel, found)
    return found


def _give_up(waiting: list[str],
             running: dict[int, tuple[str, subprocess.Popen[bytes], float, bytearray]],
             sel: selectors.BaseSelector, found: dict[str, str | None]) -> None:
    """Stopping: every check still running killed, none started any more."""
    for dest in waiting:
        found[dest] = STOPPED
    waiting.clear()
    for fd, (dest, proc, _, _) in list(running.items()):
        sel.unregister(fd)
        del running[fd]
        proc.kill()
        proc.communicate()
        found[dest] = STOPPED


def _start(argv: list[str], found: dict[str, str | None],
           dest: str) -> subprocess.Popen[bytes] | None:
    try:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, env=child_environment(),
                                close_fds=True)
    except OSError as e:
        found[dest] = f"cannot ask whether it holds the tree ({e.strerror})"
        return None


def _read(fd: int, running: dict[int, tuple[str, subprocess.Popen[bytes], float, bytearray]],
          sel: selectors.BaseSelector, found: dict[str, str | None]) -> None:
    """Read what a check wrote; at its end, its verdict."""
    dest, proc, _, out = running[fd]
    data = os.read(fd, 65536)
    if data:
        out += data
        return
    sel.unregister(fd)
    del running[fd]
    assert proc.stdout is not None
    proc.stdout.close()
    found[dest] = verdict(proc.wait(), os.fsdecode(bytes(out)))


def _expire(running: dict[int, tuple[str, subprocess.Popen[bytes], float, bytearray]],
            sel: selectors.BaseSelector, found: dict[str, str | None], now: float) -> None:
    """Kill the checks past their deadline: no answer is a full sync."""
    for fd, (dest, proc, end, _) in list(running.items()):
        if now >= end:
            sel.unregister(fd)
            del running[fd]
            proc.kill()
            proc.communicate()
            found[dest] = verdict(None, "")
