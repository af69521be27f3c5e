"""What the hostile review of issue 16 found still getting through, one test each:
an ssh node reaching the remote root through "..", a system directory as a local
node, a NUL in rexcludes_from (a traceback), and a log or status file name too
long for the filesystem (--check passed, the start failed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import write_config

from inosync import check
from inosync.config import ConfigError, load


@pytest.fixture
def wdir(tmp_path: Path) -> Path:
    d = tmp_path / "www"
    d.mkdir()
    (d / "index.html").write_text("hello\n")
    return d


def error_of(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load(str(path))
    message = str(info.value)
    assert "\n" not in message and str(path) in message, message
    return message


@pytest.mark.parametrize("node", ["victim:~root/..", "victim:~/..", "h:www/../..",
                                  "h:/srv/www/../..", "root@h:~/../../etc", "h:..",
                                  "h:a/..", "rsync://h/m/../.."])
def test_a_node_path_with_dotdot_is_refused(tmp_path, wdir, node):
    """'host:/' was refused, 'host:~root/..' (the remote root too) passed: what ..
    after ~ or the login directory means is known only on the node."""
    message = error_of(write_config(tmp_path / "c.conf", wpath=str(wdir), rnodes=[node]))
    assert repr(node) in message and ".." in message


@pytest.mark.parametrize("node", ["/", "/etc", "/usr", "/var", "/root", "/home", "/boot",
                                  "/var/lib", "/usr/..", "//etc/"])
def test_a_system_directory_as_a_local_node_is_refused(tmp_path, wdir, node):
    """rnodes = ['/etc'] passed --check: one typo from wiping /etc with --delete."""
    message = error_of(write_config(tmp_path / "c.conf", wpath=str(wdir), rnodes=[node]))
    assert "system directory" in message, message


def test_a_node_below_a_system_directory_is_fine(tmp_path, wdir):
    config = load(str(write_config(tmp_path / "c.conf", wpath=str(wdir),
                                   rnodes=[str(tmp_path / "node")])))
    assert config.rnodes == (str(tmp_path / "node"),)


def test_a_nul_in_rexcludes_from_is_one_line(tmp_path, wdir):
    """It was a traceback: ValueError: embedded null byte, from os.lstat."""
    message = error_of(write_config(tmp_path / "c.conf", wpath=str(wdir),
                                    rnodes=[str(tmp_path / "node")], rexcludes_from="e\0x"))
    assert "rexcludes_from" in message


@pytest.mark.parametrize("name", ["logfile", "statusfile", "pidfile"])
def test_a_daemon_file_name_too_long_is_found_by_the_check(tmp_path, wdir, name):
    """--check passed, then -d failed with 'File name too long' (exit 1), or every
    statusfile write warned."""
    too_long = str(tmp_path / ("a" * 300))
    config = load(str(write_config(tmp_path / "c.conf", wpath=str(wdir),
                                   rnodes=[str(tmp_path / "node")], **{name: too_long})))
    problem = check.preflight(config) or ""
    assert f"{name} {too_long}" in problem and "too long" in problem, problem


# ---- the second review: other spellings of the remote root, a system directory
# or the login directory itself (whose ~/.ssh --delete would remove)


@pytest.mark.parametrize("node", ["h:~systemd-network", "h:~systemd-timesync/.", "h:~bin",
                                  "h:~sys", "h:~root", "root@h:~www-data/site"])
def test_another_users_home_on_the_node_is_refused(tmp_path, wdir, node):
    """~user means what the node's password database says ('/' for
    systemd-network here, /bin for bin): only the node knows."""
    message = error_of(write_config(tmp_path / "c.conf", wpath=str(wdir), rnodes=[node]))
    assert repr(node) in message and "~user" in message, message


@pytest.mark.parametrize("node", ["h:/etc", "h:/usr/", "h:/var", "h://root", "h:/home",
                                  "h:/var/lib", "h:/boot/."])
def test_a_remote_system_directory_is_refused(tmp_path, wdir, node):
    message = error_of(write_config(tmp_path / "c.conf", wpath=str(wdir), rnodes=[node]))
    assert repr(node) in message and "system directory" in message, message


@pytest.mark.parametrize("node", ["h:.", "h:./", "h:~", "h:~/", "root@h:~/.", "h:.//"])
def test_the_login_directory_itself_is_refused(tmp_path, wdir, node):
    """--delete would remove whatever wpath does not hold: ~/.ssh (and with it the
    way in), shell files, the node user's own data."""
    message = error_of(write_config(tmp_path / "c.conf", wpath=str(wdir), rnodes=[node]))
    assert repr(node) in message and "login directory" in message, message


@pytest.mark.parametrize("node", ["h:www", "h:~/www", "h:./www", "h:/srv/www", "h:/etc-mirror",
                                  "h:/var/www", "h:/home/www/site", "h:/usr/local"])
def test_plain_remote_directories_are_fine(tmp_path, wdir, node):
    config = load(str(write_config(tmp_path / "c.conf", wpath=str(wdir), rnodes=[node])))
    assert config.rnodes == (node,)
