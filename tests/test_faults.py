"""Break real things and check that every node converges anyway.

Nodes are real hosts (network namespaces with their own sshd, see hosts.py);
links go down, sshd stops, rsync children die, disks fill up, the inotify
queue overflows and the watch limit is hit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import (
    converged,
    inotify_watches,
    overflow_queue,
    own_watch_limit,
    set_own_watch_limit,
    wait_converged,
    wait_until,
    write_config,
)
from hosts import TestHost, can_make_namespaces

pytestmark = pytest.mark.slow  # end to end: real processes

FAST_RETRY = {"edelay": 0.2, "retry_min": 0.5, "retry_max": 2, "timeout": 5}


@pytest.fixture(scope="module")
def small_disk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A 4 MB tmpfs, which the hosts' sshd sees too (they share our mounts)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path_factory.mktemp("small")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory, small_disk: Path) -> Iterator[list[TestHost]]:
    reason = can_make_namespaces()
    if reason:
        pytest.skip(reason)
    made: list[TestHost] = []
    try:
        key = None
        for i in (1, 2):
            made.append(TestHost(i, tmp_path_factory.mktemp(f"host{i}"), key).create())
            key = made[0].sshd.client_key if made[0].sshd else None
        yield made
    finally:
        for h in made:
            h.destroy()


def node_dirs(tmp_path: Path, n: int) -> list[Path]:
    dirs = [tmp_path / f"target{i}" for i in range(n)]
    for d in dirs:
        d.mkdir()
    return dirs


def ssh_config(tree: dict, hosts: list[TestHost], dirs: list[Path], **extra: object) -> Path:
    rnodes = [h.dest(d) for h, d in zip(hosts, dirs)]
    assert hosts[0].sshd is not None
    return write_config(tree["dir"] / "inosync.conf", wpath=str(tree["src"]), rnodes=rnodes,
                        ssh=hosts[0].sshd.ssh_command(), **{**FAST_RETRY, **extra})


def rsync_children(pid: int) -> list[int]:
    kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(k) for k in kids if b"rsync" in Path(f"/proc/{k}/cmdline").read_bytes()]


def test_link_down_other_node_stays_current(tree, run_inosync, hosts, tmp_path):
    src = tree["src"]
    down, up = node_dirs(tmp_path, 2)
    d = run_inosync(ssh_config(tree, hosts, [down, up]), "-v")
    wait_converged(src, [down, up])
    hosts[0].link(False)
    try:
        deadline = time.monotonic() + 20
        i = 0
        while time.monotonic() < deadline:
            (src / f"during-{i}.txt").write_text(f"change {i} while the link is down\n")
            i += 1
            wait_converged(src, [up], timeout=15)  # the healthy node keeps up
        assert not converged(src, [down])
        d.wait_log(f"{hosts[0].address}.*rsync failed")
    finally:
        hosts[0].link(True)
    wait_converged(src, [down, up], timeout=60)
    d.wait_log(f"{hosts[0].address}.*recovered")
    # Failures are logged once per change of health, not once per retry.
    failures = [x for x in d.log().splitlines()
                if "ERROR" in x and hosts[0].address in x and "rsync failed" in x]
    assert 1 <= len(failures) <= 3, failures
    assert d.stop() == 0


def test_sshd_stopped_and_restarted(tree, run_inosync, hosts, tmp_path):
    src = tree["src"]
    target, other = node_dirs(tmp_path, 2)
    # Without a shared connection: an open master connection outlives its sshd's
    # listener (that is the point of it), so no run would fail here.
    d = run_inosync(ssh_config(tree, hosts, [target, other], ssh_control=False), "-v")
    wait_converged(src, [target, other])
    sshd = hosts[0].sshd
    assert sshd is not None
    sshd.stop()
    try:
        (src / "while-sshd-is-down.txt").write_text("x\n")
        (src / "docs" / "a.txt").unlink()
        d.wait_log(f"{hosts[0].address}.*rsync failed: exit 255")
        wait_converged(src, [other])
    finally:
        sshd.start()
    wait_converged(src, [target, other], timeout=30)
    assert d.stop() == 0


def slow_transfer(tree: dict, run_inosync, tmp_path: Path, rspeed: int, megabytes: int):
    """A daemon busy sending one big file to two local nodes at rspeed KB/s."""
    src = tree["src"]
    nodes = node_dirs(tmp_path, 2)
    conf = write_config(tree["dir"] / "inosync.conf", wpath=str(src),
                        rnodes=[str(n) for n in nodes], rspeed=rspeed, **FAST_RETRY)
    d = run_inosync(conf, "-v")
    wait_converged(src, nodes)
    (src / "big.bin").write_bytes(os.urandom(megabytes * 1024 * 1024))
    kids = wait_until(lambda: rsync_children(d.proc.pid), 10, "an rsync child")
    return d, src, nodes, kids


def test_rsync_killed_mid_transfer(tree, run_inosync, tmp_path):
    d, src, nodes, kids = slow_transfer(tree, run_inosync, tmp_path, 2000, 8)  # ~4 s
    os.kill(kids[0], signal.SIGKILL)
    d.wait_log("rsync failed: killed by signal 9")
    wait_converged(src, nodes, timeout=60)
    assert d.stop() == 0


def test_node_disk_full_until_space_is_freed(tree, run_inosync, hosts, tmp_path, small_disk):
    src = tree["src"]
    full = small_disk / "target"
    full.mkdir()
    (other,) = node_dirs(tmp_path, 1)
    d = run_inosync(ssh_config(tree, hosts, [full, other]), "-v")
    wait_converged(src, [full, other])
    filler = small_disk / "filler"  # beside the target: rsync --delete cannot free it
    filler.write_bytes(b"\0" * (3 * 1024 * 1024))
    (src / "large.bin").write_bytes(os.urandom(2 * 1024 * 1024))
    d.wait_log(f"{hosts[0].address}.*rsync failed")
    wait_converged(src, [other])
    assert not converged(src, [full])
    filler.unlink()
    wait_converged(src, [full, other], timeout=30)
    assert d.stop() == 0


def test_queue_overflow_then_full_sync(tree, run_inosync, tmp_path):
    src = tree["src"]
    nodes = node_dirs(tmp_path, 2)
    conf = write_config(tree["dir"] / "inosync.conf", wpath=str(src),
                        rnodes=[str(n) for n in nodes], **FAST_RETRY)
    d = run_inosync(conf, "-v")
    wait_converged(src, nodes)
    d.wait_log("synced full sync", count=2)
    flood = src / "flood"
    flood.mkdir()
    wait_converged(src, nodes)  # now flood/ has its watch
    overflow_queue(d, flood, (src / "index.html").unlink)
    # index.html was deleted: wpath's own entries changed, which only a full sync
    # covers (issue 18.5: else a scan finds what changed, tests/test_overflow_e2e.py)
    d.wait_log("inotify queue overflowed: events were lost; rewatched, full sync to every "
               "node: the entries or attributes of wpath itself changed meanwhile")
    wait_converged(src, nodes, timeout=60)
    assert d.log().count("synced full sync") >= 4
    assert d.stop() == 0


def test_watch_limit_at_start_exits_1(tree, run_inosync, tmp_path):
    """The daemon in a user namespace of its own whose watch limit is 3 (less than
    the directories above wpath): lowering the machine's limit instead bound
    every daemon of root's, other tests' and other test runs' too."""
    for i in range(30):
        (tree["src"] / f"dir{i}").mkdir()
    conf = write_config(tree["dir"] / "inosync.conf", wpath=str(tree["src"]),
                        rnodes=[str(n) for n in tree["nodes"]], edelay=0.2)
    d = run_inosync(conf, wrap=own_watch_limit(3))
    rc = d.proc.wait(30)
    if rc == 97:
        pytest.skip(f"no user namespace with a watch limit of its own here: {d.log()}")
    assert rc == 1
    log = d.log()
    assert "fs.inotify.max_user_watches" in log and "about 33 directories" in log
    assert "Traceback" not in log
    assert all(not os.listdir(n) for n in tree["nodes"])


def test_watch_limit_at_run_time_falls_back_to_full_syncs(tree, run_inosync):
    src, nodes = tree["src"], tree["nodes"]
    conf = write_config(tree["dir"] / "inosync.conf", wpath=str(src),
                        rnodes=[str(n) for n in nodes], rescan_interval=1, **FAST_RETRY)
    d = run_inosync(conf, "-v", wrap=own_watch_limit())
    wait_converged(src, nodes)
    d.wait_log("synced full sync", count=2)
    set_own_watch_limit(d.proc.pid, inotify_watches(d.proc.pid) + 2)  # its namespace only
    for i in range(6):
        (src / "grown" / f"d{i}").mkdir(parents=True)
    d.wait_log("inotify watch limit reached")
    wait_converged(src, nodes)
    # Written into directories that have no watch: only the periodic
    # whole-directory syncs can bring them over.
    for i in range(6):
        (src / "grown" / f"d{i}" / "late.txt").write_text("no event for this\n")
    wait_converged(src, nodes, timeout=30)
    assert d.stop() == 0


def test_term_during_transfer_then_restart_repairs(tree, run_inosync, tmp_path):
    d, src, nodes, kids = slow_transfer(tree, run_inosync, tmp_path, 500, 16)  # ~32 s
    (src / "queued.txt").write_text("arrives while the node is busy\n")
    d.wait_log("change.*queued.txt")
    started = time.monotonic()
    assert d.stop(timeout=30) == 0
    assert time.monotonic() - started < 20  # 10 s grace, then killed
    assert all(not Path(f"/proc/{k}").exists() or
               Path(f"/proc/{k}/stat").read_text().split(") ")[1][0] == "Z" for k in kids)
    assert "pending at shutdown" in d.log()
    assert not converged(src, nodes)
    again = run_inosync(write_config(tree["dir"] / "fast.conf", wpath=str(src),
                                     rnodes=[str(n) for n in nodes], **FAST_RETRY))
    wait_converged(src, nodes, timeout=60)  # the initial full sync repairs it
    assert again.stop() == 0


def test_event_storm_costs_one_full_sync(tree, run_inosync, tmp_path):
    src = tree["src"]
    nodes = node_dirs(tmp_path, 2)
    conf = write_config(tree["dir"] / "inosync.conf", wpath=str(src),
                        rnodes=[str(n) for n in nodes], max_pending=100,
                        **{**FAST_RETRY, "edelay": 1})
    d = run_inosync(conf, "-v")
    wait_converged(src, nodes)
    d.wait_log("synced full sync", count=2)
    for i in range(1000):
        (src / f"storm{i}").write_bytes(b"x")
    wait_converged(src, nodes)
    d.wait_log("synced full sync", count=4)
    # Past max_pending the set collapsed to "whole tree": no list of 1000.
    assert "synced 1000 path" not in d.log()
    assert d.stop() == 0
