"""Review 19a: the relay tiers' hold of rsync's temporary names (temphold.py)
attacked end to end, with a real daemon and real rsync.

A held file is left out of every run by an exact exclude, which also keeps a
node's copy at that path from deletion. So a node may hold something at a
held path that no run of this daemon copied while it was held: what was
there before (a directory of that name, a real file), whose deletion was
still owed when the held file appeared. If the held file then vanishes,
that deletion must still reach the node."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest
from helpers import tree_diff, wait_converged, wait_until, write_config

pytestmark = pytest.mark.slow  # end to end: a real daemon and rsync

NAME = ".d.AbC123"  # the shape of rsync's temporary name for "d"


@pytest.mark.parametrize("where", ["", "sub/"])
def test_a_directory_replaced_by_a_temporary_shaped_file_is_deleted_when_it_lands(
        tree, run_inosync, tmp_path, where):
    src: Path = tree["src"]  # type: ignore[assignment]
    node: Path = tree["nodes"][0]  # type: ignore[index]
    (src / where / NAME).mkdir(parents=True)
    (src / where / NAME / "inner").write_text("kept by the node?\n")
    conf = write_config(tmp_path / "inosync.conf", wpath=str(src), rnodes=[str(node)],
                        edelay=1.0)
    d = run_inosync(conf)
    wait_converged(src, [node])
    d.wait_log(r": synced ", count=1)
    # In one batch: the directory goes (with what it holds) and a file of
    # temporary shape takes its name.
    shutil.rmtree(src / where / NAME)
    (src / where / NAME).write_text("written under a temporary name\n")
    d.wait_log(r": synced ", count=2)  # the batch's run, which leaves the held file out
    os.rename(src / where / NAME, src / where / "d")  # it lands
    wait_converged(src, [node], timeout=15)
    assert tree_diff(src, node) == []


@pytest.mark.parametrize("policy", [True, "startup", "running", False])
def test_a_chmod_and_chown_of_wpath_itself_reach_the_node(tree, run_inosync, tmp_path,
                                                          policy):
    """Commit 64f4747 lists a change of wpath itself as "." instead of a whole-tree
    sync: its mode, owner and times must still reach the node, under every
    policy, and nothing below it be touched."""
    src: Path = tree["src"]  # type: ignore[assignment]
    node: Path = tree["nodes"][0]  # type: ignore[index]
    conf = write_config(tmp_path / "inosync.conf", wpath=str(src), rnodes=[str(node)],
                        edelay=0.5, delete=policy)
    d = run_inosync(conf)
    wait_converged(src, [node])
    d.wait_log(r": synced ", count=1)
    (node / "only-on-node").write_text("a whole-tree run would delete this under True\n")
    os.chmod(src, 0o751)
    os.chown(src, 4242, 4343)
    os.utime(src, (1_000_000_000, 1_000_000_000))
    d.wait_log(r": synced ", count=2)

    def same() -> bool:
        a, b = os.stat(src), os.stat(node)
        return (a.st_mode, a.st_uid, a.st_gid, a.st_mtime_ns) == \
            (b.st_mode, b.st_uid, b.st_gid, b.st_mtime_ns)
    wait_until(same, 10, "wpath's mode, owner and times on the node")
    assert (node / "only-on-node").exists()  # "." is wpath itself, not its tree


def test_a_node_added_by_a_reload_loses_its_old_file_at_a_held_path(tree, run_inosync,
                                                                     tmp_path):
    """The new node's full sync leaves a held file out, and its exclude keeps the
    node's own old file of that name; when the held file lands, the new node
    must lose that file too."""
    src: Path = tree["src"]  # type: ignore[assignment]
    node1, node2 = tree["nodes"]  # type: ignore[misc]
    (node2 / ".n.AbC123").write_text("an old copy, from before this node joined\n")
    conf = tmp_path / "inosync.conf"
    write_config(conf, wpath=str(src), rnodes=[str(node1)], edelay=0.5)
    d = run_inosync(conf)
    wait_converged(src, [node1])
    d.wait_log(r": synced ", count=1)
    (src / ".n.AbC123").write_text("new\n")  # held: nothing ran since
    write_config(conf, wpath=str(src), rnodes=[str(node1), str(node2)], edelay=0.5)
    d.signal(signal.SIGHUP)
    d.wait_log(r"node2: synced full sync")
    os.rename(src / ".n.AbC123", src / "n")  # it lands
    wait_converged(src, [node1, node2], timeout=15)
