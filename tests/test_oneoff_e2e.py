"""One-off mode end to end (issue 17.7a): ``inosync SRC DEST DEST`` with the real
command, real inotify and real rsync; no configuration file anywhere."""

from __future__ import annotations

import signal
import stat
import subprocess

import pytest
from helpers import RSYNC, inosync_argv, tree_diff, wait_converged

from inosync import __version__

pytestmark = pytest.mark.slow  # end to end: real processes


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*inosync_argv(), *args], capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)


def test_one_off_daemon_keeps_two_local_destinations_in_sync(tree, run_inosync):
    src, nodes, work = tree["src"], tree["nodes"], tree["dir"]
    state = work / "state"
    d = run_inosync(None, "--state-dir", str(state), str(src), *map(str, nodes))
    wait_converged(src, nodes)
    d.wait_log("synced full sync", count=2)
    assert f"inosync {__version__}, config none (one-off mode): watching {src} " \
           "(3 directories); initial sync to 2 nodes" in d.log().splitlines()[0]

    # One inosync per tree, in one-off mode too: a second one is refused (exit 1).
    second = cli("--state-dir", str(state), str(src), str(work / "node3"))
    assert second.returncode == 1, second.stderr
    assert f"already watches {src}" in second.stderr and not (work / "node3").exists()

    (src / "new").mkdir()  # create
    (src / "new" / "c.txt").write_text("c\n")
    (src / "index.html").write_text("<h1>changed</h1>\n")  # modify
    wait_converged(src, nodes, timeout=40)  # the default edelay: 10 s

    d.signal(signal.SIGHUP)  # no file to read again: said, and nothing else happens
    d.wait_log("SIGHUP ignored: one-off mode")

    (src / "docs").rename(src / "documents")  # rename (replayed on the nodes)
    (src / "documents" / "old" / "b.txt").unlink()  # delete
    (src / "new" / "c.txt").rename(src / "c-moved.txt")
    wait_converged(src, nodes, timeout=40)
    for node in nodes:  # rsync -anc: nothing left to change, contents compared
        assert tree_diff(src, node) == []
        assert not (node / "docs").exists() and (node / "documents" / "a.txt").exists()

    d.signal(signal.SIGINT)  # Ctrl-C
    assert d.proc.wait(30) == 0
    log = d.log()
    assert "stopping (SIGINT)" in log and log.splitlines()[-1].endswith("nothing pending")
    assert "reload" not in log
    # The replay's marks went to the state_dir given, made private.
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert list(state.glob("*.unverified")) == []  # each confirmed by a run since


def test_check_and_verify_in_one_off_mode(tree):
    src, (node1, node2), work = tree["src"], tree["nodes"], tree["dir"]
    state = ["--state-dir", str(work / "state")]
    args = [str(src), str(node1), str(node2)]

    check = cli("--check", *state, *args)
    assert check.returncode == 0, check.stderr
    lines = check.stdout.splitlines()
    assert lines[:5] == ["config: none (one-off mode: wpath and rnodes from the command line)",
                         f"wpath: {src}", "nodes: 2", f"  {node1} (local)", f"  {node2} (local)"]
    assert f"state_dir: {work / 'state'}" in lines, lines
    assert "before the first start: inosync --verify --state-dir " \
           f"{work / 'state'} {src} {node1} {node2} lists what the first full sync would " \
           "change on each node (*deleting: what it would delete)" in lines, lines
    assert not (work / "state").exists() and list(node1.iterdir()) == []  # touched nothing

    (node2 / "stray").write_text("only on the node\n")
    differs = cli("--verify", *state, *args)
    assert differs.returncode == 1, differs.stdout + differs.stderr
    assert differs.stdout.startswith("CRITICAL: 2 of 2 nodes differ"), differs.stdout
    assert "*deleting stray" in differs.stdout, differs.stdout
    assert (node2 / "stray").exists()  # read-only

    for node in (node1, node2):
        subprocess.run([RSYNC, "-a", "--delete", "--modify-window=-1", f"{src}/", f"{node}/"],
                       check=True)
    same = cli("--verify", "--checksum", *state, *args)
    assert same.returncode == 0, same.stdout + same.stderr
    assert same.stdout.startswith("OK: 2 nodes identical"), same.stdout
    nagios = cli("--verify", "--nagios", *state, *args)
    assert nagios.returncode == 0 and nagios.stdout.startswith("OK: "), nagios.stdout

    refused = cli("--verify", "--nagios", *state, str(src), str(node1), "web1:")
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert refused.stdout.startswith("UNKNOWN: DEST 2 'web1:': names no directory"), \
        refused.stdout


def test_dry_run_in_one_off_mode_writes_nothing(tree, run_inosync):
    src, (node1, _), work = tree["src"], tree["nodes"], tree["dir"]
    state = work / "state"
    d = run_inosync(None, "-p", "--state-dir", str(state), str(src), str(node1))
    d.wait_log("would run")
    d.signal(signal.SIGTERM)
    assert d.proc.wait(30) == 0
    assert "dry run: nothing was copied" in d.log()
    assert list(node1.iterdir()) == [] and not state.exists()


def test_a_relative_src_and_dest_are_taken_from_the_current_directory(tree):
    """What --check shows is what the daemon would use: absolute paths."""
    work = tree["dir"]
    done = subprocess.run([*inosync_argv(), "--check", "--state-dir", "state", "src", "node1/"],
                          capture_output=True, text=True, timeout=60, cwd=work,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert f"wpath: {work / 'src'}" in done.stdout
    assert f"  {work / 'node1'} (local)" in done.stdout
    assert f"state_dir: {work / 'state'}" in done.stdout
