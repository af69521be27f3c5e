"""One inosync per tree, whatever the mode (foreground, -d, -p), and -p writes
nothing: end to end, with the real command and real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from helpers import alive, inosync_argv, wait_converged, wait_until, write_config

pytestmark = pytest.mark.slow  # end to end: real processes


def configure(tmp_path: Path, tree: dict, name: str = "inosync.conf", **extra: object) -> Path:
    return write_config(tmp_path / name, wpath=str(tree["src"]),
                        rnodes=[str(n) for n in tree["nodes"]], edelay=0.2, **extra)


def second(conf: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Another instance of the tree: it must give up at once (a timeout is a failure)."""
    try:
        return subprocess.run([*inosync_argv(), "-c", str(conf), *args], capture_output=True,
                              text=True, timeout=15, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:  # it ran: the killed child is reaped by run()
        raise AssertionError(f"a second instance of the tree was not refused: {e.stderr!r}"
                             ) from None


def refusal(done: subprocess.CompletedProcess[str], pid: int, wpath: Path) -> None:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1, done.stderr
    assert len(lines) == 1, lines
    assert f"another inosync (pid {pid}) already watches {wpath}; stop it first" in lines[0]


@pytest.fixture
def daemon(tmp_path, tree):
    """A -d daemon of the tree whose config names no pidfile (as in the issue): it
    gets one with --pidfile, since /run/inosync.pid belongs to the machine."""
    status = tmp_path / "status.json"
    conf = configure(tmp_path, tree, statusfile=str(status), logfile=str(tmp_path / "d.log"))
    pidfile = tmp_path / "d.pid"
    done = subprocess.run([*inosync_argv(), "-c", str(conf), "-d", "--pidfile", str(pidfile)],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), 10, "pidfile")
    pid = int(pidfile.read_text())
    wait_converged(tree["src"], tree["nodes"])
    wait_until(lambda: json.loads(status.read_text())["pid"] == pid, 10, "the daemon's status")
    yield {"conf": conf, "pid": pid, "status": status}
    if alive(pid):
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not alive(pid), 20, "the daemon to stop")


def test_a_foreground_instance_beside_a_daemon_is_refused(daemon, tree):
    done = second(daemon["conf"])
    refusal(done, daemon["pid"], tree["src"])
    assert alive(daemon["pid"])


def test_a_dry_run_beside_a_daemon_is_refused_and_leaves_its_statusfile(daemon, tree):
    before = daemon["status"].read_bytes()
    done = second(daemon["conf"], "-p")
    refusal(done, daemon["pid"], tree["src"])
    assert daemon["status"].read_bytes() == before
    assert json.loads(before)["state"] == "running"


def test_a_dry_run_writes_nothing_and_says_so_last(tmp_path, tree, run_inosync):
    state = tmp_path / "state"
    files = {"statusfile": tmp_path / "status.json", "pidfile": tmp_path / "p.pid",
             "logfile": tmp_path / "p.log"}
    conf = configure(tmp_path, tree, state_dir=str(state),
                     **{name: str(path) for name, path in files.items()})
    d = run_inosync(conf, "-p")
    d.wait_log("would run", count=len(tree["nodes"]))
    (tree["src"] / "new.txt").write_text("x")
    (tree["src"] / "index.html").rename(tree["src"] / "home.html")  # a replay would mark
    d.wait_log(r"would run \(3 paths\)", count=len(tree["nodes"]))
    assert [name for name, path in files.items() if path.exists()] == []  # not even meanwhile
    assert d.stop() == 0
    assert [name for name, path in files.items() if path.exists()] == []
    assert not state.exists()
    assert all(not os.listdir(n) for n in tree["nodes"])
    last = d.log().strip().splitlines()[-1]
    assert "dry run: nothing was copied" in last and "4 rsync runs would have run" in last


def test_a_second_instance_through_another_path_waits_for_the_first_to_stop(tmp_path, tree,
                                                                            run_inosync):
    """Two configs name one tree (one through a symlink): the second is refused
    while the first runs, and starts once it stopped (the kernel dropped the lock)."""
    first = run_inosync(configure(tmp_path, tree))
    first.wait_log("initial sync")
    wait_converged(tree["src"], tree["nodes"])
    (tmp_path / "link").symlink_to(tree["src"])
    other = write_config(tmp_path / "other.conf", wpath=str(tmp_path / "link"),
                         rnodes=[str(tree["nodes"][0])], edelay=0.2,
                         state_dir=str(tmp_path / "state"))
    refusal(second(other), first.proc.pid, tree["src"])
    assert first.stop() == 0
    again = run_inosync(other)
    again.wait_log("initial sync")
    (tree["src"] / "later.txt").write_text("later\n")
    wait_until(lambda: (tree["nodes"][0] / "later.txt").exists(), 20, "the new instance")
    assert again.stop() == 0


def test_two_configs_of_one_tree_with_two_state_dirs_are_one_instance(tmp_path, tree,
                                                                      run_inosync):
    """c1.conf and c2.conf differ only in state_dir: the second is refused (both
    ran and both synced when the lock lay in state_dir)."""
    c1 = configure(tmp_path, tree, "c1.conf", state_dir=str(tmp_path / "st1"))
    c2 = configure(tmp_path, tree, "c2.conf", state_dir=str(tmp_path / "st2"))
    first = run_inosync(c1)
    first.wait_log("initial sync")
    refusal(second(c2), first.proc.pid, tree["src"])
    assert first.stop() == 0
