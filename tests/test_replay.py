"""Renames replayed on the nodes, end to end, over a local and an ssh node.

How a test knows a rename was replayed, not sent again: the node's file
under the new name is the very file it had under the old one (a hard link
kept outside the node holds it, so its inode number cannot be reused; rsync
sends data into a new file, while after a replay it compares contents,
finds them equal and leaves the file alone). Every test also ends
with each node identical to the source, compared by checksum.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from flakyrsync import runs, write_flaky_rsync
from helpers import tree_diff, wait_converged, wait_until, write_config
from randomops import ODD_NAMES

pytestmark = pytest.mark.slow  # end to end: real processes

SIZE = 200_000


def mark(node_file: Path) -> Path:
    """A hard link to the node's copy, beside the node: the same file under the
    new name means it was renamed there."""
    keep = node_file.parent
    while keep.name != "node":
        keep = keep.parent
    link = keep.parent / "kept" / str(node_file.relative_to(keep)).replace("/", "%")
    link.parent.mkdir(exist_ok=True)
    os.link(node_file, link)
    return link


def replayed(node_file: Path, kept: Path) -> bool:
    return node_file.exists() and os.path.samefile(node_file, kept)


EVERY_KIND = pytest.mark.parametrize("replica", ["local", "ssh", "slow ssh"], indirect=True)
FAST_KINDS = pytest.mark.parametrize("replica", ["local", "ssh"], indirect=True)


@pytest.fixture
def replica(request, tree, run_inosync, sshd, tmp_path):
    """A running daemon with one node of the given kind; yields (daemon, src, node dir)."""
    src = tree["src"]
    node = tmp_path / "node"
    node.mkdir()
    dest, ssh = str(node), sshd.ssh_command()
    if request.param == "ssh":
        dest = f"root@127.0.0.1:{node}"
    elif request.param == "slow ssh":
        host = request.getfixturevalue("slow_host")
        assert host.sshd is not None
        dest, ssh = host.dest(node), host.slow_ssh(host.sshd.ssh_command(), 25)

    def start(**settings: object):
        conf = write_config(tmp_path / "inosync.conf", wpath=str(src), rnodes=[dest],
                            ssh=ssh, edelay=0.3, retry_min=0.3, retry_max=1, **settings)
        d = run_inosync(conf, "-v")
        wait_converged(src, [node], excludes=tuple(settings.get("rexcludes", ())))
        d.wait_log("synced full sync")  # counts of "synced" start after it
        return d

    return start, src, node


def payload(tag: str) -> bytes:
    return (tag.encode() * (SIZE // len(tag) + 1))[:SIZE]


def converge_after(d, src: Path, node: Path, change: Callable[[], None],
                   excludes: tuple[str, ...] = ()) -> None:
    runs = d.log().count("synced ")
    change()
    try:
        wait_until(lambda: d.log().count("synced ") > runs, 20, "a batch after the change")
        wait_converged(src, [node], timeout=20, excludes=excludes)
    except AssertionError as e:  # say what the daemon did: a flake must be diagnosable
        raise AssertionError(f"{e}\n--- daemon log (end):\n{d.log()[-3000:]}") from None


@EVERY_KIND
def test_file_rename_is_replayed(replica):
    start, src, node = replica
    (src / "episode.mp3").write_bytes(payload("e"))
    d = start()
    ino = mark(node / "episode.mp3")
    runs = d.log().count("synced ")
    (src / "episode.mp3").rename(src / "episode-final.mp3")
    wait_until(lambda: d.log().count("synced ") > runs, 20, "the batch")
    assert replayed(node / "episode-final.mp3", ino)
    assert not (node / "episode.mp3").exists()
    assert "replay exited 0: renames replayed: 1, left to rsync: 0" in d.log()


@EVERY_KIND
def test_directory_rename_is_replayed(replica):
    start, src, node = replica
    (src / "www.new").mkdir()
    for i in range(5):
        (src / "www.new" / f"f{i}").write_bytes(payload(str(i)))
    d = start()
    ino = mark(node / "www.new" / "f3")
    runs = d.log().count("synced ")
    (src / "www.new").rename(src / "www")
    wait_until(lambda: d.log().count("synced ") > runs, 20, "the batch")
    assert replayed(node / "www" / "f3", ino) and not (node / "www.new").exists()
    assert tree_diff(src, node) == []


@FAST_KINDS
def test_chain_swap_and_move_into_a_new_directory_in_one_window(replica):
    start, src, node = replica
    for name in ("a", "x", "y", "m"):
        (src / name).write_bytes(payload(name))
    d = start()
    ino = {name: mark(node / name) for name in ("a", "x", "y", "m")}

    def change() -> None:
        os.rename(src / "a", src / "b")  # a chain: a -> b -> c
        os.rename(src / "b", src / "c")
        os.rename(src / "x", src / "t")  # a swap of x and y through t
        os.rename(src / "y", src / "x")
        os.rename(src / "t", src / "y")
        (src / "new" / "deeper").mkdir(parents=True)  # a move into a new directory
        os.rename(src / "m", src / "new" / "deeper" / "m")

    runs = d.log().count("synced ")
    change()
    wait_until(lambda: d.log().count("synced ") > runs, 20, "the batch")
    assert replayed(node / "c", ino["a"])
    # The rename into the directory made a moment before came before its
    # watch did: no event pairs it, so rsync sent m (the node still ends equal).
    target = node / "new" / "deeper" / "m"
    wait_until(lambda: target.exists() and target.read_bytes() == payload("m"), 20)
    assert replayed(node / "x", ino["y"]) and replayed(node / "y", ino["x"])  # swapped
    assert not (node / "a").exists() and not (node / "b").exists()
    assert tree_diff(src, node) == []


@FAST_KINDS
@pytest.mark.parametrize("case", ["source missing on the node", "target only on the node",
                                  "target a non-empty directory on the node",
                                  "hard names", "into and out of excluded names"])
def test_node_ends_identical_whatever_it_holds(replica, case):
    start, src, node = replica
    (src / "f").write_bytes(payload("f"))
    (src / "cache").mkdir()
    (src / "cache" / "c").write_bytes(payload("c"))
    d = start(rexcludes=["/cache/"])
    if case == "source missing on the node":
        (node / "f").unlink()
    elif case == "target only on the node":
        (node / "g").write_text("stale")
    elif case == "target a non-empty directory on the node":
        (node / "g").mkdir()
        (node / "g" / "keep").write_text("x")

    def change() -> None:
        if case == "hard names":
            for name in ODD_NAMES:
                (src / name).write_bytes(os.fsencode(name))
            for name in ODD_NAMES:
                os.rename(src / name, src / f"{name}.moved")
        elif case == "into and out of excluded names":
            os.rename(src / "cache" / "c", src / "from-cache")
            os.rename(src / "f", src / "cache" / "f")
        else:
            os.rename(src / "f", src / "g")
        (src / "marker").write_text("m")

    converge_after(d, src, node, change, ("/cache/",))
    assert tree_diff(src, node, ("/cache/",)) == []
    assert not (node / "cache").exists()  # excluded: never on the node
    assert "Traceback" not in d.log()


@FAST_KINDS
def test_renames_queued_while_the_node_fails(replica, tmp_path):
    """A failed run's renames, and those collected behind it, are never replayed
    (issue 15.1): they assumed a node state the failure may not have left; the
    retry sends the paths, and the renames after it are replayed again."""
    start, src, node = replica
    (src / "a").write_bytes(payload("a"))
    (src / "later").write_bytes(payload("l"))
    d = start()
    ino = mark(node / "later")
    parked = tmp_path / "parked"
    node.rename(parked)
    node.write_text("a file where the node's directory was: every run fails\n")
    os.rename(src / "a", src / "b")
    d.wait_log("rsync failed")
    os.rename(src / "b", src / "c")  # a second batch while the node fails
    wait_until(lambda: d.log().count("rsync failed") + d.log().count("retry") >= 2, 20)
    node.unlink()
    parked.rename(node)
    wait_until(lambda: (node / "c").exists() and not (node / "a").exists(), 30, "the retry")
    assert (node / "c").read_bytes() == payload("a")
    converge_after(d, src, node, lambda: (src / "later").rename(src / "later2"))
    assert replayed(node / "later2", ino)


@FAST_KINDS
def test_renames_are_done_once_when_rsync_fails_after_them(replica, tmp_path):
    """A run whose rsync failed after its replay goes back to the queue, but
    the node has its renames already: doing them again with the next attempt
    would swap x and y back and rotate the wrong file into prev. rsync would
    leave both so: the files are twins (same size, same mtime).

    The first batch run after the changes sends everything, then exits 23
    (as rsync does when the node's disk fills up at the very end)."""
    start, src, node = replica
    twins = {"x": "x", "y": "y", "cur": "current", "next": "next"}
    for name, tag in twins.items():
        (src / name).write_bytes(payload(tag))
    # Written back to back: on a coarse file clock they share one mtime.
    stamp = (src / "x").stat().st_mtime_ns
    for name in twins:
        os.utime(src / name, ns=(stamp, stamp))
    armed = tmp_path / "fail-the-next-batch"
    flaky = write_flaky_rsync(tmp_path / "rsync", armed=armed)
    d = start(rsync=str(flaky))
    armed.touch()
    runs_before = d.log().count("synced ")
    os.rename(src / "x", src / "t")  # a swap of x and y through t
    os.rename(src / "y", src / "x")
    os.rename(src / "t", src / "y")
    os.rename(src / "cur", src / "prev")  # a rotation
    os.rename(src / "next", src / "cur")
    d.wait_log(r"rsync failed: exit 23 \(partial transfer due to error\): flaky rsync")
    assert "replay exited 0: renames replayed: 5, left to rsync: 0" in d.log()
    assert ("done-then-23", "exit 23") in runs(flaky)  # the transfer was complete
    wait_until(lambda: d.log().count("synced ") > runs_before, 20, "the batch sent again")
    left = tree_diff(src, node)  # by checksum: size and mtime match either way
    assert not left, f"the node's files differ from the source's: {left}"
    assert "Traceback" not in d.log()


@FAST_KINDS
def test_replay_can_be_turned_off(replica):
    start, src, node = replica
    (src / "f").write_bytes(payload("f"))
    d = start(replay_moves=False)
    ino = mark(node / "f")
    converge_after(d, src, node, lambda: (src / "f").rename(src / "g"))
    assert not replayed(node / "g", ino)  # sent again from the source
    assert "replaying" not in d.log() and "replay exited" not in d.log()


def test_pretend_shows_the_replay(tree, run_inosync, tmp_path):
    src, node = tree["src"], tree["nodes"][0]
    shutil.copytree(src, node, dirs_exist_ok=True)
    conf = write_config(tmp_path / "p.conf", wpath=str(src), rnodes=[str(node)], edelay=0.2)
    d = run_inosync(conf, "-p")
    d.wait_log("would run")
    (src / "index.html").rename(src / "home.html")
    d.wait_log(r"would replay 1 rename first \('index.html' -> 'home.html'\)")
    assert (node / "index.html").exists() and not (node / "home.html").exists()
    d.signal(signal.SIGTERM)
