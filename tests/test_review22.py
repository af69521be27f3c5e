"""Hostile review of 7c06628 (review 22): under delete = 'running' the paths
seen deleted go first in a run of their own, the only one with --force.

Each test is a way the split still loses node-only data, or holds back
changes it used to deliver, or says a node is healthy while it fails.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import wait_until, write_config
from test_deletepolicy import one_local, started

NODE = "/srv/node/"
# How rsync 3.x says a deletion on the node failed (a mount point, an
# immutable file, a directory the ssh user may not write): exit 23.
RMDIR_FAILED = ("rsync: [generator] delete_file: rmdir(old/mnt) failed: Device or resource "
                "busy (16)\nrsync error: some files/attrs were not transferred (see previous "
                "errors) (code 23) at main.c(1338) [sender=3.2.7]\n")
NOT_EMPTY = ("cannot delete non-empty directory: uploads\n"
             "rsync: [receiver] could not make way for new regular file: uploads\n"
             "rsync error: some files/attrs were not transferred (see previous errors) "
             "(code 23) at main.c(1338) [generator=3.2.7]\n")


# ------------------------------------------------------------ scheduler: starvation


@pytest.mark.xfail(strict=True, reason="review 22 finding 1, not fixed: under 'running' "
                   "each run of a node takes the seen-deleted paths alone whenever any are "
                   "pending; deletions that keep coming (a log rotated, an editor's swap "
                   "file) while its runs last hold every other change back for good")
def test_running_a_steady_stream_of_deletions_never_holds_other_changes_back():
    s = one_local("running")
    s.changed(["index.html"], 10.0)  # an edit, never a deletion
    s.changed(["tmp/swap0"], 10.0, deleted=["tmp/swap0"])
    runs = started(s.tick(12.0))
    now = 12.0
    for i in range(1, 8):
        # While the run lasts (3 s, longer than edelay) a file is deleted again.
        s.changed([f"tmp/swap{i}"], now + 0.1, deleted=[f"tmp/swap{i}"])
        s.tick(now + 2.5)  # flushed to the node, whose run still goes on
        now += 3.0
        runs += started(s.run_ended(NODE, 0, "", now, 1000.0 + now, 3.0, "1 path"))
    assert any("index.html" in r.paths for r in runs), [sorted(r.paths) for r in runs]


@pytest.mark.xfail(strict=True, reason="review 22 finding 2, not fixed: a seen-deleted path "
                   "the node cannot delete (a mount point, an immutable file, permissions) "
                   "fails its run of its own forever, and the rest of the batch and every "
                   "later change never goes; one run (before 7c06628, or plain rsync) sends "
                   "them and fails on that path alone")
def test_running_a_deletion_the_node_refuses_never_holds_other_changes_back():
    s = one_local("running")
    s.changed(["index.html", "old"], 10.0, deleted=["old"])
    runs = started(s.tick(12.0))
    now = 12.0
    for _ in range(6):
        now += 10.0  # past any retry (retry_max 8)
        runs += started(s.run_ended(NODE, 23, RMDIR_FAILED, now, 1000.0 + now, 0.1, "1 path"))
        runs += started(s.tick(now + 9.0))
        now += 9.0
    assert any("index.html" in r.paths for r in runs), [sorted(r.paths) for r in runs]


@pytest.mark.xfail(strict=True, reason="review 22 finding 3, not fixed: the deletion run's "
                   "success resets the node's failures while its other run still fails on "
                   "a node-only directory: 'recovered' is logged, the up metric and the "
                   "statusfile say healthy, and the backoff starts over, at every deletion")
def test_running_a_node_whose_other_run_fails_stays_failing_after_a_deletion_run():
    s = one_local("running")
    s.changed(["uploads"], 10.0)  # a file where the node holds a directory of its own
    (run,) = started(s.tick(12.0))
    s.run_ended(NODE, 23, NOT_EMPTY, 12.5, 1012.5, 0.1, "1 path")
    assert s.nodes[NODE].failures == 1
    s.changed(["old"], 13.0, deleted=["old"])  # meanwhile a file is deleted
    (first,) = started(s.tick(15.5))
    assert first.paths == {"old"}  # the deletion run, alone
    s.run_ended(NODE, 0, "", 16.0, 1016.0, 0.1, "1 path")  # it gets through
    node = s.nodes[NODE]
    # "uploads" is still pending and still fails: the node has not recovered.
    assert "uploads" in node.all_pending().paths
    assert node.failures > 0, "the node is said to have recovered"
    (values,) = s.metric_values()
    assert not values.up


# ------------------------------------------------------------ end to end: node-only data lost


def _node_only_dir(node: Path, name: str) -> Path:
    d = node / name
    (d / "2026").mkdir(parents=True)
    (d / "2026" / "photo.jpg").write_text("only on the node\n")
    return d


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="review 22 finding 4, not fixed: a file rewritten by "
                   "unlink and create (install, cp --remove-destination, ln -sf, tar) is "
                   "'seen deleted', so its forced run replaces the node's own directory of "
                   "that name, which the run before had refused to touch: the deletion seen "
                   "was of a file the node never had")
def test_running_a_file_rewritten_by_unlink_never_replaces_a_node_only_directory(
        tmp_path, run_inosync):
    src, node = tmp_path / "src", tmp_path / "node"
    src.mkdir()
    (src / "index.html").write_text("hi\n")
    node.mkdir()
    uploads = _node_only_dir(node, "uploads")
    conf = write_config(tmp_path / "inosync.conf", wpath=str(src), rnodes=[str(node)],
                        edelay=0.2, retry_min=0.2, retry_max=0.5, delete="running")
    d = run_inosync(conf)
    d.wait_log("synced full sync")
    (src / "uploads").write_text("a file, never a deletion\n")
    d.wait_log("rsync failed")  # as promised: the node keeps its directory, and says so
    assert (uploads / "2026" / "photo.jpg").is_file()
    # The application writes its file again, the way install(1) does.
    (src / "uploads").unlink()
    (src / "uploads").write_text("the same file, written again\n")
    (src / "marker").write_text("after\n")
    wait_until(lambda: (node / "marker").exists(), 20, "the batch on the node")
    d.wait_log(r"synced 1 path")
    assert (uploads / "2026" / "photo.jpg").is_file(), d.log()
    d.stop()


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="review 22 finding 5, not fixed: a seen-deleted file "
                   "replaced by a directory the excludes hide ('secret/') is listed as its "
                   "parent (batch._excluded_now), in the run with --force: that run sends "
                   "the whole parent, forced, and replaces every node-only directory below "
                   "it where the source has a file, none of them seen deleted")
def test_running_the_forced_run_never_lists_a_directory_not_seen_deleted(tmp_path,
                                                                         run_inosync):
    src, node = tmp_path / "src", tmp_path / "node"
    (src / "app").mkdir(parents=True)
    (src / "app" / "cache").write_text("a file on the source\n")
    (src / "app" / "secret").write_text("a file, for now\n")
    conf = write_config(tmp_path / "inosync.conf", wpath=str(src), rnodes=[str(node)],
                        edelay=0.2, retry_min=0.2, retry_max=0.5, delete="running",
                        rexcludes=["secret/"])
    d = run_inosync(conf)
    d.wait_log("synced full sync", timeout=60)
    (node / "app" / "cache").unlink()  # the node's own directory now stands there
    cache = _node_only_dir(node / "app", "cache")
    (src / "app" / "secret").unlink()  # seen deleted: the node's file app/secret goes
    (src / "app" / "secret").mkdir()  # ... and a directory the excludes hide takes its name
    d.wait_log(r"synced \d+ path")
    assert os.path.isfile(cache / "2026" / "photo.jpg"), d.log()
    d.stop()


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="review 22 finding 6 (older than 7c06628), not fixed: "
                   "a seen-deleted file replaced by a directory the excludes hide is sent as "
                   "its parent, whose deletion pass would remove it; under 'running' no run "
                   "has --delete, so the node keeps the file for good")
def test_running_a_file_seen_deleted_under_a_directory_exclude_is_deleted(tmp_path,
                                                                          run_inosync):
    src, node = tmp_path / "src", tmp_path / "node"
    (src / "app").mkdir(parents=True)
    (src / "app" / "secret").write_text("a file, for now\n")
    conf = write_config(tmp_path / "inosync.conf", wpath=str(src), rnodes=[str(node)],
                        edelay=0.2, retry_min=0.2, retry_max=0.5, delete="running",
                        rexcludes=["secret/"])
    d = run_inosync(conf)
    d.wait_log("synced full sync", timeout=60)
    (src / "app" / "secret").unlink()  # seen deleted
    (src / "app" / "secret").mkdir()  # a directory the excludes hide takes its name
    (src / "marker").write_text("after\n")
    wait_until(lambda: (node / "marker").exists(), 20, "the batch on the node")
    d.wait_log(r"synced \d+ path", count=2)
    assert not (node / "app" / "secret").is_file(), d.log()
    d.stop()
