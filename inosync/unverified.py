"""Nodes whose last move replay no run has yet confirmed, kept across restarts.

After a replay, rsync compares file contents (``--checksum``) until a run to
that node gets through (see replay.py): a rename may have left data the
source does not have under a name, with the same size and mtime. That need
must outlive the daemon: stopped or killed between a replay and the run
that confirms it, the next start's full sync would compare sizes and times
only. So before a replay starts, the node is marked by a file in
``state_dir``, and the mark goes once a run that compared contents got
through. A start, and a reload that adds the node back, give a marked node
a full sync that compares contents.

If no mark can be written, there is no replay: rsync sends the data.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from collections.abc import Iterable

from .statefile import Once, sync_dir

log = logging.getLogger("inosync")

SUFFIX = ".unverified"


class Marks:
    def __init__(self, directory: str) -> None:
        self.dir = directory
        self.once = Once()  # replays go on being refused meanwhile

    def path(self, dest: str) -> str:
        return os.path.join(self.dir, hashlib.sha256(os.fsencode(dest)).hexdigest()[:24]
                            + SUFFIX)

    def mark(self, dest: str) -> bool:
        """Record, durably, that a replay starts on dest; False if that cannot be."""
        try:
            self._private_dir()
            fd = os.open(self.path(dest), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, os.fsencode(dest) + b"\n")  # for whoever looks
                os.fsync(fd)
            finally:
                os.close(fd)
            sync_dir(self.dir)
        except OSError as e:
            self.once.fail("cannot record replays in state_dir %s (%s): renames are sent as "
                           "data, not replayed", self.dir, e.strerror or e)
            return False
        self.once.ok("state_dir %s can be written again: renames are replayed", self.dir)
        return True

    def clear(self, dest: str) -> None:
        try:
            os.unlink(self.path(dest))
        except FileNotFoundError:
            pass
        except OSError as e:
            log.warning("cannot remove %s: %s", self.path(dest), e.strerror)

    def marked(self, dests: Iterable[str]) -> set[str]:
        """The nodes whose last replay no run has confirmed."""
        found = set()
        for dest in dests:
            try:
                if stat.S_ISREG(os.lstat(self.path(dest)).st_mode):
                    found.add(dest)
            except OSError:
                pass
        return found

    def _private_dir(self) -> None:
        make_private_dir(self.dir)


def make_private_dir(directory: str) -> None:
    """state_dir, made if missing: a real directory of ours that nobody else may
    write (else someone could remove a mark, or plant a symlink in its place);
    OSError if it is not."""
    try:
        os.makedirs(directory, 0o700, exist_ok=True)
    except FileExistsError:
        pass
    st = os.lstat(directory)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise OSError(0, f"not a directory of uid {os.getuid()} closed to others "
                         f"(owner {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o})")
