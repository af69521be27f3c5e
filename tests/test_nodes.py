"""Unit tests for inosync.nodes: backoff and the per-node state machine."""

from __future__ import annotations

import pytest

from inosync.nodes import Node, State, backoff
from inosync.rsync import Outcome

# ---------------------------------------------------------------- backoff


def test_backoff_no_failures_is_zero():
    assert backoff(0, 1.0, 60.0) == 0.0
    assert backoff(-3, 1.0, 60.0) == 0.0


def test_backoff_doubles_then_caps():
    got = [backoff(n, 1.0, 60.0) for n in range(1, 10)]
    assert got == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]


def test_backoff_fractional_lo():
    assert [backoff(n, 0.5, 3.0) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_backoff_lo_equal_hi_is_constant():
    assert {backoff(n, 60.0, 60.0) for n in range(1, 20)} == {60.0}


def test_backoff_huge_failure_count_does_not_overflow():
    assert backoff(10_000, 1.0, 60.0) == 60.0
    assert backoff(2**40, 0.1, 5.0) == 5.0


def test_backoff_is_monotonic_and_bounded():
    prev = 0.0
    for n in range(1, 100):
        b = backoff(n, 0.3, 45.0)
        assert prev <= b <= 45.0
        prev = b


# ---------------------------------------------------------------- Node helpers


def node(**kw) -> Node:
    kw.setdefault("retry_min", 1.0)
    kw.setdefault("retry_max", 60.0)
    return Node("host:/d", **kw)


def with_pending(*paths: str, **kw) -> Node:
    n = node(**kw)
    for p in paths:
        n.pending.add(p)
    return n


# ---------------------------------------------------------------- ready / begin


def test_new_node_is_idle_and_not_ready():
    n = node()
    assert n.state is State.IDLE
    assert not n.ready(0.0)
    assert n.inflight is None
    assert n.failures == 0
    assert n.runs == 0
    assert n.pending_summary() == "0 paths"


def test_ready_when_idle_with_pending():
    n = with_pending("a")
    assert n.ready(0.0)


def test_ready_when_full_pending():
    n = node()
    n.pending.set_full()
    assert n.ready(0.0)


def test_begin_moves_pending_to_inflight():
    n = with_pending("a", "b")
    batch = n.begin()
    assert batch.paths == {"a", "b"}
    assert n.inflight is batch
    assert not n.pending
    assert n.state is State.RUNNING
    assert n.runs == 1


def test_not_ready_while_running_even_with_new_pending():
    n = with_pending("a")
    n.begin()
    n.pending.add("b")
    assert not n.ready(0.0)
    assert not n.ready(1e9)


def test_pending_limit_is_node_limit():
    n = node(limit=2)
    for p in "abc":
        n.pending.add(p)
    assert n.pending.full


# ---------------------------------------------------------------- finish OK


@pytest.mark.parametrize("outcome", [Outcome.OK, Outcome.VANISHED])
def test_finish_ok_clears_inflight_and_idles(outcome):
    n = with_pending("a")
    n.begin()
    changed = n.finish(outcome, now=10.0, wall=1000.0)
    assert changed is False  # healthy before, healthy after
    assert n.state is State.IDLE
    assert n.inflight is None
    assert not n.pending  # the batch is done, not re-queued
    assert n.failures == 0
    assert n.retry_at is None
    assert n.last_ok == 1000.0
    assert not n.ready(10.0)


def test_finish_ok_keeps_changes_that_arrived_meanwhile():
    n = with_pending("a")
    n.begin()
    n.pending.add("b")
    n.finish(Outcome.OK, 10.0, 1000.0)
    assert n.pending.paths == {"b"}
    assert n.ready(10.0)


# ---------------------------------------------------------------- finish RETRY


def test_finish_retry_merges_inflight_back_with_newer_changes():
    n = with_pending("a", "b")
    n.begin()
    n.pending.add("c")
    changed = n.finish(Outcome.RETRY, now=100.0, wall=5000.0, error="exit 23")
    assert changed is True  # first failure
    assert n.pending.paths == {"a", "b", "c"}
    assert n.inflight is None
    assert n.state is State.WAITING
    assert n.failures == 1
    assert n.retry_at == 101.0
    assert n.last_error == "exit 23"
    assert n.last_ok is None


def test_finish_retry_full_batch_stays_full():
    n = node()
    n.pending.set_full()
    n.begin()
    n.pending.add("x")
    n.finish(Outcome.RETRY, 0.0, 0.0, "e")
    assert n.pending.full


def test_finish_retry_merge_respects_limit():
    n = with_pending("a", "b", limit=3)
    n.begin()
    n.pending.add("c")
    n.pending.add("d")
    n.finish(Outcome.RETRY, 0.0, 0.0, "e")
    assert n.pending.full  # 4 distinct paths > limit 3


def test_waiting_until_retry_at():
    n = with_pending("a")
    n.begin()
    n.finish(Outcome.RETRY, now=100.0, wall=0.0, error="e")
    assert n.retry_at == 101.0
    assert not n.ready(100.0)
    assert not n.ready(100.999)
    assert n.ready(101.0)
    assert n.ready(500.0)


def test_waiting_with_new_changes_still_waits():
    n = with_pending("a")
    n.begin()
    n.finish(Outcome.RETRY, 100.0, 0.0, "e")
    n.pending.add("b")
    assert not n.ready(100.5)  # new events must not bypass the backoff


def test_backoff_grows_with_consecutive_failures():
    n = with_pending("a", retry_min=1.0, retry_max=10.0)
    now = 0.0
    waits = []
    for _ in range(7):
        assert n.ready(now)
        n.begin()
        n.finish(Outcome.RETRY, now, 0.0, "exit 10 (error in socket I/O)")
        waits.append(n.retry_at - now)
        now = n.retry_at
    assert waits == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    assert n.failures == 7
    assert n.runs == 7
    assert n.pending.paths == {"a"}  # nothing lost however often it fails


def test_success_resets_backoff():
    n = with_pending("a")
    for t in range(3):
        n.begin()
        n.finish(Outcome.RETRY, float(t * 100), 0.0, "e")
    assert n.failures == 3
    n.begin()
    n.finish(Outcome.OK, 1000.0, 0.0)
    assert n.failures == 0
    n.pending.add("b")
    n.begin()
    n.finish(Outcome.RETRY, 2000.0, 0.0, "e")
    assert n.retry_at == 2001.0  # back to retry_min


# ---------------------------------------------------------------- health changes


def test_repeat_of_same_error_is_not_a_health_change():
    n = with_pending("a")
    n.begin()
    assert n.finish(Outcome.RETRY, 0.0, 0.0, "exit 255 (ssh connection failed)") is True
    n.begin()
    assert n.finish(Outcome.RETRY, 5.0, 0.0, "exit 255 (ssh connection failed)") is False
    n.begin()
    assert n.finish(Outcome.RETRY, 10.0, 0.0, "exit 255 (ssh connection failed)") is False


def test_different_error_is_a_health_change():
    n = with_pending("a")
    n.begin()
    assert n.finish(Outcome.RETRY, 0.0, 0.0, "exit 255 (ssh connection failed)") is True
    n.begin()
    assert n.finish(Outcome.RETRY, 5.0, 0.0, "exit 23 (partial transfer due to error)") is True
    assert n.last_error == "exit 23 (partial transfer due to error)"


def test_recovery_is_a_health_change():
    n = with_pending("a")
    n.begin()
    n.finish(Outcome.RETRY, 0.0, 0.0, "e")
    n.begin()
    assert n.finish(Outcome.OK, 5.0, 123.0) is True
    assert n.state is State.IDLE
    assert n.last_ok == 123.0
    # a second success in a row is not a change
    n.pending.add("b")
    n.begin()
    assert n.finish(Outcome.OK, 6.0, 124.0) is False


def test_vanished_counts_as_recovery():
    n = with_pending("a")
    n.begin()
    n.finish(Outcome.RETRY, 0.0, 0.0, "e")
    n.begin()
    assert n.finish(Outcome.VANISHED, 5.0, 0.0) is True
    assert n.failures == 0


def test_same_error_after_recovery_is_a_change_again():
    n = with_pending("a")
    n.begin()
    n.finish(Outcome.RETRY, 0.0, 0.0, "e")
    n.begin()
    n.finish(Outcome.OK, 1.0, 0.0)
    n.pending.add("b")
    n.begin()
    assert n.finish(Outcome.RETRY, 2.0, 0.0, "e") is True


# ---------------------------------------------------------------- BROKEN


def test_broken_waits_retry_max_from_the_first_failure():
    n = with_pending("a", retry_min=1.0, retry_max=60.0)
    n.begin()
    assert n.finish(Outcome.BROKEN, 100.0, 0.0, "exit 1 (syntax or usage error)") is True
    assert n.state is State.WAITING
    assert n.retry_at == 160.0
    assert n.pending.paths == {"a"}
    assert not n.ready(159.9)
    assert n.ready(160.0)
    n.begin()
    assert n.finish(Outcome.BROKEN, 160.0, 0.0, "exit 1 (syntax or usage error)") is False
    assert n.retry_at == 220.0


def test_broken_then_retry_uses_retry_backoff():
    n = with_pending("a", retry_min=1.0, retry_max=60.0)
    n.begin()
    n.finish(Outcome.BROKEN, 0.0, 0.0, "b")
    n.begin()
    n.finish(Outcome.RETRY, 60.0, 0.0, "r")
    assert n.retry_at == 62.0  # second failure in a row: 2 * retry_min


# ---------------------------------------------------------------- abandon


def test_abandon_keeps_batch_pending_and_idles():
    n = with_pending("a")
    n.begin()
    n.pending.add("b")
    n.abandon()
    assert n.inflight is None
    assert n.pending.paths == {"a", "b"}
    assert n.state is State.IDLE
    assert n.failures == 0
    assert n.ready(0.0)


def test_abandon_while_failing_returns_to_waiting():
    n = with_pending("a")
    n.begin()
    n.finish(Outcome.RETRY, 0.0, 0.0, "e")
    retry_at = n.retry_at
    n.begin()
    n.abandon()
    assert n.state is State.WAITING
    assert n.failures == 1  # an abandoned run is not a failure
    assert n.retry_at == retry_at
    assert n.pending.paths == {"a"}


def test_abandon_without_inflight_is_harmless():
    n = with_pending("a")
    n.abandon()
    assert n.pending.paths == {"a"}
    assert n.state is State.IDLE


def test_abandon_full_batch():
    n = node()
    n.pending.set_full()
    n.begin()
    n.abandon()
    assert n.pending.full


# ---------------------------------------------------------------- pending_summary


def test_pending_summary_counts_pending_and_inflight_once():
    n = with_pending("a", "b")
    assert n.pending_summary() == "2 paths"
    n.begin()
    assert n.pending_summary() == "2 paths"
    n.pending.add("b")  # also in flight: counted once
    n.pending.add("c")
    assert n.pending_summary() == "3 paths"
    # does not disturb the sets it looks at
    assert n.pending.paths == {"b", "c"}
    assert n.inflight is not None and n.inflight.paths == {"a", "b"}


def test_pending_summary_full():
    n = node()
    n.pending.set_full()
    n.begin()
    assert n.pending_summary() == "full sync"
    n.pending.add("x")
    assert n.pending_summary() == "full sync"


def test_pending_summary_over_limit_is_full():
    n = with_pending("a", "b", limit=3)
    n.begin()
    n.pending.add("c")
    n.pending.add("d")
    assert n.pending_summary() == "full sync"
    assert not n.pending.full  # only the combined view is full


def test_full_sync_above_uses_tree_size_and_cap():
    from inosync.daemon import full_sync_above

    assert full_sync_above(20_000, 0) == 1000  # small or unknown tree: lists up to 1000
    assert full_sync_above(20_000, 40_000) == 10_000  # a quarter of the tree
    assert full_sync_above(20_000, 1_000_000) == 20_000  # the configured cap wins


def test_source_changed_requeues_without_a_failure():
    n = Node("h:/d", retry_min=2.0, retry_max=60.0)
    n.pending.add("a")
    n.begin()
    n.pending.add("b")
    assert n.finish(Outcome.SOURCE_CHANGED, now=10.0, wall=0.0, error="exit 23") is False
    assert n.failures == 0 and n.last_error is None
    assert n.pending.paths == {"a", "b"}  # rsync may have skipped deletions: again
    assert n.state is State.WAITING and n.retry_at == 12.0
    assert not n.ready(11.0) and n.ready(12.0)


def test_source_changed_without_end_becomes_a_failure():
    n = Node("h:/d", retry_min=1.0, retry_max=60.0)
    for i in range(Node.CHANGED_RUNS_LIMIT):
        n.pending.add("a")
        n.begin()
        assert n.finish(Outcome.SOURCE_CHANGED, float(i), 0.0, "exit 23") is False
    n.begin()
    assert n.finish(Outcome.SOURCE_CHANGED, 10.0, 0.0, "exit 23") is True
    assert n.failures == 1 and n.last_error == "exit 23"
    n.begin()
    n.finish(Outcome.OK, 20.0, 5.0)
    assert n.changed_runs == 0 and n.failures == 0
