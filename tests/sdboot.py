"""A real systemd booting as PID 1 of its own pid and mount namespaces, for tests.

It sees none of the machine's units or generators (empty directories are
mounted over them), only the units a test gives it, so it starts nothing
else: no tmpfiles cleaning, no sysctl, no fstab mounts. /run, /srv and
/var/lib are its own tmpfs; its cgroups nest under the test's own ones and
are removed at the end; its console (systemd's own log: exits, restarts) is
a file. Killing `unshare --kill-child` ends the namespace and everything in it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from helpers import alive

SYSTEMD = "/lib/systemd/systemd"
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


class Boot:
    """systemd in a namespace, started with `units` (name -> text), `mounts`
    (a host directory -> where it appears, bind-mounted before systemd starts)
    and `dirs` made in its own /run, /srv or /var/lib."""

    def __init__(self, workdir: Path, units: dict[str, str], mounts: dict[Path, str],
                 target: str, dirs: tuple[str, ...] = ()) -> None:
        self.workdir = workdir
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
        script = self._script(unitdir, mounts, target, dirs)
        self.proc = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--kill-child=SIGKILL", "--mount", "--uts",
             "--ipc", "--mount-proc", "--propagation", "private", "sh", "-ec", script],
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "container": "inosync-test"},
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=self._enter_cgroups)

    def _enter_cgroups(self) -> None:
        for c in self.cgroups:
            (c / "cgroup.procs").write_text(str(os.getpid()))

    def _script(self, unitdir: Path, mounts: dict[Path, str], target: str,
                dirs: tuple[str, ...]) -> str:
        lines = ["for d in /run /srv /var/lib; do mount -t tmpfs -o mode=755 tmp $d; done",
                 "mkdir -p /run/systemd/system /run/lock"]
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
        for _ in range(100):
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
            if children.split():
                return int(children.split()[0])
            assert self.proc.poll() is None, "the namespace ended"
            time.sleep(0.05)
        raise AssertionError("unshare started no child")

    def show(self, unit: str, *props: str) -> dict[str, str]:
        done = self.inside("systemctl", "show", unit, *(f"--property={p}" for p in props))
        return dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)

    def close(self) -> None:
        try:
            init = self.init_pid()
        except AssertionError:
            init = None
        self.proc.kill()  # --kill-child: SIGKILL to systemd, so to its whole namespace
        self.proc.wait(10)
        while init is not None and alive(init):
            time.sleep(0.05)
        for c in reversed(self.cgroups):
            _remove_tree(c)
