"""Review 21 (hostile) of a8230cf (no run while a popt line for rsync is there),
dd3d9d5 (TempHold.released bounded to limit) and 7a71645 (metrics_file without
fsync). Each test failed on the code reviewed (then a strict xfail); fixed since.

The popt cases were checked against the machine's rsync 3.5.0 with libpopt
1.19 (Debian 1.19+dfsg-1) in a private mount namespace with an overlay on /etc
(never the real /etc): a line of each "bypass" shape turned `rsync -a src/ dst/`
into a dry run (nothing copied), and rsync ignored each "skipped" file. These
tests only point popt_rsync_line() at a temporary directory.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from inosync import config as configmod
from inosync.batch import RunPlan
from inosync.runner import Replay, Runner
from inosync.temphold import QUIET, TempHold

DRY = b" alias -a -a --dry-run\n"


def _popt_here(monkeypatch, tmp_path: Path) -> Path:
    """popt_rsync_line() reading tmp_path/popt and tmp_path/popt.d only."""
    folder = tmp_path / "popt.d"
    folder.mkdir()
    monkeypatch.setattr(configmod, "POPT_FILES", (str(tmp_path / "popt"),))
    monkeypatch.setattr(configmod, "POPT_DIRS", (str(folder),))
    return folder


# libpopt matches a line's first word with fnmatch(3) (FNM_PATHNAME | FNM_PERIOD
# | FNM_EXTMATCH, backslash escapes) after joining "\<newline>" continuations;
# popt_rsync_line uses Python's fnmatch on the first word of each physical line.
BYPASSES = {
    "caret-negation": b"[^x]sync" + DRY,
    "posix-class": b"[[:alpha:]]sync" + DRY,
    "backslash-escape": b"r\\sync*" + DRY,
    "extglob": b"@(rsync)*" + DRY,
    "continuation-inside-the-name": b"rs\\\nync" + DRY,
    "continuation-after-the-name": b"rsync\\\n" + DRY,
}


@pytest.mark.parametrize("line", BYPASSES.values(), ids=list(BYPASSES))
def test_a_popt_line_rsync_obeys_is_found_whatever_its_spelling(monkeypatch, tmp_path, line):
    """Each of these made the machine's rsync a dry run (checked in a mount
    namespace); the daemon neither refuses to start nor stops its runs, which
    then log "synced" and copy nothing."""
    folder = _popt_here(monkeypatch, tmp_path)
    (folder / "local").write_bytes(line)
    assert configmod.popt_rsync_line() is not None


SKIPPED = ("x.rpmnew", "x.rpmsave", ".hidden")


@pytest.mark.parametrize("name", SKIPPED)
def test_a_popt_file_rsync_never_reads_stops_nothing(monkeypatch, tmp_path, name):
    """An alias removed the rpm way (the package leaves NAME.rpmsave) or put aside as
    a dot file is not read by rsync (checked: the copy happened), yet every run of
    every node fails BROKEN "this popt line ... no run until it is removed"."""
    folder = _popt_here(monkeypatch, tmp_path)
    (folder / name).write_bytes(b"rsync" + DRY)
    assert configmod.popt_rsync_line() is None


def test_a_fifo_in_popt_d_does_not_hang_the_check(tmp_path):
    folder = tmp_path / "popt.d"
    folder.mkdir()
    os.mkfifo(folder / "pipe")
    code = ("import sys; from inosync import config as c; "
            "c.POPT_FILES = (); c.POPT_DIRS = (sys.argv[1],); print(c.popt_rsync_line())")
    try:
        done = subprocess.run([sys.executable, "-c", code, str(folder)], timeout=5,
                              capture_output=True, text=True,
                              cwd=Path(configmod.__file__).parent.parent)
    except subprocess.TimeoutExpired:
        pytest.fail("popt_rsync_line() still reading the FIFO after 5 s")
    assert done.returncode == 0 and done.stdout.strip() == "None", done


def test_no_rsync_starts_after_a_replay_once_a_popt_line_is_there(monkeypatch, tmp_path):
    """A line made while the replay runs (replay.timeout may be long) turns the run
    that follows into a dry run, which reports success: the renames were replayed,
    the contents never sent."""
    seen = tmp_path / "seen"
    with Runner() as runner:
        replay = Replay(["sh", "-c", "sleep 0.3"], b"", 1, [("a", "b")])
        assert runner.start("n1", RunPlan(full=True),
                            lambda plan, lst, rules: ["sh", "-c", f"touch {seen}"],
                            replay) is None
        # the line appears while the replay runs
        monkeypatch.setattr(configmod, "popt_rsync_line", lambda: "/etc/popt.d/x:1")
        deadline = time.monotonic() + 5
        ended = []
        while not ended and time.monotonic() < deadline:
            ended = runner.reap()
            time.sleep(0.01)
        assert ended
    assert not seen.exists(), "rsync ran under the popt line"


def test_a_released_file_forgotten_then_removed_is_deleted_on_the_nodes():
    hold = TempHold(limit=1)
    old = "d/.f.AAAAAA"
    # held, let go: the next run copies it to every node
    assert not hold.seen(old, False, 0.0, 1000.0, exposed=False)
    assert hold.due(QUIET) == [(old, 1000.0)]
    # another let go: limit 1 forgets the first
    assert not hold.seen("e/.g.BBBBBB", False, QUIET, 1060.0, exposed=False)
    hold.due(2 * QUIET)
    # written again, the daemon idle (no run in flight, none since the read, not
    # owed to a node: it was sent) -> the scheduler passes exposed=False
    t = 3 * QUIET
    hold.seen(old, False, t, 1180.0, exposed=False)
    # removed: the nodes hold it, so its deletion must go out
    assert hold.seen(old, True, t + 1, 1181.0, exposed=False), \
        "the deletion of a file every node holds was dropped"
