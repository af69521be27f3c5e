"""A relay tier end to end: three real inosync daemons in a chain through local
directories, A -> B, B -> C, C -> D (each next daemon's wpath is the node of
the one before, README "Relay tiers").

The upstream's rsync writes every file into a relay as ``.NAME.XXXXXX`` and
renames it to NAME. The chain must carry a burst (large files slowed down by
``rspeed``, so their temporary files live for seconds), a directory rename,
deletions and a restart of the middle relay while its upstream is writing,
and end with D equal to A (``rsync -anc``), while:

* no temporary file ever reaches a node below a relay: an inotify watch on
  B, C and D records every file that lands (IN_MOVED_TO) under a name of
  temporary shape, and there must be none;
* no rename of a temporary name is replayed: each relay replays at most the
  renames the test made, not one per file that landed.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import pytest
from helpers import Inosync, tree_diff, wait_converged, wait_until, write_config

from inosync.checkpoint import MARGIN
from inosync.excludes import Excludes
from inosync.tempnames import looks_temporary
from inosync.watch import IN_ISDIR, IN_MOVED_TO, Watcher, join

pytestmark = pytest.mark.slow  # end to end: real processes

EMASK = ("IN_CLOSE_WRITE", "IN_CREATE", "IN_DELETE", "IN_MOVED_FROM", "IN_MOVED_TO",
         "IN_MODIFY", "IN_ATTRIB")
BIG = 3 * 1024 * 1024  # at rspeed 3000 KB/s, one second being written on B
RENAMES = 2  # what the test renames in A: a directory and a file


class Landings(Watcher):
    """A recursive inotify watch that notes every file landing under a name of
    rsync's temporary shape: a temporary file sent down as if it were data."""

    def __init__(self, root: Path) -> None:
        super().__init__(str(root), EMASK, Excludes(()))
        self.bad: list[str] = []
        self.lost = False
        self.start()

    def _handle(self, wd: int, mask: int, cookie: int, name: str, changed: list[str]) -> None:
        if name and mask & IN_MOVED_TO and not mask & IN_ISDIR and looks_temporary(name):
            self.bad.append(join(self.path_of.get(wd, "?"), name))
        super()._handle(wd, mask, cookie, name, changed)

    def drain(self) -> None:
        self.lost |= self.read().overflowed


def replayed(d: Inosync) -> int:
    """The renames a daemon replayed on its node (its -v log says each batch's)."""
    return sum(int(n) for n in re.findall(r"replaying (\d+) renames? first", d.log()))


def temp_in(tree: Path) -> bool:
    return any(looks_temporary(name) for _, _, names in os.walk(tree) for name in names)


def test_a_relay_chain_carries_changes_and_never_its_temporary_files(tmp_path, run_inosync):
    a, b, c, d = (tmp_path / n for n in "abcd")
    for tree in (a, b, c, d):
        tree.mkdir()
    (a / "docs" / "old").mkdir(parents=True)
    (a / "docs" / "old" / "page.html").write_text("<p>old</p>\n")
    (a / "index.html").write_text("<h1>index</h1>\n")
    for i in range(5):
        (a / f"s{i}").mkdir()
        (a / f"s{i}" / "keep.txt").write_text(f"keep {i}\n")
    confs = {}
    for name, (wpath, node) in {"A": (a, b), "B": (b, c), "C": (c, d)}.items():
        (tmp_path / name).mkdir()
        extra = {"rspeed": 3000} if name == "A" else {}  # seconds-long temporary files on B
        confs[name] = write_config(tmp_path / name / "inosync.conf", wpath=str(wpath),
                                   rnodes=[str(node)], edelay=0.3, **extra)
    spies = [Landings(t) for t in (b, c, d)]

    def drained_converged() -> bool:
        for spy in spies:
            spy.drain()
        return not tree_diff(a, d)

    try:
        daemons: dict[str, Inosync] = {}
        for n in "ABC":  # from the source down: an empty relay would not start (exit 75)
            daemons[n] = run_inosync(confs[n], "-v")
            daemons[n].wait_log(r"synced full sync")
        wait_until(drained_converged, 30, "D to equal A after the start")

        # A directory rename, a file rename, deletions: replayed or deleted down the chain.
        (a / "docs").rename(a / "documents")
        (a / "s0" / "keep.txt").rename(a / "s0" / "renamed.txt")
        (a / "s1" / "keep.txt").unlink()
        shutil.rmtree(a / "s4")
        wait_until(drained_converged, 30, "D to equal A after renames and deletions")
        top_changed = time.monotonic()  # wpath's entries: a restart's scan looks back MARGIN
        assert 1 <= replayed(daemons["B"]) <= RENAMES and 1 <= replayed(daemons["C"]) <= RENAMES

        # A burst: small files everywhere, large ones in a new directory that B
        # lists (and sends recursively) while A is still writing them.
        (a / "s0" / "big").mkdir()
        for i in range(3):
            (a / "s0" / "big" / f"f{i}.bin").write_bytes(os.urandom(BIG))
        for i in range(300):
            (a / f"s{i % 4}" / f"f{i:03}.txt").write_text(f"file {i}\n" * 20)
        wait_until(drained_converged, 30, "D to equal A after the burst")
        assert re.search(r"--exclude=/s0/big/\.f\d\.bin\.[A-Za-z0-9]{6}\b", daemons["B"].log()), \
            "B never ran while a temporary file was held: the test did not test the hold"
        for i in range(1, 40, 5):
            (a / f"s{i % 4}" / f"f{i:03}.txt").unlink()
        wait_until(drained_converged, 30, "D to equal A after deletions")
        time.sleep(max(0.0, top_changed + MARGIN + 0.5 - time.monotonic()))

        # The middle relay stops; A goes on writing into B, a large file too, and
        # B starts again while that file is still a temporary one in its tree.
        assert daemons["B"].stop() == 0
        (a / "s1" / "while-stopped.txt").write_text("made while B was stopped\n")
        (a / "s2" / "f002.txt").unlink()
        (a / "s3" / "late").mkdir()
        (a / "s3" / "late" / "big.bin").write_bytes(os.urandom(4 * BIG))
        wait_until(lambda: temp_in(b / "s3"), 20, "A to be writing into B")
        daemons["B2"] = run_inosync(confs["B"], "-v")
        daemons["B2"].wait_log(r"starting from its checkpoint")
        # Its first run to C: what changed since, without the file A still writes.
        daemons["B2"].wait_log(r"--exclude=/s3/late/\.big\.bin\.[A-Za-z0-9]{6} ")
        wait_until(drained_converged, 30, "D to equal A after B's restart")
        time.sleep(1.0)  # anything late (a run still going) would land now
        for spy in spies:
            spy.drain()
        assert all(not tree_diff(a, n) for n in (b, c, d))
        assert [spy.bad for spy in spies] == [[], [], []]
        assert not any(spy.lost for spy in spies)
        assert replayed(daemons["B2"]) == 0  # it had no rename to replay, nor a landing
        for n, daemon in daemons.items():
            assert "Traceback" not in daemon.log(), n
    finally:
        for spy in spies:
            spy.close()
    wait_converged(a, [b, c, d], 5)
