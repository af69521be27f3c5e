"""What a daemon killed with -9 left in $TMPDIR: found only if surely ours and dead."""

from __future__ import annotations

import logging
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import bind_unix

from inosync.leftovers import LOCK, find_stale, make_dir

PREFIX = "inosync-t-"


def dead_dir(parent: Path) -> Path:
    """A directory made by a process that has ended since (as after kill -9)."""
    code = ("import sys; from inosync.leftovers import make_dir; "
            f"print(make_dir({PREFIX!r}, sys.argv[1]).path)")
    made = subprocess.run([sys.executable, "-c", code, str(parent)], check=True,
                          capture_output=True, text=True)
    return Path(made.stdout.strip())


def sockets_only(mode: int) -> bool:
    return stat.S_ISSOCK(mode)


def names(parent: Path) -> list[str]:
    found = find_stale(PREFIX, [str(parent)])
    try:
        return sorted(os.path.basename(s.path) for s in found)
    finally:
        for s in found:
            for fd in (s.lock, s.fd, s.parent_fd):
                os.close(fd)


def test_made_directory_is_private_and_locked_with_our_pid(tmp_path):
    owned = make_dir(PREFIX, str(tmp_path))
    try:
        path = Path(owned.path)
        assert path.parent == tmp_path and stat.S_IMODE(path.lstat().st_mode) == 0o700
        assert (path / LOCK).read_text() == f"{os.getpid()}\n"
        assert names(tmp_path) == []  # we run: its lock is held
    finally:
        owned.close()
    assert names(tmp_path) == [path.name]  # closed as by our death: now it is stale


def test_a_dead_daemons_directory_is_removed_with_its_sockets_only(tmp_path):
    gone = dead_dir(tmp_path)
    sock = socket.socket(socket.AF_UNIX)
    bind_unix(sock, gone / "0-0")
    sock.close()
    (stale,) = find_stale(PREFIX, [str(tmp_path)])
    assert stale.path == str(gone) and stale.pid.isdigit() and stale.pid != str(os.getpid())
    assert stale.entries(sockets_only) == ["0-0"]
    assert stale.remove(sockets_only)
    assert not gone.exists()


def test_what_is_not_a_socket_keeps_the_directory(tmp_path, caplog):
    gone = dead_dir(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("x")
    (gone / "link").symlink_to(outside)
    (gone / "file").write_text("not a socket")
    (stale,) = find_stale(PREFIX, [str(tmp_path)])
    with caplog.at_level(logging.WARNING, logger="inosync"):
        assert not stale.remove(sockets_only)
    assert (gone / "link").is_symlink() and (gone / "file").exists()
    assert (outside / "precious").read_text() == "x"
    assert f"cannot remove {gone}" in caplog.text


@pytest.mark.parametrize("case", ["symlink", "open mode", "no lock", "lock being made",
                                  "lock is a symlink", "other name"])
def test_not_surely_ours_and_dead_is_left_alone(case, tmp_path):
    gone = dead_dir(tmp_path)
    if case == "symlink":  # a link of that name, to a dead daemon's directory elsewhere
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        gone.rename(elsewhere / gone.name)
        gone.symlink_to(elsewhere / gone.name)
    elif case == "open mode":
        gone.chmod(0o755)
    elif case == "no lock":  # an older inosync's: nothing tells whether it still runs
        (gone / LOCK).unlink()
    elif case == "lock being made":  # made, not yet locked: no pid in it yet
        (gone / LOCK).write_text("")
    elif case == "lock is a symlink":
        (gone / LOCK).unlink()
        (gone / LOCK).symlink_to(tmp_path / "target")
        (tmp_path / "target").write_text("1\n")
    else:
        gone.rename(tmp_path / "inosync-t-toolong99")
    assert names(tmp_path) == []


def test_a_live_lock_keeps_a_directory_even_with_a_dead_pid(tmp_path):
    """Pids are reused and may lie; the lock does not."""
    owned = make_dir(PREFIX, str(tmp_path))
    try:
        Path(owned.path, LOCK).write_text("999999999\n")
        assert names(tmp_path) == []
    finally:
        owned.close()


def test_two_starts_never_both_take_one_directory(tmp_path):
    dead_dir(tmp_path)
    first = find_stale(PREFIX, [str(tmp_path)])
    assert len(first) == 1
    assert names(tmp_path) == []  # the first one holds its lock while it removes it
    assert first[0].remove(sockets_only)


def test_tmpdir_named_twice_is_looked_at_once(tmp_path):
    """$TMPDIR may be /tmp itself, also looked at as a fallback: one Stale, not two."""
    dead_dir(tmp_path)
    found = find_stale(PREFIX, [str(tmp_path), str(tmp_path) + "/", str(tmp_path / "none")])
    assert len(found) == 1
    assert found[0].remove(sockets_only)
