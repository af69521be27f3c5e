"""pyinotify 0.9.6's traps, each shown contained, with real inotify."""

from __future__ import annotations

import logging
import os
import struct
import subprocess
import sys
from pathlib import Path

import pyinotify
import pytest
from helpers import ROOT, own_watch_limit, wait_until

from inosync.excludes import Excludes
from inosync.replay import Move
from inosync.watch import (
    IN_CREATE,
    IN_ISDIR,
    Watcher,
    parse_events,
)

EMASK = ("IN_CLOSE_WRITE", "IN_CREATE", "IN_DELETE", "IN_MOVED_FROM", "IN_MOVED_TO",
         "IN_MODIFY", "IN_ATTRIB")


@pytest.fixture
def watched(tmp_path: Path):
    root = tmp_path / "root"
    (root / "a" / "b").mkdir(parents=True)
    w = Watcher(str(root), EMASK, Excludes(()))
    w.start()
    yield w, root
    w.close()


def changes(w: Watcher, until: str | None = None) -> list[str]:
    """Read events until `until` was reported (tests write a marker last)."""
    seen: list[str] = []

    def done() -> bool:
        seen.extend(w.read().paths)
        return until is None or until in seen

    wait_until(done, 10, f"event for {until!r}")
    return seen


def raw_event(wd: int, mask: int, name: bytes) -> bytes:
    padded = name + b"\0" * (16 - len(name) % 16)
    return struct.pack("iIII", wd, mask, 0, len(padded)) + padded


def test_parse_events_keeps_non_utf8_names():
    buf = raw_event(1, IN_CREATE, b"ok") + raw_event(2, IN_CREATE | IN_ISDIR, b"bad\xff")
    events = parse_events(buf)
    assert [e[3] for e in events] == ["ok", os.fsdecode(b"bad\xff")]
    assert os.fsencode(events[1][3]) == b"bad\xff"


def test_pyinotify_itself_loses_non_utf8_batches(tmp_path):
    """The trap we contain: pyinotify's own reader raises on such a name."""
    wm = pyinotify.WatchManager()
    notifier = pyinotify.Notifier(wm)
    wm.add_watch(str(tmp_path), pyinotify.IN_CREATE)
    open(os.fsencode(tmp_path) + b"/x\xff", "w").close()
    with pytest.raises(UnicodeDecodeError):
        notifier.read_events()
    notifier.stop()


def test_non_utf8_file_event_is_reported(watched):
    w, root = watched
    open(os.fsencode(root) + b"/a/name-\xff", "w").close()
    (root / "marker").write_text("m")
    assert "a/" + os.fsdecode(b"name-\xff") in changes(w, "marker")


def test_non_utf8_directory_gets_a_watch(watched):
    w, root = watched
    os.mkdir(os.fsencode(root) + b"/dir-\xfe")
    changes(w, os.fsdecode(b"dir-\xfe"))
    assert os.fsdecode(b"dir-\xfe") in w.wd_of
    open(os.fsencode(root) + b"/dir-\xfe/f", "w").close()
    assert os.fsdecode(b"dir-\xfe") + "/f" in changes(w, os.fsdecode(b"dir-\xfe") + "/f")


def test_pyinotify_add_watch_chokes_on_non_utf8(tmp_path):
    """The trap we contain: pyinotify's binding encodes paths strictly."""
    os.mkdir(os.fsencode(tmp_path) + b"/d\xff")
    wm = pyinotify.WatchManager()
    with pytest.raises(UnicodeEncodeError):
        wm.add_watch(os.fsdecode(os.fsencode(tmp_path) + b"/d\xff"), pyinotify.IN_CREATE)


def test_get_wd_is_never_used(watched, monkeypatch):
    """get_wd() scans every watch; mkdir -p of a big tree must not call it."""
    w, root = watched

    def boom(self, path):
        raise AssertionError("get_wd called")

    monkeypatch.setattr(pyinotify.WatchManager, "get_wd", boom)
    deep = root / "n1" / "n2" / "n3"
    deep.mkdir(parents=True)
    for i in range(50):
        (deep / f"d{i}").mkdir()
    (root / "marker").write_text("m")
    changes(w, "marker")
    assert "n1/n2/n3/d49" in w.wd_of


def test_symlinked_directory_outside_is_not_watched(watched, tmp_path):
    w, root = watched
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    before = len(w)
    os.symlink(str(outside), root / "link")
    os.symlink(str(outside), root / "a" / "link2")
    (root / "marker").write_text("m")
    seen = changes(w, "marker")
    assert len(w) == before
    (outside / "sub" / "f").write_text("outside")
    (root / "marker2").write_text("m")
    seen = changes(w, "marker2")
    assert not any(p.startswith("link") for p in seen if p != "link")


def test_directory_moved_out_reports_no_stale_paths(watched, tmp_path):
    w, root = watched
    away = tmp_path / "away"
    (root / "a").rename(away)
    assert "a" in changes(w, "a")
    assert not any(p == "a" or p.startswith("a/") for p in w.wd_of)
    (away / "b" / "ghost").write_text("gone")
    (away / "ghost2").write_text("gone")
    (root / "marker").write_text("m")
    seen = changes(w, "marker")
    assert not any(p.startswith("a/") for p in seen), seen


def test_directory_moved_within_is_rewatched(watched):
    w, root = watched
    (root / "a").rename(root / "z")
    changes(w, "z")
    (root / "z" / "b" / "f").write_text("x")
    assert "z/b/f" in changes(w, "z/b/f")
    assert "z/b" in w.wd_of and "a/b" not in w.wd_of


def test_excluded_directories_are_not_watched(tmp_path):
    root = tmp_path / "root"
    (root / "cache" / "deep").mkdir(parents=True)
    (root / "keep").mkdir()
    w = Watcher(str(root), EMASK, Excludes(["cache/"]))
    w.start()
    assert sorted(w.wd_of) == ["", "keep"]
    w.close()


def test_pyinotify_stderr_handler_removed():
    handlers = logging.getLogger("pyinotify").handlers
    assert not any(type(h) is logging.StreamHandler for h in handlers)


def test_missing_asyncore_gives_a_clear_error():
    """On Python 3.12+ asyncore is gone; simulate that here."""
    code = ("import sys; sys.modules['asyncore'] = None\n"
            "try:\n    import inosync.watch\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout
    assert "pyasyncore" in out


def test_pyproject_declares_pyasyncore_for_312():
    text = (ROOT / "pyproject.toml").read_text()
    assert "pyasyncore; python_version >= '3.12'" in text
    assert '"pyinotify==0.9.6' in text


def test_watch_limit_raises_at_start(tmp_path):
    """A watch limit of 5 in a user namespace of the test's own: the machine's
    limit (lowered here before) binds every process of root's, other tests'
    daemons and other test runs' too."""
    root = tmp_path / "root"
    for i in range(20):
        (root / f"d{i}").mkdir(parents=True)
    code = ("import sys; from inosync.excludes import Excludes; "
            "from inosync.watch import Watcher, WatchLimitError\n"
            "w = Watcher(sys.argv[1], sys.argv[2:], Excludes(()))\n"
            "try:\n    w.start()\nexcept WatchLimitError:\n    sys.exit(0)\n"
            "sys.exit(3)\n")
    done = subprocess.run([*own_watch_limit(5), sys.executable, "-c", code, str(root),
                           *EMASK], capture_output=True, text=True, timeout=30,
                          cwd=Path(__file__).resolve().parent.parent)
    if done.returncode == 97:
        pytest.skip(f"no user namespace with a watch limit of its own here: {done.stderr}")
    assert done.returncode == 0, (done.returncode, done.stderr)


# ---------------------------------------------------------------- renames, for replay


def all_events(w: Watcher, until: str):
    """Read until `until` is reported; the merged paths and moves of every read."""
    paths: list[str] = []
    moves: list[tuple[str, str]] = []

    def done() -> bool:
        events = w.read()
        paths.extend(events.paths)
        moves.extend(events.moves)
        return until in paths

    wait_until(done, 10, f"event for {until!r}")
    return paths, moves


def test_renames_within_root_are_reported_in_order(watched):
    w, root = watched
    (root / "f").write_text("x")
    changes(w, "f")
    os.rename(root / "f", root / "a" / "g")  # a file, across directories
    os.rename(root / "a" / "b", root / "c")  # a directory
    os.rename(root / "a" / "g", root / "c" / "h")  # into the moved directory
    (root / "marker").touch()
    paths, moves = all_events(w, "marker")
    assert moves == [Move("f", "a/g"), Move("a/b", "c", is_dir=True), Move("a/g", "c/h")]
    assert {"f", "a/g", "a/b", "c", "c/h"} <= set(paths)  # rsync still sees every path


def test_renames_across_the_edges_are_not_moves(tmp_path):
    root = tmp_path / "root"
    (root / "cache").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.write_text("o")
    (root / "f").write_text("x")
    (root / "cache" / "c").write_text("c")
    w = Watcher(str(root), EMASK, Excludes(["/cache/"]))
    w.start()
    try:
        os.rename(outside, root / "in")  # from outside: no source to replay from
        os.rename(root / "f", tmp_path / "out")  # out of the tree
        os.rename(root / "cache" / "c", root / "from-cache")  # out of an excluded dir
        (root / "g").write_text("g")
        os.rename(root / "g", root / "cache" / "g")  # into an excluded dir
        (root / "marker").touch()
        paths, moves = all_events(w, "marker")
        assert moves == []
        assert {"in", "f", "from-cache", "g"} <= set(paths)
    finally:
        w.close()


def all_temps(w: Watcher, until: str) -> tuple[list[str], list[Move], list[tuple[str, bool]]]:
    paths: list[str] = []
    moves: list[Move] = []
    temps: list[tuple[str, bool]] = []

    def done() -> bool:
        events = w.read()
        paths.extend(events.paths)
        moves.extend(events.moves)
        temps.extend(events.temps)
        return until in paths

    wait_until(done, 10, f"event for {until!r}")
    return paths, moves, temps


def test_rsync_temporary_files_are_set_apart_and_their_renames_not_moves(watched, tmp_path):
    """What a relay sees when its upstream's rsync writes into it: each file as
    .NAME.XXXXXX, renamed to NAME. The final names are changes; the temporary
    ones are reported apart (the scheduler holds them back), created then gone;
    no rename of theirs is a move to replay."""
    w, root = watched
    src = tmp_path / "upstream"
    (src / "a").mkdir(parents=True)
    (src / "a" / "page.html").write_text("p" * 100_000)
    (src / ".htaccess").write_text("deny")
    subprocess.run(["rsync", "-a", f"{src}/", f"{root}/"], check=True)
    (root / "marker").touch()
    paths, moves, temps = all_temps(w, "marker")
    assert moves == []
    assert {"a/page.html", ".htaccess"} <= set(paths)
    assert not [p for p in paths if p.rsplit("/", 1)[-1].startswith((".page", ".htaccess."))]
    names = {p for p, _ in temps}
    assert len(names) == 2 and all(p.startswith(("a/.page.html.", ".htaccess.")) for p in names)
    for name in names:  # seen made, then seen gone
        events = [gone for p, gone in temps if p == name]
        assert events[0] is False and events[-1] is True


def test_a_user_rename_of_a_temporary_looking_name_is_no_move(watched):
    """Sent as data instead (never wrong: a rename is a deletion and a creation)."""
    w, root = watched
    (root / ".notes.draft1").write_text("n")
    (root / "plain").write_text("p")
    changes(w)
    os.rename(root / ".notes.draft1", root / "notes")
    os.rename(root / "plain", root / "a" / "plain")
    (root / "marker").touch()
    paths, moves, temps = all_temps(w, "marker")
    assert moves == [Move("plain", "a/plain")]
    assert "notes" in paths and (".notes.draft1", True) in temps


def test_walks_find_temporary_files_already_there(tmp_path):
    """A relay started while its upstream writes: the start's walk finds the
    temporary file (the daemon holds it back from the start's sync); one in a
    directory moved in later comes with the next read, as found by a walk."""
    root = tmp_path / "root"
    (root / "d").mkdir(parents=True)
    (root / "d" / ".big.bin.AbC123").write_text("partial")
    (root / "d" / "plain").write_text("p")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / ".x.Zz0099").write_text("partial")
    w = Watcher(str(root), EMASK, Excludes(()))
    try:
        w.start()
        found = w.take_found_temps()
        assert [p for p, _ in found] == ["d/.big.bin.AbC123"]
        assert found[0][1] == (root / "d" / ".big.bin.AbC123").stat().st_ctime
        os.rename(outside, root / "moved")
        (root / "marker").touch()
        found = []
        wait_until(lambda: found.extend(w.read().found) or found, 10, "the moved-in file")
        assert [p for p, _ in found] == ["moved/.x.Zz0099"]
    finally:
        w.close()


def test_no_moves_when_emask_leaves_out_rename_events(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "f").write_text("x")
    w = Watcher(str(root), ("IN_CLOSE_WRITE", "IN_MOVED_TO"), Excludes(()))
    w.start()
    try:
        os.rename(root / "f", root / "g")
        (root / "marker").write_text("m")
        _, moves = all_events(w, "marker")
        assert moves == []  # the old name is not sent: a replay would be the only copy
    finally:
        w.close()


def test_progress_is_reported_while_a_tree_is_watched(tmp_path):
    root = tmp_path / "root"
    for i in range(1000):
        (root / f"d{i // 100}" / f"e{i}").mkdir(parents=True)
    told: list[int] = []
    w = Watcher(str(root), EMASK, Excludes(()))
    w.on_progress, w.progress_every = told.append, 0.0  # each time it looks: every 256
    try:
        assert w.start() == 1011
    finally:
        w.close()
    assert told == [256, 512, 768]


def test_directories_seen_deleted_or_renamed_away_are_reported_as_such(watched, tmp_path):
    """Under delete = 'running' a run may take a node's directory with all it
    holds (--force) only when its batch has one of these (PathSet.deleted): a
    directory removed, renamed away or moved out; never a file (removing a file
    never needs --force), nor a path only made or written."""
    w, root = watched
    (root / "f").write_text("x")
    (root / "d").mkdir()
    (root / "e").mkdir()
    changes(w, "e")
    (root / "f").unlink()
    (root / "d").rmdir()
    os.rename(root / "e", root / "e2")
    os.rename(root / "a" / "b", tmp_path / "out")  # a directory moved out of root
    (root / "new").write_text("made")
    (root / "marker").touch()
    deleted: list[str] = []
    paths: list[str] = []

    def done() -> bool:
        events = w.read()
        paths.extend(events.paths)
        deleted.extend(events.deleted)
        return "marker" in paths

    wait_until(done, 10, "event for 'marker'")
    assert set(deleted) == {"d", "e", "a/b"}
    assert set(deleted) <= set(paths)
