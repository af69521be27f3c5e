"""Strict modes (issue 16, rule 2): what root reads, runs or writes by name, and
every directory and symlink on the way to it, must be root's and closed to
group and others, as sshd's StrictModes wants; the daemon's files are opened
without following a symlink at the last step. The stranger is `nobody`."""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest
from helpers import alive, inosync_argv, wait_converged, wait_until, write_config

from inosync import cli
from inosync.config import Config, ConfigError, load
from inosync.daemon import write_statusfile

NOBODY = pwd.getpwnam("nobody")
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="chown to nobody needs root")


def config_in(folder: Path, tree: dict, **settings: object) -> Path:
    folder.mkdir(exist_ok=True)
    return write_config(folder / "inosync.conf", wpath=str(tree["src"]),
                        rnodes=[str(n) for n in tree["nodes"]],
                        state_dir=str(tree["dir"] / "state"), **settings)


def refusal(conf: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load(str(conf))
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{conf}"), message
    return message


def give_to_nobody(path: Path) -> None:
    os.lchown(path, NOBODY.pw_uid, NOBODY.pw_gid)


def inosync(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*inosync_argv(), *args], capture_output=True, text=True,
                          timeout=30, stdin=subprocess.DEVNULL)


def one_line_usage_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    return done.stderr


# ---- what root runs and reads


def test_config_in_a_directory_others_may_write_is_refused_not_run(tmp_path, tree):
    shared = tmp_path / "shared"
    conf = config_in(shared, tree)
    ran = tmp_path / "ran"
    conf.write_text(conf.read_text() + f"open({str(ran)!r}, 'w')\n")  # what anyone could add
    shared.chmod(0o777)
    assert refusal(conf) == (
        f"{conf}: directory {shared} is writable by group or others (owner uid 0, mode 0777); "
        f"anyone who can write there could replace what root runs; fix with: chmod go-w {shared}")
    assert not ran.exists()
    assert f"chmod go-w {shared}" in one_line_usage_error(inosync("-c", str(conf), "--check"))
    assert not ran.exists()


def test_log_in_a_group_writable_directory_is_refused(tmp_path, tree):
    """As Ubuntu's /var/log (root:syslog 0775): the group could swap the file."""
    logs = tmp_path / "log"
    logs.mkdir()
    logs.chmod(0o775)
    conf = config_in(tmp_path / "etc", tree, logfile=str(logs / "inosync.log"))
    assert refusal(conf).endswith(
        f"directory {logs} is writable by group or others (owner uid 0, mode 0775); anyone who "
        f"can write there could replace what root writes; fix with: chmod go-w {logs}, or move "
        "the file to a directory only root can write (such as a new /var/log/inosync)")


def test_config_below_sticky_tmp_is_refused_and_says_where_to_put_it(tree):
    folder = Path(tempfile.mkdtemp(dir="/tmp"))  # a private directory, in /tmp (1777)
    try:
        message = refusal(config_in(folder, tree))
        assert "directory /tmp is writable by others (owner uid 0, mode 1777); sticky is no " \
               "exception" in message
        assert "fix with: move it to a directory only root can write" in message
    finally:
        shutil.rmtree(folder)


def test_config_in_a_directory_of_another_user_is_refused(tmp_path, tree):
    theirs = tmp_path / "theirs"
    conf = config_in(theirs, tree)
    give_to_nobody(theirs)
    assert f"directory {theirs} is owned by uid {NOBODY.pw_uid} (mode 0755)" in refusal(conf)


def test_config_through_a_symlink_of_another_user_is_refused(tmp_path, tree):
    config_in(tmp_path / "etc", tree)
    via = tmp_path / "via"
    via.symlink_to(tmp_path / "etc")
    give_to_nobody(via)  # it decides which file root executes
    assert f"symlink {via} is owned by uid {NOBODY.pw_uid}, who decides where it leads" in \
        refusal(via / "inosync.conf")


def test_config_through_root_symlinks_is_read(tmp_path, tree):
    """Links root made (config management, /etc/inosync.conf -> a versioned file)
    are followed once each is found trusted; the file is then opened O_NOFOLLOW."""
    conf = config_in(tmp_path / "etc", tree)
    (tmp_path / "current").symlink_to("etc")  # relative, to a directory
    link = tmp_path / "inosync.conf"
    link.symlink_to(tmp_path / "current" / "inosync.conf")
    assert load(str(link)).path == str(link)
    assert load(str(conf)).wpath == str(tree["src"])


def test_rexcludes_from_writable_by_others_is_refused(tmp_path, tree):
    rules = tmp_path / "etc" / "excludes"
    conf = config_in(tmp_path / "etc", tree, rexcludes_from="excludes")
    rules.write_text("*.tmp\n")
    rules.chmod(0o666)
    message = refusal(conf)
    assert f"rexcludes_from {rules}: {rules} is writable by group or others (owner uid 0, " \
           f"mode 0666)" in message and f"fix with: chmod go-w {rules}" in message
    rules.chmod(0o644)
    assert load(str(conf)).excludes.patterns == ("*.tmp",)


def test_rexcludes_from_in_a_directory_of_another_user_is_refused(tmp_path, tree):
    conf = config_in(tmp_path / "etc", tree, rexcludes_from="../theirs/excludes")
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "excludes").write_text("*.tmp\n")
    give_to_nobody(tmp_path / "theirs")
    assert f"directory {tmp_path / 'theirs'} is owned by uid {NOBODY.pw_uid}" in refusal(conf)


# ---- what root writes


def test_log_symlink_planted_in_a_directory_of_another_user_is_refused(tmp_path, tree):
    """Today root appends its (attacker-shaped) log lines to any file it is shown."""
    theirs, victim = tmp_path / "theirs", tmp_path / "shadow"
    theirs.mkdir()
    victim.write_text("root:x:0:\n")
    log = theirs / "inosync.log"
    log.symlink_to(victim)
    give_to_nobody(log)
    give_to_nobody(theirs)
    conf = config_in(tmp_path / "etc", tree, logfile=str(log))
    assert f"logfile {log}: directory {theirs} is owned by uid {NOBODY.pw_uid}" in refusal(conf)
    assert "owned by uid" in one_line_usage_error(inosync("-c", str(conf), "-d"))
    assert victim.read_text() == "root:x:0:\n"


def test_log_through_a_symlink_of_another_user_is_refused(tmp_path, tree):
    (tmp_path / "logs").mkdir()
    via = tmp_path / "via"
    via.symlink_to(tmp_path / "logs")
    give_to_nobody(via)
    conf = config_in(tmp_path / "etc", tree, logfile=str(via / "inosync.log"))
    assert f"logfile {via / 'inosync.log'}: symlink {via} is owned by uid" in refusal(conf)


@pytest.mark.parametrize("setting", ["pidfile", "statusfile", "logfile"])
def test_daemon_file_that_is_a_symlink_is_refused(tmp_path, tree, setting):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    link = tmp_path / f"{setting}.link"
    link.symlink_to(victim)  # even root's: the file is opened with O_NOFOLLOW
    conf = config_in(tmp_path / "etc", tree, **{setting: str(link)})
    assert refusal(conf).endswith(
        f"{setting} {link}: {link} is a symlink; inosync does not follow one to a file it "
        f"writes; fix with: name the file itself ({victim})")


def test_statusfile_written_over_a_symlink_is_refused(tmp_path, caplog):
    """At run time too (planted after the start): the link is left as it is."""
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    status = tmp_path / "status.json"
    status.symlink_to(victim)
    config = Config(path=str(tmp_path / "c"), wpath=str(tmp_path), rnodes=(),
                    statusfile=str(status))
    with caplog.at_level(logging.WARNING, logger="inosync"):
        write_statusfile(config, "running", [])
    assert status.is_symlink() and victim.read_text() == "precious\n"
    assert f"cannot write statusfile {status}: a symlink, not a regular file" in caplog.text


def test_fifo_at_the_pidfile_is_one_line_and_exit_2(tmp_path, tree):
    fifo = tmp_path / "run" / "inosync.pid"
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    conf = config_in(tmp_path / "etc", tree)
    err = one_line_usage_error(inosync("-c", str(conf), "--pidfile", str(fifo)))
    assert f"pidfile {fifo}: {fifo} is a FIFO, not a regular file" in err
    conf = config_in(tmp_path / "etc", tree, pidfile=str(fifo))
    err = one_line_usage_error(inosync("-c", str(conf), "-d"))
    assert f"pidfile {fifo}: {fifo} is a FIFO, not a regular file" in err


def test_pidfile_open_refuses_a_fifo_without_blocking(tmp_path):
    """What a FIFO made between the check and the open meets."""
    from inosync.pidfile import Pidfile, PidfileError

    os.mkfifo(tmp_path / "p.pid")
    with pytest.raises(PidfileError, match=r"is a FIFO, not a regular file") as info:
        Pidfile(str(tmp_path / "p.pid")).acquire()
    assert not info.value.held  # a usage error: exit 2


def test_log_reopened_after_rotation_does_not_follow_a_symlink(tmp_path):
    log_path, victim = tmp_path / "inosync.log", tmp_path / "victim"
    victim.write_text("precious\n")
    saved = cli.log.level, cli.log.propagate
    logs = cli.Logs(verbose=False)
    logs.background(Config(path=str(tmp_path / "c"), wpath=str(tmp_path), rnodes=(),
                           logfile=str(log_path)))
    try:
        cli.log.info("before rotation")
        log_path.rename(tmp_path / "inosync.log.1")  # logrotate
        log_path.symlink_to(victim)  # planted where the next line reopens the file
        logging.raiseExceptions, raised = False, logging.raiseExceptions  # as a daemon
        try:
            cli.log.info("after rotation")  # lost, not sent through the link
        finally:
            logging.raiseExceptions = raised
        assert victim.read_text() == "precious\n"
        log_path.unlink()
        cli.log.info("link gone")
        assert "link gone" in log_path.read_text()
        assert log_path.stat().st_mode & 0o777 == 0o640
    finally:
        assert logs.handler is not None
        cli.log.removeHandler(logs.handler)
        logs.handler.close()
        cli.log.setLevel(saved[0])
        cli.log.propagate = saved[1]


@pytest.mark.slow
def test_daemon_log_rotated_then_a_symlink_planted_is_not_followed(tmp_path, tree):
    """The real daemon: logrotate's rename, then a link where the log was; the
    next line (a sync) must not go through it, and syncing goes on."""
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    log, pidfile = tmp_path / "inosync.log", tmp_path / "inosync.pid"
    conf = config_in(tmp_path / "etc", tree, edelay=0.2, logfile=str(log),
                     pidfile=str(pidfile))
    done = inosync("-c", str(conf), "-d")
    assert done.returncode == 0, done.stderr
    pid = int(wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), 10, "pid"))
    try:
        wait_until(lambda: "synced" in log.read_text(), 20, "first sync logged")
        log.rename(tmp_path / "inosync.log.1")
        log.symlink_to(victim)
        (tree["src"] / "after-rotation.txt").write_text("x\n")
        wait_converged(tree["src"], tree["nodes"])  # logged "synced", not through the link
        log.unlink()
        (tree["src"] / "link-gone.txt").write_text("y\n")
        wait_until(lambda: log.exists() and "synced" in log.read_text(), 20, "log reopened")
        assert victim.read_text() == "precious\n"
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGTERM)
            wait_until(lambda: not alive(pid), 20, "daemon to stop")


# ---- the check itself


def test_strict_modes_judges_a_missing_end_by_the_directories_above(tmp_path):
    from inosync.paths import strict_modes

    assert strict_modes(str(tmp_path / "new" / "file"), "writes") is None
    (tmp_path / "open").mkdir(mode=0o777)
    (tmp_path / "open").chmod(0o777)
    assert "writable by group or others" in strict_modes(str(tmp_path / "open" / "new" / "f"),
                                                         "writes")


def test_strict_modes_follows_links_inside_links(tmp_path):
    from inosync.paths import strict_modes

    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "f").write_text("")
    (tmp_path / "hop").symlink_to("real")
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "link").symlink_to(tmp_path / "hop")  # reached through a link
    (tmp_path / "a").symlink_to("theirs/link")
    assert strict_modes(str(tmp_path / "a" / "f"), "reads") is None
    give_to_nobody(tmp_path / "hop")
    assert f"symlink {tmp_path / 'hop'} is owned by uid" in \
        strict_modes(str(tmp_path / "a" / "f"), "reads")
    os.lchown(tmp_path / "hop", 0, 0)
    give_to_nobody(tmp_path / "theirs")
    assert f"directory {tmp_path / 'theirs'} is owned by uid" in \
        strict_modes(str(tmp_path / "a" / "f"), "reads")


def test_strict_modes_stops_on_a_symlink_loop(tmp_path):
    from inosync.paths import strict_modes

    (tmp_path / "x").symlink_to("y")
    (tmp_path / "y").symlink_to("x")
    assert "too many levels of symlinks" in strict_modes(str(tmp_path / "x" / "f"), "reads")
