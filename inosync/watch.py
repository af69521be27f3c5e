"""Watching wpath with inotify, through pyinotify 0.9.6, with its traps contained.

pyinotify is frozen (last release 2015). We use its WatchManager for the
inotify instance and its ctypes binding, and its flag table; we do not use
its Notifier or its watch bookkeeping, because that is where the traps are:

* ``Notifier.read_events`` decodes names strictly: one non-UTF-8 file name
  raises and the whole read batch is lost.  -> ``parse_events`` uses
  ``os.fsdecode`` (surrogateescape), so every byte string round-trips.
* the binding encodes paths strictly in ``add_watch``: a non-UTF-8 directory
  name crashes the caller.  -> ``_WatchManager`` encodes with ``os.fsencode``.
* ``WatchManager.get_wd()`` scans every watch, and ``auto_add`` calls it for
  every entry of every new directory (quadratic on big trees).  -> we keep
  path->wd and wd->path dicts.
* ``auto_add`` follows symlinks to directories outside the tree.  -> we add
  watches ourselves, never following symlinks (scandir + IN_DONT_FOLLOW).
* a directory moved out of the tree keeps its sub-watches, which then
  report paths that no longer exist.  -> a directory's IN_MOVED_FROM is
  paired with its IN_MOVED_TO (same cookie) in the same read: within the
  tree its watches are renamed; unpaired at the end of the read (it left the
  tree) every watch below it is dropped.
* it attaches its own stderr handler to the "pyinotify" logger, which would
  write into a daemon's closed stderr.  -> removed at import.
* on Python 3.12+ it imports ``asyncore``, which only the ``pyasyncore``
  package provides any more (a dependency in pyproject.toml).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import struct
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

try:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # asyncore on 3.11
        import pyinotify
except ImportError as e:  # pragma: no cover - depends on the interpreter
    raise ImportError(
        f"cannot import pyinotify ({e}); on Python 3.12+ it also needs the "
        "pyasyncore package: pip install pyinotify==0.9.6 pyasyncore"
    ) from e

from .batch import is_real_dir
from .excludes import Excludes
from .kept import at_or_below
from .paths import Identity, Resolved, has_content, identity, resolve
from .replay import Move
from .tempnames import looks_temporary, temporary_for

# pyinotify's own stderr handler would print into a daemon's /dev/null (or a
# closed fd) and duplicate our log lines in the foreground.
_pyinotify_log = logging.getLogger("pyinotify")
_pyinotify_log.handlers.clear()
_pyinotify_log.propagate = True
_pyinotify_log.setLevel(logging.WARNING)

log = logging.getLogger("inosync")

_F = pyinotify.EventsCodes.ALL_FLAGS
IN_ACCESS = _F["IN_ACCESS"]
IN_ATTRIB = _F["IN_ATTRIB"]
IN_CREATE = _F["IN_CREATE"]
IN_DELETE = _F["IN_DELETE"]
IN_DELETE_SELF = _F["IN_DELETE_SELF"]
IN_MOVE_SELF = _F["IN_MOVE_SELF"]
IN_MOVED_FROM = _F["IN_MOVED_FROM"]
IN_MOVED_TO = _F["IN_MOVED_TO"]
IN_UNMOUNT = _F["IN_UNMOUNT"]
IN_Q_OVERFLOW = _F["IN_Q_OVERFLOW"]
IN_IGNORED = _F["IN_IGNORED"]
IN_ISDIR = _F["IN_ISDIR"]
IN_ONLYDIR = _F["IN_ONLYDIR"]
IN_DONT_FOLLOW = _F["IN_DONT_FOLLOW"]
IN_EXCL_UNLINK = _F["IN_EXCL_UNLINK"]
IN_MASK_ADD = _F["IN_MASK_ADD"]

# Names a user may put in emask: the change events (not watch options).
EVENT_FLAGS = {
    name: value
    for name, value in _F.items()
    if name not in ("IN_DONT_FOLLOW", "IN_MASK_ADD", "IN_ONESHOT", "IN_ONLYDIR",
                    "IN_EXCL_UNLINK", "IN_ISDIR", "IN_IGNORED", "IN_Q_OVERFLOW")
}  # fmt: skip

# What we always watch for, whatever emask says: new and vanished directories
# (to keep watches right) and the fate of wpath itself.
_BOOKKEEPING = IN_CREATE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF
# Never follow a symlink, only ever watch directories, and stop reporting
# events for unlinked files still open somewhere.
_WATCH_OPTIONS = IN_ONLYDIR | IN_DONT_FOLLOW | IN_EXCL_UNLINK
# The directories above wpath: a name on the way to wpath created, deleted or
# renamed there (``mv site.new site``) may make wpath another directory.
# Followed through symlinks, as the configured path is; IN_MASK_ADD so that
# a directory watched for both reasons keeps every bit.
_ANCESTOR_MASK = (IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF
                  | IN_MOVE_SELF | IN_ONLYDIR | IN_MASK_ADD)

_NOTHING_EXCLUDED = Excludes(())
_HEADER = struct.Struct("iIII")  # wd, mask, cookie, length of the name


class WatchLimitError(OSError):
    """inotify ran out of watches (ENOSPC): fs.inotify.max_user_watches."""


class _WatchManager(pyinotify.WatchManager):
    """pyinotify's WatchManager, used for its inotify fd and binding only."""

    def __init__(self) -> None:
        super().__init__()
        self._add_watch = self._inotify_wrapper._libc.inotify_add_watch  # hot at start-up

    def watch(self, path: str, mask: int) -> int:
        # The binding's own add_watch encodes strictly; fsencode takes back
        # the surrogate escapes that fsdecode made of non-UTF-8 bytes.
        wd = self._add_watch(self._fd, os.fsencode(path), mask)
        if wd < 0:
            code = self._inotify_wrapper.get_errno()
            raise OSError(code, os.strerror(code), path)
        return wd

    def unwatch(self, wd: int) -> None:
        self._inotify_wrapper._libc.inotify_rm_watch(self._fd, wd)  # EINVAL if already gone

    def renew(self) -> None:
        """Replace the inotify instance by a fresh one under the same fd number.

        Drops every watch and the kernel queue at once; pollers registered
        on the fd keep working.
        """
        fresh = self._inotify_wrapper.inotify_init()
        if fresh < 0:
            code = self._inotify_wrapper.get_errno()
            raise OSError(code, os.strerror(code))
        os.dup2(fresh, self._fd, inheritable=False)
        os.close(fresh)


def parse_events(buf: bytes) -> list[tuple[int, int, int, str]]:
    """Split what read(2) returned on an inotify fd into (wd, mask, cookie, name)."""
    events = []
    pos, end = 0, len(buf)
    while pos + _HEADER.size <= end:
        wd, mask, cookie, length = _HEADER.unpack_from(buf, pos)
        pos += _HEADER.size
        name = buf[pos : pos + length].rstrip(b"\0")
        pos += length
        events.append((wd, mask, cookie, os.fsdecode(name)))
    return events


def event_mask(names: Iterable[str]) -> int:
    mask = 0
    for name in names:
        mask |= EVENT_FLAGS[name]
    return mask


def join(base: str, name: str) -> str:
    return f"{base}/{name}" if base else name


def ancestors(*paths: str) -> dict[str, set[str]]:
    """Each directory above these absolute paths -> the names in it that lead to them."""
    found: dict[str, set[str]] = {}
    for path in paths:
        parts = [p for p in path.split("/") if p]
        for depth, name in enumerate(parts):
            found.setdefault("/" + "/".join(parts[:depth]), set()).add(name)
    return found


def temporary_move(old: str, new: str) -> bool:
    """Whether the rename of a file from old to new involves a name of rsync's
    temporary shape: never replayed (see tempnames.py)."""
    old_dir, _, old_name = old.rpartition("/")
    new_dir, _, new_name = new.rpartition("/")
    if looks_temporary(old_name) or looks_temporary(new_name):
        return True
    dir_len = len(os.fsencode(new_dir)) + 1 if new_dir else 0
    return old_dir == new_dir and temporary_for(old_name, new_name, dir_len)


@dataclass
class WatchEvents:
    """What one read() found."""

    paths: list[str]  # changed, relative to root ("" is root itself)
    overflowed: bool = False  # the kernel dropped events: rescan
    root_changed: bool = False  # root, or a directory above it, moved or vanished
    unwatched: set[str] = field(default_factory=set)  # directories left without a watch
    # Renames within root, in order: (old path, new path). Both paths are in
    # paths too; replaying these on a node first only saves sending data.
    moves: list[Move] = field(default_factory=list)
    # Events of files that may be rsync's temporary files (tempnames.py), in
    # order: (path, gone). Not in paths: the scheduler holds them back.
    temps: list[tuple[str, bool]] = field(default_factory=list)
    # Such files found by a walk (a directory made or moved in, a rewatch, a
    # rescan), with their ctimes: a run may have read them before this read.
    found: list[tuple[str, float]] = field(default_factory=list)
    # Directories seen deleted or renamed away (IN_DELETE, IN_MOVED_FROM with
    # IN_ISDIR), in paths too: under delete = 'running' a run may take a
    # node's directory with all it holds only when its batch has one
    # (deletepolicy.py). A file's deletion never needs that.
    deleted: list[str] = field(default_factory=list)


class Watcher:
    """All directories under root, watched; ``read()`` returns changed paths.

    Paths are relative to root ("" is root). The object is a file: poll its
    fileno() for readability, then call read().
    """

    def __init__(self, root: str, emask: Iterable[str], excludes: Excludes,
                 configured_root: str = "") -> None:
        self.root = root  # the real directory, symlinks resolved
        self.configured_root = configured_root or root  # the path as configured
        self.identity: Identity | None = None  # the root's, from start() on
        self.sync_mask = event_mask(emask)
        self.watch_mask = self.sync_mask | _BOOKKEEPING | _WATCH_OPTIONS
        self.excludes = excludes
        self._wm = _WatchManager()
        self.fd = self._wm.get_fd()
        self._set_nonblocking()
        self.path_of: dict[int, str] = {}
        self.wd_of: dict[str, int] = {}
        self.unwatched: set[str] = set()  # no watch left for them, since the last read()
        # Mount points found empty after an unmount: their copy on the nodes
        # is kept, so no run sends or deletes anything there until their
        # filesystem is mounted again (see kept.py); the daemon records them
        # in state_dir, for the next start (keptstore.py). A reload's new
        # watcher takes them over.
        self.kept: set[str] = set()
        self.on_kept: Callable[[], None] | None = None  # records them, before we say so
        self._kept_said: set[str] = set()  # kept places whose changes were said to be kept
        self.entries = 0  # names seen while scanning: a size estimate of the tree
        # Files of rsync's temporary shape found by a walk (path, ctime): a
        # relay's upstream may be writing them. Those of the start's walk are
        # taken by the daemon (take_found_temps); later ones are reported by
        # the next read() (WatchEvents.found).
        self.found_temps: list[tuple[str, float]] = []
        self.ancestor_names: dict[int, set[str]] = {}  # wd of a directory above root
        self._moved_from: dict[int, str] = {}  # cookie -> old path, until its IN_MOVED_TO
        # The same for directories, all emasks: cookie -> (path, the watches on it
        # and below, by path). Taken out of wd_of at once (a directory made at
        # once under that name gets its own), kept in path_of until we know
        # where it went: renamed within the tree, or dropped at the read's end.
        self._dir_moved_from: dict[int, tuple[str, dict[str, int]]] = {}
        self._moves: list[Move] = []
        self._temps: list[tuple[str, bool]] = []
        self._deleted: list[str] = []
        # A rename is reported as one only if both its events mark paths changed.
        self._track_moves = IN_MOVED_FROM & self.sync_mask and IN_MOVED_TO & self.sync_mask
        # Reported by the next read(), then reset:
        self.overflowed = False
        # Something happened to root or above it: it may be gone, or another
        # directory may now be at its path. The daemon checks root_is_same().
        self.root_changed = False
        self._strict = True  # ENOSPC raises while starting, is logged later
        self.started_at: float | None = None  # wall clock, when start() began
        # Told how many directories are watched so far, every progress_every
        # seconds while a tree is being watched (minutes, on a big one).
        self.on_progress: Callable[[int], None] | None = None
        self.progress_every = 0.0
        self._progress_at = 0.0

    def fileno(self) -> int:
        return self.fd

    def _set_nonblocking(self) -> None:
        # The loop must never block in read(); a fresh instance needs it again.
        flags = fcntl.fcntl(self.fd, fcntl.F_GETFL)
        fcntl.fcntl(self.fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)
        os.set_inheritable(self.fd, False)  # rsync children must not hold it

    def close(self) -> None:
        if self.fd >= 0:  # once: the fd number may belong to someone else afterwards
            self._wm.close()
            self.fd = -1

    def __enter__(self) -> Watcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __len__(self) -> int:
        return len(self.wd_of)

    def start(self) -> int:
        """Watch the whole tree; raises WatchLimitError if inotify runs out,
        OSError if root is not a directory."""
        # Every change from now on is seen: by an event, or by the walk that
        # follows (for a directory whose watch comes later). For checkpoints.
        self.started_at = time.time()
        self.identity = identity(self.root)
        if self.identity is None:
            raise FileNotFoundError(errno.ENOENT, "not a directory", self.root)
        self._strict = True
        try:
            self.watch_ancestors()
            self.add_tree("")
        finally:
            self._strict = False
        return len(self.wd_of)

    def root_is_same(self) -> bool:
        """True if the configured path still leads to the directory we watch."""
        return (resolve(self.configured_root) == Resolved(self.root, None)  # no stranger's
                and identity(self.root) == self.identity)  # symlink on the way, either

    def rescan(self, root: str | None = None) -> None:
        """Start over with a fresh inotify instance (after a queue overflow),
        or on a new root directory (wpath now means another one)."""
        self._wm.renew()
        self._set_nonblocking()
        self.path_of.clear()
        self.wd_of.clear()
        self.ancestor_names.clear()
        self.unwatched.clear()
        self.entries = 0
        self.overflowed = self.root_changed = False
        self._moved_from.clear()
        self._dir_moved_from.clear()
        self._moves = []
        self._temps = []
        self._deleted = []
        if root is not None:
            self.root = root
            self.kept.clear()  # they were in the old tree
            self._kept_said.clear()
        self.identity = identity(self.root)
        self.watch_ancestors()
        self.add_tree("")

    def watch_ancestors(self) -> None:
        """Watch the directories above root, on both its configured and its real path."""
        for wd in self.ancestor_names:
            if wd not in self.path_of:
                self._wm.unwatch(wd)
        self.ancestor_names.clear()
        for folder, names in ancestors(self.configured_root, self.root).items():
            try:
                wd = self._wm.watch(folder, _ANCESTOR_MASK)
            except OSError as e:
                if e.errno == errno.ENOSPC and self._strict:
                    raise WatchLimitError(e.errno, e.strerror, folder) from None
                log.warning("cannot watch %s (above wpath): %s; a swap of wpath there "
                            "goes unnoticed until the next rescan", folder, e.strerror)
                continue
            self.ancestor_names.setdefault(wd, set()).update(names)

    def add_tree(self, top: str) -> None:
        """Watch top and every directory below it that is not excluded."""
        excludes = self.excludes
        stack = [(top, os.path.join(self.root, top))]
        self._progress_at = time.monotonic() + self.progress_every
        while stack:
            rel, path = stack.pop()
            if not self._add(rel, path):
                continue
            if self.on_progress is not None and not len(self.wd_of) % 256:
                self._report_progress()
            try:
                with os.scandir(path) as entries:
                    for entry in entries:
                        self.entries += 1
                        if entry.is_dir(follow_symlinks=False):
                            child = join(rel, entry.name)
                            if not (excludes and excludes.excluded(child, True)):
                                stack.append((child, entry.path))
                        elif entry.name[0] == "." and looks_temporary(entry.name):
                            self._found_temp(join(rel, entry.name), entry)
            except OSError:
                continue  # vanished meanwhile: its own events tell the rest

    def _found_temp(self, path: str, entry: os.DirEntry[str]) -> None:
        if self.excludes and self.excludes.excluded(path, False):
            return
        try:
            self.found_temps.append((path, entry.stat(follow_symlinks=False).st_ctime))
        except OSError:
            pass  # gone meanwhile

    def take_found_temps(self) -> list[tuple[str, float]]:
        """The temporary-shaped files the walks found since the last call."""
        taken, self.found_temps = self.found_temps, []
        return taken

    def _report_progress(self) -> None:
        now = time.monotonic()
        if now >= self._progress_at and self.on_progress is not None:
            self._progress_at = now + self.progress_every
            self.on_progress(len(self.wd_of))

    def _add(self, rel: str, path: str) -> bool:
        try:
            wd = self._wm.watch(path, self.watch_mask)
        except OSError as e:
            if e.errno == errno.ENOSPC:
                if self._strict:
                    raise WatchLimitError(e.errno, e.strerror, rel) from None
                self.unwatched.add(rel)
            elif e.errno not in (errno.ENOENT, errno.ENOTDIR):
                log.warning("cannot watch %s: %s", path, e.strerror)
            return False
        old = self.path_of.get(wd)
        if old is not None and old != rel and self.wd_of.get(old) == wd:
            del self.wd_of[old]  # same inode seen under a new name
        self.path_of[wd] = rel
        self.wd_of[rel] = wd
        return True

    def _detach(self, top: str) -> dict[str, int]:
        """The watches on top and below, by path, taken out of wd_of: the path is
        free for a directory made there now (path_of still names them)."""
        prefix = top + "/"
        return {rel: self.wd_of.pop(rel)
                for rel in [p for p in self.wd_of if p == top or p.startswith(prefix)]}

    def rename_tree(self, old: str, new: str, wds: dict[str, int]) -> None:
        """The watched directory old (and all below: wds, detached when it moved
        away) is now called new.

        Events already queued on its watches (renames into it, say) then
        carry the new paths. add_tree(new) follows anyway, for directories
        that the excludes hid under the old name but not under the new one.
        """
        prefix = old + "/"
        for rel, wd in wds.items():
            moved = new + rel[len(old):]
            self.wd_of[moved] = wd
            self.path_of[wd] = moved
        self.unwatched = {new + p[len(old):] if p == old or p.startswith(prefix) else p
                          for p in self.unwatched}

    def drop_tree(self, top: str, wds: dict[str, int]) -> None:
        """Forget these watches, of top and below (it left this place), but any
        that was seen again since under another name (moved back in)."""
        prefix = top + "/"
        for rel, wd in wds.items():
            if self.path_of.get(wd) == rel:
                del self.path_of[wd]
                self._wm.unwatch(wd)
        self.unwatched = {p for p in self.unwatched if not (p == top or p.startswith(prefix))}

    def read(self) -> WatchEvents:
        """Read every pending event; return what happened since the last read."""
        changed: list[str] = []
        while True:
            try:
                buf = os.read(self.fd, 1 << 20)
            except BlockingIOError:
                break
            if not buf:
                break
            for event in parse_events(buf):
                self._handle(*event, changed)
        events = WatchEvents(changed, self.overflowed, self.root_changed, self.take_unwatched(),
                             self._moves, self._temps, self.take_found_temps(), self._deleted)
        self.overflowed = self.root_changed = False
        self._moves, self._temps, self._deleted = [], [], []
        self._moved_from.clear()  # a rename split across reads is sent as data, not replayed
        for old, wds in self._dir_moved_from.values():
            self.drop_tree(old, wds)  # it left the tree (or went where we do not watch)
        self._dir_moved_from.clear()
        return events

    def take_unwatched(self) -> set[str]:
        """Directories that got no watch (the limit) since the last call."""
        taken, self.unwatched = self.unwatched, set()
        return taken

    def rewatch(self, paths: Iterable[str]) -> None:
        """Try again to watch these trees (the limit may have been raised)."""
        for path in paths:
            self.add_tree(path)

    def _handle(self, wd: int, mask: int, cookie: int, name: str, changed: list[str]) -> None:
        if mask & IN_Q_OVERFLOW:
            self.overflowed = True
            return
        names = self.ancestor_names.get(wd)
        if names is not None and wd not in self.path_of:
            if not name or name in names:
                self.root_changed = True  # the way to root changed, or a directory on it
            if mask & IN_IGNORED:
                del self.ancestor_names[wd]
            return
        base = self.path_of.get(wd)
        if base is None:
            return  # a watch we already dropped; its events are stale
        if mask & IN_IGNORED:
            self._watch_ended(wd, base, changed)
            return
        if not name:
            self._handle_self(base, mask, changed)
            return
        path = join(base, name)
        is_dir = bool(mask & IN_ISDIR)
        if self.excludes and self.excludes.excluded(path, is_dir):
            return
        if self.kept and at_or_below(path, self.kept):
            self._kept_change(path)
            return
        if self._track_moves and mask & (IN_MOVED_FROM | IN_MOVED_TO):
            self._pair_move(mask, cookie, path, is_dir)
        if is_dir and mask & IN_MOVED_FROM:
            # Its watches stay until we know where it went: a rename within
            # the tree keeps them (renamed), one out of it drops them.
            self._dir_moved_from[cookie] = (path, self._detach(path))
        old_dir = self._dir_moved_from.pop(cookie, None) if is_dir and mask & IN_MOVED_TO else None
        if old_dir is not None:
            self.rename_tree(old_dir[0], path, old_dir[1])
        if is_dir and mask & (IN_CREATE | IN_MOVED_TO):
            # Files made before the new watches existed produce no events;
            # syncing the directory itself (recursively) covers them.
            self.add_tree(path)
        if mask & self.sync_mask:
            if not is_dir and looks_temporary(name):
                self._temps.append((path, bool(mask & (IN_DELETE | IN_MOVED_FROM))))
            else:
                changed.append(path)
                if is_dir and mask & (IN_DELETE | IN_MOVED_FROM):
                    self._deleted.append(path)

    def _pair_move(self, mask: int, cookie: int, path: str, is_dir: bool) -> None:
        """Pair IN_MOVED_FROM and IN_MOVED_TO by cookie: a rename within root.

        A rename out of root, out of an excluded name or into one has only
        one half here (the other is excluded or outside): no pair, no replay.
        Nor is a rename from or to a name of rsync's temporary shape (a relay's
        upstream landing a file): it is a change of the new name and the end
        of the old one, which the scheduler judges (temphold.py).
        """
        if mask & IN_MOVED_FROM:
            self._moved_from[cookie] = path
        else:
            old = self._moved_from.pop(cookie, None)
            if old is not None and not (not is_dir and temporary_move(old, path)):
                self._moves.append(Move(old, path, is_dir))

    def _watch_ended(self, wd: int, base: str, changed: list[str]) -> None:
        """The kernel dropped a watch (IN_IGNORED) that we did not remove.

        The directory was deleted (its parent reported that), or the
        filesystem it was on was unmounted: then what is visible at that
        path now (the directory underneath) has no watch, and nothing says
        it changed. Watch it, so later writes there replicate, and sync it
        if it holds anything. An empty mount point is not synced: that
        would delete the unmounted filesystem's copy on every node (as for
        an empty wpath, an unmounted disk is the likely cause); later writes
        there are sent one by one, which deletes nothing else.
        """
        del self.path_of[wd]
        if self.wd_of.get(base) != wd:
            return  # the path has a newer watch already
        del self.wd_of[base]
        path = os.path.join(self.root, base)
        if base == "":
            self.root_changed = True
        elif is_real_dir(path):
            self.add_tree(base)
            if has_content(path, _NOTHING_EXCLUDED):
                changed.append(base)
            else:
                self.kept.add(base)
                if self.on_kept is not None:
                    self.on_kept()
                log.warning("%s lost its watch (unmounted?) and is empty now: its copy on "
                            "the nodes is kept; nothing there is sent or deleted until its "
                            "filesystem is mounted there again, also across restarts", path)

    def _kept_change(self, path: str) -> None:
        """A change at or below a kept mount point: not sent (said once per place)."""
        top = next(t for t in sorted(self.kept) if path == t or path.startswith(t + "/"))
        if top not in self._kept_said:
            self._kept_said.add(top)
            log.warning("%s changed, but %s is a kept mount point: changes there are not "
                        "sent until inosync restarts with its filesystem mounted there again "
                        "(a restart without it keeps it)", os.path.join(self.root, path),
                        os.path.join(self.root, top))

    def _handle_self(self, base: str, mask: int, changed: list[str]) -> None:
        """An event about a watched directory itself (no name)."""
        if base != "":
            return  # its parent's watch reports the same change with a name
        if mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT):
            self.root_changed = True
        elif mask & self.sync_mask & IN_ATTRIB:
            changed.append("")  # wpath's own mode or times: sync everything
