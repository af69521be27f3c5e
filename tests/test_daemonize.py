"""-d: pidfile, log file, signals (TERM, HUP, USR1), all with the real command."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
from helpers import alive, inosync_argv, wait_converged, wait_until, write_config

pytestmark = pytest.mark.slow  # end to end: real processes


class Background:
    def __init__(self, tmp_path: Path, tree: dict) -> None:
        self.dir = tmp_path
        self.src, self.nodes = tree["src"], tree["nodes"]
        self.pidfile = tmp_path / "inosync.pid"
        self.logfile = tmp_path / "inosync.log"
        self.statusfile = tmp_path / "status.json"
        self.conf = tmp_path / "inosync.conf"
        self.pid: int | None = None
        self.configure(self.nodes)

    def configure(self, nodes: list[Path], **extra: object) -> None:
        write_config(self.conf, wpath=str(self.src), rnodes=[str(n) for n in nodes],
                     edelay=0.2, pidfile=str(self.pidfile), logfile=str(self.logfile),
                     statusfile=str(self.statusfile), **extra)

    def start(self) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([*inosync_argv(), "-c", str(self.conf), "-d"],
                              capture_output=True, text=True, timeout=30)
        if done.returncode == 0:
            wait_until(lambda: self.pidfile.exists() and self.pidfile.read_text().strip(),
                       10, "pidfile")
            self.pid = int(self.pidfile.read_text())
        return done

    def log(self) -> str:
        return self.logfile.read_text() if self.logfile.exists() else ""

    def wait_log(self, text: str, count: int = 1) -> None:
        wait_until(lambda: self.log().count(text) >= count, 20, f"log {text!r}")

    def stop(self) -> None:
        if self.pid and alive(self.pid):
            os.kill(self.pid, signal.SIGTERM)
            wait_until(lambda: not alive(self.pid), 30, "daemon to exit")

    def kill(self) -> None:
        """At teardown: SIGTERM first, so the daemon removes its temporary directories."""
        if self.pid and alive(self.pid):
            os.kill(self.pid, signal.SIGTERM)
            try:
                wait_until(lambda: not alive(self.pid), 15, "daemon to stop")
            except AssertionError:
                os.kill(self.pid, signal.SIGKILL)
                wait_until(lambda: not alive(self.pid), 10, "daemon to die")


@pytest.fixture
def bg(tmp_path, tree):
    b = Background(tmp_path, tree)
    yield b
    b.kill()


def test_daemonize_pidfile_and_term(bg):
    done = bg.start()
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == ""
    assert alive(bg.pid) and bg.pid != os.getpid()
    wait_converged(bg.src, bg.nodes)
    (bg.src / "later.txt").write_text("after the fork\n")
    wait_converged(bg.src, bg.nodes)  # the inotify fd survived the fork
    bg.wait_log("synced 1 path")  # and so did the log file
    bg.stop()
    assert not bg.pidfile.exists()
    assert "stopping" in bg.log()


def test_second_instance_refused(bg):
    assert bg.start().returncode == 0
    second = subprocess.run([*inosync_argv(), "-c", str(bg.conf), "-d"],
                            capture_output=True, text=True, timeout=30)
    assert second.returncode == 1
    assert f"held by running process {bg.pid}" in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1
    assert alive(bg.pid)


def test_stale_pidfile_taken_over(bg):
    bg.pidfile.write_text("999999\n")  # no process, no lock: a crash leftover
    assert bg.start().returncode == 0
    assert bg.pid != 999999 and alive(bg.pid)


def test_symlinked_pidfile_refused(bg, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    os.symlink(victim, bg.pidfile)
    done = bg.start()
    assert done.returncode == 2 and "symlink" in done.stderr  # a usage error: fix the path
    assert victim.read_text() == "precious\n"


def test_hup_reloads_and_keeps_old_config_on_error(bg, tmp_path):
    assert bg.start().returncode == 0
    wait_converged(bg.src, bg.nodes)
    third = tmp_path / "node3"
    third.mkdir()
    bg.configure([*bg.nodes, third])
    os.kill(bg.pid, signal.SIGHUP)
    wait_converged(bg.src, [*bg.nodes, third])
    bg.wait_log("reloaded")

    bg.conf.write_text(bg.conf.read_text() + "edelay = -1\n")
    os.kill(bg.pid, signal.SIGHUP)
    bg.wait_log("reload failed, keeping the old configuration")
    assert "edelay must be from 0 to 86400, got -1" in bg.log()
    (bg.src / "still.txt").write_text("still syncing\n")
    wait_converged(bg.src, [*bg.nodes, third])
    assert alive(bg.pid)


def test_usr1_logs_status_and_statusfile(bg):
    import json

    assert bg.start().returncode == 0
    wait_converged(bg.src, bg.nodes)
    os.kill(bg.pid, signal.SIGUSR1)
    bg.wait_log("status:", count=len(bg.nodes))
    line = next(x for x in bg.log().splitlines() if "status:" in x)
    assert "idle" in line and "pending 0 paths" in line and "last ok 20" in line
    status = json.loads(bg.statusfile.read_text())
    assert {n["node"] for n in status["nodes"]} == {str(n) for n in bg.nodes}
    assert all(n["state"] == "idle" and n["last_ok"] for n in status["nodes"])


def test_config_error_before_fork(bg):
    bg.configure(bg.nodes, edleay=3)
    done = bg.start()
    assert done.returncode == 2
    assert "did you mean 'edelay'" in done.stderr
    assert not bg.pidfile.exists()


def test_daemon_logs_to_syslog_without_logfile(tmp_path, tree):
    """No logfile: lines go to /dev/log with ident inosync, facility daemon."""
    import socket

    if os.path.exists("/dev/log"):
        pytest.skip("a syslog daemon owns /dev/log here; not replacing it")
    if os.geteuid() != 0:
        pytest.skip("binding /dev/log needs root")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("/dev/log")
    sock.settimeout(20)
    b = Background(tmp_path, tree)
    try:
        write_config(b.conf, wpath=str(b.src), rnodes=[str(n) for n in b.nodes],
                     edelay=0.2, pidfile=str(b.pidfile))
        assert b.start().returncode == 0
        messages = []
        while not any(b"synced full sync" in m for m in messages):
            messages.append(sock.recv(4096))
        # <30>: facility daemon (3) * 8 + severity info (6)
        line = next(m for m in messages if b"synced full sync" in m)
        assert line.startswith(b"<30>inosync[") and str(b.pid).encode() in line
    finally:
        b.kill()
        sock.close()
        os.unlink("/dev/log")
