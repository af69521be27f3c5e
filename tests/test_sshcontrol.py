"""One ssh connection per node: a ControlMaster shared by every run, closed on stop,
replaced when its connection fails."""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import Sshd, wait_converged, wait_until, write_config
from hosts import TestHost, can_make_namespaces

from inosync import sshcontrol
from inosync.leftovers import LOCK
from inosync.sshcontrol import ControlMasters, connection_lost, user_controls, user_keepalive


@pytest.mark.parametrize("ssh", [
    ["ssh", "-o", "ControlMaster=no"], ["ssh", "-oControlPath=/x/%C"], ["ssh", "-S", "none"],
    ["ssh", "-o", "controlpersist=yes"],
])
def test_users_own_control_options_are_kept(ssh):
    assert user_controls(ssh)
    with ControlMasters() as masters:
        assert masters.command(ssh, "h", 60) == ssh


def control_path(cmd: list[str]) -> str:
    paths = [w.split("=", 1)[1] for w in cmd if w.startswith("ControlPath=")]
    assert len(paths) == 1, cmd
    return paths[0]


def test_shared_connection_options_in_a_private_directory():
    with ControlMasters() as masters:
        assert masters.dir == ""  # made for the first ssh node, not before
        cmd = masters.command(["ssh", "-p", "2222"], "root@h", 60)
        assert cmd[:3] == ["ssh", "-p", "2222"]
        assert os.path.dirname(control_path(cmd)) == masters.dir and "ControlMaster=auto" in cmd
        assert control_path(masters.command(["ssh"], "other", 60)) != control_path(cmd)
        assert stat.S_IMODE(os.stat(masters.dir).st_mode) == 0o700
        folder = masters.dir
    assert not os.path.exists(folder)


def test_a_host_is_connected_once_its_master_listens_or_when_it_shares_nothing():
    """What the daemon asks while a host's other nodes wait for its first run's
    connection (scheduler.host_connected): a socket at its ControlPath, in our
    directory; a host whose command shares nothing is never waited for."""
    with ControlMasters() as masters:
        assert masters.connected("h")  # no run built for it: nothing to wait for
        path = control_path(masters.command(["ssh"], "h", 60))
        assert not masters.connected("h")
        with socket.socket(socket.AF_UNIX) as listening:
            listening.bind(path)
            assert masters.connected("h")
        masters.command(["ssh", "-o", "ControlPath=none"], "h", 60)  # a reload: the user's
        os.unlink(path)
        assert masters.connected("h")
    with ControlMasters(enabled=False) as masters:
        masters.command(["ssh"], "h", 60)
        assert masters.connected("h")


def test_turned_off_adds_nothing():
    with ControlMasters(enabled=False) as masters:
        assert masters.command(["ssh"], "h", 60) == ["ssh"]


# ---- ServerAlive: a master whose peer vanished ends within about rsync's timeout


def alive_options(cmd: list[str]) -> dict[str, int]:
    found = {}
    for before, word in zip(cmd, cmd[1:]):
        if before == "-o" and word.startswith("ServerAlive"):
            name, value = word.split("=")
            found[name] = int(value)
    return found


def test_server_alive_added_to_the_shared_connection():
    with ControlMasters() as masters:
        cmd = masters.command(["ssh", "-p", "2222"], "root@h", 60)
    assert alive_options(cmd) == {"ServerAliveInterval": 15, "ServerAliveCountMax": 3}


@pytest.mark.parametrize("timeout", [1, 2, 5, 10, 59, 60, 61, 600, 86400])
def test_server_alive_notices_a_dead_peer_within_about_the_timeout(timeout):
    with ControlMasters() as masters:
        found = alive_options(masters.command(["ssh"], "h", timeout))
    # ssh gives up after CountMax + 1 unanswered intervals of silence.
    silence = found["ServerAliveInterval"] * (found["ServerAliveCountMax"] + 1)
    assert found["ServerAliveInterval"] >= 1
    assert timeout - 4 < silence <= max(timeout, 4)


@pytest.mark.parametrize("ssh", [
    ["ssh", "-o", "ServerAliveInterval=5"], ["ssh", "-oServerAliveInterval=5"],
    ["ssh", "-o", "ServerAliveInterval 5"], ["ssh", "-o", "ServerAliveInterval", "5"],
    ["ssh", "-o", "serveralivecountmax=2"], ["ssh", "-oSERVERALIVEINTERVAL=0"],
    ["ssh", "-o", "  ServerAliveInterval = 5"], ["ssh", "-qo", "ServerAliveCountMax=1"],
    ["ssh", "-qoServerAliveInterval=9"],
])
def test_users_own_server_alive_options_are_kept(ssh):
    assert user_keepalive(ssh)
    with ControlMasters() as masters:
        cmd = masters.command(ssh, "h", 60)
    assert cmd[:len(ssh)] == ssh and not alive_options(cmd[len(ssh):])


@pytest.mark.parametrize("ssh", [
    ["ssh"], ["ssh", "-i", "/keys/ServerAliveInterval"], ["ssh", "-o", "TCPKeepAlive=no"],
    ["ssh", "-p", "22", "-o", "ConnectTimeout=5"],
])
def test_other_options_are_no_server_alive(ssh):
    assert not user_keepalive(ssh)


# ---- a master whose connection failed is replaced


@pytest.mark.parametrize("code", [255, 12, 30, 10, 5])
def test_connection_failures(code):
    assert connection_lost(code)


@pytest.mark.parametrize("code", [0, 23, 24, 11, 1, 2, 3, 25, 126, 127, 20, -9, -15, 35])
def test_other_failures_keep_the_connection(code):
    assert not connection_lost(code)


def fake_master(path: str) -> socket.socket:
    """A socket where a master's would be: it takes connections and never answers,
    like a master stuck on a dead link (so `ssh -O exit` waits on it)."""
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(path)
    sock.listen(8)
    sock.setblocking(False)
    return sock


def reached(sock: socket.socket) -> bool:
    try:
        sock.accept()[0].close()
    except BlockingIOError:
        return False
    return True


def test_failed_connection_gets_a_new_master_and_every_one_is_closed(monkeypatch):
    monkeypatch.setattr(sshcontrol, "CLOSE_WAIT", 0.5)
    ssh = ["ssh", "-o", "BatchMode=yes"]
    with ControlMasters() as masters:
        first = control_path(masters.command(ssh, "root@h", 60))
        masters.connection_failed("root@h")  # no master was ever opened: nothing to replace
        assert control_path(masters.command(ssh, "root@h", 60)) == first
        old = fake_master(first)
        masters.connection_failed("root@h")
        second = control_path(masters.command(ssh, "root@h", 60))
        assert second != first and os.path.dirname(second) == os.path.dirname(first)
        wait_until(lambda: reached(old), 10, "ssh -O exit to reach the replaced master")
        new = fake_master(second)
        started = time.monotonic()
    # The current master is closed on stop; the `ssh -O exit` children that
    # found no answer are killed after CLOSE_WAIT, not waited for.
    assert time.monotonic() - started < 0.5 + 3
    assert reached(new)
    assert not os.path.exists(os.path.dirname(first))


def test_changed_ssh_command_gets_a_new_master(monkeypatch):
    monkeypatch.setattr(sshcontrol, "CLOSE_WAIT", 0.5)
    with ControlMasters() as masters:
        first = control_path(masters.command(["ssh", "-p", "22"], "root@h", 60))
        old = fake_master(first)
        # A reload changed the port: the open master was made for the old one.
        second = control_path(masters.command(["ssh", "-p", "2222"], "root@h", 60))
        assert second != first
        wait_until(lambda: reached(old), 10, "ssh -O exit to reach the old master")
        assert control_path(masters.command(["ssh", "-p", "2222"], "root@h", 60)) == second


def test_percent_in_tmpdir_is_no_ssh_token(monkeypatch):
    odd = tempfile.mkdtemp(prefix="a%h", dir="/tmp")  # short: sockets live there
    monkeypatch.setattr(tempfile, "tempdir", odd)
    try:
        with ControlMasters() as masters:
            path = control_path(masters.command(["ssh"], "h", 60))
            assert masters.dir.startswith(odd)
            assert path == f"{masters.dir}/0-0".replace("%", "%%")
    finally:
        os.rmdir(odd)


def test_failed_connection_without_sharing_changes_nothing():
    with ControlMasters(enabled=False) as masters:
        masters.connection_failed("h")
        assert masters.command(["ssh"], "h", 60) == ["ssh"]


# ---- the socket directory, made again when a tmp cleaner removed it


def test_removed_socket_directory_is_made_again(caplog):
    with caplog.at_level(logging.WARNING, logger="inosync"), ControlMasters() as masters:
        first = masters.command(["ssh"], "h", 60)
        shutil.rmtree(masters.dir)
        again = masters.command(["ssh"], "h", 60)
        assert os.path.dirname(control_path(again)) == masters.dir != os.path.dirname(
            control_path(first))
        assert stat.S_IMODE(os.lstat(masters.dir).st_mode) == 0o700
        masters.command(["ssh"], "h", 60)
    warnings = [r for r in caplog.records if "socket" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING


@pytest.mark.parametrize("change", ["symlink", "mode", "file"])
def test_socket_directory_no_longer_private_is_not_used(change, tmp_path):
    with ControlMasters() as masters:
        masters.command(["ssh"], "h", 60)
        old = masters.dir
        if change == "mode":
            os.chmod(old, 0o755)
        else:
            shutil.rmtree(old)
            if change == "symlink":
                os.symlink(tmp_path, old)
            else:
                Path(old).write_text("")
        cmd = masters.command(["ssh"], "h", 60)
        assert masters.dir != old and os.path.dirname(control_path(cmd)) == masters.dir
    assert os.path.lexists(old)  # not ours any more: left alone
    if change == "mode":
        shutil.rmtree(old)
    else:
        os.unlink(old)


def masters_running(control_dir: str) -> list[str]:
    """Master ssh processes for sockets in control_dir (ssh titles them "ssh: PATH [mux]")."""
    out = subprocess.run(["pgrep", "-f", f"^ssh: {control_dir}/.* \\[mux\\]"],
                         capture_output=True, text=True).stdout
    return out.split()


@pytest.mark.slow
def test_one_connection_for_many_batches_closed_on_stop(tree, run_inosync, sshd, tmp_path):
    src = tree["src"]
    remote = tmp_path / "remote"
    remote.mkdir()
    tmpdir = Path(tempfile.mkdtemp(prefix="t", dir="/tmp"))  # short: sockets live there
    conf = write_config(tmp_path / "inosync.conf", wpath=str(src), edelay=0.2,
                        rnodes=[f"root@127.0.0.1:{remote}"], ssh=sshd.ssh_command())
    d = run_inosync(conf, "-v", env={"TMPDIR": str(tmpdir)})
    wait_converged(src, [remote])
    control = wait_until(lambda: list(tmpdir.glob("inosync-ssh-*")), 10, "control dir")
    assert isinstance(control, list)
    control_dir = str(control[0])
    for i in range(3):
        (src / f"batch{i}.txt").write_text(f"{i}\n")
        wait_converged(src, [remote])
    sockets = [p for p in Path(control_dir).iterdir() if p.name != LOCK]
    assert len(sockets) == 1 and stat.S_ISSOCK(sockets[0].stat().st_mode)
    assert len(masters_running(control_dir)) == 1  # one master served all four runs
    # The connection dies (the node rebooted, say): the next batch connects anew.
    for pid in masters_running(control_dir):
        os.kill(int(pid), 9)
    (src / "after-the-master-died.txt").write_text("x\n")
    wait_converged(src, [remote])
    assert len(masters_running(control_dir)) == 1
    assert "rsync failed" not in d.log()
    assert d.stop() == 0
    wait_until(lambda: not masters_running(control_dir), 10, "the master to close")
    assert not os.path.exists(control_dir)
    shutil.rmtree(tmpdir)


def test_long_tmpdir_falls_back_to_a_short_socket_directory(tmp_path, monkeypatch):
    long_dir = tmp_path / ("x" * 80)
    long_dir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(long_dir))
    with ControlMasters() as masters:
        path = control_path(masters.command(["ssh"], "h", 60))
        assert masters.dir.startswith(("/run/", "/tmp/"))
        # ssh binds "PATH.<16 random characters>" first, then renames it to PATH.
        assert len(path) + 17 < 108


def short_tmpdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="t", dir="/tmp"))  # short: sockets live there


def control_dirs(tmpdir: Path) -> list[Path]:
    return list(tmpdir.glob("inosync-ssh-*"))


@pytest.mark.slow
def test_socket_directory_removed_under_a_running_daemon(tree, run_inosync, sshd, tmp_path):
    src = tree["src"]
    remote = tmp_path / "remote"
    remote.mkdir()
    tmpdir = short_tmpdir()
    conf = write_config(tmp_path / "inosync.conf", wpath=str(src), edelay=0.2, retry_min=0.5,
                        retry_max=2, rnodes=[f"root@127.0.0.1:{remote}"], ssh=sshd.ssh_command())
    d = run_inosync(conf, "-v", env={"TMPDIR": str(tmpdir)})
    wait_converged(src, [remote])
    (first,) = control_dirs(tmpdir)
    orphans = masters_running(str(first))
    shutil.rmtree(first)  # a tmp cleaner; the master's socket goes with it
    try:
        for i in range(3):
            (src / f"after-the-cleaner-{i}.txt").write_text(f"{i}\n")
            wait_converged(src, [remote], timeout=20)
        d.wait_log("WARNING.*socket")
        (second,) = control_dirs(tmpdir)
        assert second != first and stat.S_IMODE(second.lstat().st_mode) == 0o700
        assert len(masters_running(str(second))) == 1
        assert "rsync failed" not in d.log()
        assert len(re.findall("WARNING.*socket", d.log())) == 1
        assert d.stop() == 0
        wait_until(lambda: not masters_running(str(second)), 10, "the new master to close")
    finally:
        # The first master lost its socket: nobody can reach it any more, and it
        # ends after ControlPersist. Not in a test run.
        for pid in orphans:
            try:
                os.kill(int(pid), 9)
            except ProcessLookupError:
                pass
        shutil.rmtree(tmpdir, ignore_errors=True)


def has_ipv6_loopback() -> bool:
    out = subprocess.run(["ip", "-6", "addr", "show", "lo"], capture_output=True, text=True)
    return "inet6 ::1/128" in out.stdout


@pytest.fixture(scope="module")
def sshd6(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    if not (shutil.which("sshd") or os.path.exists("/usr/sbin/sshd")):
        pytest.skip("sshd is not installed (apt-get install openssh-server)")
    if not has_ipv6_loopback():
        pytest.skip("no ::1 on lo (`ip -6 addr show lo`): IPv6 is off here")
    server = Sshd(tmp_path_factory.mktemp("sshd6"), address="::1").start()
    yield server
    server.stop()


@pytest.mark.slow
def test_ipv6_literal_node_syncs_and_its_master_closes(tree, run_inosync, sshd6, tmp_path):
    src = tree["src"]
    remote = tmp_path / "remote"
    remote.mkdir()
    tmpdir = short_tmpdir()
    conf = write_config(tmp_path / "inosync.conf", wpath=str(src), edelay=0.2,
                        rnodes=[f"root@[::1]:{remote}"], ssh=sshd6.ssh_command())
    d = run_inosync(conf, "-v", env={"TMPDIR": str(tmpdir)})
    try:
        wait_converged(src, [remote])
        (src / "second.txt").write_text("over the shared connection\n")
        wait_converged(src, [remote])
        (control,) = control_dirs(tmpdir)
        assert len(masters_running(str(control))) == 1
        assert d.stop() == 0
        # ssh -O exit reached it: with "[::1]" ssh looked the host up and failed,
        # and the master stayed for ControlPersist (300 s).
        wait_until(lambda: not masters_running(str(control)), 10, "the master to close")
    finally:
        for pid in masters_running(str(tmpdir)):
            os.kill(int(pid), 9)
        shutil.rmtree(tmpdir, ignore_errors=True)


@pytest.mark.slow
def test_tmpdir_of_45_bytes_still_shares_the_connection(tree, run_inosync, sshd, tmp_path):
    src = tree["src"]
    remote = tmp_path / "remote"
    remote.mkdir()
    base = short_tmpdir()
    tmpdir = base / ("x" * (45 - len(str(base)) - 1))
    tmpdir.mkdir()
    assert len(str(tmpdir)) == 45
    conf = write_config(tmp_path / "inosync.conf", wpath=str(src), edelay=0.2,
                        rnodes=[f"root@127.0.0.1:{remote}"], ssh=sshd.ssh_command())
    d = run_inosync(conf, "-v", env={"TMPDIR": str(tmpdir)})
    try:
        wait_converged(src, [remote])
        (control,) = control_dirs(tmpdir)
        assert len(masters_running(str(control))) == 1
        assert "too long" not in d.log()
        assert d.stop() == 0
    finally:
        shutil.rmtree(base, ignore_errors=True)


# ---- a dead connection: its packets dropped on the way, both ends kept in the dark


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestHost]:
    reason = can_make_namespaces()
    if reason:
        pytest.skip(reason)
    made = TestHost(8, tmp_path_factory.mktemp("host8"))
    try:
        yield made.create()
    finally:
        made.destroy()


def without_server_alive(ssh: list[str]) -> list[str]:
    words: list[str] = []
    for word in ssh:
        if word.startswith("ServerAlive"):
            words.pop()  # its -o
        else:
            words.append(word)
    return words


def master_port(pid: str, address: str) -> int:
    """The local port of the master's TCP connection to address."""
    out = subprocess.run(["ss", "-Htnp", "dst", address], capture_output=True, text=True).stdout
    ports = [int(m.group(1)) for line in out.splitlines()
             for m in [re.search(rf":(\d+) +\S+:22 .*\bpid={pid},", line)] if m]
    assert len(ports) == 1, out
    return ports[0]


def drop_master_connection(host: TestHost, control_dir: str) -> str:
    (pid,) = masters_running(control_dir)
    host.drop_connection(master_port(pid, host.address))
    return pid


@pytest.mark.slow
@pytest.mark.netns
def test_dead_connection_is_replaced(tree, run_inosync, host, tmp_path):
    src = tree["src"]
    remote = tmp_path / "remote"
    remote.mkdir()
    tmpdir = short_tmpdir()
    assert host.sshd is not None
    # Keepalives switched off by the user: only replacing the master can help.
    ssh = [*without_server_alive(host.sshd.ssh_command()), "-o", "ServerAliveInterval=0"]
    conf = write_config(tmp_path / "inosync.conf", wpath=str(src), edelay=0.2, retry_min=0.5,
                        retry_max=2, timeout=3, rnodes=[host.dest(remote)], ssh=ssh)
    d = run_inosync(conf, "-v", env={"TMPDIR": str(tmpdir)})
    try:
        wait_converged(src, [remote])
        (control,) = control_dirs(tmpdir)
        dead = drop_master_connection(host, str(control))
        (src / "after-the-link-died.txt").write_text("x\n")
        # One run waits out the timeout (3 s) on the dead master; the next
        # one, 0.5 s later, opens a new connection.
        wait_converged(src, [remote], timeout=20)
        d.wait_log("rsync failed: exit (30|12|255)")
        wait_until(lambda: dead not in masters_running(str(control)), 10,
                   "the dead master to be told to exit")
        assert len(masters_running(str(control))) == 1  # the new one
        (src / "and-later.txt").write_text("y\n")
        wait_converged(src, [remote], timeout=10)
        assert d.stop() == 0
        wait_until(lambda: not masters_running(str(control)), 10, "the master to close")
    finally:
        host.pass_all()
        for pid in masters_running(str(tmpdir)):
            os.kill(int(pid), 9)
        shutil.rmtree(tmpdir, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.netns
def test_dead_connection_ends_by_itself_with_server_alive(tree, run_inosync, host, tmp_path):
    src = tree["src"]
    remote = tmp_path / "remote"
    remote.mkdir()
    tmpdir = short_tmpdir()
    assert host.sshd is not None
    ssh = without_server_alive(host.sshd.ssh_command())
    conf = write_config(tmp_path / "inosync.conf", wpath=str(src), edelay=0.2, retry_min=0.5,
                        retry_max=2, timeout=4, rnodes=[host.dest(remote)], ssh=ssh)
    d = run_inosync(conf, "-v", env={"TMPDIR": str(tmpdir)})
    try:
        wait_converged(src, [remote])
        assert "ServerAliveInterval=1 -o ServerAliveCountMax=3" in d.log()
        (control,) = control_dirs(tmpdir)
        dead = drop_master_connection(host, str(control))
        started = time.monotonic()
        # No run touches it: ssh's own keepalives find the peer gone (4 s of
        # silence, as timeout = 4).
        wait_until(lambda: dead not in masters_running(str(control)), 15,
                   "the master on the dead connection to end")
        assert time.monotonic() - started < 8
        (src / "after-the-master-ended.txt").write_text("x\n")
        wait_converged(src, [remote], timeout=10)
        assert "rsync failed" not in d.log()
        assert d.stop() == 0
    finally:
        host.pass_all()
        for pid in masters_running(str(tmpdir)):
            os.kill(int(pid), 9)
        shutil.rmtree(tmpdir, ignore_errors=True)


# ---- what a daemon killed with -9 left: its masters and its directories


def scratch_dirs(tmpdir: Path) -> list[Path]:
    """The runner's private directories for list files (``inosync-XXXXXXXX``)."""
    return [p for p in tmpdir.glob("inosync-*") if re.fullmatch(r"inosync-[a-z0-9_]{8}", p.name)]


def start_synced(run_inosync, sshd, tmp_path: Path, name: str, tmpdir: Path):
    """A daemon of its own tree with one ssh node, synced once (so its master is open)."""
    src = tmp_path / f"{name}-src"
    remote = tmp_path / f"{name}-remote"
    for made in (src, remote):
        made.mkdir()
    (src / "f.txt").write_text(f"{name}\n")
    conf = write_config(tmp_path / f"{name}.conf", wpath=str(src), edelay=0.2,
                        rnodes=[f"root@127.0.0.1:{remote}"], ssh=sshd.ssh_command())
    d = run_inosync(conf, "-v", env={"TMPDIR": str(tmpdir)})
    wait_converged(src, [remote])
    return d, conf, src, remote


@pytest.mark.slow
def test_masters_and_directories_of_a_killed_daemon_are_cleaned_at_the_next_start(
        run_inosync, sshd, tmp_path):
    tmpdir = short_tmpdir()
    try:
        # Another tree's daemon, alive, in the same TMPDIR: none of its own may go.
        other, _, other_src, other_remote = start_synced(run_inosync, sshd, tmp_path, "other",
                                                         tmpdir)
        (other_control,) = control_dirs(tmpdir)
        (other_master,) = masters_running(str(other_control))
        (other_scratch,) = scratch_dirs(tmpdir)
        d, conf, src, remote = start_synced(run_inosync, sshd, tmp_path, "a", tmpdir)
        (control,) = set(control_dirs(tmpdir)) - {other_control}
        (scratch,) = set(scratch_dirs(tmpdir)) - {other_scratch}
        (master,) = masters_running(str(control))
        d.proc.kill()
        d.proc.wait()
        # kill -9 leaves them: nothing of the daemon ran to close them.
        assert masters_running(str(control)) == [master]
        assert control.is_dir() and scratch.is_dir()
        (src / "while-down.txt").write_text("synced by the next start, once it has tidied\n")
        again = run_inosync(conf, "-v", env={"TMPDIR": str(tmpdir)})
        wait_converged(src, [remote])
        wait_until(lambda: not masters_running(str(control)), 10, "the stale master to exit")
        assert not control.exists() and not scratch.exists(), again.log()
        assert f"removed {control}, the ssh control sockets of inosync {d.proc.pid}" in again.log()
        assert f"removed {scratch}, the list files of inosync {d.proc.pid}" in again.log()
        # The live daemon's master, sockets and list directory are untouched ...
        assert masters_running(str(other_control)) == [other_master]
        assert other_control.is_dir() and other_scratch.is_dir()
        (other_src / "still.txt").write_text("shared as before\n")
        wait_converged(other_src, [other_remote])
        assert masters_running(str(other_control)) == [other_master]
        assert "WARNING" not in other.log()
        assert again.stop() == 0 and other.stop() == 0
    finally:
        for pid in masters_running(str(tmpdir)):
            os.kill(int(pid), 9)
        shutil.rmtree(tmpdir, ignore_errors=True)
