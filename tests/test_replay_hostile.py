"""A hostile review of the issue-15 move replay: each test reproduces a way the
replay wrote outside the node, or left the node different from the source (by
checksum), where plain rsync would not. Each failed on f4232f3, the replay as
first rewritten for issue 15.

The "attacker" is an unprivileged user on the node (uid/gid 65534, nobody) who can
write one directory inside the node's tree (a web server's uploads/).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import RSYNC, Sshd, in_syscall, tree_diff, wait_until, write_config

from inosync.excludes import Excludes
from inosync.replay import Move, replay_argv, replay_input

NOBODY = 65534
PERL = shutil.which("perl") or "/usr/bin/perl"
# The node user cannot run root's interpreter (/root is 0700): the system one.
USER_PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


# ---------------------------------------------------------------- fixtures


@pytest.fixture
def daemon(tree, run_inosync, sshd, tmp_path):
    """start(kind, **settings): a daemon syncing tree["src"] to one node, once in sync."""
    src = tree["src"]

    def start(kind: str = "local", ssh: Sshd | None = None, env: dict[str, str] | None = None,
              node: Path | None = None, dest: str | None = None, wait: bool = True,
              **settings: object):
        node = node or tmp_path / "node"
        node.mkdir(exist_ok=True, parents=True)
        server = ssh or sshd
        if dest is None:
            dest = str(node) if kind == "local" else f"root@127.0.0.1:{node}"
        conf = write_config(tmp_path / "inosync.conf", wpath=str(src), rnodes=[dest],
                            ssh=server.ssh_command(), edelay=0.3, retry_min=0.3, retry_max=1,
                            **settings)
        d = run_inosync(conf, "-v", env=env)
        if wait:
            d.wait_log("synced full sync")
        return d

    return start


def synced_after(d, change: Callable[[], None], count: int = 1) -> None:
    runs = d.log().count("synced ")
    change()
    wait_until(lambda: d.log().count("synced ") >= runs + count, 30, "the batch")


def as_nobody(cwd: Path, code: str, **popen: object) -> subprocess.Popen[bytes]:
    """A python program run as the unprivileged node user, started in cwd (the
    test's directories above it are root's 0700: the user starts from inside)."""
    def drop() -> None:
        os.chdir(cwd)
        os.setgroups([])
        os.setresgid(NOBODY, NOBODY, NOBODY)
        os.setresuid(NOBODY, NOBODY, NOBODY)

    return subprocess.Popen([USER_PYTHON, "-c", code], preexec_fn=drop, **popen)


def run_as_nobody(cwd: Path, code: str) -> None:
    proc = as_nobody(cwd, code, stderr=subprocess.PIPE)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err.decode()


# ------------------------------------------- 1. the moved inode keeps its handles


ATTACKER = r"""
import os, sys
f = None
for line in sys.stdin:
    cmd = line.split()
    if cmd[0] == "plant":  # replace the node's file by one of ours, same bytes
        data = open(cmd[1], "rb").read()
        os.unlink(cmd[1])
        f = os.open(cmd[1], os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(f, data)
    elif cmd[0] == "write":  # later: write through the handle we kept
        os.pwrite(f, b"<?php system($_GET['c']); ?>", 0)
    print("ok", flush=True)
"""


@pytest.mark.slow
@pytest.mark.parametrize("replay_moves", [True, False], ids=["replay", "plain-rsync"])
def test_a_replayed_rename_does_not_hand_the_node_user_a_protected_file(
        daemon, tree, tmp_path, replay_moves):
    """The replay moves the node's inode; rsync --checksum then finds the same bytes
    and only chowns/chmods it in place. The node user who owns uploads/ replaced
    uploads/logo.png (a root-owned file there) by their own copy of the same bytes
    and kept it open for writing: when the source publishes it (mv uploads/logo.png
    site/logo.png), the node's root-owned site/logo.png is that inode, and the user
    rewrites it at will. Plain rsync writes a fresh inode (the plain-rsync case)."""
    src = tree["src"]
    tmp_path.chmod(0o755)
    (src / "site").mkdir()
    (src / "uploads").mkdir()
    os.chown(src / "uploads", NOBODY, NOBODY)  # the web server's upload directory
    (src / "uploads" / "logo.png").write_bytes(b"\x89PNG the real logo\n" * 50)
    d = daemon(replay_moves=replay_moves)
    node = tmp_path / "node"
    node.chmod(0o755)
    assert (node / "uploads").stat().st_uid == NOBODY
    assert (node / "uploads" / "logo.png").stat().st_uid == 0
    attacker = as_nobody(node / "uploads", ATTACKER, stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE)
    assert attacker.stdin is not None and attacker.stdout is not None

    def say(cmd: str) -> None:
        attacker.stdin.write(cmd.encode() + b"\n")
        attacker.stdin.flush()
        assert attacker.stdout.readline() == b"ok\n"

    try:
        say("plant logo.png")
        synced_after(d, lambda: (src / "uploads" / "logo.png").rename(src / "site" / "logo.png"))
        published = node / "site" / "logo.png"
        assert published.stat().st_uid == 0 and tree_diff(src, node) == []  # looks fine
        say("write")
    finally:
        attacker.stdin.close()
        attacker.wait(10)
    assert published.read_bytes() == (src / "site" / "logo.png").read_bytes(), \
        "the node user rewrote the root-owned site/logo.png"


# ------------------------------------- 2. a handle's directory moved out of the node




@pytest.mark.slow
@pytest.mark.skipif(not shutil.which("strace"), reason="needs strace")
def test_a_directory_moved_out_of_the_node_during_the_replay_gets_nothing(tmp_path):
    """O_NOFOLLOW stops symlinks, but a directory handle follows its directory
    wherever it goes. The node user owns uploads/inbox; while the replay holds
    its handle (strace delays the rename), they mv it to a directory of theirs
    outside the node (same filesystem). Root's renameat2 then puts the node's
    site/report.pdf there: outside the node, in the user's hands."""
    tmp_path.chmod(0o755)
    node, outside = tmp_path / "node", tmp_path / "home-of-nobody"
    (node / "site").mkdir(parents=True)
    (node / "uploads" / "inbox").mkdir(parents=True)
    (node / "site" / "report.pdf").write_text("confidential")
    (node / "site" / "report.pdf").chmod(0o600)
    outside.mkdir()
    node.chmod(0o755)
    for p in (node / "uploads", node / "uploads" / "inbox", outside):
        os.chown(p, NOBODY, NOBODY)
    calls = "rename,renameat,renameat2"
    tracer = subprocess.Popen(
        ["strace", "-f", "-qq", "-o", "/dev/null", "-e", f"trace={calls}",
         "-e", f"inject={calls}:delay_enter=1000000", *replay_argv(str(node), [])],
        stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    assert tracer.stdin is not None and tracer.stderr is not None
    tracer.stdin.write(replay_input(str(node), [Move("site/report.pdf",
                                                     "uploads/inbox/report.pdf")],
                                    Excludes(())))
    tracer.stdin.close()
    wait_until(lambda: in_syscall(tracer.pid, {"82", "264", "316", "38", "276"})
               or tracer.poll() is not None, 10, "the replay's rename, or its end")
    run_as_nobody(tmp_path, "import os; os.rename('node/uploads/inbox', "
                            "'home-of-nobody/inbox')")
    assert tracer.wait(timeout=20) == 0
    assert not (outside / "inbox" / "report.pdf").exists(), \
        "root renamed the node's site/report.pdf into the node user's directory outside"
    # The fix: a directory another user may write is never walked through.
    assert (node / "site" / "report.pdf").read_text() == "confidential"
    assert "renames replayed: 0, left to rsync: 1" in tracer.stderr.read().decode()


# ------------------- 3. a replay cut short on an ssh node goes on after the retry


@pytest.mark.slow
def test_a_timed_out_ssh_replay_does_not_rename_after_the_retry(daemon, tree, tmp_path,
                                                                 own_sshd):
    """The time limit kills the local ssh; the replay on the node goes on (sshd
    does not kill a session's command when its client goes). The retry's rsync
    makes the node right and the batch is done, then the late replay swaps the
    files back: the node keeps x and y exchanged, and nothing will ever look."""
    src, bin_dir = tree["src"], tmp_path / "nodebin"
    bin_dir.mkdir()
    (bin_dir / "rsync").symlink_to(RSYNC)
    slow = bin_dir / "perl"  # a node slow to run its replay (busy disk, swapping)
    slow.write_text(f'#!/bin/sh\nsleep 6\nexec {PERL} "$@"\n')
    slow.chmod(0o755)
    server = own_sshd(PATH=f"{bin_dir}:/usr/bin:/bin")
    (src / "x").write_text("X" * 100)
    (src / "y").write_text("Y" * 100)
    d = daemon("ssh", ssh=server, timeout=2)
    node = tmp_path / "node"

    def swap() -> None:
        (src / "x").rename(src / "t")
        (src / "y").rename(src / "x")
        (src / "t").rename(src / "y")

    swap()
    d.wait_log("the move replay did not end in time")
    d.wait_log("recovered after")
    assert tree_diff(src, node) == []  # the retry got it right...
    time.sleep(8)  # ...until the replay on the node runs
    assert tree_diff(src, node) == [], "the late replay swapped x and y back"


# ------------------ 4. an interrupted replay, then a restart's full sync


PAUSE = r"""
package PauseAfterFirstRename;
my $n = 0;
BEGIN {
  *CORE::GLOBAL::syscall = sub {
    my $r = CORE::syscall($_[0], @_[1 .. $#_]);
    if (($_[0] == 316 || $_[0] == 276) && $r == 0 && ++$n == 1) {
      open my $f, '>', $ENV{PAUSE_MARK}; close $f; sleep 60;
    }
    return $r;
  };
}
1;
"""


@pytest.mark.slow
def test_a_replay_stopped_by_shutdown_is_checked_by_content_after_the_restart(
        daemon, tree, tmp_path):
    """A spool: t1 and t2 written back to back (same size, same nanosecond mtime,
    as Linux's coarse clock often gives), then mv t1 job; mv job done/1; mv t2 job.
    The daemon is stopped (SIGTERM twice) while the replay has done only the first
    rename: the node's job holds t1. The batch was to be compared by content, but
    that lives only in memory: the next start's full sync compares size and mtime,
    which match t2's, and keeps t1's data as job for good. Plain rsync would have
    replaced the node's old job (another mtime)."""
    src = tree["src"]
    (src / "done").mkdir()
    (src / "job").write_text("OLD-JOB!")
    os.utime(src / "job", ns=(1_600_000_000_000_000_000,) * 2)
    for name in ("t1", "t2"):
        (src / name).write_text(f"JOB-000{name[1]}")
        os.utime(src / name, ns=(1_700_000_000_123_456_789,) * 2)
    hook, mark = tmp_path / "hook", tmp_path / "paused"
    hook.mkdir()
    (hook / "PauseAfterFirstRename.pm").write_text(PAUSE)
    (hook / "perl").write_text(f'#!/bin/sh\nexec {PERL} -I{hook} -MPauseAfterFirstRename "$@"\n')
    (hook / "perl").chmod(0o755)
    d = daemon(env={"PATH": f"{hook}:{os.environ['PATH']}", "PAUSE_MARK": str(mark)})
    node = tmp_path / "node"
    (src / "t1").rename(src / "job")
    (src / "job").rename(src / "done" / "1")
    (src / "t2").rename(src / "job")
    wait_until(mark.exists, 20, "the replay's first rename")
    d.signal(signal.SIGTERM)
    time.sleep(0.3)
    d.signal(signal.SIGTERM)  # asked twice: runs are stopped at once
    assert d.proc.wait(20) == 0
    assert (node / "job").read_text() == "JOB-0001"  # the replay got that far
    again = daemon()  # a plain restart (perl as usual)
    again.wait_log("synced full sync")
    assert tree_diff(src, node) == [], "the node's job kept t1's data"


# ------------------ 5. rsync and the replay disagree on where the node is

