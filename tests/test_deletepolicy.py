"""The delete setting (issue 17.7b): its check, what each run may delete per
policy and phase (argv), which runs are the start's, the move replay, the lists
of 'running', and how --verify judges files only on a node."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from inosync import deletepolicy
from inosync.batch import PathSet, files_list, plan_run
from inosync.config import Config, ConfigError, load
from inosync.deletepolicy import Phase
from inosync.replay import off_because
from inosync.rsync import batch_argv, full_argv
from inosync.scheduler import Scheduler, StartRun
from inosync.verify import MARKER, Drift, Result, nagios_code, parse_itemized, report_line
from inosync.verify import exit_code as verify_exit

REPO = Path(__file__).resolve().parents[1]
NODE = "/srv/copy"
DELETING = {"--delete", "--delete-missing-args", "--force"}


@pytest.fixture
def wdir(tmp_path: Path) -> Path:
    d = tmp_path / "www"
    d.mkdir()
    (d / "index.html").write_text("hello")
    return d


def conf(tmp_path: Path, wdir: Path, *lines: str) -> str:
    path = tmp_path / "inosync.conf"
    path.write_text("".join(f"{line}\n" for line in (
        f"wpath = {str(wdir)!r}", f"rnodes = [{str(tmp_path / 'copy')!r}]", *lines)))
    return str(path)


def error_of(path: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(path)
    message = str(info.value)
    assert "\n" not in message
    return message


# ---- the setting


@pytest.mark.parametrize("value", [True, "startup", "running", False])
def test_each_policy_loads(tmp_path, wdir, value):
    assert load(conf(tmp_path, wdir, f"delete = {value!r}")).delete == value


def test_default_is_true(tmp_path, wdir):
    assert load(conf(tmp_path, wdir)).delete is True


@pytest.mark.parametrize("value", ["'yes'", "1", "0", "None", "'Startup'", "['running']"])
def test_a_wrong_value_names_file_and_line(tmp_path, wdir, value):
    path = conf(tmp_path, wdir, "edelay = 1", f"delete = {value}")
    message = error_of(path)
    assert message.startswith(f"{path}:4: delete must be True, 'startup', 'running' or False, "
                              "got "), message


def test_a_wrong_value_exits_2_with_one_line(tmp_path, wdir):
    path = conf(tmp_path, wdir, "delete = 'never'")
    proc = subprocess.run([sys.executable, "-m", "inosync", "-c", path, "--check"], cwd=REPO,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and f"{path}:3: delete must be" in proc.stderr


@pytest.mark.parametrize("policy", ["startup", "running", False])
@pytest.mark.parametrize("arg", ["--delete-after", "--del", "--delete", "--force"])
def test_rsync_args_that_delete_are_refused_unless_true(tmp_path, wdir, policy, arg):
    path = conf(tmp_path, wdir, f"rsync_args = [{arg!r}]", f"delete = {policy!r}")
    message = error_of(path)
    assert message.startswith(f"{path}:3: rsync_args has {arg}, which deletes on the nodes "
                              f"against delete = {policy!r}"), message


def test_rsync_args_that_delete_stay_allowed_with_true(tmp_path, wdir):
    assert load(conf(tmp_path, wdir, "rsync_args = ['--delete-after', '--force']")).delete


# ---- what each run deletes: argv per policy and phase


def config(policy: deletepolicy.Policy) -> Config:
    return Config(path="/etc/inosync.conf", wpath="/srv/www", rnodes=(NODE,), delete=policy)


def deleting(policy: deletepolicy.Policy, phase: Phase) -> set[str]:
    opts = config(policy).rsync_options(phase)
    if phase is Phase.LIST:
        argv = batch_argv(opts, "/srv/www", NODE, "/run/list")
        assert ("--ignore-missing-args" in argv) != ("--delete-missing-args" in argv)
    else:
        argv = full_argv(opts, "/srv/www", NODE)
        assert not {"--delete-missing-args", "--ignore-missing-args"} & set(argv)
    return DELETING & set(argv)


EXPECTED = {
    (True, Phase.START): {"--delete"},
    (True, Phase.FULL): {"--delete"},
    (True, Phase.LIST): {"--delete", "--delete-missing-args"},
    ("startup", Phase.START): {"--delete"},
    ("startup", Phase.FULL): set(),
    ("startup", Phase.LIST): set(),
    ("running", Phase.START): set(),
    ("running", Phase.FULL): set(),
    ("running", Phase.LIST): {"--delete-missing-args", "--force"},
    (False, Phase.START): set(),
    (False, Phase.FULL): set(),
    (False, Phase.LIST): set(),
}


@pytest.mark.parametrize("policy, phase", list(EXPECTED))
def test_argv_deletes_what_the_policy_allows_in_each_phase(policy, phase):
    assert deleting(policy, phase) == EXPECTED[(policy, phase)]


def test_true_keeps_the_argv_of_before():
    opts = config(True).rsync_options()
    assert full_argv(opts, "/w", NODE)[:4] == ["/usr/bin/rsync", "-a", "-r", "--delete"]
    assert "--delete-missing-args" in batch_argv(opts, "/w", NODE, "/l")


@pytest.mark.parametrize("full, start, phase", [
    (False, False, Phase.LIST), (False, True, Phase.LIST), (True, False, Phase.FULL),
    (True, True, Phase.START)])
def test_phase_of_a_run(full, start, phase):
    assert deletepolicy.phase_of(full, start) is phase


# ---- which whole-tree runs are the start's (the scheduler)


def run(actions: list) -> PathSet:
    (start,) = [a for a in actions if isinstance(a, StartRun)]
    return start.batch


def ok(s: Scheduler, now: float) -> list:
    return s.run_ended(NODE, 0, "", now, wall=now, took=0.1, what="x")


def test_start_and_reload_syncs_are_the_start_phase_the_others_not():
    s = Scheduler(dataclasses.replace(config("startup"), resync_interval=100.0))
    first = run(s.begin(0.0))
    assert first.full and first.start
    ok(s, 1.0)
    resync = run(s.tick(101.0))  # resync_interval
    assert resync.full and not resync.start
    ok(s, 102.0)
    s.signal(1, 103.0)  # SIGHUP
    reloaded = run(s.reloaded(config("startup"), 104.0))
    assert reloaded.full and reloaded.start
    ok(s, 105.0)
    s.changed(["a"], 106.0)
    listed = run(s.tick(120.0))  # edelay 10 s
    assert not listed.full and not listed.start


def test_a_failed_start_sync_stays_the_start_sync():
    s = Scheduler(config("startup"))
    assert run(s.begin(0.0)).start
    s.run_ended(NODE, 255, "ssh: connect failed", 1.0, wall=1.0, took=0.1, what="full sync")
    s.changed(["a"], 1.5)
    again = run(s.tick(10.0))
    assert again.full and again.start


def test_a_sync_after_lost_events_is_not_the_start_phase():
    s = Scheduler(config("startup"))
    run(s.begin(0.0))
    ok(s, 1.0)
    from inosync.scheduler import RootSame
    s.overflowed(2.0)
    after = run(s.root_checked(RootSame(), 2.0))
    assert after.full and not after.start


@pytest.mark.parametrize("policy", [True, "startup", "running", False])
def test_a_change_of_wpath_itself_keeps_the_deletions_of_running(policy):
    s = Scheduler(dataclasses.replace(config(policy), edelay=1.0))
    run(s.begin(0.0))
    ok(s, 1.0)
    s.changed(["gone", ""], 2.0)
    batch = run(s.tick(3.0))
    # Never a whole-tree run: under 'running' it would not delete "gone" (and a
    # relay would walk its whole tree at every upstream batch: see test_scheduler).
    assert not batch.full and batch.paths == {".", "gone"}


def test_a_listed_dot_is_wpath_itself_never_the_whole_tree():
    # review 17b: a recursive "." under 'running' (--force) replaced node directories
    alone = plan_run(False, [".", "a/gone"], 1000)
    assert (alone.top, alone.list_data, alone.rooted) == ((), b".\0./a/gone\0", True)
    both = plan_run(False, [".", "b", "c/d"], 1000)
    assert both.top == ("b",) and both.list_data.startswith(b".\0") and both.rooted
    assert not plan_run(False, ["a/b"], 1000).rooted


# ---- the move replay


@pytest.mark.parametrize("policy", ["startup", "running", False])
def test_the_replay_is_off_unless_every_deletion_is_allowed(policy):
    why = off_because(True, (), policy)
    assert why is not None and why.startswith(f"delete = {policy!r}")


def test_the_replay_stays_on_with_true():
    assert off_because(True, ()) is None and off_because(True, (), True) is None
    assert off_because(False, (), "running") == "replay_moves = False"


# ---- 'running' lists: a gone path below a listed directory is listed too


def test_keep_gone_lists_gone_paths_below_a_listed_directory(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "kept").write_text("x")
    changed = {"d", "d/gone", "d/kept", "e", "e/below-gone"}  # e is gone as a whole
    assert files_list(changed, str(tmp_path)) == ["d", "e"]
    assert files_list(changed, str(tmp_path), keep_gone=True) == ["d", "d/gone", "e"]


def test_keep_gone_skips_paths_below_what_is_now_a_file(tmp_path):
    (tmp_path / "d").write_text("now a file")
    assert files_list({"d", "d/x"}, str(tmp_path), keep_gone=True) == ["d"]


# ---- --verify: which drift the policy allows


def itemized(*items: str) -> list[bytes]:
    return [MARKER + item.encode() + b"\n" for item in items]


OUT = itemized("*deleting  @extra.txt", "*deleting  @old/", ">f.st......@index.html")


def test_true_counts_node_only_files_as_drift():
    drift = parse_itemized(OUT)
    assert (drift.count, drift.node_only) == (3, 0)
    assert nagios_code([Result("n", drift)]) == 2


@pytest.mark.parametrize("policy", [False, "startup", "running"])
def test_other_policies_allow_node_only_files(policy):
    drift = parse_itemized(OUT, policy=policy)
    assert (drift.count, drift.node_only) == (1, 2)
    only = parse_itemized(OUT[:2], policy=policy)
    assert only.count == 0 and nagios_code([Result("n", only)]) == 0
    assert verify_exit([Result("n", only)]) == 0
    line = report_line(Result("n", only))
    assert line.startswith(f"n: identical; 2 paths only on the node, allowed: delete = "
                           f"{policy!r} keeps node-only files"), line
    assert line.endswith("(e.g. extra.txt, old/)"), line


def test_report_line_of_false_names_the_policy():
    line = report_line(Result("n", parse_itemized(OUT, policy=False)))
    assert line == ("n: 1 path differs (e.g. >f.st...... index.html); 2 paths only on the "
                    "node, allowed: delete = False keeps node-only files (e.g. extra.txt, old/)")


def test_a_report_without_node_only_files_is_as_before():
    assert report_line(Result("n", Drift(kept_by="delete = False keeps node-only files"))) \
        == "n: identical"


# ---- --check says what the start would delete


@pytest.mark.parametrize("policy", ["running", False])
def test_check_shows_a_start_that_deletes_nothing(tmp_path, wdir, policy):
    from inosync.check import summary
    lines = summary(load(conf(tmp_path, wdir, f"delete = {policy!r}")))
    assert f"delete: {policy}" in lines
    assert any(line.startswith(f"move replay: off (delete = {policy!r}") for line in lines)
    argv = [line for line in lines if line.startswith("  ") and "rsync" in line]
    assert argv and not any("--delete" in line for line in argv)
    assert lines[-1].endswith(f"(it deletes nothing: delete = {policy!r})"), lines


def test_check_shows_the_deleting_start_of_startup(tmp_path, wdir):
    from inosync.check import summary
    lines = summary(load(conf(tmp_path, wdir, "delete = 'startup'")))
    assert any(" --delete " in line for line in lines if line.startswith("  "))
    assert lines[-1].endswith("(*deleting: what it would delete)")


@pytest.mark.parametrize("policy, said", [
    (True, "(the next start sends it)"),
    ("startup", "(the next start's full sync covers it)"),
    ("running", "(the next start's full sync sends it but deletes nothing: delete = "
                "'running')"),
    (False, "(the next start's full sync sends it but deletes nothing: delete = False)")])
def test_the_stop_says_whether_the_next_start_deletes_what_is_pending(policy, said):
    s = Scheduler(config(policy))
    run(s.begin(0.0))
    assert s.pending_note() == f"pending: {NODE}: full sync {said}"


def test_running_says_when_a_batch_too_big_loses_its_deletions(caplog):
    s = Scheduler(dataclasses.replace(config("running"), max_pending=3, edelay=1.0))
    run(s.begin(0.0))
    ok(s, 0.5)
    s.changed(["a", "b", "c"], 1.0)
    assert "raise max_pending" not in caplog.text
    s.changed(["d"], 1.5)
    assert "more than 3 paths changed in one batch: a whole-tree sync, which deletes " \
           "nothing under delete = 'running'" in caplog.text
    assert run(s.tick(3.0)).full


def test_running_says_when_pending_paths_of_a_node_grow_too_many(caplog):
    s = Scheduler(dataclasses.replace(config("running"), max_pending=3, edelay=1.0))
    run(s.begin(0.0))
    s.changed(["a", "b"], 0.5)
    s.tick(2.0)  # flushed: pending while the start sync runs
    s.changed(["c", "d"], 2.5)
    s.tick(4.0)
    assert f"more than 3 paths are pending for {NODE}" in caplog.text


def test_true_has_nothing_to_say_about_a_big_batch(caplog):
    s = Scheduler(dataclasses.replace(config(True), max_pending=3, edelay=1.0))
    s.changed(["a", "b", "c", "d"], 1.5)
    assert "max_pending" not in caplog.text


@pytest.mark.parametrize("old, new, stopped", [
    (True, False, True), (True, "running", True), (True, "startup", True),
    ("startup", False, True), ("running", False, True), (False, True, False),
    (True, True, False), ("running", "running", False)])
def test_a_reload_that_narrows_the_policy_stops_the_runs_under_way(old, new, stopped):
    # review 17b: the run started under the old policy went on deleting after the reload
    from inosync.scheduler import SignalRun
    s = Scheduler(config(old))
    run(s.begin(0.0))
    actions = s.reloaded(config(new), 1.0)
    assert any(isinstance(a, SignalRun) and a.dest == NODE for a in actions) == stopped


@pytest.mark.parametrize("keep_gone", [False, True])
def test_a_gone_path_a_directory_exclude_would_protect_is_not_listed(tmp_path, keep_gone):
    # review 17b: rsync matches a missing argument as no directory: 'cache/' did not
    # protect the node's cache directory from --delete-missing-args
    from inosync.excludes import Excludes
    (tmp_path / "app" / "sub").mkdir(parents=True)
    ex = Excludes(("cache/",))
    listed = files_list({"app/cache", "cache", "app/sub", "app/sub/gone", "app/x"}, str(tmp_path),
                        ex, keep_gone=keep_gone)
    if keep_gone:  # nothing deletes app/cache; app/sub/gone stays listed below app/sub
        assert listed == ["app/sub", "app/sub/gone", "app/x"]
    else:  # app's deletion pass deletes a file app/cache, keeps the directory
        assert listed == ["app"]


# ---------------------------------------------- 'running': --force for what was seen deleted


def test_a_set_keeps_which_of_its_paths_were_directories_seen_deleted():
    s = PathSet()
    s.add("new.txt")
    s.add_deleted("gone")
    other = PathSet()
    other.add_deleted("also/gone")
    s.update(other)
    assert s.paths == {"new.txt", "gone", "also/gone"} and s.deleted == {"gone", "also/gone"}
    taken = s.take()
    assert taken.deleted == {"gone", "also/gone"} and not s.deleted
    s.requeue(taken)  # failed: back, still seen deleted
    assert s.deleted == {"gone", "also/gone"}
    s.set_full()
    assert not s.deleted


def one_local(policy) -> Scheduler:
    c = Config(path="/etc/inosync.conf", wpath="/srv/www", configured_wpath="/srv/www",
               rnodes=("/srv/node/",), edelay=2.0, retry_min=1.0, retry_max=8.0,
               delete=policy)
    s = Scheduler(c)
    s.begin(0.0)
    s.run_ended("/srv/node/", 0, "", 1.0, 1001.0, 0.5, "full sync", full=True)
    return s


def started(actions) -> list[PathSet]:
    return [a.batch for a in actions if isinstance(a, StartRun)]


def test_running_says_which_runs_may_take_a_directory_with_all_it_holds():
    """The batch of a run says whether a directory was seen deleted in it: only
    then does Daemon.start pass --force (deletepolicy), so a new file whose name
    the node holds as a directory of its own is refused, as plain rsync without
    --delete refuses it. One run per batch, as under every policy."""
    s = one_local("running")
    s.changed(["uploads"], 10.0)
    (run,) = started(s.tick(12.0))
    assert run.paths == {"uploads"} and not run.deleted
    s.run_ended("/srv/node/", 0, "", 12.5, 1012.5, 0.1, "1 path")
    s.changed(["uploads2", "old"], 20.0, deleted=["old"])
    (run,) = started(s.tick(22.0))
    assert run.paths == {"uploads2", "old"} and run.deleted == {"old"}


def test_running_retries_a_failed_run_with_its_directories_seen_deleted():
    s = one_local("running")
    s.changed(["uploads", "old"], 10.0, deleted=["old"])
    started(s.tick(12.0))
    s.run_ended("/srv/node/", 12, "", 12.5, 1012.5, 0.1, "2 paths")  # the link broke
    (again,) = started(s.tick(14.0))
    assert again.paths == {"uploads", "old"} and again.deleted == {"old"}


@pytest.mark.parametrize("policy", [True, "startup", False])
def test_other_policies_send_one_run(policy):
    s = one_local(policy)
    s.changed(["uploads", "old"], 10.0, deleted=["old"])
    (run,) = started(s.tick(12.0))
    assert run.paths == {"uploads", "old"}
