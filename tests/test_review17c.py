"""Review 17c (hostile): the start's removal of a killed daemon's leftovers, the
replay lock's directory, the Debian package and the systemd boot harness.

Each test is a finding: it failed on main before its fix (the commit says so).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sdboot
from helpers import ROOT, alive, bind_unix, wait_until
from test_contrib import INIT, Init, inosync_program

TESTS = Path(__file__).resolve().parent

needs_boot = pytest.mark.skipif(sdboot.why_not() is not None, reason=str(sdboot.why_not()))


def _mount_options(pid: int, where: str) -> list[str] | None:
    """The per-mount options of the topmost mount at where, as pid sees it."""
    found = None
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == where:
            found = fields[5].split(",")
    return found


@pytest.mark.slow
@pytest.mark.alone  # a mount namespace: a copy of every mount
@needs_boot
def test_boot_systemd_cannot_change_the_host(tmp_path: Path) -> None:
    """systemd as PID 1 does, at every fresh start: loopback_setup() and
    bump_unix_max_dgram_qlen() (net.unix.max_dgram_qlen 10 -> 512) in its network
    namespace, bump_file_max_and_nr_open() (fs.file-max, fs.nr_open: global,
    never namespaced) through /proc/sys. On main it shared the host's
    network namespace, had /proc/sys writable, and /dev/console (a unit's
    TTYPath) was the machine's own console."""
    machine = sdboot.Boot(tmp_path, {"boot.target": "[Unit]\nDescription=test\n"}, {},
                          "boot.target")
    try:
        init = machine.init_pid()
        wait_until(lambda: machine.inside("systemctl", "is-system-running").stdout.strip()
                   in ("running", "degraded"), 20, "systemd to be up")
        assert os.readlink(f"/proc/{init}/ns/net") != os.readlink("/proc/self/ns/net"), \
            "systemd shares the host's network namespace (its lo, its net.* sysctls)"
        options = _mount_options(init, "/proc/sys")
        assert options is not None and "ro" in options, \
            f"/proc/sys is writable inside ({options}): fs.file-max and fs.nr_open are global"
        assert _mount_options(init, "/dev/console") is not None, \
            "a unit's tty output would go to the machine's own console"
        # Only its own units: the machine's in /usr/local/lib/systemd/system,
        # /etc/systemd/system.control, /etc/systemd/system.attached (and
        # /lib/systemd/system where /lib is no symlink to /usr/lib) were read,
        # and their sysinit.target.wants/ (systemd-tmpfiles-setup --remove,
        # systemd-sysctl) joined the empty stand-in's.
        paths = machine.inside("systemctl", "show", "--property=UnitPath", "--value").stdout
        assert paths.split() and all(p.startswith("/run/") for p in paths.split()), paths
    finally:
        machine.close()


_ORPHAN = """
import json, sys, time
from pathlib import Path
sys.path.insert(0, {tests!r})
import sdboot
machine = sdboot.Boot(Path({work!r}), {{"boot.target": "[Unit]\\nDescription=t\\n"}}, {{}},
                      "boot.target")
print(json.dumps([machine.proc.pid, machine.init_pid(), [str(c) for c in machine.cgroups]]),
      flush=True)
time.sleep(600)
"""


@pytest.mark.slow
@pytest.mark.alone  # a mount namespace: a copy of every mount
@needs_boot
def test_boot_ends_when_the_test_process_is_killed(tmp_path: Path) -> None:
    """A test run killed with -9 (an outer timeout, the OOM killer) runs no
    finally: on main `unshare` lived on, and with it systemd and every service in
    the namespace (a daemon syncing, in the machine's cgroups) until someone
    noticed. unshare now dies with the process that started it."""
    work = tmp_path / "work"
    work.mkdir()
    code = _ORPHAN.format(tests=str(TESTS), work=str(work))
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    unshare = init = None
    cgroups: list[str] = []
    try:
        assert child.stdout is not None
        unshare, init, cgroups = json.loads(child.stdout.readline())
        assert alive(init)
        child.send_signal(signal.SIGKILL)
        child.wait()
        deadline = time.monotonic() + 10
        while alive(init) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(init), "systemd outlived the test that started it"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if unshare is not None and alive(unshare):
            os.kill(unshare, signal.SIGKILL)  # --kill-child: the namespace with it
        if init is not None and alive(init):
            os.kill(init, signal.SIGKILL)  # the test failed: end the namespace all the same
        wait_until(lambda: init is None or not alive(init), 10, "systemd to end")
        for c in reversed(cgroups):
            sdboot._remove_tree(Path(c))


@pytest.fixture
def sysv(tmp_path: Path) -> Iterator[Init]:
    """contrib/inosync.init with its daemon's files in tmp_path (test_contrib's)."""
    daemon = inosync_program()
    if daemon is None or os.geteuid() != 0:
        pytest.skip("needs root and the `inosync` command (pip install -e .)")
    runner = Init(tmp_path, daemon)
    try:
        yield runner
    finally:
        runner.kill_all()


@pytest.mark.slow
@pytest.mark.alone  # a mount namespace: a copy of every mount
def test_prerm_stops_a_daemon_the_sysv_script_started_on_a_systemd_machine(
        sysv: Init) -> None:
    """/etc/init.d/inosync ran the daemon itself, also where systemd runs (0.4's
    script did not source /lib/lsb/init-functions, which hands it to systemctl;
    SYSTEMCTL_SKIP_REDIRECT=1 still does).
    On main the package's prerm asked only systemd to stop inosync when
    /run/systemd/system exists: a daemon started by the script kept running,
    from deleted files, after `apt-get remove inosync`.

    In a private mount namespace: /run/systemd/system made (a systemd machine,
    though none answers here: systemctl fails, as the prerm allows), and the
    script at /etc/init.d/inosync; /usr/sbin empty (no policy-rc.d)."""
    script = "\n".join([
        "mount -t tmpfs -o mode=755 tmpfs /run", "mkdir -p /run/systemd/system",
        "mount -t tmpfs -o mode=755 tmpfs /etc/init.d",
        f"cp {INIT} /etc/init.d/inosync", "chmod 755 /etc/init.d/inosync",
        "SYSTEMCTL_SKIP_REDIRECT=1 /etc/init.d/inosync start",  # as 0.4's script did
        "mount -t tmpfs -o mode=755 tmpfs /usr/sbin",  # no policy-rc.d (this machine's: 101)
        f"sh {ROOT / 'debian' / 'inosync.prerm'} remove"])
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-ec", script],
                          env=sysv.env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    pid = sysv.pid()
    assert pid is None or not alive(pid), \
        f"inosync {pid} started by /etc/init.d/inosync still runs after the package's removal"


def test_a_socket_its_master_removes_meanwhile_is_no_reason_to_keep_the_directory(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """remove_stale tells each master `ssh -O exit` and then removes the sockets:
    the client returns once its request is taken, and the master unlinks its
    own socket as it exits, maybe after the directory was listed and before
    the unlink. On main that ENOENT was "cannot remove ..." (a warning at
    every such start) and the directory stayed until the next start. The race
    is made certain here: the socket goes while the directory is listed."""
    import socket as socketmod
    import stat

    from inosync.leftovers import find_stale, make_dir

    made = make_dir("inosync-t-", str(tmp_path))
    made.close()  # as by a kill -9
    sock = socketmod.socket(socketmod.AF_UNIX)
    bind_unix(sock, f"{made.path}/0-0")
    sock.close()

    def socket_that_its_master_removes(mode: int) -> bool:
        if stat.S_ISSOCK(mode) and os.path.lexists(f"{made.path}/0-0"):
            os.unlink(f"{made.path}/0-0")  # the master exiting
        return stat.S_ISSOCK(mode)

    (stale,) = find_stale("inosync-t-", [str(tmp_path)])
    with caplog.at_level("WARNING", logger="inosync"):
        assert stale.remove(socket_that_its_master_removes)
    assert not os.path.lexists(made.path)
    assert "cannot remove" not in caplog.text


def test_stop_never_empties_a_directory_someone_else_made_at_the_old_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tmp cleaner removes an idle daemon's list-file directory; its name
    (in every rsync command line, so in ps) is free in the sticky $TMPDIR, and
    any user may make a directory there under it. The daemon makes a new one
    only when it next writes a list file; on main a stop before that ran
    shutil.rmtree on the name as root: the other user's directory was emptied
    (ControlMasters checked private_dir first; the runner did not)."""
    if os.geteuid() != 0:
        pytest.skip("needs root, to make a directory as another user")
    import shutil
    import tempfile

    from inosync.runner import Runner

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with Runner() as runner:
        name = runner.dir
        shutil.rmtree(name)  # the tmp cleaner
        os.mkdir(name, 0o755)  # another user's, made since
        Path(name, "theirs").write_text("someone else's\n")
        os.chown(Path(name, "theirs"), 65534, 65534)
        os.chown(name, 65534, 65534)
    assert Path(name, "theirs").read_text() == "someone else's\n"


UNIT = "review17c-privatetmp.service"


def _private_tmps() -> set[Path]:
    return {p for d in ("/tmp", "/var/tmp") for p in Path(d).glob(f"systemd-private-*-{UNIT}-*")}


@pytest.mark.slow
@pytest.mark.alone  # a mount namespace: a copy of every mount
@needs_boot
def test_boot_leaves_nothing_in_the_machines_tmp(tmp_path: Path) -> None:
    """inosync.service has PrivateTmp=yes: systemd makes
    systemd-private-BOOTID-UNIT-XXXXXX in /tmp and /var/tmp, and removes them
    only when the unit stops. On main those were the machine's /tmp and
    /var/tmp, and a test that failed (close() kills systemd, no unit stops)
    left them there for good, root's, with the daemon's list files inside
    (this machine had four from test_boot's runs)."""
    units = {UNIT: "[Service]\nPrivateTmp=yes\nExecStart=/bin/sleep 1000\n",
             "boot.target": f"[Unit]\nWants={UNIT}\n"}
    before = _private_tmps()
    machine = sdboot.Boot(tmp_path, units, {}, "boot.target")
    try:
        wait_until(lambda: machine.show(UNIT, "ActiveState").get("ActiveState") == "active", 20,
                   "the unit to run")
    finally:
        machine.close()  # as after a failure: nothing stops the unit
    made = _private_tmps() - before
    for p in made:  # on main: ours to remove
        shutil.rmtree(p)
    assert not made, f"left in the machine's tmp: {sorted(map(str, made))}"


@pytest.mark.slow
@pytest.mark.alone  # a mount namespace: a copy of every mount
def test_prerm_leaves_the_sysv_daemon_alone_where_policy_rc_d_forbids(sysv: Init) -> None:
    """The stop added above must not bypass policy-rc.d: 101 forbids service
    actions (a chroot or image build whose /run, and so the pidfile, may be the
    host's). /usr/sbin is a tmpfs here, holding only that policy."""
    script = "\n".join([
        "mount -t tmpfs -o mode=755 tmpfs /run", "mkdir -p /run/systemd/system",
        "mount -t tmpfs -o mode=755 tmpfs /etc/init.d",
        f"cp {INIT} /etc/init.d/inosync", "chmod 755 /etc/init.d/inosync",
        "SYSTEMCTL_SKIP_REDIRECT=1 /etc/init.d/inosync start",  # as 0.4's script did
        "mount -t tmpfs -o mode=755 tmpfs /usr/sbin",
        "printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d",
        "chmod 755 /usr/sbin/policy-rc.d",
        f"sh {ROOT / 'debian' / 'inosync.prerm'} remove"])
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-ec", script],
                          env=sysv.env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    pid = sysv.pid()
    assert pid is not None and alive(pid), done.stdout + done.stderr


@pytest.mark.slow
@pytest.mark.alone  # a mount namespace: a copy of every mount
@needs_boot
def test_boot_that_ended_early_is_still_closed(tmp_path: Path) -> None:
    """The namespace ends before systemd runs (its script fails: a mount, a
    mkdir). The test's first look, init_pid(), reaps unshare while it finds
    that out; on main close() then read /proc/<that pid> again: gone
    (FileNotFoundError out of close, its cgroups left behind), or by then
    another process's, whose child close() took for systemd and waited for."""
    machine = sdboot.Boot(tmp_path, {"boot.target": "[Unit]\nDescription=t\n"}, {},
                          "boot.target", dirs=("/proc/no-such-dir/x",))
    try:
        machine.proc.wait(30)  # else init_pid may find the shell before its mkdir fails
        with pytest.raises(AssertionError, match="the namespace ended"):
            machine.init_pid()
    finally:
        machine.close()
    assert not any(c.exists() for c in machine.cgroups)
