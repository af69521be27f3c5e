"""Command line: inosync [-c FILE] [-d] [-p] [-v]
[--check | --verify [--checksum] [--nagios]] [--version] [-h],
or in one-off mode, without a file: inosync [options] SRC DEST [DEST...].

Exit status: 0 clean stop, 1 runtime failure, 2 usage or configuration error;
--verify: 0 identical, 1 some node differs, 2 error (see verify.exit_code);
--verify --nagios: 0 OK, 2 CRITICAL, 3 UNKNOWN (see verify.nagios_code).
Everything that can be checked is checked before forking, so mistakes are
reported on the terminal, not only in a log nobody is looking at yet.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import io
import logging
import logging.handlers
import os
import signal
import stat
import sys
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, NoReturn

from . import __version__
from .config import (
    DEFAULT_PATH,
    Config,
    ConfigError,
    NotYet,
    from_args,
    load,
    own_file_in_node,
)
from .escape import EscapingFormatter, printable
from .journal import JournalFormatter, is_journal
from .liveline import LiveLine
from .paths import Identity, file_kind, identity, strict_modes
from .pidfile import DEFAULT_PATH as DEFAULT_PIDFILE
from .pidfile import Pidfile, PidfileError, choose_pidfile
from .signals import CAUGHT, Signals, StopDuringStartup
from .treelock import TreeLock, TreeLockError

if TYPE_CHECKING:
    from .watch import Watcher

log = logging.getLogger("inosync")

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE = 0, 1, 2
# sysexits' EX_TEMPFAIL: wpath is not there yet (a late mount at boot); the
# units restart on it, never on 2.
EXIT_NOT_YET = 75


class Parser(argparse.ArgumentParser):
    """argparse's parser; a usage error of a Nagios check (``--nagios`` on the
    command line) is the plugin's UNKNOWN, on stdout with exit 3: argparse's
    exit 2 would show as CRITICAL, a drift nobody found."""

    nagios = False

    def error(self, message: str) -> NoReturn:
        if self.nagios:
            nagios_unknown(f"usage: {message}")
            self.exit(3)
        super().error(message)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = Parser(
        prog="inosync",
        usage=USAGE,
        description="Watch a directory tree with inotify; keep remote copies in sync with rsync. "
                    "With SRC and DEST (one-off mode) no configuration file is read: SRC is "
                    "wpath, each DEST a node, every other setting its default, checked as a "
                    "file is; it runs in the foreground, logging to stderr, until Ctrl-C.",
    )
    p.add_argument("src", nargs="?", metavar="SRC",
                   help="one-off mode: the directory to watch (wpath)")
    p.add_argument("dests", nargs="*", metavar="DEST",
                   help="one-off mode: a node to keep in sync with SRC, as in rnodes: a local "
                        "directory, host:/path (ssh) or rsync://host/module/path")
    p.add_argument("-c", metavar="FILE", dest="config",
                   help=f"load configuration from FILE (default {DEFAULT_PATH}); not with "
                        "SRC DEST")
    p.add_argument("-d", dest="daemonize", action="store_true",
                   help="daemonize (fork to background)")
    p.add_argument("-p", dest="pretend", action="store_true",
                   help="do not actually call rsync; log what would run")
    p.add_argument("-v", dest="verbose", action="store_true", help="print debugging information")
    p.add_argument("--full", action="store_true",
                   help="start with a full sync to every node, whatever the checkpoints in "
                        "state_dir say")
    p.add_argument("--check", action="store_true",
                   help="check the configuration, print what would be synced, and exit")
    p.add_argument("--verify", action="store_true",
                   help="compare every node with the source (rsync dry run, changes nothing); "
                        "exit 0 identical, 1 some node differs, 2 error")
    p.add_argument("--checksum", action="store_true",
                   help="with --verify: compare file contents, not only size and time")
    p.add_argument("--nagios", action="store_true",
                   help="with --verify: exit as a Nagios plugin, 0 OK, 2 CRITICAL (some node "
                        "differs), 3 UNKNOWN (some node not checked, or an error)")
    p.add_argument("--pidfile", metavar="FILE", type=pidfile_arg,
                   help="hold FILE as pidfile, instead of the config's pidfile "
                        f"(default with -d: {DEFAULT_PIDFILE})")
    p.add_argument("--state-dir", metavar="DIR",
                   help="one-off mode: keep state in DIR (default: state_dir's default "
                        "/var/lib/inosync for root, ~/.inosync-state for other users)")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.nagios = "--nagios" in (sys.argv[1:] if argv is None else argv)
    # Options may come anywhere: inosync SRC DEST -v, as rsync and lsyncd take them.
    return p.parse_intermixed_args(argv)


USAGE = """inosync [-c FILE] [-d] [-p] [-v] [--full] [--pidfile FILE]
       inosync [-c FILE] --check | --verify [--checksum] [--nagios]
       inosync [-p] [-v] [--pidfile FILE] [--state-dir DIR] SRC DEST [DEST ...]
       inosync --check | --verify [--checksum] [--nagios] [--state-dir DIR]
               SRC DEST [DEST ...]
       inosync --version | -h"""


class LogFile(logging.handlers.WatchedFileHandler):
    """The log file: reopened by name when logrotate has moved it (Watched), and
    opened, then and at start, without following a symlink at the last step
    and only if it is a regular file: a link or FIFO planted at the path must
    not make root append to another file, nor hang."""

    def _open(self) -> io.TextIOWrapper:
        flags = (os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
                 | os.O_NOCTTY | os.O_CLOEXEC)
        fd = os.open(self.baseFilename, flags, 0o640)
        try:
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):
                raise OSError(errno.EINVAL, f"{file_kind(mode)}, not a regular file",
                              self.baseFilename)
            os.set_blocking(fd, True)
            return open(fd, "a", encoding=self.encoding, errors=self.errors)
        except BaseException:
            os.close(fd)
            raise

    def emit(self, record: logging.LogRecord) -> None:
        # The reopen runs outside logging's own guard: a file that cannot be
        # opened (a link planted at the path) must lose the line, not stop the daemon.
        try:
            super().emit(record)
        except OSError:
            self.handleError(record)


class Logs:
    """Where log lines go: stderr in the foreground, syslog or a file behind -d."""

    def __init__(self, verbose: bool) -> None:
        self.handler: logging.Handler | None = None
        log.setLevel(logging.DEBUG if verbose else logging.INFO)
        log.propagate = False
        logging.getLogger("pyinotify").addHandler(logging.NullHandler())

    def use(self, handler: logging.Handler) -> None:
        if self.handler is not None:
            log.removeHandler(self.handler)
            self.handler.close()
        self.handler = handler
        log.addHandler(handler)

    def foreground(self) -> None:
        handler = LiveLine(sys.stderr) if sys.stderr.isatty() else logging.StreamHandler(sys.stderr)
        handler.setFormatter(JournalFormatter() if is_journal(sys.stderr) else
                             EscapingFormatter("%(asctime)s %(levelname)s %(message)s"))
        self.use(handler)

    def live(self) -> Callable[[str], None] | None:
        """Where a live progress line goes: the terminal, if we log to one."""
        return self.handler.show if isinstance(self.handler, LiveLine) else None

    def background(self, config: Config) -> None:
        handler: logging.Handler
        if config.logfile:
            # Watched: reopens by itself after logrotate moves the file.
            handler = LogFile(config.logfile)
            handler.setFormatter(EscapingFormatter(
                "%(asctime)s inosync[%(process)d] %(levelname)s %(message)s"))
        else:
            handler = logging.handlers.SysLogHandler(
                "/dev/log", facility=logging.handlers.SysLogHandler.LOG_DAEMON)
            # %(process)d is read when a line is logged, so it is the
            # daemon's pid after the fork, not the parent's.
            handler.setFormatter(EscapingFormatter(
                "inosync[%(process)d]: %(levelname)s %(message)s"))
            if handler.socket.fileno() < 0:  # type: ignore[attr-defined]  # untyped
                # Said on the terminal while there is one: behind -d nobody would see it.
                say(f"inosync: warning: {config.path} sets no logfile and no syslog "
                    "daemon listens on /dev/log: the log goes nowhere; set logfile = "
                    '"/var/log/inosync.log" or start a syslog daemon')
        self.use(handler)

    def fds(self) -> list[int]:
        """File descriptors the handler needs kept open across the fork."""
        h = self.handler
        fds = []
        if isinstance(h, logging.handlers.SysLogHandler):
            fds = [h.socket.fileno()]  # type: ignore[attr-defined]  # set in __init__, untyped
        elif isinstance(h, logging.StreamHandler) and h.stream:
            fds = [h.stream.fileno()]
        return [fd for fd in fds if fd >= 0]  # -1: syslog not running yet


def fail(message: str, code: int) -> int:
    """Say why inosync stops, once on stderr as a command's error ("inosync: ...",
    no log timestamp), and in the log too where that is elsewhere (a logfile,
    syslog) or is the journal (which wants the priority prefix)."""
    handler = log.handlers[0] if log.handlers else None
    on_stderr = getattr(handler, "stream", None) is sys.stderr
    journal = handler is not None and isinstance(handler.formatter, JournalFormatter)
    if handler is not None and (journal or not on_stderr):
        log.error("%s", message)
    if not (on_stderr and journal):
        say(f"inosync: {printable(message)}")
    return code


def say(line: str) -> None:
    """A line on stderr. A reader gone (``2>&1 | true``) loses the line, never the
    exit status: unhandled, the BrokenPipeError made every error exit 1, which
    --verify means as "some node differs"."""
    try:
        print(line, file=sys.stderr, flush=True)
    except OSError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stderr.fileno())  # the flush at exit would fail too (120)
        except (OSError, ValueError):  # not a file (a test's capture): nothing to flush there
            pass
        finally:
            os.close(devnull)


def standard_streams() -> None:
    """Open /dev/null on whichever of fds 0, 1, 2 a launcher closed (``>&-``), before
    anything else opens a file. Else sys.stdin/stdout/stderr are None (python-daemon's
    redirect behind -d and our own prints die on that), and the next file opened
    would become fd 1 or 2 and get whatever is written there."""
    for fd, name in enumerate(("stdin", "stdout", "stderr")):
        try:
            os.fstat(fd)
            continue
        except OSError:
            pass
        opened = os.open(os.devnull, os.O_RDWR)  # the lowest free fd: this one
        if opened != fd:
            os.dup2(opened, fd)
            os.close(opened)
        if getattr(sys, name) is None:  # only a stream on the /dev/null just opened
            setattr(sys, name, open(fd, "w" if fd else "r", buffering=1 if fd else -1,
                                    errors="backslashreplace", closefd=False))


def main(argv: list[str] | None = None) -> int:
    standard_streams()  # first: Signals() opens a pipe, which would take a closed fd 1
    signals = Signals()  # first: a signal during start-up must not kill us unlogged
    args: argparse.Namespace | None = None
    try:
        args = parse_args(argv)
        logs = Logs(args.verbose)
        logs.foreground()
        conflict = one_shot_conflict(args) or oneoff_conflict(args)
        if conflict:
            return refuse(args, conflict)
        try:
            config = load_config(args)
        except ConfigError as e:
            return refuse(args, str(e), EXIT_NOT_YET if isinstance(e, NotYet) else EXIT_USAGE)
        if args.check:
            return check(config)
        if args.verify:
            return verify(config, args.checksum, args.nagios)
        problem = start_problem(config)  # what --check refuses, a start refuses, in every mode
        if problem:
            return fail(*problem)
        return run(args, config, logs, signals)
    except StopDuringStartup as e:
        return stopped_early(args, e)
    finally:
        signals.close()


def stopped_early(args: argparse.Namespace | None, e: StopDuringStartup) -> int:
    """TERM or INT before the loop ran: a clean stop of a daemon, but no answer
    from --check or --verify, whose exit 0 would say "fine" or "identical"."""
    if args is not None and (args.check or args.verify):
        what = "--verify" if args.verify else "--check"
        message = f"{what} stopped by {e} before it had an answer"
        return refuse(args, message, EXIT_USAGE) if args.verify else fail(message, EXIT_RUNTIME)
    log.info("stopped (%s) during start-up; nothing was synced", e)
    return EXIT_OK


def one_shot_conflict(args: argparse.Namespace) -> str | None:
    """Why these options cannot go together, or None."""
    if args.check and args.verify:
        return "usage: --check and --verify cannot be combined; run one, then the other"
    if args.checksum and not args.verify:
        return "usage: --checksum goes with --verify only"
    if args.nagios and not args.verify:
        return "usage: --nagios goes with --verify only"
    one_shot = "--check" if args.check else "--verify" if args.verify else None
    if one_shot and (args.daemonize or args.pretend or args.pidfile or args.full):
        return (f"usage: {one_shot} runs once in the foreground; it cannot be combined with "
                "-d, -p, --pidfile or --full")
    if args.pretend and (args.daemonize or args.pidfile):
        return ("usage: -p is a dry run that prints to the terminal and writes nothing (no "
                "pidfile, statusfile or log file); it cannot be combined with -d or --pidfile")
    return None


def oneoff_conflict(args: argparse.Namespace) -> str | None:
    """Why the arguments of one-off mode (inosync SRC DEST) do not go with the rest,
    or None."""
    if args.src is None:
        if args.state_dir is not None:
            return ("usage: --state-dir goes with one-off mode (inosync SRC DEST) only; a "
                    "configuration file sets state_dir")
        return None
    if args.config is not None:
        return ("usage: -c FILE and SRC DEST cannot be combined: the file names its own wpath "
                "and rnodes; give one or the other")
    if not args.dests:
        return "usage: one-off mode needs SRC and at least one DEST: inosync SRC DEST [DEST...]"
    if args.daemonize:
        # No pidfile of its own (/run/inosync.pid is the service's), no logfile
        # (syslog only), nothing to reload: a daemon is what a file is for.
        return ("usage: one-off mode (inosync SRC DEST) runs in the foreground until Ctrl-C; "
                "it cannot be combined with -d: to run in the background, put wpath and "
                "rnodes in a configuration file (with logfile and pidfile) and run inosync "
                "-c FILE -d, or its service")
    return None


def load_config(args: argparse.Namespace) -> Config:
    """The configuration file's Config, or in one-off mode the arguments'."""
    if args.src is None:
        return load(args.config or DEFAULT_PATH)
    return from_args(args.src, args.dests, args.state_dir)


def refuse(args: argparse.Namespace, message: str, code: int = EXIT_USAGE) -> int:
    """A usage or configuration error: exit 2 (75 for a wpath not there yet), or
    under --verify --nagios the plugin's UNKNOWN: the line on stdout (what Nagios
    shows) and exit 3."""
    if args.verify and args.nagios:
        return nagios_unknown(message)
    return fail(message, code)


def nagios_unknown(message: str) -> int:
    from .verify import NAGIOS_UNKNOWN, plugin_text

    # stdout only: Icinga shows stderr too, and one line is the whole answer
    print_lines([plugin_text(f"UNKNOWN: {message}")])
    return NAGIOS_UNKNOWN


def start_problem(config: Config) -> tuple[str, int] | None:
    """Why a start would fail after the configuration loaded, and its exit status."""
    from .check import first_failure

    found = first_failure(config)
    if found is None:
        return None
    problem, temporary = found
    return problem, EXIT_NOT_YET if temporary else EXIT_USAGE


def check(config: Config) -> int:
    """--check: everything a start checks, then the summary; nothing is touched."""
    from .check import summary

    problem = start_problem(config)
    if problem:
        return fail(*problem)
    unwritten = print_lines(summary(config))
    return fail(unwritten, EXIT_RUNTIME) if unwritten else EXIT_OK


def verify(config: Config, checksum: bool, nagios: bool = False) -> int:
    """--verify: a summary line (Nagios plugin form), then one line per node on
    stdout; exit 0 identical, 1 differs, 2 error, or with --nagios 0 OK,
    2 CRITICAL, 3 UNKNOWN."""
    from . import verify as verification

    error = nagios_unknown if nagios else lambda message: fail(message, EXIT_USAGE)
    started = start_problem(config)
    if started and not nagios:
        return fail(*started)  # 75 for a wpath not mounted yet, as a start says
    problem = started[0] if started else verification.problem(config)
    if problem:
        return error(problem)
    try:
        results = verification.verify(config, checksum)
    except StopDuringStartup as e:
        return error(f"--verify stopped by {e} before every node was checked")
    except OSError as e:
        return error(f"--verify: cannot start {config.rsync}: {e.strerror}")
    nodes = (verification.report_line(result) for result in results)
    # Nagios reads a "|" in the lines after the first as the start of perfdata
    unwritten = print_lines([verification.summary_line(results),
                             *(line.replace("|", "\\x7c") if nagios else line for line in nodes)])
    if unwritten:  # the answer is lost: not "identical", nor "differs"
        return fail(unwritten, verification.NAGIOS_UNKNOWN if nagios else verification.EXIT_ERROR)
    # What was found, read to the end or not. Without --nagios the codes of
    # 0.4 (cron jobs and scripts test for 1 = drift, 2 = error).
    return verification.nagios_code(results) if nagios else verification.exit_code(results)


def print_lines(lines: Iterable[str]) -> str | None:
    """Print to stdout. A reader that went away (``| head -1``, ``| true``) ends the
    output, not the command: no traceback, and the exit status stays the
    answer (a pager that read one line of --verify must not turn OK into 1).
    Returns why the output could not be written otherwise (a full disk), or None."""
    try:
        for line in lines:
            print(line, flush=True)
    except OSError as e:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the flush at exit would raise again
        os.close(devnull)
        if not isinstance(e, BrokenPipeError):
            return f"cannot write the output: {e.strerror}"
    return None


def pidfile_arg(value: str) -> str:
    """--pidfile: absolute, because -d changes to / before the pidfile is removed."""
    if not value or "\0" in value:
        raise argparse.ArgumentTypeError("must be a file name")
    return os.path.abspath(value)


def run(args: argparse.Namespace, config: Config, logs: Logs, signals: Signals) -> int:
    from .daemon import Daemon
    from .paths import own_file_inside
    from .watch import Watcher, WatchLimitError

    if args.pidfile:  # checked as the config's own pidfile is
        problem = own_file_inside(config.wpath, "--pidfile", args.pidfile, config.excludes) \
            or own_file_in_node(config.rnodes, "--pidfile", args.pidfile)
        if problem:
            return fail(problem, EXIT_USAGE)
    if args.pretend:  # -p writes nothing: no pidfile, statusfile, metrics (nor the log: no -d)
        config = dataclasses.replace(config, pidfile=None, statusfile=None, metrics_file=None)
    path = choose_pidfile(args.pidfile, config.pidfile, args.daemonize)
    why = path and strict_modes(path, "writes", writes=True)  # the config's: at load
    if why:
        return fail(f"pidfile {path}: {why}", EXIT_USAGE)
    pidfile = Pidfile(path) if path else None
    lock = TreeLock(dry_run=args.pretend)  # one place, whatever the config says
    try:
        if pidfile:
            pidfile.acquire()
        lock.acquire(tree_identity(config.wpath), config.wpath)
    except (PidfileError, TreeLockError) as e:
        if pidfile:
            pidfile.release()
        return fail(str(e), EXIT_RUNTIME if e.held else EXIT_USAGE)
    try:
        watcher = Watcher(config.wpath, config.emask, config.excludes, config.configured_wpath)
        try:
            watch(watcher, config, logs.live())
        except WatchLimitError:
            watcher.close()
            return start_failed(config, watch_limit_message(config.wpath))
        except OSError as e:
            watcher.close()
            return start_failed(config, f"cannot watch {config.wpath}: {e.strerror}")
        if args.daemonize:
            try:
                logs.background(config)
            except OSError as e:
                return fail(f"cannot open log ({config.logfile or '/dev/log'}): {e.strerror}",
                            EXIT_RUNTIME)
            keep = [watcher.fileno(), *logs.fds(), *signals.fds()]
            keep += [f.fd for f in (pidfile, lock) if f and f.fd is not None]
            # A signal during the forks would act in a parent about to vanish (and
            # remove the pidfile the daemon holds): held until the daemon is alone.
            held = signal.pthread_sigmask(signal.SIG_BLOCK, CAUGHT)
            try:
                detach(keep)
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, held)
        if pidfile:
            pidfile.write()
        lock.write()  # the daemon's pid, after -d's fork

        def on_reload(new: Config) -> None:
            if args.daemonize:
                logs.background(new)

        daemon = Daemon(config, watcher, signals, pretend=args.pretend, on_reload=on_reload,
                        live=logs.live(), tree_lock=lock, full=args.full)
        return daemon.run()
    finally:
        lock.release()
        if pidfile:
            pidfile.release()


def tree_identity(wpath: str) -> Identity:
    """wpath's device and inode, which name its lock; TreeLockError if it has none."""
    tree = identity(wpath)
    if tree is None:
        raise TreeLockError(f"cannot watch {wpath}: not a directory")
    return tree


def watch(watcher: Watcher, config: Config, live: Callable[[str], None] | None) -> None:
    """Watch the tree, reporting progress meanwhile (only meanwhile: a rescan later
    is the daemon's business)."""
    report_watch_progress(watcher, config, live)
    try:
        watcher.start()
    except StopDuringStartup:
        write_start_status(config, len(watcher), stopped=EXIT_OK)
        raise
    finally:
        watcher.on_progress = None
        if live is not None:
            live("")  # no stale line under the last log line


def start_failed(config: Config, message: str) -> int:
    write_start_status(config, 0, stopped=EXIT_RUNTIME)
    return fail(message, EXIT_RUNTIME)


def report_watch_progress(watcher: Watcher, config: Config,
                          live: Callable[[str], None] | None) -> None:
    """While a big tree is being watched: a log line (and the statusfile) every
    progress_interval, and on a terminal a live line every second."""
    every = config.progress_interval
    if not every:
        return
    started = time.monotonic()
    logged = [started]

    def progress(watched: int) -> None:
        now = time.monotonic()
        text = f"watching {config.wpath}: {watched:,} directories so far ({now - started:.0f} s)"
        if live is not None:
            live(text)
        if now - logged[0] >= every - 0.5:
            logged[0] = now
            log.info("%s", text)
            write_start_status(config, watched)

    watcher.on_progress = progress
    watcher.progress_every = min(every, 1.0) if live is not None else every


def write_start_status(config: Config, watched: int, stopped: int | None = None) -> None:
    """The statusfile before the daemon runs: starting, or stopped before it ran."""
    from .daemon import write_statusfile

    write_statusfile(config, "starting", [], stopped, directories_watched=watched)


def detach(keep: list[int]) -> None:
    """Fork into the background with python-daemon, keeping our fds open."""
    import daemon as python_daemon

    context = python_daemon.DaemonContext(
        files_preserve=keep,
        working_directory="/",
        umask=0o022,
        signal_map={},  # our own handlers are installed by the loop
        detach_process=True,
    )
    context.open()


def watch_limit_message(wpath: str) -> str:
    limit_file = "/proc/sys/fs/inotify/max_user_watches"
    try:
        with open(limit_file) as f:
            limit = f.read().strip()
    except OSError:
        limit = "unknown"
    needed = sum(1 for _ in os.walk(wpath))
    return (f"inotify watch limit reached: fs.inotify.max_user_watches is {limit}, "
            f"{wpath} has about {needed} directories (other programs use watches too); "
            f"raise it, e.g. sysctl fs.inotify.max_user_watches={max(needed * 2, 524288)}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
