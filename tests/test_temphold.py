"""A relay's rsync temporary files, held back by the scheduler (temphold.py):
plain values, explicit times, no processes. The relay's upstream writes
``.f.AbC123`` and renames it to ``f``; the nodes below must get ``f`` only,
and never lose a real file that merely looks like a temporary one."""

from __future__ import annotations

import pytest
import schedtools
from schedtools import starts

from inosync.batch import PathSet
from inosync.config import Config
from inosync.scheduler import Resumed, RootMoved, Scheduler
from inosync.temphold import CAP, QUIET, RULES_MAX, TempHold

A, B = "/srv/c1", "/srv/c2"
T = "docs/.page.html.AbC123"  # what rsync writes docs/page.html as
OK = 0


def config(**changes: object) -> Config:
    return schedtools.config(**{"rnodes": (A, B), **changes})


def end(s: Scheduler, dest: str, now: float) -> list:
    return s.run_ended(dest, OK, "", now, wall=1000.0 + now, took=0.5, what="1 path")


def read(s: Scheduler, now: float, paths=(), temps=(), moves=None) -> list:
    """One read of the watcher, as the loop does it: events in, then the mark."""
    actions = s.changed(list(paths), now, moves, list(temps)) if paths or temps else []
    s.read_started(1000.0 + now)
    return actions + s.tick(now)


@pytest.fixture
def idle() -> Scheduler:
    """Both nodes synced, and a read since: no run can have seen anything newer."""
    s = Scheduler(config())
    starts(s.begin(0.0))
    end(s, A, 1.0)
    end(s, B, 1.0)
    s.read_started(1001.5)
    s.read_started(1001.6)
    return s


def test_a_landed_temporary_file_sends_only_its_final_name(idle):
    s = idle
    assert read(s, 10.0, temps=[(T, False)]) == []  # held: not even a batch timer
    assert s.next_deadline() == 10.0 + QUIET
    read(s, 11.0, paths=["docs/page.html"], temps=[(T, True)])  # the rename
    runs = starts(s.tick(13.0))
    assert set(runs) == {A, B}
    assert runs[A].batch.paths == {"docs/page.html"}  # not the temporary name
    assert runs[A].held == ()  # nothing left to leave out
    assert len(s.temps) == 0 and s.next_deadline() != 10.0 + QUIET


def test_every_run_leaves_a_held_file_out(idle):
    """A directory listed (sent recursively) must not carry it either."""
    s = idle
    read(s, 10.0, paths=["docs"], temps=[(T, False)])
    runs = starts(s.tick(12.0))
    assert runs[A].batch.paths == {"docs"} and runs[A].held == (T,)
    assert runs[B].held == (T,)


def test_a_file_first_seen_while_a_run_may_read_is_deleted_downstream(idle):
    """A run in flight may have copied it before the watcher said it existed: when
    it vanishes, the nodes are told (a listed missing path deletes it)."""
    s = idle
    read(s, 10.0, paths=["other"])
    assert set(starts(s.tick(12.0))) == {A, B}  # runs in flight from here
    read(s, 12.5, temps=[(T, False)])
    end(s, A, 13.0)
    end(s, B, 13.0)
    read(s, 14.0, paths=["docs/page.html"], temps=[(T, True)])
    runs = starts(s.tick(16.0))
    assert runs[A].batch.paths == {"docs/page.html", T}


def test_a_run_that_began_and_ended_between_two_reads_counts_too(idle):
    s = idle
    read(s, 10.0, paths=["other"])
    starts(s.tick(12.0))  # started after the read at 10
    end(s, A, 12.2)
    end(s, B, 12.2)  # and ended before the next read, which first sees the file
    read(s, 12.5, temps=[(T, False), (T, True)], paths=["docs/page.html"])
    runs = starts(s.tick(14.5))
    assert T in runs[A].batch.paths


def test_a_quiet_file_of_that_shape_is_sent_after_the_hold(idle):
    """A user's file that only looks like a temporary one still arrives."""
    s = idle
    read(s, 10.0, temps=[(T, False)])
    assert starts(s.tick(10.0 + QUIET - 0.1)) == {}
    runs = starts(s.tick(10.0 + QUIET))
    assert runs[A].batch.paths == {T} and runs[A].held == ()
    end(s, A, 80.0)
    end(s, B, 80.0)
    read(s, 90.0, temps=[(T, False)])  # let go once: an ordinary path from now on
    assert starts(s.tick(92.0))[A].batch.paths == {T}
    end(s, A, 93.0)
    end(s, B, 93.0)
    read(s, 95.0, temps=[(T, True)])  # and its deletion goes out as any other
    assert starts(s.tick(97.0))[A].batch.paths == {T}


def test_a_file_written_without_pause_is_let_go_at_the_cap(idle):
    s = idle
    now = 10.0
    while now < 10.0 + CAP - 1:
        assert starts(read(s, now, temps=[(T, False)])) == {}
        now += QUIET / 2
    runs = starts(s.tick(10.0 + CAP))
    assert runs[A].batch.paths == {T}


def test_a_held_file_bounds_the_checkpoint(idle):
    """Stopped while it is held, the next start's scan must still find it."""
    s = idle
    read(s, 10.0, temps=[(T, False)])
    read(s, 20.0)
    assert s.checkpoint(A) == 1000.0 + 1.6  # the read before the one that saw it
    read(s, 21.0, temps=[(T, True)])
    assert s.checkpoint(A) == 1000.0 + 21.0


def test_a_directory_made_where_a_held_file_was_is_not_held(idle):
    s = idle
    read(s, 10.0, temps=[(T, False)])
    read(s, 11.0, paths=[T])  # the watcher reports directories by path, whatever the name
    runs = starts(s.tick(13.0))
    assert runs[A].batch.paths == {T} and runs[A].held == ()


def test_a_restart_holds_what_its_scan_found_as_possibly_sent():
    """A relay restarted mid-transfer: the scan finds the upstream's temporary file.
    It is held, and since the stopped daemon may have sent it, deleted downstream
    once it lands."""
    s = Scheduler(config())
    batch = PathSet()
    for path in ("docs/other.html", T):
        batch.add(path)
    batch.note_since(900.0)
    runs = starts(s.begin(0.0, resumed={A: Resumed(batch, 1000.0, None)}))
    assert runs[A].batch.paths == {"docs/other.html"} and runs[A].held == (T,)
    assert runs[B].batch.full and runs[B].held == (T,)
    end(s, A, 1.0)
    end(s, B, 1.0)
    s.read_started(1001.5)
    s.read_started(1001.6)
    read(s, 5.0, paths=["docs/page.html"], temps=[(T, True)])
    assert starts(s.tick(7.0))[A].batch.paths == {"docs/page.html", T}


def test_unknown_temporary_files_vanishing_are_sent_as_deleted(idle):
    """Never seen made (present at the start, sent by its full sync): a node may have it."""
    s = idle
    read(s, 10.0, temps=[(T, True)])
    assert starts(s.tick(12.0))[A].batch.paths == {T}


def test_too_many_held_files_are_all_exposed():
    hold = TempHold()
    for i in range(RULES_MAX + 5):
        hold.seen(f"d/.f{i}.AbC123", False, float(i), 0.0, False)
    rules = hold.rules()
    assert len(rules) == RULES_MAX and "d/.f0.AbC123" not in rules
    assert hold.seen("d/.f0.AbC123", True, 200.0, 0.0, False)  # may be on a node


def test_a_held_path_too_long_for_a_rule_is_exposed():
    hold = TempHold()
    deep = "/".join(["d" * 200] * 21) + "/.f.AbC123"
    hold.seen(deep, False, 0.0, 0.0, False)
    hold.seen("ok/.f.AbC123", False, 0.0, 0.0, False)
    assert hold.rules() == ("ok/.f.AbC123",)
    assert hold.seen(deep, True, 1.0, 0.0, False)
    assert not hold.seen("ok/.f.AbC123", True, 1.0, 0.0, False)


def test_temporary_files_found_at_the_start_are_held_from_its_full_sync():
    """The start's walk found one (the upstream is writing it): no node's first
    sync copies it, and once it lands its name is deleted downstream (a daemon
    stopped before may have sent it)."""
    s = Scheduler(config())
    runs = starts(s.begin(0.0, temps=[(T, 990.0)]))
    assert runs[A].batch.full and runs[A].held == (T,)
    end(s, A, 1.0)
    end(s, B, 1.0)
    s.read_started(1001.5)
    s.read_started(1001.6)
    assert s.checkpoint(A) == 990.0  # its ctime: the nodes may not have it
    read(s, 5.0, paths=["docs/page.html"], temps=[(T, True)])
    assert starts(s.tick(7.0))[A].batch.paths == {"docs/page.html", T}


def test_a_new_tree_at_wpath_forgets_what_the_old_one_held(idle):
    """wpath now leads to another directory (a deploy's swap): a file held in the
    old tree names nothing there. Still held, its rule would keep the new
    tree's file of that path from the nodes, and its vanishing could be
    dropped while a node holds the old tree's copy."""
    s = idle
    read(s, 5.0, temps=[(T, False)])
    s.root_changed(5.0)
    s.tick(7.0)
    runs = starts(s.root_checked(RootMoved("/srv/www2", "details"), 7.0))
    assert runs[A].batch.full and runs[A].held == ()
    end(s, A, 8.0)
    end(s, B, 8.0)
    s.read_started(1008.5)
    s.read_started(1008.6)
    read(s, 9.0, temps=[(T, True)])  # unknown in this tree: a node may have one
    assert starts(s.tick(11.0))[A].batch.paths == {T}


def test_a_file_the_users_rules_decide_is_not_held():
    """The user's rules come first on rsync's command line and win over ours: a
    "+ " rule matching the file makes the run's exclude of it void, so holding
    it would only pretend (and its vanishing could be dropped while a node
    holds the copy the run sent)."""
    from inosync.excludes import Excludes

    s = Scheduler(config(excludes=Excludes(["+ /docs/.*", "- *.tmp"])))
    starts(s.begin(0.0))
    end(s, A, 1.0)
    end(s, B, 1.0)
    s.read_started(1001.5)
    s.read_started(1001.6)
    read(s, 5.0, temps=[(T, False), ("other/.x.AbC123", False)])
    runs = starts(s.tick(7.0))
    assert runs[A].batch.paths == {T} and runs[A].held == ("other/.x.AbC123",)


def test_what_a_walk_finds_is_held_as_possibly_sent(idle):
    """A rewatch (the watch limit) or a directory moved in: runs before this read
    (whole syncs of an unwatched directory) may have copied it, so its name
    goes down as deleted when it lands, whatever ran since the last read."""
    s = idle
    s.changed([], 5.0, None, [], [(T, 990.0)])
    s.read_started(1005.0)
    runs = starts(read(s, 6.0, paths=["docs"]) + s.tick(8.0))
    assert runs[A].held == (T,)
    end(s, A, 8.5)
    end(s, B, 8.5)
    s.read_started(1009.0)
    read(s, 10.0, paths=["docs/page.html"], temps=[(T, True)])
    assert starts(s.tick(12.0))[A].batch.paths == {"docs/page.html", T}


@pytest.mark.parametrize("gone", ["docs/.x.AbC123", "docs"])
def test_a_file_held_where_a_deletion_is_owed_is_deleted_when_it_vanishes(idle, gone):
    """Review 19a: a directory (or a real file) at that path, or the directory
    above it, was deleted in the same batch. The run leaves the held file out,
    and its exclude keeps the node's old entry there too: when the held file
    vanishes, the node must be told, though no run was seen to copy it."""
    s = idle
    held = "docs/.x.AbC123"
    read(s, 10.0, paths=[gone], temps=[(held, False)])
    runs = starts(s.tick(12.0))
    assert runs[A].held == (held,)  # (listed too, if it is what was deleted: left out)
    end(s, A, 12.5)
    end(s, B, 12.5)
    read(s, 13.0)
    read(s, 14.0, paths=["docs/x"], temps=[(held, True)])  # it lands
    assert held in starts(s.tick(16.0))[A].batch.paths


def test_a_file_held_while_a_failed_node_still_owes_its_path_counts_too(idle):
    s = idle
    held = "docs/.x.AbC123"
    read(s, 10.0, paths=[held])  # (a directory of that name) deleted
    starts(s.tick(12.0))
    end(s, A, 12.5)
    s.run_ended(B, 12, "rsync: connection unexpectedly closed", 12.5, wall=1012.5, took=0.1,
                what="1 path")
    read(s, 13.0)
    read(s, 14.0, temps=[(held, False)])  # B still owes that deletion
    read(s, 15.0, temps=[(held, True)])
    assert held in s.collected.paths


def test_an_unrelated_pending_path_does_not_count(idle):
    s = idle
    read(s, 10.0, paths=["docs/other", "docs2"], temps=[("docs/.x.AbC123", False)])
    read(s, 11.0, temps=[("docs/.x.AbC123", True)])
    assert s.collected.paths == {"docs/other", "docs2"}


def test_a_node_added_by_a_reload_while_a_file_is_held_is_told_when_it_vanishes(idle):
    """Review 19a: the new node's full sync leaves the held file out, and its
    exclude keeps whatever that node held there from before (its content is
    not known): when the held file vanishes, that node must be told."""
    s = idle
    C = "/srv/c3"
    read(s, 10.0, temps=[(T, False)])  # held; nothing ran since: no node has it
    s.signal(__import__("signal").SIGHUP, 11.0)
    runs = starts(s.reloaded(config(rnodes=(A, B, C)), 11.5))
    assert runs[C].batch.full and runs[C].held == (T,)
    s.run_ended(C, OK, "", 12.0, wall=1012.0, took=0.5, what="full sync")
    read(s, 13.0)
    read(s, 14.0, paths=["docs/page.html"], temps=[(T, True)])
    assert T in starts(s.tick(16.0))[C].batch.paths


def test_a_file_held_before_events_were_lost_is_told_when_it_vanishes(idle):
    """The same for a full sync after an overflow that no scan could narrow: the
    lost events may have put anything at that path on the nodes (a walk that
    finds it again counts it as possibly sent, as the start's does)."""
    s = idle
    read(s, 10.0, temps=[(T, False)])
    s.changed([], 11.0, found=[(T, 1010.0)])  # the rewatch's walk finds it again
    read(s, 14.0, paths=["docs/page.html"], temps=[(T, True)])
    assert T in s.collected.paths


def test_a_file_deleted_and_made_again_all_along_is_let_go_at_the_cap():
    """Review 19a: a file of that shape that an application removes and writes
    again every 30 s (never quiet for 60 s, each time a new file) must still
    arrive within the cap of its first appearance, not be held for ever."""
    hold = TempHold()
    path, now, released = "docs/.htaccess.backup", 0.0, []
    while now < CAP + 120.0 and not released:
        hold.seen(path, False, now, 1000.0 + now, False)
        released += hold.due(now + 1.0)
        hold.seen(path, True, now + 29.0, 1029.0 + now, False)
        now += 30.0
    assert released and released[0][0] == path
    assert now <= CAP + 30.0


def test_files_let_go_are_remembered_within_the_limit():
    """A file let go is an ordinary path until an event says it vanished; one whose
    directory moved out of the tree (or was removed with it) never gets that
    event, so the set of them grew without end on a long-running relay. It now
    keeps at most limit paths: one forgotten is held again at its next event (a
    delay, never a loss)."""
    hold = TempHold(limit=10)
    for i in range(50):
        path = f"d{i}/.f.ABC{i:03d}"
        hold.seen(path, False, float(i), 1000.0 + i, exposed=False)
        hold.due(float(i) + QUIET)
    assert len(hold.released) <= 10
    newest = "d49/.f.ABC049"
    assert hold.seen(newest, False, 200.0, 1200.0, exposed=False)  # still let go
