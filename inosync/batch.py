"""Sets of changed paths, and how a set becomes the list one rsync run sends.

Paths are relative to ``wpath``, '/'-separated, with no leading slash; ``""``
is ``wpath`` itself. Names are ``str`` decoded with ``os.fsdecode`` so any
byte but NUL and '/' survives the round trip through ``os.fsencode``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .excludes import Excludes
from .replay import Move

ROOT = ""


def plural(count: int, noun: str) -> str:
    """"1 path", "2 paths": for the log."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


class PathSet:
    """Changed paths waiting to be sent, or "the whole tree" (``full``).

    It never holds more than ``limit`` paths: past that it collapses to
    ``full``, so an event storm costs bounded memory and one whole-tree rsync.

    It also holds the renames to replay on a node first (see replay.py),
    oldest first, and whether the next run must compare file contents
    (``checksum``): once a replay ran, rsync checks what it moved by content
    until a run gets through. Renames are only a shortcut, and only valid as
    an unbroken chain from what the node last had: once a set is told the
    chain broke (``drop_moves``), it takes no more of them until taken.

    ``start`` marks the whole-tree sync of a start or reload, the one that
    deletes under ``delete = 'startup'`` (deletepolicy.py): kept through
    merges and failed runs until a run of it gets through.

    ``since`` is a wall-clock time no later than the start of the oldest
    change it holds (None: empty, or no bound needed); 0.0 stands for "as
    old as can be": a sync whose need has no known start (the first one, a
    new tree, new settings). No node's checkpoint passes it (see
    Scheduler.checkpoint).

    ``seen`` is the monotonic time the oldest change it holds was read (or
    the need for a whole-tree sync arose), for the lag metric (metrics.py);
    None when it holds no change known as such (a periodic resync).

    ``deleted``: the directories among them seen deleted or renamed away
    (the watcher's IN_DELETE, IN_MOVED_FROM). Under delete = 'running' a run
    passes ``--force`` (a directory goes with all it holds) only when its
    batch has one: a new file where a node holds a directory of its own is
    then refused, as plain rsync without --delete refuses it.
    """

    __slots__ = ("paths", "full", "limit", "moves", "moves_dropped", "checksum", "start",
                 "since", "seen", "deleted")

    def __init__(self, limit: int = 100_000) -> None:
        self.paths: set[str] = set()
        self.full = False
        self.limit = limit
        self.moves: list[Move] = []
        self.moves_dropped = False
        self.checksum = False
        self.start = False
        self.since: float | None = None
        self.seen: float | None = None
        self.deleted: set[str] = set()

    @classmethod
    def of(cls, paths: Iterable[str]) -> PathSet:
        """A set of these paths (no limit: a view, never taken by a run)."""
        made = cls()
        made.paths = set(paths)
        return made

    def __bool__(self) -> bool:
        return self.full or bool(self.paths)

    def __len__(self) -> int:
        return len(self.paths)

    def add(self, path: str) -> None:
        if self.full:
            return
        if path == ROOT:
            self.set_full()
            return
        self.paths.add(path)
        if len(self.paths) > self.limit:
            self.set_full()

    def add_deleted(self, path: str) -> None:
        """A directory seen deleted (or renamed away): a changed path that is also one."""
        self.add(path)
        if not self.full:
            self.deleted.add(path)

    def set_full(self) -> None:
        self.full = True
        self.paths = set()
        self.deleted = set()

    def set_start(self) -> None:
        """The whole-tree sync of a start or a reload."""
        self.set_full()
        self.start = True

    def note_since(self, when: float | None) -> None:
        """What it holds began no later than when (a wall-clock time)."""
        if when is not None and (self.since is None or when < self.since):
            self.since = when

    def note_seen(self, when: float | None) -> None:
        """What it holds was read (or became needed) no later than when (monotonic)."""
        if when is not None and (self.seen is None or when < self.seen):
            self.seen = when

    def update(self, other: PathSet) -> None:
        """Add other, which is newer: its renames happened after ours."""
        self.add_moves(other.moves)
        if other.moves_dropped:
            self.drop_moves()
        self.checksum |= other.checksum
        self.start |= other.start
        self.note_since(other.since)
        self.note_seen(other.seen)
        if other.full:
            self.set_full()
        elif not self.full:
            self.paths |= other.paths
            self.deleted |= other.deleted
            if len(self.paths) > self.limit:
                self.set_full()

    def requeue(self, older: PathSet) -> None:
        """Put back a batch that did not get through. Its paths only: its renames
        may have been replayed (some, all), and are never replayed twice; the
        ones collected since assumed it was through, so they go too. What a
        replay may have moved is compared by content until a run gets through."""
        self.update(older)
        self.drop_moves()
        self.checksum |= bool(older.moves)

    def add_moves(self, moves: list[Move]) -> None:
        if self.moves_dropped:
            return
        self.moves = self.moves + moves
        if len(self.moves) > self.limit:  # memory stays bounded; rsync sends the data
            self.drop_moves()

    def drop_moves(self) -> None:
        """The chain of renames broke (a failed run, lost events, a reload): none
        of those collected, nor any more until the set is taken."""
        self.moves, self.moves_dropped = [], True

    def take(self) -> PathSet:
        """Return the contents as a new set and leave this one empty."""
        taken = PathSet(self.limit)
        taken.paths, taken.full, taken.moves = self.paths, self.full, self.moves
        taken.moves_dropped, taken.checksum = self.moves_dropped, self.checksum
        taken.start, taken.since, taken.seen = self.start, self.since, self.seen
        taken.deleted = self.deleted
        self.paths, self.full, self.moves = set(), False, []
        self.moves_dropped = self.checksum = self.start = False
        self.since = self.seen = None
        self.deleted = set()
        return taken

    def describe(self) -> str:
        return "full sync" if self.full else plural(len(self.paths), "path")


def collapse(paths: Iterable[str]) -> list[str]:
    """Drop every path that lies below another one in the set.

    rsync sends a listed directory recursively, so its descendants are
    redundant. Looking each ancestor up in the set costs O(depth) per path
    (a sort by components was the hot spot of a 10,000-file burst).
    """
    unique = set(paths)
    kept = [p for p in unique if not _has_ancestor_in(p, unique)]
    kept.sort()  # a stable list file, easy to read in -v logs
    return kept


def _has_ancestor_in(path: str, paths: set[str]) -> bool:
    cut = path.rfind("/")
    while cut > 0:
        if path[:cut] in paths:
            return True
        cut = path.rfind("/", 0, cut)
    return False


def is_real_dir(path: str) -> bool:
    """True for a directory that is not a symlink (rsync must not follow it)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def may_force(batch: PathSet, listed: Iterable[str], root: str) -> bool:
    """Whether a list run under delete = 'running' may take a node's directory
    with all it holds (--force): a directory was seen deleted in its batch, or
    a listed path stands for changes below a directory that is gone or now a
    file (sendable: its children's deletions were read before its own)."""
    if batch.deleted:
        return True
    return any(p not in batch.paths and p != "." and not is_real_dir(os.path.join(root, p))
               for p in listed)


def sendable(path: str, parent_is_dir: Callable[[str], bool]) -> str:
    """The path rsync can be given for a change at ``path``.

    If every ancestor is still a real directory, the path itself (missing
    paths are deleted by ``--delete-missing-args``). Otherwise the first
    ancestor that is not: listing a path below a non-directory makes rsync
    fail with an I/O error and skip *every* deletion of the run (exit 23).
    """
    parts = path.split("/")
    for depth in range(1, len(parts)):
        prefix = "/".join(parts[:depth])
        if not parent_is_dir(prefix):
            return prefix
    return path


def files_list(paths: Iterable[str], root: str, excludes: Excludes | None = None,
               keep_gone: bool = False) -> list[str]:
    """The collapsed list of paths to send for a batch of changes under root.

    keep_gone (runs without --delete): a path that is gone is listed even
    below a listed directory, so that --delete-missing-args deletes it.
    """
    cache: dict[str, bool] = {}

    def parent_is_dir(rel: str) -> bool:
        if rel not in cache:
            cache[rel] = is_real_dir(os.path.join(root, rel))
        return cache[rel]

    paths = set(paths)
    listed = collapse(paths)
    sent = [sendable(p, parent_is_dir) for p in listed]
    if excludes:
        sent = [p if not _excluded_now(p, root, excludes) else _parent(p) for p in sent]
    result = listed if sent == listed else collapse(sent)
    if keep_gone:
        gone = _gone_below(paths.difference(result), root, parent_is_dir)
        result = sorted({*result, *gone}) if gone else result
    if excludes:
        result = _unprotected_gone(result, root, excludes, keep_gone)
    return result


def _unprotected_gone(listed: list[str], root: str, excludes: Excludes,
                      keep_gone: bool) -> list[str]:
    """listed, without the gone paths that a directory of their name on a node
    would be excluded as (``cache/``).

    rsync matches a listed path that is missing as no directory, so such an
    exclude does not protect the node's directory of that name, and
    --delete-missing-args removes it with all it holds: a file ``cache`` made
    and removed on the source took each node's own ``cache/`` away. The
    parent is listed instead (with --delete, its deletion pass removes a file
    of that name and keeps the excluded directory); without --delete
    (keep_gone), or at the top level, nothing is: the file, if a node has it,
    stays until a whole-tree sync.
    """
    out: set[str] = set()
    for p in listed:
        if p != "." and excludes.excluded(p, True) and not os.path.lexists(
                os.path.join(root, p)):
            if "/" in p and not keep_gone:
                out.add(_parent(p))
            continue
        out.add(p)
    if out == set(listed):
        return listed
    return sorted(out) if keep_gone else collapse(out)  # keep_gone lists paths below others


def _gone_below(paths: Iterable[str], root: str, parent_is_dir: Callable[[str], bool]
                ) -> list[str]:
    """The paths that are gone while every directory above them is still a real
    directory (rsync can list them; a path below a gone one goes with it)."""
    return [p for p in paths if p != ROOT and not os.path.lexists(os.path.join(root, p))
            and sendable(p, parent_is_dir) == p]


def _excluded_now(path: str, root: str, excludes: Excludes) -> bool:
    """True if path exists and is excluded as what it is now.

    A file replaced by a directory of the same name that the excludes hide
    (``secret/`` matches directories only): rsync skips a listed name it
    excludes, so the node would keep the old file. Its parent directory is
    sent instead, whose deletion pass removes that file.
    """
    try:
        st = os.lstat(os.path.join(root, path))
    except OSError:
        return False
    return excludes.excluded(path, stat.S_ISDIR(st.st_mode))


def _parent(path: str) -> str:
    """The parent of path; a top-level name stays (the "." of its batch covers it)."""
    cut = path.rfind("/")
    return path if cut < 0 else path[:cut]


def top_level(paths: Iterable[str]) -> list[str]:
    """The listed names directly in wpath.

    Changing them changes wpath's own mtime on the node, but rsync only sets
    times on directories in its list and "." is never implied. So a batch
    with top-level names also lists "." and restricts its recursion to those
    names (see rsync.batch_argv).
    """
    return [p for p in paths if "/" not in p]


def encode_list(paths: Iterable[str]) -> bytes:
    """NUL-separated names for ``--from0 --files-from``: any byte but NUL works.

    Each name gets a "./" in front: rsync skips list lines that start with
    '#' or ';' as comments, even with --from0 (so "#drafts/post" would never
    be sent), and "./" changes nothing else.
    """
    return b"".join(b"./" + os.fsencode(p) + b"\0" if p != "." else b".\0" for p in paths)


def full_sync_above(threshold: int, tree_entries: int) -> int:
    """Most paths worth sending as a list; past it one whole-tree run is cheaper.

    Measured with rsync 3.5 on tmpfs (bench/threshold.py, 50,000 files): the
    list is faster up to 20% of the tree changed (0.80 s against 1.14 s) and
    slower from 30% (1.19 s against 1.04 s), so the cut is at a quarter of
    the entries seen. Small trees are cheap either way, so lists of up to
    1000 paths are always kept.
    """
    return min(threshold, max(1000, tree_entries // 4))


@dataclass(frozen=True)
class RunPlan:
    """What one run sends: the whole tree, or a list (and its root rules)."""

    full: bool
    list_data: bytes = b""  # for --files-from: NUL-separated, "." first when top is set
    top: tuple[str, ...] = ()  # names directly in wpath that the list holds
    what: str = "full sync"  # for the log
    # "." is listed and recurses into the top names only (rsync.root_rules):
    # with top, or "." alone (wpath's own change under delete = 'running').
    rooted: bool = False


def plan_run(full: bool, listed: list[str], full_above: int) -> RunPlan:
    """Plan a run from a batch: whole tree if it asks for one or lists too much.

    listed is files_list() of the batch (empty for a whole-tree batch).
    """
    if full or len(listed) > full_above:
        return RunPlan(full=True)
    top = [p for p in top_level(listed) if p != "."]
    named = [p for p in listed if p != "."]
    # "." listed alone (wpath's own mode or times, under delete = 'running') is
    # wpath itself, never the whole tree: a recursive "." under that policy's
    # --force replaced every node directory where the source has a file.
    rooted = bool(top) or "." in listed
    return RunPlan(False, encode_list(["."] + named if rooted else listed), tuple(top),
                   plural(len(listed), "path"), rooted)
