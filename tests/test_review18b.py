"""Review 18, second round: restarts, reloads and overflows attacked again.
Each test is a way a node ended other than a plain `rsync -a --delete` of the
tree (with its settings) would leave it, or a way checkpoints stopped saving a
full sync, on the code before its fix."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from helpers import overflow_queue, tree_diff, wait_converged, write_config
from test_checkpoint_restart import first_run, records
from test_review18 import restart_and_settle

from inosync.checkpoint import MARGIN

pytestmark = pytest.mark.slow  # end to end: real daemons, real rsync


def release(root: Path, text: str) -> Path:
    """A release tree: the same names as every other release, other contents."""
    (root / "docs").mkdir(parents=True)
    (root / "index.html").write_text(f"<h1>{text}</h1>\n")
    (root / "docs" / "a.txt").write_text(f"{text}\n")
    return root


def test_a_node_that_held_another_tree_since_its_checkpoint_gets_a_full_sync(tree, run_inosync):
    """A rollback: wpath is release v1, then v2 (config edited, restart: its full
    sync puts v2 on the node), then v1 again. v1's record, written before the
    node got v2, still matched (same wpath, directory, settings), so the start
    resumed from it: nothing changed in v1 since, nothing was sent, and the node
    kept serving v2 (the top-level check sees the same names). Failed before the
    fix: index.html on the node said v2."""
    v1, v2 = release(tree["dir"] / "v1", "v1"), release(tree["dir"] / "v2", "v2")
    nodes = tree["nodes"][:1]
    conf = tree["dir"] / "inosync.conf"
    settings = dict(rnodes=[str(n) for n in nodes], edelay=0.2)
    write_config(conf, wpath=str(v1), **settings)
    first_run(run_inosync, conf, v1, nodes)

    write_config(conf, wpath=str(v2), **settings)
    d = restart_and_settle(run_inosync, conf, nodes)
    assert tree_diff(v2, nodes[0]) == [], d.log()
    assert d.stop() == 0

    write_config(conf, wpath=str(v1), **settings)  # rolled back
    d = restart_and_settle(run_inosync, conf, nodes)
    assert tree_diff(v1, nodes[0]) == [], d.log()
    assert d.stop() == 0


@pytest.fixture
def on_fuse(tree):
    """The tree seen through a FUSE mount (bindfs: fstype "fuse", no subtype)."""
    if not shutil.which("bindfs") or not Path("/dev/fuse").exists():
        pytest.skip("needs bindfs and /dev/fuse (apt-get install bindfs)")
    under, mnt = tree["dir"] / "under", tree["dir"] / "fuse"
    tree["src"].rename(under)
    mnt.mkdir()
    subprocess.run(["bindfs", str(under), str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["fusermount", "-u", str(mnt)], capture_output=True)


def test_an_overflow_on_a_tree_whose_ctimes_are_not_ours_is_a_full_sync(tree, on_fuse,
                                                                          run_inosync):
    """A start on such a tree (network filesystem, FUSE, FAT) keeps no checkpoint: its
    ctimes come from a server's clock or a writer, not this kernel's. The overflow
    scan trusted them all the same: a server whose clock is behind ours by more
    than MARGIN gives the changes lost in the overflow ctimes older than the scan's
    threshold, never sent. Failed before the fix: 'a scan ... no full sync'."""
    src, nodes = on_fuse, tree["nodes"][:1]
    (src / "flood").mkdir()
    time.sleep(MARGIN + 0.5)  # wpath's own ctime: older than the scan's margin
    conf = write_config(tree["dir"] / "inosync.conf", wpath=str(src),
                        rnodes=[str(n) for n in nodes], edelay=0.2)
    d = run_inosync(conf, "-v")
    d.wait_log(rf"{nodes[0]}: full sync: wpath is on fuse")
    d.wait_log("synced full sync")
    overflow_queue(d, src / "flood", lambda: (src / "docs" / "a.txt").write_text("x\n"))
    d.wait_log(r"inotify queue overflowed: events were lost; rewatched, full sync to every "
               r"node: wpath is on fuse", timeout=60)
    wait_converged(src, nodes, timeout=60)
    assert d.stop() == 0


def test_a_restart_with_nothing_changed_moves_the_checkpoint_on(tree, run_inosync):
    """A node resumed with nothing to send kept the old record's time as the start of
    an empty batch that no run ever took: its checkpoint never moved while the tree
    stayed quiet, no record was written again (not even at the stop), every
    restart scanned further back, and a week of quiet made the next restart a
    full sync ('older than 7 days'). Failed before the fix: synced_to unchanged."""
    src, nodes = tree["src"], tree["nodes"][:1]
    conf = write_config(tree["dir"] / "inosync.conf", wpath=str(src),
                        rnodes=[str(n) for n in nodes], edelay=0.2)
    first_run(run_inosync, conf, src, nodes)
    (record,) = records(conf)
    before = json.loads(record.read_text())["synced_to"]
    d = restart_and_settle(run_inosync, conf, nodes)
    assert "0 paths changed since" in d.log(), d.log()
    time.sleep(1.0)
    assert d.stop() == 0
    after = json.loads(record.read_text())["synced_to"]
    assert after > before + 1.0, d.log()


def test_a_stop_during_a_rollback_of_a_followed_symlink_resumes_nothing_stale(tree, run_inosync):
    """The running variant, as deploy tools do it: wpath is a symlink 'current' to a
    release; inosync follows it to v2 (a full sync), then back to v1 (a rollback),
    and is stopped (a restart, an upgrade) while the rollback's full sync runs.
    v1's own record, written before the node got v2, was kept through it ('the
    same settings: it only brings the node nearer'), and the next start resumed
    from it: data/big.bin never came back and index.html said v2 (the top-level
    names are the same). Failed before the fix."""
    v1, v2 = release(tree["dir"] / "v1", "v1"), release(tree["dir"] / "v2", "v2")
    (v1 / "data").mkdir()
    (v2 / "data").mkdir()
    (v1 / "data" / "big.bin").write_bytes(os.urandom(3 << 20))  # 30 s at rspeed 100
    current, nodes = tree["dir"] / "current", tree["nodes"][:1]
    current.symlink_to(v1)
    conf = tree["dir"] / "inosync.conf"
    settings = dict(wpath=str(current), rnodes=[str(n) for n in nodes], edelay=0.2)
    write_config(conf, **settings)
    first_run(run_inosync, conf, v1, nodes)

    write_config(conf, **settings, rspeed=100)  # how, not what: it resumes
    d = restart_and_settle(run_inosync, conf, nodes)
    flip = tree["dir"] / "flip"
    flip.symlink_to(v2)
    flip.replace(current)
    d.wait_log(r"now leads to another directory")
    d.wait_log(r"synced full sync")
    assert tree_diff(v2, nodes[0]) == [], d.log()
    flip.symlink_to(v1)
    flip.replace(current)  # the rollback
    d.wait_log(r"now leads to another directory", count=2)
    time.sleep(1.0)
    assert d.stop() == 0  # big.bin is still on its way
    assert tree_diff(v1, nodes[0]) != []

    write_config(conf, **settings)
    d = restart_and_settle(run_inosync, conf, nodes)
    assert tree_diff(v1, nodes[0]) == [], d.log()
    assert d.stop() == 0
