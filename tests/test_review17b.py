"""Hostile review of the delete setting (issue 17.7b, review 17b).

The rule: under each policy a node never loses anything plain rsync with that
policy's flags would not delete; under True it ends identical. Each test here
is a way a shortcut broke that rule (or a check that it holds), with a real
daemon and real rsync where it matters.
"""

from __future__ import annotations

import signal
import stat
import sys
from pathlib import Path

import pytest
from helpers import RSYNC, wait_until, write_config


def _node_only_dir(node: Path, name: str = "uploads") -> Path:
    d = node / name
    (d / "2026").mkdir(parents=True)
    (d / "2026" / "photo.jpg").write_text("only on the node\n")
    return d


@pytest.mark.slow
def test_running_never_deletes_a_node_only_directory_a_new_file_lands_on(tmp_path,
                                                                        run_inosync):
    """delete = 'running' keeps what was never seen deleted. A file made on the
    source under a name where the node holds a directory of its own (an
    application's uploads, say) was sent with --force: rsync removed the
    node's directory with everything in it. Plain rsync without --delete (and
    without --force) refuses: 'cannot delete non-empty directory'."""
    src, node = tmp_path / "src", tmp_path / "node"
    src.mkdir()
    (src / "index.html").write_text("hi\n")
    node.mkdir()
    uploads = _node_only_dir(node)
    conf = write_config(tmp_path / "inosync.conf", wpath=str(src), rnodes=[str(node)],
                        edelay=0.2, retry_min=0.2, retry_max=0.5, delete="running")
    d = run_inosync(conf)
    d.wait_log("synced full sync")
    (src / "uploads").write_text("a file, never a deletion\n")
    (src / "marker").write_text("after\n")
    wait_until(lambda: (node / "marker").exists(), 20, "the batch on the node")
    d.wait_log(r"rsync failed|synced \d+ path")
    assert (uploads / "2026" / "photo.jpg").is_file(), d.log()
    d.stop()


@pytest.mark.slow
def test_running_a_touch_of_wpath_never_forces_the_whole_tree(tmp_path, run_inosync):
    """A change of wpath itself under 'running' is listed as "." and sent whole;
    with --force that whole-tree run removed every directory of the node where
    the source has a file (drift: the node made its own), with all it holds,
    though inosync saw nothing deleted there."""
    src, node = tmp_path / "src", tmp_path / "node"
    src.mkdir()
    (src / "cache").write_text("a file on the source\n")
    conf = write_config(tmp_path / "inosync.conf", wpath=str(src), rnodes=[str(node)],
                        edelay=0.2, retry_min=0.2, retry_max=0.5, delete="running")
    d = run_inosync(conf)
    d.wait_log("synced full sync", timeout=60)
    (node / "cache").unlink()  # the node's own directory now stands there
    cache = _node_only_dir(node, "cache")
    src.chmod(0o750)  # IN_ATTRIB on wpath: "." listed
    wait_until(lambda: stat.S_IMODE(node.stat().st_mode) == 0o750, 60, "wpath's mode sent")
    d.wait_log(r"synced 1 path", timeout=60)
    assert (cache / "2026" / "photo.jpg").is_file(), d.log()
    d.stop()


def _held_rsync(path: Path) -> tuple[Path, Path]:
    """An rsync (the config's rsync setting) that, while the file hold exists,
    says so in the file waiting and waits before it execs the real one: a run
    the daemon started and that has not yet done anything."""
    hold, waiting = path.with_suffix(".hold"), path.with_suffix(".waiting")
    path.write_text(f"""#!{sys.executable}
import os, sys, time
if os.path.exists({str(hold)!r}):
    open({str(waiting)!r}, "w").close()
    while os.path.exists({str(hold)!r}):
        time.sleep(0.05)
os.execv({RSYNC!r}, [{RSYNC!r}, *sys.argv[1:]])
""")
    path.chmod(0o755)
    return hold, waiting


@pytest.mark.slow
def test_a_reload_to_a_policy_that_keeps_stops_the_run_that_would_delete(tmp_path,
                                                                        run_inosync):
    """A careless start under delete = True: the operator sees the full sync
    under way, sets delete = False and reloads. The run already started kept
    its --delete and, going on after the reload said 'delete: True -> False',
    removed what the node alone held. A reload that narrows what may be
    deleted stops the runs started under the old policy (their batch stays
    pending, sent again under the new one)."""
    src, node = tmp_path / "src", tmp_path / "node"
    src.mkdir()
    (src / "index.html").write_text("hi\n")
    node.mkdir()
    (node / "precious.txt").write_text("only on the node\n")
    rsync = tmp_path / "rsync-held"
    hold, waiting = _held_rsync(rsync)
    hold.touch()
    settings = dict(wpath=str(src), rnodes=[str(node)], edelay=0.2, retry_min=0.2,
                    retry_max=0.5, rsync=str(rsync))
    conf = write_config(tmp_path / "inosync.conf", **settings, delete=True)
    d = run_inosync(conf)
    wait_until(waiting.exists, 20, "the start's run under way")
    write_config(conf, **settings, delete=False)
    d.signal(signal.SIGHUP)
    d.wait_log("reloaded; full sync")
    hold.unlink()
    d.wait_log("synced full sync")
    assert (node / "index.html").is_file()
    assert (node / "precious.txt").is_file(), d.log()
    assert d.stop() == 0


@pytest.mark.slow
@pytest.mark.parametrize("policy", [True, "running"])
@pytest.mark.parametrize("where", ["app/", ""])
def test_a_gone_file_never_takes_the_excluded_directory_of_its_name(tmp_path, run_inosync,
                                                                    policy, where):
    """rexcludes = ['cache/'] keeps each node's own cache directory (README: the
    exclude protects node-local data). A file named cache made and removed on
    the source was listed as gone: rsync matches a missing argument as no
    directory, so 'cache/' did not protect it, and --delete-missing-args
    removed the node's directory with all it held. Plain rsync --delete with
    that exclude keeps it."""
    src, node = tmp_path / "src", tmp_path / "node"
    (src / "app").mkdir(parents=True)
    (src / "app" / "index.php").write_text("<?php\n")
    conf = write_config(tmp_path / "inosync.conf", wpath=str(src), rnodes=[str(node)],
                        edelay=0.5, rexcludes=["cache/"], delete=policy)
    d = run_inosync(conf)
    d.wait_log("synced full sync")
    cache = node / where / "cache"
    cache.mkdir()
    (cache / "session").write_text("only on this node\n")
    made = src / where / "cache"
    made.write_text("a moment\n")
    made.unlink()
    (src / "marker").write_text("after\n")
    wait_until(lambda: (node / "marker").exists(), 20, "the batch on the node")
    d.wait_log(r"synced \d+ path")
    assert (cache / "session").is_file(), d.log()
    assert d.stop() == 0
