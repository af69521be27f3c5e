"""A filesystem mounted inside wpath, then unmounted, leaves an empty mount
point; the nodes keep its copy through every kind of run (a batch listing
the mount point or a directory above it, a whole-tree sync, a rename, a
reload that builds a new watcher), whatever include rules the user wrote.
End to end: real tmpfs mounts, real rsync, a real daemon."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import Inosync, wait_converged, wait_until, write_config

# alone: it waits for a umount's IN_UNMOUNT, which never comes while a mount
# namespace made meanwhile by another worker's test holds a copy of the filesystem
pytestmark = [pytest.mark.slow, pytest.mark.alone]  # end to end: real processes


def mounted(where: Path) -> bool:
    return subprocess.run(["mountpoint", "-q", str(where)]).returncode == 0


@contextlib.contextmanager
def tmpfs(where: Path) -> Iterator[Path]:
    """A tmpfs on where, holding precious data; unmounted at the end if still there."""
    if os.geteuid() != 0:
        pytest.skip("mounting needs root")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)], check=True)
    try:
        (where / "precious.txt").write_text("on the mounted fs\n")
        (where / "sub").mkdir()
        (where / "sub" / "deep.txt").write_text("deeper\n")
        yield where
    finally:
        if mounted(where):
            subprocess.run(["umount", "-l", str(where)], check=False)


def copies(nodes: list[Path], rel: str = "data/mnt") -> list[bool]:
    """Whether each node still holds the mounted filesystem's copy at rel."""
    return [(n / rel / "precious.txt").is_file() and (n / rel / "sub" / "deep.txt").is_file()
            for n in nodes]


def batch_went(d: Inosync, src: Path, nodes: list[Path], name: str) -> None:
    """Write a marker and wait until every node has it: every batch (and full
    sync) that was due before it has run."""
    (src / name).write_text(name)
    wait_until(lambda: all((n / name).exists() for n in nodes) or d.proc.poll() is not None,
               30, f"{name} on every node")
    assert d.proc.poll() is None, d.log()


def start(tree: dict, run_inosync: Callable[..., Inosync], **settings: object
          ) -> tuple[Inosync, Path]:
    settings.setdefault("edelay", 0.2)
    conf = write_config(tree["dir"] / "inosync.conf", wpath=str(tree["src"]),
                        rnodes=[str(n) for n in tree["nodes"]], **settings)
    d = run_inosync(conf, "-v")
    wait_converged(tree["src"], tree["nodes"])
    return d, conf


def reload(d: Inosync, conf: Path, count: int, **changes: object) -> None:
    if changes:
        with conf.open("a") as f:
            f.writelines(f"{name} = {value!r}\n" for name, value in changes.items())
    d.signal(signal.SIGHUP)
    d.wait_log(r"reloaded; full sync", count=count)


TRIGGERS: dict[str, Callable[[Path], None]] = {
    "touch of the mount point": lambda mnt: os.utime(mnt),
    "chmod of the mount point": lambda mnt: mnt.chmod(0o700),
    "touch of the directory above": lambda mnt: os.utime(mnt.parent),
    "chmod of the directory above": lambda mnt: mnt.parent.chmod(0o750),
}


@pytest.mark.parametrize("trigger", TRIGGERS)
def test_a_batch_listing_a_kept_mount_point_or_above_keeps_its_copy(tree, run_inosync,
                                                                      trigger):
    src, nodes = tree["src"], tree["nodes"]
    mnt = src / "data" / "mnt"
    mnt.mkdir(parents=True)  # empty underneath: an unmounted disk leaves nothing
    (src / "data" / "beside.txt").write_text("beside\n")
    with tmpfs(mnt):
        d, _ = start(tree, run_inosync)
        assert copies(nodes) == [True, True]
        subprocess.run(["umount", str(mnt)], check=True)
        d.wait_log("lost its watch .unmounted.. and is empty now")
        TRIGGERS[trigger](mnt)
        batch_went(d, src, nodes, "marker")
        assert copies(nodes) == [True, True], d.log()
        (src / "data" / "beside.txt").write_text("changed beside\n")  # the rest still syncs
        batch_went(d, src, nodes, "marker2")
        assert all((n / "data" / "beside.txt").read_text() == "changed beside\n" for n in nodes)
        assert copies(nodes) == [True, True], d.log()
        assert d.stop() == 0


# A reload full-syncs only when what the nodes hold may change (issue 18.4): a
# smaller emask alone does not, so that case changes rsync_args too.
@pytest.mark.parametrize("change", [{"rexcludes": ["*.tmp"]},
                                    {"emask": ["IN_CLOSE_WRITE", "IN_CREATE", "IN_DELETE",
                                               "IN_MOVED_FROM", "IN_MOVED_TO"],
                                     "rsync_args": ["--hard-links"]}],
                         ids=["rexcludes", "emask"])
def test_a_reload_with_a_new_watcher_keeps_the_copy(tree, run_inosync, change):
    """A HUP that changes rexcludes or emask watches the tree anew: the new
    watcher still knows the kept mount point, in its full sync and after."""
    src, nodes = tree["src"], tree["nodes"]
    mnt = src / "data" / "mnt"
    mnt.mkdir(parents=True)
    with tmpfs(mnt):
        d, conf = start(tree, run_inosync)
        subprocess.run(["umount", str(mnt)], check=True)
        d.wait_log("lost its watch .unmounted.. and is empty now")
        reload(d, conf, 1, **change)
        batch_went(d, src, nodes, "marker")
        assert copies(nodes) == [True, True], d.log()
        reload(d, conf, 2, rsync_args=["--numeric-ids"])  # and the next full sync
        os.utime(mnt)
        batch_went(d, src, nodes, "marker2")
        assert copies(nodes) == [True, True], d.log()
        assert d.stop() == 0


def test_a_user_include_rule_does_not_unkeep_the_mount_point(tree, run_inosync):
    """rexcludes = ['+ /data/***']: the user's rules come first, but no include
    of theirs sends or deletes anything at a kept mount point."""
    src, nodes = tree["src"], tree["nodes"]
    mnt = src / "data" / "mnt"
    mnt.mkdir(parents=True)
    with tmpfs(mnt):
        d, conf = start(tree, run_inosync, rexcludes=["+ /data/***", "*.tmp"])
        subprocess.run(["umount", str(mnt)], check=True)
        d.wait_log("lost its watch .unmounted.. and is empty now")
        reload(d, conf, 1, rsync_args=["--numeric-ids"])  # a whole-tree sync
        batch_went(d, src, nodes, "marker")
        assert copies(nodes) == [True, True], d.log()
        os.utime(mnt.parent)
        batch_went(d, src, nodes, "marker2")
        assert copies(nodes) == [True, True], d.log()
        assert d.stop() == 0


def test_a_rename_above_a_kept_mount_point_leaves_the_copy_where_it_is(tree, run_inosync):
    """mv data data2 with the kept mount point inside: the move replay must not
    carry the copy to where rsync would empty it; rsync sends data2 as data."""
    src, nodes = tree["src"], tree["nodes"]
    mnt = src / "data" / "mnt"
    mnt.mkdir(parents=True)
    (src / "data" / "beside.txt").write_text("beside\n")
    with tmpfs(mnt):
        d, _ = start(tree, run_inosync)
        subprocess.run(["umount", str(mnt)], check=True)
        d.wait_log("lost its watch .unmounted.. and is empty now")
        (src / "data").rename(src / "data2")
        batch_went(d, src, nodes, "marker")
        assert copies(nodes) == [True, True], d.log()
        assert all((n / "data2" / "beside.txt").is_file() for n in nodes)
        assert d.stop() == 0


def test_a_rename_then_an_unmount_within_one_batch_keeps_the_copy(tree, run_inosync):
    """mv data data2 with the filesystem still mounted, then umount before the
    batch goes: the node holds the copy under the old name, which the batch
    would delete as gone from the source."""
    src, nodes = tree["src"], tree["nodes"]
    mnt = src / "data" / "mnt"
    mnt.mkdir(parents=True)
    with tmpfs(mnt):
        d, _ = start(tree, run_inosync, edelay=1.5)
        (src / "data").rename(src / "data2")
        subprocess.run(["umount", str(src / "data2" / "mnt")], check=True)
        d.wait_log("lost its watch .unmounted.. and is empty now")
        batch_went(d, src, nodes, "marker")
        assert copies(nodes) == [True, True], d.log()
        assert d.stop() == 0
