"""Kept mount points: where the nodes keep the copy of an unmounted filesystem.

A filesystem mounted inside wpath, unmounted, leaves an empty directory (an
unmounted disk, most likely: see watch.py). Deleting what the nodes hold
there would be the worst failure of all, so the place is kept: from then on
until its filesystem is mounted there again, also across restarts (the
daemon records it in state_dir: keptstore.py), no run sends or deletes
anything at or below it (rsync.kept_pattern, first of all rules), no change
there starts a run, and no rename at, into, out of or above it is replayed
on a node.

Pure functions over '/'-separated paths relative to wpath. There are only
ever a few kept places, so a scan of them all is cheap.
"""

from __future__ import annotations

from collections.abc import Iterable, Set


def at_or_below(path: str, kept: Set[str]) -> bool:
    """True if path is a kept place or lies below one."""
    return any(path == top or path.startswith(top + "/") for top in kept)


def touches(path: str, kept: Set[str]) -> bool:
    """True if path is a kept place, lies below one, or holds one."""
    prefix = path + "/"
    return at_or_below(path, kept) or any(top.startswith(prefix) for top in kept)


def before_renames(kept: Set[str], renames: Iterable[tuple[str, str]]) -> set[str]:
    """kept, and where each kept place was before these renames (oldest first):
    a node where only some of them were replayed holds it at one of those.

    A directory renamed with a live mount inside, then unmounted before the
    batch went out: the node still holds the copy under the old name, which
    the batch's rsync would delete as a path gone from the source.
    """
    backwards = list(renames)[::-1]
    found = set(kept)
    for path in kept:
        for old, new in backwards:  # where path was before each rename
            if path == new or path.startswith(new + "/"):
                path = old + path[len(new):]
                found.add(path)
    return found
