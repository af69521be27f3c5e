"""The man page's list of settings, made from the code (inosync/config.py).

    python doc/man_settings.py       (prints the list; doc/build_man.py puts it in)

Each setting the configuration file may set (config.KNOWN) gets one entry:
its type, what it accepts and its default, then what it does. The type and
range of a number or a boolean and every default are read from the code
(the Config dataclass and the checkers of config._CHECKS); only the words
are written here, in DOCS. A setting added to the code without an entry in
DOCS stops the build, and tests/test_manpage.py fails, until it is described.
doc/build_man.py puts the list into doc/inosync.8.rst between the BEGIN and
END lines, and the list of rsync options (from inosync.rsyncopts.TABLE, as
README's table) into its own section.
"""

from __future__ import annotations

import dataclasses
import sys
import textwrap
from pathlib import Path
from typing import Any, NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inosync import config, rsyncopts  # noqa: E402
from inosync.watch import EVENT_FLAGS  # noqa: E402

SETTINGS_BEGIN = ".. BEGIN settings (made by doc/man_settings.py: edit the words there)"
SETTINGS_END = ".. END settings"
OPTIONS_BEGIN = ".. BEGIN rsync options (made by doc/man_settings.py from inosync/rsyncopts.py)"
OPTIONS_END = ".. END rsync options"

REQUIRED = "none (required)"  # the default shown for a setting that must be set
UNSET = "unset"  # for the settings that Config does not hold (rpath, rexcludes_from)


class Doc(NamedTuple):
    """The words of one entry. kind and accepts only where the code cannot say
    (a number's and a boolean's come from its checker); unit: what a number counts."""

    text: str
    kind: str = ""
    accepts: str = ""
    unit: str = ""


def _events() -> str:
    names = sorted(n for n in EVENT_FLAGS if n.startswith("IN_"))
    return "a non-empty list of inotify event names: " + ", ".join(names) + " (or ALL_EVENTS)"


# In the order of the page: alphabetical, as ssh_config(5), so a new one has its place.
DOCS: dict[str, Doc] = {
    "allow_empty_wpath": Doc(
        "Opt in to an empty *wpath* (or one holding only lost+found or excluded entries), "
        "which is refused otherwise: the sync of an unmounted disk's bare mount point would "
        "delete everything on the nodes."),
    "allow_system_wpath": Doc(
        "Opt in to a *wpath* that is or holds a system directory (*/*, */var*, */etc*...), "
        "which is refused otherwise; exclude what must not be copied."),
    "contimeout": Doc(
        "rsync's **--contimeout**: seconds to connect to an rsync daemon "
        "(rsync://\\ *host*/...) before the run fails and is retried.", unit="seconds"),
    "delete": Doc(
        "What the nodes lose, as lsyncd's *delete*: True keeps every node equal to *wpath* "
        "(**--delete** in every run); 'startup' deletes only in the whole-tree sync of a "
        "start or reload; 'running' deletes exactly the paths seen deleted while running; "
        "False never deletes. Any value but True turns the move replay off. See "
        "**DELETE POLICY**.",
        kind="True, False or a string", accepts="True, 'startup', 'running' or False"),
    "edelay": Doc(
        "Seconds from the first change after a quiet spell until the batch of changes "
        "goes out, one rsync per node.", unit="seconds"),
    "emask": Doc(
        "The inotify events that mark a path as changed. The default catches every change "
        "inosync replicates: create, write, truncate, delete, rename, chmod, touch.",
        kind="list of strings", accepts=_events()),
    "full_threshold": Doc(
        "A batch of more paths than this, or than a quarter of the tree's entries (whichever "
        "is smaller, but never below 1000), is sent as one whole-tree rsync instead of a list.",
        unit="paths"),
    "logfile": Doc(
        "With **-d**, log to this file instead of syslog. Reopened by itself when logrotate "
        "moves it (no signal needed), and on HUP.",
        kind="string (a path) or None",
        accepts="a path that only root can write, on the way too (see **DESCRIPTION**); not "
                "inside *wpath* unless excluded, never inside a local node"),
    "max_parallel": Doc(
        "The most rsync runs at once, to all nodes together. When more nodes have changes "
        "waiting, they take turns: the one that has waited longest starts first (among those "
        "that became ready together: one needing a full sync, then the one furthest behind), "
        "so none waits for more than a round of the others; USR1 and the statusfile show "
        "them as waiting for a run slot (statusfile state 'queued'). A node waiting to retry "
        "holds no slot. New ssh connections (at start, for nodes a reload adds or whose ssh "
        "command it changes, after a connection was lost) open 10 at once, then 20 a second.",
        unit="runs"),
    "max_pending": Doc(
        "A node with more paths waiting than this (or a batch being gathered) collapses to "
        "one whole-tree rsync: an event storm costs bounded memory.", unit="paths"),
    "metrics_file": Doc(
        "Metrics for Prometheus in its text format, for node_exporter's textfile collector "
        "(*--collector.textfile.directory*): replaced atomically (fsync, rename, mode 0644) "
        "within a second of a change and at least every 15 seconds. Per node (label "
        "``node``, as configured) ``inosync_node_up``, ``_pending_paths``, "
        "``_full_sync_pending``, ``_lag_seconds``, ``_last_success_timestamp_seconds``, "
        "``_failures_total``, ``_runs_total{kind}``, ``_bytes_sent_total``; and "
        "``inosync_watches``, ``inosync_watch_limit``, ``inosync_overflows_total``, "
        "``inosync_build_info{version}``; every series has ``wpath``. Counters restart at 0 "
        "with the daemon. Runs get rsync's **--info=stats1** (before *rsync_args*: their "
        "**-q** leaves the bytes uncounted). **-p** writes none; a reload that moves or "
        "drops it removes the old file.",
        kind="string (a path) or None",
        accepts="a path ending in .prom that only root can write, on the way too; not inside "
                "*wpath* unless excluded, never inside a local node"),
    "pidfile": Doc(
        "Held (flock) while the daemon runs; a second daemon on a held pidfile is refused "
        "(exit 1). **--pidfile** overrides it; with **-d** and neither, */run/inosync.pid*. "
        "In the foreground none is written unless one is named.",
        kind="string (a path) or None",
        accepts="a path that only root can write, on the way too; not inside *wpath* unless "
                "excluded, never inside a local node"),
    "progress_interval": Doc(
        "While the tree is being watched at start and while a full sync runs, a progress "
        "line every this many seconds (directories watched; per node bytes and files sent, "
        "percent done), also in *statusfile* and the USR1 status. On a terminal a live line "
        "shows it every second.", unit="seconds"),
    "replay_moves": Doc(
        "Replay the renames of a batch on each node before its rsync, so moved data is not "
        "sent again. Turned off by some *rsync_args* (see **RSYNC OPTIONS**)."),
    "rescan_interval": Doc(
        "Seconds between whole syncs of the directories the inotify watch limit left "
        "unwatched (each time their watches are tried again).", unit="seconds"),
    "resync_interval": Doc(
        "Seconds from the end of a node's last whole-tree sync to its next one: repairs what "
        "changed on a node behind inosync's back (edited by hand, a restored backup); counted "
        "across restarts (the last one is recorded in state_dir). A reload that changes what a "
        "node holds, a queue overflow the scan cannot account for, and a start without a "
        "usable checkpoint do a whole-tree sync too.",
        unit="seconds"),
    "retry_max": Doc(
        "The longest wait between retries of a failing node (the backoff doubles up to it); "
        "errors that a retry cannot fix by itself are retried every *retry_max* seconds. "
        "Not below *retry_min*.", unit="seconds"),
    "retry_min": Doc(
        "Seconds before the first retry of a failed run to a node; each further failure "
        "doubles the wait, up to *retry_max*.", unit="seconds"),
    "rexcludes": Doc(
        "rsync **--exclude** patterns, relative to *wpath*: passed to rsync, and events in "
        "matching paths are dropped (excluded directories are not even watched).",
        kind="list of strings", accepts="rsync exclude patterns (rsync(1), FILTER RULES)"),
    "rexcludes_from": Doc(
        "A file with more exclude patterns, one per line, **#** and **;** comments, as "
        "rsync's **--exclude-from**; relative to the configuration file's directory.",
        kind="string (a path)",
        accepts="a regular file that only root can write, on the way too"),
    "rnodes": Doc(
        "The copies to keep (the nodes), one rsync destination each. A local node must not "
        "be *wpath*, lie inside it, contain it or overlap another local node; an ssh node "
        "must name a directory (not *host*: alone, nor the root or a system directory).",
        kind="list of strings",
        accepts="at least one of: a local path, host:path or user\\@host:path (over ssh), "
                "rsync://host/module/path"),
    "rpath": Doc(
        "A plain helper for building *rnodes* (``rnodes = [\"www1:\" + rpath]``), as in "
        "inosync 0.2; inosync itself does not read it.",
        kind="any", accepts="anything"),
    "rspeed": Doc(
        "Bandwidth limit per rsync (rsync's **--bwlimit**); 0 means no limit.", unit="KB/s"),
    "rsync": Doc(
        "The rsync program.",
        kind="string (a path or a program name)",
        accepts="an executable file; a name without / is looked up in PATH"),
    "rsync_args": Doc(
        "Extra rsync arguments, one list item per argument (never through a shell), such "
        "as ``[\"--hard-links\", \"--acls\", \"--xattrs\"]``. Anything else is refused at "
        "load, and so is any word that is not an option.",
        kind="list of strings",
        accepts="only the options listed in **RSYNC OPTIONS**, in any spelling rsync takes"),
    "ssh": Doc(
        "The ssh command that rsync and the move replay use for *host*:*path* nodes, one "
        "list item per word. ssh runs with BatchMode=yes: accept each node's host key "
        "once beforehand (see **EXAMPLES**).",
        kind="list of strings", accepts="a non-empty command, one word per item"),
    "ssh_control": Doc(
        "Keep one ssh connection per ssh node open between batches (OpenSSH ControlMaster, "
        "sockets in a private directory under TMPDIR). Read at start only. An *ssh* command "
        "that sets Control* options (or **-S**) itself is used exactly as given."),
    "state_dir": Doc(
        "Where inosync keeps what must outlive a restart (see **FILES**). Made 0700 if "
        "missing. Read at start only.",
        kind="string (a path)",
        accepts="a directory that only root can write, on the way too; inside *wpath* only "
                "if excluded, never inside a local node"),
    "statusfile": Doc(
        "The state as JSON, replaced atomically after each rsync, when a batch starts, every "
        "*progress_interval* during long work, on USR1 and at exit: ``state`` (starting, "
        "running, or stopped with ``exit_status``) and per node ``state``, ``pending``, "
        "``pending_paths``, ``waiting_paths``, ``sync_in``, ``pending_full``, ``failures``, "
        "``last_ok``, ``last_error``, ``next_retry``, ``last_full_sync`` and ``progress``.",
        kind="string (a path) or None",
        accepts="a path that only root can write, on the way too; not inside *wpath* unless "
                "excluded, never inside a local node"),
    "timeout": Doc(
        "rsync's **--timeout**: seconds without I/O before a run fails and is retried, so "
        "a dead node never holds its slot. **--verify** waits as long for a node.",
        unit="seconds"),
    "wpath": Doc(
        "The directory to watch; its contents are replicated into each node. Symlinks on "
        "the way are followed (and must belong to root); a deploy that swaps it is followed.",
        kind="string (a path)",
        accepts="an existing directory, not empty (unless *allow_empty_wpath*), holding no "
                "system directory (unless *allow_system_wpath*)"),
}


class Entry(NamedTuple):
    name: str
    kind: str
    accepts: str
    default: str
    text: str


def settings() -> list[str]:
    """Every name the configuration file may set, as the code says (config.KNOWN)."""
    return sorted(config.KNOWN)


def literal(value: Any) -> str:
    """A default as one would write it in the configuration file."""
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    raise TypeError(f"no literal for the default {value!r}")


def default(name: str) -> str:
    """The default of a setting, read from the Config dataclass."""
    fields = {f.name: f for f in dataclasses.fields(config.Config)}
    if name in config.SHOWN_DEFAULTS:  # sized for the machine: its rule, not this one's value
        return config.SHOWN_DEFAULTS[name]
    if name not in fields:
        return UNSET
    f = fields[name]
    if f.default is not dataclasses.MISSING:
        return literal(f.default)
    if f.default_factory is not dataclasses.MISSING:
        return literal(f.default_factory())
    return REQUIRED


def number(value: float) -> str:
    if float(value).is_integer():
        return f"{int(value):,}" if value >= 100_000 else str(int(value))
    return f"{value:g}"


def typed(name: str, doc: Doc) -> tuple[str, str]:
    """(type, accepted values) of one setting: from its checker where it says."""
    check = config._CHECKS.get(name)
    if isinstance(check, config.Number):
        if doc.kind or doc.accepts:
            raise ValueError(f"doc/man_settings.py: {name} is a number: its type and range "
                             "come from its checker in inosync/config.py, not from DOCS")
        kind = "integer" if check.integer else "number"
        unit = f" ({doc.unit})" if doc.unit else ""
        span = f"{number(check.minimum)} to {number(check.maximum)}"
        return kind + unit, (f"0 (never), or {span}" if check.never else span)
    if check is config._bool:
        return "boolean", "True or False"
    if not (doc.kind and doc.accepts):
        raise ValueError(f"doc/man_settings.py: DOCS[{name!r}] needs kind= and accepts= "
                         "(the code cannot say them)")
    return doc.kind, doc.accepts


def entries() -> list[Entry]:
    """One entry per setting, alphabetical; ValueError names a setting without words."""
    missing = [n for n in settings() if n not in DOCS]
    if missing:
        raise ValueError("doc/man_settings.py: no entry in DOCS for the setting(s) "
                         f"{', '.join(missing)} of inosync/config.py: describe each, then "
                         "run python doc/build_man.py")
    stale = [n for n in DOCS if n not in config.KNOWN]
    if stale:
        raise ValueError(f"doc/man_settings.py: DOCS describes {', '.join(stale)}, which "
                         "inosync/config.py no longer has")
    return [Entry(name, *typed(name, DOCS[name]), default(name), DOCS[name].text)
            for name in settings()]


WIDTH = 64  # what a line of an entry holds on an 80-column terminal (man indents 14)


def _field(label: str, value: str) -> list[str]:
    """One line of an entry's line block, wrapped by hand: man prints a line block
    as it is (no filling), so a long default must not run past the screen."""
    first, *rest = textwrap.wrap(f"{label}: {value}", WIDTH, break_long_words=False,
                                 break_on_hyphens=False)
    return [f"    | {first}", *(f"    |     {line}" for line in rest)]


def settings_rst() -> str:
    """The settings as a definition list (rst), for the CONFIGURATION section."""
    lines = []
    for e in entries():
        lines += [f"**{e.name}**", *_field("Type", e.kind), *_field("Accepts", e.accepts),
                  *_field("Default", e.default), "", f"    {e.text}", ""]
    return "\n".join(lines)


def options_rst() -> str:
    """The rsync options rsync_args may hold (inosync.rsyncopts.TABLE), as README's table."""
    lines = []
    for option in rsyncopts.TABLE:
        value = "=**\\ *V*" if option.value else "**"
        words = [f"**-{option.short}**" + (" *V*" if option.value else "")] \
            if option.short else []
        words += [f"**{name}{value}" for name in option.long]
        words += [f"**{name}**" for name in option.no]
        off = rsyncopts.OFF in (option.replay, option.no_replay)
        why = option.why[0].upper() + option.why[1:] + (" *Replay off.*" if off else "")
        lines += [", ".join(words), f"    {_escape(why)}", ""]
    return "\n".join(lines)


def _escape(text: str) -> str:
    """The rsync table's plain text as rst: a backslash or * is meant literally."""
    return text.replace("\\", "\\\\").replace("*", "\\*").replace("`", "\\`")


def splice(source: str) -> str:
    """source (the man page's rst) with both generated blocks made anew."""
    for begin, end, body in ((SETTINGS_BEGIN, SETTINGS_END, settings_rst()),
                             (OPTIONS_BEGIN, OPTIONS_END, options_rst())):
        head, found, rest = source.partition(begin + "\n")
        if not found or end not in rest:
            raise ValueError(f"doc/inosync.8.rst: lines {begin!r} ... {end!r} not found")
        source = head + begin + "\n\n" + body + "\n" + end + rest[rest.index(end) + len(end):]
    return source


if __name__ == "__main__":
    sys.stdout.write(settings_rst())
