"""metrics_file (issue 19.4): the text node_exporter's textfile collector reads,
made from plain values and read back with Prometheus' own parser; the counts
the scheduler keeps for it; when the daemon writes it; its setting's checks."""

from __future__ import annotations

import dataclasses
import os
import subprocess
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from inosync import progress
from inosync.config import Config, ConfigError, load
from inosync.metrics import NodeValues, Refresh, Snapshot, escape, render
from inosync.rsync import Options, batch_argv, full_argv
from inosync.scheduler import RootSame, Scheduler, StartRun

HOSTILE = 'we"ird\\node\nname:/x'


def node(name: str = "web1:/srv/www", **changes: object) -> NodeValues:
    base = NodeValues(name, pending_paths=3, pending_full=False, oldest_change=90.0,
                      last_success=1_764_570_000.25, failures=2, list_runs=5, full_runs=1,
                      bytes_sent=12_345, up=True)
    return dataclasses.replace(base, **changes)


def snapshot(*nodes: NodeValues) -> Snapshot:
    return Snapshot("1.2.3", "/srv/www", 42, 8192, 1, nodes or (node(),))


def parsed(text: str) -> dict[str, object]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample: (name, sorted labels) -> value."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def value(text: str, name: str, **labels: str) -> float:
    labels = {"wpath": "/srv/www", **labels}
    return samples(text)[(name, tuple(sorted(labels.items())))]


# ---------------------------------------------------------------- rendering


def test_every_metric_has_help_type_and_a_conventional_name():
    text = render(snapshot(), now=100.0)
    families = parsed(text)
    kinds = {name: f.type for name, f in families.items()}
    assert kinds == {
        "inosync_build_info": "gauge", "inosync_watches": "gauge",
        "inosync_watch_limit": "gauge", "inosync_overflows": "counter",
        "inosync_node_up": "gauge", "inosync_node_pending_paths": "gauge",
        "inosync_node_full_sync_pending": "gauge", "inosync_node_lag_seconds": "gauge",
        "inosync_node_last_success_timestamp_seconds": "gauge",
        "inosync_node_failures": "counter", "inosync_node_runs": "counter",
        "inosync_node_bytes_sent": "counter",
    }
    assert all(f.documentation for f in families.values())
    # Counters are written with _total (the parser strips it from the family name).
    for line in text.splitlines():
        if line.startswith("# TYPE") and line.endswith(" counter"):
            assert line.split()[2].endswith("_total"), line
    assert text.endswith("\n") and "\n\n" not in text


def test_values_as_given():
    text = render(snapshot(), now=100.0)
    n = {"node": "web1:/srv/www"}
    assert value(text, "inosync_build_info", version="1.2.3") == 1
    assert value(text, "inosync_watches") == 42
    assert value(text, "inosync_watch_limit") == 8192
    assert value(text, "inosync_overflows_total") == 1
    assert value(text, "inosync_node_up", **n) == 1
    assert value(text, "inosync_node_pending_paths", **n) == 3
    assert value(text, "inosync_node_full_sync_pending", **n) == 0
    assert value(text, "inosync_node_lag_seconds", **n) == 10.0  # now 100, seen at 90
    assert value(text, "inosync_node_last_success_timestamp_seconds", **n) == 1_764_570_000.25
    assert value(text, "inosync_node_failures_total", **n) == 2
    assert value(text, "inosync_node_runs_total", kind="list", **n) == 5
    assert value(text, "inosync_node_runs_total", kind="full", **n) == 1
    assert value(text, "inosync_node_bytes_sent_total", **n) == 12_345


def test_lag_is_zero_without_a_pending_change_and_never_negative():
    text = render(snapshot(node(oldest_change=None), node("b:/x", oldest_change=150.0)), 100.0)
    assert value(text, "inosync_node_lag_seconds", node="web1:/srv/www") == 0
    assert value(text, "inosync_node_lag_seconds", node="b:/x") == 0


def test_no_last_success_before_the_first_and_no_watch_limit_when_unknown():
    snap = dataclasses.replace(snapshot(node(last_success=None, up=False)), watch_limit=None)
    text = render(snap, 100.0)
    assert "inosync_node_last_success_timestamp_seconds{" not in text
    assert "inosync_watch_limit" not in text
    assert value(text, "inosync_node_up", node="web1:/srv/www") == 0


def test_hostile_node_names_are_escaped_and_read_back_whole():
    text = render(snapshot(node(HOSTILE), node("plain:/y")), 100.0)
    assert 'node="we\\"ird\\\\node\\nname:/x"' in text
    assert len(text.splitlines()) == len(render(snapshot(node("a"), node("b")), 0).splitlines())
    nodes = {dict(k[1])["node"] for k in samples(text) if k[0] == "inosync_node_up"}
    assert nodes == {HOSTILE, "plain:/y"}
    assert escape('a"b\\c\nd') == 'a\\"b\\\\c\\nd'


def test_wpath_label_is_escaped_too():
    snap = dataclasses.replace(snapshot(), wpath='/srv/"w"\\x')
    families = parsed(render(snap, 0.0))
    assert families["inosync_watches"].samples[0].labels == {"wpath": '/srv/"w"\\x'}


def test_nodes_of_a_family_stay_together():
    """The format wants every sample of a family after its TYPE line, none elsewhere."""
    text = render(snapshot(node("a"), node("b"), node("c")), 0.0)
    names = [line.split("{")[0] for line in text.splitlines() if not line.startswith("#")]
    assert names == sorted(names, key=names.index)  # no name comes back after another
    assert names.count("inosync_node_up") == 3


# ---------------------------------------------------------------- when to write


def test_refresh_writes_at_once_then_at_most_every_second_at_least_every_15():
    r = Refresh()
    assert r.due(0.0) and r.next_write() is None
    r.wrote(0.0)
    assert r.next_write() == 15.0 and not r.due(14.9) and r.due(15.0)
    r.changed()
    assert r.next_write() == 1.0 and not r.due(0.5) and r.due(1.0)
    r.wrote(1.0)
    assert r.next_write() == 16.0


# ---------------------------------------------------------------- the scheduler's counts

A, B = "a:/www/", "b:/www/"


def scheduler() -> Scheduler:
    return Scheduler(Config(path="/etc/inosync.conf", wpath="/srv/www",
                            configured_wpath="/srv/www", rnodes=(A, B), edelay=2.0,
                            retry_min=1.0, retry_max=8.0))


def by_node(s: Scheduler) -> dict[str, NodeValues]:
    return {v.node: v for v in s.metric_values()}


def end(s: Scheduler, dest: str, rc: int, now: float, full: bool = False,
        sent: int | None = None) -> list:
    return s.run_ended(dest, rc, "", now, wall=1000.0 + now, took=0.5, what="x",
                       full=full, sent=sent)


def test_counts_lag_and_up_through_a_story():
    s = scheduler()
    s.begin(0.0)  # the start's full syncs: the nodes' state is not known
    v = by_node(s)
    assert v[A].pending_full and v[A].oldest_change == 0.0 and v[A].up
    end(s, A, 0, 1.0, full=True, sent=500)
    end(s, B, 10, 1.0, full=True)  # connection refused: no summary
    v = by_node(s)
    assert (v[A].full_runs, v[A].bytes_sent, v[A].last_success, v[A].oldest_change) == \
        (1, 500, 1001.0, None)
    assert (v[B].full_runs, v[B].failures, v[B].up, v[B].last_success) == (1, 1, False, None)
    assert v[B].oldest_change == 0.0  # still not on B: its lag goes on growing

    s.changed(["x", "y"], 10.0)  # collected: pending for both during edelay
    v = by_node(s)
    assert (v[A].pending_paths, v[A].oldest_change) == (2, 10.0)
    runs = {a.dest: a for a in s.tick(12.0) if isinstance(a, StartRun)}
    assert set(runs) == {A, B}  # B's retry is due too
    s.changed(["z"], 12.5)  # while A runs
    end(s, A, 0, 13.0, sent=70)
    v = by_node(s)
    assert (v[A].list_runs, v[A].bytes_sent) == (1, 570)
    assert (v[A].pending_paths, v[A].oldest_change) == (1, 12.5)  # z, seen later
    end(s, B, 0, 13.0, full=True, sent=900)  # B recovers
    v = by_node(s)
    assert (v[B].up, v[B].failures, v[B].full_runs) == (True, 1, 2)  # a counter stays
    s.tick(14.5)
    end(s, A, 0, 15.0)
    end(s, B, 0, 15.0)
    assert all(n.oldest_change is None and n.pending_paths == 0 for n in s.metric_values())


def test_pending_paths_count_each_path_once_across_queued_in_flight_and_collected():
    s = scheduler()
    s.begin(0.0)
    end(s, A, 0, 1.0, full=True)
    end(s, B, 0, 1.0, full=True)
    s.changed(["x", "y"], 10.0)
    s.tick(12.0)  # in flight on both
    s.changed(["y", "z"], 12.5)
    end(s, A, 10, 13.0)  # A failed: x, y queued again; y, z collected
    v = by_node(s)
    assert (v[A].pending_paths, v[A].oldest_change) == (3, 10.0)
    assert (v[B].pending_paths, v[B].oldest_change) == (3, 10.0)  # x, y in flight
    s.overflowed(14.0)
    s.root_checked(RootSame(), 14.0)  # no read known complete: the whole tree, to both
    v = by_node(s)
    assert all(n.pending_full and n.pending_paths == 0 for n in v.values())
    assert v[A].oldest_change == 10.0 and v[B].oldest_change == 10.0  # still the oldest


def test_a_run_stopped_by_a_reload_counts_as_a_run_not_a_failure():
    s = scheduler()
    s.begin(0.0)
    s.stopped_by_us.add(A)
    end(s, A, -15, 1.0, full=True)
    v = by_node(s)[A]
    assert (v.full_runs, v.failures, v.up, v.pending_full) == (1, 0, True, True)


def test_pretended_runs_count_nothing():
    s = scheduler()
    s.begin(0.0)
    s.run_ended(A, 0, "", 1.0, 1.0, 0.0, "x", pretended=True, full=True, sent=5)
    v = by_node(s)[A]
    assert (v.full_runs, v.list_runs, v.bytes_sent) == (0, 0, 0)


def test_overflows_are_counted():
    s = scheduler()
    s.begin(0.0)
    s.overflowed(5.0)
    s.overflowed(6.0)
    assert s.overflows == 2


# ---------------------------------------------------------------- rsync's summary


def rsync_output(tmp_path: Path, *extra: str) -> bytes:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir(exist_ok=True)
    (src / "f").write_bytes(os.urandom(200_000))
    argv = full_argv(Options(rsync="rsync", stats=True, extra=extra), str(src), str(dst))
    done = subprocess.run(argv, capture_output=True, timeout=30, check=True)
    return done.stdout


@pytest.mark.parametrize("extra", [(), ("--stats",), ("-v",), ("-i",), ("-h",)])
def test_the_bytes_rsync_says_it_sent_are_read(tmp_path, extra):
    sent = progress.sent(rsync_output(tmp_path, *extra))
    assert sent is not None and 200_000 <= sent < 201_000 * (1.01 if extra == ("-h",) else 1)


def test_rsync_args_quiet_wins_over_our_stats(tmp_path):
    """Ours go before rsync_args: -q (or --info=stats0) there decides."""
    assert progress.sent(rsync_output(tmp_path, "-q")) is None
    assert progress.sent(rsync_output(tmp_path, "--info=stats0")) is None


def test_stats_only_when_asked():
    argv = batch_argv(Options(extra=("-q",)), "/w", "/n", "/list")
    assert "--info=stats1" not in argv
    argv = batch_argv(Options(extra=("-q",), stats=True), "/w", "/n", "/list")
    assert argv.index("--info=stats1") < argv.index("-q")


def test_progress_records_are_not_taken_for_the_summary():
    tail = (b"  1,000 100%  1.00MB/s  0:00:00 (xfr#1, to-chk=0/2)\r\n"
            b"\nsent 1,234 bytes  received 35 bytes  2,538.00 bytes/sec\n"
            b"total size is 1,000  speedup is 0.79\n")
    assert progress.sent(tail) == 1234
    assert progress.sent(b"sent 1.50M bytes  received 38 bytes  3.00M bytes/sec\n") == 1_500_000
    assert progress.sent(b"rsync error: error in socket IO (code 10)\n") is None


# ---------------------------------------------------------------- the setting


@pytest.fixture
def wdir(tmp_path: Path) -> Path:
    d = tmp_path / "www"
    d.mkdir()
    (d / "index.html").write_text("hi\n")
    return d


def write(tmp_path: Path, wdir: Path, *lines: str) -> Path:
    conf = tmp_path / "inosync.conf"
    conf.write_text("\n".join([f"wpath = {str(wdir)!r}", 'rnodes = ["h:/srv/www"]',
                               f"state_dir = {str(tmp_path / 'state')!r}", *lines]) + "\n")
    conf.chmod(0o644)
    return conf


def error_of(conf: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load(str(conf))
    message = str(info.value)
    assert "\n" not in message
    return message


def test_metrics_file_is_off_by_default_and_relative_to_the_start_directory(tmp_path, wdir):
    assert load(str(write(tmp_path, wdir))).metrics_file is None
    conf = write(tmp_path, wdir, 'metrics_file = "textfile/inosync.prom"')
    config = load("inosync.conf", base_dir=str(tmp_path))
    assert config.metrics_file == str(tmp_path / "textfile" / "inosync.prom")
    assert conf.exists()


def test_metrics_file_must_end_in_prom(tmp_path, wdir):
    conf = write(tmp_path, wdir, f"metrics_file = {str(tmp_path / 'inosync.txt')!r}")
    assert error_of(conf) == (
        f"{conf}:4: metrics_file {tmp_path / 'inosync.txt'} must end in .prom: "
        "node_exporter's textfile collector reads only *.prom files")


@pytest.mark.parametrize("bad", ["''", "5", "['a.prom']"])
def test_metrics_file_of_the_wrong_type(tmp_path, wdir, bad):
    conf = write(tmp_path, wdir, f"metrics_file = {bad}")
    assert error_of(conf).startswith(f"{conf}:4: metrics_file must be a non-empty string")


@pytest.mark.skipif(os.geteuid() != 0, reason="the directory is root's only to root")
def test_metrics_file_in_a_directory_others_may_write_is_refused(tmp_path, wdir):
    shared = tmp_path / "textfile"
    shared.mkdir()
    shared.chmod(0o775)  # as a collector directory given to a group
    conf = write(tmp_path, wdir, f"metrics_file = {str(shared / 'inosync.prom')!r}")
    assert error_of(conf) == (
        f"{conf}:4: metrics_file {shared / 'inosync.prom'}: directory {shared} is writable "
        "by group or others (owner uid 0, mode 0775); anyone who can write there could "
        f"replace what root writes; fix with: chmod go-w {shared}, or move the file to a "
        "directory only root can write (such as a new /var/log/inosync)")


def test_metrics_file_that_is_a_symlink_is_refused(tmp_path, wdir):
    victim = tmp_path / "victim.prom"
    victim.write_text("precious\n")
    link = tmp_path / "inosync.prom"
    link.symlink_to(victim)
    conf = write(tmp_path, wdir, f"metrics_file = {str(link)!r}")
    assert error_of(conf) == (
        f"{conf}:4: metrics_file {link}: {link} is a symlink; inosync does not follow one to "
        f"a file it writes; fix with: name the file itself ({victim})")


def test_metrics_file_inside_wpath_is_refused(tmp_path, wdir):
    conf = write(tmp_path, wdir, f"metrics_file = {str(wdir / 'inosync.prom')!r}")
    message = error_of(conf)
    assert message.startswith(f"{conf}:4: metrics_file {wdir / 'inosync.prom'} lies inside "
                              f"wpath {wdir}")


def test_check_says_when_its_directory_is_missing(tmp_path, wdir):
    from inosync.check import preflight

    missing = tmp_path / "no" / "inosync.prom"
    conf = write(tmp_path, wdir, f"metrics_file = {str(missing)!r}")
    assert preflight(load(str(conf))) == (
        f"{conf}:4: metrics_file {missing}: its directory {missing.parent} does not exist; "
        f"create it (mkdir -p {missing.parent}) or set metrics_file elsewhere")


def test_check_shows_the_stats_option_runs_get_with_metrics_file(tmp_path, wdir):
    from inosync.check import summary

    off = load(str(write(tmp_path, wdir)))
    on = load(str(write(tmp_path, wdir, f"metrics_file = {str(tmp_path / 'i.prom')!r}")))
    assert not any("--info=stats1" in line for line in summary(off))
    assert any("--info=stats1" in line and line.startswith("  ") for line in summary(on))
    assert f"metrics_file: {tmp_path / 'i.prom'}" in summary(on)


def test_a_bad_metrics_file_is_one_line_and_exit_2(tmp_path, wdir):
    import sys

    conf = write(tmp_path, wdir, f"metrics_file = {str(tmp_path / 'metrics.json')!r}")
    done = subprocess.run([sys.executable, "-m", "inosync", "-c", str(conf), "--check"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"inosync: {conf}:4: metrics_file {tmp_path / 'metrics.json'} must end in .prom: "
        "node_exporter's textfile collector reads only *.prom files"]
