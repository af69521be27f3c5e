"""One ssh connection per node, kept open between batches (OpenSSH ControlMaster).

Each batch to an ssh node used to open a new connection: on a link with
50 ms of round trip, key exchange and authentication cost more than a small
change's transfer. With ``ssh_control`` on (the default) the daemon adds
``ControlMaster=auto``, ``ControlPersist`` and a ``ControlPath`` in a
private directory (mode 0700, only the daemon's user can reach its sockets)
to the ssh command that rsync and the move replay use. The first run to a
node opens the master connection; later runs reuse it. If the node went away
(link down, sshd restarted), ssh finds the master dead and connects anew;
``ServerAliveInterval`` ends a master whose link hangs. On stop every
master is closed (``ssh -O exit``) and the directory removed.

The directory is checked each time a command is built: a tmp cleaner may
remove it under a long-running daemon, and ssh cannot make a socket in a
directory that is gone. A new one is made then.

A user whose ssh command already sets Control* options (or ``-S``) keeps
exactly that command: nothing is added.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from types import TracebackType

from .paths import private_dir

log = logging.getLogger("inosync")

PERSIST = 300  # seconds an idle master stays open (the next batch reopens it)


def user_controls(ssh: Sequence[str]) -> bool:
    """True if the configured ssh command already decides about connection sharing."""
    options = ("controlmaster", "controlpath", "controlpersist")
    return "-S" in ssh or any(w.lower().removeprefix("-o").startswith(options) for w in ssh)


# A unix socket path holds at most 107 bytes; ssh's %C is 40 more after the directory.
_MAX_DIR = 107 - 41 - len("/inosync-ssh-xxxxxxxx")


def _socket_dir() -> str:
    """A new private directory (0700) short enough to hold the sockets, or "" (no sharing).

    $TMPDIR first; if its path is too long for a socket, /run or /tmp.
    """
    for parent in (tempfile.gettempdir(), "/run", "/tmp"):
        if len(parent) <= _MAX_DIR and os.path.isdir(parent) and os.access(parent, os.W_OK):
            try:
                return tempfile.mkdtemp(prefix="inosync-ssh-", dir=parent)
            except OSError as e:
                log.warning("cannot make a directory for ssh control sockets in %s: %s; "
                            "one connection per run", parent, e.strerror)
                return ""
    log.warning("no directory short enough for ssh control sockets: one connection per run")
    return ""


class ControlMasters:
    """The private socket directory, and the masters opened in it (a context manager)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.dir = ""
        self.used: dict[str, list[str]] = {}  # host -> the ssh command used for it

    def __enter__(self) -> ControlMasters:
        return self  # the directory is made for the first ssh node only

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        for host, ssh in self.used.items():
            try:
                subprocess.run([*ssh, "-O", "exit", host], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               timeout=5, check=False)
            except (OSError, subprocess.TimeoutExpired):
                log.debug("could not close the ssh master for %s", host)
        self.used.clear()
        if self.dir and private_dir(self.dir):
            shutil.rmtree(self.dir, ignore_errors=True)

    def command(self, ssh: Sequence[str], host: str) -> list[str]:
        """The ssh command for a connection to host (as ssh takes it: rsync.ssh_host):
        sharing one master, if we may."""
        if not self.enabled or user_controls(ssh) or not self._usable_dir():
            return list(ssh)
        shared = [*ssh, "-o", "ControlMaster=auto", "-o", f"ControlPath={self.dir}/%C",
                  "-o", f"ControlPersist={PERSIST}"]
        self.used[host] = shared
        return shared

    def _usable_dir(self) -> bool:
        """True once the socket directory is there and ours, made again if it is not.

        A tmp cleaner may remove it under a daemon that runs for months, and
        a directory of that name made since, or a symlink, is not ours. The
        masters whose sockets went with it cannot be reached any more; they
        end after ControlPersist of idleness.
        """
        if self.dir and private_dir(self.dir):
            return True
        lost, self.dir = self.dir, _socket_dir()
        if not self.dir:
            self.enabled = False  # warned: one connection per run from now on
        elif lost:
            log.warning("the directory for ssh control sockets %s was removed or is no longer "
                        "private; now using %s", lost, self.dir)
        return bool(self.dir)
