"""Rule 3 of issue 16: a path rsync cannot read costs only that path.

A name whose path is longer than rsync's limit (4095 bytes) makes rsync exit
23 and skip every deletion of the run ("IO error encountered -- skipping file
deletion"): one stranger's directory stopped deletions for the whole tree.
inosync now says once which path, leaves it out of the next runs (the node
keeps its copy) and deletes everywhere else. Real rsync, a real daemon.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from helpers import RSYNC, wait_until, write_config
from test_scheduler import A, B, config, ended, starts

from inosync.scheduler import Scheduler, StartRun

NOBODY = 65534
EVIL = "e\nid > pwned #\r\x1b[31m*"  # a newline, a return, terminal codes, a wildcard
# 1 + 19 * 201 + len(EVIL) + 1: the "f" directory goes past 4095 bytes
DEEP = ["a-deep", *["d" * 200] * 19, EVIL + "x" * 170, "f" * 200]


def make_deep(top: Path, leaf: str) -> None:
    """top/DEEP.../leaf, made relative to directory fds: no path is that long."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for name in DEEP:
            try:
                os.mkdir(name, dir_fd=fd)
            except FileExistsError:
                pass
            below = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = below
        os.close(os.open(leaf, os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
    finally:
        os.close(fd)


def deep_names(top: Path) -> list[str]:
    """What the deepest directory of DEEP holds under top."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for name in DEEP:
            below = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = below
        return sorted(os.listdir(fd))
    finally:
        os.close(fd)


def rsync_stderr(src: Path, dst: Path, *extra: str) -> tuple[int, str]:
    """A real rsync run as inosync makes it (the source as /proc/self/fd/N)."""
    fd = os.open(src, os.O_RDONLY | os.O_DIRECTORY)
    try:
        done = subprocess.run([RSYNC, "-a", "-r", "--delete", *extra, f"/proc/self/fd/{fd}/",
                               f"{dst}/"], pass_fds=[fd], capture_output=True)
    finally:
        os.close(fd)
    return done.returncode, done.stderr.decode(errors="surrogateescape")


def test_rsync_overflow_is_read_back_to_the_directory_that_can_be_left_out(tmp_path):
    from inosync.rsync import MAXPATHLEN, protect_rule, unreadable

    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    make_deep(src, "leaf")
    rc, stderr = rsync_stderr(src, dst)
    assert rc == 23 and "filename overflows max-path len" in stderr
    parent = "/".join(DEEP[:-1])
    found = unreadable(stderr)
    assert list(found) == [parent], found  # rsync's \#012 read back to the real name
    assert len(os.fsencode(protect_rule(parent))) < MAXPATHLEN
    # That rule works: rsync leaves the directory out and the run is clean.
    assert rsync_stderr(src, dst, f"--exclude={protect_rule(parent)}") == (0, "")


def test_other_errors_are_no_unreadable_path():
    from inosync.rsync import unreadable, unreadable_line

    assert unreadable("rsync: connection unexpectedly closed (0 bytes received so far)\n") == {}
    mixed = ('rsync: [sender] opendir "/proc/self/fd/5/locked" failed: Permission denied (13)\n'
             "rsync: [receiver] mkstemp failed: No space left on device (28)\n")
    assert unreadable(mixed) == {}  # a node's failure too: no path left out hides it
    assert unreadable('rsync: [sender] opendir "/proc/self/fd/5/locked" failed: '
                      "Permission denied (13)\n") == {"locked": "Permission denied"}
    # Cut by a raw newline, the length no longer matches "by N": not trusted.
    assert unreadable_line("filename overflows max-path len by 3: a/b") is None
    # wpath itself cannot be left out.
    assert unreadable('rsync: [sender] opendir "/proc/self/fd/5/" failed: '
                      "Permission denied (13)\n") == {}


# A name holding a literal backslash, "#", "012": rsync prints it as \#134#012,
# except where that text crosses the end of a piece rsync writes (1023 bytes):
# there it prints \#012, which also stands for a newline.
FORGED = "d" * 240 + "\\#012"
FORGED_DEPTH = 20  # "up" + 20 of them: past rsync's limit


def make_forged(up: Path, as_uid: int | None = None) -> None:
    """up/FORGED/FORGED/..., made relative to directory fds (as as_uid, if given)."""
    fd = os.open(up, os.O_RDONLY | os.O_DIRECTORY)
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
        for _ in range(FORGED_DEPTH):
            os.mkdir(FORGED, dir_fd=fd)
            below = os.open(FORGED, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = below
        os.close(fd)
    except BaseException:
        if as_uid is not None:
            os._exit(1)
        raise
    if as_uid is not None:
        os._exit(0)


def test_a_backslash_name_rsync_prints_two_ways_leaves_out_its_directory(tmp_path):
    r"""Before: rsync's \#012 read back as a newline, the length no longer matched
    "by 89", the line was not understood and the run failed for good."""
    from inosync.rsync import unreadable

    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "up").mkdir(parents=True)
    dst.mkdir()
    make_forged(src / "up")
    rc, stderr = rsync_stderr(src, dst)
    line = stderr.splitlines()[0]
    assert rc == 23 and line.startswith("filename overflows max-path len by 89: up/"), stderr
    assert "\\#134#012/" in line and "\\#012/" in line.replace("\\#134#012", "")
    # Some \#012 are a name's text, and nothing says which: the directory that
    # holds the first such name goes, and only it.
    assert unreadable(stderr) == {"up": "a name in it makes a path longer than rsync's "
                                        "limit of 4095 bytes, below it"}
    assert rsync_stderr(src, dst, "--exclude=/up") == (0, "")


def overflow(printed: str, as_text: int) -> str:
    r"""rsync's line for a path printed so, as_text of whose \#ooo are a name's text."""
    length = len(printed) - 4 * (printed.count("\\#") - as_text)
    assert length > 4095
    return f"filename overflows max-path len by {length - 4095}: {printed}"


def test_an_overflow_line_is_read_the_one_way_its_length_allows():
    from inosync.rsync import unreadable_line

    top = "/".join(["n" * 250] * 16)  # then a name with \#012, a "/" and the one too long
    printed = f"{top}/x\\#012/{'y' * 200}"
    why = "a name in it makes a path longer than rsync's limit of 4095 bytes"
    # Each \#ooo one byte, or each five bytes of text (printed across a piece's end):
    # one reading each, and "x\n" or "x\\#012" holds the name too long.
    assert unreadable_line(overflow(printed, 0)) == (f"{top}/x\n", why)
    assert unreadable_line(overflow(printed, 1)) == (f"{top}/x\\#012", why)
    # "\#101" ("A", printable) rsync never prints: text, whatever the length.
    assert unreadable_line(overflow(f"{top}/x\\#101/{'y' * 200}", 1)) == (f"{top}/x\\#101", why)
    # Two \#012, one of them text: two readings; what both share is the directory
    # that holds the first name with one.
    two = f"{top}/x\\#012/z\\#012/{'y' * 200}"
    assert unreadable_line(overflow(two, 1)) == (top, f"{why}, below it")
    last = f"{top}/x{'y' * 200}\\#012\\#012"  # both in the name too long: its directory
    assert unreadable_line(overflow(last, 1)) == (top, why)
    assert unreadable_line(overflow(f"x\\#012/z\\#012/{top}/{'y' * 100}", 1)) is None  # wpath: none
    # No reading has the length: not read whole.
    assert unreadable_line(overflow(printed, 0).replace(" by ", " by 3")) is None


def test_scheduler_leaves_the_path_out_once_said_and_fails_if_that_does_not_help(caplog):
    s = Scheduler(config())
    first = starts(s.begin(0.0))
    assert first[A].leave_out == ()
    stderr = ('rsync: [sender] opendir "/proc/self/fd/7/up/locked" failed: '
              "Permission denied (13)\n"
              "rsync error: some files/attrs were not transferred (see previous errors) "
              "(code 23) at main.c(1394) [sender=3.5.0]\n")
    with caplog.at_level("INFO", logger="inosync"):
        again = starts(ended(s, A, 23, 1.0, stderr) + s.tick(2.0))
        starts(ended(s, B, 23, 1.0, stderr) + s.tick(2.0))
    said = [r.getMessage() for r in caplog.records if "cannot read" in r.getMessage()]
    assert said == ["cannot read /srv/www/up/locked on the source (Permission denied); leaving "
                    "it as it is on the nodes, deletions elsewhere go on (tried again at the "
                    "next periodic resync)"]
    assert not any(r.levelname == "ERROR" for r in caplog.records)  # not a failure
    assert isinstance(again[A], StartRun) and again[A].leave_out == ("up/locked",)
    assert again[A].batch.full and s.nodes[A].failures == 0
    # The same error from a run that left the path out: a real failure.
    ended(s, A, 23, 3.0, stderr)
    assert s.nodes[A].failures == 1


@pytest.mark.slow
def test_daemon_keeps_deleting_beside_a_path_too_long_for_rsync(tmp_path, run_inosync):
    """The source holds a directory too deep for rsync, with a name made to forge
    log lines; the node has its own copy of it, and a file that must go.

    Before: every full sync exited 23, skipped every deletion, retried forever,
    and the log held a line starting "id > pwned #"."""
    src, node = tmp_path / "src", tmp_path / "node"
    for top, leaf in ((src, "src-leaf"), (node, "node-leaf")):
        top.mkdir()
        make_deep(top, leaf)
        (top / "z").mkdir()
    (src / "z" / "keep").write_text("k\n")
    (node / "z" / "node-only").write_text("goes\n")
    status = tmp_path / "status.json"
    cfg = write_config(tmp_path / "inosync.conf", wpath=str(src), rnodes=[str(node)],
                       edelay=0.2, retry_min=0.2, statusfile=str(status))
    d = run_inosync(cfg)
    d.wait_log(r"synced full sync")
    wait_until(lambda: not (node / "z" / "node-only").exists(), 10, "the node-only file deleted")
    assert (node / "z" / "keep").read_text() == "k\n"
    assert deep_names(node) == ["node-leaf"]  # the node's copy stays as it was
    assert d.stop() == 0
    log = d.log()
    assert "pwned" in log  # the name is said ...
    stamp = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR) ")
    assert all(stamp.match(line) for line in log.splitlines()), log  # ... within its line
    assert "\x1b" not in log and "\r" not in log
    said = [line for line in log.splitlines() if "cannot read" in line]
    assert len(said) == 1 and "\\nid > pwned #\\r\\x1b[31m*" in said[0], said
    assert "ERROR" not in log, log
    data = json.loads(status.read_text())  # JSON: its strings escape control characters
    assert data["nodes"][0]["failures"] == 0 and data["state"] == "stopped"


@pytest.mark.slow
def test_daemon_keeps_deleting_beside_a_strangers_backslash_names(tmp_path, run_inosync):
    """The review's case: as a stranger, 20 nested directories named 'd'*240 +
    '\\#012' under src/up, and src/zzz/x; on the node, n/zzz/stale.

    Before: "ERROR rsync failed: exit 23", a full sync pending forever and
    n/zzz/stale never deleted (the same tree with plain names worked)."""
    src, node = tmp_path / "src", tmp_path / "n"
    (src / "up").mkdir(parents=True)
    os.chown(src / "up", NOBODY, NOBODY)
    make_forged(src / "up", as_uid=NOBODY)
    (src / "zzz").mkdir()
    (src / "zzz" / "x").write_text("x\n")
    (node / "zzz").mkdir(parents=True)
    (node / "zzz" / "stale").write_text("goes\n")
    status = tmp_path / "status.json"
    cfg = write_config(tmp_path / "inosync.conf", wpath=str(src), rnodes=[str(node)],
                       edelay=0.2, retry_min=0.2, statusfile=str(status))
    d = run_inosync(cfg)
    d.wait_log(r"synced full sync")
    wait_until(lambda: not (node / "zzz" / "stale").exists(), 10, "n/zzz/stale deleted")
    assert (node / "zzz" / "x").read_text() == "x\n"
    assert d.stop() == 0
    log = d.log()
    said = [line for line in log.splitlines() if "cannot read" in line]
    # Not all of up/ (review finding 4): the stranger's directories, found in
    # the source (the log shows a backslash as \\).
    assert len(said) == 1 and f"cannot read {src}/up/{'d' * 240}\\\\#012/" in said[0], said
    assert "ERROR" not in log, log
    data = json.loads(status.read_text())
    assert data["nodes"][0]["failures"] == 0 and data["state"] == "stopped"
