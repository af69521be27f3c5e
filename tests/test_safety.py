"""Nothing excluded reaches a node, no batch is too big for a command line,
and the daemon outlives its own scratch directory: end to end, real rsync."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import overflow_queue, tree_diff, wait_converged, wait_until, write_config

pytestmark = pytest.mark.slow  # end to end: real processes

EXCLUDES = ("secret/", "*.key")


def leaked(node: Path) -> list[str]:
    """Paths on a node that the excludes say must never be there."""
    found = []
    for dirpath, dirnames, filenames in os.walk(node):
        rel = os.path.relpath(dirpath, node)
        found += [f"{rel}/{d}" for d in dirnames if d == "secret"]
        found += [f"{rel}/{f}" for f in filenames if f.endswith(".key")]
    return found


def make_secret_dir(where: Path) -> None:
    where.mkdir()
    (where / "id.key").write_text("private\n")
    (where / "notes.txt").write_text("private too\n")


def swap_file_for_dir(where: Path) -> None:
    where.unlink()
    make_secret_dir(where)


def rename_into_secret(parent: Path) -> None:
    (parent / "public").rename(parent / "secret")


SHAPES: dict[str, tuple[Callable[[Path], None], Callable[[Path], None]]] = {
    # name: (what exists before the daemon starts, the change made while it runs)
    "top-level file swapped for a dir": (lambda s: (s / "secret").write_text("a file\n"),
                                         lambda s: swap_file_for_dir(s / "secret")),
    "nested file swapped for a dir": (lambda s: (s / "docs" / "secret").write_text("file\n"),
                                      lambda s: swap_file_for_dir(s / "docs" / "secret")),
    "top-level dir created": (lambda s: None, lambda s: make_secret_dir(s / "secret")),
    "nested dir created": (lambda s: None, lambda s: make_secret_dir(s / "docs" / "secret")),
    "top-level dir renamed to an excluded name": (
        lambda s: make_secret_dir(s / "public"), lambda s: rename_into_secret(s)),
    "nested dir renamed to an excluded name": (
        lambda s: make_secret_dir(s / "docs" / "public"),
        lambda s: rename_into_secret(s / "docs")),
    "excluded dir swapped for a file": (lambda s: make_secret_dir(s / "secret"),
                                        lambda s: (shutil.rmtree(s / "secret"),
                                                   (s / "secret").write_text("file now\n"))),
    "key files at the top and deeper": (lambda s: None,
                                        lambda s: ((s / "a.key").write_text("k"),
                                                   (s / "docs" / "b.key").write_text("k"))),
}


@pytest.mark.parametrize("shape", SHAPES)
def test_excluded_content_never_reaches_a_node(tree, run_inosync, shape):
    src, nodes = tree["src"], tree["nodes"]
    before, change = SHAPES[shape]
    before(src)
    conf = write_config(tree["dir"] / "inosync.conf", wpath=str(src),
                        rnodes=[str(n) for n in nodes], rexcludes=list(EXCLUDES), edelay=0.2)
    d = run_inosync(conf, "-v")
    wait_converged(src, nodes, excludes=EXCLUDES)
    d.wait_log("synced full sync", count=len(nodes))
    change(src)
    (src / "marker").write_text("after the change\n")  # a batch that surely ran
    wait_until(lambda: all((n / "marker").exists() for n in nodes), 20, "the batch")
    wait_converged(src, nodes, excludes=EXCLUDES)
    assert [leaked(n) for n in nodes] == [[], []]
    # And whole-tree runs (a reload that changes rsync_args syncs everything) agree.
    with conf.open("a") as f:
        f.write("rsync_args = ['--numeric-ids']\n")
    d.signal(signal.SIGHUP)
    d.wait_log("synced full sync", count=2 * len(nodes))
    assert [leaked(n) for n in nodes] == [[], []]
    assert [tree_diff(src, n, EXCLUDES) for n in nodes] == [[], []]
    assert d.stop() == 0


def test_thousands_of_long_top_level_names_in_one_batch(tree, run_inosync):
    src, node = tree["src"], tree["nodes"][0]
    bulk = src / "bulk"  # a big tree, so 9,500 paths stay a list (not a whole-tree run)
    bulk.mkdir()
    for i in range(40_000):
        (bulk / str(i)).touch()
    conf = write_config(tree["dir"] / "inosync.conf", wpath=str(src), rnodes=[str(node)],
                        edelay=4)  # every name below in one batch
    d = run_inosync(conf, "-v")
    wait_converged(src, [node], timeout=60)
    d.wait_log("synced full sync")
    staged = tree["dir"] / "staged"  # outside wpath: made unseen, then moved in
    staged.mkdir()
    names = [f"{i:05d}-{'n' * 244}" for i in range(9_500)]  # 2.5 MB: more than argv holds
    for name in names:
        (staged / name).write_bytes(b"x")
    # One IN_MOVED_TO each (within max_queued_events), all read at once after
    # SIGCONT: one batch, however long this machine takes to make them.
    d.signal(signal.SIGSTOP)
    try:
        for name in names:
            (staged / name).rename(src / name)
    finally:
        d.signal(signal.SIGCONT)
    d.wait_log("synced 9500 paths", timeout=60)
    wait_converged(src, [node], timeout=60)
    assert "rsync failed" not in d.log()
    assert d.stop() == 0


def scratch_dir(tmpdir: Path) -> Path:
    found = wait_until(lambda: list(tmpdir.glob("inosync-*")), 10, "the daemon's list dir")
    assert isinstance(found, list)
    return found[0]


def test_list_directory_removed_while_running(tree, run_inosync, tmp_path):
    src, nodes = tree["src"], tree["nodes"]
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    conf = write_config(tree["dir"] / "inosync.conf", wpath=str(src),
                        rnodes=[str(n) for n in nodes], edelay=0.2, retry_min=0.5)
    d = run_inosync(conf, "-v", env={"TMPDIR": str(tmpdir)})
    wait_converged(src, nodes)
    shutil.rmtree(scratch_dir(tmpdir))  # what a tmp cleaner does to an idle daemon
    (src / "docs" / "after-cleanup.txt").write_text("still replicated\n")
    wait_converged(src, nodes)
    d.wait_log("directory for rsync list files was removed")
    assert d.proc.poll() is None and "Traceback" not in d.log()
    assert d.stop() == 0
    assert not list(tmpdir.iterdir())  # the new one is cleaned up too


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_list_directory_on_a_full_filesystem(tree, run_inosync, tiny_tmpfs):
    src, nodes = tree["src"], tree["nodes"]
    conf = write_config(tree["dir"] / "inosync.conf", wpath=str(src),
                        rnodes=[str(n) for n in nodes], edelay=0.2, retry_min=0.5,
                        retry_max=1)
    d = run_inosync(conf, "-v", env={"TMPDIR": str(tiny_tmpfs)})
    wait_converged(src, nodes)
    filler = tiny_tmpfs / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:  # fill it to the last byte
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    (src / "docs" / "while-full.txt").write_text("waits for space\n")
    d.wait_log("cannot write rsync's list files")
    assert d.proc.poll() is None
    filler.unlink()
    wait_converged(src, nodes)
    d.wait_log("recovered")
    assert "Traceback" not in d.log()
    assert d.stop() == 0


# ---------------------------------------------------------------- wpath's identity


def test_wpath_replaced_by_an_empty_dir_during_overflow_deletes_nothing(tree, run_inosync):
    src, nodes = tree["src"], tree["nodes"]
    (src / "flood").mkdir()
    conf = write_config(tree["dir"] / "inosync.conf", wpath=str(src),
                        rnodes=[str(n) for n in nodes], edelay=0.2)
    d = run_inosync(conf, "-v")
    wait_converged(src, nodes)
    d.wait_log("synced full sync", count=len(nodes))

    def swap() -> None:
        src.rename(tree["dir"] / "src.moved")
        src.mkdir()

    overflow_queue(d, src / "flood", swap)
    assert d.proc.wait(20) == 1
    assert "stopping without syncing" in d.log() and "is empty" in d.log()
    assert all((n / "index.html").exists() for n in nodes)  # nothing deleted
    assert "Traceback" not in d.log()


def test_wpath_deleted_during_overflow_stops(tree, run_inosync):
    src, nodes = tree["src"], tree["nodes"]
    (src / "flood").mkdir()
    conf = write_config(tree["dir"] / "inosync.conf", wpath=str(src),
                        rnodes=[str(n) for n in nodes], edelay=0.2)
    d = run_inosync(conf, "-v")
    wait_converged(src, nodes)
    overflow_queue(d, src / "flood", lambda: shutil.rmtree(src))
    assert d.proc.wait(20) == 1
    assert f"wpath {src} disappeared" in d.log()
    assert all((n / "index.html").exists() for n in nodes)


def deploy_tree(tmp_path: Path, name: str, text: str) -> Path:
    site = tmp_path / name
    (site / "htdocs" / "css").mkdir(parents=True)
    (site / "htdocs" / "index.html").write_text(text)
    (site / "htdocs" / "css" / "site.css").write_text(f"/* {text} */\n")
    return site


@pytest.mark.parametrize("how", ["mv over", "two renames", "symlink switch"])
def test_atomic_deploy_above_wpath_is_followed(tmp_path, run_inosync, how):
    nodes = [tmp_path / "node1", tmp_path / "node2"]
    for n in nodes:
        n.mkdir()
    if how == "symlink switch":  # releases/1 and releases/2, "current" points at one
        deploy_tree(tmp_path / "releases", "1", "old")
        (tmp_path / "current").symlink_to("releases/1")
        wpath = tmp_path / "current" / "htdocs"
    else:
        deploy_tree(tmp_path, "site", "old")
        wpath = tmp_path / "site" / "htdocs"
    conf = write_config(tmp_path / "inosync.conf", wpath=str(wpath),
                        rnodes=[str(n) for n in nodes], edelay=0.5)
    d = run_inosync(conf, "-v")
    wait_converged(wpath, nodes)
    d.wait_log("synced full sync", count=len(nodes))
    if how == "symlink switch":
        deploy_tree(tmp_path / "releases", "2", "new")
        (tmp_path / "current.tmp").symlink_to("releases/2")
        (tmp_path / "current.tmp").rename(tmp_path / "current")  # as ln -sfn does
    else:
        new = deploy_tree(tmp_path, "site.new", "new")
        (new / "htdocs" / "only-in-new.txt").write_text("new\n")
        if how == "mv over":
            shutil.rmtree(tmp_path / "site")
            new.rename(tmp_path / "site")
        else:
            (tmp_path / "site").rename(tmp_path / "site.old")
            new.rename(tmp_path / "site")
    d.wait_log("following it, with a full sync")
    wait_converged(wpath, nodes)
    assert all((n / "index.html").read_text() == "new" for n in nodes)
    # Later edits come from the new tree, and only from it.
    (wpath / "css" / "site.css").write_text("/* edited after the deploy */\n")
    (wpath / "late.txt").write_text("late\n")
    wait_converged(wpath, nodes)
    assert d.proc.poll() is None
    assert d.stop() == 0


@contextlib.contextmanager
def synced_then_unmounted(tree: dict, run_inosync, mnt: Path, name: str,
                          **settings: object) -> Iterator:
    """A tmpfs on mnt holding `name`, a daemon that synced it all; unmounted on exit."""
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True)
    try:
        (mnt / name).write_text("on the mounted fs\n")
        conf = write_config(tree["dir"] / "inosync.conf", wpath=str(tree["src"]),
                            rnodes=[str(n) for n in tree["nodes"]], edelay=0.2, **settings)
        d = run_inosync(conf, "-v")
        wait_converged(tree["src"], tree["nodes"])
        yield d
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


@pytest.mark.alone  # waits for IN_UNMOUNT: see alone.py
def test_unmount_inside_wpath_watches_what_is_underneath(tree, run_inosync):
    if os.geteuid() != 0:
        pytest.skip("mounting needs root")
    src, nodes = tree["src"], tree["nodes"]
    mnt = src / "mnt"
    mnt.mkdir()
    (mnt / "under.txt").write_text("on the disk below the mount\n")
    with synced_then_unmounted(tree, run_inosync, mnt, "on-tmpfs.txt") as d:
        pass
    wait_converged(src, nodes)  # the node shows what is visible now
    assert all(not (n / "mnt" / "on-tmpfs.txt").exists() for n in nodes)
    (mnt / "written-after-umount.txt").write_text("must replicate\n")
    wait_converged(src, nodes)
    assert all((n / "mnt" / "written-after-umount.txt").exists() for n in nodes)
    assert d.stop() == 0


# ---------------------------------------------------------------- honest logs


def test_source_changing_under_rsync_is_not_an_error(tree, run_inosync):
    """A file rewritten (truncated, then filled) again and again while rsync
    reads it: rsync exits 23 ("read errors mapping") or 24 ("vanished"). The
    node is healthy: no ERROR, no "recovered", and it converges."""
    src, nodes = tree["src"], tree["nodes"][:1]
    conf = write_config(tree["dir"] / "inosync.conf", wpath=str(src),
                        rnodes=[str(n) for n in nodes], edelay=0.1, rspeed=4000,
                        retry_min=0.2, retry_max=1)
    d = run_inosync(conf, "-v")
    wait_converged(src, nodes)
    data = os.urandom(3 * 1024 * 1024)
    deadline = time.monotonic() + 12
    i = 0
    while time.monotonic() < deadline:
        with open(src / "growing.bin", "wb") as f:  # truncated, then written again
            f.write(data[: len(data) - (i % 7) * 100_000])
        victim = src / "docs" / f"gone{i % 3}"
        victim.mkdir(exist_ok=True)
        (victim / "f").write_bytes(data[:200_000])
        if i % 2:
            shutil.rmtree(victim)
        i += 1
        time.sleep(0.15)
    wait_converged(src, nodes, timeout=60)
    log = d.log()
    assert "the source changed during the run" in log  # exit 23 happened, and was churn
    errors = [line for line in log.splitlines() if " ERROR " in line]
    assert errors == [], errors[:5]
    assert "recovered" not in log
    assert d.stop() == 0


@pytest.mark.alone  # waits for IN_UNMOUNT: see alone.py
def test_unmount_leaving_an_empty_mount_point_deletes_nothing(tree, run_inosync):
    if os.geteuid() != 0:
        pytest.skip("mounting needs root")
    src, nodes = tree["src"], tree["nodes"]
    mnt = src / "data"
    mnt.mkdir()  # empty underneath: an unmounted disk leaves nothing
    # The periodic resync (daily by default, every 2 s here) leaves it out too.
    with synced_then_unmounted(tree, run_inosync, mnt, "precious.txt",
                               resync_interval=2) as d:
        pass
    d.wait_log("lost its watch .unmounted.. and is empty now")
    d.wait_log("periodic full sync", count=2 * len(nodes))
    (src / "marker").write_text("a later batch\n")
    wait_until(lambda: all((n / "marker").exists() for n in nodes), 20, "a later batch")
    assert all((n / "data" / "precious.txt").exists() for n in nodes)  # kept
    # What is written there now (an application that did not notice) is not
    # sent either: the copy on the nodes stays as the filesystem left it.
    (mnt / "new.txt").write_text("written after the unmount\n")
    d.wait_log("changes there are not sent until inosync restarts")
    (src / "marker2").write_text("a later batch\n")
    wait_until(lambda: all((n / "marker2").exists() for n in nodes), 20, "a later batch")
    assert not any((n / "data" / "new.txt").exists() for n in nodes)
    assert all((n / "data" / "precious.txt").exists() for n in nodes)  # still kept
    assert d.stop() == 0


def test_wpath_swapped_while_ssh_connects_is_not_what_rsync_reads(tree, run_inosync, sshd,
                                                                   tmp_path):
    """The check that wpath is the watched directory, then rsync opening it: a deploy's
    "mv www www.old; mkdir www" in between must not reach the node."""
    src = tree["src"]
    remote = tmp_path / "remote"
    remote.mkdir()
    slow_ssh = tmp_path / "slow-ssh"
    gate = tmp_path / "connecting"
    slow_ssh.write_text(f"#!/bin/sh\ntouch {gate}\nsleep 2\nexec ssh \"$@\"\n")
    slow_ssh.chmod(0o755)
    conf = write_config(tmp_path / "inosync.conf", wpath=str(src), edelay=0.2,
                        rnodes=[f"root@127.0.0.1:{remote}"],
                        ssh=[str(slow_ssh), *sshd.ssh_command()[1:]], ssh_control=False)
    d = run_inosync(conf, "-v")
    wait_converged(src, [remote], timeout=30)
    gate.unlink()
    with conf.open("a") as f:  # a reload that changes rsync_args: a full sync
        f.write("rsync_args = ['--numeric-ids']\n")
    d.signal(signal.SIGHUP)  # a full sync, through the slow ssh
    wait_until(gate.exists, 20, "the full sync to connect")
    src.rename(tmp_path / "src.old")
    src.mkdir()
    assert d.proc.wait(30) == 1  # then: wpath is another, empty directory: stop
    assert (remote / "index.html").exists() and (remote / "docs" / "a.txt").exists()
    assert tree_diff(tmp_path / "src.old", remote) == []  # it read the directory it checked


def test_node_turned_into_a_symlink_to_wpath_after_start_is_not_synced(tree, run_inosync):
    src, nodes = tree["src"], tree["nodes"]
    conf = write_config(tree["dir"] / "inosync.conf", wpath=str(src),
                        rnodes=[str(n) for n in nodes], edelay=0.2, retry_max=2)
    d = run_inosync(conf, "-v")
    wait_converged(src, nodes)
    shutil.rmtree(nodes[1])
    nodes[1].symlink_to(src)  # someone "links the mirror to the source"
    (src / "docs" / "new.txt").write_text("new\n")
    wait_converged(src, [nodes[0]])
    d.wait_log("is or contains wpath")
    assert (src / "index.html").exists() and (src / "docs" / "new.txt").exists()
    assert "synced" not in "".join(x for x in d.log().splitlines() if str(nodes[1]) in x
                                   and "full sync" not in x)
    assert d.stop() == 0


@pytest.mark.parametrize("how", ["one level too high", "through a stranger's symlink",
                                 "through a stranger's symlink behind ours"])
def test_swaps_that_are_surely_mistakes_stop_instead_of_following(tmp_path, run_inosync, how):
    nodes = [tmp_path / "node"]
    nodes[0].mkdir()
    for release in ("1", "2"):
        deploy_tree(tmp_path / "releases", release, f"release {release}")
    (tmp_path / "current").symlink_to("releases/1/htdocs")
    wpath = tmp_path / "current"
    conf = write_config(tmp_path / "inosync.conf", wpath=str(wpath),
                        rnodes=[str(n) for n in nodes], edelay=0.3)
    d = run_inosync(conf, "-v")
    wait_converged(wpath, nodes)
    (tmp_path / "current.tmp").symlink_to(
        "releases" if how == "one level too high" else "releases/2/htdocs")
    if how == "through a stranger's symlink":
        os.lchown(tmp_path / "current.tmp", 65534, 65534)
    elif how != "one level too high":  # ours leads to theirs (issue 16): the whole chain
        (tmp_path / "current.tmp").rename(tmp_path / "theirs")
        os.lchown(tmp_path / "theirs", 65534, 65534)
        (tmp_path / "current.tmp").symlink_to("theirs")
    (tmp_path / "current.tmp").rename(tmp_path / "current")
    assert d.proc.wait(20) == 1
    assert "stopping without syncing" in d.log()
    assert (nodes[0] / "index.html").read_text() == "release 1"  # nothing else reached it
