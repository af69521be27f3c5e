"""Writing the daemon's own files: whole or not at all, and a failure said once.

replace() puts a file's new contents in place atomically: a temporary file
beside it, made by mkstemp (O_EXCL, so a symlink planted under that random
name is never followed), written, then renamed over the target (a rename
replaces a symlink at the target, never writes through it). Readers see
the old file or the new one, never half of one. sync_dir() makes the rename
itself survive a power cut. Once is the warning said once for a state_dir
that cannot be written, until a write gets through again.
"""

from __future__ import annotations

import logging
import os
import tempfile

log = logging.getLogger("inosync")


def replace(path: str, data: bytes, mode: int = 0o600, durable: bool = True) -> None:
    """Replace path's contents with data atomically (see above); mode: the new
    file's (mkstemp makes 0600); durable: the data reaches the disk before the
    rename (sync_dir after it, for the name). OSError if it cannot be."""
    folder, name = os.path.split(path)
    fd, tmp = tempfile.mkstemp(dir=folder or ".", prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if mode != 0o600:
                os.fchmod(f.fileno(), mode)
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def sync_dir(directory: str) -> None:
    """fsync directory: the names in it (a rename, an unlink), not only the data."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Once:
    """A failure to write state files, warned about once until a write gets
    through again (then said at info level): not a line per attempt."""

    def __init__(self) -> None:
        self.failed = False

    def fail(self, message: str, *args: object) -> None:
        if not self.failed:
            self.failed = True
            log.warning(message, *args)

    def ok(self, message: str, *args: object) -> None:
        if self.failed:
            self.failed = False
            log.info(message, *args)
