"""One ssh connection per node, kept open between batches (OpenSSH ControlMaster).

Each batch to an ssh node used to open a new connection: on a link with
50 ms of round trip, key exchange and authentication cost more than a small
change's transfer. With ``ssh_control`` on (the default) the daemon adds
``ControlMaster=auto``, ``ControlPersist`` and a ``ControlPath`` in a
private directory (mode 0700, only the daemon's user can reach its sockets)
to the ssh command that rsync and the move replay use. The first run to a
node opens the master connection; later runs reuse it. If the node went away
(link down, sshd restarted), ssh finds the master dead and connects anew.

A master can outlive its connection: if the node went away without a word
(a firewall or NAT on the path forgot the connection, the host lost power),
nothing comes back on it and every run through it waits out rsync's
timeout, forever. So the master gets ``ServerAlive`` options (unless the
ssh command sets its own) that end it after about rsync's ``timeout`` of
silence. On stop every master is closed (``ssh -O exit``) and the
directory removed.

The directory is checked each time a command is built: a tmp cleaner may
remove it under a long-running daemon, and ssh cannot make a socket in a
directory that is gone. A new one is made then.

A user whose ssh command already sets Control* options (or ``-S``) keeps
exactly that command: nothing is added.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from types import TracebackType

from .paths import private_dir

log = logging.getLogger("inosync")

PERSIST = 300  # seconds an idle master stays open (the next batch reopens it)

# ssh sends a keepalive after each ServerAliveInterval of silence from the
# server and quits when one more than ServerAliveCountMax go unanswered: a
# dead peer is noticed after (count + 1) * interval seconds. The interval is
# chosen so that this is about rsync's timeout, the silence a run already
# tolerates before it fails: a dead master then ends about when the first
# run stuck on it does, and the retry connects anew. The replies come from
# sshd itself, so a remote rsync busy for minutes (checksumming a large
# file) is no silence; only a dead link or host is. Count 3 is ssh's own
# default: the interval is a quarter of the timeout, and an idle master
# costs one small packet per interval.
ALIVE_COUNT = 3

# ssh's options that take a value (from its getopt string): the word after
# them, or the rest of their own word, is that value and no option.
_WITH_VALUE = frozenset("BDEFIJLOPQRSWbceilmopw")


def _options(ssh: Sequence[str]) -> Iterator[tuple[str, str]]:
    """Each option of an ssh command line as ssh reads it: (its letter, its value
    or ""). Letters may be grouped ("-qo X=1"), a value may be attached
    ("-oX=1"); words that are no option are skipped."""
    words = iter(ssh[1:])
    for word in words:
        if not word.startswith("-") or word in ("-", "--"):
            continue
        for i, letter in enumerate(word[1:], 1):
            if letter in _WITH_VALUE:
                yield letter, word[i + 1 :] or next(words, "")
                break
            yield letter, ""


def _keywords(ssh: Sequence[str]) -> set[str]:
    """The configuration keywords the command sets with -o, lowercased (ssh reads
    them without regard to case, as "Key=value", "Key value" or "Key = value")."""
    found = set()
    for letter, value in _options(ssh):
        if letter == "o":
            found.add(re.split(r"[\s=]", value.strip(), maxsplit=1)[0].lower())
    return found


def user_controls(ssh: Sequence[str]) -> bool:
    """True if the configured ssh command already decides about connection sharing."""
    sharing = {"controlmaster", "controlpath", "controlpersist"}
    return any(letter == "S" for letter, _ in _options(ssh)) or bool(_keywords(ssh) & sharing)


def user_keepalive(ssh: Sequence[str]) -> bool:
    """True if the configured ssh command sets ServerAliveInterval or
    ServerAliveCountMax itself (0 included: keepalives off is a choice too)."""
    return bool(_keywords(ssh) & {"serveraliveinterval", "serveralivecountmax"})


def keepalive(timeout: int) -> list[str]:
    """ServerAlive options that end a connection after about timeout seconds of
    silence from the server (ALIVE_COUNT tells why)."""
    interval = max(1, timeout // (ALIVE_COUNT + 1))
    return ["-o", f"ServerAliveInterval={interval}", "-o", f"ServerAliveCountMax={ALIVE_COUNT}"]


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

    def command(self, ssh: Sequence[str], host: str, timeout: int) -> list[str]:
        """The ssh command for a connection to host (as ssh takes it: rsync.ssh_host):
        sharing one master, if we may. timeout is rsync's: see ALIVE_COUNT."""
        if not self.enabled or user_controls(ssh) or not self._usable_dir():
            return list(ssh)
        wanted = [*ssh, *([] if user_keepalive(ssh) else keepalive(timeout))]
        shared = [*wanted, "-o", "ControlMaster=auto", "-o", f"ControlPath={self.dir}/%C",
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
