"""Issue 18.4: what a reload (SIGHUP) sends. The pure decision (old Config, new
Config -> which nodes get a full sync and why), and the scheduler carrying it
out: unchanged nodes get no run at all, their pending batches go on."""

from __future__ import annotations

import dataclasses
import logging
import signal

import pytest
from schedtools import starts

from inosync.config import DEFAULT_EMASK, Config
from inosync.excludes import Excludes
from inosync.reloadplan import full_syncs
from inosync.scheduler import Scheduler, SignalRun

A, B, LOCAL = "a.example.com:/www/", "b.example.com:/www/", "/srv/copy"
DAEMON = "rsync://c.example.com/www/"


def config(**changes: object) -> Config:
    base = Config(path="/etc/inosync.conf", wpath="/srv/www", configured_wpath="/srv/www",
                  rnodes=(A, B, LOCAL, DAEMON), edelay=2.0, retry_min=1.0, retry_max=8.0)
    return dataclasses.replace(base, **changes)


# ---- the decision


@pytest.mark.parametrize("change", [
    {"edelay": 30.0}, {"timeout": 5}, {"contimeout": 3}, {"rspeed": 100}, {"retry_min": 2.0},
    {"retry_max": 120.0}, {"max_pending": 10}, {"full_threshold": 5}, {"resync_interval": 60.0},
    {"progress_interval": 0.0}, {"rescan_interval": 5.0}, {"replay_moves": False},
    {"statusfile": "/run/inosync.json"}, {"logfile": "/var/log/x.log"},
    {"rnodes": (B, A, DAEMON, LOCAL)}, {"rnodes": (A, LOCAL)},
    {"configured_wpath": "/srv/www-link"},  # another spelling of the same directory
    {"emask": DEFAULT_EMASK + ("IN_ACCESS",)},
    {"emask": ("IN_CLOSE_WRITE", "IN_CREATE")},  # fewer from now on: no sync cures that
], ids=lambda c: ",".join(c))
def test_what_does_not_change_what_a_node_holds_syncs_nothing(change):
    assert full_syncs(config(), config(**change)) == {}


def test_a_new_node_and_only_it():
    assert full_syncs(config(rnodes=(A,)), config(rnodes=(A, B))) == {B: "new node"}


@pytest.mark.parametrize("change,why", [
    ({"excludes": Excludes(("*.tmp",))}, "excludes"),
    ({"rsync_args": ("--hard-links",)}, "rsync_args"),
    ({"delete": "running"}, "delete"),
    ({"rsync": "/usr/local/bin/rsync"}, "rsync changed"),
], ids=["excludes", "rsync_args", "delete", "rsync"])
def test_a_setting_that_decides_what_nodes_hold_syncs_every_node(change, why):
    plan = full_syncs(config(), config(**change))
    assert list(plan) == [A, B, LOCAL, DAEMON]
    assert all(why in reason and "changed" in reason for reason in plan.values()), plan


def test_another_wpath_directory_syncs_every_node():
    moved = {A: "wpath is another directory", B: "wpath is another directory",
             LOCAL: "wpath is another directory", DAEMON: "wpath is another directory"}
    assert full_syncs(config(), config(wpath="/srv/www2")) == moved
    assert full_syncs(config(), config(), same_tree=False) == moved  # same path, new inode


def test_the_ssh_command_is_part_of_an_ssh_nodes_identity():
    plan = full_syncs(config(), config(ssh=("ssh", "-p", "2222")))
    assert list(plan) == [A, B]  # local and rsync-daemon nodes do not use it
    assert "ssh changed" in plan[A]


def test_emask_that_left_out_needed_events_before_syncs_when_it_changes():
    old = config(emask=("IN_CLOSE_WRITE", "IN_CREATE", "IN_DELETE", "IN_MOVED_FROM",
                        "IN_MOVED_TO"))
    plan = full_syncs(old, config())
    assert list(plan) == [A, B, LOCAL, DAEMON]
    assert "the old one left out IN_ATTRIB, IN_MODIFY" in plan[A]
    assert full_syncs(old, old) == {}


def test_delete_startup_every_reload_makes_the_deleting_full_sync():
    old = config(delete="startup")
    plan = full_syncs(old, old)
    assert list(plan) == [A, B, LOCAL, DAEMON]
    assert "delete = 'startup'" in plan[A]


def test_several_reasons_are_all_said():
    plan = full_syncs(config(), config(rsync_args=("-H",), ssh=("ssh", "-4")))
    assert "rsync_args changed" in plan[A] and "ssh changed" in plan[A]
    assert "ssh" not in plan[LOCAL]


# ---- the scheduler carries it out

N1, N2 = A, B


def two(**changes: object) -> Config:
    return config(**{"rnodes": (N1, N2), **changes})


def ended(s: Scheduler, dest: str, rc: int, now: float) -> list:
    return s.run_ended(dest, rc, "", now, wall=1000.0 + now, took=0.5, what="x")


@pytest.fixture
def synced() -> Scheduler:
    s = Scheduler(two())
    assert set(starts(s.begin(0.0))) == {N1, N2}
    ended(s, N1, 0, 1.0)
    ended(s, N2, 0, 1.0)
    return s


def reload(s: Scheduler, new: Config, now: float, **kw: object) -> list:
    assert s.signal(signal.SIGHUP, now) != []
    return s.reloaded(new, now, **kw)


def test_a_reload_that_changes_only_edelay_runs_nothing(synced, caplog):
    synced.read_started(1500.0)
    with caplog.at_level(logging.INFO, "inosync"):
        assert starts(reload(synced, two(edelay=7.0), 5.0)) == {}
    assert not synced.nodes[N1].pending and not synced.nodes[N2].pending
    assert f"reload: unchanged nodes: no sync ({N1}, {N2})" in caplog.text
    assert "reloaded; no sync" in caplog.text
    assert synced.checkpoint(N1) == synced.checkpoint(N2) == 1500.0  # nothing to wait for
    synced.changed(["p"], 6.0)
    assert synced.next_deadline() == 13.0  # the new edelay


def test_pending_batches_and_runs_in_flight_go_on(synced):
    s = synced
    s.changed(["p"], 10.0)
    assert set(starts(s.tick(12.0))) == {N1, N2}
    s.changed(["q"], 12.5)
    assert starts(reload(s, two(timeout=5), 13.0)) == {}  # both still running
    assert starts(ended(s, N1, 0, 14.0)) == {}
    runs = starts(s.tick(14.5))  # q's edelay
    assert runs[N1].batch.paths == {"q"} and not runs[N1].batch.full


def test_a_failing_unchanged_node_keeps_its_batch_and_its_backoff(synced):
    s = synced
    s.changed(["p"], 10.0)
    s.tick(12.0)
    ended(s, N2, 0, 12.5)
    ended(s, N1, 255, 13.0)  # retry at 14.0
    assert starts(reload(s, two(edelay=1.0), 13.5)) == {}
    runs = starts(s.tick(14.0))
    assert runs[N1].batch.paths == {"p"} and not runs[N1].batch.full


def test_a_new_node_gets_the_only_full_sync(synced, caplog):
    with caplog.at_level(logging.INFO, "inosync"):
        runs = starts(reload(synced, config(rnodes=(N1, N2, LOCAL)), 5.0))
    assert set(runs) == {LOCAL} and runs[LOCAL].batch.full and runs[LOCAL].batch.start
    assert f"reload: full sync to {LOCAL}: new node" in caplog.text
    assert "reloaded; full sync to 1 node, no sync to 2" in caplog.text


def test_changed_excludes_full_sync_every_node(synced, caplog):
    with caplog.at_level(logging.INFO, "inosync"):
        runs = starts(reload(synced, two(excludes=Excludes(("*.tmp",))), 5.0))
    assert set(runs) == {N1, N2} and all(r.batch.full for r in runs.values())
    assert f"reload: full sync to {N1}: excludes" in caplog.text
    assert "reloaded; full sync to 2 nodes" in caplog.text


def test_a_node_in_flight_gets_its_full_sync_after_its_run(synced):
    s = synced
    s.changed(["p"], 10.0)
    s.tick(12.0)
    assert starts(reload(s, two(ssh=("ssh", "-4")), 13.0)) == {}
    assert s.nodes[N1].pending.full
    runs = starts(ended(s, N1, 0, 14.0))
    assert runs[N1].batch.full  # the run under the old settings did not count for it
    ended(s, N1, 0, 15.0)
    s.read_started(3000.0)
    assert s.checkpoint(N1) == 3000.0


def test_a_failing_node_whose_settings_changed_is_tried_again_at_once(synced):
    s = synced
    s.changed(["p"], 10.0)
    s.tick(12.0)
    ended(s, N2, 0, 12.5)
    for t in (13.0, 14.0, 16.0):  # backing off: next retry at 20.0
        ended(s, N1, 255, t)
        starts(s.tick(t + 1.0 if t < 16.0 else t))
    assert s.nodes[N1].retry_at == 20.0
    runs = starts(reload(s, two(ssh=("ssh", "-p", "2222")), 16.5))
    assert runs[N1].batch.full and runs[N2].batch.full  # both ssh nodes


def test_removed_node_has_its_run_stopped_and_its_work_dropped(synced):
    s = synced
    s.changed(["p"], 10.0)
    s.tick(12.0)
    actions = reload(s, two(rnodes=(N1,)), 13.0)
    assert SignalRun(N2, signal.SIGTERM) in actions and set(s.nodes) == {N1}
    assert not s.nodes[N1].pending  # N1 unchanged: still only its run in flight


def test_the_checkpoint_of_a_node_given_a_full_sync_waits_for_it(synced):
    s = synced
    s.read_started(1500.0)
    reload(s, two(rsync_args=("-H",)), 5.0)
    s.read_started(1600.0)
    assert s.checkpoint(N1) is None


def test_changes_collected_before_the_reload_still_go_to_unchanged_nodes(synced):
    s = synced
    s.changed(["p"], 10.0)
    runs = starts(reload(s, two(rnodes=(N1, N2, LOCAL)), 11.0))
    assert set(runs) == {LOCAL}
    runs = starts(s.tick(12.0))
    assert runs[N1].batch.paths == {"p"} and runs[N2].batch.paths == {"p"}
