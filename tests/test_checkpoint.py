"""Checkpoints, the pure parts: how far each node's checkpoint may advance (the
scheduler, with the wall-clock times of the watcher's reads passed in), when a
record may not be used (the fallback table), the record's file in state_dir,
and the scan of a real tree by ctime."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import pytest
from schedtools import A, B, config, starts

from inosync import checkpoint as cp
from inosync import scan
from inosync.batch import PathSet
from inosync.excludes import Excludes
from inosync.mounts import Mount
from inosync.paths import Identity
from inosync.scheduler import Resumed, RootSame, Scheduler


def ended(s: Scheduler, dest: str, rc: int, now: float) -> list:
    return s.run_ended(dest, rc, "", now, wall=5000.0 + now, took=0.5, what="x")


def read(s: Scheduler, wall: float, now: float, *paths: str) -> list:
    """One read of the watcher that began at wall and found paths (as the loop does)."""
    actions = s.changed(paths, now) if paths else []
    s.read_started(wall)
    return actions + s.tick(now)


@pytest.fixture
def synced() -> Scheduler:
    """Both nodes had their first full sync; the last read began at wall 110."""
    s = Scheduler(config())
    s.read_started(100.0)  # the watches were being added
    assert s.checkpoint(A) is None  # nothing known before anything ran
    starts(s.begin(0.0))
    assert s.checkpoint(A) is None  # the full sync is in flight: still nothing known
    ended(s, A, 0, 1.0)
    ended(s, B, 0, 1.0)
    read(s, 110.0, 1.0)
    return s


# ---- how far a checkpoint may advance


def test_after_the_first_full_sync_the_checkpoint_is_the_last_read(synced):
    assert synced.checkpoint(A) == synced.checkpoint(B) == 110.0
    read(synced, 120.0, 2.0)  # nothing found: every change before 120 was read, and sent
    assert synced.checkpoint(A) == 120.0


def test_changes_collected_during_edelay_hold_it_where_their_read_could_begin(synced):
    read(synced, 130.0, 2.0, "a.html")  # a change between the reads of 110 and 130
    read(synced, 140.0, 3.0)
    assert synced.checkpoint(A) == 110.0  # not yet sent: it may be as old as 110
    run = starts(read(synced, 150.0, 4.5))  # edelay over: in flight
    assert set(run) == {A, B} and run[A].batch.paths == {"a.html"}
    assert synced.checkpoint(A) == 110.0
    ended(synced, A, 0, 5.0)
    assert synced.checkpoint(A) == 150.0  # delivered: up to the last read
    assert synced.checkpoint(B) == 110.0  # its run still goes on


def test_a_failing_node_keeps_its_checkpoint_until_a_retry_gets_through(synced):
    read(synced, 130.0, 2.0, "a.html")
    starts(read(synced, 150.0, 4.5))
    ended(synced, B, 0, 5.0)
    ended(synced, A, 10, 5.0)  # a socket error: retried
    read(synced, 160.0, 5.5, "b.html")  # more meanwhile
    assert synced.checkpoint(A) == 110.0 and synced.checkpoint(B) == 150.0
    again = starts(read(synced, 170.0, 8.0))  # A's retry, B's b.html
    assert again[A].batch.paths == {"a.html", "b.html"}
    ended(synced, A, 0, 9.0)
    assert synced.checkpoint(A) == 170.0
    assert synced.checkpoint(B) == 150.0  # b.html in flight there (read from 150 on)


def test_changes_during_a_run_hold_it_at_their_read(synced):
    read(synced, 130.0, 2.0, "a.html")
    starts(read(synced, 150.0, 4.5))
    read(synced, 160.0, 5.0, "b.html")  # while a.html is sent
    ended(synced, A, 0, 5.5)
    assert synced.checkpoint(A) == 150.0  # b.html may have changed right after 150


def test_lost_events_hold_it_until_the_full_sync_got_through(synced):
    synced.overflowed(2.0)
    synced.read_started(130.0)
    assert synced.checkpoint(A) == 110.0
    assert starts(synced.root_checked(RootSame(), 2.1)) == {}  # the scan comes first
    run = starts(synced.rescanned(None, "the scan cannot say", 2.1))
    assert run[A].batch.full
    read(synced, 140.0, 2.5)
    assert synced.checkpoint(A) == 110.0
    ended(synced, A, 0, 3.0)
    assert synced.checkpoint(A) == 140.0


def test_a_directory_without_a_watch_stops_checkpoints_for_good(synced):
    synced.watch_limit_hit({"big"}, 2.0)
    read(synced, 200.0, 3.0)
    starts(synced.tick(3.0))  # the rewatch's batch
    ended(synced, A, 0, 4.0)
    read(synced, 300.0, 5.0)
    assert synced.checkpoint(A) == 110.0


def test_after_a_reload_nothing_is_known_until_its_full_sync_got_through(synced):
    actions = synced.reloaded(config(rsync_args=("--hard-links",)), 2.0)
    assert starts(actions)[A].batch.full
    read(synced, 130.0, 2.5)
    assert synced.checkpoint(A) is None
    ended(synced, A, 0, 3.0)
    assert synced.checkpoint(A) == 130.0


def test_a_resumed_node_stays_at_its_checkpoint_until_what_changed_since_got_there():
    s = Scheduler(config(resync_interval=3600.0))
    s.read_started(1000.0)
    batch = PathSet()
    batch.add("docs")
    batch.note_since(900.0)  # the record's point
    run = starts(s.begin(50.0, resumed={A: Resumed(batch, wall=1000.0, last_full=100.0),
                                        B: Resumed(PathSet(), wall=1000.0, last_full=800.0)}))
    assert set(run) == {A} and run[A].batch.paths == {"docs"} and not run[A].batch.full
    assert not run[A].batch.moves and run[A].batch.moves_dropped  # no replay
    assert s.checkpoint(A) == 900.0
    assert s.checkpoint(B) == 1000.0  # nothing changed there: up to the read
    ended(s, A, 0, 51.0)
    assert s.checkpoint(A) == 1000.0
    # resync_interval counts from the recorded full syncs (900 and 200 s ago),
    # not from this start, and not at once
    assert s.nodes[A].resync_at(3600.0) == pytest.approx(50.0 - 900.0 + 3600.0)
    assert s.nodes[B].resync_at(3600.0) == pytest.approx(50.0 - 200.0 + 3600.0)
    assert s.nodes[B].last_full == 800.0
    assert not starts(s.tick(52.0))
    assert set(starts(s.tick(50.0 - 900.0 + 3600.0))) == {A}
    ended(s, A, 0, 2800.0)
    assert set(starts(s.tick(50.0 - 200.0 + 3600.0))) == {B}


def test_a_resumed_node_whose_periodic_resync_is_overdue_gets_it_at_once():
    s = Scheduler(config(resync_interval=600.0))
    s.read_started(1000.0)
    batch = PathSet()
    batch.add("docs")
    run = starts(s.begin(50.0, resumed={A: Resumed(batch, wall=1000.0, last_full=100.0)}))
    assert run[A].batch.full and run[B].batch.full


# ---- when a record may not be used


IDENTITY = Identity(2049, 77)
SETTINGS = cp.fingerprint(["*.tmp"], ["--hard-links"], [], [])


def record(**changes: object) -> cp.Record:
    base = cp.Record(node=A, wpath="/srv/www", dev=2049, ino=77, settings=SETTINGS,
                     version=cp.__version__, synced_to=10_000.0, written_at=10_010.0,
                     last_full=5_000.0)
    return dataclasses.replace(base, **changes)


HERE = cp.Here(A, "/srv/www", IDENTITY, SETTINGS, wall=10_100.0)


@pytest.mark.parametrize("rec, here, why", [
    (None, HERE, "no checkpoint in state_dir"),
    (record(ino=78), HERE, "wpath is another directory"),
    (record(dev=2050), HERE, "wpath is another directory"),
    (record(wpath="/srv/old"), HERE, "wpath is another directory"),
    (record(node="a.example.com:/www"), HERE, "the node is spelt otherwise"),
    (record(version="0.3.9"), HERE, "written by inosync 0.3.9"),
    (record(settings=cp.fingerprint(["*.bak"], ["--hard-links"], [], [])), HERE,
     r"changed since the checkpoint: excludes \(rexcludes, rexcludes_from\)$"),
    (record(settings=cp.fingerprint(["*.tmp"], [], [], [])), HERE,
     "changed since the checkpoint: rsync_args$"),
    (record(settings=cp.fingerprint(["*.tmp"], ["--hard-links"], ["data"], [])), HERE,
     "changed since the checkpoint: kept mount points$"),
    (record(settings=cp.fingerprint(["*.tmp"], ["--hard-links"], [],
                                    [["data", "8:17", "/", "ext4", "/dev/sdb1"]])), HERE,
     "changed since the checkpoint: filesystems mounted inside wpath$"),
    (record(settings=cp.fingerprint(["*.tmp"], ["--hard-links"], [], [], "startup")), HERE,
     "changed since the checkpoint: delete$"),
    (record(), dataclasses.replace(HERE, wall=10_005.0), "the clock went backwards"),
    (record(), dataclasses.replace(HERE, wall=10_000.0 + cp.MAX_AGE + 1),
     "older than 7 days"),
])
def test_a_record_is_refused_on_any_doubt(rec, here, why):
    import re

    found = cp.refuse(rec, here)
    assert found is not None and re.search(why, found), found


def test_a_record_written_for_this_very_situation_is_used():
    assert cp.refuse(record(), HERE) is None
    assert cp.refuse(record(), dataclasses.replace(HERE, wall=10_000.0 + cp.MAX_AGE - 1)) is None


def test_an_emask_without_every_change_event_keeps_no_checkpoint():
    assert cp.events_problem(config().emask) is None
    why = cp.events_problem(("IN_CLOSE_WRITE", "IN_CREATE", "IN_DELETE", "IN_MOVED_FROM",
                             "IN_MOVED_TO", "IN_MODIFY"))
    assert why is not None and "IN_ATTRIB" in why


def test_mounts_inside_wpath_are_part_of_what_a_record_is_valid_for():
    mounts = [Mount("/", "ext4", "8:1", "/", "/dev/sda1"),
              Mount("/srv/www/data", "ext4", "8:17", "/", "/dev/sdb1"),
              Mount("/srv/wwwx", "tmpfs", "0:40", "/", "tmpfs")]
    assert cp.mounts_inside("/srv/www", mounts) == [["data", "8:17", "/", "ext4", "/dev/sdb1"]]


# ---- the record in state_dir


def test_a_record_round_trips_any_node_name(tmp_path):
    store = cp.Store(str(tmp_path / "state"))
    odd = "h:/srv/caf\udce9 #1"  # not UTF-8
    rec = record(node=odd)
    assert store.save(rec)
    assert store.load(odd) == rec
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700
    saved = Path(store.path(odd))
    assert saved.stat().st_mode & 0o777 == 0o600
    # another spelling of the same node finds it, and is told apart inside
    assert store.path("h:/srv//caf\udce9 #1/") == str(saved)
    assert store.load("a.example.com:/other") is None
    # one file per node, whatever the tree: another tree's record is replaced
    assert store.save(dataclasses.replace(rec, wpath="/srv/other"))
    assert store.load(odd).wpath == "/srv/other"


def test_an_unreadable_or_damaged_record_is_an_error_not_a_start_from_it(tmp_path):
    store = cp.Store(str(tmp_path / "state"))
    assert store.save(record())
    path = Path(store.path(A))
    path.write_bytes(path.read_bytes()[:40])  # cut short
    with pytest.raises(cp.CheckpointError, match="damaged"):
        store.load(A)
    path.unlink()
    path.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(cp.CheckpointError, match="cannot read"):
        store.load(A)


def test_a_record_cannot_be_written_into_a_state_dir_others_may_write(tmp_path, caplog):
    state = tmp_path / "state"
    state.mkdir(mode=0o777)
    state.chmod(0o777)
    store = cp.Store(str(state))
    assert not store.save(record())
    assert not list(state.iterdir())
    assert "cannot record checkpoints" in caplog.text


# ---- the scan of a real tree


def make(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def after_a_tick() -> int:
    """A time strictly after everything made so far, and before what comes next
    (the kernel's timestamps step by a jiffy)."""
    time.sleep(0.05)
    mark = time.time_ns()
    time.sleep(0.05)
    return mark


def test_the_scan_finds_what_changed_since_and_only_that(tmp_path):
    root = tmp_path / "www"
    make(root, {"keep/a.html": "a", "keep/deep/b.html": "b", "work/c.html": "c",
                "work/gone.html": "g", "work/sub/d.html": "d", "moved/x/y.html": "y",
                "same.html": "0123", "cache/t.tmp": "t", "data/db": "kept"})
    os.symlink("nowhere", root / "keep" / "link")
    mark = after_a_tick()
    (root / "work" / "new.html").write_text("new")  # work's entries change
    (root / "work" / "gone.html").unlink()
    st = (root / "same.html").stat()
    (root / "same.html").write_text("4567")  # same size, mtime put back
    os.utime(root / "same.html", ns=(st.st_atime_ns, st.st_mtime_ns))
    (root / "keep" / "deep" / "b.html").chmod(0o600)
    os.rename(root / "moved" / "x", root / "work" / "x")  # its children keep old ctimes
    (root / "cache" / "u.tmp").write_text("excluded")
    (root / "data" / "db").write_text("under a kept place")
    found = scan.walk(str(root), mark, Excludes(("*.tmp", "/cache/")), frozenset({"data"}))
    assert found.seen >= 14
    paths = scan.changed(found, mark)
    assert paths is not None
    assert set(paths) >= {"work", "work/new.html", "same.html", "keep/deep/b.html", "moved",
                          "work/x"}
    assert not set(paths) & {"keep", "keep/a.html", "keep/link", "work/sub", "cache/u.tmp",
                             "data/db", "data", "cache"}
    # a later threshold sees nothing; wpath's own entries changed: a full sync
    assert scan.changed(found, time.time_ns() + 10**9) == []
    (root / "top.html").write_text("top")
    assert scan.changed(scan.walk(str(root), mark), mark) is None



def test_a_local_node_made_again_or_replaced_is_refused():
    """Review 18: a local node's directory is recorded by device and inode."""
    rec = record(node="/srv/node", node_id="2049:12")
    here = dataclasses.replace(HERE, node="/srv/node", node_id="2049:12")
    assert cp.refuse(rec, here) is None
    for now in ("2049:13", "2050:12", ""):
        why = cp.refuse(rec, dataclasses.replace(here, node_id=now))
        assert why and "not the one the checkpoint was written for" in why
    assert "not the one" in (cp.refuse(dataclasses.replace(rec, node_id=""), here) or "")


def test_the_lag_of_a_clock_set_back_is_measured_in_the_same_boot_only():
    """Review 18: written at wall 10_010 and boot clock 100; now wall 10_100 (90 s
    later) but boot clock 290 (190 s later): the wall clock was set back 100 s."""
    rec = record(boot_id="b1", boottime=100.0)
    assert cp.clock_lag(rec, dataclasses.replace(HERE, boot=("b1", 290.0))) == 100.0
    assert cp.clock_lag(rec, dataclasses.replace(HERE, boot=("b1", 190.0))) == 0.0
    assert cp.clock_lag(rec, dataclasses.replace(HERE, boot=("b1", 150.0))) == 0.0  # ahead
    assert cp.clock_lag(rec, dataclasses.replace(HERE, boot=("b2", 900.0))) == 0.0
    assert cp.clock_lag(record(), dataclasses.replace(HERE, boot=("b1", 900.0))) == 0.0
    assert cp.decode(cp.encode(rec)) == rec


def test_a_node_that_lacks_or_has_a_top_level_name_is_not_resumed():
    """Review 18 (nodecheck.py): the dry run of the top level names what it would do."""
    from inosync.nodecheck import verdict

    assert verdict(0, ".d..t...... docs/\n>f..t...... index.html\n") is None
    assert "it lacks 'index.html'" in (verdict(0, ">f+++++++++ index.html\n") or "")
    assert "it lacks 'docs/'" in (verdict(0, "cd+++++++++ docs/\n") or "")
    assert "it has 'stray'" in (verdict(0, "*deleting   stray\n") or "")
    assert "rsync exit 255" in (verdict(255, "") or "")
    assert "did not answer" in (verdict(None, "") or "")


def test_a_tree_on_a_network_filesystem_keeps_no_checkpoints():
    """Review 18: its ctimes come from the server's clock (behind by minutes: the
    changes made while stopped carry times older than the checkpoint)."""
    from inosync.mounts import Mount

    local = [Mount("/", "ext4"), Mount("/srv", "xfs")]
    assert cp.clock_elsewhere("/srv/www", local) is None
    assert "wpath is on nfs4" in (cp.clock_elsewhere("/srv/www", [*local, Mount("/srv", "nfs4")])
                                  or "")
    assert "wpath is on fuse.sshfs" in (cp.clock_elsewhere(
        "/srv/www", [*local, Mount("/srv/www", "fuse.sshfs")]) or "")
    assert "/srv/www/share is on cifs" in (cp.clock_elsewhere(
        "/srv/www", [*local, Mount("/srv/www/share", "cifs")]) or "")
    assert cp.clock_elsewhere("/srv/www", [Mount("/", "nfs4"), Mount("/srv", "xfs")]) is None


def test_a_tree_whose_ctimes_anyone_can_set_keeps_no_checkpoints():
    """FAT and exFAT keep no change time: the kernel reads a file's ctime back as
    its mtime, so a file rewritten while inosync was stopped, its mtime put back
    (cp -p, rsync -a, tar x), looked older than the checkpoint and was never sent.
    A plain FUSE mount ("fuse", "fuseblk": ntfs-3g, or a user's own fusermount
    without a subtype) reports what its server says. Failed before the fix: None
    (checkpoints kept). This kernel has no vfat or exfat module: not end to end."""
    from inosync.mounts import Mount

    local = [Mount("/", "ext4")]
    for fstype in ("vfat", "msdos", "exfat"):
        why = cp.clock_elsewhere("/media/usb/www", [*local, Mount("/media/usb", fstype)])
        assert why and f"wpath is on {fstype}: it keeps no change time" in why
    for fstype in ("fuse", "fuseblk"):
        why = cp.clock_elsewhere("/srv/www", [*local, Mount("/srv/www/u", fstype)])
        assert why and f"/srv/www/u is on {fstype}: its ctimes come from a FUSE server" in why
    assert cp.clock_elsewhere("/srv/www", [*local, Mount("/srv/www/u", "fusectl")]) is None


def test_another_ssh_command_or_rsync_program_voids_a_start_record():
    """The same spelling may reach another host through another ssh command (a
    -p, a ProxyJump, another -F): a restart must not trust what was delivered
    through the old one. A reload treats them itself (reloadplan.py)."""
    old = cp.fingerprint([], [], [], [], True, ("/usr/bin/rsync", ["ssh"]))
    assert old != cp.fingerprint([], [], [], [], True, ("/usr/bin/rsync", ["ssh", "-p", "2222"]))
    assert old != cp.fingerprint([], [], [], [], True, ("/opt/rsync", ["ssh"]))
    assert old == cp.fingerprint([], [], [], [], True, ("/usr/bin/rsync", ("ssh",)))
    assert "rsync program and ssh command" not in cp.fingerprint([], [], [], [])


def test_a_clock_set_back_while_running_lowers_the_checkpoint_by_as_much(synced):
    """An NTP step back of 100 s while running: b.html, changed right after it,
    has a ctime 100 s older than the read before it, which the batch notes as its
    start. With node A failing until later, its checkpoint stayed at that read
    (205), past b.html's ctime (111): recorded, the next start's scan would never
    find b.html for A. Failed before the fix (205.0)."""
    s = synced
    s.read_started(200.0, 100.0)  # wall - monotonic: 100
    s.changed(["a.html"], 105.0)
    s.read_started(205.0, 105.0)
    assert set(starts(s.tick(108.0))) == {A, B}  # edelay over
    ended(s, B, 0, 108.5)
    ended(s, A, 10, 108.5)  # a socket error: A is retried, and fails on
    s.changed(["b.html"], 111.0)  # made at wall 111, after the clock went back 100 s
    s.read_started(112.0, 112.0)
    s.read_started(400.0, 400.0)  # much later, A still not through
    point = s.checkpoint(A)
    assert point is not None and point <= 111.0


def test_a_node_resumed_with_nothing_to_send_is_checkpointed_at_the_reads():
    """The scan found nothing since its record (900): the node holds every change
    made before the watches began. The empty batch's start stayed in its pending
    for good, holding the checkpoint at 900 while the tree was quiet (failed
    before the fix: 900.0)."""
    s = Scheduler(config())
    s.read_started(1000.0)
    nothing = PathSet(100)
    nothing.note_since(900.0)
    s.begin(0.0, resumed={A: Resumed(nothing, 1000.0, 500.0)})
    read(s, 1100.0, 1.0)
    read(s, 1200.0, 2.0)
    assert s.checkpoint(A) == 1200.0


def test_an_overflow_whose_scan_found_nothing_holds_no_checkpoint(synced):
    """After an overflow the scan found nothing changed since the last complete read
    (110): nothing is owed to any node. The empty batch still carried 110 as its
    start into every node's pending, which no run takes: the checkpoints stayed at
    110 while the tree was quiet (failed before the fix: 110.0)."""
    synced.overflowed(2.0)
    synced.read_started(130.0)
    synced.root_checked(RootSame(), 2.1)
    assert starts(synced.rescanned([], "by ctime since ...", 2.2)) == {}
    read(synced, 140.0, 3.0)
    read(synced, 150.0, 4.0)
    assert synced.checkpoint(A) == synced.checkpoint(B) == 150.0
