"""Issue 18.5 with a real daemon: an inotify queue overflow (a flood of events
while the daemon is stopped with SIGSTOP) is followed by a rewatch and a scan
by ctime; only what changed is sent. A file only on a node, in a directory
nothing touched, is what a full sync (--delete) would remove: it survives."""

from __future__ import annotations

import time

import pytest
from helpers import overflow_queue, tree_diff, wait_converged, wait_until, write_config

from inosync.checkpoint import MARGIN

pytestmark = pytest.mark.slow

PLANTED = "keep/only-on-node.txt"


def test_an_overflow_sends_only_what_changed(tree, run_inosync):
    src, nodes = tree["src"], tree["nodes"]
    (src / "flood").mkdir()
    (src / "keep").mkdir()
    (src / "keep" / "k.txt").write_text("untouched\n")
    time.sleep(MARGIN + 0.5)  # wpath's own ctime: older than the scan's margin
    conf = write_config(tree["dir"] / "inosync.conf", wpath=str(src),
                        rnodes=[str(n) for n in nodes], edelay=0.2, retry_min=0.2,
                        retry_max=1)
    d = run_inosync(conf, "-v")
    wait_converged(src, nodes)
    d.wait_log("synced full sync", count=len(nodes))
    for n in nodes:
        (n / PLANTED).write_text("only on this node\n")

    def meanwhile() -> None:  # lost among the events too: a change, a deletion, a new file
        (src / "docs" / "a.txt").write_text("changed during the flood\n")
        (src / "docs" / "old" / "b.txt").unlink()
        (src / "docs" / "old" / "c.txt").write_text("new during the flood\n")

    overflow_queue(d, src / "flood", meanwhile)
    d.wait_log(r"inotify queue overflowed: events were lost; rewatched, and a scan .* "
               r"sent to every node, no full sync")
    wait_until(lambda: all(tree_diff(src, n, excludes=(PLANTED,)) == [] for n in nodes), 60,
               "the nodes to converge (rsync -anc), but for the planted file")
    assert all((n / PLANTED).exists() for n in nodes), d.log()
    assert all(not (n / "docs" / "old" / "b.txt").exists() for n in nodes)
    assert d.log().count("synced full sync") == len(nodes)
    assert "full sync to every node" not in d.log()
    (src / "after.txt").write_text("watched again\n")  # the rewatch works
    wait_until(lambda: all((n / "after.txt").exists() for n in nodes), 20, "after.txt")
    assert d.stop() == 0
