"""``inosync --verify``: how far each node has drifted from the source.

For every node, rsync runs the argv of a full sync plus ``--dry-run`` and
itemized output, so it lists what a sync would change and changes nothing,
neither the node nor wpath. Everything that full sync would change counts,
directory times included: the node must equal the source in everything
``-a`` carries. Files only on a node count too, unless the ``delete``
setting keeps them (deletepolicy.py): then they are listed apart, as drift
the policy allows. Nodes are checked in parallel, one rsync each.

The pure parts (``verify_argv``, ``parse_itemized``, ``report_line``,
``exit_code``, ``summary_line``, ``nagios_code``) are separate from
``verify``, which runs the children.
"""

from __future__ import annotations

import dataclasses
import re
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import IO

from . import deletepolicy
from .batch import plural
from .config import Config
from .escape import printable
from .rsync import child_environment, describe, find_option, full_argv
from .signals import StopDuringStartup

EXIT_IDENTICAL, EXIT_DIFFERS, EXIT_ERROR = 0, 1, 2
# The Nagios plugin convention (--nagios): 1 is WARNING there, nothing we report.
NAGIOS_OK, NAGIOS_CRITICAL, NAGIOS_UNKNOWN = 0, 2, 3
SAMPLE = 5  # differing paths named per node
NAMED = 3  # nodes named in the summary line, which a pager shows

# Our lines start with MARKER, so whatever else rsync_args makes rsync print
# (-v's totals, --stats) is ignored. rsync escapes control characters in
# names (a newline is "\#012"), so one line is one item whatever the name.
MARKER = b"@inosync@"
_OUT_FORMAT = "--out-format=" + MARKER.decode() + "%i@%n"
_ESCAPE = re.compile(rb"\\#([0-7]{3})")
VANISHED = 24  # files vanished from the source meanwhile: the rest was compared


class UnsafeArgv(AssertionError):
    """An argv for --verify that could write: a bug, never run."""


# Options in rsync_args that make the itemized list lie, and why.
_UNTRUSTED = {
    "--quiet": ("q", "silences the list of differences --verify reads (every node would "
                     "look identical)"),
    "--link-dest": ("", "hides files rsync would replace by a hard link (a drifted node "
                        "would look identical)"),
    "--ignore-times": ("I", "lists every file as different"),
}


def problem(config: Config) -> str | None:
    """Why --verify cannot trust rsync's output with this config, or None."""
    for name, (letter, why) in _UNTRUSTED.items():
        found = find_option(config.rsync_args, name, letter)
        if found:
            return (f"{config.where('rsync_args')}: rsync_args holds {found!r}, which {why}; "
                    "remove it")
    return None


def quiet_option(args: Sequence[str]) -> str | None:
    """The -q/--quiet in rsync_args, if any."""
    return find_option(args, "--quiet", "q")


def verify_argv(config: Config, dest: str, checksum: bool = False) -> list[str]:
    """The argv of a full sync of dest, made a dry run that itemizes every change."""
    # Always with --delete (a dry run): what only the node holds is listed, as
    # *deleting, also when the policy keeps it (parse_itemized counts it apart).
    opts = config.rsync_options(deletepolicy.Phase.START)
    opts = dataclasses.replace(opts, extra=(*opts.extra, *_ours(checksum)),
                               deletes=deletepolicy.deletes(True, deletepolicy.Phase.START))
    argv = full_argv(opts, config.wpath, dest)
    check_dry_run(argv)
    return argv


def _ours(checksum: bool) -> list[str]:
    # --dry-run last: rsync takes the last word of each option, so nothing in
    # rsync_args (which come before) can undo it.
    # --info=name1: a -vv in rsync_args would also list unchanged items, some
    # (hard links) looking like changes. --log-file=/dev/null: a --log-file in
    # rsync_args gets no entries for a dry run.
    return ["--itemize-changes", _OUT_FORMAT, "--info=name1", "--log-file=/dev/null",
            *(["--checksum"] if checksum else []), "--dry-run"]


def check_dry_run(argv: Sequence[str]) -> None:
    """Raise UnsafeArgv unless argv is certainly a dry run: --dry-run is its last
    option (the two words after it are source and destination) and a word of
    its own, right after our other options (so no option takes it as a value).

    Not an ``assert``: python -O would drop that.
    """
    if len(argv) < 5 or argv[-3] != "--dry-run" or argv[-4] not in (*_ours(True), *_ours(False)):
        raise UnsafeArgv(f"--verify argv does not end in our options, --dry-run, SRC DEST: "
                         f"{list(argv)}")


@dataclass
class Drift:
    """What the dry run of one node listed."""

    count: int = 0  # paths that differ
    dir_times: int = 0  # directories whose only difference is their mtime
    sample: list[tuple[str, bytes]] = field(default_factory=list)  # (item, name) first few
    # Paths only on the node that the delete setting keeps (not in count), and why.
    node_only: int = 0
    node_only_sample: list[tuple[str, bytes]] = field(default_factory=list)
    kept_by: str = ""
    # With excludes, dir_times are not in count: an excluded entry made or removed
    # changes its directory's mtime, which the daemon by design sends only with
    # the next full sync (excluded changes cost nothing), so they are allowed.
    dir_times_allowed: bool = False


def parse_itemized(lines: Iterable[bytes], keep: int = SAMPLE,
                   policy: deletepolicy.Policy = True, excludes: bool = False) -> Drift:
    """Count the paths an itemized dry run says would change.

    Each line is MARKER, rsync's %i (``>f+++++++++``, ``*deleting``,
    ``.d..t......``, ``cL+++++++++``, ``hf``...), "@", rsync's escaped %n.
    An item whose update type is "." and whose attribute columns are all
    "." or " " is unchanged (listed only with -vv/-ii) and does not count.
    A ``*deleting`` item (only on the node) counts apart, as node_only,
    when the delete policy keeps such files.
    """
    drift = Drift(kept_by=_kept_by(policy), dir_times_allowed=excludes)
    for line in lines:
        if not line.startswith(MARKER):
            continue
        item, sep, name = line[len(MARKER):].rstrip(b"\n").partition(b"@")
        if not sep or not _changed(item):
            continue
        if drift.kept_by and item.startswith(b"*deleting"):
            drift.node_only += 1
            if len(drift.node_only_sample) < keep:
                drift.node_only_sample.append(("*deleting", unescape(name)))
            continue
        if item.startswith(b".d") and item[2:].strip(b". ") == b"t":
            drift.dir_times += 1
            if excludes:
                continue
        drift.count += 1
        if len(drift.sample) < keep:
            drift.sample.append((item.decode("ascii", "replace").rstrip(), unescape(name)))
    return drift


_KEPT_BY = {
    False: "keeps node-only files",
    "startup": "keeps node-only files until the next start or reload",
    "running": "keeps node-only files that inosync did not see deleted on the source",
}


def _kept_by(policy: deletepolicy.Policy) -> str:
    """Why files only on a node are allowed drift under this policy ("" if not)."""
    if not deletepolicy.keeps_node_only(policy):
        return ""
    return f"{deletepolicy.shown(policy)} {_KEPT_BY[policy]}"


def _changed(item: bytes) -> bool:
    if item.startswith(b"*"):  # a message: "*deleting"
        return True
    if item[:1] != b".":  # sent (<, >), created or changed locally (c), hard link (h)
        return True
    return bool(item[2:].strip(b". "))


def unescape(name: bytes) -> bytes:
    """rsync's output form of a name (``\\#ooo`` for some bytes) back to the name."""
    return _ESCAPE.sub(lambda m: bytes([int(m.group(1), 8)]), name)


def shown(name: bytes) -> str:
    """A name on one line, in rsync's escape form: ``\\#ooo`` for control
    characters, bytes that are not UTF-8, and the backslash itself."""
    out = []
    for ch in name.decode("utf-8", "surrogateescape"):
        code = ord(ch)
        if code < 0x20 or code == 0x7F or ch == "\\" or 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\#{code & 0xFF:03o}")
        else:
            out.append(ch)
    return "".join(out)


@dataclass
class Result:
    dest: str
    drift: Drift | None = None  # None: not checked
    error: str = ""
    reason: str = ""  # the error without rsync's own words, for the summary line


def report_line(result: Result) -> str:
    """The node's line. Escaped (escape.printable) as the log is: rsync's stderr
    over ssh is the remote's own, whose escape sequences would drive the
    terminal of whoever runs --verify."""
    dest = printable(result.dest)
    if result.drift is None:
        return f"{dest}: error: {printable(result.error)}"
    drift = result.drift
    allowed = _node_only(drift) + _dir_times_allowed(drift)
    if not drift.count:
        return f"{dest}: identical{allowed}"
    examples = ", ".join(f"{item} {shown(name)}" for item, name in drift.sample)
    more = ", ..." if drift.count > len(drift.sample) else ""
    times = (f"; {drift.dir_times} only in directory mtime"
             if drift.dir_times and not drift.dir_times_allowed else "")
    verb = "differs" if drift.count == 1 else "differ"
    return (f"{dest}: {plural(drift.count, 'path')} {verb}{times} (e.g. "
            f"{examples}{more}){allowed}")


def _dir_times_allowed(drift: Drift) -> str:
    if not (drift.dir_times and drift.dir_times_allowed):
        return ""
    mtimes = "directory mtime differs" if drift.dir_times == 1 else "directory mtimes differ"
    return (f"; {drift.dir_times} {mtimes}, allowed: changes of excluded entries (the next "
            "full sync sets them)")


def _node_only(drift: Drift) -> str:
    """"; 2 paths only on the node, allowed: delete = False keeps ... (e.g. ...)"."""
    if not drift.node_only:
        return ""
    names = ", ".join(shown(name) for _, name in drift.node_only_sample)
    more = ", ..." if drift.node_only > len(drift.node_only_sample) else ""
    return (f"; {plural(drift.node_only, 'path')} only on the node, allowed: "
            f"{drift.kept_by} (e.g. {names}{more})")


def exit_code(results: Iterable[Result]) -> int:
    """0 all identical, 1 some node differs, 2 some node could not be checked.

    An error wins over a difference: an unchecked node may differ too, so
    "only drift" would be a claim nobody made.
    """
    code = EXIT_IDENTICAL
    for r in results:
        if r.drift is None:
            return EXIT_ERROR
        if r.drift.count:
            code = EXIT_DIFFERS
    return code


def nagios_code(results: Iterable[Result]) -> int:
    """--nagios: 2 CRITICAL some node differs, else 3 UNKNOWN some node could not
    be checked, else 0 OK.

    Unlike exit_code, a difference wins: it is known, and the monitoring
    plugin guidelines rank CRITICAL above UNKNOWN (a page for a known drift
    must not turn into "unknown" because another node was down meanwhile).
    """
    results = list(results)
    if any(r.drift is not None and r.drift.count for r in results):
        return NAGIOS_CRITICAL
    if any(r.drift is None for r in results):
        return NAGIOS_UNKNOWN
    return NAGIOS_OK


_STATE = {NAGIOS_OK: "OK", NAGIOS_CRITICAL: "CRITICAL", NAGIOS_UNKNOWN: "UNKNOWN"}


def summary_line(results: Sequence[Result]) -> str:
    """The first line of --verify, a Nagios plugin's status line with perfdata:
    ``CRITICAL: 1 of 3 nodes differ (node b: 4 paths) | nodes=3 ...``."""
    total = len(results)
    differ = [r for r in results if r.drift is not None and r.drift.count]
    unknown = [r for r in results if r.drift is None]
    parts = []
    if differ:
        verb = "differs" if total == 1 else "differ"
        parts.append(f"{len(differ)} of {plural(total, 'node')} {verb} (" + _named(
            differ, lambda r: plural(r.drift.count if r.drift else 0, "path")) + ")")
    if unknown:
        of = " of " + plural(total, "node") if not differ else ""
        parts.append(f"{len(unknown)}{of} not checked ("
                     + _named(unknown, lambda r: r.reason or r.error) + ")")
    if not parts:
        parts.append(f"{plural(total, 'node')} identical")
    text = _STATE[nagios_code(results)] + ": " + "; ".join(parts)
    return f"{plugin_text(text)} | {perfdata(results)}"


def _named(results: Sequence[Result], what: Callable[[Result], str]) -> str:
    named = ", ".join(f"node {r.dest}: {what(r)}" for r in results[:NAMED])
    return named + (", ..." if len(results) > NAMED else "")


def plugin_text(text: str) -> str:
    """text as one line without "|", which starts perfdata in a plugin's output."""
    return printable(text).replace("|", "\\x7c")


def perfdata(results: Sequence[Result]) -> str:
    """Nagios perfdata, 'label'=value;warn;crit;min;max: node counts (max the
    number of nodes), and the paths that differ on the nodes checked; crit 0
    on the differences (a range "0": anything above 0 is critical)."""
    total = len(results)
    differ = [r.drift.count for r in results if r.drift is not None and r.drift.count]
    unknown = sum(r.drift is None for r in results)
    identical = total - len(differ) - unknown
    return (f"nodes={total};;;0 identical={identical};;;0;{total} "
            f"differ={len(differ)};;0;0;{total} unknown={unknown};;;0;{total} "
            f"paths_differ={sum(differ)};;0;0")


# ---- the children


@dataclass
class _Child:
    dest: str
    proc: subprocess.Popen[bytes]
    out: IO[bytes]
    err: IO[bytes]


def verify(config: Config, checksum: bool = False) -> list[Result]:
    """Dry-run every node in parallel; their results in rnodes order.

    Each rsync's output goes to a temporary file, not a pipe: a big drift
    would fill a pipe nobody reads while we wait for another node.
    """
    children: list[_Child] = []
    try:
        for dest in config.rnodes:
            out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
            try:
                proc = subprocess.Popen(verify_argv(config, dest, checksum),
                                        stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                        env=child_environment())
            except OSError:
                out.close()
                err.close()
                raise
            children.append(_Child(dest, proc, out, err))
        excluded = bool(config.excludes.patterns)
        return [_result(child, config.delete, excluded) for child in children]
    except StopDuringStartup:
        for child in children:
            if child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        raise
    finally:
        for child in children:
            child.proc.wait()
            child.out.close()
            child.err.close()


def _result(child: _Child, policy: deletepolicy.Policy = True, excludes: bool = False) -> Result:
    code = child.proc.wait()
    if code not in (0, VANISHED):
        child.err.seek(0)
        lines = [ln for ln in child.err.read().decode(errors="replace").splitlines() if ln.strip()]
        detail = f": {lines[0].strip()}" if lines else ""
        return Result(child.dest, error=f"rsync {describe(code)}{detail}",
                      reason=f"rsync {describe(code)}")
    child.out.seek(0)
    return Result(child.dest, parse_itemized(child.out, policy=policy, excludes=excludes))
