"""Issue 19.3 end to end: a real daemon, twelve local nodes, max_parallel = 2.

rsync is a wrapper (countrsync.py) that counts, under an flock, how many runs
are in progress: what the test checks is what really ran at once, whatever
the daemon believes. Every node must converge (rsync -anc finds nothing to
change), the nodes waiting for a slot must say so, and never more than two
rsyncs may have run at the same time.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from countrsync import peak, runs, write_counting_rsync
from helpers import Inosync, tree_diff, wait_converged, wait_until, write_config

from inosync.checkpoint import MARGIN

pytestmark = pytest.mark.slow  # end to end: real processes

NODES = 12


def start(tmp_path: Path, run_inosync: Callable[..., Inosync], max_parallel: int,
          ) -> tuple[Inosync, Path, list[Path], Path, Path]:
    src = tmp_path / "src"
    (src / "docs").mkdir(parents=True)
    for i in range(50):
        (src / "docs" / f"f{i}.txt").write_text(f"file {i}\n" * (i + 1))
    nodes = [tmp_path / f"node{i:02d}" for i in range(NODES)]
    for n in nodes:
        n.mkdir()
    rsync = write_counting_rsync(tmp_path / "rsync")
    status = tmp_path / "status.json"
    conf = write_config(tmp_path / "inosync.conf", wpath=str(src), rnodes=[str(n) for n in nodes],
                        edelay=0.2, rsync=str(rsync), max_parallel=max_parallel,
                        statusfile=str(status))
    return run_inosync(conf, "-v"), src, nodes, rsync, status


def queued_rows(status: Path) -> list[dict]:
    try:
        rows = json.loads(status.read_text())["nodes"]
    except (OSError, ValueError, KeyError):
        return []
    return [r for r in rows if r["state"] == "queued"]


def burst(src: Path) -> None:
    for i in range(200):
        d = src / f"burst{i % 10}"
        d.mkdir(exist_ok=True)
        (d / f"n{i}.txt").write_text(f"burst {i}\n")
    (src / "docs" / "f3.txt").unlink()
    (src / "docs" / "f4.txt").write_text("changed\n")


def test_twelve_nodes_through_two_slots_converge_and_never_run_more_than_two(
        tmp_path: Path, run_inosync: Callable[..., Inosync]):
    d, src, nodes, rsync, status = start(tmp_path, run_inosync, 2)
    # The initial full syncs queue: the statusfile says who waits for a slot.
    waiting = wait_until(lambda: queued_rows(status), 20, "a node waiting for a run slot")
    assert all(r["slot"].startswith("waiting for a run slot") for r in waiting), waiting
    assert all("of 2 running" in r["slot"] for r in waiting), waiting
    wait_converged(src, nodes, timeout=60)
    d.wait_log("watching")
    burst(src)
    wait_until(lambda: queued_rows(status), 20, "the burst queued for slots")
    d.signal(signal.SIGUSR1)  # while the burst queues: the log line says why a node waits
    d.wait_log(r"status: \S+: waiting for a run slot \(\d+ ahead, 2 of 2 running\)")
    wait_converged(src, nodes, timeout=60)
    for n in nodes:
        assert tree_diff(src, n) == [], n  # rsync -anc: contents, not just sizes
    assert d.stop() == 0
    assert runs(rsync) >= 2 * NODES  # the initial full sync and the burst, per node
    assert peak(rsync) == 2, f"{peak(rsync)} rsyncs ran at once"


def test_the_count_sees_runs_at_once_when_the_limit_allows_them(
        tmp_path: Path, run_inosync: Callable[..., Inosync]):
    """The same daemon with max_parallel = 12: the wrapper sees more than two at
    once, so the test above would fail if the limit did not hold."""
    d, src, nodes, rsync, _ = start(tmp_path, run_inosync, NODES)
    wait_converged(src, nodes, timeout=60)
    assert d.stop() == 0
    assert peak(rsync) > 2


def test_a_restart_from_checkpoints_asks_the_nodes_two_at_a_time(
        tmp_path: Path, run_inosync: Callable[..., Inosync]):
    """At a start from checkpoints each node is asked first whether it still holds
    the tree (one rsync dry run per node, nodecheck.py): those go through the
    slots too, or a restart of a hundred nodes is a burst of a hundred rsyncs."""
    d, src, nodes, rsync, _ = start(tmp_path, run_inosync, 2)
    wait_converged(src, nodes, timeout=60)
    d.wait_log("watching")
    time.sleep(MARGIN + 0.5)  # the tree made before the start is older than the margin
    assert d.stop() == 0
    before = runs(rsync)
    (src / "docs" / "while-stopped.txt").write_text("new\n")
    d = run_inosync(tmp_path / "inosync.conf", "-v")
    d.wait_log("starting from its checkpoint", count=NODES)
    wait_converged(src, nodes, timeout=60)
    assert d.stop() == 0
    assert runs(rsync) >= before + 2 * NODES  # a check and a run per node
    assert peak(rsync) == 2, f"{peak(rsync)} rsyncs ran at once"


HANGING_CHECK = r'''#!/usr/bin/env python3
"""rsync whose dry runs (the start-up checks) hang once the flag file exists,
as on nodes whose disk hangs."""
import os, sys, time

if "--dry-run" in sys.argv and os.path.exists({flag!r}):
    open({marker!r}, "a").write("check\n")
    time.sleep(60)
    sys.exit(0)
os.execv({rsync!r}, [{rsync!r}, *sys.argv[1:]])
'''


def test_term_during_hanging_start_up_checks_stops_at_once_with_the_stop_line(
        tmp_path: Path, run_inosync: Callable[..., Inosync]):
    """A restart from checkpoints whose node checks hang, then TERM: before, the
    daemon sat out the checks' 30 s deadline (systemd's TimeoutStopSec=30 in
    contrib/inosync.service: a SIGKILL, no stop line); now it stops at once."""
    from helpers import RSYNC
    src = tmp_path / "src"
    (src / "docs").mkdir(parents=True)
    (src / "docs" / "a.txt").write_text("a\n")
    nodes = [tmp_path / f"node{i}" for i in range(3)]
    for n in nodes:
        n.mkdir()
    flag, marker = tmp_path / "hang", tmp_path / "checks"
    rsync = tmp_path / "hanging-rsync"
    rsync.write_text(HANGING_CHECK.format(flag=str(flag), marker=str(marker), rsync=RSYNC))
    rsync.chmod(0o755)
    conf = write_config(tmp_path / "inosync.conf", wpath=str(src), rnodes=[str(n) for n in nodes],
                        edelay=0.2, rsync=str(rsync), max_parallel=1)
    d = run_inosync(conf, "-v")
    wait_converged(src, nodes, timeout=60)
    d.wait_log("watching")
    time.sleep(MARGIN + 0.5)  # the tree made before the start is older than the margin
    assert d.stop() == 0
    flag.write_text("")
    d = run_inosync(conf, "-v")
    wait_until(marker.exists, 20, "the start-up checks running")
    begun = time.monotonic()
    d.signal(signal.SIGTERM)
    assert d.proc.wait(40) == 0
    took = time.monotonic() - begun
    assert took < 5.0, f"stopped {took:.1f} s after TERM"
    assert "stopped (exit status 0)" in d.log()
    assert "not confirmed: inosync is stopping" in d.log()


def one_host_farm(tmp_path: Path, sshd, count: int
                  ) -> tuple[Path, list[Path], Path, Path]:
    """A source, count directories of one ssh host (127.0.0.1) as its nodes, and
    a config whose ssh logs each real connection ("Authenticated to") to a file:
    (src, the node directories, that log, the config)."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a\n")
    remotes = [tmp_path / f"remote{i}" for i in range(count)]
    for r in remotes:
        r.mkdir()
    sshlog = tmp_path / "ssh.log"
    conf = write_config(tmp_path / "inosync.conf", wpath=str(src), edelay=0.2,
                        rnodes=[f"root@127.0.0.1:{r}" for r in remotes], max_parallel=8,
                        ssh=[*sshd.ssh_command(), "-v", "-E", str(sshlog)])
    return src, remotes, sshlog, conf


def test_nodes_on_one_ssh_host_open_one_connection_at_their_turn(
        tmp_path: Path, run_inosync: Callable[..., Inosync], sshd):
    """Eight directories on one host, all due at the start: the bucket gives their
    host one turn, so one new connection should reach it, not eight at once (sshd's
    MaxStartups 10:30:100 drops beyond ten unauthenticated ones). Counted by ssh
    itself: each real connection logs "Authenticated to" (-v -E file)."""
    src, remotes, sshlog, conf = one_host_farm(tmp_path, sshd, 8)
    d = run_inosync(conf)
    wait_converged(src, remotes, timeout=60)
    assert d.stop() == 0
    opened = sshlog.read_text().count("Authenticated to")
    assert opened == 1, f"{opened} connections to one host at its turn"


def test_nodes_on_one_ssh_host_resumed_from_checkpoints_are_checked_over_one_connection(
        tmp_path: Path, run_inosync: Callable[..., Inosync], sshd):
    """A restart of eight nodes of one host from their checkpoints: each node's
    start-up check (nodecheck.py) is an rsync over ssh; started together at their
    host's turn, each opened its own connection. The first opens it, the others
    share it."""
    src, remotes, sshlog, conf = one_host_farm(tmp_path, sshd, 8)
    d = run_inosync(conf)
    wait_converged(src, remotes, timeout=60)
    time.sleep(MARGIN + 0.5)  # the tree older than the checkpoints' margin
    assert d.stop() == 0
    sshlog.write_text("")
    d = run_inosync(conf, "-v")
    d.wait_log("starting from its checkpoint", count=len(remotes))
    assert d.stop() == 0
    assert "synced full sync" not in d.log()  # the checks found every node whole
    opened = sshlog.read_text().count("Authenticated to")
    assert opened == 1, f"{opened} connections to one host for its checks"
