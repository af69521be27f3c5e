"""Under systemd, without systemd: a real `inosync` talks to our own
NOTIFY_SOCKET listener (Type=notify), and writes journal priorities when its
stderr is the "journal" named by JOURNAL_STREAM."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from helpers import (
    inosync_argv,
    inotify_watches,
    wait_converged,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.slow  # end to end: real processes


class Listener:
    """systemd's side of $NOTIFY_SOCKET: every datagram, with when it came."""

    def __init__(self, address: str, env_value: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.env = {"NOTIFY_SOCKET": env_value}
        self.messages: list[str] = []

    def poll(self) -> list[str]:
        self.sock.settimeout(0.05)
        try:
            while True:
                self.messages.append(self.sock.recv(4096).decode())
        except socket.timeout:
            return self.messages

    def wait(self, message: str, after: int = 0, timeout: float = 20.0) -> int:
        """Index of the first message equal to (or starting with) message, past index after."""
        def find() -> int | None:
            for i, m in enumerate(self.poll()[after:], after):
                if m == message or m.startswith(message):
                    return i + 1  # 0 would read as "not yet"
            return None

        return int(wait_until(find, timeout, f"{message!r} on NOTIFY_SOCKET (got "
                              f"{self.messages})")) - 1

    def statuses(self) -> list[str]:
        return [m[len("STATUS="):] for m in self.poll() if m.startswith("STATUS=")]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(params=["path", "abstract"])
def listener(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "path":
        path = str(tmp_path / "notify.sock")
        lst = Listener(path, path)
    else:
        name = f"inosync-test-{os.getpid()}-{time.monotonic_ns()}"
        lst = Listener("\0" + name, "@" + name)
    yield lst
    lst.close()


def deep_tree(src: Path, depth: int = 30) -> Path:
    """A chain of directories: each one needs its own watch."""
    d = src
    for i in range(depth):
        d = d / f"level{i}"
    d.mkdir(parents=True)
    return d


def test_ready_only_once_the_tree_is_watched(tree: dict, listener: Listener,
                                            run_inosync) -> None:
    src, nodes = tree["src"], tree["nodes"]
    deepest = deep_tree(src)
    dirs = sum(1 for _ in os.walk(src))
    conf = write_config(tree["dir"] / "inosync.conf", wpath=str(src),
                        rnodes=[str(n) for n in nodes], edelay=0.2)
    d = run_inosync(conf, env=listener.env)
    ready = listener.wait("READY=1")
    # At READY every directory has its watch already (and those above wpath).
    assert inotify_watches(d.proc.pid) >= dirs
    (deepest / "right-after-ready.txt").write_text("seen\n")
    wait_converged(src, nodes)
    assert (nodes[0] / deepest.relative_to(src) / "right-after-ready.txt").is_file()
    assert listener.messages.count("READY=1") == 1
    assert not any(m.startswith("STATUS=") for m in listener.messages[:ready]), \
        "no status before READY"
    assert d.stop() == 0


def test_bad_config_sends_no_ready(tree: dict, listener: Listener) -> None:
    conf = write_config(tree["dir"] / "inosync.conf", wpath=str(tree["src"]),
                        rnodes=[str(n) for n in tree["nodes"]], edleay=3)
    done = subprocess.run([*inosync_argv(), "-c", str(conf)], capture_output=True, text=True,
                          env={**os.environ, **listener.env}, timeout=30)
    assert done.returncode == 2
    assert "did you mean 'edelay'" in done.stderr
    assert listener.poll() == []


def test_hup_reloading_then_ready_and_term_stopping(tree: dict, listener: Listener,
                                                    run_inosync) -> None:
    conf = write_config(tree["dir"] / "inosync.conf", wpath=str(tree["src"]),
                        rnodes=[str(n) for n in tree["nodes"]], edelay=0.2)
    d = run_inosync(conf, env=listener.env)
    first = listener.wait("READY=1")
    wait_converged(tree["src"], tree["nodes"])

    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    d.signal(signal.SIGHUP)
    reloading = listener.wait("RELOADING=1", after=first + 1)
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    fields = dict(f.split("=", 1) for f in listener.messages[reloading].split("\n"))
    assert before <= int(fields["MONOTONIC_USEC"]) <= after
    ready = listener.wait("READY=1", after=reloading)
    d.wait_log("reloaded")

    # A broken config is not loaded; the daemon is ready again with the old one.
    conf.write_text(conf.read_text() + "edelay = -1\n")
    d.signal(signal.SIGHUP)
    failed = listener.wait("RELOADING=1", after=ready + 1)
    listener.wait("READY=1", after=failed)
    d.wait_log("reload failed, keeping the old configuration")

    d.signal(signal.SIGTERM)
    stopping = listener.wait("STOPPING=1", after=failed)
    assert d.proc.wait(30) == 0
    assert listener.poll().count("STOPPING=1") == 1
    assert all(not m.startswith("READY") for m in listener.messages[stopping:])


def test_status_follows_the_state(tree: dict, listener: Listener, run_inosync) -> None:
    src, d = tree["src"], tree["dir"]
    parent = d / "parent"
    parent.mkdir()
    good, doomed = tree["nodes"][0], parent / "node"
    doomed.mkdir()
    conf = write_config(d / "inosync.conf", wpath=str(src), rnodes=[str(good), str(doomed)],
                        edelay=0.2, retry_min=30, retry_max=60)
    proc = run_inosync(conf, env=listener.env)
    listener.wait("READY=1")
    listener.wait("STATUS=idle; 2 nodes in sync")
    assert "initial sync to 2 nodes" in listener.statuses()

    shutil.rmtree(parent)  # rsync cannot make node's parent: the node fails
    (src / "new.txt").write_text("new\n")
    listener.wait("STATUS=1 node failing: " + str(doomed))
    proc.wait_log("rsync failed")
    statuses = listener.statuses()
    assert statuses[-1].startswith(f"1 node failing: {doomed}: exit ")
    assert all(a != b for a, b in zip(statuses, statuses[1:])), "sent only when it changed"
    assert proc.stop() == 0
    assert listener.statuses()[-1].startswith("stopping")


def test_daemonized_notifies_from_the_daemon_pid(tree: dict, listener: Listener) -> None:
    """-d: the messages come from the daemon process (the pid in the pidfile),
    not from the parent that exits; NOTIFY_SOCKET does not reach rsync."""
    d = tree["dir"]
    pidfile = d / "inosync.pid"
    conf = write_config(d / "inosync.conf", wpath=str(tree["src"]),
                        rnodes=[str(n) for n in tree["nodes"]], edelay=0.2,
                        logfile=str(d / "inosync.log"))
    listener.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    done = subprocess.run([*inosync_argv(), "-c", str(conf), "-d", "--pidfile", str(pidfile)],
                          capture_output=True, text=True, env={**os.environ, **listener.env},
                          timeout=30)
    assert done.returncode == 0, done.stderr
    wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), 10, "pidfile")
    pid = int(pidfile.read_text())
    try:
        listener.sock.settimeout(20)
        creds_size = socket.CMSG_SPACE(12)  # struct ucred: pid, uid, gid
        msg, ancillary, _, _ = listener.sock.recvmsg(4096, creds_size)
        assert msg == b"READY=1"
        (level, kind, data), = ancillary
        assert (level, kind) == (socket.SOL_SOCKET, socket.SCM_CREDENTIALS)
        assert int.from_bytes(data[:4], "little") == pid
        wait_converged(tree["src"], tree["nodes"])
    finally:
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not Path(f"/proc/{pid}").exists()
                   or "zombie" in Path(f"/proc/{pid}/status").read_text(), 20, "daemon exit")
    listener.wait("STOPPING=1")


# ---- journal priorities


def failing_node_run(tree: dict, env: dict[str, str]) -> tuple[str, int]:
    """A real inosync whose stderr is a file: it syncs one good node, and a node
    that fails (its parent directory is gone). Its stderr, and its exit code."""
    src, d = tree["src"], tree["dir"]
    parent = d / "parent"
    (parent / "node").mkdir(parents=True)
    conf = write_config(d / "inosync.conf", wpath=str(src),
                        rnodes=[str(tree["nodes"][0]), str(parent / "node")], edelay=0.2,
                        retry_min=30, retry_max=60)
    stderr = d / "stderr"
    stderr.write_text("")
    st = os.stat(stderr)
    env = {k: v.replace("{stderr}", f"{st.st_dev}:{st.st_ino}") for k, v in env.items()}
    with open(stderr, "ab") as out:
        proc = subprocess.Popen([*inosync_argv(), "-c", str(conf)], stdin=subprocess.DEVNULL,
                                stdout=out, stderr=out,
                                env={**{k: v for k, v in os.environ.items()
                                        if k != "JOURNAL_STREAM"}, **env})
    try:
        wait_until(lambda: "synced full sync" in stderr.read_text(), 20, "the initial sync")
        shutil.rmtree(parent)
        (src / "new.txt").write_text("new\n")
        wait_until(lambda: "rsync failed" in stderr.read_text(), 20, "the node to fail")
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return stderr.read_text(), code


def test_journal_priorities_when_stderr_is_the_journal(tree: dict) -> None:
    text, code = failing_node_run(tree, {"JOURNAL_STREAM": "{stderr}"})
    assert code == 0
    lines = text.splitlines()
    assert lines and all(line[:3] in ("<3>", "<4>", "<6>", "<7>") for line in lines), text
    assert any(line.startswith("<3>ERROR ") and "rsync failed" in line for line in lines)
    assert any(line.startswith("<6>INFO ") and "synced full sync" in line for line in lines)
    assert not any(line[3:7].isdigit() for line in lines), "no timestamp: the journal adds one"


def test_no_journal_prefix_otherwise(tree: dict) -> None:
    """Without JOURNAL_STREAM, or with one that names another stream (a child
    of a service whose stderr was redirected), lines are as before."""
    for env in ({}, {"JOURNAL_STREAM": "1:2"}):
        for p in tree["nodes"]:
            shutil.rmtree(p, ignore_errors=True)
            p.mkdir()
        text, code = failing_node_run(tree, env)
        assert code == 0
        lines = text.splitlines()
        assert not any(line.startswith("<") for line in lines), text
        error = next(line for line in lines if "rsync failed" in line)
        assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ERROR ", error), error
