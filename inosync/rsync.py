"""rsync command lines and what rsync's exit codes mean for us.

Everything here is a pure function of values: no processes are started.
"""

from __future__ import annotations

import enum
import os
import posixpath
import re
import shlex
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from . import rsyncopts
from .deletepolicy import Deletes


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
    """rsync copies a directory's contents (not the directory) when it ends in '/'.

    An ssh node with an empty path ("host:", refused at load) gets "./": to
    rsync it is the login directory, and "host:/" would be the remote root.
    """
    if path.endswith("/"):
        return path
    if node_kind(path) is Kind.SSH and not ssh_parts(path)[1]:
        return path + "./"
    return path + "/"


def normal_form(dest: str) -> str:
    """dest spelt one way, to tell two spellings of one node ("h:/srv", "h:/srv/",
    "h://srv//x/..") apart from two nodes. The path is normalised as text
    (posixpath.normpath); the host is kept as written, since "user@h" and "h"
    are not provably the same login. A local node comes in absolute already."""
    kind = node_kind(dest)
    if kind is Kind.SSH:
        host, path = ssh_parts(dest)
        return f"{host}:{_normal_path(path)}" if path else dest
    if kind is Kind.DAEMON:
        scheme = "rsync://" if dest.startswith("rsync://") else dest[:dest.index("::") + 2]
        rest = dest[len(scheme):]
        return scheme + (_normal_path(rest) if rest else "")
    return _normal_path(dest)


def _normal_path(path: str) -> str:
    normal = posixpath.normpath(path)
    # normpath keeps a leading "//" (POSIX leaves its meaning open); Linux reads it as "/".
    return "/" + normal.lstrip("/") if normal.startswith("//") else normal


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
    # rsync's summary on stdout ("sent N bytes ..."), for the metrics; before
    # rsync_args, so that their -q, --stats or --info=stats0 decide.
    stats: bool = False
    # Kept mount points (relative to wpath, see watch.py): never sent nor
    # deleted, by any run, whatever rules the user wrote.
    kept: Sequence[str] = ()
    # What a run may delete on the node (deletepolicy.py): --delete by default.
    deletes: Deletes = Deletes(delete=True, missing=True, force=False)


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
    argv = [opts.rsync, "-a", "-r", *(["--delete"] if opts.deletes.delete else []),
            *(["--force"] if opts.deletes.force else []), "--modify-window=-1",
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
    if opts.stats:
        argv.append("--info=stats1")
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

    Listed directories go recursively (with deletions inside them, if
    opts.deletes.delete); listed paths that no longer exist are deleted on
    the node (if opts.deletes.missing; else skipped). If names directly
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
        "--delete-missing-args" if opts.deletes.missing else "--ignore-missing-args",
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


# An rsync daemon that refuses the module for good (its configuration, or ours):
# exit 5 like a dropped connection, but retrying fast cannot fix it. "max
# connections ... try again later" is no such answer.
_DAEMON_REFUSED = re.compile(
    r"^@ERROR: (?:Unknown module|access denied|auth failed|chroot failed|chdir failed"
    r"|invalid (?:uid|gid)|module .* is read only|no path setting)", re.MULTILINE)


def source_changed_only(stderr: str) -> bool:
    """True if every line rsync wrote says only that the source changed under it."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    shrank = bool(_READ_ERROR.search(stderr))
    return bool(lines) and all(
        _SOURCE_CHANGED.match(line) or (shrank and _FAILED_VERIFICATION.match(line))
        for line in lines)


# ---- paths rsync cannot read on the source

# rsync's MAXPATHLEN (Linux PATH_MAX): a name whose path from the transfer
# root needs more is never listed, and a rule longer than that is discarded.
MAXPATHLEN = 4096
# A name rsync cannot fit in MAXPATHLEN: "by N" says how far over it is, so
# the path has exactly MAXPATHLEN - 1 + N bytes (a check that the line was
# read whole: a newline in the name would cut it).
_OVERFLOW = re.compile(r"filename overflows max-path len by (\d+): (.+)$")
# The sender could not list, stat or open what it found; the path is the full
# one, under the /proc/self/fd/N that inosync gives rsync as the source.
_UNREADABLE = re.compile(
    r"rsync: \[sender\] (?:opendir |send_files failed to open |link_stat |readlink_stat\("
    r'|read errors mapping )"/proc/self/fd/\d+/(.+)"\)?(?: failed)?: '
    r"(Permission denied|Input/output error|File name too long) \(\d+\)$")


# rsync prints a byte it does not show as \#ooo, and a backslash that starts
# "\#ddd" in a name as \#134 ("\#012" in a name shows as "\#134#012"). But it
# looks for "\#ddd" within each piece it writes (1023 bytes through iconv): a
# name's "\#ddd" across the end of a piece shows as it is, as if it stood for a
# byte. So a \#ooo whose byte rsync escapes may be either; any other is text.
_ESCAPE = re.compile(rb"\\#([0-3][0-7]{2})")
_DIGITS = re.compile(rb"#[0-9]{3}")


def _pieces(text: str) -> list[tuple[bytes, int | None]]:
    r"""text's bytes as rsync printed them: runs of plain text (byte None), and each
    \#ooo that may stand for a byte (that byte) or be part of a name."""
    raw = os.fsencode(text)
    pieces: list[tuple[bytes, int | None]] = []
    at = 0
    for m in _ESCAPE.finditer(raw):
        byte = int(m.group(1), 8)
        if (byte < 0x20 and byte != 0x09) or byte >= 0x7F \
                or (byte == 0x5C and _DIGITS.match(raw, m.end())):
            pieces += [(raw[at:m.start()], None), (m.group(), byte)]
            at = m.end()
    return [*pieces, (raw[at:], None)]


def _read(pieces: list[tuple[bytes, int | None]], as_printed: bool = False) -> bytes:
    r"""The name with each \#ooo read as its byte, or as printed (as_printed)."""
    return b"".join(raw if byte is None or as_printed else bytes([byte])
                    for raw, byte in pieces)


def rsync_unescape(text: str) -> str:
    r"""A name as rsync printed it (each unprintable byte as \#ooo), as it most
    likely is: each \#ooo that may stand for a byte read as that byte.

    Where the text does not say how long the name is, that reading is all there
    is: at worst another path is left out, which deletes nothing, and the run
    fails again as before."""
    return os.fsdecode(_read(_pieces(text)))


def _overflowing_dir(printed: str, length: int) -> tuple[str, bool] | None:
    """The directory of the name rsync could not fit, whose path (printed) has
    length bytes; with True if only a directory above it can be named. None if
    no reading has that length (the line was not read whole: a raw newline)."""
    pieces = _pieces(printed)
    ambiguous = sum(byte is not None for _, byte in pieces)
    as_text, rest = divmod(length - len(_read(pieces)), 4)  # each \#ooo: 1 byte or 5
    if rest or not 0 <= as_text <= ambiguous:
        return None
    if as_text in (0, ambiguous):  # one reading only: every \#ooo a byte, or none
        return os.path.dirname(os.fsdecode(_read(pieces, as_printed=as_text > 0))), False
    # Some \#ooo are bytes, some are part of names, and nothing says which: what
    # all readings share is the directory that holds the first such name.
    first = next(i for i, (_, byte) in enumerate(pieces) if byte is not None)
    before = b"".join(raw for raw, _ in pieces[:first])
    holder = before[:max(before.rfind(b"/"), 0)]
    below = b"/" in b"".join(raw for raw, _ in pieces[first:])
    return os.fsdecode(holder), below


def unreadable_line(line: str) -> tuple[str, str] | None:
    r"""(path to leave out, why) if this line of rsync's stderr says that it could
    not read a path of the source; the path is relative to wpath.

    A name too long for rsync is never listed, and no rule can name it (rsync
    discards a rule that long): its directory is left out, or the nearest one
    above whose rule fits (or that every reading of an ambiguous \#ooo holds)."""
    m = _OVERFLOW.match(line)
    if m:
        found = _overflowing_dir(m.group(2), MAXPATHLEN - 1 + int(m.group(1)))
        if found is None:
            return None  # not read whole: a newline in a name, say
        why = f"a name in it makes a path longer than rsync's limit of {MAXPATHLEN - 1} bytes"
        return _fitting(found[0], f"{why}, below it" if found[1] else why)
    m = _UNREADABLE.match(line)
    if m:
        return _fitting(rsync_unescape(m.group(1)).rstrip("/"), m.group(2))
    return None


def _fitting(path: str, why: str) -> tuple[str, str] | None:
    """path, or the nearest directory above it that a rule can name; None if
    that is wpath itself (nothing can be left out then)."""
    while path and len(os.fsencode(protect_rule(path))) >= MAXPATHLEN:
        path = os.path.dirname(path)
        why = f"{why}, below it"
    return (path, why) if path else None


def protect_rule(path: str) -> str:
    """The pattern that leaves path (relative to wpath) out of a run: rsync neither
    reads it on the source nor deletes it on the node."""
    return "/" + literal_pattern(path)


def unreadable(stderr: str) -> dict[str, str]:
    """The paths of the source rsync could not read (path -> why), if that is all
    its stderr says besides "the source changed"; else {} (a real failure)."""
    found: dict[str, str] = {}
    for line in stderr.splitlines():
        if not line.strip() or _SOURCE_CHANGED.match(line):
            continue
        hit = unreadable_line(line)
        if hit is None:
            return {}
        found.setdefault(*hit)
    return found


# ---- the same paths, read against the source tree (the daemon's edge)

_UNPRINTABLE = frozenset(b for b in range(256) if (b < 0x20 and b != 0x09) or b >= 0x7F)
_NAME_ESCAPE = re.compile(rb"\\#[0-9]{3}")  # a name's own "\#ddd", that rsync escapes


def could_print_as(name: bytes, printed: bytes) -> bool:
    r"""Whether rsync could print this name (one directory entry) as printed: each
    unprintable byte as \#ooo; a backslash that starts "\#ddd" as \#134, or
    as it is (across the end of a piece rsync writes); every other byte as it is."""
    if b"\\" not in printed:  # the name as it is, or not this name
        return name == printed and not _UNPRINTABLE.intersection(name)
    at = {0}  # where in printed the name's bytes so far can end
    for i, byte in enumerate(name):
        if byte in _UNPRINTABLE:
            ways = [b"\\#%03o" % byte]
        elif _NAME_ESCAPE.match(name, i):
            ways = [b"\\#134", b"\\"]
        else:
            ways = [bytes([byte])]
        at = {j + len(w) for j in at for w in ways if printed.startswith(w, j)}
        if not at:
            return False
    return len(printed) in at


def _fits(printed: str, length: int) -> bool:
    r"""Whether some reading of printed (each ambiguous \#ooo one byte or five)
    has length bytes."""
    pieces = _pieces(printed)
    as_text, rest = divmod(length - len(_read(pieces)), 4)
    return not rest and 0 <= as_text <= sum(byte is not None for _, byte in pieces)


def settle(root: int, stderr: str) -> dict[str, str]:
    """unreadable(stderr), each path found in the source tree (root: wpath
    opened) rather than guessed from how rsync printed it; {} if any of them
    is not there any more (a real failure, or the source changed)."""
    found: dict[str, str] = {}
    for line in stderr.splitlines():
        if not line.strip() or _SOURCE_CHANGED.match(line):
            continue
        m = _OVERFLOW.match(line)
        if m:
            hit = _walk(root, m.group(2), MAXPATHLEN - 1 + int(m.group(1)),
                        f"a name in it makes a path longer than rsync's limit of "
                        f"{MAXPATHLEN - 1} bytes")
        else:
            m = _UNREADABLE.match(line)
            hit = _walk(root, m.group(1).rstrip("/"), None, m.group(2)) if m else {}
        if not hit:
            return {}
        for path, why in hit.items():
            found.setdefault(path, why)
    return found


def _walk(root: int, printed: str, length: int | None, why: str) -> dict[str, str]:
    """The paths to leave out for one path rsync printed: down from wpath, the
    entries whose names could print as each part, while exactly one does.
    Several at one level: each of them (names made in that one directory).
    An overflow (length: of the whole path) leaves out the directory of the
    name too long, the nearest one above whose rule fits; else the path itself.
    {} if a part matches nothing (gone), or all that is left is wpath."""
    parts = printed.split("/")
    last = len(parts) - 1
    real: list[bytes] = []
    fd = os.dup(root)
    try:
        for i, part in enumerate(parts):
            rest = "/" + "/".join(parts[i + 1:]) if i < last else ""
            so_far = b"/".join(real)
            names = [name for name in map(os.fsencode, os.listdir(fd))
                     if could_print_as(name, os.fsencode(part))
                     and (length is None or _fits(rest, length - len(so_far) - bool(real)
                                                  - len(name)))]
            if not names:
                return {}
            if i == last and length is not None:  # the name too long: its directory
                return dict(filter(None, [_fitting(os.fsdecode(so_far), why)]))
            if len(names) > 1 or i == last:
                said = why if i == last else f"{why}, below it"
                return dict(filter(None, (_fitting(os.fsdecode(b"/".join([*real, name])), said)
                                          for name in names)))
            real.append(names[0])
            below = os.open(names[0], os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                            | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = below
    except OSError:
        return {}  # changed under us: not a directory any more, gone
    finally:
        os.close(fd)
    return {}


def classify(returncode: int, stderr: str = "") -> Outcome:
    """What an rsync exit status (and its stderr) means; unknown codes are retried,
    never fatal."""
    if returncode == 0:
        return Outcome.OK
    if returncode == 24:
        return Outcome.VANISHED
    if returncode == 23 and source_changed_only(stderr):
        return Outcome.SOURCE_CHANGED
    if returncode in _BROKEN or (returncode == 5 and _DAEMON_REFUSED.search(stderr)):
        return Outcome.BROKEN
    return Outcome.RETRY


def describe(returncode: int) -> str:
    if returncode < 0:
        return f"killed by signal {-returncode}"
    if returncode == 24:
        return "exit 24 (some files vanished before they could be transferred)"
    reason = _BROKEN.get(returncode) or _TRANSIENT.get(returncode) or "unknown error"
    return f"exit {returncode} ({reason})"


# ---- rsync_args: only options on the allowlist (rsyncopts.TABLE), checked at load

_NOT_LISTED = ("which is not on inosync's list of rsync options known to be safe "
               '(README, section "rsync options")')


def check_extra_args(args: Sequence[str]) -> None:
    """Raise ValueError naming the first item of rsync_args that is not allowed.

    Allowed: the options of rsyncopts.TABLE, in the spellings rsync accepts,
    with a value exactly when they take one, and a value their check accepts.
    Refused: every other option, and any word that is not an option (rsync
    would take it as one more source).
    """
    for arg, name, value in options(args):
        if not name or name == "--":
            raise ValueError(f"item {arg!r} is not an option: rsync would take it as "
                             "another source or destination")
        spelling = allowed(name)
        shown = arg if arg.split("=")[0] == name else f"{arg} ({name})"
        if spelling is None:
            instead = rsyncopts.INSTEAD.get(name)
            raise ValueError(f"has {shown}, {_NOT_LISTED}" + (f"; {instead}" if instead else ""))
        if value is not None and not spelling.value:
            raise ValueError(f"has {shown}: {name} takes no value (rsync would stop with "
                             "a usage error)")
        if value is None and spelling.value:
            raise ValueError(f"ends with {args[-1]!r}, which takes a value: rsync would take "
                             "the next word inosync adds (wpath, say) as that value")
        why = spelling.option.check(value) if spelling.option.check and value is not None \
            else None
        if why:
            raise ValueError(f"has {shown}: {name} {why}" if why.startswith("must") else
                             f"has {shown}: {why}")


def allowed(name: str) -> rsyncopts.Spelling | None:
    """What an option (as options() names it: "--zl", "-z") is on the allowlist, or None."""
    if name.startswith("--"):
        return rsyncopts.LONG.get(name)
    return rsyncopts.SHORT.get(name[1:]) if len(name) == 2 else None


def options(args: Sequence[str]) -> Iterator[tuple[str, str, str | None]]:
    """Each option rsync_args gives, as rsync (libpopt) reads them: (the item, the
    option's name, its value or None). A short cluster gives each letter ("-a",
    "-v"), and the value of an option that takes one ("--opt=v", "--opt v",
    "-Bv", "-B=v", "-B v") is never read as an option of its own; a word that
    is no option gives the name "". "--opt=v" and "-z=v" give a value even when
    the option takes none (rsync refuses those). check_extra_args, --verify,
    the replay and the config read rsync_args through this one walk, so they
    never disagree."""
    words = iter(args)
    for arg in words:
        if not arg.startswith("-") or arg == "-":
            yield arg, "", None  # not an option: rsync takes it as a path
            continue
        if arg.startswith("--"):
            name, has_value, value = arg.partition("=")
            if not has_value and name in rsyncopts.LONG_WITH_VALUE:
                yield arg, name, next(words, None)
            else:
                yield arg, name, value if has_value else None
            continue
        for i, letter in enumerate(arg[1:], 1):
            rest = arg[i + 1:]
            if letter in rsyncopts.SHORT_WITH_VALUE:  # popt skips one "=" after the letter
                yield arg, f"-{letter}", rest[1:] if rest.startswith("=") else \
                    rest or next(words, None)
                break
            if rest.startswith("="):  # "-z=n": rsync says -z takes no argument
                yield arg, f"-{letter}", rest[1:]
                break
            yield arg, f"-{letter}", None


def find_option(args: Sequence[str], long_name: str, letter: str = "") -> str | None:
    """The item of rsync_args that gives this option (long, or its short letter)."""
    short = f"-{letter}" if letter else None
    return next((arg for arg, name, _ in options(args) if name in (long_name, short)), None)


def option_values(args: Sequence[str], long_name: str) -> list[str]:
    """The values rsync_args gives a long option (--opt=value or --opt value)."""
    return [value for _, name, value in options(args) if name == long_name and value is not None]
