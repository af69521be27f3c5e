"""One test run's readers-writer lock: with pytest-xdist (tests/run uses -n 2)
the workers run tests side by side, and a few tests change what every process
on the machine shares (the inotify watch limit, packages installed with
apt-get). Every test holds the lock shared; a test marked `alone` holds it
exclusively, so it runs while no test of another worker does.

flock(2) on two files of the run's base directory: the turnstile gives the
writer priority (a worker that takes test after test never leaves a gap long
enough for the waiting writer otherwise). Without xdist nobody else takes the
lock and it costs two system calls a test.
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
        self._exclusive = 0  # depth: a module's fixture and its tests both ask
        self._shared = False

    @contextmanager
    def shared(self) -> Iterator[None]:
        if self._exclusive:  # this process has it all already
            yield
            return
        fcntl.flock(self._turnstile, fcntl.LOCK_EX)  # waits behind a waiting writer
        try:
            fcntl.flock(self._main, fcntl.LOCK_SH)
        finally:
            fcntl.flock(self._turnstile, fcntl.LOCK_UN)
        self._shared = True
        try:
            yield
        finally:
            self._shared = False
            fcntl.flock(self._main, fcntl.LOCK_UN)

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        if self._exclusive:
            self._exclusive += 1
            try:
                yield
            finally:
                self._exclusive -= 1
            return
        # Our own shared hold would make us wait for ourselves for ever.
        assert not self._shared, "mark the test `alone`: a fixture cannot take the lock"
        fcntl.flock(self._turnstile, fcntl.LOCK_EX)  # no new reader from here on
        try:
            fcntl.flock(self._main, fcntl.LOCK_EX)  # the readers there now are done
            self._exclusive = 1
            try:
                yield
            finally:
                self._exclusive = 0
                fcntl.flock(self._main, fcntl.LOCK_UN)
        finally:
            fcntl.flock(self._turnstile, fcntl.LOCK_UN)

    def close(self) -> None:
        os.close(self._turnstile)
        os.close(self._main)
