"""Hostile review of 7c06628 + 066ecab (review 23): under delete = 'running' a
list run passes --force only when its batch has a directory seen deleted or
renamed away (WatchEvents.deleted, PathSet.deleted).

Each test is a strict xfail: a finding still open.
"""

from __future__ import annotations

import signal
import time

import pytest
from helpers import wait_until, write_config
from test_deletepolicy import one_local, started
from test_review22 import RMDIR_FAILED

from inosync.batch import PathSet, files_list, may_force
from inosync.excludes import Excludes
from inosync.watch import Watcher

NODE = "/srv/node/"
EMASK = ("IN_CLOSE_WRITE", "IN_CREATE", "IN_DELETE", "IN_MOVED_FROM", "IN_MOVED_TO",
         "IN_MODIFY", "IN_ATTRIB")


def _read_until(w: Watcher, marker: str) -> list[str]:
    seen: list[str] = []

    def done() -> bool:
        seen.extend(w.read().paths)
        return marker in seen

    wait_until(done, 10, f"event for {marker!r}")
    return seen


# ------------------------------------------------------- finding 1 (older, any policy)


def test_a_directory_moved_out_and_made_again_in_one_read_stays_watched(tmp_path):
    """Finding 1 (older, any policy): read() dropped the moved-out tree by path,
    after add_tree had given that path the new directory's watch: nothing written
    in it was seen, and the moved-away copy's writes came as paths of the tree.
    The moved-out watches are now detached at once and dropped by descriptor."""
    root, away = tmp_path / "root", tmp_path / "away"
    (root / "d" / "sub").mkdir(parents=True)
    away.mkdir()
    w = Watcher(str(root), EMASK, Excludes(()))
    w.start()
    try:
        (root / "d").rename(away / "d")  # mv d /elsewhere
        (root / "d").mkdir()  # ... and a new d at once (a deploy's "mv; mkdir")
        time.sleep(0.1)  # both in one read
        first = w.read()
        assert "d" in first.paths and "d" in first.deleted
        (away / "d" / "stale").write_text("written outside the tree\n")
        (root / "d" / "new").write_text("written in the tree\n")
        (root / "marker").write_text("m\n")
        seen = _read_until(w, "marker")
        assert "d/stale" not in seen, seen  # not a path of the tree
        assert "d/new" in seen, seen  # the new directory is watched
    finally:
        w.close()


@pytest.mark.slow
def test_a_directory_moved_out_and_made_again_replicates_later_writes(tmp_path, run_inosync):
    """Finding 1, end to end: the file written in the directory made again never
    reached the node."""
    src, node, away = tmp_path / "src", tmp_path / "node", tmp_path / "away"
    (src / "d").mkdir(parents=True)
    (src / "d" / "old").write_text("old\n")
    away.mkdir()
    conf = write_config(tmp_path / "inosync.conf", wpath=str(src), rnodes=[str(node)],
                        edelay=0.3, retry_min=0.2, retry_max=0.5)
    d = run_inosync(conf)
    d.wait_log("synced full sync", timeout=60)
    time.sleep(0.5)  # the full sync's run is over and read
    d.signal(signal.SIGSTOP)  # both changes in one read, as on a busy host
    try:
        (src / "d").rename(away / "d")
        (src / "d").mkdir()
    finally:
        d.signal(signal.SIGCONT)
    wait_until(lambda: not (node / "d" / "old").exists(), 20, "the move on the node")
    (src / "d" / "new").write_text("written after\n")
    (src / "marker").write_text("after\n")
    wait_until(lambda: (node / "marker").exists(), 20, "the marker on the node")
    time.sleep(1.0)
    assert (node / "d" / "new").is_file(), d.log()
    d.stop()


def test_a_directory_moved_out_made_again_and_moved_back_under_another_name(tmp_path):
    """The same inode back in under another name in the same read keeps its watch
    (inotify gives it the same descriptor), and the new directory keeps its own."""
    root, away = tmp_path / "root", tmp_path / "away"
    (root / "d").mkdir(parents=True)
    away.mkdir()
    w = Watcher(str(root), EMASK, Excludes(()))
    w.start()
    try:
        (root / "d").rename(away / "d")
        (root / "d").mkdir()
        (away / "d").rename(root / "d2")
        time.sleep(0.1)
        w.read()
        (root / "d" / "new").write_text("n\n")
        (root / "d2" / "back").write_text("b\n")
        (root / "marker").write_text("m\n")
        seen = _read_until(w, "marker")
        assert "d/new" in seen and "d2/back" in seen, seen
    finally:
        w.close()


# ------------------------------------------------------- finding 2: --force for good


@pytest.mark.xfail(strict=True, reason="review 23 finding 2: a directory deletion the node "
                   "refuses (a mount point, an immutable file there) fails every run and "
                   "is requeued with PathSet.deleted, so every later batch to that node runs "
                   "with --force for good: a new file where the node holds a non-empty "
                   "directory of its own replaces it, however much later it comes")
def test_running_a_refused_directory_deletion_does_not_force_every_later_batch():
    s = one_local("running")
    s.changed(["old"], 10.0, deleted=["old"])
    runs = started(s.tick(12.0))
    now = 12.0
    for _ in range(6):  # the node refuses, run after run
        now += 10.0
        runs += started(s.run_ended(NODE, 23, RMDIR_FAILED, now, 1000.0 + now, 0.1, "1 path"))
        runs += started(s.tick(now + 9.0))
        now += 9.0
    # Much later: a new file, no directory deleted anywhere near it.
    s.changed(["uploads"], now, [])
    now += 10.0
    runs += started(s.run_ended(NODE, 23, RMDIR_FAILED, now, 1000.0 + now, 0.1, "1 path"))
    runs += started(s.tick(now + 9.0))
    with_it = [r for r in runs if "uploads" in r.paths]
    assert with_it, [sorted(r.paths) for r in runs]
    # Daemon.start: force=bool(batch.deleted)
    assert not any(r.deleted for r in with_it), [sorted(r.deleted) for r in with_it]


# ------------------------------------------------ finding 3: a directory gone, unread yet


def test_running_a_path_listed_for_a_gone_directory_is_forced(tmp_path):
    """Finding 3: the children's deletions of a directory read before its own
    IN_DELETE (an edelay boundary in an rm -r) are listed as the directory, now
    gone or a file, in a run that had no --force: a file there failed the run."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "d").write_text("rm -r d; echo > d: the file that replaced the directory\n")
    batch = PathSet()
    for child in ("d/a", "d/b"):  # seen deleted (files): d's own event is in the next read
        batch.add(child)
    listed = files_list(batch.paths, str(root), Excludes(()), keep_gone=True)
    assert listed == ["d"]  # the directory's name, now a file
    assert may_force(batch, listed, str(root)), \
        "a run listing a directory gone from the source has no --force"
    assert not may_force(batch, ["d/a", "d/b"], str(tmp_path))  # listed as they are: no

