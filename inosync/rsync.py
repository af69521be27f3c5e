"""rsync command lines and what rsync's exit codes mean for us.

Everything here is a pure function of values: no processes are started.
"""

from __future__ import annotations

import enum
import os
import re
import shlex
from collections.abc import Iterator, Sequence
from dataclasses import dataclass


class Kind(enum.Enum):
    LOCAL = "local"  # a directory on this machine
    SSH = "ssh"  # [user@]host:path, rsync over the ssh command
    DAEMON = "daemon"  # rsync://host/module/path or host::module/path


# host:path means ssh only when the colon comes before any slash (rsync's rule),
# so "./a:b" and "/srv/a:b" stay local paths.
# An IPv6 literal is bracketed ("user@[::1]:path"); its colons are not ours.
_SSH = re.compile(r"^(?:[^/:\[]*\[[^\]/]*\]|[^/:\[]+):(?!:)")
_DAEMON = re.compile(r"^(rsync://|[^/:\[]+::)")


def node_kind(dest: str) -> Kind:
    if _DAEMON.match(dest):
        return Kind.DAEMON
    if _SSH.match(dest):
        return Kind.SSH
    return Kind.LOCAL


def ssh_parts(dest: str) -> tuple[str, str]:
    """[user@]host and the path of an ssh destination ("" means the login directory)."""
    m = _SSH.match(dest)
    if m is None:
        raise ValueError(f"not an ssh destination: {dest!r}")
    return dest[: m.end() - 1], dest[m.end() :]


def ssh_host(dest: str) -> str:
    """[user@]host of an ssh destination as ssh takes it on its command line.

    rsync wants an IPv6 literal in brackets ("root@[::1]:/srv", or its colons
    would end the host); ssh wants it bare ("root@::1"), and looks "[::1]"
    up as a name.
    """
    host = ssh_parts(dest)[0]
    if host.endswith("]") and "[" in host:
        at = host.index("[")
        return host[:at] + host[at + 1 : -1]
    return host


# rsync takes options from outside its command line too: popt alias files
# (~/.popt, found through $HOME, and /etc/popt, whose rsync lines config.py
# refuses) and these variables. Its children get neither HOME nor these, so
# the command line alone decides (ssh finds ~ by the password database, not
# $HOME; RSYNC_PASSWORD, RSYNC_PROXY and the like stay for rsync:// nodes).
OPTION_VARIABLES = ("HOME", "RSYNC_PROTECT_ARGS", "RSYNC_OLD_ARGS", "RSYNC_ICONV",
                    "RSYNC_PARTIAL_DIR")


def child_environment() -> dict[str, str]:
    """The environment of rsync (and of what inosync runs beside it)."""
    return {k: v for k, v in os.environ.items() if k not in OPTION_VARIABLES}


def with_slash(path: str) -> str:
    """rsync copies a directory's contents (not the directory) when it ends in '/'."""
    return path if path.endswith("/") else path + "/"


@dataclass(frozen=True)
class Options:
    """The settings that shape an rsync command line."""

    rsync: str = "/usr/bin/rsync"
    excludes: Sequence[str] = ()
    bwlimit: int = 0  # KB/s, 0 = no limit
    timeout: int = 60  # seconds of I/O silence before rsync gives up
    contimeout: int = 10  # seconds to connect to an rsync daemon
    ssh: Sequence[str] = ("ssh",)
    extra: Sequence[str] = ()
    # Kept mount points (relative to wpath, see watch.py): never sent nor
    # deleted, by any run, whatever rules the user wrote.
    kept: Sequence[str] = ()


def _common(opts: Options, dest: str, rules: Sequence[str] = ()) -> list[str]:
    """Options shared by every run; our own rules go after the user's excludes.

    rsync uses the first matching rule, so the user's excludes win over every
    rule of ours: an include of ours placed first once sent an excluded
    directory that replaced a file of the same name. The one exception is a
    kept mount point: its exclude goes first, so that no include the user
    wrote (``+ /data/***``) can send or delete anything there.
    """
    # -a does not imply -r together with --files-from, hence the explicit -r.
    # --modify-window=-1 compares mtimes to the nanosecond: with whole seconds,
    # a same-size rewrite within the second the last sync saw is skipped.
    argv = [opts.rsync, "-a", "-r", "--delete", "--modify-window=-1",
            f"--timeout={opts.timeout}"]
    kind = node_kind(dest)
    if kind is Kind.DAEMON:
        argv.append(f"--contimeout={opts.contimeout}")
    elif kind is Kind.SSH:
        argv += ["-e", shlex.join(opts.ssh)]
    if opts.bwlimit:
        argv.append(f"--bwlimit={opts.bwlimit}")
    argv += [f"--exclude={kept_pattern(rel)}" for rel in opts.kept]
    argv += [f"--exclude={pattern}" for pattern in opts.excludes]
    argv += rules
    argv += list(opts.extra)
    return argv


def full_argv(opts: Options, wpath: str, dest: str, progress: bool = False) -> list[str]:
    """One whole-tree run: the node ends up equal to wpath. With progress, rsync
    reports how far it got on stdout (progress.py reads it)."""
    report = ["--info=progress2"] if progress else []
    return [*_common(opts, dest), *report, with_slash(wpath), with_slash(dest)]


def literal_pattern(name: str) -> str:
    """An rsync pattern matching exactly this name.

    rsync treats backslash as an escape only in patterns that hold a wildcard
    character, so a name without any is already literal.
    """
    if not any(c in name for c in "*?["):
        return name
    return _escaped(name)


def _escaped(name: str) -> str:
    """name with every character special to a wildcard pattern escaped."""
    return re.sub(r"([*?\[\\])", r"\\\1", name)


def kept_pattern(rel: str) -> str:
    """The rule that keeps the directory rel (relative to wpath) and all below it.

    An exclude (rsync hides it from the sender and protects it on the
    receiver): nothing below is sent or deleted, by --delete or
    --delete-missing-args, also when a directory above it is listed or
    deleted. A protect rule alone (``P``) would still let what is written
    there replace the node's files: a directory written where the copy holds
    a file deletes that file. ``***`` makes the pattern hold wildcards, so
    every special character of the name is escaped.
    """
    return "/" + _escaped(rel) + "/***"


def root_rules(top_level: Sequence[str]) -> bytes:
    """Include rules for exactly these names directly in wpath, NUL-separated.

    They go in a file (``--include-from``, read with ``--from0``), never on
    the command line: a batch may hold any number of top-level names, and
    thousands of long ones overflow the kernel's argument limit.
    """
    return b"".join(b"/" + os.fsencode(literal_pattern(n)) + b"\0" for n in top_level)


def batch_argv(opts: Options, wpath: str, dest: str, list_file: str,
               rules_file: str | None = None) -> list[str]:
    """A run that sends only the paths listed (NUL-separated) in list_file.

    Listed directories go recursively (with deletions inside them); listed
    paths that no longer exist are deleted on the node. If names directly
    in wpath are listed, the list also holds "." so that wpath's own times
    are set, and rules_file holds root_rules() for those names: with the
    final ``--exclude=/*`` they keep that "." from recursing into anything
    else. The user's excludes come first and win over both.
    """
    # --from0 must come first: rsync reads --include-from as it parses it.
    rules = ["--from0"]
    if rules_file:
        rules += [f"--include-from={rules_file}", "--exclude=/*"]
    return [
        *_common(opts, dest, rules),
        "--delete-missing-args",
        f"--files-from={list_file}",
        with_slash(wpath),
        with_slash(dest),
    ]


class Outcome(enum.Enum):
    OK = "ok"
    VANISHED = "vanished"  # 24: files went away mid-run; their own events follow
    # 23, but only because the source changed under rsync (a directory gone,
    # a file shrunk while read): rsync may have skipped deletions, so the
    # batch runs again; the node is healthy, so this is no failure.
    SOURCE_CHANGED = "source changed"
    RETRY = "retry"  # network, timeout, partial transfer: try again soon
    BROKEN = "broken"  # retrying cannot fix it by itself: retry slowly, log loudly


# From rsync(1) "EXIT VALUES", plus ssh's 255 and the shell's 126/127.
_BROKEN = {
    1: "syntax or usage error",
    2: "protocol incompatibility",
    3: "errors selecting input/output files, dirs",
    4: "requested action not supported",
    6: "daemon unable to append to log-file",
    25: "--max-delete limit stopped deletions",
    126: "remote rsync not executable",
    127: "remote rsync not found",
}
_TRANSIENT = {
    5: "error starting client-server protocol",
    10: "error in socket I/O",
    11: "error in file I/O",
    12: "error in rsync protocol data stream",
    13: "errors with program diagnostics",
    14: "error in IPC code",
    15: "sibling process crashed",
    16: "sibling process terminated abnormally",
    19: "received SIGUSR1",
    20: "received SIGINT, SIGTERM, or SIGHUP",
    21: "some error returned by waitpid()",
    22: "error allocating core memory buffers",
    23: "partial transfer due to error",
    30: "timeout in data send/receive",
    35: "timeout waiting for daemon connection",
    255: "ssh connection failed",
}


# rsync's messages that only say the source changed while it ran. Anything
# else in a run's stderr makes its exit 23 a real failure.
_SOURCE_CHANGED = re.compile(
    r"(?:file|directory) has vanished: "
    r'|rsync: \[sender\] (?:link_stat|change_dir|opendir'
    r'|readlink) ".*" failed: (?:No such file or directory \(2\)|Not a directory \(20\))$'
    # flist.c's "readlink_stat(%s) failed"; ENOENT there is "file has vanished".
    r'|rsync: \[sender\] readlink_stat\(".*"\) failed: Not a directory \(20\)$'
    # A listed file's directory became a file (ENOENT here is "file has vanished").
    r'|rsync: \[sender\] send_files failed to open ".*": Not a directory \(20\)$'
    # A listed file shrank (61) or became a directory (21) while rsync read it.
    r'|rsync: \[sender\] read errors mapping ".*": '
    r"(?:No data available \(61\)|Is a directory \(21\))$"
    r"|IO error encountered -- skipping file deletion$"
    r"|rsync (?:error|warning): some files(?:/attrs were not transferred| vanished) "
)
# A file that shrank while it was read then fails the receiver's checksum
# (a retry, then "update discarded"); without a read error first that would
# mean corruption, a real failure.
_READ_ERROR = re.compile(r'rsync: \[sender\] read errors mapping ".*"', re.MULTILINE)
_FAILED_VERIFICATION = re.compile(
    r"(?:WARNING|ERROR): .* failed verification -- update discarded(?: \(will try again\))?\.$")


def source_changed_only(stderr: str) -> bool:
    """True if every line rsync wrote says only that the source changed under it."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    shrank = bool(_READ_ERROR.search(stderr))
    return bool(lines) and all(
        _SOURCE_CHANGED.match(line) or (shrank and _FAILED_VERIFICATION.match(line))
        for line in lines)


def classify(returncode: int, stderr: str = "") -> Outcome:
    """What an rsync exit status (and its stderr) means; unknown codes are retried,
    never fatal."""
    if returncode == 0:
        return Outcome.OK
    if returncode == 24:
        return Outcome.VANISHED
    if returncode == 23 and source_changed_only(stderr):
        return Outcome.SOURCE_CHANGED
    if returncode in _BROKEN:
        return Outcome.BROKEN
    return Outcome.RETRY


def describe(returncode: int) -> str:
    if returncode < 0:
        return f"killed by signal {-returncode}"
    if returncode == 24:
        return "exit 24 (some files vanished before they could be transferred)"
    reason = _BROKEN.get(returncode) or _TRANSIENT.get(returncode) or "unknown error"
    return f"exit {returncode} ({reason})"


# ---- rsync_args: options that would fight the design are refused at load

_NO_PATTERNS = ("replaces the file list and rules inosync builds for each run, which its "
                "watcher must know too; put patterns in rexcludes or rexcludes_from")
_SKIPS = "skips some changes, so nodes would silently differ from the source"
_HIDES = "makes rsync and the watcher disagree about what is in the tree"
_COPIES_NOTHING = "copies nothing"
_NOT_CLIENT = "is not a client option"
_STDERR = ("moves rsync's messages (and its progress) to stderr, which inosync reads to "
           "judge each run")
_REFUSED = {
    "--dry-run": "copies nothing while every run is logged as synced; use inosync -p "
                 "to see what would run",
    "--list-only": _COPIES_NOTHING,
    "--remove-source-files": "deletes the files of wpath once they are sent",
    "--remove-sent-files": "deletes the files of wpath once they are sent",
    "--delete-excluded": "deletes excluded files on the nodes, and each batch excludes "
                         "everything it does not send, so every node would be wiped",
    "--ignore-errors": "lets rsync delete on the nodes even when reading the source failed",
    "--files-from": _NO_PATTERNS, "--from0": _NO_PATTERNS, "--filter": _NO_PATTERNS,
    "--include": _NO_PATTERNS, "--exclude": _NO_PATTERNS, "--include-from": _NO_PATTERNS,
    "--exclude-from": _NO_PATTERNS, "--cvs-exclude": _NO_PATTERNS, "-F": _NO_PATTERNS,
    "--relative": "changes where paths land on the nodes",
    "--no-relative": "changes where paths land on the nodes",
    "--no-R": "changes where paths land on the nodes",
    "--no-implied-dirs": "changes where paths land on the nodes",
    "--existing": _SKIPS, "--ignore-non-existing": _SKIPS, "--ignore-existing": _SKIPS,
    "--update": _SKIPS, "--size-only": _SKIPS, "--max-size": _SKIPS, "--min-size": _SKIPS,
    "--append": _SKIPS, "--append-verify": _SKIPS, "--compare-dest": _SKIPS,
    "--modify-window": _SKIPS + " (inosync compares times to the nanosecond)",
    "--ignore-missing-args": "keeps deleted paths on the nodes",
    "--no-recursive": _SKIPS, "--no-r": _SKIPS, "--no-links": _SKIPS, "--no-l": _SKIPS,
    "--copy-links": _HIDES, "--copy-unsafe-links": _HIDES, "--copy-dirlinks": _HIDES,
    "--one-file-system": _HIDES,
    "--rsh": "bypasses the ssh setting; set that instead",
    "--timeout": "bypasses the timeout setting, whose range is checked (0 would let a "
                 "dead node hang forever); set that instead",
    "--contimeout": "bypasses the contimeout setting; set that instead",
    "--write-batch": "writes every run to a batch file", "--only-write-batch": _COPIES_NOTHING,
    "--read-batch": "reads a batch file instead of wpath",
    "--daemon": _NOT_CLIENT, "--server": _NOT_CLIENT, "--sender": _NOT_CLIENT,
    "--old-dirs": _SKIPS, "--old-d": _SKIPS, "--prune-empty-dirs": _SKIPS,
    "--safe-links": _SKIPS,
    "--remote-option": "passes options to the remote rsync, where none of these checks "
                       "reach",
    "--stderr": _STDERR, "--msgs2stderr": _STDERR, "--no-msgs2stderr": _STDERR,
}
_SHORT = {  # short letters of refused options
    "n": "--dry-run", "f": "--filter", "C": "--cvs-exclude", "R": "--relative",
    "u": "--update", "@": "--modify-window", "L": "--copy-links", "k": "--copy-dirlinks",
    "x": "--one-file-system", "e": "--rsh", "0": "--from0", "F": "-F",
    "m": "--prune-empty-dirs", "M": "--remote-option",
}
_SHORT_WITH_VALUE = set("BefTM@")  # the rest of the word (or the next word) is the value
# Long options that take their value as the next word when not given as --opt=value.
_LONG_WITH_VALUE = {
    "--info", "--debug", "--stderr", "--backup-dir", "--suffix", "--rsync-path", "--chmod",
    "--chown", "--usermap", "--groupmap", "--block-size", "--rsh", "--max-delete",
    "--max-size", "--min-size", "--max-alloc", "--partial-dir", "--modify-window",
    "--temp-dir", "--compare-dest", "--copy-dest", "--link-dest", "--compress-choice",
    "--zc", "--compress-level", "--zl", "--skip-compress", "--filter", "--exclude",
    "--exclude-from", "--include", "--include-from", "--files-from", "--address", "--port",
    "--sockopts", "--out-format", "--log-format", "--log-file", "--log-file-format",
    "--password-file", "--early-input", "--bwlimit", "--stop-after", "--stop-at",
    "--write-batch", "--only-write-batch", "--read-batch", "--protocol", "--iconv",
    "--checksum-choice", "--cc", "--checksum-seed", "--outbuf", "--remote-option",
    "--timeout", "--contimeout", "--config", "--dparam", "--copy-as", "--time-limit",
    "--confine-root", "--compress-threads", "--zt",
}


def check_extra_args(args: Sequence[str]) -> None:
    """Raise ValueError naming the first item of rsync_args that fights the design.

    Refused: options that change what a run deletes, writes or lists in a way
    inosync cannot account for (its batches, its rules, its watcher), and any
    word that is not an option (rsync would take it as one more source).
    """
    for arg, name, value in options(args):
        if not name or name == "--":
            raise ValueError(f"item {arg!r} is not an option: rsync would take it as "
                             "another source or destination")
        _refuse(name if name.startswith("--") else _SHORT.get(name[1], name), arg)
        if name == "--rsync-path" and value is not None and not _plain_program(value):
            raise ValueError(f"--rsync-path must name one program (got {value!r}): "
                             "options there would pass none of these checks")
        if value is None and _takes_value(name, arg):
            raise ValueError(f"ends with {args[-1]!r}, which takes a value: rsync would take "
                             "the next word inosync adds (wpath, say) as that value")


def _takes_value(name: str, arg: str) -> bool:
    if name.startswith("--"):
        return name in _LONG_WITH_VALUE and "=" not in arg
    return name[1] in _SHORT_WITH_VALUE


def options(args: Sequence[str]) -> Iterator[tuple[str, str, str | None]]:
    """Each option rsync_args gives, as rsync reads them: (the item, the option's
    name, its value or None). A short cluster gives each letter ("-a", "-v"),
    and the value of an option that takes one ("--opt=v", "--opt v", "-Bv",
    "-B v") is never read as an option of its own; a word that is no option
    gives the name "". check_extra_args, --verify and the config read
    rsync_args through this one walk, so they never disagree."""
    words = iter(args)
    for arg in words:
        if not arg.startswith("-") or arg == "-":
            yield arg, "", None  # not an option: rsync takes it as a path
            continue
        if arg.startswith("--"):
            name, has_value, value = arg.partition("=")
            if not has_value and name in _LONG_WITH_VALUE:
                yield arg, name, next(words, None)
            else:
                yield arg, name, value if has_value else None
            continue
        for i, letter in enumerate(arg[1:], 1):
            if letter in _SHORT_WITH_VALUE:
                yield arg, f"-{letter}", arg[i + 1:] or next(words, None)
                break
            yield arg, f"-{letter}", None


def find_option(args: Sequence[str], long_name: str, letter: str = "") -> str | None:
    """The item of rsync_args that gives this option (long, or its short letter)."""
    short = f"-{letter}" if letter else None
    return next((arg for arg, name, _ in options(args) if name in (long_name, short)), None)


def option_values(args: Sequence[str], long_name: str) -> list[str]:
    """The values rsync_args gives a long option (--opt=value or --opt value)."""
    return [value for _, name, value in options(args) if name == long_name and value is not None]


def _plain_program(value: str) -> bool:
    return bool(value) and not any(c.isspace() for c in value) and not value.startswith("-")


def _refuse(name: str, arg: str) -> None:
    why = _REFUSED.get(name)
    if why:
        shown = arg if arg.split("=")[0] == name else f"{arg} ({name})"
        raise ValueError(f"must not hold {shown}: it {why}")
