"""A real systemd booting as PID 1 of its own pid and mount namespaces, for tests.

It sees none of the machine's units or generators ($SYSTEMD_UNIT_PATH and
the generator paths name only its own, and empty directories are mounted
over the usual ones), only the units a test gives it, so it starts nothing
else: no tmpfiles cleaning, no sysctl, no fstab mounts. /run, /srv,
/var/lib, /tmp and /var/tmp are its own tmpfs (PrivateTmp's directories are
removed only when a unit stops, and a test's end kills it); its cgroups
nest under the test's own ones and are removed at the end. Its
/dev/console, and unshare's output, is a file, workdir/console (what a unit
sends to a tty lands there). systemd's own log does not: as a container's
init it sets its stdio to /dev/null.

What PID 1 itself does at a fresh start stays inside too: it brings up lo
and raises net.unix.max_dgram_qlen in its own network namespace (nothing
in the tests needs a network: nodes are local paths), and its write of
fs.file-max and fs.nr_open (global, never namespaced) fails on a read-only
/proc/sys. `container` in its environment makes it skip what a container's
init must not do (core_pattern, the cgroup release agent, kernel modules).
Killing `unshare --kill-child` ends the namespace and everything in it; it
is killed when the process that started it dies, however it dies.
"""

from __future__ import annotations

import ctypes
import os
import select
import shutil
import signal
import subprocess
import time
from pathlib import Path

SYSTEMD = "/lib/systemd/systemd"
_LIBC = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1
# What the machine's systemd would read: hidden behind empty directories.
HIDDEN = ("/usr/lib/systemd/system", "/etc/systemd/system",
          "/usr/lib/systemd/system-generators", "/etc/systemd/system-generators",
          "/usr/lib/systemd/system-preset")
# Units every service needs (DefaultDependencies) or ours name: empty targets.
TARGETS = ("sysinit.target", "basic.target", "shutdown.target", "network-online.target",
           "remote-fs.target", "multi-user.target")


def why_not() -> str | None:
    """Why a namespace with systemd as PID 1 cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root"
    if not os.access(SYSTEMD, os.X_OK) or not shutil.which("unshare"):
        return f"needs {SYSTEMD} and unshare"
    if not os.path.isdir("/sys/fs/cgroup/systemd") and not os.path.exists(
            "/sys/fs/cgroup/cgroup.procs"):
        return "no cgroup hierarchy systemd could use"
    return None


def _own_cgroups() -> list[Path]:
    """The directory of this process's cgroup in every mounted hierarchy."""
    found = []
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, where = line.split(":", 2)
        if controllers:  # cgroup v1: mounted under its controllers' names
            top = Path("/sys/fs/cgroup") / controllers.replace("name=", "")
        elif Path("/sys/fs/cgroup/unified").is_dir():  # hybrid
            top = Path("/sys/fs/cgroup/unified")
        else:
            top = Path("/sys/fs/cgroup")
        found.append(top / where.lstrip("/"))
    return [p for p in found if (p / "cgroup.procs").exists()]


def _remove_tree(top: Path) -> None:
    """rmdir a cgroup and its children once their processes are gone."""
    for _ in range(200):
        if not top.exists():
            return
        for where, dirs, _files in os.walk(top, topdown=False):
            for d in [*dirs, ""] if where == str(top) else dirs:
                try:
                    os.rmdir(os.path.join(where, d))
                except FileNotFoundError:
                    pass
                except OSError:  # processes still leaving
                    time.sleep(0.1)
    raise AssertionError(f"cgroup {top} still busy")


def _comm(pid: int) -> str:
    """The process's command name, or "" once it is gone."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


class Boot:
    """systemd in a namespace, started with `units` (name -> text), `mounts`
    (a host directory -> where it appears, bind-mounted before systemd starts)
    and `dirs` made in its own /run, /srv or /var/lib."""

    def __init__(self, workdir: Path, units: dict[str, str], mounts: dict[Path, str],
                 target: str, dirs: tuple[str, ...] = ()) -> None:
        self.workdir = workdir
        self._init: tuple[int, int] | None = None  # systemd's pid and a pidfd of it
        unitdir = workdir / "units"
        unitdir.mkdir()
        for name in TARGETS:
            units.setdefault(name, "[Unit]\nDescription=empty stand-in\n")
        for name, text in units.items():
            (unitdir / name).parent.mkdir(parents=True, exist_ok=True)
            (unitdir / name).write_text(text)
        (workdir / "empty").mkdir()
        name = f"inosync-boot-{os.getpid()}-{time.monotonic_ns()}"
        self.cgroups = [c / name for c in _own_cgroups()]
        for c in self.cgroups:
            c.mkdir()
            for name in ("cpuset.cpus", "cpuset.mems"):  # an empty cpuset takes no one
                if (c / name).exists():
                    (c / name).write_text((c.parent / name).read_text())
        self.console = workdir / "console"
        # Its unit and generator paths: nothing but its own. The empty
        # directories over HIDDEN miss /usr/local/lib/systemd/system,
        # /etc/systemd/system.{control,attached}, /lib/systemd/system where /lib
        # is a directory of its own, and the environment generators.
        only_ours = {"SYSTEMD_UNIT_PATH": "/run/systemd/system",
                     "SYSTEMD_GENERATOR_PATH": str(workdir / "empty"),
                     "SYSTEMD_ENVIRONMENT_GENERATOR_PATH": str(workdir / "empty")}
        script = self._script(unitdir, mounts, target, dirs)
        try:
            with self.console.open("ab") as console:
                self.proc = subprocess.Popen(
                    ["unshare", "--pid", "--fork", "--kill-child=SIGKILL", "--mount", "--uts",
                     "--ipc", "--net", "--mount-proc", "--propagation", "private",
                     "sh", "-ec", script],
                    env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "container": "inosync-test",
                         **only_ours},
                    stdin=subprocess.DEVNULL, stdout=console, stderr=console,
                    preexec_fn=self._enter_cgroups)
        except BaseException:
            for c in reversed(self.cgroups):
                _remove_tree(c)
            raise

    def _enter_cgroups(self) -> None:
        # In the child, before exec: unshare (and so, by --kill-child, the whole
        # namespace) dies with the test process, even one killed with -9.
        if _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
        for c in self.cgroups:
            (c / "cgroup.procs").write_text(str(os.getpid()))

    def _script(self, unitdir: Path, mounts: dict[Path, str], target: str,
                dirs: tuple[str, ...]) -> str:
        lines = ["for d in /run /srv /var/lib; do mount -t tmpfs -o mode=755 tmp $d; done",
                 # PrivateTmp's systemd-private-* dirs, never removed after a kill
                 "for d in /tmp /var/tmp; do mount -t tmpfs -o mode=1777 tmp $d; done",
                 "mkdir -p /run/systemd/system /run/lock",
                 # fs.* sysctls are the machine's: systemd's writes fail here
                 "mount --bind /proc/sys /proc/sys", "mount -o remount,bind,ro /proc/sys",
                 # a unit's tty output (TTYPath): never the machine's console
                 f"mount --bind {self.console} /dev/console"]
        lines += [f"[ ! -d {d} ] || mount --bind {self.workdir}/empty {d}" for d in HIDDEN]
        lines += [f"cp -r {unitdir}/. /run/systemd/system/"]
        lines += [f"mkdir -p {d}" for d in dirs]
        for host, inside in mounts.items():
            lines += [f"mkdir -p {inside}", f"mount --bind {host} {inside}"]
        lines.append(f"exec {SYSTEMD} --system --unit={target} --log-target=console "
                     "--show-status=no")
        return "\n".join(lines)

    def inside(self, *argv: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
        """Run argv in the namespace's mounts (systemctl talks to its /run)."""
        pid = self.init_pid()
        return subprocess.run(["nsenter", "-t", str(pid), "-m", "-p", "--", *argv],
                              capture_output=True, text=True, timeout=timeout)

    def init_pid(self) -> int:
        """systemd's pid outside (unshare's only child), once it is there."""
        if self._init is not None:
            return self._init[0]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            # Before reading /proc: once poll() has reaped unshare, its pid (and
            # so the children file) may be another process's.
            assert self.proc.poll() is None, "the namespace ended"
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
            # Not before the child has left unshare's code for the script's: until
            # then it may not have asked for --kill-child's signal yet (prctl,
            # between fork and exec), and a test killed meanwhile (a loaded
            # machine leaves the child unscheduled for long) left systemd running.
            if children.split() and _comm(int(children.split()[0])) not in ("unshare", ""):
                pid = int(children.split()[0])
                self._init = (pid, os.pidfd_open(pid))  # this process, whatever its pid later
                return pid
            time.sleep(0.05)
        raise AssertionError("unshare started no child")

    def show(self, unit: str, *props: str) -> dict[str, str]:
        done = self.inside("systemctl", "show", unit, *(f"--property={p}" for p in props))
        return dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)

    def close(self) -> None:
        try:
            self.init_pid()
        except (AssertionError, OSError):  # ended already, or never started
            pass
        self.proc.kill()  # --kill-child: SIGKILL to systemd, so to its whole namespace
        self.proc.wait(10)
        if self._init is not None:
            select.select([self._init[1]], [], [], 10)  # readable once systemd has ended
            os.close(self._init[1])
            self._init = None
        for c in reversed(self.cgroups):
            _remove_tree(c)
