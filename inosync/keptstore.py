"""Kept mount points across restarts, and fstab mount points not mounted at start.

A kept place (kept.py) protects the nodes' copy of an unmounted filesystem.
Held in memory only, a crash or a restart forgot it, and the start's full
sync emptied the copy: the very loss it exists to prevent. So the kept
places of a tree are recorded in ``state_dir`` as soon as they change (a
place found unmounted is recorded before any run: the watcher finds it, the
loop records it, and runs start later), in one file per tree named by
wpath's real path (not its device and inode as the tree lock is: device
numbers may change across a reboot, and this record must outlive one).

At start, and on a reload to another tree, each recorded place is decided
again: it is released (synced as any directory) only once a filesystem is
mounted there again and holds something; else it stays kept, said with a
warning. Files written into the bare mount point meanwhile do not release
it: that is how a careless application would wipe the copy. A mount point
that /etc/fstab lists inside wpath is kept at start by the same rule, unless
a filesystem holding data is mounted there: a boot where the disk failed to
mount leaves the bare directory (whatever was written there since), or an
empty one mounted on it (a bind mount of the failed disk's mount point).

If that filesystem is gone for good, the operator removes the file (the
warning names it) while inosync is stopped.

Pure: parse_fstab, fstab_inside, fstab_above, encode/decode, decide. The rest reads or writes files.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from collections.abc import Callable, Iterable, Set
from dataclasses import dataclass, field

from .excludes import Excludes
from .mounts import _unescape, read_mounts
from .paths import has_content, inside
from .statefile import Once, replace, sync_dir
from .unverified import make_private_dir

log = logging.getLogger("inosync")

FSTAB = "/etc/fstab"  # a module constant: tests point it elsewhere
PREFIX, SUFFIX = "wpath-", ".kept"
_NOTHING = Excludes(())  # a mount point's content, whatever rexcludes say


class KeptError(Exception):
    """One line: the record of kept places cannot be read; no run may start."""


# ---- pure


def parse_fstab(data: bytes) -> list[str]:
    """The mount points of an fstab(5): field 2 of each line, octal escapes
    (\\040 for a space) undone; comments, blank lines and non-paths (swap,
    none) left out."""
    points = []
    for line in data.split(b"\n"):
        fields = line.split()
        if len(fields) < 2 or fields[0].startswith(b"#"):
            continue
        point = _unescape(fields[1])
        if point.startswith("/"):
            points.append(os.path.normpath(point))
    return points


def fstab_inside(points: Iterable[str], roots: Iterable[str]) -> set[str]:
    """The mount points strictly inside one of roots (wpath's real and its
    configured path), relative to it."""
    found = set()
    for root in roots:
        for point in points:
            if point != root and inside(point, root):
                found.add(os.path.relpath(point, root))
    return found


def fstab_above(points: Iterable[str], wpath: str) -> str | None:
    """The nearest of points at or above wpath, other than "/" (all real paths):
    where wpath's own filesystem should be mounted, if fstab says so."""
    above = [p for p in points if p != "/" and inside(wpath, p)]
    return max(above, key=len, default=None)


def valid(rel: str) -> bool:
    """A path relative to wpath, '/'-separated, below it: no '', '.', '..' part."""
    return bool(rel) and "\0" not in rel and all(
        part not in ("", ".", "..") for part in rel.split("/"))


def encode(root: str, kept: Set[str]) -> bytes:
    """The record: wpath, then each kept place, each ended by a NUL (a name may
    hold a newline, never a NUL)."""
    return b"".join(os.fsencode(p) + b"\0" for p in (root, *sorted(kept)))


def decode(data: bytes, root: str) -> set[str]:
    """The kept places of root in a record; ValueError if it is not one."""
    if not data.endswith(b"\0"):
        raise ValueError("not ended by a NUL (cut short?)")
    fields = [os.fsdecode(f) for f in data[:-1].split(b"\0")]
    if fields[0] != root:
        raise ValueError(f"written for wpath {fields[0]!r}, not {root!r}")
    bad = [p for p in fields[1:] if not valid(p)]
    if bad:
        raise ValueError(f"not a path inside wpath: {bad[0]!r}")
    return set(fields[1:])


@dataclass(frozen=True)
class Place:
    """What is at a kept place now."""

    mounted: bool  # a filesystem is mounted there
    content: bool  # it holds something (lost+found does not count)
    exists: bool = True


@dataclass
class Decision:
    kept: set[str] = field(default_factory=set)
    released: set[str] = field(default_factory=set)  # mounted again, with data
    recorded: dict[str, Place] = field(default_factory=dict)  # kept from the record
    fstab: dict[str, Place] = field(default_factory=dict)  # kept: in fstab, no data mounted


def decide(recorded: Set[str], in_fstab: Set[str], look: Callable[[str], Place]) -> Decision:
    """Which places stay kept: a recorded one, or an fstab mount point, until a
    filesystem holding data is mounted there (again). An empty one mounted on an
    fstab mount point may be a bind mount of a failed disk's bare mount point."""
    d = Decision()
    for rel in sorted(recorded):
        place = look(rel)
        if place.mounted and place.content:
            d.released.add(rel)
        else:
            d.recorded[rel] = place
            d.kept.add(rel)
    for rel in sorted(in_fstab - d.kept - d.released):
        place = look(rel)
        if not (place.mounted and place.content):
            d.fstab[rel] = place
            d.kept.add(rel)
    return d


def why_kept(place: Place) -> str:
    if not place.exists:
        return "it is missing"
    if place.mounted:
        return "a filesystem is mounted there, but it is empty"
    if place.content:
        return "nothing is mounted there; what was written there meanwhile is not sent"
    return "it is empty, nothing is mounted there"


def report(d: Decision, root: str, since: str, record: str) -> None:
    """Say what decide() found: each kept place once, each released one."""
    for rel in sorted(d.released):
        log.info("%s is mounted again: no longer kept, synced to the nodes from now on",
                 os.path.join(root, rel))
    for rel, place in sorted(d.recorded.items()):
        log.warning("%s is kept %s (%s): its copy on the nodes stays, and nothing there is "
                    "sent or deleted, until its filesystem is mounted there again; if it is "
                    "gone for good, stop inosync, remove %s and start it",
                    os.path.join(root, rel), since, why_kept(place), record)
    for rel, place in sorted(d.fstab.items()):
        log.warning("%s is a mount point in %s, but %s: its copy on the nodes is kept, and "
                    "nothing there is sent or deleted, until its filesystem is mounted there "
                    "again (also across restarts)", os.path.join(root, rel), FSTAB,
                    "the filesystem mounted there is empty" if place.mounted else
                    "nothing is mounted there")


# ---- the edges


def read_fstab() -> list[str]:
    """The mount points FSTAB lists; none if it cannot be read (said)."""
    try:
        with open(FSTAB, "rb") as f:
            return parse_fstab(f.read())
    except FileNotFoundError:
        return []
    except OSError as e:
        log.warning("cannot read %s (%s): mount points it lists inside wpath are not "
                    "kept at start unless found unmounted before", FSTAB, e.strerror)
        return []


def looker(root: str) -> Callable[[str], Place]:
    """What is at each place below root now, mountinfo read once."""
    points = {m.point for m in read_mounts()}

    def look(rel: str) -> Place:
        path = os.path.join(root, rel)
        try:
            st = os.lstat(path)
        except OSError:
            return Place(mounted=False, content=False, exists=False)
        if not stat.S_ISDIR(st.st_mode):
            return Place(mounted=False, content=True)  # a file or symlink there now
        try:
            parent = os.lstat(os.path.dirname(path)).st_dev
        except OSError:
            parent = st.st_dev
        mounted = path in points or st.st_dev != parent
        return Place(mounted=mounted, content=has_content(path, _NOTHING))

    return look


class KeptFile:
    """The record of a tree's kept places in state_dir."""

    def __init__(self, state_dir: str) -> None:
        self.dir = state_dir
        self.once = Once()

    def path(self, root: str) -> str:
        digest = hashlib.sha256(os.fsencode(root)).hexdigest()[:24]
        return os.path.join(self.dir, f"{PREFIX}{digest}{SUFFIX}")

    def load(self, root: str) -> set[str]:
        """The places recorded for root; KeptError if the record is there but
        cannot be read: then no run may start (it could delete a kept copy)."""
        path = self.path(root)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            return set()
        except OSError as e:
            raise KeptError(f"cannot read {path} (the kept mount points of {root}): "
                            f"{e.strerror}") from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise KeptError(f"{path} (the kept mount points of {root}) is not a "
                                "regular file; remove it")
            with os.fdopen(os.dup(fd), "rb") as f:
                data = f.read()
        finally:
            os.close(fd)
        try:
            return decode(data, root)
        except ValueError as e:
            raise KeptError(f"{path} (the kept mount points of {root}) is damaged: {e}; "
                            "remove it only if no filesystem inside wpath is unmounted (the "
                            "start's full sync would delete its copy on the nodes)") from None

    def save(self, root: str, kept: Set[str]) -> bool:
        """Record kept for root, atomically and durably (none: no file); False if
        that cannot be (said once)."""
        path = self.path(root)
        try:
            make_private_dir(self.dir)
            if kept:
                replace(path, encode(root, kept))
            else:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    return self._ok()
            sync_dir(self.dir)
        except OSError as e:
            self.once.fail("cannot record the kept mount points of %s in state_dir %s (%s): "
                           "a restart now would delete their copies on the nodes", root,
                           self.dir, e.strerror or e)
            return False
        return self._ok()

    def _ok(self) -> bool:
        self.once.ok("state_dir %s can be written again: kept mount points are recorded",
                     self.dir)
        return True

