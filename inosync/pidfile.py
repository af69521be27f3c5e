"""A pidfile guarded by flock(2), so a stale one (crash, kill -9) never blocks.

python-daemon's pidfile classes trust the file's existence; the kernel drops
an flock when its holder dies, which is the only reliable liveness test.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat

from .paths import file_kind

DEFAULT_PATH = "/run/inosync.pid"  # with -d when neither --pidfile nor the config names one


def choose_pidfile(given: str | None, configured: str | None, daemonize: bool) -> str | None:
    """The pidfile to hold: --pidfile, else the config's ``pidfile``, else with -d
    the default (two -d daemons of one tree must collide on it); None in the
    foreground, where a service manager tracks the process itself."""
    if given:
        return given
    if configured:
        return configured
    return DEFAULT_PATH if daemonize else None


class PidfileError(Exception):
    """One-line reason we cannot take the pidfile; held: another process has it
    (a runtime state), else the path itself is unusable (a usage error)."""

    def __init__(self, message: str, held: bool = False) -> None:
        super().__init__(message)
        self.held = held


class Pidfile:
    def __init__(self, path: str) -> None:
        self.path = path
        self.fd: int | None = None
        self.owner: int | None = None  # whose pid it holds (after the fork: the daemon)

    def acquire(self) -> None:
        """Open and lock the file; raise PidfileError if a live process holds it."""
        # O_NONBLOCK: a FIFO planted there must not hang the start.
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
        try:
            fd = os.open(self.path, flags, 0o644)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise PidfileError(
                    f"pidfile {self.path} is a symlink; refusing to follow it") from None
            default = " (the default with -d; name another with --pidfile FILE)" \
                if self.path == DEFAULT_PATH else ""
            raise PidfileError(f"cannot open pidfile {self.path}{default}: {e.strerror}") \
                from None
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            os.close(fd)
            raise PidfileError(f"pidfile {self.path} is {file_kind(mode)}, not a regular file; "
                               "remove it, or name another pidfile")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            other = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise PidfileError(
                f"pidfile {self.path} is held by running process {other}; "
                f"stop it first (kill -TERM {other}), or give each tree its own pidfile "
                "(--pidfile FILE or pidfile = ... in its config)", held=True
            ) from None
        os.ftruncate(fd, 0)  # a stale pid must not be read as ours meanwhile
        self.fd = fd
        self.owner = os.getpid()

    def write(self) -> None:
        """Record our pid; call after forking (the lock travels with the fd)."""
        assert self.fd is not None
        self.owner = os.getpid()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self.fd is None:
            return
        if os.getpid() == self.owner:  # never from a parent left behind by the fork
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
        os.close(self.fd)
        self.fd = None
