"""The tree lock (treelock.py) within one process, and -p's refusals on the command
line: fast."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from inosync.paths import identity
from inosync.treelock import ROOT_DIR, TreeLock, TreeLockError, lock_dir, lock_path


def test_a_tree_is_held_once_and_free_again_after_release(tmp_path: Path):
    tree = identity(str(tmp_path))
    assert tree is not None
    first, other = TreeLock(str(tmp_path / "state")), TreeLock(str(tmp_path / "state"))
    first.acquire(tree, "/srv/www")
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700
    with pytest.raises(TreeLockError, match=rf"another inosync \(pid {os.getpid()}\) already "
                                            "watches /srv/www; stop it first") as e:
        other.acquire(tree, "/srv/www")
    assert e.value.held
    with pytest.raises(TreeLockError, match="already watches"):
        TreeLock(str(tmp_path / "state"), dry_run=True).acquire(tree, "/srv/www")
    first.release()
    other.acquire(tree, "/srv/www")
    other.release()


def test_a_dry_run_creates_nothing(tmp_path: Path):
    tree = identity(str(tmp_path))
    assert tree is not None
    lock = TreeLock(str(tmp_path / "state"), dry_run=True)
    lock.acquire(tree, "/srv/www")  # no daemon of this tree ever ran: nothing to hold
    assert not (tmp_path / "state").exists() and lock.fd is None


def test_a_fifo_at_the_lock_path_is_one_line(tmp_path: Path):
    tree = identity(str(tmp_path))
    assert tree is not None
    (tmp_path / "state").mkdir(mode=0o700)
    os.mkfifo(lock_path(str(tmp_path / "state"), tree))
    with pytest.raises(TreeLockError, match="is not a regular file"):
        TreeLock(str(tmp_path / "state")).acquire(tree, "/srv/www")


def test_the_lock_is_in_one_place_whatever_the_config(tmp_path: Path):
    """Not in state_dir: two configs of one tree that differ only there both ran."""
    tree = identity(str(tmp_path))
    assert tree is not None
    assert lock_dir() == (ROOT_DIR if os.getuid() == 0 else
                          os.path.expanduser("~/.inosync-tree"))
    first, other = TreeLock(), TreeLock()
    path = lock_path(lock_dir(), tree)
    try:
        first.acquire(tree, "/srv/www")
        assert os.path.isfile(path) and not os.path.islink(lock_dir())
        assert os.stat(lock_dir()).st_mode & 0o777 == 0o700
        with pytest.raises(TreeLockError, match="already watches /srv/www") as e:
            other.acquire(tree, "/srv/www")
        assert e.value.held
    finally:
        first.release()
        if os.path.exists(path):
            os.unlink(path)


def test_a_dry_run_makes_nothing_in_the_lock_directory(tmp_path: Path):
    tree = identity(str(tmp_path))
    assert tree is not None
    TreeLock(dry_run=True).acquire(tree, "/srv/www")
    assert not os.path.lexists(lock_path(lock_dir(), tree))


def test_a_lock_directory_others_may_enter_is_refused(tmp_path: Path):
    tree = identity(str(tmp_path))
    assert tree is not None
    (tmp_path / "locks").mkdir(mode=0o755)
    (tmp_path / "locks").chmod(0o755)
    for dry_run in (False, True):
        with pytest.raises(TreeLockError, match=rf"lock directory {tmp_path / 'locks'}: not a "
                                                rf"directory of uid {os.getuid()} closed"):
            TreeLock(str(tmp_path / "locks"), dry_run=dry_run).acquire(tree, "/srv/www")
    assert os.listdir(tmp_path / "locks") == []


@pytest.mark.parametrize("args", [["-p", "-d"], ["-p", "--pidfile", "/tmp/x.pid"]])
def test_a_dry_run_takes_no_pidfile_and_does_not_detach(args: list[str]):
    done = subprocess.run([sys.executable, "-m", "inosync", "-c", "/nonexistent", *args],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].endswith(
        "inosync: usage: -p is a dry run that prints to the terminal and writes nothing (no "
        "pidfile, statusfile or log file); it cannot be combined with -d or --pidfile")
