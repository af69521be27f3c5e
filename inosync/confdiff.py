"""What a reload changed: the lines the daemon logs after SIGHUP.

A pure function of the old and the new Config. Every setting is compared (a
new field of Config shows up here by itself); what a list holds is said as
entries added and removed, so a long exclude list does not hide its change.
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Callable, Sequence

from .config import Config

SHOWN_VALUE = 100  # characters of a value; longer ones keep their start and end
SHOWN_ENTRIES = 5  # entries of a list said added (or removed); the rest are counted

# Not settings (path, base_dir, setting_lines), or said on lines of their own.
_OWN_LINES = {"path", "base_dir", "setting_lines", "configured_wpath", "wpath", "rnodes",
              "rexcludes", "excludes"}
# Lists of independent entries: said as what was added and removed. (ssh is a
# command, whose words mean something only together: old -> new.)
_ENTRY_LISTS: dict[str, Callable[[str], str]] = {"emask": str, "rsync_args": shlex.quote}


def changes(old: Config, new: Config) -> list[str]:
    """One line per change from old to new, or ["configuration unchanged"]."""
    lines = []
    wpath = (old.configured_wpath or old.wpath, new.configured_wpath or new.wpath)
    if wpath[0] != wpath[1]:
        lines.append(f"wpath: {shorten(wpath[0])} -> {shorten(wpath[1])}")
    elif old.wpath != new.wpath:  # the same spelling, another tree (a symlink a deploy moved)
        lines.append(f"wpath: {shorten(wpath[1])} now leads to {shorten(new.wpath)} (was "
                     f"{shorten(old.wpath)})")
    lines += [f"node removed: {n}" for n in old.rnodes if n not in new.rnodes]
    lines += [f"node added: {n}" for n in new.rnodes if n not in old.rnodes]
    if set(old.rnodes) == set(new.rnodes) and old.rnodes != new.rnodes:
        lines.append("rnodes: the same nodes in another order")
    lines += entries("excludes", old.excludes.patterns, new.excludes.patterns, repr)
    for f in dataclasses.fields(Config):
        if f.name in _OWN_LINES:
            continue
        before, after = getattr(old, f.name), getattr(new, f.name)
        if before == after:
            continue
        if f.name in _ENTRY_LISTS:
            lines += entries(f.name, before, after, _ENTRY_LISTS[f.name])
        else:
            lines.append(f"{f.name}: {shorten(show(before))} -> {shorten(show(after))}")
    return lines or ["configuration unchanged"]


def entries(name: str, old: Sequence[str], new: Sequence[str],
            quote: Callable[[str], str]) -> list[str]:
    """The line saying which entries of a list were added and removed, if any."""
    if tuple(old) == tuple(new):
        return []
    added = [quote(e) for e in new if e not in old]
    removed = [quote(e) for e in old if e not in new]
    parts = [f"{what} {_some(items)}" for what, items in (("added", added),
                                                         ("removed", removed)) if items]
    # Only the order (or a repeat) changed: it matters to excludes, the first match wins.
    return [f"{name}: " + ("; ".join(parts) or "the same entries in another order")]


def _some(items: list[str]) -> str:
    shown = ", ".join(shorten(i) for i in items[:SHOWN_ENTRIES])
    more = len(items) - SHOWN_ENTRIES
    return f"{shown} and {more} more" if more > 0 else shown


def show(value: object) -> str:
    """A setting's value as the file would read it, shortly: 10 not 10.0, a list
    of words as a command line, None as none."""
    if value is None:
        return "none"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, tuple) and all(isinstance(v, str) for v in value):
        return shlex.join(value) if value else "(empty)"
    return str(value)


def shorten(text: str, limit: int = SHOWN_VALUE) -> str:
    """text, or its start and end around "..." when longer than limit: the start
    of a command line and the end of a path say the most."""
    if len(text) <= limit:
        return text
    tail = limit // 3
    return f"{text[:limit - tail - 3]}...{text[-tail:]}"
