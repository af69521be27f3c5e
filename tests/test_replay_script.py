"""The replay program itself, run for real with perl on directories here, and the
pure functions that decide what it is given (issue 15)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import in_syscall, wait_until
from test_symlink_chains import strangers_chain

from inosync.excludes import Excludes
from inosync.replay import (
    EXIT_BAD_INPUT,
    SCRIPT,
    Move,
    blocker,
    kinds,
    meaning,
    off_because,
    replay_argv,
    replay_input,
    sets_perms,
    ssh_host,
    summary,
)

NONE = Excludes(())


def run(root: Path | str, moves: list[Move], excludes: Excludes = NONE, parents: bool = True,
        env: dict[str, str] | None = None) -> tuple[int, int]:
    """Replay moves on root; (replayed, left to rsync)."""
    done = subprocess.run(replay_argv(str(root), []), input=replay_input(
        str(root), moves, excludes, parents), capture_output=True, env=env, check=True)
    counts = summary(done.stderr.decode())
    assert counts is not None, done.stderr
    return counts


def files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in root.rglob("*") if p.is_file()
            and not p.is_symlink()}


@pytest.fixture
def node(tmp_path: Path) -> Path:
    root = tmp_path / "node"
    (root / "d").mkdir(parents=True)
    (root / "a").write_text("a")
    (root / "d" / "b").write_text("b")
    return root


def test_renames_in_order_with_parents(node):
    assert run(node, [Move("a", "x/y/a"), Move("d", "e", True), Move("e/b", "e/c")]) == (3, 0)
    assert files(node) == {"x/y/a": "a", "e/c": "b"}
    assert (node / "x").stat().st_mode & 0o777 == 0o700  # rsync gives it the source's


def test_no_parents_made_when_rsync_does_not_set_permissions(node):
    """Issue 15.4: with --no-perms rsync never fixes a parent the replay made."""
    assert run(node, [Move("a", "new/a")], parents=False) == (0, 1)
    assert not (node / "new").exists() and (node / "a").exists()


def test_a_symlink_on_the_way_is_never_followed(node, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("s")
    (node / "up").symlink_to(outside)
    moves = [Move("up/secret", "stolen"), Move("a", "up/a"), Move("d/b", "up/new/b")]
    assert run(node, moves) == (0, 3)
    assert files(outside) == {"secret": "s"} and not (node / "stolen").exists()


def test_the_type_on_the_node_must_be_what_moved(node):
    """A file rename never carries a directory (which could hold excluded data)."""
    assert run(node, [Move("d", "e"), Move("a", "b", True)]) == (0, 2)
    assert files(node) == {"a": "a", "d/b": "b"}


def test_a_skipped_rename_leaves_the_names_it_should_have_filled_to_rsync(node):
    """mv a b skipped (no a on the node): the node's stale b is not the source's, so
    mv b c must not move it; a rename after that writes b again, fresh."""
    (node / "a").unlink()
    (node / "b").write_text("stale b")
    (node / "x").write_text("x")
    moves = [Move("a", "b"), Move("b", "c"), Move("x", "b"), Move("b", "z")]
    assert run(node, moves) == (2, 2)
    assert files(node) == {"z": "x", "d/b": "b"}  # stale b replaced by x, then moved on


def test_taints_follow_a_directory_rename(node):
    (node / "d" / "stale").write_text("old")
    moves = [Move("d/missing", "d/stale"), Move("d", "e", True), Move("e/stale", "f")]
    assert run(node, moves) == (1, 2)
    assert files(node) == {"a": "a", "e/b": "b", "e/stale": "old"}


def test_hard_names_and_bad_ones(node):
    odd = "\n; $(x) \\ \udcff"
    (node / odd).write_text("odd")
    moves = [Move(odd, f"{odd}.moved"), Move("../a", "b"), Move("a", "/b"), Move("a/", "c")]
    assert run(node, moves) == (1, 3)
    assert (node / f"{odd}.moved").read_text() == "odd"


@pytest.mark.parametrize("spelling, rel", [("~/node", "a"), ("~", "node/a"),
                                           ("~//node/", "a")])
def test_tilde_means_what_the_remote_shell_makes_of_it(node, tmp_path, spelling, rel):
    """Issue 15.6: rsync lets the remote shell expand a leading ~ ($HOME); so does
    the replay (run here as the ssh node would run it, with HOME set)."""
    env = {**os.environ, "HOME": str(tmp_path)}
    data = replay_input(f"root@h:{spelling}", [Move(rel, rel + ".moved")], NONE)
    done = subprocess.run(["perl", "-e", SCRIPT], input=data, capture_output=True, env=env,
                          cwd=node / "d", check=True)
    assert summary(done.stderr.decode()) == (1, 0)
    assert (tmp_path / "node" / "a.moved").exists() and not (tmp_path / "~").exists()


def test_tilde_user_is_that_user_s_home(tmp_path):
    import pwd
    home = pwd.getpwuid(os.getuid())
    data = replay_input(f"h:~{home.pw_name}/no-such-dir-{os.getpid()}", [Move("a", "b")], NONE)
    done = subprocess.run(["perl", "-e", SCRIPT], input=data, capture_output=True, check=True)
    assert summary(done.stderr.decode()) == (0, 1)  # resolved, and nothing there to rename
    data = replay_input("h:~no-such-user-xyz/x", [Move("a", "b")], NONE)
    done = subprocess.run(["perl", "-e", SCRIPT], input=data, capture_output=True, check=True)
    assert "no home directory for ~no-such-user-xyz" in done.stderr.decode()


def test_a_local_node_spelled_with_a_tilde_is_taken_literally(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "~").mkdir()
    (tmp_path / "~" / "a").write_text("a")
    assert run("~", [Move("a", "b")]) == (1, 0)
    assert (tmp_path / "~" / "b").exists()


def test_input_that_does_not_match_the_script_is_refused(node):
    done = subprocess.run(replay_argv(str(node), []), input=b"inosync-replay-1\0x\0",
                          capture_output=True)
    assert done.returncode == EXIT_BAD_INPUT


# ---------------------------------------------------------------- what it is given


def test_directory_renames_that_could_carry_excluded_data_are_not_replayed():
    """Issue 15.2: rexcludes ['/site/uploads'] and mv site site.old moved uploads away."""
    moves = [Move("site", "site.old", True), Move("site.new", "site", True),
             Move("img", "img2", True), Move("site/index.html", "index.html")]
    assert kinds(moves, Excludes(["/site/uploads"])) == [
        ("-", "site", "site.old"), ("-", "site.new", "site"), ("d", "img", "img2"),
        ("f", "site/index.html", "index.html")]
    # A name-only rule matches under every directory: no directory is replayed.
    assert [k for k, _, _ in kinds(moves, Excludes(["config.local.php"]))] == ["-", "-", "-", "f"]


@pytest.mark.parametrize("args, first", [
    ([], None), (["-azH", "--numeric-ids", "--zl=3", "--chmod=D755"], None),
    (["-av", "--no-p", "--del", "-B=512", "--out-format", "--stats"], None),
    (["--rsync-path", "/opt/rsync"], "--rsync-path"),
    (["--confine-root=/srv"], "--confine-root=/srv"),
    (["-s"], "-s"), (["-zs"], "-zs"),
    (["-v", "--backup"], "--backup"), (["-b"], "-b"), (["-zb"], "-zb"),
    (["--backup-dir", "/x"], "--backup-dir"), (["--inplace"], "--inplace"),
    (["-P"], "-P"), (["--partial"], "--partial"),
    (["--max-delete=5"], "--max-delete=5"), (["--iconv=utf8,latin1"], "--iconv=utf8,latin1"),
    (["--link-dest=/x"], "--link-dest=/x"), (["--some-new-option"], "--some-new-option"),
])
def test_options_not_known_to_be_neutral_turn_the_replay_off(args, first):
    assert blocker(args) == first
    assert (off_because(True, args) is None) == (first is None)


def test_off_when_turned_off():
    assert off_because(False, []) == "replay_moves = False"


@pytest.mark.parametrize("args, perms", [
    ([], True), (["--no-perms"], False), (["--no-p"], False), (["--no-perms", "-p"], True),
    (["--no-perms", "-a"], True), (["-a", "--no-p"], False),
])
def test_parents_are_made_only_when_rsync_sets_permissions(args, perms):
    assert sets_perms(args) is perms


@pytest.mark.parametrize("dest, host", [
    ("root@[::1]:/srv", "root@::1"), ("[fe80::1]:/srv", "fe80::1"), ("h:/srv", "h"),
    ("u@h.example:x", "u@h.example"),
])
def test_ssh_host_without_brackets(dest, host):
    """Issue 15.12: ssh wants an IPv6 literal without its brackets."""
    assert ssh_host(dest) == host
    assert replay_argv(dest, ["ssh"])[1] == host


def test_meaning_of_a_local_node_is_its_path():
    assert meaning("/srv/www") == "/srv/www"


def test_summary_is_read_from_the_last_line():
    assert summary("Warning: added host\nrenames replayed: 3, left to rsync: 1\n") == (3, 1)
    assert summary("perl: not found\n") is None




@pytest.mark.slow
@pytest.mark.skipif(not shutil.which("strace"), reason="needs strace (apt-get install strace)")
def test_a_directory_swapped_for_a_symlink_during_the_replay_is_never_followed(tmp_path):
    """Issue 15.5: a node user who can write uploads/ swaps uploads/d for a symlink to
    another directory while the replay runs. The old script checked each parent with
    lstat, then renamed by path, following the symlink: it renamed outside/f. strace
    holds the rename for a moment (delay_enter), so the swap always lands between the
    checks and the rename; every step now goes from a handle, so it renames in d."""
    node, outside = tmp_path / "node", tmp_path / "outside"
    (node / "uploads" / "d").mkdir(parents=True)
    outside.mkdir()
    (node / "uploads" / "d" / "f").write_text("node")
    (outside / "f").write_text("outside")
    calls = "rename,renameat,renameat2"
    tracer = subprocess.Popen(
        ["strace", "-f", "-qq", "-o", "/dev/null", "-e", f"trace={calls}",
         "-e", f"inject={calls}:delay_enter=1000000", *replay_argv(str(node), [])],
        stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    assert tracer.stdin is not None and tracer.stderr is not None
    tracer.stdin.write(replay_input(str(node), [Move("uploads/d/f", "uploads/d/g")], NONE))
    tracer.stdin.close()
    numbers = {str(n) for n in (82, 264, 316, 38, 276)}  # x86_64 and generic numbers
    wait_until(lambda: in_syscall(tracer.pid, numbers), 10, "the replay's rename")
    (node / "uploads" / "d").rename(node / "uploads" / "d.real")
    (node / "uploads" / "d").symlink_to(outside)
    assert tracer.wait(timeout=20) == 0, tracer.stderr.read()
    assert sorted(os.listdir(outside)) == ["f"] and (outside / "f").read_text() == "outside"
    assert sorted(os.listdir(node / "uploads" / "d.real")) == ["g"]


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
@pytest.mark.parametrize("how", ["direct", "behind ours", "in a stranger's directory"])
def test_a_strangers_symlink_above_the_node_is_never_followed(tmp_path, how):
    """Issue 16: the script opened the node's directory by its path, following every
    symlink on the way, and checked only the directory it got: a link nobody owns
    above the node (or behind a link of ours) led the renames into another
    root-owned tree; rsync 3.5 refused the destination only afterwards. It now
    opens it from / one name at a time, as paths.resolve walks."""
    other = tmp_path / "other" / "node"
    other.mkdir(parents=True)
    (other / "a").write_text("another tree's a")
    up, _ = strangers_chain(tmp_path, how, other.parent)
    done = subprocess.run(replay_argv(str(up / "node"), []), capture_output=True, check=True,
                          input=replay_input(str(up / "node"), [Move("a", "moved")], NONE))
    assert summary(done.stderr.decode()) == (0, 1)
    assert "(untrusted: the node's directory is reached through a symlink" in \
        done.stderr.decode()  # the daemon sends the data to this node from now on
    assert files(other.parent) == {"node/a": "another tree's a"}


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_symlinks_of_ours_above_the_node_are_followed(tmp_path, node):
    """/var/run -> /run, relative links, links behind links: root's, in root's
    directories, so the replay still works there."""
    (tmp_path / "srv").mkdir()
    (tmp_path / "hop").symlink_to(tmp_path)
    (tmp_path / "srv" / "mirror").symlink_to("../hop/srv/../node")
    assert run(tmp_path / "srv" / "mirror", [Move("a", "moved")]) == (1, 0)
    assert files(node) == {"moved": "a", "d/b": "b"}


# What `inosync@replay.service` makes: /run/inosync-replay, mode 0755 (RuntimeDirectory=
# inosync-%i), removed at its stop. The replay's lock directory must never be that.
IN_FRESH_RUN = """
import json, os, subprocess, sys
subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "inosync-test", "/run"], check=True)
os.mkdir("/run/inosync-replay", 0o755)
done = subprocess.run(json.loads(sys.argv[1]), input=sys.stdin.buffer.read(),
                      capture_output=True)
print(json.dumps([done.returncode, done.stderr.decode(), sorted(os.listdir("/run"))]))
"""


@pytest.mark.alone  # a mount namespace of its own: a copy of every mount
@pytest.mark.skipif(os.geteuid() != 0, reason="root's lock directory is in /run")
def test_lock_directory_is_no_instances_runtime_directory(node):
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed")
    # In a mount namespace of its own, with an empty /run: the machine's is left alone.
    argv = ["unshare", "--mount", "--propagation", "private", sys.executable, "-c",
            IN_FRESH_RUN, json.dumps(replay_argv(str(node), []))]
    done = subprocess.run(argv, input=replay_input(str(node), [Move("a", "moved")], NONE),
                          capture_output=True, text=False)
    if done.returncode != 0:
        pytest.skip(f"no mount namespace here: {done.stderr.decode().strip()}")
    code, stderr, in_run = json.loads(done.stdout)
    assert code == 0, stderr
    assert summary(stderr) == (1, 0) and files(node) == {"moved": "a", "d/b": "b"}
    # Its lock directory: neither the unit's /run/inosync nor any /run/inosync-NAME.
    (lock_dir,) = set(in_run) - {"inosync-replay"}
    assert lock_dir != "inosync" and not lock_dir.startswith("inosync-"), lock_dir
