"""metrics_file (issue 19.4) of a real daemon: read with Prometheus' own parser
and held against what the daemon says elsewhere (its statusfile, its inotify
watches in /proc); written often enough, and an idle daemon still sleeps."""

from __future__ import annotations

import json
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest
from helpers import inotify_watches, wait_converged, wait_until, write_config
from prometheus_client.parser import text_string_to_metric_families

from inosync import __version__

pytestmark = pytest.mark.slow  # end to end: real processes

POLL = "7"  # x86_64's poll(2), where the idle loop sleeps (see idle_timeout)


class Metrics:
    """One read of the file: values by name and labels (wpath left out)."""

    def __init__(self, path: Path) -> None:
        self.text = path.read_text()
        self.values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self.wpaths: set[str] = set()
        for family in text_string_to_metric_families(self.text):
            for s in family.samples:
                labels = dict(s.labels)
                self.wpaths.add(labels.pop("wpath"))
                self.values[(s.name, tuple(sorted(labels.items())))] = s.value

    def get(self, name: str, **labels: str) -> float | None:
        return self.values.get((name, tuple(sorted(labels.items()))))

    def node(self, name: str, node: Path, **labels: str) -> float | None:
        return self.get(f"inosync_node_{name}", node=str(node), **labels)


def read(path: Path) -> Metrics | None:
    try:
        return Metrics(path)
    except FileNotFoundError:
        return None


def when(path: Path, check) -> Metrics:
    """The first read of the file for which check(metrics) holds."""
    found: list[Metrics] = []

    def ok() -> bool:
        m = read(path)
        if m is not None and check(m):
            found.append(m)
            return True
        return False

    wait_until(ok, 20, f"metrics where {check.__doc__ or check}")
    return found[0]


def rows(status: Path) -> dict[str, dict]:
    return {r["node"]: r for r in json.loads(status.read_text())["nodes"]}


def test_metrics_follow_a_real_daemon(tree, run_inosync):
    src, good = tree["src"], tree["nodes"][0]
    broken = tree["dir"] / "broken"
    broken.write_text("a file where the node's directory should be: every run fails\n")
    textfile = tree["dir"] / "textfile"
    textfile.mkdir(mode=0o755)
    prom, status = textfile / "inosync.prom", tree["dir"] / "status.json"
    conf = write_config(tree["dir"] / "inosync.conf", wpath=str(src),
                        rnodes=[str(good), str(broken)], edelay=4.0, retry_min=0.5,
                        retry_max=1.0, statusfile=str(status), metrics_file=str(prom))
    d = run_inosync(conf)
    wait_converged(src, [good])
    d.wait_log("rsync failed")

    # The start: the good node got its full sync, the broken one failed.
    m = when(prom, lambda m: m.node("runs_total", good, kind="full") == 1
             and (m.node("failures_total", broken) or 0) >= 1)
    assert m.wpaths == {str(src)}
    assert m.get("inosync_build_info", version=__version__) == 1
    # src, docs, docs/old and the directories above src (watched for a move of wpath)
    assert m.get("inosync_watches") == inotify_watches(d.proc.pid) == 3 + len(src.parents)
    limit = int(Path("/proc/sys/fs/inotify/max_user_watches").read_text())
    assert m.get("inosync_watch_limit") == limit
    assert m.get("inosync_overflows_total") == 0
    assert (m.node("up", good), m.node("up", broken)) == (1, 0)
    assert (m.node("lag_seconds", good), m.node("pending_paths", good)) == (0, 0)
    assert m.node("full_sync_pending", broken) == 1
    assert m.node("failures_total", good) == 0
    assert m.node("runs_total", good, kind="list") == 0
    sent = m.node("bytes_sent_total", good)
    assert sent is not None and sent > sum(f.stat().st_size for f in src.rglob("*")
                                           if f.is_file())
    assert m.node("last_success_timestamp_seconds", good) == rows(status)[str(good)]["last_ok"]
    assert m.node("last_success_timestamp_seconds", broken) is None  # none yet
    mode = prom.stat().st_mode
    assert stat.S_IMODE(mode) == 0o644 and stat.S_ISREG(mode)
    assert list(textfile.iterdir()) == [prom]  # no temporary file left beside it

    # The broken node's lag grows while its retries fail: the file follows.
    lag = m.node("lag_seconds", broken)
    assert lag is not None and lag > 0
    when(prom, lambda m: m.node("lag_seconds", broken) > lag + 1)

    # Changes: pending (with a lag) during edelay, within a second; then sent.
    for name in ("n1", "n2", "n3"):
        (src / name).write_bytes(b"x" * 10_000)
    seen = when(prom, lambda m: m.node("pending_paths", good) == 3)  # within edelay
    assert 0 < seen.node("lag_seconds", good) < 10
    wait_converged(src, [good])
    m = when(prom, lambda m: m.node("pending_paths", good) == 0)
    assert (m.node("lag_seconds", good), m.node("runs_total", good, kind="list")) == (0, 1)
    assert m.node("bytes_sent_total", good) >= sent + 30_000
    assert m.node("pending_paths", broken) == 0 and m.node("full_sync_pending", broken) == 1

    # The broken node repaired: up, no lag; its failures stay counted.
    failed = m.node("failures_total", broken)
    broken.unlink()
    broken.mkdir()
    wait_converged(src, [good, broken])
    m = when(prom, lambda m: m.node("up", broken) == 1 and m.node("lag_seconds", broken) == 0)
    assert m.node("failures_total", broken) >= failed
    assert m.node("full_sync_pending", broken) == 0
    assert m.node("last_success_timestamp_seconds", broken) is not None

    # At the stop, the last write holds what the statusfile says of the same state.
    assert d.stop() == 0
    final, state = Metrics(prom), rows(status)
    for node in (good, broken):
        row = state[str(node)]
        assert final.node("runs_total", node, kind="full") + \
            final.node("runs_total", node, kind="list") == row["runs"]
        assert final.node("last_success_timestamp_seconds", node) == row["last_ok"]
        assert final.node("pending_paths", node) == row["pending_paths"] == 0
        assert final.node("up", node) == 1 and row["failures"] == 0
    assert final.node("failures_total", broken) == m.node("failures_total", broken)


def idle_timeout(pid: int) -> int | None:
    """The timeout (ms) of the poll(2) the daemon sleeps in, if it sleeps in one."""
    fields = Path(f"/proc/{pid}/syscall").read_text().split()
    if not fields or fields[0] != POLL:
        return None
    return int(fields[3], 16) if int(fields[3], 16) < 1 << 31 else -1  # -1: none


@pytest.mark.parametrize("with_metrics", [True, False])
def test_an_idle_daemon_wakes_for_the_metrics_only_when_it_writes_them(tree, run_inosync,
                                                                         with_metrics):
    src, node = tree["src"], tree["nodes"][0]
    prom = tree["dir"] / "inosync.prom"
    settings = {"metrics_file": str(prom)} if with_metrics else {}
    conf = write_config(tree["dir"] / "inosync.conf", wpath=str(src), rnodes=[str(node)],
                        edelay=0.2, **settings)
    d = run_inosync(conf)
    d.wait_log("synced full sync")
    # Asleep once the last write's second is over (the start's changes made it due).
    timeout = wait_until(lambda: (idle_timeout(d.proc.pid) or 0) > 1_100 and
                         idle_timeout(d.proc.pid), 10, "the daemon asleep in poll")
    if not with_metrics:
        # Nothing but the checkpoints' minute (checkpoint.SAVE_EVERY) wakes it.
        print("idle poll timeout without metrics_file:", timeout)
        assert timeout == -1 or timeout > 15_000, timeout
        assert not prom.exists()
        return
    print("idle poll timeout with metrics_file:", timeout)
    assert 0 < timeout <= 15_001, timeout
    written = prom.stat().st_mtime_ns
    time.sleep(16)  # idle: nothing happens but the 15 s refresh
    assert prom.stat().st_mtime_ns > written
    assert Metrics(prom).node("lag_seconds", node) == 0


def test_pretend_writes_no_metrics(tree, run_inosync):
    src, node = tree["src"], tree["nodes"][0]
    prom = tree["dir"] / "inosync.prom"
    conf = write_config(tree["dir"] / "inosync.conf", wpath=str(src), rnodes=[str(node)],
                        edelay=0.2, metrics_file=str(prom))
    d = run_inosync(conf, "-p")
    d.wait_log("would run")
    (src / "new").write_text("x")
    d.wait_log("would run", count=2)
    d.signal(signal.SIGHUP)  # the reloaded config names it again: still nothing written
    d.wait_log("reloaded")
    (src / "newer").write_text("x")
    d.wait_log("would run", count=3)
    assert d.stop() == 0
    assert not prom.exists() and not list(tree["dir"].glob(".inosync.prom.*"))


def test_a_reload_that_moves_metrics_file_removes_the_old_one(tree, run_inosync):
    src, node = tree["src"], tree["nodes"][0]
    first, second = tree["dir"] / "a.prom", tree["dir"] / "b.prom"
    conf = write_config(tree["dir"] / "inosync.conf", wpath=str(src), rnodes=[str(node)],
                        edelay=0.2, metrics_file=str(first))
    d = run_inosync(conf)
    wait_until(first.exists, 10, "the first metrics_file")
    conf.write_text(conf.read_text().replace(str(first), str(second)))
    d.signal(signal.SIGHUP)
    d.wait_log("reloaded")
    wait_until(lambda: second.exists() and not first.exists(), 5, "the file moved")
    assert Metrics(second).get("inosync_watches") == inotify_watches(d.proc.pid)
    conf.write_text(conf.read_text().replace(f"metrics_file = {str(second)!r}", ""))
    d.signal(signal.SIGHUP)
    d.wait_log("reloaded", count=2)
    wait_until(lambda: not second.exists(), 5, "the file removed")
    assert d.stop() == 0


def test_a_stream_of_changes_rewrites_the_file_about_once_a_second(tree, run_inosync):
    import pyinotify

    src, node = tree["src"], tree["nodes"][0]
    folder = tree["dir"] / "textfile"
    folder.mkdir(mode=0o755)
    prom = folder / "inosync.prom"
    conf = write_config(tree["dir"] / "inosync.conf", wpath=str(src), rnodes=[str(node)],
                        edelay=30.0, metrics_file=str(prom))  # no run in the window
    d = run_inosync(conf)
    d.wait_log("synced full sync")
    when(prom, lambda m: m.node("runs_total", node, kind="full") == 1)
    renames: list[float] = []

    class Renamed(pyinotify.ProcessEvent):
        def process_IN_MOVED_TO(self, event) -> None:
            if event.name == prom.name:
                renames.append(time.monotonic())

    wm = pyinotify.WatchManager()
    wm.add_watch(str(folder), pyinotify.IN_MOVED_TO)
    notifier = pyinotify.Notifier(wm, Renamed(), timeout=50)
    try:
        started = time.monotonic()
        count = 0
        while time.monotonic() - started < 4.0:  # a change every 20 ms
            (src / f"f{count}").write_text("x")
            count += 1
            if notifier.check_events(timeout=20):
                notifier.read_events()
                notifier.process_events()
        took = time.monotonic() - started
    finally:
        notifier.stop()
    assert count > 100
    # Not one write per change, nor only the 15 s refresh: about one a second.
    assert 3 <= len(renames) <= took + 1, (len(renames), took)
    # A rename is seen when this loop next looks (up to a write and a 20 ms
    # check later), so one seen late shortens the next gap: 0.98 s was seen
    # under load. Without the limit the gaps are a few ms (254 writes).
    assert all(b - a >= 0.9 for a, b in zip(renames, renames[1:])), renames
    m = when(prom, lambda m: m.node("pending_paths", node) == count)
    assert m.node("lag_seconds", node) >= took - 1
    assert d.stop() == 0


def test_an_ssh_node_and_a_hostile_node_name(tree, run_inosync, sshd, tmp_path):
    """Bytes counted over ssh (rsync's summary comes from the sending side, here);
    a local node whose name holds a quote and a backslash read back whole."""
    src = tree["src"]
    remote = tmp_path / "remote"
    remote.mkdir()
    odd = tmp_path / 'we"ird\\node'
    odd.mkdir()
    ssh_node = f"root@127.0.0.1:{remote}"
    prom = tmp_path / "inosync.prom"
    conf = write_config(tmp_path / "inosync.conf", wpath=str(src), edelay=0.2,
                        rnodes=[ssh_node, str(odd)], ssh=sshd.ssh_command(),
                        metrics_file=str(prom))
    d = run_inosync(conf)
    wait_converged(src, [remote, odd])
    (src / "big").write_bytes(bytes(range(256)) * 400)  # 102,400 bytes, little to squeeze
    wait_converged(src, [remote, odd])

    def sent_it(m: Metrics) -> bool:
        return all((m.get("inosync_node_bytes_sent_total", node=n) or 0) > 100_000
                   for n in (ssh_node, str(odd)))

    m = when(prom, sent_it)
    assert {dict(k[1])["node"] for k in m.values if k[0] == "inosync_node_up"} == \
        {ssh_node, str(odd)}
    assert m.get("inosync_node_runs_total", node=ssh_node, kind="list") >= 1
    assert d.stop() == 0


def test_a_write_that_fails_is_said_once_and_its_end_too(tree, run_inosync):
    src, node = tree["src"], tree["nodes"][0]
    folder = tree["dir"] / "textfile"
    folder.mkdir(mode=0o755)
    prom = folder / "inosync.prom"
    conf = write_config(tree["dir"] / "inosync.conf", wpath=str(src), rnodes=[str(node)],
                        edelay=0.2, metrics_file=str(prom))
    d = run_inosync(conf)
    wait_until(prom.exists, 10, "the metrics_file")
    prom.unlink()
    folder.rmdir()  # taken away while the daemon runs
    for name in ("a", "b", "c"):  # three changes, three writes due a second apart
        (src / name).write_text(name)
        time.sleep(1.2)
    d.wait_log("cannot write metrics_file")
    assert d.log().count(f"cannot write metrics_file {prom}: No such file or directory") == 1
    folder.mkdir(mode=0o755)
    (src / "d").write_text("d")
    d.wait_log(f"metrics_file {prom} written again")
    assert Metrics(prom).node("pending_paths", node) is not None
    assert d.stop() == 0


@pytest.mark.skipif(not shutil.which("strace"), reason="needs strace")
def test_metrics_writes_never_wait_for_the_disk(tree, run_inosync, tmp_path):
    """The file is written up to once a second from the loop: an fsync each time
    stalled every event and run behind a slow disk, for a file nobody needs
    after a crash (the daemon writes it anew at its start). Atomic (a rename)
    is all node_exporter needs. Seen with strace: no fsync of it."""
    src, node = tree["src"], tree["nodes"][0]
    prom = tree["dir"] / "inosync.prom"
    conf = write_config(tree["dir"] / "inosync.conf", wpath=str(src), rnodes=[str(node)],
                        edelay=0.2, metrics_file=str(prom))
    d = run_inosync(conf)
    d.wait_log("synced full sync")
    trace = tmp_path / "strace.out"
    tracer = subprocess.Popen(["strace", "-f", "-qq", "-y", "-e", "trace=fsync,fdatasync",
                               "-o", str(trace), "-p", str(d.proc.pid)])
    try:
        wait_until(lambda: trace.exists(), 10, "strace attached")
        time.sleep(0.5)
        before = prom.stat().st_mtime_ns
        (src / "new.txt").write_text("new\n")
        wait_converged(src, [node])
        wait_until(lambda: prom.stat().st_mtime_ns != before, 10, "metrics written again")
    finally:
        tracer.terminate()
        tracer.wait(10)
    d.stop()
    synced = [line for line in trace.read_text().splitlines() if "inosync.prom" in line]
    assert not synced, synced
