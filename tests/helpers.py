"""What the tests share: run the real `inosync` command, compare trees with real
rsync, wait for states, a throw-away sshd. Tests import it (``from helpers
import ...``); the fixtures built on it are in conftest.py.

Nothing here sleeps a fixed time and hopes: every wait polls for the expected
state with a deadline, and every process started is killed at teardown.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

RSYNC = shutil.which("rsync") or "/usr/bin/rsync"
ROOT = Path(__file__).resolve().parent.parent


def inosync_argv() -> list[str]:
    """The installed console script if there is one, else the package."""
    script = shutil.which("inosync")
    return [script] if script else [sys.executable, "-m", "inosync"]


def alive(pid: int) -> bool:
    """Running and not a zombie (a container's init may never reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):  # gone, or going while we read
        return False
    return state != "Z"


def wait_until(predicate: Callable[[], object], timeout: float = 20.0, what: str = "") -> object:
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)


def in_syscall(pid: int, numbers: set[str]) -> bool:
    """True while pid's child sits in one of these system calls (strace holds it there)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        return any(Path(f"/proc/{c}/syscall").read_text().split()[0] in numbers
                   for c in children)
    except (OSError, IndexError):
        return False


def tree_diff(src: Path | str, dst: Path | str, excludes: tuple[str, ...] = ()) -> list[str]:
    """What rsync would still change to make dst equal src (checksums, deletions).

    With excludes, directory times are not compared: creating an excluded
    entry changes its parent's mtime, and excluded changes must cost nothing.
    """
    omit = ["--omit-dir-times"] if excludes else []
    argv = [RSYNC, "-anc", "--delete", "--itemize-changes", *omit,
            *(f"--exclude={p}" for p in excludes), f"{src}/", f"{dst}/"]
    done = subprocess.run(argv, capture_output=True)
    lines = [line for line in done.stdout.decode(errors="replace").splitlines() if line.strip()]
    if done.returncode in (23, 24):  # the tree changed under the comparison
        lines.append(f"(comparison incomplete: rsync exit {done.returncode})")
    elif done.returncode:
        raise AssertionError(f"rsync comparison failed: {done.stderr.decode(errors='replace')}")
    return lines


def converged(src: Path, nodes: list[Path], excludes: tuple[str, ...] = ()) -> bool:
    return all(not tree_diff(src, n, excludes) for n in nodes)


def wait_converged(src: Path, nodes: list[Path], timeout: float = 30.0,
                   excludes: tuple[str, ...] = ()) -> None:
    try:
        wait_until(lambda: converged(src, nodes, excludes), timeout, "nodes to equal the source")
    except AssertionError:
        details = {str(n): tree_diff(src, n, excludes)[:10] for n in nodes}
        raise AssertionError(f"nodes did not converge: {details}") from None


def inotify_watches(pid: int | str = "[0-9]*") -> int:
    """inotify watches held by one process, or by every process (the default)."""
    count = 0
    for info in Path("/proc").glob(f"{pid}/fdinfo/*"):
        try:
            count += info.read_text().count("inotify wd:")
        except OSError:
            pass  # the fd or the process went away meanwhile
    return count


# A user namespace's own limit of inotify watches (ucounts): lowered in one made
# for a test, it binds the processes in it and no other (the machine's
# fs.inotify.max_user_watches binds every process of root's: other tests'
# daemons, other test runs on the machine).
NS_WATCHES = "/proc/sys/user/max_inotify_watches"
_IN_NS = 'if [ -n "$1" ]; then echo "$1" > {0} || exit 97; fi; shift; exec "$@"'


def own_watch_limit(limit: int | None = None) -> tuple[str, ...]:
    """A command prefix (Inosync's wrap) that runs the rest as root in a user
    namespace of its own, with that limit of watches if one is given (exit
    97: the namespace or its limit could not be made)."""
    return ("unshare", "-U", "-r", "sh", "-c", _IN_NS.format(NS_WATCHES), "sh",
            "" if limit is None else str(limit))


def set_own_watch_limit(pid: int, limit: int) -> None:
    """Set the watch limit of the user namespace pid runs in (own_watch_limit)."""
    subprocess.run(["nsenter", "-U", "-t", str(pid), "sh", "-c", f"echo {limit} > {NS_WATCHES}"],
                   check=True, timeout=10)


def watches_above(wpath: Path) -> int:
    """The watches inosync keeps on the directories above wpath (to see it swapped)."""
    return len(Path(wpath).resolve().parents)


def stop_process(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM, then SIGKILL if it is still there after timeout seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def private_tmp_root() -> str:
    """Where benchmarks make their scratch trees: inosync refuses a file it opens
    by name below a directory others may write (strict modes), and /tmp is one
    (sticky 1777); this one is the running user's, 0700."""
    root = Path.home() / ".cache" / "inosync-scratch"
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    return str(root)


def write_config(path: Path, **settings: object) -> Path:
    """A config file; its daemon keeps its state beside it, never in /var/lib."""
    settings.setdefault("state_dir", str(path.parent / "state"))
    lines = [f"{name} = {value!r}" for name, value in settings.items()]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o644)
    return path


class Inosync:
    """One `inosync` process started by a test; its log is a file we can poll.
    Without a config (None), args are the whole command line (one-off mode)."""

    def __init__(self, config: Path | None, args: tuple[str, ...], workdir: Path,
                 env: dict[str, str] | None = None, wrap: tuple[str, ...] = ()) -> None:
        """wrap: a command that ends by exec'ing the rest (the daemon keeps its pid)."""
        self.log_path = workdir / f"inosync-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "wb")
        config_args = [] if config is None else ["-c", str(config)]
        self.proc = subprocess.Popen(
            [*wrap, *inosync_argv(), *config_args, *args],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, pattern: str, timeout: float = 20.0, count: int = 1) -> None:
        rx = re.compile(pattern)
        wait_until(lambda: len(rx.findall(self.log())) >= count or self._died(),
                   timeout, f"log line {pattern!r}")
        assert len(rx.findall(self.log())) >= count, f"inosync exited:\n{self.log()}"

    def _died(self) -> bool:
        return self.proc.poll() is not None

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        """At teardown: SIGTERM first so the daemon removes its temp files."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # in case a test stopped it
        stop_process(self.proc, 15)
        self._log.close()


def bind_unix(sock: socket.socket, path: Path | str) -> None:
    """Bind an AF_UNIX socket at path however long it is: by its name, from inside
    its directory. sun_path holds 107 bytes, and a tmp_path comes close (under
    pytest-xdist each worker's lies one directory deeper)."""
    here = os.getcwd()
    os.chdir(Path(path).parent)
    try:
        sock.bind(Path(path).name)
    finally:
        os.chdir(here)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sshd:
    """A throw-away sshd on 127.0.0.1 that lets root in with a throw-away key."""

    def __init__(self, workdir: Path, address: str = "127.0.0.1", netns: str | None = None,
                 client_key: Path | None = None) -> None:
        self.dir = workdir
        self.address = address
        self.port = free_port() if netns is None else 22
        self.netns = netns
        workdir.mkdir(parents=True, exist_ok=True)
        self.host_key = workdir / "host_ed25519"
        self.client_key = client_key or workdir / "client_ed25519"
        for key in (self.host_key, self.client_key):
            if not key.exists():
                subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                               check=True)
        (workdir / "authorized_keys").write_text(Path(f"{self.client_key}.pub").read_text())
        self.config = workdir / "sshd_config"
        self.config.write_text("\n".join([
            f"ListenAddress {address}", f"Port {self.port}", f"HostKey {self.host_key}",
            f"AuthorizedKeysFile {workdir / 'authorized_keys'}",
            "PermitRootLogin prohibit-password", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
            f"PidFile {workdir / 'sshd.pid'}", "LogLevel ERROR", "MaxStartups 100",
            # A node is a plain server: bash reads ~/.bashrc for ssh commands when
            # SHLVL is unset, and this machine's (pyenv init) adds 0.2 s to each.
            "SetEnv SHLVL=1",
            # A session whose client vanished with its link ends by itself.
            "ClientAliveInterval 5", "ClientAliveCountMax 2",
        ]) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def ssh_command(self) -> list[str]:
        return ["ssh", "-i", str(self.client_key), "-p", str(self.port),
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=5",
                "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=2"]

    def start(self) -> Sshd:
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation dir
        # Into the network namespace alone: `ip netns exec` would also give sshd a
        # copy of the mount table, and a filesystem another test has mounted at that
        # moment would live on in it after its umount (no IN_UNMOUNT for that test).
        prefix = ["nsenter", f"--net=/run/netns/{self.netns}"] if self.netns else []
        sshd = shutil.which("sshd") or "/usr/sbin/sshd"
        self.proc = subprocess.Popen([*prefix, sshd, "-D", "-e", "-f", str(self.config)],
                                     stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_until(self.answers, 15, f"sshd on {self.address}:{self.port}")
        return self

    def answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            err = self.proc.stderr.read().decode() if self.proc.stderr else ""
            raise AssertionError(f"sshd exited: {err}")
        probe = subprocess.run([*self.ssh_command(), f"root@{self.address}", "true"],
                               capture_output=True, timeout=20)
        return probe.returncode == 0

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, 10)


def overflow_queue(d: Inosync, flood: Path, also: Callable[[], None] = lambda: None) -> None:
    """Stop the daemon (SIGSTOP), make more events in flood than the kernel
    queues (max_queued_events), run also, resume it: its next read overflows."""
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    d.signal(signal.SIGSTOP)
    try:
        for i in range(limit // 2 + 100):  # each file: IN_CREATE + IN_CLOSE_WRITE
            (flood / f"f{i}").write_bytes(b"x")
        also()
    finally:
        d.signal(signal.SIGCONT)
