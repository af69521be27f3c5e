"""One walk of the tree at start: what changed since a node's checkpoint.

Every entry is lstat()ed (symlinks are never followed) and judged by its
ctime, which the kernel sets on every change of the inode (data, mode,
owner, times, links, a rename) and which no user can set; mtime can be.

What the walk finds, for a node checkpointed at C (the scan looks from
C - MARGIN, see checkpoint.py):

* a file, symlink or other non-directory with a newer ctime: that path;
* a directory with a newer ctime: the directory, sent recursively with the
  deletions inside it. Its entries changed (created, deleted, renamed in or
  out) or it was itself created or renamed in; in both cases what lies below
  may keep old ctimes (a renamed-in subtree), so only its whole subtree is
  certain. A deletion or a rename away shows only there: in the directory
  that lost the name;
* wpath itself with a newer ctime: a full sync (its direct entries changed).

Excluded paths and kept mount points are left out, as the watcher does.
Pure but for the walk: changed() works on what walk() returned.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Set
from dataclasses import dataclass, field

from .excludes import Excludes
from .kept import at_or_below


@dataclass
class Walk:
    """The tree's ctimes (nanoseconds) at or after the oldest threshold asked."""

    root_ctime: int
    # (relative path, ctime, is a directory) of each entry that is new enough
    entries: list[tuple[str, int, bool]] = field(default_factory=list)
    seen: int = 0  # entries looked at: a size estimate of the tree
    unreadable: list[str] = field(default_factory=list)  # directories it could not list


def walk(root: str, since_ns: int, excludes: Excludes | None = None,
         kept: Set[str] = frozenset()) -> Walk:
    """Every entry below root with a ctime at or after since_ns; OSError if
    root itself cannot be read."""
    found = Walk(os.lstat(root).st_ctime_ns)
    stack = [("", root)]
    while stack:
        rel, path = stack.pop()
        try:
            with os.scandir(path) as entries:
                listed = list(entries)
        except OSError:
            if rel:
                found.unreadable.append(rel)
                continue
            raise
        for entry in listed:
            found.seen += 1
            child = f"{rel}/{entry.name}" if rel else entry.name
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue  # vanished meanwhile: its parent's ctime or its events tell
            is_dir = stat.S_ISDIR(st.st_mode)
            if (excludes and excludes.excluded(child, is_dir)) or (kept and at_or_below(child,
                                                                                       kept)):
                continue
            if st.st_ctime_ns >= since_ns:
                found.entries.append((child, st.st_ctime_ns, is_dir))
            if is_dir:
                stack.append((child, entry.path))
    return found


def changed(found: Walk, since_ns: int) -> list[str] | None:
    """The paths to send to a node checkpointed at since_ns (in ns, margin taken
    off already), each a path rsync sends whole; None: wpath itself changed,
    so only a full sync can do."""
    if found.root_ctime >= since_ns:
        return None
    # A directory it could not list may hide any change: sent whole (rsync says why
    # it cannot either, and leaves it as it is on the node).
    return [rel for rel, ctime, _ in found.entries if ctime >= since_ns] + found.unreadable
