"""Issue 18.5: after an inotify queue overflow the tree is rewatched and scanned
by ctime from the last read known complete (as a start from a checkpoint
does), and only what changed is sent; a full sync when the scan cannot be
trusted, said with why. The scheduler's part, with plain values."""

from __future__ import annotations

import logging

import pytest
from schedtools import A, B, config, starts

from inosync.scheduler import CheckRoot, Rescan, RootMoved, RootSame, Scheduler


def ended(s: Scheduler, dest: str, rc: int, now: float) -> list:
    return s.run_ended(dest, rc, "", now, wall=5000.0 + now, took=0.5, what="x")


@pytest.fixture
def synced() -> Scheduler:
    """Both nodes synced; the last read known complete began at wall 110."""
    s = Scheduler(config())
    s.read_started(100.0)
    starts(s.begin(0.0))
    ended(s, A, 0, 1.0)
    ended(s, B, 0, 1.0)
    s.read_started(110.0)
    return s


def overflow(s: Scheduler, now: float) -> list:
    """The read that began at wall 120 found the overflow (as the loop feeds it)."""
    assert s.overflowed(now) == [CheckRoot()]
    s.read_started(120.0)
    return s.root_checked(RootSame(), now)


def test_the_rescan_scans_from_the_last_complete_read_and_nothing_runs_before(synced):
    actions = overflow(synced, 2.0)
    assert actions == [Rescan(since=110.0)]  # the lost events began after that read
    assert synced.tick(10.0) == []


def test_what_the_scan_found_goes_to_every_node_as_a_list(synced, caplog):
    overflow(synced, 2.0)
    with caplog.at_level(logging.WARNING, "inosync"):
        runs = starts(synced.rescanned(["flood", "docs/new.txt"], "scan of 9 entries", 2.0))
    assert set(runs) == {A, B}
    assert all(r.batch.paths == {"flood", "docs/new.txt"} and not r.batch.full
               for r in runs.values())
    assert "found 2 paths changed: sent to every node, no full sync" in caplog.text
    # the checkpoint stays before the lost changes until they are delivered
    synced.read_started(130.0)
    assert synced.checkpoint(A) == 110.0
    ended(synced, A, 0, 3.0)
    assert synced.checkpoint(A) == 130.0 and synced.checkpoint(B) == 110.0


def test_a_scan_that_cannot_be_trusted_falls_back_to_a_full_sync_said_why(synced, caplog):
    overflow(synced, 2.0)
    with caplog.at_level(logging.WARNING, "inosync"):
        runs = starts(synced.rescanned(None, "the entries of wpath itself changed", 2.0))
    assert all(r.batch.full for r in runs.values()) and set(runs) == {A, B}
    assert "full sync to every node: the entries of wpath itself changed" in caplog.text
    synced.read_started(130.0)
    assert synced.checkpoint(A) == 110.0


def test_without_a_read_known_complete_a_full_sync_at_once(caplog):
    s = Scheduler(config())
    starts(s.begin(0.0))
    ended(s, A, 0, 1.0)
    ended(s, B, 0, 1.0)
    s.overflowed(2.0)
    with caplog.at_level(logging.WARNING, "inosync"):
        actions = s.root_checked(RootSame(), 2.0)
    assert actions[0] == Rescan() and all(r.batch.full for r in starts(actions).values())
    assert "no read of the watcher was known complete" in caplog.text


def test_a_swapped_wpath_is_still_a_full_sync_without_a_scan(synced):
    synced.overflowed(2.0)
    assert synced.root_checked(RootMoved("/srv/releases/2", "details"), 2.0) == []  # a delay
    assert synced.tick(4.0) == [CheckRoot()]
    actions = synced.root_checked(RootMoved("/srv/releases/2", "details"), 4.0)
    assert actions[0] == Rescan("/srv/releases/2")
    assert all(r.batch.full for r in starts(actions).values())


def test_pending_work_and_what_was_collected_are_kept(synced):
    synced.changed(["before.txt"], 1.5)
    overflow(synced, 2.0)
    runs = starts(synced.rescanned(["flood"], "scan", 2.0))
    assert runs[A].batch.paths == {"before.txt", "flood"}
