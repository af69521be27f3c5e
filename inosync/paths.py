"""Where inosync's paths may lie, and which directory wpath really is.

inosync runs as root with ``--delete``: a node that overlaps ``wpath`` wipes
the source or grows copies of itself forever, and a daemon file inside
``wpath`` makes every write of its own a change to sync. These checks
compare *resolved* paths (symlinks followed), so no spelling hides an
overlap. They run at load, on reload, and again whenever ``wpath`` comes to
mean another directory.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Iterable
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from .excludes import Excludes

# Trees the system writes to all the time: a wpath holding one of them would
# sync forever (and /proc, /sys, /dev cannot be copied anyway). Allowed only
# with allow_system_wpath = True.
SYSTEM_DIRS = (
    "/proc", "/sys", "/dev", "/run", "/tmp", "/var/tmp", "/var/log",
    "/var/run", "/var/lib", "/var/cache", "/var/spool",
)  # fmt: skip


class Identity(NamedTuple):
    """A directory's identity: the same (device, inode) is the same directory."""

    dev: int
    ino: int

    def __str__(self) -> str:
        return f"device {self.dev}, inode {self.ino}"


def identity(path: str) -> Identity | None:
    """The identity of the real directory at path (None: missing, not a directory)."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode):
        return None
    return Identity(st.st_dev, st.st_ino)


def read_regular_file(path: str) -> tuple[bytes, os.stat_result]:
    """The contents and status of a regular file; OSError for anything else.

    Opened without blocking and checked before reading, so a FIFO or a
    device is refused instead of hanging the start or a reload.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        return f.read(), st


def has_content(wpath: str, excludes: Excludes) -> bool:
    """True if wpath holds something that would be synced.

    A fresh or wrongly mounted filesystem holds only lost+found, and
    entries the excludes hide are never sent: neither counts. OSError (wpath
    vanished meanwhile) counts as empty.
    """
    try:
        with os.scandir(wpath) as entries:
            for entry in entries:
                if entry.name == "lost+found":
                    continue
                if not excludes.excluded(entry.name, entry.is_dir(follow_symlinks=False)):
                    return True
    except OSError:
        return False
    return False


def real(path: str) -> str:
    """path with every symlink resolved; the part that does not exist yet stays as is."""
    return os.path.realpath(path)


def inside(path: str, top: str) -> bool:
    """True if path is top or lies below it (both resolved, absolute)."""
    return path == top or top == "/" or path.startswith(top + "/")


def overlap(a: str, b: str) -> bool:
    return inside(a, b) or inside(b, a)


def chain(path: str) -> list[Identity]:
    """Identities of path's nearest existing directory and of every one above it.

    Bind mounts give one directory several paths; identities see through
    them where comparing strings cannot.
    """
    found: list[Identity] = []
    here = real(path)
    while True:
        ident = identity(here)
        if ident is not None:
            found.append(ident)
        if here == "/":
            return found
        here = os.path.dirname(here)


def node_overlap(wpath: str, nodes: Iterable[str]) -> str | None:
    """Why these local nodes cannot be used with wpath (resolved), or None.

    Compared as resolved paths and as identities (device, inode), so
    neither a symlink nor a bind mount hides an overlap.
    """
    seen: list[str] = []
    wpath_id = identity(wpath)
    above_wpath = chain(wpath)
    for node in nodes:
        where = real(node)
        node_id = identity(where)
        if wpath_id is not None and wpath_id in chain(where) and node_id != wpath_id:
            return (f"local node {node} lies inside wpath {wpath} (through a bind mount or "
                    "symlink): every batch would copy the copy into itself again")
        if node_id is not None and node_id in above_wpath:
            return (f"local node {node} is or contains wpath {wpath} (through a bind mount "
                    "or symlink): syncing into it would delete the source")
        if where == wpath:
            return f"local node {node} is wpath itself"
        if inside(where, wpath):
            return (f"local node {node} lies inside wpath {wpath}: every batch would copy "
                    "the copy into itself again")
        if inside(wpath, where):
            return (f"local node {node} contains wpath {wpath}: syncing into it would "
                    "delete the source and everything beside it")
        for other in seen:
            if overlap(where, other):
                return (f"local nodes {other} and {node} overlap: each sync to one "
                        "would delete the other's copy")
        seen.append(where)
    return None


def own_file_inside(wpath: str, name: str, path: str, excludes: Excludes) -> str | None:
    """Why the daemon's file (what it is, its path) may not lie where it is, or None.

    A file the daemon writes inside wpath would be a change to sync after
    every sync, forever. Its directory is fine when the user's excludes
    exclude it: then the watcher never sees those writes and rsync never
    sends them (temporary names beside the file included).
    """
    folder = real(os.path.dirname(path))
    if not inside(folder, wpath):
        return None
    rel = os.path.relpath(folder, wpath)
    if rel != "." and excludes.excluded(rel, True):
        return None
    return (f"{name} {path} lies inside wpath {wpath}: its own writes would be synced "
            "again and again; move it out of wpath, or exclude its directory in rexcludes")


def file_inside(path: str, top: str) -> bool:
    """True if the file at path (made there later, perhaps) lies inside directory top,
    compared resolved and by identity, so neither a symlink nor a bind mount hides it."""
    folder, where = real(os.path.dirname(path)), real(top)
    if inside(folder, where):
        return True
    top_id = identity(where)
    return top_id is not None and top_id in chain(folder)


def foreign_symlink(path: str) -> str | None:
    """The first symlink on path owned by someone but root or us, or None.

    Whoever owns such a link decides which tree the daemon (root, often)
    reads and pushes to every node.
    """
    here = "/"
    for part in [p for p in path.split("/") if p]:
        here = os.path.join(here, part)
        try:
            st = os.lstat(here)
        except OSError:
            return None
        if stat.S_ISLNK(st.st_mode) and st.st_uid not in (0, os.getuid()):
            return f"{here} (a symlink owned by uid {st.st_uid})"
        if stat.S_ISLNK(st.st_mode):
            here = os.path.realpath(here)
    return None


def others_may_change(path: str) -> str | None:
    """Why someone but root or us could remove, rename or replace what lies at path
    (or will: a missing end is judged by the directories above it), or None.

    Like sshd's StrictModes: each directory on the way (symlinks resolved) must
    belong to root or us and not be writable by group or others; a sticky one
    (/tmp) is fine for a path below it that is ours, since no one else may
    rename or remove our entries there. A symlink on the way must be ours or
    root's (foreign_symlink).
    """
    foreign = foreign_symlink(path)
    if foreign:
        return f"{foreign} leads to it"
    here = "/"
    for part in [p for p in os.path.realpath(path).split("/") if p] + [""]:
        try:
            st = os.lstat(here)
        except OSError:
            return None  # made later, by us
        mode = stat.S_IMODE(st.st_mode)
        if st.st_uid not in (0, os.getuid()):
            return f"{here} belongs to uid {st.st_uid} (chown root {here})"
        if mode & 0o022 and not (mode & stat.S_ISVTX and part):  # sticky: ours below stay
            return f"{here} is writable by others (mode {mode:04o}; chmod go-w {here})"
        here = os.path.join(here, part)
    return None


def system_inside(wpath: str) -> str | None:
    """A system directory inside (or equal to) wpath, or None."""
    for d in SYSTEM_DIRS:
        if os.path.isdir(d) and inside(real(d), wpath):
            return real(d)
    return None


def program(name: str) -> str | None:
    """Where a program is, looked up as rsync and ssh do (a bare name on PATH),
    if it is an executable regular file there; else None."""
    path = name if "/" in name else shutil.which(name)
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return path if stat.S_ISREG(st.st_mode) and os.access(path, os.X_OK) else None


def private_dir(path: str) -> bool:
    """A real directory (not a symlink), ours, that nobody else may enter."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077
