"""contrib/: the systemd unit and the SysV init script.

The init script is checked for syntax by every shell we have, then driven
through start/status/reload/stop against the real `inosync` command. The unit
is parsed here and, where systemd-analyze can run, verified by systemd itself.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import alive

pytestmark = pytest.mark.slow  # end to end: real processes

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "contrib" / "inosync.service"
TEMPLATE = ROOT / "contrib" / "inosync@.service"
UNITS = {"inosync.service": "/etc/inosync.conf", "inosync@.service": "/etc/inosync/%i.conf"}
INIT = ROOT / "contrib" / "inosync.init"


# ---- helpers


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.02
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)


def inosync_program() -> str | None:
    """The installed `inosync` console script, preferably the one of this interpreter."""
    beside = Path(sys.executable).parent / "inosync"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("inosync")


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """systemd unit syntax, enough for our file: sections, repeated keys, comments."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"line {number} is outside any section: {raw!r}"
        assert "=" in line, f"line {number} is not key=value: {raw!r}"
        assert not line.endswith("\\"), f"line {number}: continuation lines not expected"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


# ---- the init script: syntax


def test_init_script_is_executable() -> None:
    assert os.access(INIT, os.X_OK), f"{INIT} must be executable (chmod 755)"
    assert INIT.read_text().startswith("#!/bin/sh\n")


@pytest.mark.parametrize("shell", ["sh", "dash", "bash"])
def test_init_script_syntax(shell: str) -> None:
    path = shutil.which(shell)
    if path is None:
        pytest.skip(f"{shell} is not installed")
    argv = [path, "--posix", "-n", str(INIT)] if shell == "bash" else [path, "-n", str(INIT)]
    result = subprocess.run(argv, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_init_script_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (optional)")
    result = subprocess.run([shellcheck, "-s", "sh", str(INIT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_init_script_checkbashisms() -> None:
    checkbashisms = shutil.which("checkbashisms")
    if checkbashisms is None:
        pytest.skip("checkbashisms is not installed (optional, in devscripts)")
    result = subprocess.run([checkbashisms, str(INIT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_init_script_lsb_header() -> None:
    text = INIT.read_text()
    header = re.search(r"^### BEGIN INIT INFO\n(.*?)^### END INIT INFO$", text, re.M | re.S)
    assert header, "no LSB header"
    fields = dict(
        (m.group(1), m.group(2).split())
        for m in re.finditer(r"^# ([A-Za-z-]+):\s*(.*)$", header.group(1), re.M)
    )
    assert fields["Provides"] == ["inosync"]
    assert fields["Required-Start"] == ["$remote_fs", "$syslog", "$network"]
    assert fields["Default-Start"] == ["2", "3", "4", "5"]
    assert fields["Default-Stop"] == ["0", "1", "6"]
    # the daemon gets PIDFILE itself: nothing to keep equal by hand
    assert '--pidfile "$PIDFILE"' in text
    assert not re.search(r"PIDFILE .*must .*`?pidfile", text), "stale PIDFILE == pidfile rule"


def test_init_script_usage() -> None:
    result = subprocess.run(["sh", str(INIT)], capture_output=True, text=True)
    assert result.returncode == 2
    assert "Usage:" in result.stderr
    for action in ("start", "stop", "restart", "reload", "force-reload", "status"):
        assert action in result.stderr


# ---- the init script, for real


class Init:
    """Runs contrib/inosync.init with DAEMON, CONFIG and PIDFILE pointing into tmp_path."""

    def __init__(self, tmp_path: Path, daemon: str) -> None:
        self.src = tmp_path / "src"
        self.replica = tmp_path / "replica"
        self.src.mkdir()
        self.replica.mkdir()
        (self.src / "hello.txt").write_text("hello\n")
        self.pidfile = tmp_path / "inosync.pid"
        self.logfile = tmp_path / "inosync.log"
        self.config = tmp_path / "inosync.conf"
        self.state_dir = tmp_path / "state"  # not the machine's /var/lib/inosync
        self.write_config()  # no pidfile in it: the script passes --pidfile
        self.env = dict(os.environ)
        self.env.update(
            DAEMON=daemon,
            CONFIG=str(self.config),
            PIDFILE=str(self.pidfile),
            # never let a real /etc/default/inosync on this machine take over
            INOSYNC_DEFAULTS=str(tmp_path / "no-such-defaults"),
            # the daemon's scratch directory: a test that SIGKILLs it leaves it here
            TMPDIR=str(tmp_path),
        )

    def write_config(self, pidfile: Path | None = None, wpath: Path | None = None) -> None:
        settings = {
            "wpath": str(wpath or self.src),
            "rnodes": [f"{self.replica}/"],
            "edelay": 0.2,
            "logfile": str(self.logfile),
            "state_dir": str(self.state_dir),
        }
        if pidfile:
            settings["pidfile"] = str(pidfile)
        self.config.write_text("".join(f"{k} = {v!r}\n" for k, v in settings.items()))

    def __call__(self, action: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["sh", str(INIT), action], env={**self.env, **env},
            capture_output=True, text=True, timeout=60,
        )

    def pid(self) -> int | None:
        try:
            text = self.pidfile.read_text().strip()
        except FileNotFoundError:
            return None
        return int(text) if text.isdigit() else None

    def log(self) -> str:
        try:
            return self.logfile.read_text()
        except FileNotFoundError:
            return ""

    def kill_all(self) -> None:
        """Whatever is still running with our config: TERM, then KILL."""
        pids = [p for p in self.our_pids() if alive(p)]
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + 5
            while any(alive(p) for p in pids) and time.monotonic() < deadline:
                time.sleep(0.05)
            if not any(alive(p) for p in pids):
                return

    def our_pids(self) -> list[int]:
        needle = str(self.config).encode()
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if needle in f.read():
                        pids.append(int(entry))
            except OSError:
                pass
        return pids


@pytest.fixture
def init(tmp_path: Path):
    daemon = inosync_program()
    if daemon is None:
        pytest.skip("the `inosync` command is not installed (pip install -e .)")
    runner = Init(tmp_path, daemon)
    try:
        yield runner
    finally:
        runner.kill_all()


def test_init_script_start_status_reload_stop(init: Init) -> None:
    def explain(result: subprocess.CompletedProcess[str]) -> str:
        return f"exit {result.returncode}\n{result.stdout}{result.stderr}\nlog:\n{init.log()}"

    assert init("status").returncode == 3

    started = init("start")
    assert started.returncode == 0, explain(started)
    pid = init.pid()
    assert pid is not None, "no pid in the pidfile once start returned"
    assert alive(pid)
    assert str(pid) in started.stdout
    wait_for(lambda: (init.replica / "hello.txt").is_file(), 20, "the initial sync")
    (init.src / "later.txt").write_text("later\n")
    wait_for(lambda: (init.replica / "later.txt").is_file(), 20, "a change to be synced")

    again = init("start")
    assert again.returncode == 0, explain(again)
    assert "already running" in again.stdout
    assert init.pid() == pid, "a second start must not start a second daemon"

    status = init("status")
    assert status.returncode == 0, explain(status)
    assert str(pid) in status.stdout

    reloaded = init("reload")
    assert reloaded.returncode == 0, explain(reloaded)
    wait_for(lambda: "SIGHUP" in init.log(), 10, "the daemon to log the reload")
    assert alive(pid), "the daemon died on SIGHUP"
    assert init.pid() == pid
    assert init("force-reload").returncode == 0

    stopped = init("stop")
    assert stopped.returncode == 0, explain(stopped)
    assert not alive(pid), "stop returned while the daemon was still running"
    assert not init.pidfile.exists()

    assert init("status").returncode == 3
    assert init("stop").returncode == 0, "stopping a stopped service succeeds (LSB)"
    assert init("reload").returncode == 7


def test_init_script_restart(init: Init) -> None:
    assert init("start").returncode == 0
    first = init.pid()
    restarted = init("restart")
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    second = init.pid()
    assert first is not None and second is not None and first != second
    assert not alive(first)
    assert alive(second)
    assert init("stop").returncode == 0


def test_init_script_dead_daemon(init: Init) -> None:
    """kill -9 leaves the pidfile: status says 1, start and stop cope with it."""
    assert init("start").returncode == 0
    pid = init.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not alive(pid), 10, "the daemon to die")
    assert init.pidfile.exists()
    assert init("status").returncode == 1

    restarted = init("start")
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    assert init.pid() not in (None, pid)
    assert init("stop").returncode == 0

    init.pidfile.write_text(f"{pid}\n")  # stale pidfile, nothing running
    assert init("status").returncode == 1
    result = init("stop")
    assert result.returncode == 0
    assert "stale" in result.stdout
    assert not init.pidfile.exists()
    assert init("status").returncode == 3


def test_init_script_never_stops_a_process_that_took_a_stale_pid(init: Init,
                                                                  tmp_path: Path) -> None:
    """A stale pidfile naming a process whose command line says "inosync" (a pager
    on its log, say): the daemon's flock is gone, so that process is not ours."""
    sleeper = tmp_path / "view-inosync-log"
    shutil.copy("/bin/sleep", sleeper)
    victim = subprocess.Popen([str(sleeper), "60"])
    try:
        init.pidfile.write_text(f"{victim.pid}\n")
        assert init("status").returncode == 1  # dead, pidfile left behind
        result = init("stop")
        assert result.returncode == 0 and "stale" in result.stdout, result.stdout
        assert victim.poll() is None  # still running: never signalled
    finally:
        victim.kill()
        victim.wait()


def test_init_script_config_error(init: Init, tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory\n")
    init.write_config(wpath=tmp_path / "a-file")
    result = init("start")
    assert result.returncode == 6, result.stdout + result.stderr  # LSB: not configured
    assert "a-file" in result.stderr, "inosync's own message must reach the terminal"
    assert init.our_pids() == []


def test_init_script_says_when_wpath_is_not_there_yet(init: Init, tmp_path: Path) -> None:
    """Issue 17.1: a wpath not mounted yet is exit 75, said as such (not 'configuration
    error')."""
    init.write_config(wpath=tmp_path / "missing")
    result = init("start")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "missing" in result.stderr and "not mounted yet (exit status 75)" in result.stderr
    assert init.our_pids() == []


def test_init_script_pidfile_overrides_config(init: Init, tmp_path: Path) -> None:
    """The config names another pidfile: the script's PIDFILE wins, so start,
    status and stop still find the daemon (they used to disagree)."""
    elsewhere = tmp_path / "elsewhere.pid"
    init.write_config(elsewhere)
    started = init("start")
    assert started.returncode == 0, started.stdout + started.stderr
    pid = init.pid()
    assert pid is not None and alive(pid)
    assert not elsewhere.exists()
    assert init("status").returncode == 0
    assert init("stop").returncode == 0
    assert not alive(pid)


def test_init_script_one_daemon_per_pidfile(init: Init) -> None:
    """A daemon started by hand with the same pidfile behind the script's back
    is refused; the script's start/stop/status keep to the one daemon."""
    assert init("start").returncode == 0
    pid = init.pid()
    by_hand = subprocess.run([init.env["DAEMON"], "-c", str(init.config), "-d",
                              "--pidfile", str(init.pidfile)],
                             capture_output=True, text=True, timeout=30)
    assert by_hand.returncode == 1
    assert f"held by running process {pid}" in by_hand.stderr
    assert [p for p in init.our_pids() if alive(p)] == [pid]
    assert init("stop").returncode == 0
    assert init("status").returncode == 3
    assert [p for p in init.our_pids() if alive(p)] == []


def test_init_script_daemon_missing(init: Init, tmp_path: Path) -> None:
    result = init("start", DAEMON=str(tmp_path / "no-inosync"))
    assert result.returncode == 5  # LSB: program is not installed
    assert "not installed" in result.stderr


# ---- the systemd unit


@pytest.mark.parametrize("name", UNITS)
def test_unit_settings(name: str) -> None:
    unit = parse_unit((ROOT / "contrib" / name).read_text())
    service, section = unit["Service"], unit["Unit"]

    (exec_start,) = service["ExecStart"]
    assert exec_start.endswith(f"inosync -c {UNITS[name]}")
    assert exec_start.split()[0].startswith("/"), "ExecStart needs an absolute path"
    assert "-d" not in exec_start.split(), "Type=notify wants inosync in the foreground"
    assert service["Type"] == ["notify"]
    assert service["NotifyAccess"] == ["main"], "rsync and ssh must not notify"
    (exec_reload,) = service["ExecReload"]
    assert "HUP" in exec_reload and "$MAINPID" in exec_reload
    assert service["Restart"] == ["on-failure"]
    assert "2" in service["RestartPreventExitStatus"][0].split()
    # SIGTERM to inosync alone, so it can give running rsyncs their grace period
    assert service["KillMode"] == ["mixed"]
    assert float(service["TimeoutStopSec"][0]) > 10 + 3
    assert "network-online.target" in section["After"][0].split()
    assert "network-online.target" in section["Wants"][0].split()
    assert "multi-user.target" in unit["Install"]["WantedBy"][0].split()


@pytest.mark.parametrize("name", UNITS)
def test_unit_hardening(name: str) -> None:
    """Each option is there, and each one says what to change when."""
    path = ROOT / "contrib" / name
    service = parse_unit(path.read_text())["Service"]
    expected = {
        "NoNewPrivileges": "yes", "PrivateTmp": "yes", "ProtectSystem": "full",
        "ProtectHome": "read-only", "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes", "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    }
    for key, value in expected.items():
        assert service.get(key) == [value], key
    instance = "-%i" if "@" in name else ""  # apart: stopping one never removes another's
    assert service["RuntimeDirectory"] == [f"inosync{instance}"]
    # Not set: each would break copying part of a tree (setuid files, devices).
    for key in ("RestrictSUIDSGID", "PrivateDevices", "ProtectClock", "CapabilityBoundingSet"):
        assert key not in service, key
    lines = path.read_text().splitlines()
    for key in expected:
        at = next(i for i, line in enumerate(lines) if line.startswith(f"{key}="))
        comment = [line for line in lines[max(0, at - 8):at] if line.startswith("#")]
        assert comment, f"{key} has no comment above it"
    text = path.read_text()
    for trap in ("/root/.ssh", "/home", "ReadWritePaths=", "Type=notify-reload", "AF_NETLINK",
                 "never add -d"):
        assert trap in text, f"{name} does not say anything about {trap}"


@pytest.mark.parametrize("name", UNITS)
def test_statusfile_in_the_runtime_directory_outlives_the_stop(name: str) -> None:
    """The unit (and README) put the statusfile in its RuntimeDirectory. systemd
    removes that directory at stop, and the final "stopped" status with it,
    unless RuntimeDirectoryPreserve=yes ("restart" keeps it across restarts
    only: after `systemctl stop` the status would be gone)."""
    text = (ROOT / "contrib" / name).read_text()
    service = parse_unit(text)["Service"]
    (runtime,) = service["RuntimeDirectory"]
    examples = re.findall(r'statusfile = "(/run/[^"]+)"', text)
    assert examples
    for example in examples:
        assert os.path.dirname(example) == "/run/" + runtime.replace("%i", "www"), example
    assert service.get("RuntimeDirectoryPreserve") == ["yes"]
    at = text.index("\nRuntimeDirectoryPreserve=")
    assert "stopped" in text[text.rindex("\n\n", 0, at):at], "no comment tells why"


# Lines from systemd-analyze that are about this machine, not about the unit.
ENVIRONMENT_TROUBLE = re.compile(
    r"bus|manager|cgroup|/run/systemd|not been booted|Operation not permitted|"
    r"Permission denied|Read-only file system|No such file or directory",
    re.I,
)


def verify(unit: Path) -> tuple[int, list[str]]:
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "SYSTEMD_LOG_COLOR": "0", "SYSTEMD_PAGER": ""},
    )
    return result.returncode, (result.stdout + result.stderr).splitlines()


def runnable_copy(directory: Path, text: str, name: str = "inosync.service") -> Path:
    """The unit, with ExecStart pointing at a program that exists on this machine."""
    program = inosync_program() or "/bin/true"
    text = text.replace("ExecStart=/usr/local/bin/inosync ", f"ExecStart={program} ")
    assert f"ExecStart={program} " in text
    if not os.path.exists("/bin/kill"):  # part of every systemd system; maybe not of this one
        text = text.replace("ExecReload=/bin/kill ", f"ExecReload={shutil.which('kill')} ")
    directory.mkdir()
    path = directory / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", UNITS)
def test_unit_systemd_analyze_verify(tmp_path: Path, name: str) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    text = (ROOT / "contrib" / name).read_text()
    assert "\nType=notify\n" in text
    # A template is verified through an instance (systemd finds the template
    # beside it); verify names the template file in what it reports.
    instance = name.replace("@.", "@www.")

    # First make sure that verify reports unit errors here at all: if a broken
    # unit passes, a clean pass below would mean nothing.
    broken = runnable_copy(tmp_path / "broken",
                           text.replace("\nType=notify\n", "\nType=bogus\n"), name)
    code, lines = verify(broken.with_name(instance))
    if not any(name in line for line in lines):
        output = " | ".join(lines) or "no output, even for a broken unit"
        pytest.skip(f"systemd-analyze verify cannot run here (exit {code}): {output}")

    unit = runnable_copy(tmp_path / "good", text, name)
    code, lines = verify(unit.with_name(instance))
    about_unit = [line for line in lines if name in line]
    assert not about_unit, "systemd-analyze verify:\n" + "\n".join(about_unit)
    if code != 0:
        if all(ENVIRONMENT_TROUBLE.search(line) for line in lines if line.strip()):
            pytest.skip(f"systemd-analyze verify exit {code}, about the environment: "
                        + " | ".join(lines))
        pytest.fail(f"systemd-analyze verify exit {code}:\n" + "\n".join(lines))
