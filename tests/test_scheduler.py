"""The scheduler driven through its decisions with plain values: no processes,
no sleeps, no clock. Each test is a short story with explicit times."""

from __future__ import annotations

import dataclasses
import logging
import signal
from pathlib import Path

import pytest
from schedtools import A, B, config, starts

from inosync.replay import Move
from inosync.scheduler import (
    GRACE,
    KILL_AFTER,
    CheckRoot,
    Exit,
    LogProgress,
    LogStatus,
    Reload,
    Rescan,
    Rewatch,
    RootLost,
    RootMoved,
    RootSame,
    Scheduler,
    SignalRun,
    WriteStatus,
)

OK = 0
VANISHED_23 = ('file has vanished: "/w/x"\nrsync error: some files/attrs were not transferred '
               "(see previous errors) (code 23) at main.c(1394) [sender=3.5.0]\n")


def ended(s: Scheduler, dest: str, rc: int, now: float, stderr: str = "") -> list:
    return s.run_ended(dest, rc, stderr, now, wall=1000.0 + now, took=0.5, what="1 path")


@pytest.fixture
def synced() -> Scheduler:
    """Both nodes have had their initial full sync."""
    s = Scheduler(config())
    first = starts(s.begin(0.0))
    assert set(first) == {A, B} and all(r.batch.full for r in first.values())
    ended(s, A, OK, 1.0)
    ended(s, B, OK, 1.0)
    return s


# ---------------------------------------------------------------- debounce


def test_changes_wait_for_edelay_then_go_to_every_node_in_one_batch(synced):
    s = synced
    assert s.changed(["docs/a"], 10.0) == [WriteStatus()]  # news: something is waiting
    assert s.changed(["docs/b", "docs/a"], 11.0) == []
    assert s.next_deadline() == 12.0  # edelay from the first change, not the last
    assert s.tick(11.9) == []
    runs = starts(s.tick(12.0))
    assert set(runs) == {A, B}
    assert runs[A].batch.paths == {"docs/a", "docs/b"} and not runs[A].batch.full


def test_idle_scheduler_sleeps_until_the_daily_resync(synced):
    assert synced.next_deadline() == 1.0 + 86_400  # the default resync_interval
    s = Scheduler(config(resync_interval=0.0))
    starts(s.begin(0.0))
    ended(s, A, OK, 1.0)
    ended(s, B, OK, 1.0)
    assert s.next_deadline() is None  # poll() sleeps until something happens


def test_changes_while_a_node_runs_wait_for_its_next_run(synced):
    s = synced
    s.changed(["x"], 10.0)
    assert set(starts(s.tick(12.0))) == {A, B}
    s.changed(["y"], 12.5)
    assert starts(s.tick(14.5)) == {}  # both still running
    runs = starts(ended(s, A, OK, 15.0))
    assert set(runs) == {A} and runs[A].batch.paths == {"y"}


def test_a_change_of_wpath_itself_sends_wpath_itself(synced):
    """wpath's own mode or times (the watcher reports ""): listed as "." (wpath,
    not recursed: batch.plan_run), not a whole-tree sync. A relay's wpath gets
    its times set by every upstream batch that names a top-level entry: a
    whole-tree run each time would walk the whole tree and replay no rename."""
    s = synced
    s.changed(["", "docs/a"], 10.0)
    runs = starts(s.tick(12.0)).values()
    assert runs and all(r.batch.paths == {".", "docs/a"} and not r.batch.full for r in runs)


# ---------------------------------------------------------------- failures, retry, backoff


def test_failed_node_keeps_its_batch_and_backs_off(synced, caplog):
    s = synced
    s.changed(["p"], 10.0)
    s.tick(12.0)
    ended(s, B, OK, 12.5)
    with caplog.at_level(logging.DEBUG, "inosync"):
        ended(s, A, 255, 13.0, "ssh: connect to host a: Connection refused")
    assert "ERROR" in caplog.text and "exit 255" in caplog.text
    assert s.next_deadline() == 14.0  # retry_min
    s.changed(["q"], 13.5)  # arrives while A waits: merged into its retry
    runs = starts(s.tick(14.0))
    assert set(runs) == {A} and runs[A].batch.paths == {"p"}
    caplog.clear()
    with caplog.at_level(logging.DEBUG, "inosync"):
        ended(s, A, 255, 14.5)
    assert "ERROR" not in caplog.text  # once per change of health, not once per retry
    assert s.next_deadline() == 15.5  # edelay of "q" comes first
    runs = starts(s.tick(15.5))
    assert set(runs) == {B}  # A waits for its backoff: 2 s after the second failure
    assert starts(s.tick(16.4)) == {}
    runs = starts(s.tick(16.5))
    assert runs[A].batch.paths == {"p", "q"}
    with caplog.at_level(logging.INFO, "inosync"):
        ended(s, A, OK, 17.0)
    assert "recovered after 4 s" in caplog.text  # failing from 13.0 to 17.0


def test_backoff_doubles_up_to_retry_max(synced):
    s = synced
    s.changed(["p"], 0.0)
    s.tick(2.0)
    ended(s, B, OK, 2.0)
    now, waits = 2.0, []
    for _ in range(6):
        ended(s, A, 10, now)
        due = s.next_deadline()
        assert due is not None
        waits.append(due - now)
        now = due
        assert set(starts(s.tick(now))) == {A}
    assert waits == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_broken_rsync_is_retried_slowly(synced):
    s = synced
    s.changed(["p"], 0.0)
    s.tick(2.0)
    ended(s, A, 3, 3.0)  # errors selecting input/output files: retry_max at once
    assert s.nodes[A].retry_at == 3.0 + 8.0


def test_source_changing_under_rsync_is_run_again_without_failure(synced, caplog):
    s = synced
    s.changed(["p"], 0.0)
    s.tick(2.0)
    with caplog.at_level(logging.DEBUG, "inosync"):
        ended(s, A, 23, 3.0, VANISHED_23)
    assert "ERROR" not in caplog.text and "source changed during the run" in caplog.text
    assert s.nodes[A].failures == 0
    assert starts(s.tick(4.0))[A].batch.paths == {"p"}


def test_run_that_could_not_start_is_retried(synced):
    s = synced
    s.changed(["p"], 0.0)
    s.tick(2.0)
    from inosync.rsync import Outcome

    assert s.run_not_started(A, Outcome.RETRY, "disk full", 2.0, 0.0) == [WriteStatus()]
    assert s.nodes[A].last_error == "disk full"
    assert starts(s.tick(3.0))[A].batch.paths == {"p"}


# ---------------------------------------------------------------- stopping


def test_stop_waits_for_runs_then_terms_then_kills(synced):
    s = synced
    s.changed(["p"], 0.0)
    s.tick(2.0)
    assert s.signal(signal.SIGTERM, 3.0) == []  # runs get GRACE seconds
    assert s.next_deadline() == 3.0 + GRACE
    assert s.tick(3.0 + GRACE) == [SignalRun(A, signal.SIGTERM), SignalRun(B, signal.SIGTERM)]
    assert s.tick(3.0 + GRACE + 1) == []
    assert s.tick(3.0 + GRACE + KILL_AFTER) == [SignalRun(A, signal.SIGKILL),
                                                 SignalRun(B, signal.SIGKILL)]
    assert ended(s, A, -9, 20.0) == [WriteStatus()]
    assert ended(s, B, -9, 20.0) == [WriteStatus(), Exit(0)]
    assert s.nodes[A].pending.paths == {"p"}  # kept: "pending at shutdown"


def test_stop_with_nothing_running_exits_at_once(synced, caplog):
    s = synced
    s.changed(["p"], 0.0)
    with caplog.at_level(logging.INFO, "inosync"):
        assert s.signal(signal.SIGINT, 1.0) == [Exit(0)]
    assert "stopping (SIGINT)" in caplog.text and "1 path pending at shutdown" in caplog.text


def test_run_ending_within_grace_is_a_clean_stop(synced):
    s = synced
    s.changed(["p"], 0.0)
    s.tick(2.0)
    s.signal(signal.SIGTERM, 3.0)
    assert ended(s, A, OK, 4.0) == [WriteStatus()]
    assert ended(s, B, OK, 4.5) == [WriteStatus(), Exit(0)]


def test_second_term_does_not_wait_for_the_grace(synced):
    s = synced
    s.changed(["p"], 0.0)
    s.tick(2.0)
    s.signal(signal.SIGTERM, 3.0)
    assert s.signal(signal.SIGTERM, 4.0) == [SignalRun(A, signal.SIGTERM),
                                             SignalRun(B, signal.SIGTERM)]
    assert s.next_deadline() == 4.0 + KILL_AFTER


def test_nothing_starts_while_stopping(synced):
    s = synced
    s.changed(["p"], 0.0)
    s.tick(2.0)
    s.signal(signal.SIGTERM, 3.0)
    s.changed(["q"], 3.5)
    assert starts(s.tick(6.0)) == {}
    assert s.signal(signal.SIGHUP, 6.0) == []  # no reload while stopping


# ---------------------------------------------------------------- reload, status


def test_hup_while_runs_are_in_flight(synced):
    s = synced
    s.changed(["p"], 0.0)
    s.tick(2.0)
    assert s.signal(signal.SIGHUP, 3.0) == [Reload()]
    actions = s.reloaded(config(rnodes=(A, B), edelay=5.0, progress_interval=0.0,
                                rsync_args=("--hard-links",)), 3.5)
    assert actions == []  # both still running: full syncs wait for them
    assert s.nodes[A].pending.full
    runs = starts(ended(s, A, OK, 4.0))
    assert runs[A].batch.full
    s.changed(["q"], 10.0)
    assert s.next_deadline() == 15.0  # the new edelay


def test_no_run_starts_while_a_reload_is_read(synced):
    s = synced
    s.changed(["p"], 0.0)
    assert s.signal(signal.SIGHUP, 1.0) == [Reload()]
    assert s.tick(2.0) == []  # the batch is due, but B may be gone after the reload
    runs = starts(s.reloaded(config(rnodes=(A,)), 2.5))
    assert set(runs) == {A} and runs[A].batch.paths == {"p"}  # A unchanged: no full sync
    s.signal(signal.SIGHUP, 3.0)
    assert starts(s.reload_failed("bad", 3.5)) == {}  # A is running


def test_node_removed_by_reload_has_its_run_stopped(synced):
    s = synced
    s.changed(["p"], 0.0)
    s.tick(2.0)
    actions = s.reloaded(config(rnodes=(A,)), 3.0)
    assert SignalRun(B, signal.SIGTERM) in actions
    assert set(s.nodes) == {A}
    assert ended(s, B, -15, 3.5) == [WriteStatus()]  # no failure logged for it
    s.signal(signal.SIGTERM, 4.0)
    assert Exit(0) in ended(s, A, OK, 4.5)


def test_failed_reload_keeps_everything(synced, caplog):
    s = synced
    with caplog.at_level(logging.ERROR, "inosync"):
        assert s.reload_failed("x.conf:3: edelay must be from 0 to 86400", 5.0) == []
    assert "keeping the old configuration" in caplog.text
    assert set(s.nodes) == {A, B}


def test_usr1_logs_and_writes_status(synced):
    assert synced.signal(signal.SIGUSR1, 5.0) == [WriteStatus(), LogStatus()]
    rows = synced.status(5.0, 2000.0)
    assert [r["node"] for r in rows] == [A, B] and rows[0]["state"] == "idle"
    assert rows[0]["pending"] == "0 paths" and rows[0]["last_ok"] == 1001.0


# ---------------------------------------------------------------- overflow and wpath's identity


def test_overflow_checks_wpath_then_rescans_and_sends_everything(synced):
    s = synced
    assert s.overflowed(5.0) == [CheckRoot()]
    assert s.tick(5.0) == []  # nothing runs until the answer
    actions = s.root_checked(RootSame(), 5.0)
    assert actions[0] == Rescan()
    assert all(r.batch.full for r in starts(actions).values())


def test_root_changed_waits_edelay_then_follows(synced, caplog):
    s = synced
    assert s.root_changed(5.0) == []
    s.changed(["p"], 5.0)
    assert s.next_deadline() == 7.0
    assert s.tick(6.0) == []
    assert s.tick(7.0) == [CheckRoot()]  # the batch waits for the answer
    with caplog.at_level(logging.WARNING, "inosync"):
        actions = s.root_checked(RootMoved("/srv/releases/2", "details"), 7.0)
    assert "following it" in caplog.text
    assert actions[0] == Rescan("/srv/releases/2")
    assert s.config.wpath == "/srv/releases/2"
    assert all(r.batch.full for r in starts(actions).values())


def test_root_lost_stops_without_syncing(synced, caplog):
    s = synced
    s.changed(["p"], 5.0)
    s.root_changed(5.0)
    s.tick(7.0)
    with caplog.at_level(logging.ERROR, "inosync"):
        actions = s.root_checked(RootLost("wpath /srv/www disappeared"), 7.0)
    assert actions == [Exit(1)] and starts(actions) == {}
    assert "stopping without syncing" in caplog.text


def test_root_lost_with_runs_in_flight_stops_them_at_once(synced):
    s = synced
    s.changed(["p"], 0.0)
    s.tick(2.0)
    s.root_changed(3.0)
    assert s.tick(5.0) == [CheckRoot()]
    actions = s.root_checked(RootLost("gone"), 5.0)
    assert actions == [SignalRun(A, signal.SIGTERM), SignalRun(B, signal.SIGTERM)]
    ended(s, A, -15, 5.1)
    assert ended(s, B, -15, 5.2)[-1] == Exit(1)


def test_overflow_during_a_swap_gets_the_delay_too(synced):
    s = synced
    assert s.overflowed(5.0) == [CheckRoot()]
    # The quick check lands between "mv www www.old" and "mv www.new www".
    assert s.root_checked(RootLost("wpath /srv/www disappeared"), 5.0) == []
    assert s.next_deadline() == 7.0
    assert s.tick(7.0) == [CheckRoot()]
    actions = s.root_checked(RootSame(), 7.0)
    assert actions[0] == Rescan()  # the lost events still mean a rescan


def test_run_refused_because_wpath_changed_asks_after_the_delay(synced):
    s = synced
    s.changed(["p"], 0.0)
    s.tick(2.0)
    assert s.root_not_same(A, 2.0) == []
    assert s.nodes[A].pending.paths == {"p"}
    assert s.tick(3.0) == []  # B's end below starts nothing either
    assert starts(ended(s, B, OK, 3.0)) == {}
    assert s.tick(4.0) == [CheckRoot()]


# ---------------------------------------------------------------- the watch limit


def test_watch_limit_reached_then_recovered(synced, caplog):
    s = synced
    with caplog.at_level(logging.ERROR, "inosync"):
        assert s.watch_limit_hit({"big/d1", "big/d2"}, 5.0) == []
    assert "watch limit reached" in caplog.text
    actions = s.tick(5.0)
    assert actions[0] == Rewatch(("big/d1", "big/d2"))
    runs = starts(actions)  # synced whole at once: no events come from there
    assert runs[A].batch.paths == {"big/d1", "big/d2"}
    # Still no watch for one of them: it comes back, and is retried every rescan_interval.
    caplog.clear()
    with caplog.at_level(logging.INFO, "inosync"):
        s.watch_limit_hit({"big/d2"}, 5.0)
        assert s.next_deadline() == 5.0 + s.config.rescan_interval
        assert s.tick(5.0 + s.config.rescan_interval)[0] == Rewatch(("big/d2",))
        s.watch_limit_hit({"big/d2"}, 65.0)  # and fails again
    assert "watch limit" not in caplog.text  # logged once, not every rescan_interval
    # The limit was raised: the rewatch succeeds, nothing comes back.
    ended(s, A, OK, 66.0)
    ended(s, B, OK, 66.0)
    with caplog.at_level(logging.INFO, "inosync"):
        assert s.tick(125.0)[0] == Rewatch(("big/d2",))
        assert s.watch_limit_hit(set(), 125.0) == []
    assert s.unwatched == set() and "every directory is watched again" in caplog.text


# ---------------------------------------------------------------- -p


def test_pretended_runs_log_nothing_and_finish(synced, caplog):
    s = synced
    s.changed(["p"], 0.0)
    s.tick(2.0)
    with caplog.at_level(logging.INFO, "inosync"):
        s.run_ended(A, 0, "", 2.0, 0.0, 0.0, "1 path", pretended=True)
    assert "synced" not in caplog.text and s.nodes[A].pending.paths == set()


def test_runs_in_milliseconds(tmp_path: Path):
    """The whole story above costs nothing: 1,000 batches, no sleeps."""
    s = Scheduler(config())
    s.begin(0.0)
    ended(s, A, OK, 0.1)
    ended(s, B, OK, 0.1)
    now = 1.0
    for i in range(1000):
        s.changed([f"f{i}"], now)
        now += 2.0
        assert set(starts(s.tick(now))) == {A, B}
        ended(s, A, OK, now)
        ended(s, B, OK, now)
    assert s.nodes[A].runs == 1001


# ---------------------------------------------------------------- renames to replay


def test_renames_travel_with_the_batch_in_order(synced):
    s = synced
    s.changed(["a", "b"], 10.0, [Move("a", "b")])
    s.changed(["b", "c"], 11.0, [Move("b", "c")])
    runs = starts(s.tick(12.0))
    assert runs[A].batch.moves == [Move("a", "b"), Move("b", "c")]
    assert runs[A].batch.paths == {"a", "b", "c"}  # rsync still sees every path


def test_renames_of_a_failed_run_are_never_replayed_again(synced):
    """Issue 15.1: the retry carries paths only, compared by content; the renames
    collected meanwhile go too (they assumed the failed batch was through)."""
    s = synced
    s.changed(["a", "b"], 0.0, [Move("a", "b")])
    s.tick(2.0)
    ended(s, B, OK, 2.5)
    s.changed(["b", "c"], 2.5, [Move("b", "c")])
    s.tick(3.6)  # flushed to A's pending while A runs
    ended(s, A, 255, 3.7)
    runs = starts(s.tick(5.5))
    assert runs[A].batch.moves == [] and runs[A].batch.paths == {"a", "b", "c"}
    assert runs[A].batch.checksum


def test_lost_events_and_reloads_break_the_chain_of_renames(synced):
    s = synced
    s.changed(["a", "b"], 0.0, [Move("a", "b")])
    s.overflowed(0.1)
    assert s.collected.moves == [] and s.collected.moves_dropped
    s.changed(["c", "d"], 0.2, [Move("c", "d")])
    assert s.collected.moves == []


def test_replay_can_be_turned_off():
    s = Scheduler(config(replay_moves=False))
    s.begin(0.0)
    ended(s, A, OK, 0.5)
    ended(s, B, OK, 0.5)
    s.changed(["a", "b"], 1.0, [("a", "b")])
    assert starts(s.tick(3.0))[A].batch.moves == []


# ---------------------------------------------------------------- periodic resync


def test_periodic_full_sync_per_node_after_resync_interval():
    s = Scheduler(config(resync_interval=100.0))
    starts(s.begin(0.0))
    ended(s, A, OK, 1.0)
    ended(s, B, OK, 5.0)
    assert s.next_deadline() == 101.0  # A's full sync ended at 1.0, B's at 5.0
    assert s.tick(100.9) == []
    runs = starts(s.tick(101.0))
    assert set(runs) == {A} and runs[A].batch.full
    ended(s, A, OK, 102.0)
    assert s.next_deadline() == 105.0
    assert starts(s.tick(105.0))[B].batch.full
    ended(s, B, OK, 106.0)
    assert s.next_deadline() == 202.0  # counted from the end of the last full sync


def test_a_full_sync_for_another_reason_postpones_the_resync():
    s = Scheduler(config(resync_interval=100.0))
    starts(s.begin(0.0))
    ended(s, A, OK, 1.0)
    ended(s, B, OK, 1.0)
    s._handle_hup("SIGHUP", 50.0)
    s.reloaded(dataclasses.replace(s.config, rsync_args=("-H",)), 50.0)  # a full sync
    ended(s, A, OK, 52.0)
    ended(s, B, OK, 52.0)
    assert s.next_deadline() == 152.0


def test_no_resync_while_a_node_fails_or_when_turned_off():
    s = Scheduler(config(resync_interval=100.0))
    starts(s.begin(0.0))
    ended(s, A, OK, 1.0)
    ended(s, B, 12, 1.0)  # B never had a good full sync: its full sync is retried instead
    s.changed(["x"], 90.0)
    starts(s.tick(92.0))
    ended(s, A, 12, 93.0)  # A fails with a batch pending: retries, not a resync
    for t in (101.0, 150.0):
        runs = starts(s.tick(t))
        assert all(not r.batch.full for d, r in runs.items() if d == A)
        for d in runs:
            ended(s, d, 12, t + 0.5)
    off = Scheduler(config(resync_interval=0.0))
    starts(off.begin(0.0))
    ended(off, A, OK, 1.0)
    ended(off, B, OK, 1.0)
    assert off.next_deadline() is None


# ---------------------------------------------------------------- progress


def progress_reports(actions: list) -> list[LogProgress]:
    return [a for a in actions if isinstance(a, LogProgress)]


def test_progress_every_interval_while_a_full_sync_runs():
    s = Scheduler(config(progress_interval=30.0))
    starts(s.begin(0.0))
    # Every 5 s (to cut rsync's progress output short), to the log every 30 s;
    # the loop wakes up at each deadline.
    reports = {}
    while (t := s.next_deadline()) is not None and t <= 60.0:
        reports[t] = progress_reports(s.tick(t))
    logged = [LogProgress(True)]
    assert reports == {t: logged if t in (30.0, 60.0) else [LogProgress(False)]
                       for t in (5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0, 40.0, 45.0, 50.0,
                                 55.0, 60.0)}
    ended(s, A, OK, 70.0)
    assert progress_reports(s.tick(90.0)) == [LogProgress(to_log=True)]  # B still runs
    ended(s, B, OK, 91.0)
    assert s.progress_at is None and progress_reports(s.tick(120.0)) == []
    s.changed(["p"], 100.0)
    s.tick(102.0)  # a batch of paths is no long work: no progress for it
    assert s.progress_at is None


def test_progress_on_a_terminal_every_second_and_in_the_log_every_interval():
    s = Scheduler(config(progress_interval=3.0), live=True)
    starts(s.begin(0.0))
    got = [progress_reports(s.tick(t)) for t in (1.0, 2.0, 3.0, 4.0)]
    assert got == [[LogProgress(False)], [LogProgress(False)], [LogProgress(True)],
                   [LogProgress(False)]]


def test_no_progress_while_stopping():
    s = Scheduler(config(progress_interval=2.0))
    starts(s.begin(0.0))
    s.signal(signal.SIGTERM, 1.0)
    assert progress_reports(s.tick(3.0)) == [] and s.progress_at is None


def test_recovery_says_how_long_the_node_failed(synced, caplog):
    s = synced
    s.changed(["p"], 10.0)
    starts(s.tick(12.0))
    ended(s, A, 255, 12.5)
    for t in (13.5, 15.5, 19.5):  # retries that fail too
        starts(s.tick(t))
        ended(s, A, 255, t + 0.5)
    starts(s.tick(27.5))
    with caplog.at_level(logging.INFO, "inosync"):
        ended(s, A, OK, 37.5)
    assert f"{A}: recovered after 25 s" in caplog.text  # failing from 12.5 to 37.5


def test_no_progress_when_turned_off():
    s = Scheduler(config(progress_interval=0.0, resync_interval=0.0))
    starts(s.begin(0.0))
    assert s.next_deadline() is None and progress_reports(s.tick(100.0)) == []


def test_nodes_with_an_unconfirmed_replay_compare_contents_at_start_and_reload():
    s = Scheduler(config())
    runs = starts(s.begin(0.0, compare=[A]))
    assert runs[A].batch.full and runs[A].batch.checksum and not runs[B].batch.checksum


def test_changes_collected_during_edelay_show_as_pending_with_when_they_go():
    """Issue 17.2: with a long edelay, USR1, the statusfile and STATUS= said
    "pending 0 paths" for a change that stop then reported pending."""
    s = Scheduler(config(edelay=30.0))
    s.begin(0.0)
    ended(s, A, OK, 0.5)
    ended(s, B, 255, 0.5)  # B fails and keeps its full sync pending
    s.changed(["docs/a"], 2.0)
    rows = {r["node"]: r for r in s.status(4.0, 1004.0)}
    assert rows[A]["pending"] == "1 path waiting, sync in 28 s"
    assert (rows[A]["pending_paths"], rows[A]["waiting_paths"], rows[A]["sync_in"]) == \
        (1, 1, 28.0)
    assert rows[B]["pending"].startswith("full sync")
    s.tick(32.0)  # flushed: no longer waiting
    rows = {r["node"]: r for r in s.status(32.0, 1032.0)}
    assert rows[A]["sync_in"] is None and rows[A]["waiting_paths"] == 0
