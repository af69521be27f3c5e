"""Hostile review of issue 17 (review17a): exit statuses, closed or broken standard
streams, --check's advice, --verify's Nagios state. Each test failed on main e54956b."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers import alive, inosync_argv, wait_until, write_config

EX_TEMPFAIL = 75


def tree_with_content(tmp_path: Path) -> Path:
    wpath = tmp_path / "www"
    (wpath / "d").mkdir(parents=True)
    (wpath / "d" / "index.html").write_text("x\n")
    return wpath


def run(conf: Path, *args: str, **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*inosync_argv(), "-c", str(conf), *args], timeout=30,
                          stdin=subprocess.DEVNULL, **kwargs)  # type: ignore[call-overload]


# ---- an error's exit status when nobody reads stderr any more


@pytest.mark.slow
@pytest.mark.parametrize("args", [["--check"], ["--verify"], [], ["-p"]])
@pytest.mark.parametrize("state, status", [("missing", EX_TEMPFAIL), ("bad", 2)])
def test_an_error_keeps_its_exit_status_when_stderr_is_a_broken_pipe(tmp_path, args, state,
                                                                     status):
    """`inosync --verify 2>&1 | true` on a bad config exited 1, which --verify means as
    "some node differs" (and a start's 2 became 1, which the units restart): the
    print of the error to a pipe whose reader is gone raised BrokenPipeError."""
    if state == "missing":
        conf = write_config(tmp_path / "c.conf", wpath=str(tmp_path / "gone"),
                            rnodes=[str(tmp_path / "n")])
    else:
        conf = write_config(tmp_path / "c.conf", wpath=str(tree_with_content(tmp_path)),
                            rnodes=[str(tmp_path / "n")], edelay=-1)
    r, w = os.pipe()
    os.close(r)
    try:
        done = run(conf, *args, stdout=subprocess.DEVNULL, stderr=w)
    finally:
        os.close(w)
    assert done.returncode == status
    assert not (tmp_path / "n").exists()


# ---- closed standard streams (a launcher that closes them, `>&-`)


def closing(*fds: int):  # type: ignore[no-untyped-def]
    def close() -> None:
        for fd in fds:
            os.close(fd)
    return close


@pytest.mark.parametrize("state, status", [("ok", 0), ("missing", EX_TEMPFAIL)])
def test_check_with_stderr_closed_keeps_its_exit_status(tmp_path, state, status):
    """`inosync --check 2>&-` exited 1 whatever the answer: sys.stderr is None then,
    and Logs.foreground() died on sys.stderr.isatty() (a traceback nobody saw)."""
    wpath = tree_with_content(tmp_path) if state == "ok" else tmp_path / "gone"
    conf = write_config(tmp_path / "c.conf", wpath=str(wpath), rnodes=[str(tmp_path / "n")])
    done = run(conf, "--check", stdout=subprocess.DEVNULL, preexec_fn=closing(2))
    assert done.returncode == status


@pytest.mark.slow
@pytest.mark.parametrize("closed", [0, 1, 2])
def test_daemonize_with_a_standard_stream_closed_runs(tmp_path, closed):
    """`inosync -d >&-` (or <&-) exited 0, "started", but the daemon died at once
    in python-daemon's redirect of sys.stdout (None): no log line, an empty
    pidfile, nothing running; the SysV script waited and said it stopped."""
    wpath = tree_with_content(tmp_path)
    node = tmp_path / "n"
    log = tmp_path / "inosync.log"
    conf = write_config(tmp_path / "c.conf", wpath=str(wpath), rnodes=[str(node)],
                        logfile=str(log), edelay=0.1)
    pidfile = tmp_path / "inosync.pid"
    done = run(conf, "-d", "--pidfile", str(pidfile), stdout=subprocess.DEVNULL,
               stderr=subprocess.DEVNULL, preexec_fn=closing(closed))
    assert done.returncode == 0
    pid = 0
    try:
        def started() -> bool:
            nonlocal pid
            text = pidfile.read_text().strip() if pidfile.exists() else ""
            pid = int(text) if text.isdigit() else 0
            return bool(pid) and alive(pid) and log.exists() and "initial sync" in log.read_text()
        wait_until(started, 15, "the daemon to run and log")
        wait_until(lambda: (node / "d" / "index.html").exists(), 15, "the first sync")
    finally:
        if pid and alive(pid):
            os.kill(pid, signal.SIGTERM)
            wait_until(lambda: not alive(pid), 30, "the daemon to stop")


# ---- the verdict 75 or 2 comes from the check that failed


def test_the_exit_status_is_that_of_the_check_that_failed(tmp_path, monkeypatch):
    """start_problem ran the start-up checks twice: the message from the first pass,
    75-or-2 from a second one. A disk that mounts between the two (the very boot
    this is for) made it 2 with a message saying "nothing is mounted there", and
    the units never restart 2 (RestartPreventExitStatus): the service stayed down."""
    from inosync import check, cli, config, keptstore

    wpath = tmp_path / "www"
    wpath.mkdir()
    (wpath / "stale.html").write_text("what the bare mount point holds\n")
    fstab = tmp_path / "fstab"
    fstab.write_text(f"/dev/sdz1 {wpath} ext4 nofail 0 2\n")
    monkeypatch.setattr(keptstore, "FSTAB", str(fstab))
    conf = write_config(tmp_path / "c.conf", wpath=str(wpath), rnodes=[str(tmp_path / "n")])
    loaded = config.load(str(conf))
    real = check._wpath_disk_mounted
    mounted = []

    def disk_check_then_the_disk_mounts(c: config.Config):  # type: ignore[no-untyped-def]
        problem = real(c)
        if not mounted:  # the disk arrives right after the check looked
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "inosync-review", str(wpath)],
                           check=True)
            mounted.append(True)
        return problem

    checks = [disk_check_then_the_disk_mounts if c is real else c for c in check.STARTUP_CHECKS]
    monkeypatch.setattr(check, "STARTUP_CHECKS", checks)
    monkeypatch.setattr(check, "TEMPORARY", {disk_check_then_the_disk_mounts})
    try:
        problem = cli.start_problem(loaded)
    finally:
        if mounted:
            subprocess.run(["umount", str(wpath)], check=True)
    assert problem is not None
    message, status = problem
    assert "nothing is mounted there" in message
    assert status == EX_TEMPFAIL


# ---- a configuration mistake is exit 2, not a retry for ever


@pytest.mark.parametrize("args", [["--check"], []])
def test_a_wpath_whose_every_entry_is_excluded_says_so_and_is_retried(tmp_path, args):
    """wpath holds files, but rexcludes leave nothing to sync. That may be the file's
    mistake, or a bare mount point holding junk the excludes hide before its disk
    mounts: kept a temporary failure (75, which the units retry), so a late disk
    is never kept down, but the message names the excludes and says what 75 means
    (review17a finding 12)."""
    wpath = tree_with_content(tmp_path)
    conf = write_config(tmp_path / "c.conf", wpath=str(wpath), rnodes=[str(tmp_path / "n")],
                        rexcludes=["/d"])
    done = run(conf, *args, capture_output=True)
    assert done.returncode == EX_TEMPFAIL, done.stderr
    assert b"excludes that hide everything" in done.stderr and b"exit 75" in done.stderr
    assert not (tmp_path / "n").exists()


# ---- --check's advice before the first start


def test_host_key_advice_uses_the_ssh_setting(tmp_path):
    """--check said "accept each host key first (ssh web1 true ...)" whatever the ssh
    setting: with -p 2222, -i KEY, -F FILE or UserKnownHostsFile there, that plain
    ssh records the key for another port or in another file, and the first run
    still fails on an unknown host key. And a config path with a space was shown
    unquoted in the --verify command to paste."""
    from inosync.check import summary
    from inosync.config import load

    wpath = tree_with_content(tmp_path)
    conf = write_config(tmp_path / "my conf", wpath=str(wpath), rnodes=["web1:/srv/www"],
                        ssh=["ssh", "-p", "2222", "-o",
                             "UserKnownHostsFile=/etc/inosync/known_hosts", "-o", "BatchMode=yes"])
    lines = summary(load(str(conf)))
    advice = next(line for line in lines if line.startswith("ssh nodes:"))
    assert "ssh -o BatchMode=no -p 2222 -o UserKnownHostsFile=/etc/inosync/known_hosts " \
           "-o BatchMode=yes web1 true" in advice
    first = next(line for line in lines if line.startswith("before the first start:"))
    assert f"inosync -c '{conf}' --verify" in first


# ---- --verify --nagios on a healthy daemon with excludes


@pytest.mark.slow
def test_nagios_is_not_critical_for_a_healthy_daemon_with_excludes(tmp_path, run_inosync):
    """An excluded file made in a directory changes that directory's mtime on the
    source. The daemon sends nothing for it (excluded changes cost nothing, by
    design) until the next periodic full sync (a day by default), so --verify
    --nagios pages CRITICAL on a daemon that does exactly what it should."""
    wpath = tree_with_content(tmp_path)
    node = tmp_path / "n"
    conf = write_config(tmp_path / "c.conf", wpath=str(wpath), rnodes=[str(node)],
                        rexcludes=["*.tmp"], edelay=0.1)
    daemon = run_inosync(conf)
    daemon.wait_log(r"synced full sync")
    time.sleep(1.1)  # a new second: the directory's mtime changes visibly
    (wpath / "d" / "session.tmp").write_text("scratch\n")
    time.sleep(1)  # edelay and more: whatever the daemon would send, it has sent
    done = run(conf, "--verify", "--nagios", capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


# ---- what a hostile node writes reaches the operator's terminal only escaped


@pytest.mark.slow
@pytest.mark.parametrize("nagios", [False, True])
def test_verify_escapes_what_a_node_writes_on_stderr(tmp_path, nagios):
    """--verify printed the first line rsync wrote on stderr as is. Over ssh that is
    the remote's own stderr (a login script, a forced command, a hostile node):
    ssh and rsync pass it through, so an escape sequence in it drove the terminal
    of the operator who ran --verify. The log escapes every line (escape.py);
    --verify's node lines did not."""
    from helpers import Sshd

    server = Sshd(tmp_path / "sshd").start()
    try:
        keys = server.dir / "authorized_keys"
        hostile = r"printf '\033]2;owned\007\033[2J evil\n' >&2; exit 1"
        keys.write_text(f'command="{hostile}" {keys.read_text()}')
        wpath = tree_with_content(tmp_path)
        conf = write_config(tmp_path / "c.conf", wpath=str(wpath),
                            rnodes=[f"root@127.0.0.1:{tmp_path}/remote"],
                            ssh=server.ssh_command())
        done = run(conf, "--verify", *(["--nagios"] if nagios else []), capture_output=True)
    finally:
        server.stop()
    assert done.returncode == (3 if nagios else 2), done
    assert b"evil" in done.stdout
    assert b"\x1b" not in done.stdout and b"\x07" not in done.stdout, done.stdout


@pytest.mark.slow
@pytest.mark.parametrize("args, status", [(["--check"], 1), (["--verify"], 2),
                                          (["--verify", "--nagios"], 3)])
def test_output_to_a_full_disk_is_one_line_not_a_traceback(tmp_path, args, status):
    """`inosync --verify > report` on a full filesystem: print raised OSError (ENOSPC,
    not the BrokenPipeError print_lines caught), a traceback and exit 1, which
    --verify means as "some node differs"."""
    wpath = tree_with_content(tmp_path)
    node = tmp_path / "n"
    node.mkdir()
    conf = write_config(tmp_path / "c.conf", wpath=str(wpath), rnodes=[str(node)])
    with open("/dev/full", "w") as full:
        done = run(conf, *args, stdout=full, stderr=subprocess.PIPE, text=True)
    assert done.returncode == status, done.stderr
    assert done.stderr == "inosync: cannot write the output: No space left on device\n"


# ---- a one-shot stopped early is not an answer


@pytest.mark.slow
@pytest.mark.parametrize("args, status", [(["--verify"], 2), (["--verify", "--nagios"], 3),
                                          (["--check"], 1)])
def test_a_one_shot_stopped_during_start_up_does_not_exit_0(tmp_path, args, status):
    """SIGTERM while the configuration loads (it is code: a slow lookup, a hung NFS
    path) ended --verify with exit 0, "every node identical" (--nagios: OK, with
    nothing on stdout), and --check with 0, "the configuration is fine"; the log
    line said "nothing was synced", a daemon's words."""
    wpath = tree_with_content(tmp_path)
    conf = tmp_path / "c.conf"
    marker = tmp_path / "loading"
    conf.write_text(f"import time as _time\nopen({str(marker)!r}, 'w').close()\n_time.sleep(30)\n"
                    f"wpath = {str(wpath)!r}\nrnodes = [{str(tmp_path / 'n')!r}]\n"
                    f"state_dir = {str(tmp_path / 'state')!r}\n")
    conf.chmod(0o644)
    proc = subprocess.Popen([*inosync_argv(), "-c", str(conf), *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(marker.exists, 15, "the config to be running")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == status, (out, err)
    if "--nagios" in args:
        assert out.startswith("UNKNOWN: "), out


@pytest.mark.parametrize("bad", [["--checksums"], ["-c"], ["--verify", "--nagios", "extra"]])
def test_nagios_usage_error_is_unknown(tmp_path, bad, capsys):
    """A typo in the Nagios command definition (--checksums) exited 2 from argparse,
    which Nagios shows as CRITICAL, a drift nobody found; the plugin guidelines
    say UNKNOWN (3) for bad arguments, as --nagios -d already is."""
    from inosync import cli

    with pytest.raises(SystemExit) as stopped:
        cli.main(["--verify", "--nagios", *bad])
    assert stopped.value.code == 3
    assert capsys.readouterr().out.startswith("UNKNOWN: usage: ")


# ---- FILE:LINE names the line that set the value


def test_the_line_blamed_is_the_assignment_that_ran(tmp_path):
    """A setting assigned in both branches of an if was blamed on the last
    assignment in the text, the one that did not run: "c.conf:7: edelay must be
    from 0 to 86400, got -1" while line 7 says edelay = 5."""
    from inosync.config import ConfigError, load

    wpath = tree_with_content(tmp_path)
    conf = tmp_path / "c.conf"
    conf.write_text(f"wpath = {str(wpath)!r}\nrnodes = [{str(tmp_path / 'n')!r}]\n"
                    f"state_dir = {str(tmp_path / 'state')!r}\n"
                    "if True:\n    edelay = -1\nelse:\n    edelay = 5\n"
                    "for _i in range(2):\n    timeout = -1 if _i else 10\n")
    conf.chmod(0o644)
    with pytest.raises(ConfigError) as error:
        load(str(conf))
    assert str(error.value).startswith(f"{conf}:5: edelay "), error.value
    conf.write_text(conf.read_text().replace("edelay = -1", "edelay = 1"))
    with pytest.raises(ConfigError) as error:
        load(str(conf))
    assert str(error.value).startswith(f"{conf}:9: timeout "), error.value
    conf.write_text(conf.read_text().replace("if True:", "if False:"))
    with pytest.raises(ConfigError) as error:
        load(str(conf))  # edelay = 5 ran: the error is timeout's, at its line
    assert str(error.value).startswith(f"{conf}:9: timeout "), error.value


# ---- a reload says when the same wpath now means another tree


def test_reload_says_wpath_now_leads_elsewhere(tmp_path):
    """wpath = /srv/current, a symlink a deploy moved from release1 to release2: the
    reload watches and fully syncs the other tree, but its log said "reload:
    configuration unchanged" (confdiff compared only the configured spelling)."""
    from inosync.confdiff import changes
    from inosync.config import load

    for release in ("r1", "r2"):
        (tmp_path / release).mkdir()
        (tmp_path / release / "index.html").write_text(f"{release}\n")
    link = tmp_path / "current"
    link.symlink_to("r1")
    conf = write_config(tmp_path / "c.conf", wpath=str(link), rnodes=[str(tmp_path / "n")])
    old = load(str(conf))
    link.unlink()
    link.symlink_to("r2")
    new = load(str(conf))
    assert new.wpath != old.wpath
    said = changes(old, new)
    assert said != ["configuration unchanged"]
    assert any(str(tmp_path / "r2") in line and str(tmp_path / "r1") in line for line in said)


# ---- the terminal goes away under a foreground daemon


@pytest.mark.slow
def test_a_foreground_daemon_outlives_its_terminal(tmp_path):
    """inosync in the foreground on a terminal shows a live progress line during a
    full sync. When the terminal went away (an ssh session dropped, a tmux
    killed: writes then fail with EIO), LiveLine's own writes raised out of
    logging into the loop: the daemon died mid-sync (exit 1, the traceback lost
    with the terminal), leaving rsync's partial file on the node."""
    import pty

    from helpers import tree_diff

    wpath = tree_with_content(tmp_path)
    (wpath / "big.bin").write_bytes(os.urandom(1_500_000))
    node = tmp_path / "n"
    conf = write_config(tmp_path / "c.conf", wpath=str(wpath), rnodes=[str(node)],
                        rspeed=500, logfile=str(tmp_path / "unused.log"))
    master, slave = pty.openpty()
    proc = subprocess.Popen([*inosync_argv(), "-c", str(conf)], stdin=subprocess.DEVNULL,
                            stdout=slave, stderr=slave)
    os.close(slave)
    try:
        seen = b""

        def live_line() -> bool:
            nonlocal seen
            seen += os.read(master, 65536)
            return b"full sync running" in seen or seen.count(b"\r\x1b[K") >= 3
        wait_until(live_line, 15, "the live line")
        os.close(master)  # the terminal is gone: every write now fails (EIO)
        master = -1
        wait_until(lambda: proc.poll() is not None or not tree_diff(wpath, node), 30,
                   "the full sync to end")
        assert proc.poll() is None, f"died with exit {proc.returncode}"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if master >= 0:
            os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_live_line_on_a_terminal_of_zero_columns_shows_the_text():
    """A terminal that reports 0 columns (a fresh pty, a serial console) got a live
    line of "..." only: the width came out as -1."""
    import pty

    from inosync.liveline import LiveLine

    master, slave = pty.openpty()
    try:
        with open(slave, "w", closefd=False) as stream:
            assert os.get_terminal_size(slave).columns == 0
            LiveLine(stream).show("full sync running for 3 s, 10 files")
        assert b"full sync running for 3 s" in os.read(master, 4096)
    finally:
        os.close(slave)
        os.close(master)
