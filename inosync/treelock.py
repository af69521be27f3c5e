"""One inosync per tree, whatever the mode: a lock named by the tree itself.

Two instances of one tree fight: each full sync of one undoes what the other
sent meanwhile, a dry run overwrote the daemon's statusfile. The pidfile
cannot tell: the foreground takes none unless one is named, and two configs
may name one tree through other paths (a symlink, a bind mount). So every
instance that syncs or pretends to (foreground, ``-d``, ``-p``) holds an
flock on ``tree-DEV-INO.lock``, named by wpath's device and inode, in one
directory that no setting changes: ``/run/inosync.tree`` for root (not
``state_dir``: two configs of one tree with two state_dirs both ran; not
``/run/inosync``, which systemd's RuntimeDirectory= removes at stop while a
foreground instance may hold its lock there, nor ``/run/inosync-*``, which
``inosync@NAME.service`` may own), ``~/.inosync-tree`` for another user (the
home of the password database, as the replay's lock). That directory is
made 0700 and must be a real directory of ours closed to others, so no one
else can hold the lock or put anything at its name. Not an flock on the
wpath directory itself: anyone who can read wpath could hold that one, and
keep root's daemon from starting.

``-p`` writes nothing: it locks the file only if a daemon of the tree made
it before (one that runs made it), and never records its pid there.
The kernel drops an flock when its holder dies: a stale file never blocks.
"""

from __future__ import annotations

import errno
import fcntl
import os
import pwd
import stat

from .paths import Identity, private_dir, strict_modes
from .unverified import make_private_dir

ROOT_DIR = "/run/inosync.tree"  # root's; tmpfs: a reboot empties it
USER_DIR = ".inosync-tree"  # in the home of any other user


class TreeLockError(Exception):
    """One line: another instance holds the tree, or the lock cannot be taken."""

    def __init__(self, message: str, held: bool = False) -> None:
        super().__init__(message)
        self.held = held


def lock_dir() -> str:
    """The directory of the tree locks, the same for every config and mode."""
    if os.getuid() == 0:
        return ROOT_DIR
    try:
        home = pwd.getpwuid(os.getuid()).pw_dir
    except KeyError:
        home = ""
    if not home.startswith("/"):
        raise TreeLockError(f"uid {os.getuid()} has no home directory for its tree locks "
                            f"(~/{USER_DIR}; one inosync per tree)")
    return os.path.join(home, USER_DIR)


def lock_path(directory: str, tree: Identity) -> str:
    return os.path.join(directory, f"tree-{tree.dev}-{tree.ino}.lock")


class TreeLock:
    def __init__(self, directory: str | None = None, dry_run: bool = False) -> None:
        self.directory = directory  # None: lock_dir(), the one place (tests name another)
        self.dry_run = dry_run  # -p: opens an existing file only, writes nothing
        self.fd: int | None = None
        self.owner: int | None = None  # whose pid the file holds (after -d's fork: the daemon's)

    def acquire(self, tree: Identity, wpath: str) -> None:
        """Hold the lock of this tree; raise TreeLockError if another process holds it."""
        path = lock_path(self.directory or lock_dir(), tree)
        fd = self._open(path, wpath)
        if fd is None:
            return  # -p, and no daemon of this tree ever ran here: none runs now
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _holder(fd)
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise TreeLockError(f"cannot lock {path} (one inosync per tree): "
                                    f"{e.strerror}") from None
            raise TreeLockError(f"another inosync (pid {holder}) already watches {wpath}; "
                                f"stop it first (kill -TERM {holder})", held=True) from None
        self.release()  # the lock of the tree it watched before (a reload, a swap)
        self.fd = fd
        if not self.dry_run:
            os.ftruncate(fd, 0)  # no stale pid while we hold it
        self.write()

    def _open(self, path: str, wpath: str) -> int | None:
        directory = os.path.dirname(path)
        if self.dry_run:  # makes nothing; what it opens is ours all the same
            if os.path.lexists(directory):
                _private_dir(directory, make=False)
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        else:
            _private_dir(directory, make=True)
            flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(path, flags, 0o600)
        except FileNotFoundError:
            if self.dry_run:
                return None
            raise TreeLockError(f"cannot make {path} (one inosync per tree): "
                                f"{directory} is missing") from None
        except OSError as e:
            raise TreeLockError(f"cannot open {path} (one inosync per tree, {wpath}): "
                                f"{e.strerror}") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise TreeLockError(f"{path} is not a regular file (one inosync per tree); "
                                "remove it")
        return fd

    def write(self) -> None:
        """Record our pid, for the message another instance gets; after -d's fork."""
        if self.fd is None:
            return
        self.owner = os.getpid()
        if not self.dry_run:
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, f"{self.owner}\n".encode(), 0)

    def release(self) -> None:
        if self.fd is None:
            return
        if not self.dry_run and os.getpid() == self.owner:  # not a parent left by the fork
            os.ftruncate(self.fd, 0)
        os.close(self.fd)  # the lock goes with the last descriptor
        self.fd = None


def _private_dir(directory: str, make: bool) -> None:
    """The lock directory: trusted all the way down as sshd's StrictModes would,
    then (made 0700 if missing) a real directory of ours that no one else may enter."""
    why = strict_modes(directory, "locks trees in", directory=True)
    if not why:
        try:
            if make:
                make_private_dir(directory)
            if not private_dir(directory):
                st = os.lstat(directory)
                why = (f"not a directory of uid {os.getuid()} closed to others (owner "
                       f"{st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o}); fix with: "
                       f"rm -r {directory} (inosync makes it again)")
        except OSError as e:
            why = str(e.strerror or e)
    if why:
        raise TreeLockError(f"lock directory {directory}: {why} (it holds the lock that "
                            "allows one inosync per tree)")


def _holder(fd: int) -> str:
    """The pid that holds the lock on fd's file: the one it wrote (a daemon, after
    its fork), else the locker the kernel names in /proc/locks (-p writes none)."""
    written = os.pread(fd, 32, 0).decode(errors="replace").strip()
    if written.isdigit() and os.path.exists(f"/proc/{written}"):
        return written
    st = os.fstat(fd)
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 5 and fields[1] == "FLOCK" and fields[5] == key:
                    return fields[4]
    except OSError:
        pass
    return "?"
