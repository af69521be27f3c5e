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
import pwd
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


# A local node must not be or hold one of these (nor SYSTEM_DIRS): --delete
# would empty it of all that wpath does not hold.
SYSTEM_NODE_DIRS = (
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/opt",
    "/proc", "/root", "/run", "/sbin", "/sys", "/tmp", "/usr", "/var", *SYSTEM_DIRS,
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
    device is refused instead of hanging the start or a reload; and without
    following a symlink at the last step (ELOOP): pass the path resolved
    after strict_modes found every link on the way trusted.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY | os.O_NOFOLLOW)
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
        # By path first: a plain subdirectory is no bind mount, and is said so.
        via = "" if os.path.normpath(node) == where else " (through a symlink)"
        if where == wpath:
            return (f"local node {node} is or contains wpath {wpath}{via}: syncing into it "
                    "would delete the source") if via else f"local node {node} is wpath itself"
        if inside(where, wpath):
            return (f"local node {node} lies inside wpath {wpath}{via}: every batch would "
                    "copy the copy into itself again")
        if inside(wpath, where):
            return (f"local node {node} contains wpath {wpath}{via}: syncing into it would "
                    "delete the source and everything beside it")
        if wpath_id is not None and wpath_id in chain(where) and node_id != wpath_id:
            return (f"local node {node} lies inside wpath {wpath} (through a bind mount or "
                    "symlink): every batch would copy the copy into itself again")
        if node_id is not None and node_id in above_wpath:
            return (f"local node {node} is or contains wpath {wpath} (through a bind mount "
                    "or symlink): syncing into it would delete the source")
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


MAX_SYMLINKS = 40  # as the kernel follows at most 40 links in one lookup


def strict_modes(path: str, verb: str, writes: bool = False,
                 directory: bool = False) -> str | None:
    """Why what lies at the absolute path must not be trusted, or None.

    Like sshd's StrictModes (secure_filename) and sudo: every directory on
    the way (through every symlink, each link's own target included) must
    belong to root or us and not be writable by group or others; a sticky
    directory (/tmp) is no exception, since anyone may create a name there
    first. Every symlink on the way must be root's or ours. What lies at
    the end, if anything yet, must be a regular file (a directory with
    directory=True) of root or us, not writable by group or others; a file
    inosync writes (writes=True) must not be a symlink: it is opened with
    O_NOFOLLOW. A missing part is judged by the directories above it: it
    will be made by us. verb says what inosync does with it ("reads").
    """
    parts = [p for p in os.path.abspath(path).split("/") if p]
    here = "/"
    links = 0
    why = _directory_problem(here, os.lstat(here), verb)
    while parts and not why:
        part = parts.pop(0)
        if part in (".", ".."):
            here = os.path.dirname(here) if part == ".." else here
            continue
        there = os.path.join(here, part)
        try:
            st = os.lstat(there)
        except OSError:
            return None  # missing: made later, by us, in a directory found safe
        if stat.S_ISLNK(st.st_mode):
            links += 1
            why = _symlink_problem(there, st, writes and not parts, links)
            target = os.readlink(there)
            here = "/" if target.startswith("/") else here
            parts[:0] = [p for p in target.split("/") if p]
        elif not parts:
            why = _end_problem(there, st, verb, directory)
        elif stat.S_ISDIR(st.st_mode):
            why = _directory_problem(there, st, verb)
            here = there
        else:
            return None  # not a directory: opening it fails, and says so
    return why


def _who() -> str:
    return "root" if os.getuid() == 0 else f"uid {os.getuid()}"


def _trusted(st: os.stat_result) -> bool:
    return st.st_uid in (0, os.getuid())


def _directory_problem(folder: str, st: os.stat_result, verb: str) -> str | None:
    mode = stat.S_IMODE(st.st_mode)
    if not _trusted(st):
        return (f"directory {folder} is owned by uid {st.st_uid} (mode {mode:04o}), who "
                f"could replace what {_who()} {verb}; fix with: chown root {folder}, or "
                "move the file to a directory root owns")
    if not mode & 0o022:
        return None
    if mode & stat.S_ISVTX:
        return (f"directory {folder} is writable by others (owner uid {st.st_uid}, mode "
                f"{mode:04o}); sticky is no exception: anyone could make the name first, "
                f"and {_who()} {verb} it by name; fix with: move it to a directory only "
                f"{_who()} can write (such as /etc/inosync, /var/log, /run or /var/lib/inosync)")
    # Only its group (Ubuntu's /var/log is root:syslog 0775): moving out may be the fix.
    elsewhere = "" if mode & 0o002 else (f", or move the file to a directory only {_who()} "
                                         "can write (such as a new /var/log/inosync)")
    return (f"directory {folder} is writable by group or others (owner uid {st.st_uid}, mode "
            f"{mode:04o}); anyone who can write there could replace what {_who()} {verb}; "
            f"fix with: chmod go-w {folder}{elsewhere}")


def _symlink_problem(link: str, st: os.stat_result, last: bool, links: int) -> str | None:
    if not _trusted(st):
        return (f"symlink {link} is owned by uid {st.st_uid}, who decides where it leads; "
                f"fix with: name the path it should lead to instead, or remove it and make "
                f"it again as {_who()}")
    if last:
        return (f"{link} is a symlink; inosync does not follow one to a file it writes; "
                f"fix with: name the file itself ({os.path.realpath(link)})")
    if links > MAX_SYMLINKS:
        return f"{link}: too many levels of symlinks"
    return None


def _end_problem(path: str, st: os.stat_result, verb: str, directory: bool) -> str | None:
    mode = stat.S_IMODE(st.st_mode)
    wanted = stat.S_ISDIR if directory else stat.S_ISREG
    if not wanted(st.st_mode):
        return (f"{path} is {file_kind(st.st_mode)}, not a "
                f"{'directory' if directory else 'regular file'}; fix with: remove it, "
                "or name another path")
    if not _trusted(st):
        return (f"{path} is owned by uid {st.st_uid} (mode {mode:04o}), not by {_who()}, "
                f"who {verb} it; fix with: chown root {path}")
    if mode & 0o022:
        return (f"{path} is writable by group or others (owner uid {st.st_uid}, mode "
                f"{mode:04o}); anyone who can write it decides what {_who()} {verb}; "
                f"fix with: chmod go-w {path}")
    return None


def file_kind(mode: int) -> str:
    """What a file of this mode is, for messages: "a FIFO", "a directory"..."""
    kinds = ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a directory"),
             (stat.S_ISLNK, "a symlink"), (stat.S_ISFIFO, "a FIFO"),
             (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"))
    return next((name for test, name in kinds if test(mode)), "a special file")


def system_inside(top: str, dirs: tuple[str, ...] = SYSTEM_DIRS) -> str | None:
    """One of dirs (a system directory) inside or equal to top (real), or None."""
    top = real(top)
    for d in dirs:
        if os.path.isdir(d) and inside(real(d), top):
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


class Resolved(NamedTuple):
    """A path as the kernel resolves it, and whether that may be trusted."""

    path: str  # absolute, symlinks resolved; a part that does not exist stays as is
    problem: str | None  # why it must not be followed (None: it may)


def resolve(path: str) -> Resolved:
    """path resolved one name at a time, as the kernel does, following a symlink
    only if no one but root or us decides where it leads.

    A symlink is trusted like rsync 3.5 and sshd's StrictModes would: it
    must be root's or ours, and so must the directory holding it and every
    one above (and none writable by group or others, unless sticky), or
    someone else could replace it, also between our lstat and readlink. The
    links a link leads through are checked the same way: the whole chain,
    not only the path as written. The path comes from this walk itself, so
    what was checked is what it names.
    """
    todo = _names(path if path.startswith("/") else os.path.join(os.getcwd(), path))
    todo.reverse()  # a stack: the next name last
    # The directories walked down, each with why it or one above is not trusted
    # (why, fix), or None.
    here: list[tuple[str, tuple[str, str] | None]] = [("/", _untrusted_dir("/"))]
    links = 0
    while todo:
        name = todo.pop()
        if name == "..":
            if len(here) > 1:
                here.pop()
            continue
        folder, folder_why = here[-1]
        full = os.path.join(folder, name)
        try:
            st = os.lstat(full)
        except OSError:  # missing (or unreadable): the rest stays as written
            return Resolved(os.path.normpath(os.path.join(full, *reversed(todo))), None)
        if stat.S_ISLNK(st.st_mode):
            links += 1
            why = _untrusted_link(full, st, folder_why, links)
            if why:
                return Resolved(full, why)
            try:
                target = os.readlink(full)
            except OSError as e:  # gone meanwhile: by root's or our hand (see above)
                return Resolved(full, f"{full} cannot be read ({e.strerror})")
            if target.startswith("/"):
                del here[1:]
            todo.extend(reversed(_names(target)))
        elif stat.S_ISDIR(st.st_mode):
            here.append((full, folder_why or _untrusted_dir(full, st)))
        else:  # a file: nothing below it; the caller finds it is not a directory
            return Resolved(os.path.normpath(os.path.join(full, *reversed(todo))), None)
    return Resolved(here[-1][0], None)


def _names(path: str) -> list[str]:
    return [n for n in path.split("/") if n not in ("", ".")]


def _untrusted_dir(path: str, st: os.stat_result | None = None) -> tuple[str, str] | None:
    """Why someone but root or us could change the entries of directory path, and
    the fix; or None."""
    try:
        st = st or os.lstat(path)
    except OSError as e:
        return f"{path} cannot be checked ({e.strerror})", f"check {path}"
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid not in (0, os.getuid()):
        return f"{path} belongs to uid {st.st_uid}{_user(st.st_uid)}", f"chown root {path}"
    if mode & 0o022 and not mode & stat.S_ISVTX:  # sticky: only the owner renames an entry
        return f"{path} is writable by others (mode {mode:04o})", f"chmod go-w {path}"
    return None


def _untrusted_link(link: str, st: os.stat_result, folder: tuple[str, str] | None,
                    count: int) -> str | None:
    """Why the symlink at link must not be followed, or None."""
    if count > MAX_SYMLINKS:
        return f"it leads through more than {MAX_SYMLINKS} symlinks (a loop at {link}?)"
    if st.st_uid not in (0, os.getuid()):
        return (f"it leads through {link}, a symlink owned by uid {st.st_uid}"
                f"{_user(st.st_uid)}, not by root: that user decides where it leads "
                f"(fix: chown -h root {link}, or name the real directory)")
    if folder:
        return (f"it leads through the symlink {link}, but {folder[0]}: another user could "
                f"replace the link (fix: {folder[1]}, or name the real directory)")
    return None


def _user(uid: int) -> str:
    try:
        return f" ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return ""
