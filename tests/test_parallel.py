"""Issue 19.3: max_parallel (the most rsync runs at once) and the spreading of
many first ssh connections, driven through the pure scheduler: plain values,
explicit times, no processes. The real daemon's side is test_parallel_e2e.py."""

from __future__ import annotations

import dataclasses
import signal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inosync import scheduler, slots
from inosync.batch import PathSet
from inosync.config import Config, ConfigError, load
from inosync.rsync import Outcome
from inosync.scheduler import Exit, Rescan, Resumed, RootSame, Scheduler, SignalRun, StartRun
from inosync.statusline import summary

OK, FAILED = 0, 12


def local_nodes(n: int) -> tuple[str, ...]:
    return tuple(f"/srv/node{i}/" for i in range(n))


def config(nodes: tuple[str, ...], **changes: object) -> Config:
    base = Config(path="/etc/inosync.conf", wpath="/srv/www", configured_wpath="/srv/www",
                  rnodes=nodes, edelay=2.0, retry_min=1.0, retry_max=8.0, max_parallel=2)
    return dataclasses.replace(base, **changes)


def starts(actions: list) -> list[str]:
    return [a.dest for a in actions if isinstance(a, StartRun)]


def ended(s: Scheduler, dest: str, rc: int, now: float) -> list:
    return s.run_ended(dest, rc, "", now, wall=1000.0 + now, took=0.5, what="1 path")


def running(s: Scheduler) -> list[str]:
    return [r.dest for r in s._running()]


# ---------------------------------------------------------------- the setting


def test_default_is_sized_for_the_machine():
    assert [slots.default_max_parallel(n) for n in (1, 2, 4, 16, 64)] == [8, 16, 32, 128, 128]
    assert Config(path="", wpath="/w", rnodes=("/n",)).max_parallel == \
        slots.default_max_parallel(slots.cpus())


@pytest.mark.parametrize("value, why", [
    ("0", "must be from 1 to 10000, got 0"), ("-1", "must be from 1 to 10000"),
    ("2.5", "must be an integer"), ("'4'", "got '4'"), ("True", "got True"),
])
def test_bad_max_parallel_is_refused_with_its_line(tmp_path: Path, value, why):
    path = tmp_path / "inosync.conf"
    path.write_text(f"wpath = {str(tmp_path)!r}\nrnodes = ['h:/w/']\n\nmax_parallel = {value}\n")
    with pytest.raises(ConfigError) as info:
        load(str(path))
    assert str(info.value).startswith(f"{path}:4: max_parallel "), info.value
    assert why in str(info.value)


# ---------------------------------------------------------------- slots


def synced(n: int, **changes: object) -> Scheduler:
    """n local nodes, each through its initial full sync (in slots of max_parallel)."""
    s = Scheduler(config(local_nodes(n), **changes))
    actions = s.begin(0.0)
    t = 0.0
    while actions or running(s):
        t += 1.0
        actions = []
        for dest in running(s):
            actions += ended(s, dest, OK, t)
    assert all(node.last_ok is not None for node in s.nodes.values())
    return s


def by_last_success(s: Scheduler) -> list[str]:
    """The nodes in the order they take turns (after synced(): each succeeded at
    another time, the oldest success first)."""
    return sorted(s.nodes, key=lambda d: s.nodes[d].last_ok or 0.0)


def test_no_more_runs_than_slots_and_each_end_starts_the_next():
    s = Scheduler(config(local_nodes(10), max_parallel=3))
    first = starts(s.begin(0.0))
    assert len(first) == 3 and len(running(s)) == 3
    rows = {r["node"]: r for r in s.status(0.0, 1000.0)}
    queued = [d for d, r in rows.items() if r["state"] == "queued"]
    assert len(queued) == 7
    assert all(str(rows[d]["slot"]).startswith("waiting for a run slot") for d in queued)
    assert "3 of 3 running" in str(rows[queued[0]]["slot"])
    assert "(7 waiting for a run slot)" in summary(list(rows.values()))
    nxt = starts(ended(s, first[0], OK, 1.0))
    assert len(nxt) == 1 and len(running(s)) == 3
    assert s.next_deadline() is None or s.next_deadline() > 1.0  # no polling for slots


def test_status_of_many_queued_nodes_is_not_quadratic():
    """status() runs after each loop turn with actions under systemd (STATUS=) and at
    each run's end (statusfile): each queued node's "N ahead" counted by comparing
    its turn with every other one's took 2.6 s for 1,000 nodes (0.25 s for 300),
    the loop stalled that long each time. The order is now sorted once (and the
    runs in their slots counted once)."""
    import time

    s = Scheduler(config(local_nodes(1000), max_parallel=8), seed="x")
    s.begin(0.0)
    begun = time.perf_counter()
    rows = s.status(0.0, 1000.0)
    took = time.perf_counter() - begun
    assert took < 0.25, f"status() of 1,000 nodes took {took:.2f} s"  # now ~0.01 s
    ahead = sorted(int(str(r["slot"]).split("(")[1].split()[0]) for r in rows
                   if r["state"] == "queued")
    assert ahead == list(range(992))  # each its own place in the queue, as before


def test_a_node_that_needs_a_full_sync_goes_first():
    nodes = local_nodes(4)
    s = Scheduler(config(nodes, max_parallel=1))
    batch = PathSet()
    batch.add("a")
    batch.note_since(900.0)
    resumed = {d: Resumed(batch, 1000.0, 500.0) for d in nodes[:3]}  # nodes[3] has no checkpoint
    assert starts(s.begin(0.0, resumed=resumed)) == [nodes[3]]  # not config order


def test_the_node_furthest_behind_goes_first_among_equals():
    s = synced(4, max_parallel=4)
    nodes = list(s.nodes)
    # nodes[2]'s last run ends first: its last success is the oldest.
    s.changed(["x"], 10.0)
    s.tick(12.0)
    for i, dest in enumerate(nodes):
        ended(s, dest, OK, 13.0 + (0 if dest == nodes[2] else i + 1))
    s.config = dataclasses.replace(s.config, max_parallel=1)
    s.changed(["y"], 20.0)
    assert starts(s.tick(22.0)) == [nodes[2]]


def test_a_node_in_retry_backoff_holds_no_slot():
    s = synced(3, max_parallel=1)
    a, b, c = by_last_success(s)
    s.changed(["x"], 10.0)
    assert starts(s.tick(12.0)) == [a]
    assert starts(ended(s, a, FAILED, 12.5)) == [b]  # a waits for its retry: b runs
    assert s.nodes[a].retry_at == 13.5
    assert starts(s.tick(13.5)) == []  # a is due, but the slot is b's
    assert s.next_deadline() is None or s.next_deadline() > 13.5  # no spinning meanwhile
    row = {r["node"]: r for r in s.status(13.5, 2000.0)}[a]
    assert row["state"] == "queued" and "1 ahead" in str(row["slot"])  # c queued first
    assert starts(ended(s, b, OK, 14.0)) == [c]  # queued at 12.0, before a's retry
    assert starts(ended(s, c, OK, 15.0)) == [a]


def test_a_run_that_could_not_start_frees_its_slot():
    s = synced(2, max_parallel=1)
    a, b = by_last_success(s)
    s.changed(["x"], 10.0)
    assert starts(s.tick(12.0)) == [a]
    assert starts(s.run_not_started(a, Outcome.RETRY, "no list file", 12.0, 0.0)) == [b]


def test_stop_starts_no_queued_node_and_says_what_they_had_pending(caplog):
    s = synced(4, max_parallel=1)
    s.changed(["x"], 10.0)
    first = starts(s.tick(12.0))
    assert s.signal(signal.SIGTERM, 12.5) == []
    assert ended(s, first[0], OK, 13.0)[-1] == Exit(0)  # nobody queued starts; all stopped
    note = s.pending_note()
    assert all(f"{d}: 1 path" in note for d in s.nodes if d != first[0])


def test_stop_signals_only_the_runs_in_their_slots():
    s = synced(5, max_parallel=2)
    s.changed(["x"], 10.0)
    first = starts(s.tick(12.0))
    s.signal(signal.SIGTERM, 12.5)
    term = [a.dest for a in s.tick(12.5 + 10.0) if isinstance(a, SignalRun)]
    assert sorted(term) == sorted(first)


def test_a_reload_that_lowers_max_parallel_stops_no_run_but_starts_none_until_below():
    s = synced(6, max_parallel=4)
    s.changed(["x"], 10.0)
    first = starts(s.tick(12.0))
    assert len(first) == 4
    s.reloading = True
    new = dataclasses.replace(s.config, max_parallel=2)
    assert not [a for a in s.reloaded(new, 13.0) if isinstance(a, (SignalRun, StartRun))]
    assert starts(ended(s, first[0], OK, 14.0)) == []
    assert starts(ended(s, first[1], OK, 14.0)) == []
    assert len(starts(ended(s, first[2], OK, 15.0))) == 1


def test_a_run_of_a_node_removed_by_reload_holds_its_slot_until_it_ends():
    s = synced(3, max_parallel=1)
    a, b, c = by_last_success(s)
    s.changed(["x"], 10.0)
    assert starts(s.tick(12.0)) == [a]
    s.reloading = True
    actions = s.reloaded(dataclasses.replace(s.config, rnodes=(b, c)), 13.0)
    assert SignalRun(a, signal.SIGTERM) in actions and not starts(actions)
    assert starts(ended(s, a, -15, 13.5)) == [b]


def test_overflow_full_syncs_go_through_the_slots_too():
    s = synced(3, max_parallel=1)
    s.read_started(5000.0)
    s.overflowed(20.0)
    assert s.root_checked(RootSame(), 20.0) == [Rescan(since=5000.0)]
    actions = s.rescanned(None, "the scan failed", 20.0)  # so: a full sync to every node
    assert len(starts(actions)) == 1 and all(a.batch.full for a in actions
                                             if isinstance(a, StartRun))
    a = starts(actions)[0]
    nxt = starts(ended(s, a, OK, 21.0))
    assert len(nxt) == 1 and nxt[0] != a
    s.read_started(6000.0)
    assert s.checkpoint(a) == 6000.0  # through: its point moves on
    last = next(d for d in s.nodes if d not in (a, nxt[0]))
    assert s.queued == {last: 20.0}
    assert s.checkpoint(last) == 5000.0  # queued for its full sync: its point stays


# ---------------------------------------------------------------- starvation


@settings(max_examples=100, deadline=None)
@given(n=st.integers(2, 12), slots_=st.integers(1, 6), data=st.data())
def test_every_ready_node_runs_within_a_bound_number_of_slot_releases(n, slots_, data):
    """Whatever ends when and how (successes, failures and their retries, new
    changes arriving), a node waiting for a slot gets one within n slot
    releases; a slot is never left free while a node waits; never more than
    max_parallel runs at once."""
    s = Scheduler(config(local_nodes(n), max_parallel=slots_, retry_min=0.5, retry_max=2.0))
    s.begin(0.0)
    t = 0.0
    waited: dict[str, int] = {}  # releases each queued node has seen since it was queued
    steps = data.draw(st.lists(st.sampled_from(["ok", "fail", "change", "time"]),
                               min_size=20, max_size=120))
    for step in steps:
        t += 0.25
        busy = running(s)
        if step in ("ok", "fail") and busy:
            dest = data.draw(st.sampled_from(busy))
            ended(s, dest, OK if step == "ok" else FAILED, t)
            for d in waited:
                waited[d] += 1
        elif step == "change":
            s.changed([f"f{t}"], t)
        else:
            s.tick(t + 2.0)
            t += 2.0
        now_running = running(s)
        assert len(now_running) <= slots_
        for d in list(waited):
            if d not in s.queued:
                del waited[d]
        for d in s.queued:
            waited.setdefault(d, 0)
            assert waited[d] <= n, f"{d} waited {waited[d]} releases"
        if s.queued:
            assert len(now_running) == slots_, "a slot is free while a node waits"


# ---------------------------------------------------------------- ssh connections spread out


def ssh_nodes(n: int) -> tuple[str, ...]:
    return tuple(f"root@edge{i}.example.com:/var/www/" for i in range(n))


def test_many_first_ssh_connections_are_spread_and_none_is_lost():
    nodes = ssh_nodes(100)
    s = Scheduler(config(nodes, max_parallel=1000), seed="source1")
    opened = {0.0: starts(s.begin(0.0))}
    assert len(opened[0.0]) == slots.OPEN_BURST
    later = [r for r in s.status(0.0, 0.0) if r["slot"]]
    assert len(later) == 90
    assert str(later[0]["slot"]).startswith("waiting to open its ssh connection")
    t = s.next_deadline()
    while t is not None and t < 100:
        opened[t] = starts(s.tick(t))
        t = s.next_deadline()
    assert sum(len(v) for v in opened.values()) == 100
    step = 1 / slots.OPEN_RATE
    total = 0
    for when in sorted(opened):
        total += len(opened[when])
        assert total <= slots.OPEN_BURST + when / step + 1e-9  # the rate holds
    last = max(t for t, dests in opened.items() if dests)
    assert last == pytest.approx((100 - slots.OPEN_BURST) * step)  # 4.5 s


def test_the_spread_is_reproducible_and_depends_on_the_seed():
    nodes = ssh_nodes(30)
    first = [starts(Scheduler(config(nodes, max_parallel=100), seed=seed).begin(0.0))
             for seed in ("a", "a", "b")]
    assert first[0] == first[1] and set(first[0]) != set(first[2])


def test_local_nodes_and_a_few_ssh_hosts_are_never_delayed():
    nodes = (*local_nodes(50), *ssh_nodes(slots.OPEN_BURST))
    s = Scheduler(config(nodes, max_parallel=100))
    assert len(starts(s.begin(0.0))) == len(nodes)


def test_nodes_on_one_host_share_one_turn_and_one_connection():
    """The first node of a host at its turn opens the connection; the host's
    other nodes start once it is there to share (before: all at once, each
    opening its own through ControlMaster=auto's race), without a turn of
    their own."""
    nodes = tuple(f"edge{i // 2}:/var/www/{i % 2}/" for i in range(40))  # 20 hosts
    s = Scheduler(config(nodes, max_parallel=100), seed="x")
    first = starts(s.begin(0.0))
    hosts = {d.split(":")[0] for d in first}
    assert len(hosts) == slots.OPEN_BURST and len(first) == slots.OPEN_BURST
    assert set(s.connecting) == hosts
    waiting = [r for r in s.status(0.0, 0.0) if str(r["node"]).split(":")[0] in hosts
               and r["node"] not in first]
    assert len(waiting) == slots.OPEN_BURST
    assert all("waiting for the ssh connection a run to its host is opening" in str(r["slot"])
               for r in waiting)
    host = sorted(hosts)[0]
    (other,) = [f"{host}:/var/www/{i}/" for i in (0, 1) if f"{host}:/var/www/{i}/" not in first]
    assert other not in starts(s.tick(0.3))  # other hosts take their turns meanwhile
    assert starts(s.host_connected(host, 0.3)) == [other]
    assert s.host_connected(host, 0.4) == []  # said once


def test_a_host_whose_first_run_ends_lets_its_other_nodes_go():
    nodes = ("edge:/a/", "edge:/b/", "edge:/c/")
    s = Scheduler(config(nodes, max_parallel=10), seed="x")
    (opener,) = starts(s.begin(0.0))
    assert s.open_at == scheduler.CONNECT_WAIT  # the others' wait, at most
    assert len(starts(ended(s, opener, OK, 1.0))) == 2  # no master seen: the run is done


def test_a_host_whose_first_run_lost_its_connection_opens_one_again_at_its_turn():
    nodes = ("edge:/a/", "edge:/b/", "edge:/c/")
    s = Scheduler(config(nodes, max_parallel=10), seed="x")
    (opener,) = starts(s.begin(0.0))
    second = starts(ended(s, opener, 255, 1.0))  # ssh: the connection failed
    assert len(second) == 1 and second[0] != opener  # one opens it again, the other waits
    assert "edge" in s.connecting


def test_a_host_that_never_says_it_is_connected_waits_at_most_connect_wait():
    nodes = ("edge:/a/", "edge:/b/")
    s = Scheduler(config(nodes, max_parallel=10), seed="x")
    assert len(starts(s.begin(0.0))) == 1
    assert starts(s.tick(scheduler.CONNECT_WAIT - 0.01)) == []
    assert len(starts(s.tick(scheduler.CONNECT_WAIT))) == 1
    assert not s.connecting


def test_hosts_added_by_a_reload_are_spread_too():
    s = Scheduler(config(ssh_nodes(2), max_parallel=100))
    s.begin(0.0)
    for d in ssh_nodes(2):
        ended(s, d, OK, 1.0)
    s.reloading = True
    assert len(starts(s.reloaded(config(ssh_nodes(40), max_parallel=100), 5.0))) == \
        slots.OPEN_BURST


# ---------------------------------------------------------------- start-up checks (nodecheck)


def test_start_up_checks_run_at_most_limit_at_once_and_each_after_its_delay(tmp_path: Path):
    """Real (tiny) processes stand in for the checks' rsync dry runs: each notes
    when it ran; the limit and the delays hold, and each gets its verdict."""
    import sys
    import time

    from inosync import nodecheck

    log = tmp_path / "ran"
    program = ("import sys, time\n"
               "start = time.monotonic()\n"
               "time.sleep(0.3)\n"
               "open(sys.argv[1], 'a').write(f'{sys.argv[2]} {start} {time.monotonic()}\\n')\n"
               "print('*deleting   extra' if sys.argv[2] == 'd' else '')\n")
    argvs = {name: [sys.executable, "-c", program, str(log), name] for name in "abcd"}
    begun = time.monotonic()
    found = nodecheck.check(argvs, limit=2, delays={"c": 0.8})
    assert found["a"] is None and found["b"] is None and found["c"] is None
    assert "it has 'extra'" in str(found["d"])
    ran = {name: (float(s), float(e)) for name, s, e in
           (line.split() for line in log.read_text().splitlines())}
    assert ran["c"][0] >= begun + 0.8  # not before its delay
    for t in [s for s, _ in ran.values()]:  # at each start, at most 2 running
        assert sum(1 for s, e in ran.values() if s <= t < e) <= 2


def test_start_up_checks_of_one_hosts_nodes_wait_for_its_first_to_end(tmp_path: Path):
    """Nodes of one ssh host: their checks started together would each open a
    connection (ControlMaster=auto races); the others start once the first has
    ended (its master shared), while another host's check does not wait."""
    import sys

    from inosync import nodecheck

    log = tmp_path / "ran"
    program = ("import sys, time\n"
               "start = time.monotonic()\n"
               "time.sleep(0.3)\n"
               "open(sys.argv[1], 'a').write(f'{sys.argv[2]} {start} {time.monotonic()}\\n')\n")
    argvs = {name: [sys.executable, "-c", program, str(log), name] for name in "abcd"}
    found = nodecheck.check(argvs, limit=4, after={"a": "a", "b": "a", "c": "a", "d": "d"},
                            shared=lambda dest: False)  # no master seen: a's end lets them go
    assert found == dict.fromkeys("abcd")
    ran = {name: (float(s), float(e)) for name, s, e in
           (line.split() for line in log.read_text().splitlines())}
    assert ran["b"][0] >= ran["a"][1] and ran["c"][0] >= ran["a"][1]
    assert ran["d"][0] < ran["a"][1]  # another host: at once


def test_start_up_checks_that_hang_hold_up_the_start_one_deadline_not_one_per_slot_round(
        tmp_path: Path):
    """Six checks that never answer (a node whose disk hangs), two slots: before,
    the start waited three rounds of the deadline (with a hundred nodes, minutes
    in which no node syncs and TERM goes unheeded: systemd kills the start). The
    whole check now ends within one deadline; those not asked by then get a full
    sync (what a node that cannot be asked gets)."""
    import sys
    import time

    from inosync import nodecheck

    argvs = {"quick": [sys.executable, "-c", "print('')"]}
    argvs.update({name: [sys.executable, "-c", "import time; time.sleep(30)"]
                  for name in "abcdef"})
    begun = time.monotonic()
    found = nodecheck.check(argvs, deadline=1.0, limit=2)
    took = time.monotonic() - begun
    assert took < 1.9, took  # before: 3.0 s (three rounds of 1 s)
    assert set(found) == set(argvs)
    assert found["quick"] is None  # asked first (the given order): it answered
    assert all("did not answer" in str(found[n]) or "not asked" in str(found[n])
               for n in "abcdef"), found


def test_a_stop_during_the_start_up_checks_ends_them_at_once(tmp_path: Path):
    """TERM while checks hang: before, the start held on for the whole deadline
    (30 s, systemd's stop timeout in contrib/inosync.service: a SIGKILL, no stop
    line). Now the checks end at once, those not answered unconfirmed (a full sync,
    should it run after all)."""
    import sys
    import time

    from inosync import nodecheck

    argvs = {name: [sys.executable, "-c", "import time; time.sleep(30)"] for name in "abc"}
    begun = time.monotonic()
    found = nodecheck.check(argvs, deadline=5.0, limit=2,
                            stopping=lambda: time.monotonic() > begun + 0.3)
    took = time.monotonic() - begun
    assert took < 1.5, took
    assert set(found) == set(argvs)
    assert all("stopping" in str(why) for why in found.values()), found


def ssh_synced(n: int) -> Scheduler:
    """n ssh nodes on n hosts through their initial full sync, connections open."""
    nodes = ssh_nodes(n)
    s = Scheduler(config(nodes, max_parallel=1000), seed="s")
    s.begin(0.0)
    t = 0.0
    while any(node.pending or node.inflight for node in s.nodes.values()):
        t = max(t + 1.0, s.next_deadline() or 0.0)
        for dest in running(s):
            ended(s, dest, OK, t)
        s.tick(t)
    assert not s.unconnected
    return s


def test_after_a_blip_that_cut_every_connection_the_new_ones_are_spread_too():
    s = ssh_synced(30)
    s.changed(["x"], 100.0)
    assert len(starts(s.tick(102.0))) == 30  # connected: no spreading
    for dest in running(s):
        ended(s, dest, 255, 103.0)  # ssh: the connection was lost, each master retired
    assert s.next_deadline() == 104.0  # retry_min
    assert len(starts(s.tick(104.0))) == slots.OPEN_BURST
    rows = [r for r in s.status(104.0, 0.0) if r["slot"]]
    assert len(rows) == 20 and all(r["state"] == "queued" for r in rows)
    assert "waiting to open its ssh connection (20 waiting, next in 0.0 s" in rows[0]["slot"]
    assert s.next_deadline() == pytest.approx(104.05)
    assert len(starts(s.tick(104.05))) == 1


def test_a_failure_that_kept_the_connection_retries_without_waiting_for_a_turn():
    s = ssh_synced(30)
    s.changed(["x"], 100.0)
    s.tick(102.0)
    for dest in running(s):
        ended(s, dest, 23, 103.0)  # rsync: some files not transferred; ssh was fine
    assert len(starts(s.tick(104.0))) == 30


def test_a_reload_that_changes_the_ssh_command_spreads_the_new_connections():
    s = ssh_synced(30)
    s.reloading = True
    new = dataclasses.replace(s.config, ssh=("ssh", "-p", "2222"))
    assert len(starts(s.reloaded(new, 100.0))) == slots.OPEN_BURST  # a full sync each


def test_the_bucket_lets_a_burst_through_then_a_steady_rate():
    b = slots.Bucket(burst=3, rate=2.0)
    assert [b.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert b.next_at(0.0) == 0.5 and not b.take(0.49) and b.take(0.5)
    assert b.take(10.0) and b.take(10.0) and b.take(10.0) and not b.take(10.0)  # refilled to 3
    assert slots.open_times(["a", "b", "a"], "x", 5.0).keys() == {"a", "b"}


def test_a_reload_of_max_parallel_alone_sends_nothing_and_says_what_changed():
    from inosync import reloadplan
    from inosync.confdiff import changes

    old = config(local_nodes(3), max_parallel=16)
    new = dataclasses.replace(old, max_parallel=4)
    assert reloadplan.full_syncs(old, new) == {}
    assert changes(old, new) == ["max_parallel: 16 -> 4"]
