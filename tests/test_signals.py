"""Signals from the first instant, relative paths behind -d, the statusfile's temporary file.

All with the real command: a config file that pauses while it is read holds
the daemon in its start-up, so signals can be sent exactly there.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from helpers import inosync_argv, wait_converged, wait_until, write_config
from test_daemonize import alive

pytestmark = pytest.mark.slow  # end to end: real processes

SLOW_START = """
import os, time
if not os.path.exists({marker!r}):
    open({marker!r}, "w").close()
    time.sleep({pause})
"""


def slow_config(tree: dict, pause: float, **settings: object) -> tuple[Path, Path]:
    """A config that, the first time it is read, pauses for `pause` seconds
    after creating a marker file (so a test knows start-up is under way)."""
    conf, marker = tree["dir"] / "slow.conf", tree["dir"] / "reading-config"
    write_config(conf, wpath=str(tree["src"]), rnodes=[str(n) for n in tree["nodes"]],
                 edelay=0.2, **settings)
    conf.write_text(conf.read_text() + SLOW_START.format(marker=str(marker), pause=pause))
    return conf, marker


def test_hup_and_usr1_during_start_up_are_handled_later(tree, run_inosync):
    conf, marker = slow_config(tree, 2)
    d = run_inosync(conf)
    wait_until(marker.exists, 20, "start-up to read the config")
    d.signal(signal.SIGHUP)
    d.signal(signal.SIGUSR1)
    time.sleep(0.3)
    assert d.proc.poll() is None, f"killed by a signal during start-up:\n{d.log()}"
    d.wait_log("status: ")
    d.wait_log("reloaded")
    wait_converged(tree["src"], tree["nodes"])
    assert d.stop() == 0


def test_term_during_start_up_stops_at_once_with_a_log_line(tree, run_inosync):
    conf, marker = slow_config(tree, 30)
    d = run_inosync(conf)
    wait_until(marker.exists, 20, "start-up to read the config")
    d.signal(signal.SIGTERM)
    assert d.proc.wait(10) == 0
    assert "stopped (SIGTERM) during start-up" in d.log()
    assert all(not os.listdir(n) for n in tree["nodes"])


def test_term_is_never_lost_behind_many_hups(tree, run_inosync):
    conf, marker = slow_config(tree, 0)
    d = run_inosync(conf, "-v")
    wait_converged(tree["src"], tree["nodes"])
    # Every reload now takes 1 s: HUPs pile up while the first one runs.
    marker.unlink()
    conf.write_text(conf.read_text().replace("time.sleep(0)", "time.sleep(1)")
                    .replace("if not os.path.exists", "if True or os.path.exists"))
    for _ in range(15):
        d.signal(signal.SIGHUP)
        time.sleep(0.01)
    d.signal(signal.SIGTERM)
    # One merged reload (or two) of 1 s each, then the stop.
    assert d.proc.wait(15) == 0, d.log()
    assert d.log().count("reloading") <= 3


def test_relative_paths_hold_behind_d_and_across_reload(tmp_path, tree):
    node = f"inosync-test-node-{uuid.uuid4().hex[:8]}"  # relative: must not land in /
    conf = tmp_path / "rel.conf"
    conf.write_text(f'wpath = "src"\nrnodes = [{node!r}]\nedelay = 0.2\n'
                    'pidfile = "run/inosync.pid"\nlogfile = "inosync.log"\n'
                    'statusfile = "status.json"\nstate_dir = "state"\n')
    conf.chmod(0o644)
    (tmp_path / "run").mkdir()
    done = subprocess.run([*inosync_argv(), "-c", "rel.conf", "-d"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    pidfile = tmp_path / "run" / "inosync.pid"
    wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), 10, "pidfile")
    pid = int(pidfile.read_text())
    log = tmp_path / "inosync.log"
    try:
        wait_converged(tree["src"], [tmp_path / node])
        assert not Path("/", node).exists()
        os.kill(pid, signal.SIGHUP)
        wait_until(lambda: "reloaded" in log.read_text() or "reload failed" in log.read_text(),
                   20, "the reload")
        assert "reload failed" not in log.read_text(), log.read_text()
        (tree["src"] / "after-reload.txt").write_text("x\n")
        wait_converged(tree["src"], [tmp_path / node])
        assert not Path("/", node).exists()
        assert json.loads((tmp_path / "status.json").read_text())["nodes"]
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGTERM)
            wait_until(lambda: not alive(pid), 30, "daemon to exit")
        if Path("/", node).exists():
            subprocess.run(["rm", "-rf", "--one-file-system", f"/{node}"], check=False)


def test_statusfile_temporary_name_is_never_followed(tree, run_inosync, tmp_path):
    status = tmp_path / "state" / "status.json"
    status.parent.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    conf = write_config(tmp_path / "inosync.conf", wpath=str(tree["src"]),
                        rnodes=[str(n) for n in tree["nodes"]], edelay=0.2,
                        statusfile=str(status))
    d = run_inosync(conf)
    wait_converged(tree["src"], tree["nodes"])
    wait_until(status.exists, 10, "statusfile")
    # Whatever temporary name the daemon might pick beside the statusfile,
    # plant a symlink to the victim under the predictable ones.
    for name in (f"status.json.{d.proc.pid}.tmp", "status.json.tmp"):
        (status.parent / name).symlink_to(victim)
    d.signal(signal.SIGUSR1)
    d.wait_log("status: ")
    mtime = status.stat().st_mtime
    wait_until(lambda: status.stat().st_mtime != mtime or json.loads(status.read_text()), 5)
    assert victim.read_text() == "precious\n"
    assert json.loads(status.read_text())["pid"] == d.proc.pid
    assert not status.is_symlink()
    assert d.stop() == 0


def test_config_replaced_by_a_fifo_then_hup_keeps_running(tree, run_inosync):
    conf = write_config(tree["dir"] / "inosync.conf", wpath=str(tree["src"]),
                        rnodes=[str(n) for n in tree["nodes"]], edelay=0.2)
    d = run_inosync(conf)
    wait_converged(tree["src"], tree["nodes"])
    conf.unlink()
    os.mkfifo(conf, 0o644)  # a reload must not block on it
    d.signal(signal.SIGHUP)
    d.wait_log("reload failed, keeping the old configuration.*not a regular file")
    (tree["src"] / "after.txt").write_text("still syncing\n")
    wait_converged(tree["src"], tree["nodes"])
    assert d.stop(timeout=10) == 0
