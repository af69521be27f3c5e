"""A second hostile review of the issue-15 move replay (after the fixes for the
first one, tests/test_replay_hostile.py). Each test reproduces a way the replay
still bypasses what rsync alone would do, is held up by a node user, or fails
silently. The "attacker" is an unprivileged user on the node (uid/gid 65534).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import Sshd, inosync_argv, tree_diff, wait_until, write_config
from test_replay_hostile import PAUSE

NOBODY = 65534
USER_PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else None


def synced_after(d, change: Callable[[], None], count: int = 1, timeout: float = 30) -> None:
    runs = d.log().count("synced ")
    change()
    wait_until(lambda: d.log().count("synced ") >= runs + count, timeout, "the batch")


def as_nobody(cwd: Path, code: str, **popen: object) -> subprocess.Popen[bytes]:
    def drop() -> None:
        os.chdir(cwd)
        os.setgroups([])
        os.setresgid(NOBODY, NOBODY, NOBODY)
        os.setresuid(NOBODY, NOBODY, NOBODY)

    assert USER_PYTHON, "needs /usr/bin/python3"
    return subprocess.Popen([USER_PYTHON, "-c", code], preexec_fn=drop, **popen)


@pytest.fixture
def daemon(tree, run_inosync, sshd, tmp_path):
    """start(kind, **settings): a daemon syncing tree["src"] to one node, once in sync.
    Returns the daemon and its config path (rewrite it and SIGHUP to reload)."""
    src = tree["src"]

    def start(kind: str = "local", node: Path | None = None, dest: str | None = None,
              ssh: Sshd | None = None, args: tuple[str, ...] = ("-v",),
              env: dict[str, str] | None = None, wait: bool = True, **settings: object):
        node = node or tmp_path / "node"
        node.mkdir(exist_ok=True, parents=True)
        server = ssh or sshd
        if dest is None:
            dest = str(node) if kind == "local" else f"root@127.0.0.1:{node}"
        settings = {"wpath": str(src), "rnodes": [dest], "ssh": server.ssh_command(),
                    "edelay": 0.3, "retry_min": 0.3, "retry_max": 1, **settings}
        conf = write_config(tmp_path / "inosync.conf", **settings)
        d = run_inosync(conf, *args, env=env)
        if wait:
            d.wait_log("synced full sync")
        d.settings = settings  # type: ignore[attr-defined]
        d.conf = conf  # type: ignore[attr-defined]
        return d

    return start


def reload_with(d, **changes: object) -> None:
    settings = {**d.settings, **changes}
    write_config(d.conf, **settings)
    count = d.log().count("synced full sync")
    d.signal(signal.SIGHUP)
    d.wait_log("reloaded")
    if settings != d.settings:  # only a change of what the node holds syncs (issue 18.4)
        d.wait_log("synced full sync", count=count + 1)
    d.settings = settings


# ----------------------------- 1. a reload that adds a blocking rsync option


@pytest.mark.slow
@pytest.mark.parametrize("by_reload", [True, False], ids=["reload", "at-start"])
def test_a_reload_that_adds_a_blocker_turns_the_replay_off(daemon, tree, tmp_path, by_reload):
    """The daemon decides once, at start, whether rsync_args turn the replay off
    (Daemon.replay_blocker). rsync_args take effect on a reload, the blocker
    does not: after a reload that adds --backup --backup-dir (refused at load
    since issue 16; --max-delete here, which a replayed rename over a file
    would bypass), `mv a b` is still replayed. Adding --rsync-path by a reload
    the same way brings back the first review's "the replay works where rsync
    does not"."""
    src, node = tree["src"], tmp_path / "node"
    (src / "a").write_text("the new b\n")
    (src / "b").write_text("the old b\n")
    args = ["--max-delete=1000"]
    d = daemon() if by_reload else daemon(rsync_args=args)
    reload_with(d, rsync_args=args)
    synced_after(d, lambda: (src / "warm-up").write_text("x"))  # the chain starts again
    synced_after(d, lambda: (src / "a").rename(src / "b"))
    assert tree_diff(src, node) == []
    assert "replaying" not in d.log().split("reloaded")[-1], \
        "a rename was replayed with --max-delete in rsync_args"


# ------------------------- 2. a node user holds the replay's lock on the node root


HOLD_LOCK = r"""
import fcntl, os, sys
fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY)  # the node's root: 0755, anyone may open it
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.read()
"""


@pytest.mark.slow
def test_a_node_user_cannot_hold_up_the_replay_with_the_root_lock(daemon, tree, tmp_path):
    """One replay at a time per node: the script takes flock(LOCK_EX) on the node's
    root directory and waits for it. Any user on the node who can open that
    directory (mode 0755: everyone) can take the same lock and keep it. Every
    batch with a rename then waits the whole `timeout` for the lock, is killed,
    counts as a failed run ("the move replay did not end in time", ERROR, then
    "recovered"), and only the retry sends it: one node user slows every rename
    batch of every node to `timeout` seconds (60 by default, often set to
    minutes for big transfers) and fills the log with errors. Plain rsync
    takes no such lock and syncs the rename at once."""
    src = tree["src"]
    tmp_path.chmod(0o755)
    (src / "episode.mp3").write_bytes(b"ID3" * 1000)
    d = daemon(timeout=8)
    node = tmp_path / "node"
    holder = as_nobody(node, HOLD_LOCK, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert holder.stdout is not None and holder.stdin is not None
    try:
        assert holder.stdout.readline() == b"locked\n"
        started = time.monotonic()
        synced_after(d, lambda: (src / "episode.mp3").rename(src / "2024-01.mp3"))
        took = time.monotonic() - started
    finally:
        holder.stdin.close()
        holder.wait(10)
    assert tree_diff(src, node) == []
    log = d.log()
    assert "did not end in time" not in log and "ERROR" not in log, \
        "a node user's flock on the node's root made the replay time out (a failed run)"
    assert took < 4, f"a rename took {took:.1f} s to reach the node (timeout = 8)"


# ----------------- 3. a wildcard in an ssh node's path: the remote shell globs it


@pytest.mark.slow
def test_an_ssh_node_path_with_a_wildcard_means_one_directory(tree, tmp_path):
    """rsync (3.2.4+, without -s) backslash-escapes the shell's special characters
    in the remote path but on purpose not the wildcards: the remote shell globbed
    host:/srv/site[1] into /srv/site1 when that existed, and rsync synced site1,
    while the replay renamed in the literal site[1], outside the node. Such a
    spelling cannot mean one thing to both: it is refused at load, exit 2."""
    literal = tmp_path / "site[1]"
    literal.mkdir()
    (tmp_path / "site1").mkdir()
    conf = write_config(tmp_path / "w.conf", wpath=str(tree["src"]),
                        rnodes=[f"root@127.0.0.1:{literal}"])
    done = subprocess.run([*inosync_argv(), "-c", str(conf), "--check"],
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert "leaves * ? [ ] and line breaks in an ssh node's path to the remote shell" \
        in done.stderr


# ----------- 4. a tree owned by its deploy user: the replay never works, silently


@pytest.mark.slow
def test_a_node_where_the_replay_can_never_work_is_said_once(daemon, tree, tmp_path):
    """rsync -a gives the node's root the owner of wpath. A web tree owned by its
    deploy user (uid 1000, mode 0755, nobody else may write) makes every node's
    root "not ours nor root's": the replay refuses every rename there, on every
    batch, for good, and says so only in its summary line, which the daemon logs
    at -v. At normal verbosity nothing tells that renames are sent as data on
    every node (the issue's points 7 and 8: when the replay cannot work, say so
    once). The first batch's summary says it already."""
    src = tree["src"]
    os.chown(src, 1000, 1000)
    src.chmod(0o755)
    (src / "episode.mp3").write_bytes(b"ID3" * 100_000)
    d = daemon(args=())
    node = tmp_path / "node"
    assert node.stat().st_uid == 1000
    pin = os.open(node / "episode.mp3", os.O_RDONLY)  # its inode number is not reused
    try:
        synced_after(d, lambda: (src / "episode.mp3").rename(src / "2024-01.mp3"))
        replayed = (node / "2024-01.mp3").stat().st_ino == os.fstat(pin).st_ino
    finally:
        os.close(pin)
    assert tree_diff(src, node) == []
    said = any(" WARNING " in line and "replay" in line.split(" WARNING ")[1]
               for line in d.log().splitlines())
    assert replayed or said, \
        "the rename was sent as data (no replay: the node's root is uid 1000's) and " \
        f"nothing at normal verbosity says so:\n{d.log()}"


# ------------- 5. the marks in a state_dir whose parent another user may write




@pytest.mark.slow
def test_a_mark_cannot_be_taken_away_by_another_user(tree, tmp_path):
    """With state_dir in a directory a deploy user may write (say
    /srv/app/.inosync-state), that user could rename it away after a crash
    mid-replay: the next start would find no mark and compare sizes and times
    only, keeping data an interrupted replay put under a name. state_dir is
    checked like sshd's StrictModes, every directory above it included: refused."""
    tmp_path.chmod(0o755)
    shared = tmp_path / "app"  # the deploy user's directory
    shared.mkdir()
    os.chown(shared, NOBODY, NOBODY)
    conf = write_config(tmp_path / "m.conf", wpath=str(tree["src"]),
                        rnodes=[str(tmp_path / "node")], state_dir=str(shared / "state"))
    done = subprocess.run([*inosync_argv(), "-c", str(conf), "--check"],
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert f"directory {shared} is owned by uid {NOBODY}" in done.stderr
    shared.chmod(0o777)
    os.chown(shared, 0, 0)
    done = subprocess.run([*inosync_argv(), "-c", str(conf), "--check"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "writable by group or others (owner uid 0, mode 0777)" \
        in done.stderr


# ---------- 6. a daemon killed (SIGKILL) mid-replay: the replay goes on without it


PAUSE_A_LITTLE = PAUSE.replace("sleep 60", "sleep 4")


@pytest.mark.slow
def test_a_replay_does_not_outlive_a_killed_daemon(daemon, tree, tmp_path):
    """The replay runs in its own session (start_new_session) with stdout on
    /dev/null: a daemon killed outright (OOM killer, kill -9, a supervisor other
    than systemd's control group) leaves it running, and nothing stops it but
    its alarm (`timeout`, 60 s by default): its heartbeat never fails locally,
    and nothing waits for its flock but another replay. The restarted daemon
    finds the mark and runs a full sync comparing contents, which gets through
    and clears the mark; then the orphan replays its remaining renames on a node
    that is already right (job -> done/1, moving t2's data over done/1). The
    node is left wrong, with no mark, and no run will look (same size, same
    mtime: only a checksum sees it)."""
    src = tree["src"]
    (src / "done").mkdir()
    (src / "job").write_text("OLD-JOB!")
    os.utime(src / "job", ns=(1_600_000_000_000_000_000,) * 2)
    for name in ("t1", "t2"):
        (src / name).write_text(f"JOB-000{name[1]}")
        os.utime(src / name, ns=(1_700_000_000_123_456_789,) * 2)
    hook, mark = tmp_path / "hook", tmp_path / "paused"
    hook.mkdir()
    (hook / "PauseAfterFirstRename.pm").write_text(PAUSE_A_LITTLE)  # a slow disk, say
    perl = "/usr/bin/perl"
    (hook / "perl").write_text(f'#!/bin/sh\nexec {perl} -I{hook} -MPauseAfterFirstRename "$@"\n')
    (hook / "perl").chmod(0o755)
    # TMPDIR: a daemon killed outright leaves its scratch directory behind.
    d = daemon(env={"PATH": f"{hook}:{os.environ['PATH']}", "PAUSE_MARK": str(mark),
                    "TMPDIR": str(tmp_path)})
    node = tmp_path / "node"
    (src / "t1").rename(src / "job")
    (src / "job").rename(src / "done" / "1")
    (src / "t2").rename(src / "job")
    wait_until(mark.exists, 20, "the replay's first rename")
    paused = time.monotonic()
    d.proc.kill()
    d.proc.wait(10)
    again = daemon(wait=False)
    again.wait_log("compares file contents")
    again.wait_log("synced full sync")
    assert time.monotonic() - paused < 4, "the restart was too slow for this test"
    assert tree_diff(src, node) == []  # the restart made the node right...
    time.sleep(6)
    assert tree_diff(src, node) == [], \
        "...then the killed daemon's replay renamed on: the node is wrong, unmarked"


# ------------- 7. rsync's popt aliases: not only inosync's command line decides


@pytest.mark.slow
@pytest.mark.parametrize("replay_moves", [True, False], ids=["replay", "plain-rsync"])
def test_rsync_options_from_a_popt_alias_turn_the_replay_off(daemon, tree, tmp_path,
                                                            replay_moves):
    """inosync takes RSYNC_PROTECT_ARGS and RSYNC_OLD_ARGS out of rsync's
    environment so that "its command line alone decides" which options rsync
    runs with, and judges the replay from rsync_args. But rsync (libpopt) also
    reads aliases from /etc/popt and $HOME/.popt: `rsync alias -a -a --backup
    --backup-dir=...` there makes every run back up, and the replay, which
    never looked, destroys the node's old b that rsync would back up (with -s
    there, the first review's "~ means two places" comes back the same way)."""
    src = tree["src"]
    (src / "a").write_text("the new b\n")
    (src / "b").write_text("the old b, to be backed up\n")
    home, backups = tmp_path / "home", tmp_path / "backups"
    home.mkdir()
    (home / ".popt").write_text(f"rsync alias -a -a --backup --backup-dir={backups}\n")
    d = daemon(env={"HOME": str(home)}, replay_moves=replay_moves)
    synced_after(d, lambda: (src / "a").rename(src / "b"))
    assert tree_diff(src, tmp_path / "node") == []
    # The fix: rsync runs with an empty HOME, so ~/.popt adds nothing; the command
    # line alone decides, as the replay assumes (rsync lines in /etc/popt are
    # refused at load: test_config).
    assert not backups.exists()
