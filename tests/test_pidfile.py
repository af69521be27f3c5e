"""Which pidfile is held, and one daemon per pidfile: --pidfile, the config's
``pidfile``, the -d default; two daemons of one tree with the real command."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
from helpers import alive, inosync_argv, wait_converged, wait_until, write_config

from inosync.cli import parse_args
from inosync.pidfile import DEFAULT_PATH, choose_pidfile

# ---- which pidfile (unit)


def test_default_with_d_is_run_inosync_pid() -> None:
    assert DEFAULT_PATH == "/run/inosync.pid"
    assert choose_pidfile(None, None, daemonize=True) == "/run/inosync.pid"


def test_no_default_in_the_foreground() -> None:
    assert choose_pidfile(None, None, daemonize=False) is None


@pytest.mark.parametrize("daemonize", [True, False])
def test_option_beats_config_beats_default(daemonize: bool) -> None:
    assert choose_pidfile("/a/opt.pid", "/b/conf.pid", daemonize) == "/a/opt.pid"
    assert choose_pidfile(None, "/b/conf.pid", daemonize) == "/b/conf.pid"
    assert choose_pidfile("/a/opt.pid", None, daemonize) == "/a/opt.pid"


def test_pidfile_option_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # -d changes to / before the pidfile is removed
    assert parse_args(["--pidfile", "run/x.pid"]).pidfile == str(tmp_path / "run" / "x.pid")
    assert parse_args([]).pidfile is None


def test_empty_pidfile_option_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        parse_args(["--pidfile", ""])
    assert e.value.code == 2
    assert "--pidfile" in capsys.readouterr().err


# ---- real processes


def pid_in(path: Path) -> int:
    wait_until(lambda: path.exists() and path.read_text().strip(), 10, f"a pid in {path}")
    return int(path.read_text())


def stop_pid(pid: int) -> None:
    if alive(pid):
        os.kill(pid, signal.SIGTERM)
        try:
            wait_until(lambda: not alive(pid), 15, f"pid {pid} to stop")
        except AssertionError:
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def no_pidfile_config(tree: dict) -> Path:
    """A config with neither pidfile nor logfile."""
    d = tree["dir"]
    return write_config(d / "inosync.conf", wpath=str(tree["src"]),
                        rnodes=[str(n) for n in tree["nodes"]], edelay=0.2,
                        logfile=str(d / "inosync.log"))


@pytest.fixture
def pids() -> list[int]:
    started: list[int] = []
    yield started
    for pid in started:
        stop_pid(pid)


def start_d(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*inosync_argv(), "-c", str(config), "-d", *args],
                          capture_output=True, text=True, timeout=30)


@pytest.mark.slow
def test_second_daemon_on_same_pidfile_refused(no_pidfile_config: Path, tree: dict,
                                               pids: list[int]) -> None:
    pidfile = tree["dir"] / "run.pid"
    first = start_d(no_pidfile_config, "--pidfile", str(pidfile))
    assert first.returncode == 0, first.stderr
    pid = pid_in(pidfile)
    pids.append(pid)
    wait_converged(tree["src"], tree["nodes"])

    second = start_d(no_pidfile_config, "--pidfile", str(pidfile))
    assert second.returncode == 1
    assert second.stderr.count("\n") == 1, second.stderr  # one line, no traceback
    assert f"pidfile {pidfile} is held by running process {pid}" in second.stderr
    assert "--pidfile" in second.stderr  # what to do with several trees
    assert alive(pid) and pid_in(pidfile) == pid
    daemons = [p for p in os.listdir("/proc") if p.isdigit() and alive(int(p))
               and str(no_pidfile_config).encode() in _cmdline(p)]
    assert daemons == [str(pid)], "exactly one daemon for the tree"

    stop_pid(pid)
    assert not pidfile.exists(), "removed by the daemon on TERM"


def _cmdline(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


@pytest.mark.slow
def test_pidfile_option_overrides_config(tree: dict, pids: list[int]) -> None:
    d = tree["dir"]
    config = write_config(d / "inosync.conf", wpath=str(tree["src"]),
                          rnodes=[str(n) for n in tree["nodes"]], edelay=0.2,
                          pidfile=str(d / "config.pid"), logfile=str(d / "inosync.log"))
    done = start_d(config, "--pidfile", str(d / "option.pid"))
    assert done.returncode == 0, done.stderr
    pids.append(pid_in(d / "option.pid"))
    assert not (d / "config.pid").exists()


@pytest.mark.slow
def test_pidfile_option_in_the_foreground(no_pidfile_config: Path, tree: dict,
                                          run_inosync) -> None:
    pidfile = tree["dir"] / "fg.pid"
    d = run_inosync(no_pidfile_config, "--pidfile", str(pidfile))
    assert pid_in(pidfile) == d.proc.pid
    second = subprocess.run([*inosync_argv(), "-c", str(no_pidfile_config),
                             "--pidfile", str(pidfile)], capture_output=True, text=True,
                            timeout=30)
    assert second.returncode == 1 and "held by running process" in second.stderr
    assert d.stop() == 0
    assert not pidfile.exists()


@pytest.mark.slow
def test_pidfile_that_cannot_be_opened_is_a_usage_error(no_pidfile_config: Path,
                                                        tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "dir" / "x.pid"
    done = start_d(no_pidfile_config, "--pidfile", str(missing))
    assert done.returncode == 2  # the path is wrong: restarting cannot fix that
    assert f"cannot open pidfile {missing}: No such file or directory" in done.stderr


def test_pidfile_option_inside_wpath_refused(no_pidfile_config: Path, tree: dict) -> None:
    pidfile = tree["src"] / "inosync.pid"
    done = start_d(no_pidfile_config, "--pidfile", str(pidfile))
    assert done.returncode == 2
    assert f"--pidfile {pidfile} lies inside wpath" in done.stderr
    assert not pidfile.exists()
