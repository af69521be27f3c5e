"""The delete setting end to end (issue 17.7b): a real daemon, real inotify and
rsync, one local node, for each policy. Which deletions happen when: files only
on the node before the start, a file deleted on the source while running, a
directory and a file renamed while running (the move replay), the periodic
whole-tree sync, a reload; then --verify. Each stage compares the whole trees:
the node must hold what the source holds plus exactly the expected extras."""

from __future__ import annotations

import re
import signal
import subprocess
from pathlib import Path

import pytest
from helpers import Inosync, inosync_argv, tree_diff, wait_until, write_config

pytestmark = pytest.mark.slow

PLANTED = {"planted.txt", "docs/planted2.txt"}  # only on the node, before the start
# What the source loses while running: gone.txt deleted, mv/ renamed to moved/
# (with a file only the node has inside), index.html renamed to home.html.
# docs/a.txt is deleted in the batch that also lists docs (its mode changed).
LOST = {"gone.txt", "mv/", "mv/f.txt", "index.html", "docs/a.txt"}

# What only the node holds after the start-up sync, and after the changes
# while running (and the periodic whole-tree syncs after them).
AFTER_START = {True: set(), "startup": set(), "running": PLANTED | {"mv/nodeonly.txt"},
               False: PLANTED | {"mv/nodeonly.txt"}}
AFTER_RUNNING = {True: set(), "startup": LOST,
                 # mv/ goes with all it holds: it was deleted on the source
                 "running": PLANTED,
                 False: PLANTED | LOST | {"mv/nodeonly.txt"}}
LATE = {True: set(), "startup": {"late.txt"}, "running": set(), False: {"late.txt"}}
AFTER_RELOAD = {True: set(), "startup": set(), "running": PLANTED,
                False: PLANTED | LOST | {"mv/nodeonly.txt", "late.txt"}}


def node_only(src: Path, node: Path) -> set[str]:
    """The paths only the node holds; any other difference fails the test."""
    lines = tree_diff(src, node)
    other = [line for line in lines if not line.startswith("*deleting")]
    assert not other, f"the node differs otherwise: {lines}"
    return {line.split(None, 1)[1] for line in lines}


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path]:
    src, node = tmp_path / "src", tmp_path / "node"
    for d in (src / "docs" / "old", src / "mv"):
        d.mkdir(parents=True)
    for name, text in {"index.html": "<h1>hi</h1>", "gone.txt": "bye", "docs/a.txt": "a",
                       "docs/old/b.txt": "b", "mv/f.txt": "f", "late.txt": "late"}.items():
        (src / name).write_text(text + "\n")
    subprocess.run(["rsync", "-a", f"{src}/", f"{node}/"], check=True)
    for name in (*PLANTED, "mv/nodeonly.txt"):
        (node / name).write_text("only on the node\n")
    return src, node


def full_syncs(d: Inosync) -> int:
    return d.log().count("synced full sync")


@pytest.mark.parametrize("policy", [True, "startup", "running", False])
def test_what_each_policy_deletes_and_when(setup, tmp_path, run_inosync, policy):
    src, node = setup
    conf = write_config(tmp_path / "inosync.conf", wpath=str(src), rnodes=[str(node)],
                        edelay=0.2, resync_interval=2, delete=policy)
    d = run_inosync(conf, "-v")
    d.wait_log("synced full sync")
    assert node_only(src, node) == AFTER_START[policy]

    (src / "gone.txt").unlink()
    (src / "docs" / "a.txt").unlink()
    (src / "docs").chmod(0o750)
    (src / "mv").rename(src / "moved")
    (src / "index.html").rename(src / "home.html")
    (src / "marker").write_text("last\n")  # sent after all the above
    wait_until(lambda: (node / "marker").exists(), 20, "the changes on the node")
    assert not (node / "moved" / "nodeonly.txt").exists()  # as plain rsync: never carried
    assert node_only(src, node) == AFTER_RUNNING[policy]
    if policy is True:
        assert re.search(r"renames replayed: [1-9]", d.log()), d.log()
    else:
        assert d.log().count(f"not replayed: delete = {policy!r}") == 1, d.log()

    # wpath itself changes in the batch of a deletion: a whole-tree run (which
    # deletes nothing under 'running'), except under 'running', where it is listed.
    (src / "late.txt").unlink()
    src.chmod(0o750)
    (src / "marker").write_text("later\n")
    wait_until(lambda: (node / "marker").read_text() == "later\n", 20, "the second batch")
    assert node_only(src, node) == AFTER_RUNNING[policy] | LATE[policy]

    seen = full_syncs(d)  # the periodic whole-tree syncs (resync_interval) delete nothing more
    d.wait_log("synced full sync", count=seen + 2)
    assert node_only(src, node) == AFTER_RUNNING[policy] | LATE[policy]

    verify = subprocess.run([*inosync_argv(), "-c", str(conf), "--verify", "--nagios"],
                            capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    if AFTER_RUNNING[policy] | LATE[policy]:
        assert f"allowed: delete = {policy!r} keeps node-only files" in verify.stdout
    else:
        assert verify.stdout.splitlines()[1] == f"{node}: identical", verify.stdout

    seen = full_syncs(d)
    d.signal(signal.SIGHUP)  # a reload's whole-tree sync deletes as the start's does
    # ... made by every reload under 'startup' only: others sync on a change of settings
    d.wait_log("reloaded; full sync" if policy == "startup" else "reloaded; no sync")
    d.wait_log("synced full sync", count=seen + 2)
    assert node_only(src, node) == AFTER_RELOAD[policy]
    assert d.stop() == 0


def test_true_verify_is_critical_for_node_only_files(setup, tmp_path):
    src, node = setup
    conf = write_config(tmp_path / "inosync.conf", wpath=str(src), rnodes=[str(node)])
    verify = subprocess.run([*inosync_argv(), "-c", str(conf), "--verify", "--nagios"],
                            capture_output=True, text=True, timeout=60)
    assert verify.returncode == 2 and verify.stdout.startswith("CRITICAL: 1 of 1 node differs")


@pytest.mark.parametrize("policy", ["running", False])
def test_a_directory_replaced_by_a_file(tmp_path, run_inosync, policy):
    """'running' deletes it there with all it holds (it was deleted on the source);
    False cannot: the node keeps it, and the run fails, said in the log."""
    src, node = tmp_path / "src", tmp_path / "node"
    (src / "d").mkdir(parents=True)
    (src / "d" / "x").write_text("x\n")
    (src / "keep").write_text("k\n")
    conf = write_config(tmp_path / "inosync.conf", wpath=str(src), rnodes=[str(node)],
                        edelay=0.2, retry_min=0.2, retry_max=0.5, delete=policy)
    d = run_inosync(conf)
    d.wait_log("synced full sync")
    (src / "d" / "x").unlink()
    (src / "d").rmdir()
    (src / "d").write_text("now a file\n")
    if policy == "running":
        wait_until(lambda: (node / "d").is_file(), 20, "the file on the node")
        assert node_only(src, node) == set()
    else:
        d.wait_log(r"rsync failed: exit 23 .*could not make way for new regular file: d")
        assert (node / "d" / "x").is_file()
    assert d.stop() == 0
