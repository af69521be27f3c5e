"""The rsync children and their scratch files, owned in one place.

A ``Runner`` is a context manager: on every way out (a clean stop, an
exception, a signal) each child still running is killed and reaped, and
its list files and stderr files go with the private directory that holds
them. Children never block the loop: ``start`` returns at once, and
``reap`` collects whoever has exited (SIGCHLD wakes the loop for it).
"""

from __future__ import annotations

import ctypes
import fcntl
import logging
import os
import shlex
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import IO

from . import config as configmod
from . import leftovers, progress
from .batch import RunPlan, plural
from .paths import private_dir
from .progress import Progress
from .rsync import Outcome, child_environment, root_rules, with_slash

log = logging.getLogger("inosync")

STDERR_READ = 1 << 20  # of a run's stderr, enough to tell churn from failure
PROGRESS_TAIL = 4096  # of rsync's progress output: holds the last few records
SCRATCH_PREFIX = "inosync-"  # the private directory of list files, in $TMPDIR
PROGRESS_KEEP = 1 << 20  # past this the progress output starts over (a record per file)

# argv of a run, given the names of its list file and rules file (None: no such file)
ArgvFor = Callable[[RunPlan, "str | None", "str | None"], list[str]]


@dataclass
class Ended:
    """A run that is over: what the scheduler needs to know of it."""

    dest: str
    returncode: int
    stderr: str | None  # None: more than STDERR_READ bytes, too much to judge
    took: float
    what: str
    pretended: bool = False
    # How its replay went, if it had one: exit status (127: perl not found, -1:
    # cut short by its time limit) and what it wrote.
    replay_rc: int | None = None
    replay_said: str = ""
    full: bool = False  # a whole-tree run
    sent: int | None = None  # the bytes rsync said it sent (with stats), if it said


@dataclass(frozen=True)
class Replay:
    """Renames to replay on the node before its rsync (see replay.py)."""

    argv: list[str]
    data: bytes  # its stdin
    count: int
    sample: list[tuple[str, str]]  # the first few, for the log
    timeout: float = 0.0  # seconds it may take (0: no limit); past it the run failed


@dataclass
class _Child:
    proc: subprocess.Popen[bytes]  # the replay first, if any, then rsync
    stderr: IO[bytes]
    scratch: list[str]
    started: float
    what: str
    rsync_argv: list[str] | None = None  # to start once the replay has ended
    source_fd: int | None = None  # wpath, opened: rsync reads it as /proc/self/fd/N
    shown: dict[str, str] | None = None  # for the log: that fd's path -> wpath
    output: IO[bytes] | None = None  # rsync's stdout: its progress, its summary
    replay_until: float | None = None  # while the replay runs: when it is cut short
    replay_rc: int | None = None
    replay_said: str = ""
    stop_after_replay: bool = False  # asked to stop while its replay ran: no rsync after
    full: bool = False
    progress: bool = False  # output holds --info=progress2 records (progress())


class Runner:
    def __init__(self, pretend: bool = False) -> None:
        self.pretend = pretend
        self.dir = ""
        self._owned: leftovers.OwnedDir | None = None  # self.dir and its lock
        self.children: dict[str, _Child] = {}  # by node
        self._pretended: list[Ended] = []

    def __enter__(self) -> Runner:
        if not self.pretend:  # -p removes nothing
            remove_stale()
        self._make_dir()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        for child in self.children.values():
            _kill(child.proc, signal.SIGKILL)
            child.proc.wait()
            child.stderr.close()
            _close_output(child.output)
            _close(child)
        self.children.clear()
        # Only while still ours: a tmp cleaner may have removed it, and anyone
        # may have made a directory of that name since (see _scratch_dir).
        if private_dir(self.dir):
            shutil.rmtree(self.dir, ignore_errors=True)
        if self._owned is not None:
            self._owned.close()

    def __len__(self) -> int:
        return len(self.children)

    def start(self, dest: str, plan: RunPlan, argv_for: ArgvFor,
              replay: Replay | None = None, source: tuple[int, str] | None = None,
              progress: bool = False, stats: bool = False) -> tuple[Outcome, str] | None:
        """Start a run for dest (its replay first, if any); on failure, how it
        counts and why.

        source is wpath opened (fd, its path): rsync gets the fd and reads
        /proc/self/fd/N, the very directory the daemon checked, even if a
        deploy swaps the path while ssh connects. The runner owns the fd.
        With progress, rsync's stdout (its --info=progress2) is kept for
        progress(); with stats too, for the bytes its summary says it sent.
        """
        try:
            return self._start(dest, plan, argv_for, replay, source, progress, stats)
        finally:
            child = self.children.get(dest)
            if source is not None and (child is None or child.source_fd != source[0]):
                os.close(source[0])  # not handed to a child: ours to close

    def _start(self, dest: str, plan: RunPlan, argv_for: ArgvFor, replay: Replay | None,
               source: tuple[int, str] | None, progress: bool,
               stats: bool = False) -> tuple[Outcome, str] | None:
        shown = {f"/proc/self/fd/{source[0]}/": with_slash(source[1])} if source else {}
        scratch: list[str] = []
        replay_stdin = None
        try:
            list_file = rules_file = None
            if not plan.full:
                list_file = self._scratch_file(plan.list_data)
                scratch.append(list_file)
                if plan.rooted:
                    rules_file = self._scratch_file(root_rules(plan.top))
                    scratch.append(rules_file)
            argv = argv_for(plan, list_file, rules_file)
            if replay is not None:
                replay_stdin = self._scratch_file(replay.data)
                scratch.append(replay_stdin)
            stderr = tempfile.TemporaryFile(dir=self._scratch_dir())
        except OSError as e:
            _remove(scratch)
            return Outcome.RETRY, f"cannot write rsync's list files in {self.dir}: {e.strerror}"
        try:
            output = _appended(tempfile.TemporaryFile(dir=self.dir)) \
                if progress or stats else None
        except OSError as e:
            stderr.close()
            _remove(scratch)
            return Outcome.RETRY, f"cannot make a file for rsync's progress in {self.dir}: " \
                                  f"{e.strerror}"
        if self.pretend:
            if replay is not None:
                sample = ", ".join(f"{a!r} -> {b!r}" for a, b in replay.sample)
                log.info("%s: would replay %s first (%s%s)", dest, plural(replay.count, "rename"),
                         sample, ", ..." if replay.count > len(replay.sample) else "")
            log.info("%s: would run (%s): %s", dest, plan.what, _show(argv, shown))
            stderr.close()
            _close_output(output)
            _remove(scratch)
            self._pretended.append(Ended(dest, 0, "", 0.0, plan.what, pretended=True,
                                         full=plan.full))
            return None
        try:
            fd = source[0] if source else None
            started = time.monotonic()
            proc, why = None, ""
            if replay is not None and replay_stdin is not None:
                log.debug("%s: replaying %s first", dest, plural(replay.count, "rename"))
                try:
                    proc = _spawn(replay.argv, stderr, replay_stdin)
                except OSError as e:  # no perl here: the replay is only a shortcut
                    why = f"cannot run {e.filename or replay.argv[0]}: {e.strerror}"
            if proc is not None and replay is not None:
                child = _Child(proc, stderr, scratch, started, plan.what, argv, fd, shown,
                               output, replay_until=started + replay.timeout
                               if replay.timeout else None, full=plan.full, progress=progress)
            else:
                log.debug("%s: running (%s): %s", dest, plan.what, _show(argv, shown))
                proc = _spawn(argv, stderr, keep_fd=fd, stdout=output)
                child = _Child(proc, stderr, scratch, started, plan.what, output=output,
                               replay_rc=127 if why else None, replay_said=why,
                               full=plan.full, progress=progress)
        except OSError as e:
            stderr.close()
            _close_output(output)
            _remove(scratch)
            return Outcome.BROKEN, f"cannot run {e.filename or 'rsync'}: {e.strerror}"
        self.children[dest] = child
        return None

    def progress(self, dest: str) -> tuple[float, Progress | None] | None:
        """How long dest's full sync has been running and how far it got, by
        rsync's own count; None if no full sync runs for dest."""
        child = self.children.get(dest)
        if child is None or child.output is None or not child.progress:
            return None
        fd = child.output.fileno()
        size = os.fstat(fd).st_size
        tail = os.pread(fd, PROGRESS_TAIL, max(0, size - PROGRESS_TAIL))
        if size > PROGRESS_KEEP:
            os.ftruncate(fd, 0)  # rsync appends (O_APPEND): it goes on at the start
        return time.monotonic() - child.started, progress.parse(tail)

    def signal(self, dest: str, signum: int) -> None:
        """Signal a run's whole process group (rsync and its ssh).

        A replay asked to stop politely (SIGTERM) is let finish, then no rsync
        starts: a node left with some renames done and others not is what
        --checksum after a replay is for, and a stop loses that until the next
        start. SIGKILL, and the replay's time limit, still end it at once."""
        child = self.children.get(dest)
        if child is None:
            return
        if signum == signal.SIGTERM and child.rsync_argv is not None:
            child.stop_after_replay = True
            return
        _kill(child.proc, signum)

    def reap(self) -> list[Ended]:
        """The runs that have exited since the last call."""
        ended, self._pretended = self._pretended, []
        for dest, child in list(self.children.items()):
            rc = child.proc.poll()
            if rc is None:
                continue
            if child.rsync_argv is not None:
                failed = self._replayed(dest, child, rc)
                if failed is None:
                    continue  # its rsync runs now
                rc = failed
            del self.children[dest]
            stderr = _read_stderr(child.stderr)
            child.stderr.close()
            sent = _sent(child.output)
            _close_output(child.output)
            _remove(child.scratch)
            ended.append(Ended(dest, rc, stderr, time.monotonic() - child.started, child.what,
                               replay_rc=child.replay_rc, replay_said=child.replay_said,
                               full=child.full, sent=sent))
        return ended

    def next_deadline(self) -> float | None:
        """When a running replay is to be cut short (monotonic), if any runs."""
        due = [c.replay_until for c in self.children.values() if c.replay_until is not None]
        return min(due) if due else None

    def expire(self, now: float) -> None:
        """Kill the replays past their time limit: their run fails (reap tells),
        without its rsync: the node may be unreachable in a way ssh cannot see."""
        for child in self.children.values():
            if child.replay_until is not None and now >= child.replay_until:
                child.replay_until = None
                child.replay_rc = -1
                _kill(child.proc, signal.SIGKILL)

    def _replayed(self, dest: str, child: _Child, rc: int) -> int | None:
        """The replay ended (whatever it did, rsync decides): start the rsync.

        None when it runs; else the exit status to report for the run (127:
        rsync could not be started)."""
        argv, child.rsync_argv = child.rsync_argv, None
        assert argv is not None
        timed_out = child.replay_rc == -1
        child.replay_until = None
        summary = _read_stderr(child.stderr) or ""
        child.replay_rc, child.replay_said = (-1 if timed_out else rc), summary.strip()[-500:]
        if timed_out:
            _close(child)
            child.stderr.seek(0)
            child.stderr.truncate()
            child.stderr.write(b"inosync: the move replay did not end in time\n")
            return 30  # rsync's "timeout in data send/receive": retried
        if rc < 0 or child.stop_after_replay:  # we stopped it (shutdown, reload)
            _close(child)
            return rc if rc < 0 else -signal.SIGTERM
        log.debug("%s: replay exited %d: %s", dest, rc, summary.strip()[-200:])
        child.stderr.seek(0)
        child.stderr.truncate()
        popt = configmod.popt_rsync_line()  # made while the replay ran (Daemon.start)
        if popt:
            _close(child)
            child.stderr.write(f"inosync: {configmod.popt_refusal(popt)}\n".encode())
            return 1  # rsync's "syntax or usage error": broken until someone acts
        log.debug("%s: running (%s): %s", dest, child.what, _show(argv, child.shown or {}))
        try:
            child.proc = _spawn(argv, child.stderr, keep_fd=child.source_fd, stdout=child.output)
        except OSError as e:
            child.stderr.write(f"cannot run {argv[0]}: {e.strerror}\n".encode())
            return 127
        finally:
            _close(child)
        return None

    def _scratch_dir(self) -> str:
        """The private directory for rsync's list files, made again if it was removed
        (tmp cleaners remove what an idle daemon has not touched for days).

        Its name shows in rsync's command line: if someone else made a
        directory (or a symlink) of that name meanwhile, it is not ours to
        write rules into. A new one is made instead.
        """
        if not private_dir(self.dir):
            self._make_dir()
            log.warning("the directory for rsync list files was removed; now using %s",
                        self.dir)
        return self.dir

    def _make_dir(self) -> None:
        if self._owned is not None:
            self._owned.close()  # its directory is gone, or no longer ours
        self._owned = leftovers.make_dir(SCRATCH_PREFIX)
        self.dir = self._owned.path

    def _scratch_file(self, data: bytes) -> str:
        fd, name = tempfile.mkstemp(dir=self._scratch_dir(), suffix=".list")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        except OSError:
            _remove([name])
            raise
        return name


def _list_file(mode: int) -> bool:
    return stat.S_ISREG(mode)


def remove_stale() -> None:
    """Remove the directories of list files that daemons killed with -9 left in $TMPDIR
    (leftovers.py tells how they are told from a live daemon's)."""
    for stale in leftovers.find_stale(SCRATCH_PREFIX, [tempfile.gettempdir()]):
        if stale.remove(_list_file):
            log.info("removed %s, the list files of inosync %s, which is no longer running",
                     stale.path, stale.pid)


_LIBC = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def _die_with_us(parent: int) -> Callable[[], None]:
    """In the child, before exec: be killed when the daemon dies, however it dies.

    A replay or an rsync that outlived a daemon killed outright would go on
    renaming or writing on a node that the next start has already repaired.
    The signal survives exec, not fork: a replay's ssh gets it (its end closes
    the node's side), rsync's own ssh ends when rsync's pipes close.
    """
    def arm() -> None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # died before the line above: too late for it
            os._exit(1)

    return arm


def _spawn(argv: list[str], stderr: IO[bytes], stdin: str | None = None,
           keep_fd: int | None = None, stdout: IO[bytes] | None = None) -> subprocess.Popen[bytes]:
    """A child in its own process group (so a signal reaches its ssh too), killed if
    the daemon dies."""
    keep = (keep_fd,) if keep_fd is not None else ()
    out = stdout if stdout is not None else subprocess.DEVNULL
    arm = _die_with_us(os.getpid())
    env = child_environment()
    if stdin is None:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=stderr, start_new_session=True, pass_fds=keep,
                                preexec_fn=arm, env=env)
    with open(stdin, "rb") as data:
        return subprocess.Popen(argv, stdin=data, stdout=out, stderr=stderr,
                                start_new_session=True, pass_fds=keep, preexec_fn=arm,
                                env=env)


def _appended(f: IO[bytes]) -> IO[bytes]:
    """f with O_APPEND, which the child shares: once we cut the file short, its
    next write lands at the new end instead of leaving a hole."""
    fcntl.fcntl(f.fileno(), fcntl.F_SETFL, fcntl.fcntl(f.fileno(), fcntl.F_GETFL) | os.O_APPEND)
    return f


def _sent(output: IO[bytes] | None) -> int | None:
    """What the summary at the end of rsync's stdout says it sent, if it says."""
    if output is None:
        return None
    fd = output.fileno()
    size = os.fstat(fd).st_size
    return progress.sent(os.pread(fd, PROGRESS_TAIL, max(0, size - PROGRESS_TAIL)))


def _close_output(output: IO[bytes] | None) -> None:
    if output is not None:
        output.close()


def _close(child: _Child) -> None:
    """The source fd goes once rsync has it (or never will)."""
    if child.source_fd is not None:
        os.close(child.source_fd)
        child.source_fd = None


def _show(argv: list[str], shown: dict[str, str]) -> str:
    """argv for the log, with wpath where rsync reads it through /proc/self/fd."""
    for fd_path, path in shown.items():
        argv = [a.replace(fd_path, path) for a in argv]
    return shlex.join(argv)


def _kill(proc: subprocess.Popen[bytes], signum: int) -> None:
    try:
        os.killpg(proc.pid, signum)
    except ProcessLookupError:
        pass


def _remove(names: list[str]) -> None:
    for name in names:
        try:
            os.unlink(name)
        except FileNotFoundError:
            pass


def _read_stderr(stream: IO[bytes]) -> str | None:
    """What a child wrote to stderr, or None past STDERR_READ (too much to judge)."""
    stream.seek(0)
    data = stream.read(STDERR_READ + 1)
    return None if len(data) > STDERR_READ else data.decode(errors="replace")
