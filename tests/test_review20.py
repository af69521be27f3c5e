"""Review 20 (hostile) of 9b8002c: nodes of one ssh host share the connection its
first run opens (scheduler.connecting, CONNECT_WAIT; daemon's CONNECT_POLL;
nodecheck's after=). Each test failed on that code (then a strict xfail); fixed since:
the pure scheduler lets a host's waiters go when its run ends or is never
started (also -p), forgets a wait at CONNECT_WAIT, and is told of masters that
ended (masters_gone, from the daemon's look at the sockets of the hosts about
to run); the daemon polls only for hosts someone waits for; a start-up check
waits for its host's master, not for the first check's end."""

from __future__ import annotations

import sys
import time

import pytest
from test_parallel import config as parallel_config
from test_parallel import ended, starts

from inosync import nodecheck, scheduler, sshcontrol
from inosync.config import Config
from inosync.scheduler import CheckRoot, RootSame, Scheduler


def config(nodes: tuple[str, ...], **changes: object) -> Config:
    """test_parallel's, with max_parallel 10 unless told."""
    return parallel_config(nodes, **{"max_parallel": 10, **changes})


NODES = ("edge:/a/", "edge:/b/", "edge:/c/")


def test_after_an_idle_master_expired_a_hosts_nodes_do_not_all_open_a_connection_again():
    """Finding 1: after ControlPersist ended an idle master, the next batch
    started every node of the host at once, each opening its own connection."""
    s = Scheduler(config(NODES), seed="x")
    (opener,) = starts(s.begin(0.0))
    others = starts(s.host_connected("edge", 0.5))
    assert len(others) == 2
    for dest in (opener, *others):
        ended(s, dest, 0, 1.0)
    # A quiet spell longer than the master's ControlPersist: it exited and took
    # its socket with it. Then one change, to every node.
    quiet = 1.0 + sshcontrol.PERSIST + 30.0
    s.changed(["index.html"], quiet)
    # The daemon looks at the sockets of the hosts whose runs may start soon
    # (Daemon.inputs, before each tick): this one is gone.
    assert s.hosts_to_check() == {"edge"}
    s.masters_gone(["edge"])
    batch = starts(s.tick(quiet + 2.0))  # edelay 2 s: the flush
    assert len(batch) == 1, f"{len(batch)} runs to one host with no master open them together"


def test_a_host_stops_being_looked_for_once_its_connect_wait_is_over():
    """Finding 2: a wait for a master outlived CONNECT_WAIT when no other node
    asked: the daemon polled at 20 Hz for as long as the first run hung."""
    s = Scheduler(config(("edge:/a/",)), seed="x")
    assert starts(s.begin(0.0)) == ["edge:/a/"]  # its run hangs in ssh's connect
    s.tick(scheduler.CONNECT_WAIT + 1.0)
    s.tick(scheduler.CONNECT_WAIT + 60.0)
    assert not s.connecting, f"still polled for: {s.connecting}"


def test_a_dry_run_does_not_hold_a_hosts_other_nodes_for_a_master_that_never_comes():
    """Finding 3: -p opens no master; the host's other nodes waited CONNECT_WAIT."""
    s = Scheduler(config(NODES), seed="x")
    (opener,) = starts(s.begin(0.0))
    after = starts(s.run_ended(opener, 0, "", 0.01, wall=1000.0, took=0.0, what="full sync",
                               pretended=True))
    assert len(after) == 2
    assert not s.connecting


def test_a_run_not_started_for_a_moved_root_does_not_hold_its_host():
    """Finding 4: a run never started (wpath moved) held its host, and the status
    said a run was opening its connection."""
    s = Scheduler(config(NODES, edelay=1.0), seed="x")
    (opener,) = starts(s.begin(0.0))
    s.root_not_same(opener, 0.0)  # wpath swapped just then: no run, no ssh
    assert any(isinstance(a, CheckRoot) for a in s.tick(1.0))
    again = starts(s.root_checked(RootSame(), 1.0))
    notes = [r["slot"] for r in s.status(1.0, 1000.0)]
    assert again, f"no run to the host although no connection is being opened: {notes}"


def test_start_up_checks_of_a_hosts_other_nodes_are_asked_when_its_first_hangs():
    """Finding 5: the others waited for the first check's end and shared its
    deadline: never asked, told "did not answer", given a needless full sync."""
    argvs = {"a": [sys.executable, "-c", "import time; time.sleep(30)"],
             "b": [sys.executable, "-c", "pass"], "c": [sys.executable, "-c", "pass"]}
    begun = time.monotonic()
    found = nodecheck.check(argvs, deadline=2.0, limit=3, after=dict.fromkeys("abc", "a"))
    assert time.monotonic() - begun < 10.0  # bounded: no spin, no extra wait
    assert found["a"] is not None  # hung: unconfirmed, rightly
    assert found["b"] is None and found["c"] is None, found


# ---------------------------------------------------------------- end to end


def _wakeups(pid: int) -> int:
    """The context switches pid made so far (each sleep that ended is one)."""
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return int(fields["voluntary_ctxt_switches"]) + int(fields["nonvoluntary_ctxt_switches"])


@pytest.mark.slow
def test_a_hanging_first_connection_does_not_keep_the_daemon_polling(tmp_path, run_inosync):
    """Finding 2, end to end: a first run whose ssh makes no master (a wrapper
    that hangs) kept the loop waking every 50 ms long after CONNECT_WAIT."""
    from helpers import write_config

    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a\n")
    fake = tmp_path / "fakessh"  # the operator's wrapper: it hangs in its connect
    fake.write_text("#!/bin/sh\nexec sleep 40\n")
    fake.chmod(0o755)
    conf = write_config(tmp_path / "inosync.conf", wpath=str(src), edelay=0.2,
                        rnodes=["h.invalid:/srv/www/"], ssh=[str(fake)], timeout=60)
    d = run_inosync(conf)
    d.wait_log("watching")
    time.sleep(scheduler.CONNECT_WAIT + 1.0)  # past any wait for the master
    before = _wakeups(d.proc.pid)
    time.sleep(3.0)
    woke = _wakeups(d.proc.pid) - before
    d.stop()
    assert woke < 15, f"{woke} wake-ups in 3 s with nothing to do but wait for one run"


@pytest.mark.slow
def test_after_the_master_ended_the_next_batch_opens_one_connection(tmp_path, run_inosync,
                                                                     sshd):
    """Finding 1, end to end: once the master was gone (told to exit, as
    ControlPersist ends it), the next batch to four nodes opened four connections."""
    import glob
    import stat as st
    import subprocess
    import tempfile

    from helpers import wait_converged
    from test_parallel_e2e import one_host_farm

    src, remotes, sshlog, conf = one_host_farm(tmp_path, sshd, 4)
    tmp = tempfile.mkdtemp(prefix="r20", dir="/tmp")  # short: a socket path's limit
    try:
        d = run_inosync(conf, env={"TMPDIR": tmp})
        wait_converged(src, remotes, timeout=60)
        time.sleep(0.5)
        assert sshlog.read_text().count("Authenticated to") == 1
        (sock,) = [p for p in glob.glob(f"{tmp}/inosync-ssh-*/*")
                   if st.S_ISSOCK(__import__("os").lstat(p).st_mode)]
        subprocess.run(["ssh", "-F", "/dev/null", "-S", sock, "-O", "exit", "x"],
                       capture_output=True, timeout=10)  # as ControlPersist ends it
        time.sleep(0.5)
        sshlog.write_text("")
        (src / "b.txt").write_text("b\n")
        wait_converged(src, remotes, timeout=60)
        time.sleep(0.5)
        assert d.stop() == 0
        opened = sshlog.read_text().count("Authenticated to")
        assert opened == 1, f"{opened} connections to one host for one batch"
    finally:
        __import__("shutil").rmtree(tmp, ignore_errors=True)
