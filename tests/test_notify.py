"""notify.py (sd_notify(3) over a real AF_UNIX socket) and statusline.py (the
STATUS= line, made from the rows of a real Scheduler)."""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from pathlib import Path

import pytest
from test_scheduler import A, B, config, ended, starts

from inosync.notify import Notifier, monotonic_usec, one_line, socket_address
from inosync.scheduler import RootSame, Scheduler
from inosync.statusline import summary


class Listener:
    """What systemd does: a SOCK_DGRAM socket that receives the messages."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.5)

    def take(self) -> list[str]:
        """Every message sent so far."""
        got = []
        self.sock.settimeout(0.05)
        try:
            while True:
                got.append(self.sock.recv(4096).decode())
        except socket.timeout:
            return got

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listener(tmp_path: Path):
    path = tmp_path / "notify.sock"
    lst = Listener(str(path))
    yield str(path), lst
    lst.close()


# ---- the address


def test_socket_address() -> None:
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("@/org/freedesktop/systemd1/notify/123") == \
        "\0/org/freedesktop/systemd1/notify/123"
    assert socket_address(None) is None
    assert socket_address("") is None
    assert socket_address("vsock:2:1234") is None
    assert socket_address("relative/path") is None


def test_unset_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    n = Notifier.from_environ()
    assert not n.enabled
    assert n.send("READY=1") is False
    n.ready(), n.reloading(), n.stopping(), n.status("x")
    assert n._sock is None  # not even a socket


def test_from_environ_takes_the_variable_away(monkeypatch: pytest.MonkeyPatch,
                                              listener) -> None:
    """rsync and ssh children must not inherit NOTIFY_SOCKET (sd_notify's unset_environment)."""
    path, lst = listener
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    n = Notifier.from_environ()
    assert "NOTIFY_SOCKET" not in os.environ
    n.ready()
    assert lst.take() == ["READY=1"]


# ---- the messages


def test_messages_to_a_path_socket(listener) -> None:
    path, lst = listener
    n = Notifier(path)
    n.ready()
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    n.reloading()
    after = monotonic_usec()
    n.ready()
    n.stopping()
    n.stopping()  # once only
    got = lst.take()
    assert got[0] == "READY=1" and got[2] == "READY=1" and got[3] == "STOPPING=1"
    assert len(got) == 4
    reloading, usec = got[1].split("\n")
    assert reloading == "RELOADING=1"
    assert usec.startswith("MONOTONIC_USEC=")
    assert before <= int(usec.partition("=")[2]) <= after


def test_abstract_namespace() -> None:
    name = f"inosync-test-{os.getpid()}-{time.monotonic_ns()}"
    lst = Listener("\0" + name)
    try:
        n = Notifier("@" + name)
        n.ready()
        n.status("idle; 1 node in sync")
        assert lst.take() == ["READY=1", "STATUS=idle; 1 node in sync"]
    finally:
        lst.close()


def test_status_sent_only_when_it_changes(listener) -> None:
    path, lst = listener
    n = Notifier(path)
    for text in ("initial sync to 2 nodes", "initial sync to 2 nodes", "idle; 2 nodes in sync",
                 "idle; 2 nodes in sync", "initial sync to 2 nodes"):
        n.status(text)
    assert lst.take() == ["STATUS=initial sync to 2 nodes", "STATUS=idle; 2 nodes in sync",
                          "STATUS=initial sync to 2 nodes"]


def test_status_is_one_line() -> None:
    assert one_line("a\nb\r\n  c") == "a b c"
    long = one_line("x" * 1000)
    assert len(long) == 200 and long.endswith("...")


def test_failed_send_never_raises_and_is_logged_once(tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    n = Notifier(str(tmp_path / "nobody-listens"))
    with caplog.at_level(logging.DEBUG, logger="inosync"):
        assert n.send("READY=1") is False
        n.ready()
        n.status("idle")
        n.stopping()
    complaints = [r for r in caplog.records if "cannot notify" in r.getMessage()]
    assert len(complaints) == 1 and complaints[0].levelno == logging.DEBUG
    assert "nobody-listens" in complaints[0].getMessage()


def test_failed_send_is_retried_later(tmp_path: Path) -> None:
    """A status that did not get through is sent again, not taken as said."""
    path = str(tmp_path / "late.sock")
    n = Notifier(path)
    n.status("idle; 1 node in sync")
    lst = Listener(path)
    try:
        n.status("idle; 1 node in sync")
        assert lst.take() == ["STATUS=idle; 1 node in sync"]
    finally:
        lst.close()


def test_address_that_is_not_unix_is_ignored(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="inosync"):
        n = Notifier("vsock:2:1234")
    assert not n.enabled and n.send("READY=1") is False
    assert "not an AF_UNIX socket address" in caplog.text


# ---- the STATUS= line, from a real scheduler's status()


def line(s: Scheduler, now: float) -> str:
    return summary(s.status(now, 1000.0 + now), s.stopping)


def test_status_line_through_a_story() -> None:
    s = Scheduler(config())
    starts(s.begin(0.0))
    assert line(s, 0.0) == "initial sync to 2 nodes"
    ended(s, A, 0, 1.0)
    assert line(s, 1.0) == "initial sync to 1 node"
    ended(s, B, 0, 1.5)
    assert line(s, 1.5) == "idle; 2 nodes in sync"

    s.changed(["docs/a.txt", "docs/b.txt"], 2.0)
    # Still collecting (edelay 2 s): said, with when it goes out (issue 17.2).
    assert line(s, 2.0) == "2 paths waiting, sync in 2 s (2 nodes)"
    runs = starts(s.tick(4.0))
    assert set(runs) == {A, B}
    assert line(s, 4.0) == "syncing 2 paths to 2 nodes"
    ended(s, A, 0, 5.0)
    assert line(s, 5.0) == "syncing 2 paths to 1 node"

    ended(s, B, 255, 5.0, stderr="ssh: connect to host b.example.com port 22: "
                                 "Connection refused\n")
    failing = line(s, 5.0)
    assert failing.startswith(f"1 node failing: {B}: exit 255")
    starts(s.tick(6.0))  # the retry runs
    assert line(s, 6.0).startswith("1 node failing:"), "failing until it recovers"
    ended(s, B, 0, 7.0)
    assert line(s, 7.0) == "idle; 2 nodes in sync"


def test_status_line_full_sync_and_stopping() -> None:
    s = Scheduler(config())
    starts(s.begin(0.0))
    ended(s, A, 0, 1.0)
    ended(s, B, 0, 1.0)
    s.overflowed(2.0)  # events lost: a full sync to every node once wpath is known
    starts(s.root_checked(RootSame(), 2.0))
    starts(s.tick(2.0))
    assert line(s, 2.0) == "full sync to 2 nodes"
    s.signal(signal.SIGTERM, 3.0)
    assert line(s, 3.0) == "stopping; 2 rsyncs still running"
    ended(s, A, 0, 4.0)
    assert line(s, 4.0) == "stopping; 1 rsync still running"
    ended(s, B, 0, 4.0)
    assert line(s, 4.0) == "stopping"


def test_status_line_error_is_short() -> None:
    rows = [{"node": "n", "state": "waiting", "pending": "1 path", "failures": 3,
             "last_ok": None, "last_error": "x" * 500}]
    text = summary(rows)
    assert text.startswith("1 node failing: n: xxx") and len(text) < 140
