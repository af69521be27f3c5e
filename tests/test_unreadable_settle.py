r"""Finding 4 of the review of issue 16: rsync prints a name's unprintable bytes
as \#ooo but a name's own "\#ddd" only mostly as \#134#ddd, so a printed path
can stand for several. Read from the text alone, the first ambiguous name's
directory was left out: nothing at all when that was wpath (every run failed,
no deletion anywhere, for good), or a whole shared directory. Now each name is
looked up in the source tree, and only the entries that could be it go.
Real rsync, real trees, a real daemon.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import wait_until, write_config
from test_unreadable import DEEP, FORGED, FORGED_DEPTH, NOBODY, make_deep, rsync_stderr

TOO_LONG = "a name in it makes a path longer than rsync's limit of 4095 bytes"


def make_chain(top: Path, names: list[str], as_uid: int | None = None) -> None:
    """top/names[0]/names[1]/..., made relative to directory fds (as as_uid)."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)  # before: a stranger may not reach it
    pid = os.fork() if as_uid is not None else 0
    if pid:
        os.close(fd)
        assert os.waitpid(pid, 0)[1] == 0
        return
    try:
        if as_uid is not None:
            os.setgroups([])
            os.setresgid(as_uid, as_uid, as_uid)
            os.setresuid(as_uid, as_uid, as_uid)
        for name in names:
            try:
                os.mkdir(name, dir_fd=fd)
            except FileExistsError:
                pass
            below = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = below
        os.close(fd)
    except BaseException:
        if as_uid is not None:
            os._exit(1)
        raise
    if as_uid is not None:
        os._exit(0)


def settled(src: Path, stderr: str) -> dict[str, str]:
    from inosync.rsync import settle

    fd = os.open(src, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return settle(fd, stderr)
    finally:
        os.close(fd)


def test_a_name_matches_each_way_rsync_can_print_it():
    from inosync.rsync import could_print_as

    assert could_print_as(b"plain", b"plain") and not could_print_as(b"plain", b"plainx")
    assert could_print_as(b"a\tb", b"a\tb")  # a tab rsync prints as it is
    assert could_print_as(b"\x01", b"\\#001") and not could_print_as(b"\x01", b"\x01")
    assert could_print_as(b"\x7f", b"\\#177")
    assert could_print_as(b"Donn\xc3\xa9es", b"Donn\\#303\\#251es")  # LANG=C
    # A name's own "\#012": \#134#012, or as it is across the end of a piece.
    assert could_print_as(b"x\\#012", b"x\\#134#012") and could_print_as(b"x\\#012", b"x\\#012")
    assert could_print_as(b"x\n", b"x\\#012") and not could_print_as(b"x\n", b"x\\#134#012")
    assert could_print_as(b"x\\#134#012", b"x\\#134#012")
    # A backslash before anything but "#ddd" is never escaped.
    assert could_print_as(b"a\\b", b"a\\b") and not could_print_as(b"a\\b", b"a\\#134b")
    assert could_print_as(b"a\\#1x", b"a\\#1x") and not could_print_as(b"a\\#1x", b"a\\#134#1x")
    assert not could_print_as(b"ab", b"a\\#142")  # "b" is printable: never \#142


def test_a_shared_directory_loses_only_the_strangers_entries(tmp_path):
    r"""As a stranger in a shared up/: \x01/ then 20 names with "\#012", one of
    them printed across a piece's end, and a name "\#001" made to look like the
    first. Before: all of up/ was left out (other users' uploads stopped)."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "up" / "alice").mkdir(parents=True)
    (src / "up" / "alice" / "f").write_text("a\n")
    os.chmod(src / "up", 0o1777)
    dst.mkdir()
    make_chain(src / "up", ["\x01", *[FORGED] * FORGED_DEPTH], as_uid=NOBODY)
    make_chain(src / "up", ["\\#001"], as_uid=NOBODY)
    rc, stderr = rsync_stderr(src, dst)
    line = stderr.splitlines()[0]
    assert rc == 23 and line.startswith("filename overflows max-path len by 91: up/\\#001/")
    assert "\\#012/" in line.replace("\\#134#012", "")  # one printed across a piece's end
    found = settled(src, stderr)
    assert found == {"up/\x01": f"{TOO_LONG}, below it", "up/\\#001": f"{TOO_LONG}, below it"}
    excludes = [f"--exclude=/{path}" for path in found]  # (no wildcard in these names)
    assert rsync_stderr(src, dst, *excludes) == (0, "")
    assert (dst / "up" / "alice" / "f").read_text() == "a\n"


def test_a_top_level_ambiguous_name_leaves_out_only_the_deep_directory(tmp_path, monkeypatch):
    """Données (non-ASCII, escaped in the C locale) at the top: before, nothing
    could be left out (wpath) and the run failed for good."""
    monkeypatch.setenv("LC_ALL", "C")  # not C.UTF-8, as Python makes LANG=C for its children
    from inosync.rsync import protect_rule

    src, dst = tmp_path / "src", tmp_path / "dst"
    chain = ["Données", "up", "p" * 34, *[FORGED] * FORGED_DEPTH]
    src.mkdir()
    make_chain(src, chain)
    dst.mkdir()
    rc, stderr = rsync_stderr(src, dst)
    assert rc == 23 and "Donn\\#303\\#251es/up/" in stderr
    found = settled(src, stderr)
    [(path, why)] = found.items()
    assert path.startswith("Données/up/" + "p" * 34 + "/" + FORGED + "/"), path
    assert why.startswith(TOO_LONG)
    assert rsync_stderr(src, dst, f"--exclude={protect_rule(path)}") == (0, "")


def test_settled_paths_are_those_of_the_tree_or_none(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    make_deep(src, "leaf")
    rc, stderr = rsync_stderr(src, dst)
    assert rc == 23
    assert settled(src, stderr) == {"/".join(DEEP[:-1]): TOO_LONG}
    (src / "locked").mkdir()
    denied = 'rsync: [sender] opendir "/proc/self/fd/5/locked" failed: Permission denied (13)\n'
    assert settled(src, denied) == {"locked": "Permission denied"}
    gone = denied.replace("locked", "gone")
    assert settled(src, gone) == {}  # not there (any more): nothing is left out
    assert settled(src, denied + gone) == {}
    assert settled(src, denied.replace("locked", "")) == {}  # never wpath itself


@pytest.mark.slow
def test_daemon_deletes_beside_a_strangers_names_under_a_non_ascii_directory(
        tmp_path, run_inosync):
    """The review's repro: wpath holds Données/up (1777) and other/; as nobody,
    up/ppp.../ and 20 names with "\\#012". Before: exit 23 on every run, for
    good, and no deletion anywhere."""
    src, node = tmp_path / "src", tmp_path / "node"
    chain = ["Données", "up", "p" * 34, *[FORGED] * FORGED_DEPTH]
    for top in (src, node):
        (top / "Données" / "up").mkdir(parents=True)
        (top / "other").mkdir()
    os.chmod(src / "Données" / "up", 0o1777)
    make_chain(src / "Données" / "up", chain[2:], as_uid=NOBODY)
    make_chain(node, chain)  # the node's copy of it: kept
    (src / "other" / "x").write_text("x\n")
    (node / "other" / "node-only").write_text("goes\n")
    (node / "Données" / "up" / "node-only").write_text("goes\n")
    cfg = write_config(tmp_path / "inosync.conf", wpath=str(src), rnodes=[str(node)],
                       edelay=0.2, retry_min=0.2)
    d = run_inosync(cfg, env={"LC_ALL": "C"})  # rsync escapes é (as \#303\#251)
    d.wait_log(r"synced full sync")
    wait_until(lambda: not (node / "other" / "node-only").exists()
               and not (node / "Données" / "up" / "node-only").exists(), 10,
               "the node-only files deleted")
    assert (node / "other" / "x").read_text() == "x\n"
    assert d.stop() == 0
    log = d.log()
    assert "ERROR" not in log, log
    said = [line for line in log.splitlines() if "cannot read" in line]
    assert len(said) == 1 and f"cannot read {src}/Données/up/{'p' * 34}/" in said[0], said
    # The node's copy of the stranger's path is still whole.
    fd = os.open(node, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for name in chain:
            below = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = below
    finally:
        os.close(fd)
