"""The rsync options rsync_args may hold: one allowlist, read by the config
check (rsync.check_extra_args) and by the move replay (replay.blocker,
replay.sets_perms).

An option is here only if it is known to be safe for a one-way mirror that
inosync keeps identical to wpath, run as root with ``--delete``: it changes
how data travels, what is kept of each file, or what rsync prints on stdout;
never what a run deletes, skips or writes outside the node, who owns a file
on the node, or where a node is. Everything else is refused at load, in every
spelling. The spellings are rsync 3.5.0's (libpopt): exact long names (no
abbreviations: ``--compr`` is unknown to rsync too), ``--opt=v`` or ``--opt
v``, short letters alone or in clusters (``-zH``), ``-Bv``, ``-B=v`` or ``-B
v``, and only the ``--no-`` forms rsync's own table has.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

# What an option means for the move replay (replay.py):
NEUTRAL = "neutral"  # a replayed rename leaves the node as rsync sending the data would
OFF = "off"  # turns the replay off (the replay would bypass what it does)
PERMS = "perms"  # neutral, and rsync sets permissions (the replay may make parents)
NO_PERMS = "no perms"  # neutral, and rsync does not set permissions (no parents made)


@dataclass(frozen=True)
class Allowed:
    """One rsync option rsync_args may hold."""

    long: tuple[str, ...]  # its long spellings ("--compress-level", "--zl"); () for -D
    short: str = ""  # its letter, if it has one
    value: bool = False  # takes a value: --opt=v, --opt v, -Bv, -B=v, -B v
    no: tuple[str, ...] = ()  # the --no- forms rsync accepts (they take no value)
    replay: str = NEUTRAL  # what the option means for the replay
    no_replay: str = NEUTRAL  # what its --no- forms mean for it
    check: Callable[[str], str | None] | None = None  # why a value is refused, or None
    why: str = ""  # why it is safe, what inosync does with it (README's table)


_INFO_WORDS = ("BACKUP", "COPY", "DEL", "FLIST", "MISC", "MOUNT", "NAME", "NONREG",
               "PROGRESS", "REMOVE", "SKIP", "STATS", "SYMSAFE", "ALL", "NONE")
_CHECKSUMS = ("auto", "xxh128", "xxh3", "xxh64", "xxhash", "md5", "md4", "sha1")


def _info(value: str) -> str | None:
    # --info=help prints a help text and exits 0: every run would say "synced".
    for word in value.split(","):
        m = re.fullmatch(r"([A-Za-z]*)(\d*)", word)
        if word and (m is None or m.group(1).upper() not in _INFO_WORDS):
            return (f"{word!r} is not one of rsync's --info words "
                    f"({', '.join(w.lower() for w in _INFO_WORDS)}, each with a level)")
    return None


def _checksum(value: str) -> str | None:
    # "none" makes every --checksum run fail, and a run without it check nothing.
    for name in value.split(","):
        if name not in _CHECKSUMS:
            return f"{name!r} is not one of {', '.join(_CHECKSUMS)}"
    return None


_CHMOD_CLAUSE = re.compile(r"[DF]?(?:([0-7]+)|[ugoa]*[-+=]([rwxXst]*))")


def _chmod(value: str) -> str | None:
    # A file that is not setuid or setgid on the source must not become so on
    # the node: its owner never chose that.
    for clause in value.split(","):
        m = _CHMOD_CLAUSE.fullmatch(clause)
        if m is None:
            return f"{clause!r} is not a --chmod rule rsync understands"
        octal, letters = m.groups()
        adds = "-" not in clause
        if (octal and int(octal, 8) & 0o6000) or (adds and letters and "s" in letters):
            return (f"{clause!r} makes files setuid or setgid on the nodes that are not "
                    "on the source")
    return None


_PROGRAM = re.compile(r"[A-Za-z0-9_./+~][A-Za-z0-9_./+~-]*")


def _program(value: str) -> str | None:
    # The remote shell runs it: any word, quote or shell syntax there ($IFS, ;,
    # `...`) would add options that pass none of these checks. A path's usual
    # characters only.
    if _PROGRAM.fullmatch(value):
        return None
    return (f"must name one program (got {value!r}), a path of letters, digits and "
            "_ . / + ~ - only: the remote shell runs it, and options or shell syntax "
            "there would pass none of these checks")


_OUTPUT = "output on rsync's stdout, which inosync does not judge"
_TRANSFER = "changes only how data travels or is checked; the node ends up the same"
_KEPT = "keeps more of each file as it is on the source"
_IMPLIED = "already part of the -a inosync passes"
_DELETE = ("when rsync deletes (before, during or after the transfer): the same files go, "
           "also in batches (--delete-missing-args)")

TABLE: tuple[Allowed, ...] = (
    # -- what rsync prints (stdout; errors alone go to stderr, which judges each run)
    Allowed(("--verbose",), "v", no=("--no-verbose", "--no-v"), why=_OUTPUT),
    Allowed(("--quiet",), "q", why=_OUTPUT + " (--verify refuses it: it hides the list)"),
    Allowed(("--no-motd",), why="an rsync daemon's greeting is not printed"),
    Allowed(("--stats",), why=_OUTPUT),
    Allowed(("--human-readable",), "h", no=("--no-human-readable", "--no-h"),
            why=_OUTPUT + "; the progress reader takes its units (-h is help only alone, "
                          "and inosync never runs rsync with it alone)"),
    Allowed(("--progress",), no=("--no-progress",),
            why=_OUTPUT + "; inosync's own --info=progress2 comes after it and wins"),
    Allowed(("--itemize-changes",), "i", no=("--no-itemize-changes", "--no-i"), why=_OUTPUT),
    Allowed(("--out-format", "--log-format"), value=True, why=_OUTPUT),
    Allowed(("--info",), value=True, check=_info,
            why=_OUTPUT + "; only rsync's --info words (--info=help prints help and exits 0, "
                          "which would count as synced)"),
    # -- how data travels
    Allowed(("--compress",), "z", no=("--no-compress", "--no-z"), why=_TRANSFER),
    Allowed(("--old-compress",), why=_TRANSFER),
    Allowed(("--new-compress",), why=_TRANSFER),
    Allowed(("--compress-choice", "--zc"), value=True, why=_TRANSFER),
    Allowed(("--compress-level", "--zl"), value=True, why=_TRANSFER),
    Allowed(("--compress-threads", "--zt"), value=True, why=_TRANSFER),
    Allowed(("--skip-compress",), value=True, why=_TRANSFER),
    Allowed(("--whole-file",), "W", no=("--no-whole-file", "--no-W"), why=_TRANSFER),
    Allowed(("--block-size",), "B", value=True, why=_TRANSFER),
    Allowed(("--checksum",), "c", no=("--no-checksum", "--no-c"),
            why="compares contents, not size and time, to find changed files (after a "
                "replayed rename inosync adds --checksum itself, after rsync_args)"),
    Allowed(("--checksum-choice", "--cc"), value=True, check=_checksum,
            why=_TRANSFER + " (not 'none': it checks nothing)"),
    Allowed(("--ignore-times",), "I",
            why="sends every file again; nothing is skipped (--verify refuses it: every "
                "file would look changed)"),
    Allowed(("--ipv4",), "4", why=_TRANSFER),
    Allowed(("--ipv6",), "6", why=_TRANSFER),
    Allowed(("--max-alloc",), value=True, why="a memory limit of rsync itself"),
    Allowed(("--fsync",), why="rsync waits until each file is on disk"),
    Allowed(("--preallocate",), why=_TRANSFER),
    Allowed(("--sparse",), "S", no=("--no-sparse", "--no-S"), why=_TRANSFER),
    # Not --partial, -P or --inplace: an interrupted run would leave a truncated
    # or half-written file where the node's complete old one was, served as long
    # as the daemon is down; without them rsync renames a finished file into place.
    Allowed(("--no-partial",), why="rsync's default: a file appears on the node only "
                                   "once complete"),
    Allowed(("--no-inplace",), why="rsync's default: a file appears on the node only "
                                   "once complete"),
    Allowed(("--no-insecure-links",),
            why="rsync's default: it refuses symlinks owned by others on the node's path"),
    Allowed(("--confine-root",), value=True, replay=OFF,
            why="rsync refuses node paths that resolve outside DIR; turns the move replay "
                "off (the replay does not check it)"),
    # -- what is kept of each file
    Allowed(("--archive",), "a", replay=PERMS, why=_IMPLIED),
    Allowed(("--recursive",), "r", why=_IMPLIED + " (--no-r is refused)"),
    Allowed(("--links",), "l", why=_IMPLIED + " (--no-l is refused)"),
    Allowed(("--perms",), "p", no=("--no-perms", "--no-p"), replay=PERMS, no_replay=NO_PERMS,
            why=_IMPLIED + "; with --no-perms rsync gives new files no setuid or setgid bit, "
                           "and the move replay makes no missing parents"),
    Allowed(("--executability",), "E", why=_KEPT),
    Allowed(("--chmod",), value=True, check=_chmod,
            why="changes modes on the node, but never adds a setuid or setgid bit"),
    Allowed(("--times",), "t", no=("--no-times", "--no-t"), why=_IMPLIED),
    Allowed(("--omit-dir-times",), "O", no=("--no-omit-dir-times", "--no-O"),
            why="directory times are not kept (for file systems that cannot)"),
    Allowed(("--omit-link-times",), "J", no=("--no-omit-link-times", "--no-J"),
            why="symlink times are not kept (for file systems that cannot)"),
    Allowed(("--atimes",), "U", no=("--no-atimes", "--no-U"), why=_KEPT),
    Allowed(("--open-noatime",), no=("--no-open-noatime",),
            why="reading the source leaves its access times alone"),
    Allowed(("--owner",), "o", why=_IMPLIED + " (--no-o and every other change of owner is "
                                              "refused)"),
    Allowed(("--group",), "g", why=_IMPLIED + " (--no-g is refused)"),
    Allowed(("--devices",), why=_IMPLIED), Allowed(("--specials",), why=_IMPLIED),
    Allowed((), "D", why="--devices --specials, " + _IMPLIED + " (--no-D is refused)"),
    Allowed(("--hard-links",), "H", no=("--no-hard-links", "--no-H"), why=_KEPT),
    Allowed(("--acls",), "A", no=("--no-acls", "--no-A"), why=_KEPT),
    Allowed(("--xattrs",), "X", no=("--no-xattrs", "--no-X"), why=_KEPT),
    Allowed(("--numeric-ids",), no=("--no-numeric-ids",),
            why="owners are kept by number rather than by name: the same owner either way"),
    # -- deletion
    Allowed(("--delete",), why="inosync passes it itself"),
    Allowed(("--del", "--delete-during"), why=_DELETE),
    Allowed(("--delete-before",), why=_DELETE),
    Allowed(("--delete-delay",), why=_DELETE),
    Allowed(("--delete-after",), why=_DELETE),
    Allowed(("--force",), why="a directory replaced by a file on the source is deleted on "
                              "the node even if not empty (rsync does so with --delete)"),
    Allowed(("--max-delete",), value=True, replay=OFF,
            why="stops deletions past NUM (then every run fails, loudly); turns the move "
                "replay off (a rename over a file deletes it uncounted)"),
    # -- the other end
    Allowed(("--rsync-path",), value=True, check=_program, replay=OFF,
            why="one program, no options; turns the move replay off (that program may work "
                "elsewhere, or as someone else, than the replay)"),
)


@dataclass(frozen=True)
class Spelling:
    """What one spelling of an allowed option means."""

    option: Allowed
    negated: bool  # a --no- form

    @property
    def value(self) -> bool:
        return self.option.value and not self.negated

    @property
    def replay(self) -> str:
        return self.option.no_replay if self.negated else self.option.replay


def _spellings() -> tuple[dict[str, Spelling], dict[str, Spelling]]:
    longs: dict[str, Spelling] = {}
    letters: dict[str, Spelling] = {}
    for option in TABLE:
        for name in option.long:
            longs[name] = Spelling(option, False)
        for name in option.no:
            longs[name] = Spelling(option, True)
        if option.short:
            letters[option.short] = Spelling(option, False)
    return longs, letters


LONG, SHORT = _spellings()

# Every rsync 3.5.0 option that takes a value, allowed or not. rsync.options()
# reads rsync_args as rsync does, so it must know them all: the value of one
# (-B q, --suffix -q, --out-format --dry-run) is never read as an option.
LONG_WITH_VALUE = frozenset({
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
})
SHORT_WITH_VALUE = frozenset("BefTM@")

# Settings of inosync's own that refused options would bypass: said in the refusal.
INSTEAD = {
    "--rsh": "set ssh instead", "-e": "set ssh instead",
    "--timeout": "set timeout instead", "--contimeout": "set contimeout instead",
    "--bwlimit": "set rspeed instead", "--no-bwlimit": "set rspeed instead",
    "--exclude": "use rexcludes", "--include": "use rexcludes", "--filter": "use rexcludes",
    "-f": "use rexcludes", "--exclude-from": "use rexcludes_from",
    "--dry-run": "use inosync -p", "-n": "use inosync -p",
}
