"""Restarts from a checkpoint, end to end: a real daemon stopped, the tree
changed meanwhile, the daemon started again. What changed arrives (compared
by checksum), and only that: a file planted on the nodes in a directory that
did not change survives, which no full sync would let happen. Each reason for
a full sync instead says so in the start line."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from helpers import Inosync, tree_diff, wait_converged, wait_until, write_config

from inosync.checkpoint import MARGIN, MAX_AGE

pytestmark = pytest.mark.slow  # end to end: real processes


def records(conf: Path) -> list[Path]:
    return sorted((conf.parent / "state").glob("node-*.checkpoint"))


def first_run(run_inosync, conf: Path, src: Path, nodes: list[Path], settle: bool = True,
              *args: str) -> None:
    """A first start (full sync), then a clean stop that records the checkpoints.
    settle: run past MARGIN, so that what was made before the start is older
    than the checkpoint's margin (a real tree's untouched parts are)."""
    d = run_inosync(conf, "-v", *args)
    d.wait_log(r"synced full sync", count=len(nodes))
    wait_converged(src, nodes)
    if settle:
        time.sleep(MARGIN + 0.5)
    assert d.stop() == 0
    assert len(records(conf)) == len(nodes), d.log()


def make_tree(src: Path) -> None:
    files = {"keep/k.txt": "k", "keep/sub/s.txt": "s", "work/f1.txt": "f1",
             "work/same.txt": "0123456789", "work/mode.txt": "m", "work/gone.txt": "g",
             "work/ren_a.txt": "r", "work/dir_a/x.txt": "x", "work/dir_a/inner/y.txt": "y",
             "work/d2f/z.txt": "z", "work/subtree/p/q/r.txt": "r",
             "other/mv_dir/deep/w.txt": "w", "other/stay.txt": "o"}
    for rel, text in files.items():
        path = src / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def change_while_stopped(src: Path) -> None:
    work = src / "work"
    (work / "new.txt").write_text("created while stopped")
    (work / "f1.txt").write_text("f1 rewritten, longer")
    same = work / "same.txt"
    st = same.stat()
    same.write_text("9876543210")  # same size, and the mtime put back
    os.utime(same, ns=(st.st_atime_ns, st.st_mtime_ns))
    (work / "mode.txt").chmod(0o600)
    (work / "gone.txt").unlink()
    (work / "ren_a.txt").rename(work / "ren_b.txt")
    (work / "dir_a").rename(work / "dir_b")
    shutil.rmtree(work / "d2f")
    (work / "d2f").write_text("a file where a directory was")
    shutil.rmtree(work / "subtree")
    (src / "other" / "mv_dir").rename(work / "mv_dir")  # across directories


def plant(nodes: list[Path], rel: str) -> list[int]:
    """A file only the nodes have; the mtime its directory had before, per node."""
    before = []
    for n in nodes:
        (n / rel).parent.mkdir(parents=True, exist_ok=True)
        before.append((n / rel).parent.stat().st_mtime_ns)
        (n / rel).write_text("only on the node")
    return before


def start_line(d: Inosync, nodes: list[Path], what: str) -> None:
    for n in nodes:
        d.wait_log(rf"{n}: {what}")


def test_changes_made_while_stopped_arrive_and_nothing_else_is_touched(tree, run_inosync):
    src, nodes = tree["src"], tree["nodes"]
    make_tree(src)
    conf = write_config(tree["dir"] / "inosync.conf", wpath=str(src),
                        rnodes=[str(n) for n in nodes], edelay=0.2)
    first_run(run_inosync, conf, src, nodes)
    saved = json.loads(records(conf)[0].read_text())
    assert saved["wpath"] == str(src) and saved["node"] in map(str, nodes)
    assert time.time() - saved["synced_to"] < 5 and saved["last_full"] is not None

    change_while_stopped(src)
    mtimes = plant(nodes, "keep/sub/planted.txt")  # a directory that did not change
    plant(nodes, "work/planted.txt")  # one whose entries changed: synced with deletions

    d = run_inosync(conf, "-v")
    start_line(d, nodes, r"starting from its checkpoint of .*: \d+ paths changed since")
    start_line(d, nodes, r"synced \d+ paths? in")
    log = d.log()
    assert "synced full sync" not in log and "full sync:" not in log, log
    for n, mtime in zip(nodes, mtimes):
        assert (n / "keep" / "sub" / "planted.txt").exists(), log
        assert not (n / "work" / "planted.txt").exists(), log
        (n / "keep" / "sub" / "planted.txt").unlink()
        os.utime(n / "keep" / "sub", ns=(mtime, mtime))
        assert tree_diff(src, n) == [], log  # by checksum: same.txt too
    # and it goes on as usual, its checkpoint recorded again at the stop
    (src / "keep" / "later.txt").write_text("after the restart")
    wait_converged(src, nodes)
    assert d.stop() == 0
    again = json.loads(records(conf)[0].read_text())
    assert again["synced_to"] > saved["synced_to"]
    assert again["last_full"] == saved["last_full"]  # no full sync since


def test_a_node_that_cannot_be_reached_keeps_its_checkpoint(tree, run_inosync):
    src, nodes = tree["src"], tree["nodes"]
    conf = write_config(tree["dir"] / "inosync.conf", wpath=str(src),
                        rnodes=[str(n) for n in nodes], edelay=0.2, retry_max=2.0)
    first_run(run_inosync, conf, src, nodes, settle=False)
    before = {p.name: json.loads(p.read_text())["synced_to"] for p in records(conf)}
    (src / "docs" / "new.txt").write_text("while node2 is away")
    shutil.rmtree(nodes[1])
    nodes[1].write_text("not a directory: every run there fails")
    d = run_inosync(conf, "-v")
    d.wait_log(rf"{nodes[0]}: synced")
    d.wait_log(rf"{nodes[1]}: rsync failed")
    assert d.stop() == 0
    after = {p.name: json.loads(p.read_text())["synced_to"] for p in records(conf)}
    moved = [name for name in after if after[name] > before[name]]
    assert len(moved) == 1, (before, after)  # node1 advanced, node2 kept its own
    nodes[1].unlink()
    nodes[1].mkdir()
    d = run_inosync(conf, "-v")
    wait_converged(src, nodes)
    assert d.stop() == 0


def corrupt(conf: Path, **fields: object) -> None:
    for path in records(conf):
        data = json.loads(path.read_text())
        data.update(fields)
        path.write_text(json.dumps(data))


FALLBACKS = {
    "no state": (None, "no checkpoint in state_dir"),
    "damaged state": (lambda c, s: [p.write_text("{cut") for p in records(c)],
                      r"\.checkpoint is damaged"),
    "another wpath directory": (lambda c, s: (s.rename(s.parent / "src.old"),
                                              shutil.copytree(s.parent / "src.old", s)),
                                "wpath is another directory than the checkpoint's"),
    "other excludes": (lambda c, s: c.write_text(c.read_text() + "rexcludes = ['*.bak']\n"),
                       r"changed since the checkpoint: excludes \(rexcludes"),
    "other rsync_args": (lambda c, s: c.write_text(c.read_text() + "rsync_args = ['-H']\n"),
                         "changed since the checkpoint: rsync_args"),
    "another version": (lambda c, s: corrupt(c, version="0.0.1"),
                        "the checkpoint was written by inosync 0.0.1"),
    "clock went back": (lambda c, s: corrupt(c, written_at=time.time() + 3600),
                        "the clock went backwards since the checkpoint"),
    "too old": (lambda c, s: corrupt(c, synced_to=time.time() - MAX_AGE - 60,
                                     written_at=time.time() - MAX_AGE - 60),
                "the checkpoint is older than 7 days"),
    "emask": (lambda c, s: c.write_text(c.read_text() + "emask = ['IN_CLOSE_WRITE', "
                                        "'IN_CREATE', 'IN_DELETE', 'IN_MOVED_FROM', "
                                        "'IN_MOVED_TO', 'IN_MODIFY']\n"),
              "emask leaves out IN_ATTRIB"),
    "delete policy": (lambda c, s: c.write_text(c.read_text() + "delete = 'startup'\n"),
                      "delete = 'startup': checkpoints are kept with delete = True only"),
    "another ssh command": (lambda c, s: c.write_text(
        c.read_text() + "ssh = ['ssh', '-o', 'BatchMode=yes', '-p', '2222']\n"),
        "changed since the checkpoint: rsync program and ssh command"),
    "--full": ("--full", "--full was given"),
    "wpath changed": (lambda c, s: (s / "top.txt").write_text("new at the top"),
                      "the entries or attributes of wpath itself changed"),
}


@pytest.mark.parametrize("case", sorted(FALLBACKS))
def test_each_doubt_gives_a_full_sync_and_says_why(tree, run_inosync, case):
    src, nodes = tree["src"], tree["nodes"]
    conf = write_config(tree["dir"] / "inosync.conf", wpath=str(src),
                        rnodes=[str(n) for n in nodes], edelay=0.2)
    change, why = FALLBACKS[case]
    args: list[str] = []
    if change is not None:
        first_run(run_inosync, conf, src, nodes, settle=False)
        if callable(change):
            change(conf, src)
        else:
            args.append(change)
    plant(nodes, "docs/old/planted.txt")  # a full sync deletes it
    d = run_inosync(conf, "-v", *args)
    start_line(d, nodes, f"full sync: .*{why}")
    d.wait_log(r"synced full sync", count=len(nodes))
    wait_converged(src, nodes)  # the planted files are gone
    assert "starting from its checkpoint" not in d.log()
    assert d.stop() == 0


@pytest.mark.parametrize("seed", [5, 11, 27])
def test_random_changes_while_stopped_arrive_after_each_restart(tree, run_inosync, seed):
    """Rounds of random operations while the daemon runs, then while it is
    stopped; each start from the checkpoint must leave the nodes equal to
    the source, by checksum. The operations stay inside a subdirectory:
    changes of wpath's own entries would give a full sync."""
    from randomops import RandomOps, drive

    src, nodes = tree["src"], tree["nodes"]
    (src / "site").mkdir()
    conf = write_config(tree["dir"] / "inosync.conf", wpath=str(src),
                        rnodes=[str(n) for n in nodes], edelay=0.2, retry_min=0.5,
                        retry_max=2)
    ops = RandomOps(src / "site", seed, same_size=seed % 2 == 1)
    time.sleep(MARGIN + 0.5)  # wpath's own ctime: older than any checkpoint's margin
    def converged_or_say(d: Inosync, when: str) -> None:
        """Equal within 60 s, or fail with the last operations and the log."""
        try:
            wait_converged(src, nodes, timeout=60)
        except AssertionError as e:
            d.stop()
            last = "\n  ".join(ops.history[-40:])
            raise AssertionError(f"seed {seed}, {when}: {e}\nlast operations:\n  {last}\n"
                                 f"{d.log()[-6000:]}") from None

    d = run_inosync(conf, "-v")
    for round_ in range(3):
        wait_converged(src, nodes)
        drive(ops, 30)  # while it runs
        converged_or_say(d, f"round {round_}, while running")
        assert d.stop() == 0, d.log()[-3000:]
        for _ in range(40):  # while it is stopped
            ops.step()
        d = run_inosync(conf, "-v")
        start_line(d, nodes, "starting from its checkpoint")
        converged_or_say(d, f"round {round_}, after the restart")
        assert "synced full sync" not in d.log()
    assert d.stop() == 0


def test_another_spelling_of_an_ssh_node_gives_a_full_sync(tree, run_inosync, sshd, tmp_path):
    """Local nodes are made absolute and normal at load; an ssh node is kept as
    written, and its checkpoint names the spelling it was written for."""
    src = tree["src"]
    remote = tmp_path / "remote"
    remote.mkdir()
    conf = tmp_path / "inosync.conf"

    def configure(node: str) -> None:
        write_config(conf, wpath=str(src), edelay=0.2, rnodes=[node], ssh=sshd.ssh_command())

    configure(f"root@127.0.0.1:{remote}")
    first_run(run_inosync, conf, src, [remote])
    configure(f"root@127.0.0.1:{remote}/")
    d = run_inosync(conf, "-v")
    d.wait_log(rf"root@127.0.0.1:{remote}/: full sync: the node is spelt otherwise than in "
               rf"the checkpoint \('root@127.0.0.1:{remote}'\)")
    d.wait_log("synced full sync")
    assert d.stop() == 0
    d = run_inosync(conf, "-v")  # the new spelling's own checkpoint from now on
    d.wait_log(rf"root@127.0.0.1:{remote}/: starting from its checkpoint")
    assert d.stop() == 0


def log_time(line: str) -> float:
    stamp = line[:23]  # "2026-12-01 03:06:31,104"
    return time.mktime(time.strptime(stamp[:19], "%Y-%m-%d %H:%M:%S")) + int(stamp[20:]) / 1000


def test_the_periodic_resync_counts_from_the_recorded_full_sync(tree, run_inosync):
    """Not from the start (a restart every few hours would never resync), nor at
    once (a start from the checkpoint would cost a full sync after all). A file
    planted on the nodes while stopped, in a directory that did not change,
    survives the start and goes with that periodic full sync."""
    src, nodes = tree["src"], tree["nodes"]
    interval = 12.0
    status = tree["dir"] / "status.json"
    conf = write_config(tree["dir"] / "inosync.conf", wpath=str(src),
                        rnodes=[str(n) for n in nodes], edelay=0.2,
                        resync_interval=interval, statusfile=str(status))
    first_run(run_inosync, conf, src, nodes)
    last_full = json.loads(records(conf)[0].read_text())["last_full"]
    plant(nodes, "docs/old/planted.txt")  # while stopped, in a directory nothing changes
    d = run_inosync(conf, "-v")
    start_line(d, nodes, "starting from its checkpoint")
    (src / "poke.txt").write_text("a run, and so a statusfile written since the start")
    d.wait_log(r"synced \d+ path", count=len(nodes))

    def recorded() -> list[object]:
        return [r["last_full_sync"] for r in json.loads(status.read_text())["nodes"]]

    wait_until(lambda: None not in recorded(), 10, "the statusfile")
    assert recorded() == pytest.approx([last_full] * 2, abs=0.5)
    assert all((n / "docs/old/planted.txt").exists() for n in nodes)  # no full sync ran
    d.wait_log("periodic full sync", count=len(nodes), timeout=30)
    wait_converged(src, nodes)  # the periodic one removes it
    lines = [line for line in d.log().splitlines() if "periodic full sync" in line]
    for line in lines:  # the log's time is the wall clock's, to the millisecond
        assert last_full + interval - 0.5 <= log_time(line) <= last_full + interval + 4, (
            line, last_full)
    assert d.stop() == 0


# The daemon, recording its checkpoints every second instead of every minute.
LAUNCH = """
import sys
import inosync.checkpoint
inosync.checkpoint.SAVE_EVERY = 1.0
from inosync.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_after_a_crash_the_last_periodic_record_is_used(tree, run_inosync, monkeypatch):
    """Killed with -9: no record at the stop, but the one written while it ran
    (every SAVE_EVERY, here 1 s): what changed after it, delivered or not, is
    found by the scan and sent."""
    import signal
    import sys

    import helpers

    monkeypatch.setattr(helpers, "inosync_argv", lambda: [sys.executable, "-c", LAUNCH])
    src, nodes = tree["src"], tree["nodes"]
    conf = write_config(tree["dir"] / "inosync.conf", wpath=str(src),
                        rnodes=[str(n) for n in nodes], edelay=0.2)
    time.sleep(MARGIN + 0.5)  # the tree's ctimes: older than the checkpoint's margin
    d = run_inosync(conf, "-v")
    d.wait_log(r"synced full sync", count=len(nodes))
    (src / "docs" / "while-running.txt").write_text("sent, then recorded")
    wait_converged(src, nodes)
    wait_until(lambda: len(records(conf)) == len(nodes), 10, "the periodic records")
    d.signal(signal.SIGSTOP)  # no read, no run, no record from here on
    (src / "docs" / "old" / "while-frozen.txt").write_text("never seen by the daemon")
    d.proc.kill()
    d.proc.wait()
    plant(nodes, "docs/old/planted.txt")  # a changed directory: deleted there
    d = run_inosync(conf, "-v")
    start_line(d, nodes, r"starting from its checkpoint of .*: \d+ paths? changed since")
    wait_converged(src, nodes)
    assert "synced full sync" not in d.log()
    assert d.stop() == 0
