"""A third hostile review (issue 15c), of the fixes made after the second one
(the replay's lock file, PDEATHSIG, the empty HOME and the /etc/popt check,
wildcard node paths, state_dir's StrictModes, untrusted nodes, the off-switch).
Each test reproduced a problem those fixes left (on 3ca0d5d); the "attacker" is
an unprivileged user on the node (uid/gid 65534). The lock now lies in a
directory of the replay's user that no one else may write (/run/inosync.replay
for root), rsync runs without HOME and without the RSYNC_* variables that add
options, and popt lines are matched as popt matches them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import in_syscall, write_config
from test_replay_hostile2 import NOBODY, as_nobody

from inosync.excludes import Excludes
from inosync.replay import Move, replay_argv, replay_input, summary
from inosync.rsync import child_environment

NONE = Excludes(())


def lock_name(node: Path) -> str:
    st = os.stat(node)
    return f"inosync-replay-{st.st_dev}-{st.st_ino}.lock"


def nobody(tmp_path: Path, code: str) -> None:
    proc = as_nobody(tmp_path, code, stderr=subprocess.PIPE)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err.decode()


# ------------------- 1. the lock's directory is chosen by what others put there


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which("strace"), reason="needs strace")
@pytest.mark.skipif(not os.path.isdir("/run/lock"), reason="needs /run/lock")
def test_a_node_user_makes_two_replays_run_at_once(tmp_path):
    """take_lock tries /run/lock, /var/lock, /tmp in turn, and goes on to the next
    one whenever sysopen fails. /run/lock and /tmp are world-writable: a node
    user puts a directory (or a symlink: O_NOFOLLOW gives ELOOP; with
    protected_regular, a file of theirs gives EACCES) at
    /run/lock/inosync-replay-<dev>-<ino>.lock, so replay A locks /tmp/... and
    runs. They remove it; replay B (the retry after A was cut short, or the
    next batch) creates and locks /run/lock/... and runs beside A: the lock
    that should make it wait is another file. Here strace holds A in its
    rename while B runs to its end."""
    node = tmp_path / "node"
    node.mkdir()
    (node / "a").write_text("a")
    (node / "b").write_text("b")
    name = lock_name(node)
    held = f"/run/lock/{name}"
    nobody(tmp_path, f"import os; os.mkdir({held!r})")  # what used to divert the lock
    calls = "rename,renameat,renameat2"
    first = subprocess.Popen(
        ["strace", "-f", "-qq", "-o", "/dev/null", "-e", f"trace={calls}",
         "-e", f"inject={calls}:delay_enter=4000000", *replay_argv(str(node), [])],
        stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    second = None
    try:
        assert first.stdin is not None
        first.stdin.write(replay_input(str(node), [Move("a", "a2")], NONE))
        first.stdin.close()
        deadline = time.monotonic() + 10
        while not in_syscall(first.pid, {"82", "264", "316", "38", "276"}):
            assert first.poll() is None and time.monotonic() < deadline, "replay A's rename"
            time.sleep(0.05)
        nobody(tmp_path, f"import os; os.rmdir({held!r})")
        started = time.monotonic()
        second = subprocess.Popen(replay_argv(str(node), []), stdin=subprocess.PIPE,
                                  stderr=subprocess.PIPE)
        _, err = second.communicate(replay_input(str(node), [Move("b", "b2")], NONE),
                                    timeout=20)
        # Alone, B takes some 20 ms; A is held in its rename for 4 s from before B began.
        assert time.monotonic() - started > 2.0, (
            "replay B ran to its end while replay A was still in its rename: two "
            f"replays at once on one node (B said: {err.decode().strip()})")
        assert summary(err.decode()) == (1, 0)
    finally:
        for p in (first, second):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        for d in ("/run/lock", "/tmp"):
            p = Path(d) / name
            if p.is_dir() and not p.is_symlink():
                p.rmdir()
            elif p.exists() or p.is_symlink():
                p.unlink()


def test_a_node_user_turns_the_replay_off_for_good(tmp_path):
    """A file of the node user's at the lock's name in /run/lock (and /tmp) makes
    take_lock give up at once: the script exits 3 (EXIT_UNSUPPORTED), and the
    daemon never tries that node again until it restarts. Said, but blamed on
    the node ("cannot replay safely here"), and the user can do it at any
    time, once: the name is <dev>-<ino> of a directory they can stat. The
    lock should stay a lock: a file that is not ours should be waited out or
    bypassed (a name with a random part in a root-only directory, or
    O_EXCL creation in a directory of our own), not end the replay for good."""
    node = tmp_path / "node"
    node.mkdir()
    (node / "a").write_text("a")
    name = lock_name(node)
    code = ("import os\nfor d in ('/run/lock', '/tmp'):\n"
            f"    open(os.path.join(d, {name!r}), 'w').close()\n")
    nobody(tmp_path, code)
    try:
        done = subprocess.run(replay_argv(str(node), []),
                              input=replay_input(str(node), [Move("a", "a2")], NONE),
                              capture_output=True, check=False)
        assert done.returncode == 0 and summary(done.stderr.decode()) == (1, 0), (
            f"exit {done.returncode}: {done.stderr.decode().strip()} (the daemon takes "
            "exit 3 as 'never replay on this node again')")
    finally:
        for d in ("/run/lock", "/tmp"):
            try:
                os.unlink(os.path.join(d, name))
            except FileNotFoundError:
                pass


# ------------------------- 2. what rsync reads besides its command line


def _rsync(src: Path, dst: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["rsync", "-a", f"{src}/", f"{dst}/"], env=child_environment(),
                          capture_output=True, check=True)


@pytest.fixture
def trees(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    (src / "f").write_text("f")
    return src, dst


# The popt file goes in a mount namespace of the test's own, whose /etc is an
# overlay (its upper layer on a tmpfs there): the real /etc/popt.d never exists.
# Written there, its "* alias -a -a --dry-run" made every rsync on the machine a
# dry run while it was there, exit 0 having copied nothing: the `alone` lock
# keeps this run's other tests away, not another run on the machine (another
# worktree's suite, tests/run-pythons). Seen: a daemon's run of 9 paths "synced"
# with nothing copied, so the one of them no later event named (a symlink made
# once) stayed missing on that node (test_checkpoint_restart.py, seed 5).
PRIVATE_ETC = r"""
mount -t tmpfs inosync-popt "$1" || exit 97
mkdir "$1/upper" "$1/work" || exit 97
mount -t overlay inosync-popt -o "lowerdir=/etc,upperdir=$1/upper,workdir=$1/work" /etc \
  || exit 97
mkdir -p /etc/popt.d && printf '%s\n' "$2" > /etc/popt.d/review15c || exit 97
shift 2
exec "$@"
"""


def with_private_popt(tmp_path: Path, line: str, *argv: str,
                      **kwargs: object) -> subprocess.Popen[bytes]:
    """argv, run where /etc/popt.d/review15c holds line, and nowhere else: a mount
    namespace of its own (exit 97: it could not be made; the caller skips)."""
    where = tmp_path / "private-etc"
    where.mkdir()
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        ["unshare", "-m", "--propagation", "private", "sh", "-c", PRIVATE_ETC, "sh",
         str(where), line, *argv], **kwargs)


def finished(proc: subprocess.Popen[bytes]) -> tuple[str, str]:
    out, err = proc.communicate(timeout=30)
    if proc.returncode == 97:
        pytest.skip(f"no mount namespace with an overlay on /etc here: {err.decode()}")
    assert proc.returncode == 0, err.decode()
    return out.decode(), err.decode()


CHECK = ("import subprocess, sys; import inosync.config as c; "
         "from inosync.rsync import child_environment; "
         "subprocess.run(['rsync', '-a', sys.argv[1] + '/', sys.argv[2] + '/'], "
         "env=child_environment(), check=True); print(c.popt_rsync_line())")


@pytest.mark.skipif(not shutil.which("rsync"), reason="needs rsync")
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                    reason="needs root and unshare (a mount namespace)")
@pytest.mark.alone  # a mount namespace holds every filesystem mounted at its start
@pytest.mark.parametrize("app", ["rsyn[c]", "*", "r*"])
def test_a_popt_line_for_rsync_by_a_pattern_is_not_refused(trees, app, tmp_path):
    """libpopt (1.19 here, Debian's rsync links it) matches a line's first word to
    the program as a glob pattern (configAppMatch: fnmatch when the word has
    * ? [): "rsyn[c] alias -a -a --dry-run" or "* alias ..." in /etc/popt or
    /etc/popt.d/* gives every rsync run options inosync never sees, as
    "rsync alias ..." would. popt_rsync_line only knows the word "rsync"."""
    src, dst = trees
    out, _ = finished(with_private_popt(
        tmp_path, f"{app} alias -a -a --dry-run", sys.executable, "-c", CHECK, str(src),
        str(dst), stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    assert not (dst / "f").exists(), "the real rsync took the alias: a dry run"
    assert out.strip() == "/etc/popt.d/review15c:1", "the check lets the line through"


@pytest.mark.skipif(not shutil.which("rsync"), reason="needs rsync")
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                    reason="needs root and unshare (a mount namespace)")
@pytest.mark.alone  # a mount namespace holds every filesystem mounted at its start
def test_the_popt_line_reaches_no_rsync_outside_the_test(trees, tmp_path):
    """While the alias is in place for the test above, an rsync anywhere else on
    the machine (another run's daemon) copies as it always does. Written in the
    real /etc/popt.d, "* alias -a -a --dry-run" made it exit 0 having copied
    nothing."""
    src, dst = trees
    proc = with_private_popt(tmp_path, "* alias -a -a --dry-run", "sh", "-c",
                             "echo ready; read done", stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdin is not None
    ready = proc.stdout.readline()
    try:
        if ready == b"ready\n":
            assert not os.path.lexists("/etc/popt.d/review15c"), "the real /etc was written"
            _rsync(src, dst)
            assert (dst / "f").exists(), "an rsync outside the test took the alias"
    finally:
        if ready == b"ready\n":  # else it ended already (exit 97: finished() skips)
            proc.stdin.write(b"done\n")
            proc.stdin.flush()
        finished(proc)
    assert ready == b"ready\n"


@pytest.mark.skipif(not shutil.which("rsync"), reason="needs rsync")
def test_rsync_iconv_from_the_environment_reaches_rsync(trees, monkeypatch):
    """cli.main drops RSYNC_PROTECT_ARGS and RSYNC_OLD_ARGS, and child_environment
    passes the rest: RSYNC_ICONV is rsync's --iconv default, the very option
    that turns the replay off (names differ on the node). Set in the daemon's
    environment (a unit's Environment=, a login shell's profile), rsync
    converts names while the replay renames the source's bytes."""
    src, dst = trees
    (src / "caf\udce9").write_text("latin1 name")  # b"caf\xe9"
    monkeypatch.setenv("RSYNC_ICONV", "latin1,utf8")
    _rsync(src, dst)
    assert sorted(os.listdir(dst)) == sorted(os.listdir(src)), \
        "rsync wrote other names than the source's (--iconv from RSYNC_ICONV)"


@pytest.mark.skipif(not shutil.which("rsync"), reason="needs rsync")
@pytest.mark.skipif(os.path.lexists("/nonexistent"), reason="/nonexistent exists here")
def test_the_empty_home_is_the_node_users_home(trees):
    """HOME=/nonexistent is the home directory of uid 65534 itself (nobody's
    passwd entry). Should it ever exist (pam_mkhomedir, `mkhomedir_helper
    nobody`, a service run as nobody with its home made), it is theirs, and
    root's rsync reads /nonexistent/.popt: nobody then adds options to every
    run. An unset HOME makes popt read no ~/.popt at all."""
    src, dst = trees
    os.mkdir("/nonexistent", 0o755)
    os.chown("/nonexistent", NOBODY, NOBODY)
    try:
        nobody(src, "open('/nonexistent/.popt', 'w').write('rsync alias -a -a --dry-run\\n')")
        _rsync(src, dst)
        assert (dst / "f").exists(), "root's rsync took nobody's ~/.popt alias (a dry run)"
    finally:
        shutil.rmtree("/nonexistent")


# ------------------- issue 16: a stranger's symlink above a local node


@pytest.mark.slow
def test_a_move_is_never_replayed_in_the_tree_a_strangers_symlink_above_the_node_names(
        tree, run_inosync, tmp_path):
    """The node is up/node, up a link of ours. Once up is a link of nobody's to another
    root-owned tree that holds the same names, a move in wpath was replayed there
    (renamed index.html in that tree) before rsync refused the destination. Now
    the run is not started (the node's chain is checked before each run), and the
    script itself would not follow the link either."""
    src = tree["src"]
    (tmp_path / "mine" / "node").mkdir(parents=True)
    other = tmp_path / "other" / "node"
    other.mkdir(parents=True)
    (other / "index.html").write_text("another root-owned tree\n")
    up = tmp_path / "up"
    up.symlink_to(tmp_path / "mine")
    conf = write_config(tmp_path / "inosync.conf", wpath=str(src), rnodes=[str(up / "node")],
                        edelay=0.3, retry_min=0.3, retry_max=1)
    d = run_inosync(conf, "-v")
    d.wait_log("synced full sync")
    swap = tmp_path / "up.tmp"
    swap.symlink_to(tmp_path / "other")
    os.lchown(swap, NOBODY, NOBODY)
    swap.rename(up)
    (src / "index.html").rename(src / "moved.html")
    d.wait_log(f"{up / 'node'}: rsync failed", count=2)  # and retried: still refused
    assert sorted(os.listdir(other)) == ["index.html"]
    assert (other / "index.html").read_text() == "another root-owned tree\n"
    assert f"a symlink owned by uid {NOBODY}" in d.log()
    assert (tmp_path / "mine" / "node" / "index.html").exists()  # not synced there either
    d.stop()


# /etc as an overlay in a mount namespace of the daemon's own, with nothing in
# popt.d yet: the test writes there through /proc/PID/root, which the rest of the
# machine never sees.
PRIVATE_EMPTY_ETC = r"""
mount -t tmpfs inosync-popt "$1" || exit 97
mkdir "$1/upper" "$1/work" || exit 97
mount -t overlay inosync-popt -o "lowerdir=/etc,upperdir=$1/upper,workdir=$1/work" /etc \
  || exit 97
shift
exec "$@"
"""


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                    reason="needs root and unshare (a mount namespace)")
@pytest.mark.alone  # a mount namespace holds every filesystem mounted at its start
def test_a_popt_line_made_while_the_daemon_runs_stops_its_runs(tmp_path):
    """The check at load refuses a popt line for rsync; one made later turned every
    run into what it said: with "rsync alias -a -a --dry-run" the runs logged
    "synced" and copied nothing, and what no later event named (a file made
    once) never reached the node (seen when a test elsewhere on the machine
    wrote /etc/popt.d). Now no run starts while the line is there, and says why;
    once it is gone the node gets what waited."""
    from helpers import Inosync, wait_until

    src, node = tmp_path / "src", tmp_path / "node"
    src.mkdir()
    (src / "index.html").write_text("hi\n")
    node.mkdir()
    conf = write_config(tmp_path / "inosync.conf", wpath=str(src), rnodes=[str(node)],
                        edelay=0.2, retry_min=0.2, retry_max=1)
    where = tmp_path / "private-etc"
    where.mkdir()
    d = Inosync(conf, ("-v",), tmp_path, wrap=("unshare", "-m", "--propagation", "private",
                                               "sh", "-c", PRIVATE_EMPTY_ETC, "sh", str(where)))
    try:
        wait_until(lambda: "synced full sync" in d.log() or d.proc.poll() is not None, 20,
                   "the full sync")
        if d.proc.returncode == 97:
            pytest.skip(f"no mount namespace with an overlay on /etc here: {d.log()}")
        popt = Path(f"/proc/{d.proc.pid}/root/etc/popt.d")
        popt.mkdir()
        (popt / "review15c").write_text("rsync alias -a -a --dry-run\n")
        assert not os.path.lexists("/etc/popt.d/review15c")  # the machine's /etc: untouched
        (src / "new.txt").write_text("made while the line was there\n")
        d.wait_log(r"review15c:1: this popt line \(made since the start\)")
        time.sleep(1.5)  # retries meanwhile: none may "sync"
        assert not (node / "new.txt").exists()
        assert "synced 1 path" not in d.log()
        (popt / "review15c").unlink()
        wait_until(lambda: (node / "new.txt").exists(), 20, "new.txt once the line is gone")
    finally:
        d.stop()
