"""Filesystems mounted inside wpath that hold no data: /proc in a chroot, say.

rsync would copy a proc or sysfs tree (the kernel's view of this machine,
changing all the time, some files endless) to every node, and the watcher
would watch it. Such a mount is refused at start (and at each reload) unless
the user's excludes leave it out; one mounted later is left out of every run,
with a warning once (see README, Safety rules).

Parsing is pure; only read_mounts() touches /proc/self/mountinfo.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, NamedTuple

from .paths import inside

if TYPE_CHECKING:
    from .excludes import Excludes

log = logging.getLogger("inosync")

MOUNTINFO = "/proc/self/mountinfo"

# Filesystem types that are views of the kernel or of devices, never data
# (the "nodev" pseudo filesystems of /proc/filesystems). tmpfs and ramfs are
# data (a build tree in RAM), so are fuse, nfs and overlay: not listed.
PSEUDO = frozenset({
    "proc", "sysfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "debugfs", "tracefs",
    "securityfs", "pstore", "bpf", "configfs", "fusectl", "mqueue", "hugetlbfs",
    "binfmt_misc", "autofs", "efivarfs", "selinuxfs", "nsfs", "rpc_pipefs", "nfsd",
    "binder", "resctrl", "smackfs", "xenfs", "usbfs", "devfs",
})  # fmt: skip


class Mount(NamedTuple):
    point: str  # where it is mounted, as this process sees the tree
    fstype: str
    dev: str = ""  # MAJ:MIN of its filesystem
    root: str = ""  # the directory of that filesystem mounted here
    source: str = ""  # what is mounted: /dev/sdb1, a server's export...


def _unescape(field: bytes) -> str:
    """A mountinfo field: the kernel writes space, tab, newline and backslash as \\ooo."""
    return os.fsdecode(re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8) & 0xFF]),
                              field))


def parse_mountinfo(data: bytes) -> list[Mount]:
    """The mounts of /proc/self/mountinfo (proc(5)): "ID PARENT MAJ:MIN ROOT POINT
    OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER_OPTIONS" per line."""
    found = []
    for line in data.split(b"\n"):
        fields = line.split(b" ")
        if len(fields) < 7 or b"-" not in fields[6:]:
            continue  # not a mount line (the file's end, or a format we do not know)
        dash = fields.index(b"-", 6)
        if dash + 1 < len(fields):
            source = _unescape(fields[dash + 2]) if dash + 2 < len(fields) else ""
            found.append(Mount(_unescape(fields[4]), _unescape(fields[dash + 1]),
                               fields[2].decode("ascii", "replace"), _unescape(fields[3]),
                               source))
    return found


def read_mounts() -> list[Mount]:
    """This process's mounts; none if mountinfo cannot be read (no /proc)."""
    try:
        with open(MOUNTINFO, "rb") as f:
            return parse_mountinfo(f.read())
    except OSError:
        return []


def special_inside(wpath: str, mounts: Iterable[Mount], excludes: Excludes) -> list[Mount]:
    """The pseudo filesystems mounted at or below wpath (real path) that the
    excludes do not leave out, in mount order."""
    found = []
    for mount in mounts:
        if mount.fstype not in PSEUDO or not inside(mount.point, wpath):
            continue
        rel = os.path.relpath(mount.point, wpath)
        if rel != "." and excludes.excluded(rel, True):
            continue
        found.append(mount)
    return found


def problem(wpath: str, mounts: Iterable[Mount], excludes: Excludes) -> str | None:
    """Why wpath cannot be synced as it is mounted, or None."""
    special = special_inside(wpath, mounts, excludes)
    if not special:
        return None
    point, fstype = special[0].point, special[0].fstype
    if point == wpath:
        return f"wpath {wpath} is a {fstype} filesystem, not data to copy"
    rel = os.path.relpath(point, wpath)
    return (f"a {fstype} filesystem is mounted at {point}, inside wpath {wpath}: it is no "
            f"data to copy; exclude it in rexcludes ({'/' + rel + '/'!r}) or unmount it")


class SpecialMounts:
    """The pseudo filesystems mounted inside wpath while inosync runs: left out of
    every run, each said once (again if it is mounted anew)."""

    def __init__(self) -> None:
        self.said: set[Mount] = set()

    def left_out(self, wpath: str, excludes: Excludes) -> list[str]:
        """Their paths relative to wpath, read from mountinfo now."""
        special = [m for m in special_inside(wpath, read_mounts(), excludes) if m.point != wpath]
        for mount in special:
            if mount not in self.said:
                log.warning("a %s filesystem is mounted at %s, inside wpath: leaving it out of "
                            "every sync (exclude it in rexcludes, or unmount it; a restart "
                            "refuses it)", mount.fstype, mount.point)
        self.said = set(special)
        return [os.path.relpath(m.point, wpath) for m in special]
