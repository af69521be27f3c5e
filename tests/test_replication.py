"""End to end through the `inosync` command: real inotify, real rsync, local nodes."""

from __future__ import annotations

import os
import shutil
import signal
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import Inosync, tree_diff, wait_converged, wait_until, write_config
from randomops import ODD_NAMES

pytestmark = pytest.mark.slow  # end to end: real processes


def start(tree: dict, run_inosync: Callable[..., Inosync], *args: str, **settings: object):
    src, nodes = tree["src"], tree["nodes"]
    settings.setdefault("edelay", 0.2)
    conf = write_config(tree["dir"] / "inosync.conf", wpath=str(src),
                        rnodes=[str(n) for n in nodes], **settings)
    d = run_inosync(conf, *args)
    return d, src, nodes


@pytest.fixture
def synced(tree, run_inosync):
    """A running daemon whose initial sync is done."""
    d, src, nodes = start(tree, run_inosync, "-v")
    wait_converged(src, nodes)
    d.wait_log("watching")
    return d, src, nodes


def test_initial_sync_reaches_every_node(tree, run_inosync):
    d, src, nodes = start(tree, run_inosync)
    wait_converged(src, nodes)
    assert d.stop() == 0


def _create(src: Path) -> None:
    (src / "new.txt").write_text("new\n")


def _append(src: Path) -> None:
    with open(src / "docs" / "a.txt", "a") as f:
        f.write("more\n")


def _truncate(src: Path) -> None:
    os.truncate(src / "docs" / "a.txt", 0)


def _delete_file(src: Path) -> None:
    (src / "docs" / "a.txt").unlink()


def _delete_tree(src: Path) -> None:
    shutil.rmtree(src / "docs")


def _rename_file(src: Path) -> None:
    (src / "docs" / "a.txt").rename(src / "renamed.txt")


def _rename_over(src: Path) -> None:
    (src / "index.html").rename(src / "docs" / "a.txt")


def _rename_dir(src: Path) -> None:
    (src / "docs").rename(src / "documents")
    (src / "documents" / "old" / "later.txt").write_text("written after the move\n")


def _move_out(src: Path) -> None:
    outside = src.parent / "outside"
    outside.mkdir()
    (src / "docs").rename(outside / "docs")
    # The moved directory's old watches must not report these as tree paths.
    (outside / "docs" / "ghost.txt").write_text("not in the tree\n")
    (outside / "docs" / "old" / "ghost2.txt").write_text("not in the tree\n")


def _move_in(src: Path) -> None:
    outside = src.parent / "incoming"
    (outside / "x" / "y").mkdir(parents=True)
    (outside / "x" / "y" / "f.txt").write_text("moved in\n")
    outside.rename(src / "incoming")


def _mkdir_p_with_files(src: Path) -> None:
    deep = src / "a" / "b" / "c" / "d" / "e"
    deep.mkdir(parents=True)
    for i in range(20):
        (deep / f"f{i}").write_text(str(i))
        (deep.parent / f"g{i}").write_text(str(i))


def _symlinks(src: Path) -> None:
    outside = src.parent / "outside-dir"
    outside.mkdir()
    (outside / "secret").write_text("must not be copied\n")
    os.symlink("docs/a.txt", src / "link-to-file")
    os.symlink(str(outside), src / "link-out")
    os.symlink("does/not/exist", src / "dangling")
    (outside / "secret2").write_text("nor this\n")


def _chmod(src: Path) -> None:
    os.chmod(src / "docs" / "a.txt", 0o600)
    os.chmod(src / "docs" / "old", 0o750)


def _touch(src: Path) -> None:
    os.utime(src / "index.html", (1_000_000_000, 1_000_000_000))


def _file_to_dir(src: Path) -> None:
    (src / "docs" / "a.txt").unlink()
    (src / "docs" / "a.txt").mkdir()
    (src / "docs" / "a.txt" / "inner").write_text("inner\n")


def _dir_to_file(src: Path) -> None:
    shutil.rmtree(src / "docs" / "old")
    (src / "docs" / "old").write_text("now a file\n")


def _atomic_save(src: Path) -> None:
    tmp = src / "docs" / ".a.txt.swp"
    tmp.write_text("saved atomically\n")
    tmp.rename(src / "docs" / "a.txt")


def _hardlink(src: Path) -> None:
    os.link(src / "index.html", src / "index-copy.html")


CHANGES = [_create, _append, _truncate, _delete_file, _delete_tree, _rename_file,
           _rename_over, _rename_dir, _move_out, _move_in, _mkdir_p_with_files, _symlinks,
           _chmod, _touch, _file_to_dir, _dir_to_file, _atomic_save, _hardlink]


@pytest.mark.parametrize("change", CHANGES, ids=lambda f: f.__name__.strip("_"))
def test_change_reaches_every_node(synced, change):
    d, src, nodes = synced
    change(src)
    wait_converged(src, nodes)
    for node in nodes:
        assert not (node / "docs" / "ghost.txt").exists()
        if (node / "link-out").exists() or os.path.islink(node / "link-out"):
            assert os.path.islink(node / "link-out"), "symlink followed instead of copied"
    assert "Traceback" not in d.log()
    assert d.stop() == 0


def test_changes_go_in_one_rsync_per_node(synced):
    d, src, nodes = synced
    runs_before = d.log().count("synced")
    d.signal(signal.SIGSTOP)  # all 300 reach it in one read, however busy the machine is
    try:
        for i in range(300):
            (src / f"file{i:03}").write_text(str(i))
    finally:
        d.signal(signal.SIGCONT)
    wait_converged(src, nodes)
    d.wait_log("synced", count=runs_before + len(nodes))
    # 300 changes within the debounce window: one run per node, not 300.
    assert d.log().count("synced") <= runs_before + 2 * len(nodes)
    assert d.log().count("synced full sync") == len(nodes)  # the initial one only


def test_odd_names_replicate(synced):
    d, src, nodes = synced
    for name in ODD_NAMES:
        (src / name).write_text(f"file {name!r}\n")
        (src / "docs" / (name + ".d")).mkdir()
        (src / "docs" / (name + ".d") / name).write_text("inside\n")
    wait_converged(src, nodes)
    for name in ODD_NAMES[:5]:
        (src / name).rename(src / (name + ".moved"))
        shutil.rmtree(src / "docs" / (name + ".d"))
    wait_converged(src, nodes)
    assert os.fsencode(ODD_NAMES[-1]) in os.listdir(os.fsencode(nodes[0]))


def test_non_utf8_directory_is_watched(synced):
    d, src, nodes = synced
    bad = os.fsencode(src) + b"/dir-\xff"
    os.mkdir(bad)
    wait_converged(src, nodes)
    # Written after the directory's own sync: only its watch can report it.
    with open(bad + b"/later-\xfe.txt", "w") as f:
        f.write("later\n")
    wait_converged(src, nodes)
    assert b"later-\xfe.txt" in os.listdir(os.fsencode(nodes[1]) + b"/dir-\xff")


def test_excluded_paths_neither_sync_nor_trigger(tree, run_inosync):
    d, src, nodes = start(tree, run_inosync, "-v", rexcludes=["*.tmp", "/cache", "build/"])
    excludes = ("*.tmp", "/cache", "build/")
    wait_converged(src, nodes, excludes=excludes)
    runs = d.log().count("running (")
    (src / "cache").mkdir()
    (src / "cache" / "x").write_text("x")
    (src / "junk.tmp").write_text("x")
    (src / "docs" / "build").mkdir()
    (src / "docs" / "build" / "out.o").write_text("x")
    # A change after the excluded ones: once it is synced, the excluded
    # ones have had every chance to show up.
    (src / "docs" / "real.txt").write_text("real")
    wait_converged(src, nodes, excludes=excludes)
    d.wait_log("synced 1 path", count=len(nodes))
    assert d.log().count("running (") == runs + len(nodes)
    for node in nodes:
        assert not (node / "cache").exists() and not (node / "junk.tmp").exists()
        assert not (node / "docs" / "build").exists()


def test_pretend_touches_no_node(tree, run_inosync):
    d, src, nodes = start(tree, run_inosync, "-p", "-v")
    d.wait_log("would run", count=len(nodes))
    (src / "new.txt").write_text("x")
    d.wait_log(r"would run \(1 path\)", count=len(nodes))
    assert "--files-from=" in d.log() and f"{src}/ {nodes[0]}/" in d.log()
    assert all(not os.listdir(n) for n in nodes)
    assert d.stop() == 0


def test_deletion_under_replaced_parent(synced):
    """A path whose parent became a file: rsync must not skip the run's deletions."""
    d, src, nodes = synced
    (src / "docs" / "old" / "b.txt").write_text("changed")
    (src / "index.html").unlink()
    shutil.rmtree(src / "docs" / "old")
    (src / "docs" / "old").write_text("file now")
    wait_converged(src, nodes)
    assert not (nodes[0] / "index.html").exists()


def test_symlink_to_outside_dir_is_not_followed(synced, tmp_path):
    d, src, nodes = synced
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    os.symlink(str(outside), src / "link")
    wait_converged(src, nodes)
    changes = d.log().count("change(s)")
    (outside / "f").write_text("outside the tree")
    (src / "marker").write_text("m")
    wait_converged(src, nodes)
    d.wait_log("change", count=changes + 1)
    log_after = d.log().split("\n")
    assert not any("'link/f'" in line for line in log_after)
    assert stat.S_ISLNK(os.lstat(nodes[0] / "link").st_mode)


def test_stop_is_clean(synced):
    d, src, nodes = synced
    assert d.stop() == 0
    assert "Traceback" not in d.log()


def test_wpath_vanishing_deletes_nothing(synced, tmp_path):
    d, src, nodes = synced
    src.rename(tmp_path / "gone")
    wait_until(lambda: d.proc.poll() is not None, 20, "inosync to stop")
    assert d.proc.returncode == 1
    assert "disappeared" in d.log()
    assert tree_diff(tmp_path / "gone", nodes[0]) == []
