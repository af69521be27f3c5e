"""The daemon's private temporary directories, and finding those a dead one left.

A daemon killed with -9 (or by the OOM killer) runs none of its cleanup: its directory of list
files stays in $TMPDIR, and so does its directory of ssh control sockets,
with the master connections behind them, until ControlPersist ends them.
The next start cleans them up, but only what is surely ours and surely
dead:

* the name is ours: the prefix and the 8 characters ``mkdtemp`` adds;
* a real directory (not a symlink), owned by us, closed to everyone else;
* it holds our ``lock`` file with a pid in it, and no one holds its flock.

Each directory's maker holds an flock on its ``lock`` file for as long as
it runs; the kernel drops it when the process dies, however it dies. A pid
alone would not do: pids are reused, and a live daemon of another tree may
have the dead one's number by now. The pid is written only once the lock is
held: a lock file without one is a directory being made right now, and is
left alone. Directories made by an older inosync have no lock file: they
are left alone too (nothing tells whether their daemon still runs).

Everything is done through file descriptors of directories checked as
above, so a name swapped meanwhile is never followed; only the entries the
caller names (sockets, list files) and the lock file are removed, and the
directory only if that leaves it empty.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import stat
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass

log = logging.getLogger("inosync")

LOCK = "lock"  # in each directory: its maker's pid, flocked while the maker runs
_MKDTEMP = "[a-z0-9_]{8}"  # what tempfile.mkdtemp adds to the prefix


@dataclass
class OwnedDir:
    """A private directory we made, and its lock, held until close()."""

    path: str
    lock: int

    def close(self) -> None:
        if self.lock >= 0:
            os.close(self.lock)
            self.lock = -1


def make_dir(prefix: str, parent: str | None = None) -> OwnedDir:
    """A new private directory (0700) in parent ($TMPDIR if None), locked as ours.

    Raises OSError, with nothing left behind, if it cannot be made.
    """
    path = tempfile.mkdtemp(prefix=prefix, dir=parent)
    try:
        fd = os.open(os.path.join(path, LOCK),
                     os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError:
        os.rmdir(path)
        raise
    # Blocks only while another daemon's start looks at it: that one finds no
    # pid yet and lets go at once. The pid, written under the lock, is what
    # makes the directory a candidate when the lock is free.
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, f"{os.getpid()}\n".encode())
    return OwnedDir(path, fd)


def _open_dir(name: str, dir_fd: int) -> int:
    return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                   dir_fd=dir_fd)


def _private(st: os.stat_result) -> bool:
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077


@dataclass
class Stale:
    """A directory a dead daemon left: open, its lock held by us until removed."""

    path: str
    pid: str  # the dead daemon's, for the log
    parent_fd: int
    fd: int
    lock: int

    def entries(self, kind: Callable[[int], bool]) -> list[str]:
        """The names in it whose type (st_mode) kind accepts, symlinks never followed."""
        found = []
        with os.scandir(self.fd) as entries:
            for entry in entries:
                try:
                    mode = entry.stat(follow_symlinks=False).st_mode
                except OSError:
                    continue
                if kind(mode) and entry.name != LOCK:
                    found.append(entry.name)
        return found

    def remove(self, kind: Callable[[int], bool]) -> bool:
        """Remove the entries kind accepts, the lock file and the directory, if that
        leaves it empty; True if it is gone. Closes it either way."""
        try:
            for name in self.entries(kind):
                os.unlink(name, dir_fd=self.fd)
            os.unlink(LOCK, dir_fd=self.fd)
            os.rmdir(os.path.basename(self.path), dir_fd=self.parent_fd)
            return True
        except OSError as e:
            log.warning("cannot remove %s, left by inosync %s which is no longer running: %s",
                        self.path, self.pid, e.strerror)
            return False
        finally:
            for fd in (self.lock, self.fd, self.parent_fd):
                os.close(fd)


def find_stale(prefix: str, parents: Iterable[str]) -> list[Stale]:
    """Directories named prefix + mkdtemp's 8 characters in parents that a daemon
    no longer running left behind (see the module's doc for what is checked)."""
    pattern = re.compile(re.escape(prefix) + _MKDTEMP)
    found: list[Stale] = []
    seen: set[tuple[int, int]] = set()
    for parent in parents:
        try:
            # $TMPDIR itself may be a symlink: the user chose it so.
            parent_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            st = os.fstat(parent_fd)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in seen:  # $TMPDIR is /tmp: look once
            os.close(parent_fd)
            continue
        seen.add((st.st_dev, st.st_ino))
        try:
            names = [n for n in os.listdir(parent_fd) if pattern.fullmatch(n)]
        except OSError:
            names = []
        for name in names:
            stale = _stale(parent, parent_fd, name)
            if stale is not None:
                found.append(stale)
        os.close(parent_fd)
    return found


def _stale(parent: str, parent_fd: int, name: str) -> Stale | None:
    """name in parent as a Stale if it is ours and its daemon dead, else None."""
    try:
        if not _private(os.stat(name, dir_fd=parent_fd, follow_symlinks=False)):
            return None
        fd = _open_dir(name, parent_fd)
    except OSError:
        return None
    lock = -1
    try:
        if not _private(os.fstat(fd)):
            raise _NotOurs
        lock = os.open(LOCK, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=fd)
        st = os.fstat(lock)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
            raise _NotOurs
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held: its daemon runs
        pid = os.pread(lock, 32, 0).decode(errors="replace").strip()
        if not pid.isdigit():
            raise _NotOurs  # being made right now (the pid comes once it is locked)
        return Stale(os.path.join(parent, name), pid, os.dup(parent_fd), fd, lock)
    except (OSError, _NotOurs) as e:
        if isinstance(e, OSError) and e.errno not in (errno.ENOENT, errno.EWOULDBLOCK,
                                                      errno.ELOOP, errno.EACCES):
            log.debug("%s/%s: not looked at: %s", parent, name, e)
        if lock >= 0:
            os.close(lock)
        os.close(fd)
        return None


class _NotOurs(Exception):
    """The directory is not one this module may remove."""
