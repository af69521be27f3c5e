"""What a sysadmin relies on every day, end to end: periodic resync, the log
lines and the statusfile, progress on long work."""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import ROOT, inosync_argv, wait_converged, wait_until, write_config

from inosync import __version__

pytestmark = pytest.mark.slow  # end to end: real processes


def test_node_changed_behind_our_back_is_repaired_by_the_periodic_resync(tree, run_inosync):
    src, node = tree["src"], tree["nodes"][0]
    status = tree["dir"] / "status.json"
    conf = write_config(tree["dir"] / "inosync.conf", wpath=str(src), rnodes=[str(node)],
                        edelay=0.2, resync_interval=2, statusfile=str(status))
    d = run_inosync(conf)
    wait_converged(src, [node])
    d.wait_log("synced full sync")
    shutil.rmtree(node / "docs")  # wiped from outside: no event tells us
    (node / "index.html").write_text("defaced\n")
    (node / "extra").write_text("not in the source\n")
    wait_converged(src, [node], timeout=15)
    assert "periodic full sync (resync_interval 2 s)" in d.log()
    row = json.loads(status.read_text())["nodes"][0]
    assert isinstance(row["last_full_sync"], float)
    assert d.stop() == 0


def test_resync_can_be_turned_off(tree, run_inosync):
    src, node = tree["src"], tree["nodes"][0]
    conf = write_config(tree["dir"] / "inosync.conf", wpath=str(src), rnodes=[str(node)],
                        edelay=0.2, resync_interval=0)
    d = run_inosync(conf)
    wait_converged(src, [node])
    (node / "extra").write_text("drift\n")
    with pytest.raises(AssertionError):
        wait_until(lambda: not (node / "extra").exists(), 3, "a resync that must not come")
    assert "periodic full sync" not in d.log()
    assert d.stop() == 0


def test_log_reads_well_from_start_to_stop(tree, run_inosync):
    src, node = tree["src"], tree["nodes"][0]
    status = tree["dir"] / "status.json"
    conf = write_config(tree["dir"] / "inosync.conf", wpath=str(src), rnodes=[str(node)],
                        edelay=0.2, statusfile=str(status))
    d = run_inosync(conf)
    d.wait_log("synced full sync")
    first = d.log().splitlines()[0]
    assert f"inosync {__version__}, config {conf}: watching {src} (3 directories); " \
           "initial sync to 1 node" in first
    d.signal(signal.SIGINT)
    assert d.proc.wait(20) == 0
    log = d.log()
    assert "stopping (SIGINT)" in log
    # Issue 17.8: not "every node had everything" (a dry run, a tampered node): what is known
    assert log.splitlines()[-1].endswith("stopped (exit status 0); nothing pending")
    data = json.loads(status.read_text())
    assert (data["state"], data["exit_status"]) == ("stopped", 0)
    row = data["nodes"][0]
    assert (row["pending_paths"], row["pending_full"], row["pending"]) == (0, False, "0 paths")


def test_stop_line_says_what_was_pending_and_recovery_how_long_it_took(tree, run_inosync):
    src, node = tree["src"], tree["nodes"][0]
    status = tree["dir"] / "status.json"
    parked = tree["dir"] / "parked"
    node.rename(parked)
    node.write_text("a file where the node's directory should be: every run fails\n")
    conf = write_config(tree["dir"] / "inosync.conf", wpath=str(src), rnodes=[str(node)],
                        edelay=0.2, retry_min=0.3, retry_max=0.5, statusfile=str(status))
    d = run_inosync(conf)
    d.wait_log("rsync failed")
    row = json.loads(status.read_text())["nodes"][0]
    assert (row["pending_full"], row["state"]) == (True, "waiting")
    node.unlink()
    parked.rename(node)
    d.wait_log(r"recovered after \d+ s")
    node.rename(parked)  # failing again, with changes pending
    node.write_text("broken again\n")
    for name in ("p1", "p2"):
        (src / name).write_text(name)
    d.wait_log("rsync failed", count=2)
    wait_until(lambda: json.loads(status.read_text())["nodes"][0]["pending_paths"] == 2, 10)
    assert d.stop() == 0
    assert d.log().splitlines()[-1].endswith(
        f"stopped (exit status 0); pending: {node}: 2 paths (the next start sends "
        "it)")


@contextlib.contextmanager
def daemonized(tree, tmp_path: Path, **settings: object) -> Iterator[tuple[int, str]]:
    """inosync -d on tree's source and first node: (its pid, what it said on the
    terminal before detaching); stopped with SIGTERM at the end."""
    pidfile = tmp_path / "inosync.pid"
    conf = write_config(tmp_path / "inosync.conf", wpath=str(tree["src"]),
                        rnodes=[str(tree["nodes"][0])], edelay=0.2, pidfile=str(pidfile),
                        **settings)
    done = subprocess.run([*inosync_argv(), "-c", str(conf), "-d"], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), 10, "pidfile")
    pid = int(pidfile.read_text())
    try:
        yield pid, done.stderr
    finally:
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not pidfile.exists(), 30, "the daemon to stop")


def test_logfile_is_reopened_on_hup(tree, tmp_path):
    logfile = tmp_path / "inosync.log"
    with daemonized(tree, tmp_path, logfile=str(logfile)) as (pid, _):
        wait_until(lambda: "synced full sync" in logfile.read_text(), 20, "initial sync")
        logfile.rename(tmp_path / "inosync.log.1")  # what logrotate does
        os.kill(pid, signal.SIGHUP)
        wait_until(lambda: logfile.exists() and "reloaded" in logfile.read_text(), 20,
                   "the reload logged in a new file")
        assert "reloaded" not in (tmp_path / "inosync.log.1").read_text()


def test_d_without_a_log_target_says_so_before_detaching(tree, tmp_path):
    if os.path.exists("/dev/log"):
        pytest.skip("a syslog daemon listens on /dev/log here")
    with daemonized(tree, tmp_path) as (_, said):
        assert "sets no logfile and no syslog daemon listens on /dev/log" in said
        wait_converged(tree["src"], [tree["nodes"][0]])


def slow_full_sync(tree, **settings: object):
    """A tree whose full sync takes about 4 s (4 MB at 1 MB/s)."""
    src, node = tree["src"], tree["nodes"][0]
    for i in range(8):
        (src / f"big{i}").write_bytes(os.urandom(500_000))
    status = tree["dir"] / "status.json"
    conf = write_config(tree["dir"] / "inosync.conf", wpath=str(src), rnodes=[str(node)],
                        edelay=0.2, rspeed=1000, progress_interval=1, statusfile=str(status),
                        **settings)
    return src, node, status, conf


def test_a_long_full_sync_reports_its_progress(tree, run_inosync):
    src, node, status, conf = slow_full_sync(tree)
    d = run_inosync(conf)
    d.wait_log(r"full sync running for \d+ s, (\d+%|still scanning the tree) \([\d.]+ [kM]B "
               r"sent, \d+ files?", count=2)
    wait_until(lambda: json.loads(status.read_text())["nodes"][0]["progress"], 10,
               "progress in the statusfile")
    d.signal(signal.SIGUSR1)
    d.wait_log(r"status: .*: running, pending full sync, .*; full sync running for")
    d.wait_log("synced full sync")
    assert json.loads(status.read_text())["nodes"][0]["progress"] is None
    wait_converged(src, [node])
    assert d.stop() == 0


def test_a_terminal_shows_a_live_progress_line(tree, tmp_path):
    src, node, _, conf = slow_full_sync(tree)
    controller, terminal = os.openpty()
    proc = subprocess.Popen([*inosync_argv(), "-c", str(conf)], stdin=subprocess.DEVNULL,
                            stdout=terminal, stderr=terminal)
    os.close(terminal)
    out = b""
    try:
        while b"synced full sync" not in out:
            ready, _, _ = select.select([controller], [], [], 20)
            assert ready, out[-2000:]
            out += os.read(controller, 65536)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        os.close(controller)
    lines = re.findall(rb"\r\x1b\[K([^\r\n]*)", out)
    assert any(re.match(rb".*node1: full sync running for \d+ s, (\d+%|still scanning)", line)
               for line in lines)
    assert re.search(rb"\r\x1b\[K\d{4}-\d\d-\d\d [\d:,]+ INFO .*synced full sync", out)


def test_the_contrib_logrotate_snippet_rotates_without_losing_lines(tree, tmp_path):
    logrotate = shutil.which("logrotate") or "/usr/sbin/logrotate"
    if not os.path.exists(logrotate):
        pytest.skip("logrotate is not installed (apt-get install logrotate)")
    src, logfile = tree["src"], tmp_path / "inosync.log"
    snippet = (ROOT / "contrib" / "inosync.logrotate").read_text()
    rotate = tmp_path / "logrotate.conf"
    rotate.write_text(snippet.replace("/var/log/inosync.log", str(logfile))
                      .replace("create 0640 root adm", "create 0640 root root"))
    with daemonized(tree, tmp_path, logfile=str(logfile)):
        wait_until(lambda: "synced full sync" in logfile.read_text(), 20, "initial sync")
        state = tmp_path / "logrotate.state"  # "state" is the daemon's state_dir
        done = subprocess.run([logrotate, "-f", "-s", str(state), str(rotate)],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert "synced full sync" in (tmp_path / "inosync.log.1").read_text()
        (src / "after-rotation").write_text("x")
        wait_until(lambda: "synced 1 path" in logfile.read_text(), 20,
                   "the next line in the new file")
        assert "reloaded" not in logfile.read_text()  # no HUP: no full sync


def test_a_change_waiting_for_edelay_is_shown(tree, run_inosync):
    """Issue 17.2: during edelay USR1 said "pending 0 paths" and the statusfile
    pending_paths 0, yet stop said "1 path pending"."""
    src, node = tree["src"], tree["nodes"][0]
    status = tree["dir"] / "status.json"
    conf = write_config(tree["dir"] / "inosync.conf", wpath=str(src), rnodes=[str(node)],
                        edelay=30, statusfile=str(status))
    d = run_inosync(conf)
    d.wait_log("synced full sync")
    (src / "new.txt").write_text("new\n")
    wait_until(lambda: json.loads(status.read_text())["nodes"][0]["pending_paths"] == 1, 10)
    row = json.loads(status.read_text())["nodes"][0]
    assert row["pending"].startswith("1 path waiting, sync in ") and row["sync_in"] > 20
    d.signal(signal.SIGUSR1)
    d.wait_log(r"status: .*: idle, pending 1 path waiting, sync in \d+ s")
    assert d.stop() == 0
    assert "1 path pending at shutdown" in d.log()
