"""One ssh connection per node, kept open between batches (OpenSSH ControlMaster).

Each batch to an ssh node used to open a new connection: on a link with
50 ms of round trip, key exchange and authentication cost more than a small
change's transfer. With ``ssh_control`` on (the default) the daemon adds
``ControlMaster=auto``, ``ControlPersist`` and a ``ControlPath`` in a
private directory (mode 0700, only the daemon's user can reach its sockets)
to the ssh command that rsync and the move replay use. The first run to a
node opens the master connection; later runs reuse it.

A master can outlive its connection: if the node went away without a word
(a firewall or NAT on the path forgot the connection, the host lost power),
nothing comes back on it and every run through it waits out rsync's
timeout, forever. So the master gets ``ServerAlive`` options (unless the
ssh command sets its own) that end it after about rsync's ``timeout`` of
silence. And a run that ends with a connection failure makes the daemon
retire the node's master: the next run opens a new one under a new socket
name, and the old one is told to exit (``ssh -O exit``) by a child nobody
waits for. On stop every master is closed and the directory removed.
A daemon killed with -9 does neither: the next start does it for it
(remove_stale; leftovers.py tells how a dead daemon's directory is told
from a live one's), and a master nobody closes ends after PERSIST.

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
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType

from . import leftovers
from .paths import private_dir

log = logging.getLogger("inosync")

# Seconds an idle master stays open after its last run. Every run through it
# starts the count again, so while the tree changes it stays; after a quiet
# minute the next batch pays one new connection (a few round trips: well
# under a second, small beside the batching delay). And a master whose
# daemon was killed with -9 ends by itself a minute later (the next start
# closes it at once, if its socket is still there).
PERSIST = 60
PREFIX = "inosync-ssh-"  # of the socket directory (leftovers.py: how a dead daemon's is told)
CLOSE_WAIT = 5.0  # seconds, in all, for the masters to answer `ssh -O exit` at stop

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

# Exit statuses that say the connection failed, rather than rsync or the
# node: ssh's 255 (connect, authentication or the connection lost), and
# rsync's 12 (the data stream broke off: the channel died under it), 30 (no
# data for the timeout: the connection hangs), 10 (socket I/O) and 5 (the
# protocol start failed: the channel closed before rsync could talk). When
# the master is fine after all, replacing it costs one key exchange. Not
# 35: that is an rsync daemon's connection timeout, never an ssh node's.
_CONNECTION_LOST = frozenset({255, 12, 30, 10, 5})

# A unix socket path holds at most 107 bytes. ssh binds its socket as PATH
# plus "." and 16 random characters first, then renames it to PATH; our
# names ("/<node>-<generation>") take at most 20 after the directory.
_MAX_DIR = 107 - 17 - 20 - len("/inosync-ssh-xxxxxxxx")

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


def connection_lost(returncode: int) -> bool:
    """True if a run to an ssh node that ended so failed in its connection."""
    return returncode in _CONNECTION_LOST


def _parents() -> list[str]:
    """Where the socket directory may be made: $TMPDIR, or if its path is too long
    for a socket, /run or /tmp."""
    return [tempfile.gettempdir(), "/run", "/tmp"]


def _socket_dir() -> leftovers.OwnedDir | None:
    """A new private directory (0700) short enough to hold the sockets, or None (no sharing)."""
    for parent in _parents():
        if len(parent) <= _MAX_DIR and os.path.isdir(parent) and os.access(parent, os.W_OK):
            try:
                return leftovers.make_dir(PREFIX, parent)
            except OSError as e:
                log.warning("cannot make a directory for ssh control sockets in %s: %s; "
                            "one connection per run", parent, e.strerror)
                return None
    log.warning("no directory short enough for ssh control sockets: one connection per run")
    return None


def _socket(mode: int) -> bool:
    return stat.S_ISSOCK(mode)


def _exit_stale(path: str) -> subprocess.Popen[bytes] | None:
    """Tell the master at path, of a daemon no longer running, to exit.

    Its command line is gone with its daemon; none of it is needed: a master
    takes "exit" from anyone who can reach its socket. No configuration is
    read (-F /dev/null: nothing in it may run a command or connect), and the
    host name is a placeholder that nothing looks up (ssh quits when the
    socket does not answer, it does not connect instead).
    """
    argv = ["ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "ControlMaster=no",
            "-S", path.replace("%", "%%"), "-O", "exit", "inosync-stale-master"]
    try:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
    except OSError as e:
        log.debug("cannot run ssh -O exit for %s: %s", path, e.strerror)
        return None


def _wait_all(children: list[subprocess.Popen[bytes]], seconds: float) -> None:
    """Wait for children, all within seconds in all; kill those that did not end."""
    deadline = time.monotonic() + seconds
    for child in children:
        try:
            child.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.debug("ssh -O exit (pid %d) got no answer: killed", child.pid)
            child.kill()
            child.wait()


def remove_stale() -> None:
    """Close the masters of daemons killed with -9 and remove their socket directories.

    At start, before the loop: every master is told at once, and all get
    CLOSE_WAIT seconds in all to answer (a master answers on its local
    socket at once, even when its link is dead). A master that does not is
    left to ControlPersist; its socket goes with the directory.
    """
    stale = leftovers.find_stale(PREFIX, _parents())
    children = [child for s in stale for name in s.entries(_socket)
                if (child := _exit_stale(f"{s.path}/{name}")) is not None]
    _wait_all(children, CLOSE_WAIT)
    for s in stale:
        if s.remove(_socket):
            log.info("removed %s, the ssh control sockets of inosync %s, which is no longer "
                     "running (its masters told to exit)", s.path, s.pid)


def _master_socket(path: str) -> bool:
    """True if a master may listen at path: a socket, in a directory still ours.

    A directory that changed hands is not ours to send commands into.
    """
    try:
        is_socket = stat.S_ISSOCK(os.lstat(path).st_mode)
    except OSError:
        return False
    return is_socket and private_dir(os.path.dirname(path))


@dataclass
class _Host:
    """A host's shared connection: its socket now, and the command it is for."""

    number: int  # names its sockets: "<number>-<generation>"
    generation: int = 0  # one more each time its master is replaced
    ssh: list[str] = field(default_factory=list)  # the configured command, keepalive added
    shared: list[str] = field(default_factory=list)  # that with our Control* options
    path: str = ""  # the socket shared names


class ControlMasters:
    """The private socket directory, and the masters opened in it (a context manager)."""

    def __init__(self, enabled: bool = True, tidy: bool = False) -> None:
        self.enabled = enabled
        self.tidy = tidy  # at start, close what a daemon killed with -9 left
        self.dir = ""
        self._owned: leftovers.OwnedDir | None = None  # self.dir and its lock
        self._hosts: dict[str, _Host] = {}
        # Sockets of replaced masters, while they exist: one that did not
        # exit when told is told again at stop. Host and command by socket.
        self._retired: dict[str, tuple[str, list[str]]] = {}
        self._exiting: list[subprocess.Popen[bytes]] = []  # `ssh -O exit` not yet reaped
        self._unshared: set[str] = set()  # hosts whose last command shares no connection

    def __enter__(self) -> ControlMasters:
        if self.tidy:  # whether or not this config shares connections: the last one may have
            remove_stale()
        return self  # the directory is made for the first ssh node only

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        masters = dict(self._retired)
        masters.update((e.path, (host, e.shared)) for host, e in self._hosts.items() if e.path)
        # All at once, then one shared deadline: a master that does not answer
        # (it should, even with its link dead: the socket is local) costs
        # CLOSE_WAIT at stop, not CLOSE_WAIT per node.
        for path, (host, shared) in masters.items():
            if _master_socket(path):
                self._tell_exit(host, shared)
        self._retired.clear()
        _wait_all(self._exiting, CLOSE_WAIT)
        self._exiting.clear()
        if self.dir and private_dir(self.dir):
            shutil.rmtree(self.dir, ignore_errors=True)
        if self._owned is not None:
            self._owned.close()

    def command(self, ssh: Sequence[str], host: str, timeout: int) -> list[str]:
        """The ssh command for a connection to host (as ssh takes it: rsync.ssh_host):
        sharing one master, if we may. timeout is rsync's: see ALIVE_COUNT."""
        self._reap()
        if not self.enabled or user_controls(ssh) or not self._usable_dir():
            self._unshared.add(host)
            return list(ssh)
        self._unshared.discard(host)
        wanted = [*ssh, *([] if user_keepalive(ssh) else keepalive(timeout))]
        entry = self._hosts.get(host)
        if entry is None:
            entry = self._hosts[host] = _Host(len(self._hosts))
        elif entry.ssh != wanted:
            self._retire(host, entry)  # a reload changed the command: a master made for it
        entry.ssh = wanted
        entry.path = f"{self.dir}/{entry.number}-{entry.generation}"
        # ssh expands %-tokens in ControlPath; the directory ($TMPDIR) may hold "%".
        entry.shared = [*wanted, "-o", "ControlMaster=auto",
                        "-o", f"ControlPath={entry.path.replace('%', '%%')}",
                        "-o", f"ControlPersist={PERSIST}"]
        return list(entry.shared)

    def connected(self, host: str) -> bool:
        """Whether runs to host may start now without each opening a connection:
        its master listens, or runs to host share none (ours are off, or the
        user's ssh command decides)."""
        entry = self._hosts.get(host)
        if not self.enabled or host in self._unshared or entry is None or not entry.path:
            return True
        return _master_socket(entry.path)

    def connection_failed(self, host: str) -> None:
        """A run to host failed in its connection (see connection_lost): the next run
        gets a new master, and the current one, if there is one, is told to exit.

        Never blocks: the exit is a child reaped later. The master may well
        be fine (the node was away for a moment): then this costs one new
        connection (and one more failed run to another node on that host,
        if one was running through it). If it is not, every run through it
        would fail the same way.
        """
        self._reap()
        entry = self._hosts.get(host)
        if entry is not None and self._retire(host, entry):
            log.info("%s: shared ssh connection closed after a connection failure; the next "
                     "run opens a new one", host)

    def _retire(self, host: str, entry: _Host) -> bool:
        """Move host to its next socket and tell the master at the current one to
        exit; False (nothing changed) if no master listens there."""
        if not entry.path or not _master_socket(entry.path):
            return False  # none was opened, or it ended: the next run opens one there
        self._retired = {p: known for p, known in self._retired.items() if _master_socket(p)}
        self._retired[entry.path] = (host, entry.shared)
        entry.generation += 1
        self._tell_exit(host, entry.shared)
        return True

    def _tell_exit(self, host: str, shared: list[str]) -> None:
        try:
            child = subprocess.Popen([*shared, "-O", "exit", host], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        except OSError as e:
            log.debug("cannot run ssh -O exit for %s: %s", host, e.strerror)
            return
        self._exiting.append(child)

    def _reap(self) -> None:
        self._exiting = [child for child in self._exiting if child.poll() is None]

    def _usable_dir(self) -> bool:
        """True once the socket directory is there and ours, made again if it is not.

        A tmp cleaner may remove it under a daemon that runs for months, and
        a directory of that name made since, or a symlink, is not ours. The
        masters whose sockets went with it cannot be reached any more; they
        end after ControlPersist of idleness.
        """
        if self.dir and private_dir(self.dir):
            return True
        if self._owned is not None:
            self._owned.close()  # its directory is gone, or no longer ours
        lost, self._owned = self.dir, _socket_dir()
        self.dir = self._owned.path if self._owned is not None else ""
        if not self.dir:
            self.enabled = False  # warned: one connection per run from now on
        elif lost:
            log.warning("the directory for ssh control sockets %s was removed or is no longer "
                        "private; now using %s", lost, self.dir)
        return bool(self.dir)
