"""One test run's readers-writer lock. Under pytest-xdist (tests/run uses -n 3)
the workers run tests side by side, and a few tests change what every process
on the machine shares (packages installed with apt-get; a lowered inotify
watch limit is a user namespace's own now: helpers.own_watch_limit) or hold a
copy of it (a mount namespace keeps every
filesystem mounted at its start alive, and another test's umount then sends
no IN_UNMOUNT), or wait for an IN_UNMOUNT (seen to fail beside the
test_faults.py tests, cause not found). Every test holds the lock shared from
its setup to its teardown (conftest.py); a test marked `alone` holds it
exclusively, so it runs while no test of another worker does.

flock(2) on two files in the run's base directory: the turnstile gives the
writer priority (a worker that takes test after test would otherwise never
leave the gap a waiting writer needs).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class RunLock:
    def __init__(self, directory: Path) -> None:
        self._turnstile = os.open(directory / "alone.turnstile", os.O_RDWR | os.O_CREAT, 0o600)
        self._main = os.open(directory / "alone.lock", os.O_RDWR | os.O_CREAT, 0o600)

    @contextmanager
    def shared(self) -> Iterator[None]:
        fcntl.flock(self._turnstile, fcntl.LOCK_EX)  # waits behind a waiting writer
        try:
            fcntl.flock(self._main, fcntl.LOCK_SH)
        finally:
            fcntl.flock(self._turnstile, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(self._main, fcntl.LOCK_UN)

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        fcntl.flock(self._turnstile, fcntl.LOCK_EX)  # no new reader from here on
        try:
            fcntl.flock(self._main, fcntl.LOCK_EX)  # the readers there now are done
            try:
                yield
            finally:
                fcntl.flock(self._main, fcntl.LOCK_UN)
        finally:
            fcntl.flock(self._turnstile, fcntl.LOCK_UN)
