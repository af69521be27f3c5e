"""The runner owns children and scratch files: nothing is left behind on any exit."""

from __future__ import annotations

import os
import shutil
import signal
import time

import pytest

from inosync.batch import RunPlan, plan_run
from inosync.leftovers import LOCK
from inosync.rsync import Outcome
from inosync.runner import Runner


def argv_of(*words: str):
    return lambda plan, list_file, rules_file: list(words)


def wait_reaped(runner: Runner, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ended = runner.reap()
        if ended:
            return ended
        time.sleep(0.01)
    raise AssertionError("no child ended")


def test_exception_inside_kills_children_and_removes_scratch_files():
    plan = plan_run(False, ["a", "b/c"], 1000)
    with pytest.raises(RuntimeError), Runner() as runner:
        assert runner.start("n1", plan, argv_of("sleep", "30")) is None
        pid = runner.children["n1"].proc.pid
        scratch = runner.dir
        # list and rules ("a" is top-level), and the directory's lock; stderr is unnamed
        assert len(os.listdir(scratch)) == 3 and LOCK in os.listdir(scratch)
        raise RuntimeError("the loop died")
    assert not os.path.exists(scratch)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed and reaped, not a zombie


def test_exit_code_stderr_and_scratch_files_of_a_run():
    with Runner() as runner:
        plan = plan_run(False, ["docs/x"], 1000)
        runner.start("n1", plan, lambda p, lf, rf: ["sh", "-c", f"cat {lf} >&2; exit 23"])
        (ended,) = wait_reaped(runner)
        assert (ended.dest, ended.returncode, ended.what) == ("n1", 23, "1 path")
        assert ended.stderr == "./docs/x\0"
        assert os.listdir(runner.dir) == [LOCK]  # the list file went with the run


def test_signal_reaches_the_whole_process_group():
    with Runner() as runner:
        runner.start("n1", RunPlan(full=True), argv_of("sh", "-c", "sleep 30 & wait"))
        time.sleep(0.1)
        runner.signal("n1", signal.SIGTERM)
        (ended,) = wait_reaped(runner)
        assert ended.returncode in (-signal.SIGTERM, 128 + signal.SIGTERM)


def test_missing_program_is_reported_not_raised():
    with Runner() as runner:
        failed = runner.start("n1", RunPlan(full=True), argv_of("/nonexistent/rsync"))
        assert failed is not None and failed[0] is Outcome.BROKEN
        assert "cannot run /nonexistent/rsync" in failed[1]
        assert len(runner) == 0


def test_removed_scratch_directory_is_made_again():
    with Runner() as runner:
        first = runner.dir
        shutil.rmtree(first)
        assert runner.start("n1", plan_run(False, ["a"], 10), argv_of("true")) is None
        assert runner.dir != first and os.path.isdir(runner.dir)
        wait_reaped(runner)
    assert not os.path.exists(runner.dir)


def test_pretend_runs_nothing_and_ends_at_once(caplog):
    with Runner(pretend=True) as runner:
        with caplog.at_level("INFO", "inosync"):
            runner.start("n1", plan_run(False, ["a"], 10), argv_of("rm", "-rf", "/nonexistent"))
        assert "would run (1 path): rm -rf /nonexistent" in caplog.text
        (ended,) = runner.reap()
        assert ended.pretended and ended.returncode == 0 and len(runner) == 0


def test_plan_run_whole_tree_or_list():
    assert plan_run(True, [], 1000).full
    assert plan_run(False, ["a", "b"], 1).full  # more than the cut-off
    plan = plan_run(False, ["a", "d/e"], 1000)
    assert not plan.full and plan.top == ("a",) and plan.what == "2 paths"
    assert plan.list_data == b".\0./a\0./d/e\0"
    nested = plan_run(False, ["d/e"], 1000)
    assert nested.top == () and nested.list_data == b"./d/e\0"


@pytest.mark.parametrize("impostor", ["symlink", "open to others", "owned by someone else"])
def test_scratch_directory_taken_by_someone_else_is_not_used(tmp_path, impostor):
    with Runner() as runner:
        ours = runner.dir
        shutil.rmtree(ours)  # a tmp cleaner removed it; someone makes the same name
        if impostor == "symlink":
            (tmp_path / "theirs").mkdir()
            os.symlink(tmp_path / "theirs", ours)
        else:
            os.mkdir(ours, 0o700)
            if impostor == "open to others":
                os.chmod(ours, 0o777)
            else:
                os.chown(ours, 65534, 65534)
        assert runner.start("n1", plan_run(False, ["a"], 10), argv_of("true")) is None
        assert runner.dir != ours
        wait_reaped(runner)
        assert os.listdir(tmp_path / "theirs" if impostor == "symlink" else ours) == []
    if os.path.islink(ours):
        os.unlink(ours)
    elif os.path.isdir(ours):
        os.rmdir(ours)


def test_replay_runs_first_then_rsync(tmp_path):
    from inosync.excludes import Excludes
    from inosync.replay import Move, replay_argv, replay_input
    from inosync.runner import Replay

    node = tmp_path / "node"
    node.mkdir()
    (node / "old").write_text("data")
    moves = [Move("old", "new")]
    replay = Replay(replay_argv(str(node), []), replay_input(str(node), moves, Excludes(())), 1,
                    [("old", "new")])
    seen = tmp_path / "seen"
    with Runner() as runner:
        # The "rsync" here records what the node held when it started.
        runner.start(str(node), RunPlan(full=True),
                     argv_of("sh", "-c", f"ls {node} > {seen}"), replay)
        (ended,) = wait_reaped(runner)
        assert ended.returncode == 0
    assert seen.read_text() == "new\n"


def test_replay_that_fails_still_runs_rsync(tmp_path):
    from inosync.runner import Replay

    seen = tmp_path / "seen"
    with Runner() as runner:
        replay = Replay(["sh", "-c", "exit 3"], b"", 1, [("a", "b")])
        runner.start("n1", RunPlan(full=True), argv_of("sh", "-c", f"echo ran > {seen}"),
                     replay)
        (ended,) = wait_reaped(runner)
        assert ended.returncode == 0 and seen.read_text() == "ran\n"


def test_pretend_shows_the_replay(caplog):
    from inosync.runner import Replay

    with Runner(pretend=True) as runner, caplog.at_level("INFO", "inosync"):
        runner.start("n1", RunPlan(full=True), argv_of("true"),
                     Replay(["perl"], b"", 4, [("a", "b"), ("b", "c")]))
    assert "would replay 4 renames first ('a' -> 'b', 'b' -> 'c', ...)" in caplog.text


def test_a_replay_past_its_time_limit_is_killed_and_its_run_fails(tmp_path):
    """Issue 15.9: without a limit a hung replay kept its node "running" forever."""
    from inosync.runner import Replay

    seen = tmp_path / "seen"
    with Runner() as runner:
        replay = Replay(["sleep", "60"], b"", 1, [("a", "b")], timeout=0.2)
        runner.start("n1", RunPlan(full=True), argv_of("sh", "-c", f"echo ran > {seen}"),
                     replay)
        deadline = runner.next_deadline()
        assert deadline is not None and deadline <= time.monotonic() + 0.2
        assert runner.reap() == []
        time.sleep(0.25)
        runner.expire(time.monotonic())
        (ended,) = wait_reaped(runner)
    assert ended.returncode == 30 and "did not end in time" in (ended.stderr or "")
    assert ended.replay_rc == -1 and not seen.exists()  # no rsync after it
    assert runner.next_deadline() is None


def test_a_polite_stop_lets_the_replay_finish_then_runs_no_rsync(tmp_path):
    from inosync.runner import Replay

    done, seen = tmp_path / "done", tmp_path / "seen"
    with Runner() as runner:
        replay = Replay(["sh", "-c", f"sleep 0.3; touch {done}"], b"", 1, [("a", "b")])
        runner.start("n1", RunPlan(full=True), argv_of("sh", "-c", f"touch {seen}"), replay)
        runner.signal("n1", signal.SIGTERM)
        (ended,) = wait_reaped(runner)
    assert ended.returncode == -signal.SIGTERM and done.exists() and not seen.exists()


def test_a_replay_that_cannot_start_is_skipped_and_rsync_runs(tmp_path):
    """Issue 15.7: no perl here made every run fail "cannot run perl"."""
    from inosync.runner import Replay

    seen = tmp_path / "seen"
    with Runner() as runner:
        replay = Replay([str(tmp_path / "no-perl-here")], b"", 1, [("a", "b")])
        assert runner.start("n1", RunPlan(full=True),
                            argv_of("sh", "-c", f"echo ran > {seen}"), replay) is None
        (ended,) = wait_reaped(runner)
    assert ended.returncode == 0 and seen.read_text() == "ran\n"
    assert ended.replay_rc == 127 and "no-perl-here" in ended.replay_said
