"""Per-node checkpoints in state_dir: restarts that cost one local scan.

A node's checkpoint is a wall-clock time C such that every change of the
tree made before C is on that node. The scheduler knows it while it runs
(Scheduler.checkpoint): the start of the oldest change not yet delivered
there, or of the oldest read of the watcher that may still hold one. The
daemon records it here at a steady pace and at a clean stop; a node that
fails keeps the point where its oldest undelivered change began.

At the next start the record is used only if it was written for this very
situation: the same wpath directory (device and inode), the node spelt the
same way, the same settings that decide what a node holds (excludes,
rsync_args, the kept mount points, the filesystems mounted inside wpath),
the same inosync version, a clock that did not go backwards, and not older
than MAX_AGE (a crash leaves the last one written). Then one local scan
(scan.py) finds what changed since C - MARGIN and that alone is sent; on any
doubt the node gets a full sync, and the start line says why.

Pure: Record, encode/decode, fingerprint, refuse. Store reads and writes files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field

from . import __version__
from .mounts import Mount
from .paths import Identity, inside
from .rsync import Kind, node_kind, normal_form
from .statefile import Once, replace, sync_dir
from .unverified import make_private_dir

log = logging.getLogger("inosync")

FORMAT = 1
PREFIX, SUFFIX = "node-", ".checkpoint"
# Seconds before the checkpoint that the scan looks back too: timestamps of
# coarse filesystems (whole seconds, FAT's two), the kernel's coarse clock.
MARGIN = 5.0
MAX_AGE = 7 * 86400.0  # older than this (a crash long ago, a copy restored): full sync
SAVE_EVERY = 60.0  # seconds between writes while running (and one at a clean stop)
IDLE_SAVE_EVERY = 3600.0  # the same for a node that got nothing since its last record
# The events without which some change would never be sent while running:
# with fewer, a checkpoint would claim changes the node never got.
NEEDED_EVENTS = frozenset({"IN_CLOSE_WRITE", "IN_CREATE", "IN_DELETE", "IN_MOVED_FROM",
                           "IN_MOVED_TO", "IN_MODIFY", "IN_ATTRIB"})


@dataclass(frozen=True)
class Record:
    """What one checkpoint file holds."""

    node: str  # the node exactly as configured
    wpath: str  # the real path of the tree
    dev: int
    ino: int
    settings: Mapping[str, str]  # part -> fingerprint (see fingerprint())
    version: str
    synced_to: float  # every change made before this wall-clock time is on the node
    written_at: float  # the wall clock when this was written
    last_full: float | None = None  # when the last whole-tree sync there ended (wall)
    format: int = field(default=FORMAT)
    # The boot and its CLOCK_BOOTTIME when written: a wall clock set back since
    # (ahead at the write, set right while stopped) shows against it (clock_lag).
    boot_id: str = ""
    boottime: float | None = None
    # A local node's directory, "device:inode" (node_identity): another disk
    # mounted there, or the directory removed and made again, holds none of it.
    node_id: str = ""


def encode(record: Record) -> bytes:
    data = asdict(record)
    data["settings"] = dict(record.settings)
    # ensure_ascii: a name that is not UTF-8 (surrogate escapes) round-trips as \udcxx
    return (json.dumps(data, sort_keys=True, ensure_ascii=True) + "\n").encode()


def decode(data: bytes) -> Record:
    """The record in data; ValueError if it is not one."""
    try:
        raw = json.loads(data.decode("ascii"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"not a checkpoint ({e})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ValueError(f"format {raw.get('format') if isinstance(raw, dict) else '?'}, "
                         f"not {FORMAT}")
    try:
        record = Record(**raw)
    except TypeError as e:
        raise ValueError(f"fields do not match ({e})") from None
    numbers = (record.dev, record.ino, record.synced_to, record.written_at)
    if not all(isinstance(n, (int, float)) and not isinstance(n, bool) for n in numbers) \
            or not isinstance(record.settings, dict) \
            or not all(isinstance(v, str) for v in (record.node, record.wpath, record.version)) \
            or not (record.last_full is None or isinstance(record.last_full, (int, float))) \
            or not isinstance(record.boot_id, str) or not isinstance(record.node_id, str) \
            or not (record.boottime is None or isinstance(record.boottime, (int, float))):
        raise ValueError("a field has the wrong type")
    return record


def _digest(value: object) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def mounts_inside(wpath: str, mounts: Iterable[Mount]) -> list[list[str]]:
    """The filesystems mounted at or below wpath (real path), relative to it: another
    disk mounted there shows files whose ctimes say nothing about the nodes."""
    return sorted([os.path.relpath(m.point, wpath), m.dev, m.root, m.fstype, m.source]
                  for m in mounts if inside(m.point, wpath))


def fingerprint(excludes: Iterable[str], rsync_args: Iterable[str], kept: Iterable[str],
                mounts: list[list[str]], delete: object = True,
                reach: tuple[str, Iterable[str]] | None = None) -> dict[str, str]:
    """One digest per setting that changes what a node should hold. reach: the rsync
    program and the ssh command, which decide which host and what writes there (the
    same spelling may reach another host); in a start's records, not in a reload's
    comparison, which treats them itself (reloadplan.py)."""
    parts = {
        "delete": _digest(delete),
        "excludes (rexcludes, rexcludes_from)": _digest(list(excludes)),
        "rsync_args": _digest(list(rsync_args)),
        "kept mount points": _digest(sorted(kept)),
        "filesystems mounted inside wpath": _digest(mounts),
    }
    if reach is not None:
        parts["rsync program and ssh command"] = _digest([reach[0], list(reach[1])])
    return parts


@dataclass(frozen=True)
class Here:
    """What a record must match at this start."""

    node: str
    wpath: str
    identity: Identity
    settings: Mapping[str, str]
    wall: float  # the clock now
    version: str = __version__
    boot: tuple[str, float] | None = None  # boot_clock() at the same moment as wall
    node_id: str = ""  # node_identity(node) now


def node_identity(node: str) -> str:
    """A local node's directory as "device:inode" ("" for a remote node, or a local
    one that is not a directory now). A remote node's data lost while stopped is
    not seen: see the man page (--full)."""
    if node_kind(node) is not Kind.LOCAL:
        return ""
    try:
        st = os.stat(node)
    except OSError:
        return ""
    return f"{st.st_dev}:{st.st_ino}" if stat.S_ISDIR(st.st_mode) else ""


def boot_clock() -> tuple[str, float] | None:
    """This boot's id and its CLOCK_BOOTTIME (which no one sets), or None."""
    try:
        with open("/proc/sys/kernel/random/boot_id", "rb") as f:
            boot_id = f.read(64).decode("ascii", "replace").strip()
        return boot_id, time.clock_gettime(time.CLOCK_BOOTTIME)
    except (OSError, AttributeError):
        return None


def clock_lag(record: Record, here: Here) -> float:
    """Seconds the wall clock was set back since record was written (0.0 if not,
    or not known: another boot). Changes made since then can carry ctimes up
    to that much older than the checkpoint: the scan looks back that much more.
    A clock set back and forward again by as much leaves no trace here."""
    if here.boot is None or record.boottime is None or record.boot_id != here.boot[0]:
        return 0.0
    lag = (here.boot[1] - record.boottime) - (here.wall - record.written_at)
    return max(0.0, lag)


def refuse(record: Record | None, here: Here) -> str | None:
    """Why this record cannot say what the node holds (the reason for a full
    sync), or None: the node may start from it."""
    if record is None:
        return "no checkpoint in state_dir (first start, or never synced whole)"
    if record.wpath != here.wpath or (record.dev, record.ino) != (here.identity.dev,
                                                                  here.identity.ino):
        return (f"wpath is another directory than the checkpoint's ({here.identity}; was "
                f"{record.wpath}, device {record.dev} inode {record.ino})")
    if record.node != here.node:
        return f"the node is spelt otherwise than in the checkpoint ({record.node!r})"
    if node_kind(here.node) is Kind.LOCAL and (not here.node_id
                                               or record.node_id != here.node_id):
        return ("the node's directory is not the one the checkpoint was written for "
                f"({here.node_id or 'none'}, was {record.node_id or 'not recorded'}): "
                "made again or another disk mounted there since")
    if record.version != here.version:
        return f"the checkpoint was written by inosync {record.version}"
    changed = sorted(k for k in set(record.settings) | set(here.settings)
                     if record.settings.get(k) != here.settings.get(k))
    if changed:
        return f"changed since the checkpoint: {', '.join(changed)}"
    if here.wall < record.written_at or here.wall < record.synced_to:
        return (f"the clock went backwards since the checkpoint was written "
                f"({_when(record.written_at)})")
    if here.wall - record.synced_to > MAX_AGE:
        return (f"the checkpoint is older than {MAX_AGE / 86400:g} days "
                f"({_when(record.synced_to)})")
    return None


def _when(wall: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(wall))


# Filesystems whose ctimes another machine's clock sets (a server, a VM host):
# a checkpoint in this machine's time says nothing about them.
CLOCK_ELSEWHERE = frozenset({"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "ceph", "glusterfs",
                             "lustre", "afs", "gpfs", "virtiofs", "ocfs2", "gfs2"})


def clock_elsewhere(wpath: str, mounts: Iterable[Mount]) -> str | None:
    """Why the ctimes in wpath (real path) cannot be compared with this clock,
    or None: wpath's filesystem, or one mounted inside it, is a network one."""
    listed = list(mounts)
    mine = None  # the mount wpath is on: the deepest, the last one there (mounted over)
    for m in listed:
        if inside(wpath, m.point) and (mine is None or len(m.point) >= len(mine.point)):
            mine = m
    for m in ([mine] if mine else []) + [m for m in listed if inside(m.point, wpath)]:
        why = _untrusted_ctimes(m.fstype)
        if why:
            where = "wpath is" if m is mine else f"{m.point} is"
            return f"{where} on {m.fstype}: {why}"
    return None


# Filesystems that keep no change time of their own: FAT and exFAT store none,
# and the kernel reads a file's ctime back as its mtime, which any writer sets
# (touch -d, cp -p, rsync -t, tar): new data under an old mtime looks unchanged.
CTIME_IS_MTIME = frozenset({"vfat", "msdos", "exfat", "umsdos"})


def _untrusted_ctimes(fstype: str) -> str | None:
    """Why the ctimes of this filesystem type say nothing of a checkpoint, or None."""
    if fstype in CLOCK_ELSEWHERE:
        return "its ctimes come from another machine's clock, not comparable with a checkpoint"
    if fstype in ("fuse", "fuseblk") or fstype.startswith("fuse."):
        return ("its ctimes come from a FUSE server (or another machine's clock), not the "
                "kernel: not comparable with a checkpoint")
    if fstype in CTIME_IS_MTIME:
        return ("it keeps no change time: its ctimes are its mtimes, which any writer can "
                "set back (cp -p, rsync -t, tar)")
    return None


def events_problem(emask: Iterable[str]) -> str | None:
    """Why checkpoints cannot be kept with this emask, or None."""
    missing = sorted(NEEDED_EVENTS - set(emask))
    if missing:
        return f"emask leaves out {', '.join(missing)}: some changes are never sent while running"
    return None


class CheckpointError(Exception):
    """A checkpoint file that is there but cannot be read: a full sync."""


class Store:
    """The checkpoint files of one tree in state_dir, one per node."""

    def __init__(self, state_dir: str) -> None:
        self.dir = state_dir
        self.once = Once()

    def path(self, node: str) -> str:
        """Named by the node spelt one way, not by the tree: a node holds one tree,
        and the record of the last one synced there replaces (or, voided, removes)
        any other tree's, which the node no longer holds (a rollback of wpath to
        an older directory must not resume from that directory's old record).
        Another spelling of the same node finds the file, and is told apart inside."""
        key = os.fsencode(normal_form(node))
        return os.path.join(self.dir, PREFIX + hashlib.sha256(key).hexdigest()[:24] + SUFFIX)

    def load(self, node: str) -> Record | None:
        """The record for node, None if there is none; CheckpointError if unreadable."""
        path = self.path(node)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise CheckpointError(f"cannot read {path}: {e.strerror}") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
                raise CheckpointError(f"{path} is not a regular file of uid {os.getuid()}")
            with os.fdopen(os.dup(fd), "rb") as f:
                data = f.read(1 << 20)
        except OSError as e:
            raise CheckpointError(f"cannot read {path}: {e.strerror}") from None
        finally:
            os.close(fd)
        try:
            return decode(data)
        except ValueError as e:
            raise CheckpointError(f"{path} is damaged: {e}") from None

    def void(self, node: str) -> bool:
        """Remove node's record, durably, before a run whose effect on the node it
        does not describe (a full sync under other settings or another version):
        once that run has changed the node, a later start under the record's
        settings must not trust it. False if it is there still (said once)."""
        try:
            os.unlink(self.path(node))
        except FileNotFoundError:
            return True
        except OSError as e:
            self.once.fail("cannot remove the checkpoint of %s in state_dir %s (%s): start "
                           "next time with --full", node, self.dir, e.strerror or e)
            return False
        try:
            sync_dir(self.dir)
        except OSError:
            pass  # removed; only a power cut could bring it back
        return True

    def save(self, record: Record) -> bool:
        """Write record atomically and durably; False if that cannot be (said once)."""
        try:
            make_private_dir(self.dir)
            replace(self.path(record.node), encode(record))
            sync_dir(self.dir)
        except OSError as e:
            self.once.fail("cannot record checkpoints in state_dir %s (%s): the next start "
                           "syncs from an older one, or in full", self.dir, e.strerror or e)
            return False
        self.once.ok("state_dir %s can be written again: checkpoints are recorded", self.dir)
        return True
