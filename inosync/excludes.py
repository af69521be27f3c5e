"""Decide, exactly as rsync 3.x does, whether a path is excluded by --exclude rules.

inosync filters inotify events with the same patterns it hands to rsync, so
the two must agree on every path.  The rules mirrored here (rsync's exclude.c
and wildmatch.c, checked against the real binary by the tests):

* Each pattern is an old-style rule: an optional "- " (exclude) or "+ "
  (include) prefix, or a lone "!" that clears the rules given before it.
  The first rule that matches a path decides; unmatched paths are kept.
* A trailing "/" (on a pattern longer than one byte) restricts the rule to
  directories and is removed before anything else is looked at.
* A pattern containing none of "*?[" is a literal string; backslashes in it
  are ordinary characters.  Otherwise it is a wildcard pattern: "*" does not
  cross "/", "**" (or more stars) does, "?" is one byte but not "/", "[...]"
  is a byte class (never matching "/"), and "\\" escapes the next byte.  A
  malformed class or a trailing backslash makes the pattern match nothing.
* A leading "/" anchors at the transfer root.  An unanchored pattern without
  "**" is matched against exactly as many trailing path elements as it has
  slashes plus one (so a slash-free one sees only the final name).  An
  unanchored pattern with "**" may match starting at the root or after any
  "/"; if it starts with "**", a "/" is put in front of the path instead, so
  "**/x" also matches a top-level "x".
* A pattern ending in "***" also sees directories with a "/" appended, so
  "dir/***" matches "dir" itself as well as everything below it.
* All of this works on bytes (os.fsencode), as rsync does: "?" is one byte,
  class ranges compare byte values and [:alpha:]-style classes are ASCII.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .paths import read_regular_file

__all__ = ["ExcludeSyntaxError", "Excludes", "read_exclude_file"]

# rsync drops (with an error message) any rule this long: MAXPATHLEN on Linux.
_MAX_PATTERN_BYTES = 4096

_SLASH, _BACKSLASH, _STAR, _QUESTION = 0x2F, 0x5C, 0x2A, 0x3F
_OPEN, _CLOSE, _COLON, _DASH = 0x5B, 0x5D, 0x3A, 0x2D
_NEVER = b"(?!)"  # regex that matches nothing


def _byte_range(first: str, last: str) -> frozenset[int]:
    return frozenset(range(ord(first), ord(last) + 1))


def _build_char_classes() -> dict[bytes, frozenset[int]]:
    # ASCII only: rsync runs ctype in a C or UTF-8 locale, where no byte
    # >= 0x80 belongs to any class.
    digit = _byte_range("0", "9")
    upper, lower = _byte_range("A", "Z"), _byte_range("a", "z")
    alnum = digit | upper | lower
    graph = _byte_range("!", "~")
    return {
        b"alnum": alnum,
        b"alpha": upper | lower,
        b"blank": frozenset(b" \t"),
        b"cntrl": frozenset(range(0x20)) | {0x7F},
        b"digit": digit,
        b"graph": graph,
        b"lower": lower,
        b"print": graph | {0x20},
        b"punct": graph - alnum,
        b"space": frozenset(b" \t\n\v\f\r"),
        b"upper": upper,
        b"xdigit": digit | _byte_range("A", "F") | _byte_range("a", "f"),
    }


_CHAR_CLASSES = _build_char_classes()


class ExcludeSyntaxError(ValueError):
    """An exclude pattern that rsync would reject or that we cannot honour."""


def _at(pat: bytes, i: int) -> int:
    """Byte at i, or 0 past the end (mirrors reading a C string's NUL)."""
    return pat[i] if i < len(pat) else 0


def _parse_class(pat: bytes, i: int) -> tuple[frozenset[int] | None, int]:
    """Parse the bracket expression whose "[" precedes pat[i].

    Returns the set of bytes it matches and the index after its "]", or None
    when wildmatch would abort (no "]", unknown [:name:]), which makes the
    whole pattern unmatchable.
    """
    negate = _at(pat, i) in b"!^"
    if negate:
        i += 1
    members: set[int] = set()
    ch, prev = _at(pat, i), 0
    while True:  # a do-while: the first byte is a member even if it is "]"
        if not ch:
            return None, i
        if ch == _BACKSLASH:
            i += 1
            ch = _at(pat, i)
            if not ch:
                return None, i
            members.add(ch)
        elif ch == _DASH and prev and _at(pat, i + 1) not in (0, _CLOSE):
            end, i = _range_end(pat, i + 1)
            if end is None:
                return None, i
            members.update(range(prev, end + 1))
            ch = 0  # a range end cannot start another range
        elif ch == _OPEN and _at(pat, i + 1) == _COLON and _has_class_name(pat, i):
            named, i = _named_class(pat, i)
            if named is None:
                return None, i
            members |= named
            ch = 0  # like a range end, a [:name:] cannot start a range
        else:
            members.add(ch)
        prev = ch
        i += 1
        ch = _at(pat, i)
        if ch == _CLOSE:
            break
    if negate:
        members = set(range(1, 256)) - members
    # wildmatch refuses "/" after evaluating any class, even a negated one.
    return frozenset(members - {_SLASH}), i + 1


def _range_end(pat: bytes, i: int) -> tuple[int | None, int]:
    """Upper bound of a range at pat[i], which may be backslash-escaped."""
    ch = pat[i]
    if ch == _BACKSLASH:
        i += 1
        ch = _at(pat, i)
        if not ch:
            return None, i
    return ch, i


def _has_class_name(pat: bytes, i: int) -> bool:
    """Whether the "[:" at pat[i] is a [:name:] rather than a literal "[".

    wildmatch looks only at the first "]" after the "[:" and takes it as a
    class name when ":" precedes it; with no "]" at all it aborts, which we
    report as a (malformed) class too.
    """
    end = pat.find(b"]", i + 2)
    return end < 0 or (end - (i + 2) >= 1 and pat[end - 1] == _COLON)


def _named_class(pat: bytes, i: int) -> tuple[frozenset[int] | None, int]:
    """Members of the [:name:] at pat[i] and the index of its final "]"."""
    end = pat.find(b"]", i + 2)
    if end < 0:
        return None, i
    return _CHAR_CLASSES.get(pat[i + 2 : end - 1]), end


def _class_regex(allowed: frozenset[int]) -> bytes:
    if not allowed:
        return _NEVER
    parts: list[bytes] = []
    values = sorted(allowed)
    start = prev = values[0]
    for value in values[1:] + [-1]:
        if value == prev + 1:
            prev = value
            continue
        parts.append(b"\\x%02x" % start if start == prev else b"\\x%02x-\\x%02x" % (start, prev))
        start = prev = value
    return b"[" + b"".join(parts) + b"]"


def _wild_regex(pat: bytes) -> bytes | None:
    """Translate a wildcard pattern to a regex body; None if it can never match."""
    out: list[bytes] = []
    i = 0
    while i < len(pat):
        ch = pat[i]
        if ch == _BACKSLASH:
            if i + 1 == len(pat):
                return None  # wildmatch compares the text with the NUL: no match
            out.append(re.escape(pat[i + 1 : i + 2]))
            i += 2
        elif ch == _STAR:
            stars = len(pat[i:]) - len(pat[i:].lstrip(b"*"))
            out.append(b".*" if stars > 1 else b"[^/]*")
            i += stars
        elif ch == _QUESTION:
            out.append(b"[^/]")
            i += 1
        elif ch == _OPEN:
            allowed, i = _parse_class(pat, i + 1)
            if allowed is None:
                return None
            out.append(_class_regex(allowed))
        else:
            out.append(re.escape(pat[i : i + 1]))
            i += 1
    return b"".join(out)


@dataclass(frozen=True)
class _Rule:
    include: bool
    dir_only: bool
    lead_slash: bool  # pattern starts with "**": match against "/" + path
    dir_slash: bool  # pattern ends with "***": directories get a "/" appended
    regex: re.Pattern[bytes]
    # How the rule can be looked up instead of tried (see _Index), or None:
    # ("tail", k, text): the last k+1 elements of the path are text;
    # ("path", 0, text): the path is text; ("suffix"/"prefix", 0, text): the
    # final element ends or starts with text; ("gate", 0, text): it can only
    # match if the final element starts with text (then the regex decides).
    key: tuple[str, int, bytes] | None = None
    # Anchored rules only (None otherwise): one regex per path element the
    # rule can match, for may_match_below; see _anchored_steps.
    steps: tuple[re.Pattern[bytes], ...] | None = None

    def matches(self, path: bytes, is_dir: bool) -> bool:
        if self.dir_only and not is_dir:
            return False
        text = b"/" + path if self.lead_slash else path
        if self.dir_slash and is_dir:
            text += b"/"
        return self.regex.fullmatch(text) is not None


def _encode_pattern(raw: object) -> bytes:
    if not isinstance(raw, str):
        raise TypeError(f"exclude pattern must be str, not {type(raw).__name__}")
    try:
        pat = os.fsencode(raw)
    except UnicodeEncodeError as exc:
        raise ExcludeSyntaxError(f"exclude pattern {raw!r} cannot be encoded: {exc}") from None
    if b"\0" in pat:
        raise ExcludeSyntaxError(f"exclude pattern {raw!r} contains a NUL byte")
    return pat


def _split_prefix(raw: str, pat: bytes) -> tuple[bool, bytes]:
    """Strip an old-style "- "/"+ " prefix; returns (is_include, pattern)."""
    include = pat.startswith(b"+ ")
    if include or pat.startswith(b"- "):
        pat = pat[2:]
    if not pat:
        what = "is empty" if not raw else "has a rule prefix but no pattern"
        raise ExcludeSyntaxError(f"exclude pattern {raw!r} {what}")
    if len(pat) >= _MAX_PATTERN_BYTES:
        raise ExcludeSyntaxError(
            f"exclude pattern {raw[:40]!r}... is {len(pat)} bytes long; "
            f"rsync discards patterns of {_MAX_PATTERN_BYTES} bytes or more"
        )
    return include, pat


def _compile_rule(include: bool, pat: bytes) -> _Rule | None:
    """Compile one pattern (prefix already removed); None if it matches nothing."""
    dir_only = len(pat) > 1 and pat.endswith(b"/")
    if dir_only:
        pat = pat[:-1]
    wild = re.search(rb"[*?\[]", pat) is not None
    # rsync looks for "**" in the raw text, so an escaped "\**" counts too.
    wild2 = wild and b"**" in pat
    lead_slash = wild2 and pat.startswith(b"**")
    anchored = pat.startswith(b"/")
    unanchored = pat[1:] if anchored else pat
    body = _wild_regex(unanchored) if wild else re.escape(unanchored)
    if body is None:
        return None
    key = _lookup_key(anchored, wild, wild2, unanchored)
    if anchored or lead_slash:
        prefix = b""
    elif wild2:
        prefix = b"(?:.*/)?"  # may start at the root or after any "/"
    else:
        # Exactly the last (slash count + 1) elements, even if the pattern
        # could match fewer: a "/" inside [...] is counted too.
        prefix = b"(?:.*/)?(?=(?:[^/]*/){%d}[^/]*\\Z)" % pat.count(b"/")
    return _Rule(
        include=include,
        dir_only=dir_only,
        lead_slash=lead_slash,
        dir_slash=wild2 and pat.endswith(b"***"),
        regex=re.compile(prefix + body, re.DOTALL),
        key=key,
        steps=_anchored_steps(unanchored, wild) if anchored else None,
    )


def _anchored_steps(pat: bytes, wild: bool) -> tuple[re.Pattern[bytes], ...]:
    """Split an anchored pattern (leading "/" removed) into per-element regexes.

    Up to its first "**", an anchored pattern matches exactly one path
    element per "/"-separated part, as "*", "?" and "[...]" never match "/".
    So element k of a path it matches must fullmatch step k.  The part holding
    that "**" (which crosses "/") is the last step: its text before the "**"
    must match a prefix of the element, after which anything may follow.
    Parts are cut only at a "/" outside a class: "[x/]" is one element's
    byte class, and an escaped "\\/" still stands for the separator.
    """
    if not wild:  # a literal: backslashes are ordinary bytes
        return tuple(re.compile(re.escape(part)) for part in pat.split(b"/"))
    parts: list[bytes] = []
    start = i = 0
    while i < len(pat):
        ch = pat[i]
        if ch == _STAR and _at(pat, i + 1) == _STAR:
            parts.append(_element_regex(pat[start:i]) + b".*")
            break
        if ch == _SLASH or (ch == _BACKSLASH and _at(pat, i + 1) == _SLASH):
            parts.append(_element_regex(pat[start:i]))
            i += 1 if ch == _SLASH else 2
            start = i
        elif ch == _BACKSLASH:
            i += 2
        elif ch == _OPEN:
            i = _parse_class(pat, i + 1)[1]
        else:
            i += 1
    else:
        parts.append(_element_regex(pat[start:]))
    return tuple(re.compile(part, re.DOTALL) for part in parts)


def _element_regex(text: bytes) -> bytes:
    # Never None in practice: the whole pattern compiled and the cuts fall
    # between its tokens.  Should it be, matching anything is the safe side.
    body = _wild_regex(text)
    return b".*" if body is None else body


def _lookup_key(anchored: bool, wild: bool, wild2: bool,
                pat: bytes) -> tuple[str, int, bytes] | None:
    """The key under which a rule can be found by a dict lookup, or None.

    Literal patterns (no "*?[": backslashes are plain characters) match
    exactly the whole path (anchored) or its last slash-count + 1 elements;
    "*text" and "text*" without a slash match the final element's end or
    start. Another wildcard pattern without a slash or "**" sees only the
    final element, which must start with the text before its first special
    character ("log.[0-9]*": "log."): a gate, after which the regex decides.
    Anything else is tried as a regex.
    """
    if not wild:
        return ("path", 0, pat) if anchored else ("tail", pat.count(b"/"), pat)
    if anchored or wild2 or b"/" in pat:
        return None
    special = re.search(rb"[*?\[\\]", pat)
    assert special is not None  # wild
    if pat.startswith(b"*") and not re.search(rb"[*?\[\\]", pat[1:]):
        return ("suffix", 0, pat[1:])
    if pat.endswith(b"*") and special.start() == len(pat) - 1:
        return ("prefix", 0, pat[:-1])
    if special.start() > 0:
        return ("gate", 0, pat[: special.start()])
    return None


class _Index:
    """The rules, arranged so that a path meets only the few that can match it.

    rsync tries the rules in order and the first match wins. Here the simple
    rules (see _lookup_key) are found by dict lookups, and only the others
    are tried one by one, and only those before the first simple match: the
    answer is the same, at a cost that does not grow with the number of
    literal names and suffixes (a list of 10,000 file names, say).
    """

    def __init__(self, rules: Sequence[_Rule]) -> None:
        self.rules = rules
        self.tried: list[int] = []  # rules with no key, in order
        self.tables: dict[tuple[str, int], dict[bytes, list[int]]] = {}
        for i, rule in enumerate(rules):
            if rule.key is None:
                self.tried.append(i)
            else:
                kind, k, text = rule.key
                self.tables.setdefault((kind, k), {}).setdefault(text, []).append(i)
        # Affix lengths present, so a name is cut only where a key could be.
        self.lengths = {kind: sorted({len(t) for (kd, _), table in self.tables.items()
                                      if kd == kind for t in table})
                        for kind in ("suffix", "prefix", "gate")}

    def first(self, path: bytes, is_dir: bool) -> _Rule | None:
        """The first rule that matches path, as rsync's own loop would find it."""
        best = len(self.rules)
        for (kind, k), table in self.tables.items():
            exact = kind != "gate"
            for text in self._texts(kind, k, path):
                for i in table.get(text, ()):
                    if i >= best:
                        break
                    rule = self.rules[i]
                    if (is_dir or not rule.dir_only) and (exact or rule.matches(path, is_dir)):
                        best = i
                        break
        for i in self.tried:
            if i >= best:
                break
            if self.rules[i].matches(path, is_dir):
                return self.rules[i]
        return self.rules[best] if best < len(self.rules) else None

    def _texts(self, kind: str, k: int, path: bytes) -> list[bytes]:
        if kind == "path":
            return [path]
        if kind == "tail":
            cut = len(path)
            for _ in range(k + 1):
                cut = path.rfind(b"/", 0, cut)
                if cut < 0:
                    break
            else:
                return [path[cut + 1 :]]
            return [path] if path.count(b"/") == k else []
        name = path[path.rfind(b"/") + 1 :]
        lengths = [n for n in self.lengths[kind] if n <= len(name)]
        if kind == "suffix":
            return [name[len(name) - n :] for n in lengths]
        return [name[:n] for n in lengths]


def _compile_rules(patterns: Iterable[str]) -> tuple[_Rule, ...]:
    rules: list[_Rule] = []
    for raw in patterns:
        pat = _encode_pattern(raw)
        if pat == b"!":
            rules.clear()  # "!" alone resets the list, like rsync's clear rule
            continue
        rule = _compile_rule(*_split_prefix(raw, pat))
        if rule is not None:
            rules.append(rule)
    return tuple(rules)


class Excludes:
    """A compiled list of rsync --exclude patterns."""

    def __init__(self, patterns: Sequence[str]) -> None:
        if isinstance(patterns, (str, bytes)):
            raise TypeError("patterns must be a sequence of str, not a single string")
        self.patterns: tuple[str, ...] = tuple(patterns)
        self._rules = _compile_rules(self.patterns)
        self._index = _Index(self._rules)
        # Ancestor directories repeat across events; remember their verdicts.
        self._dir_excluded = functools.lru_cache(maxsize=4096)(self._level_excluded_dir)

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def __repr__(self) -> str:
        return f"Excludes({list(self.patterns)!r})"

    def matches(self, relpath: str, is_dir: bool) -> bool:
        """True if the rules exclude this path itself, ignoring its ancestors.

        With "+ " include rules present this is rsync's verdict for the
        path's own level: the first matching rule must be an exclude.
        """
        return self._level_excluded(os.fsencode(relpath), is_dir)

    def excluded(self, relpath: str, is_dir: bool) -> bool:
        """True if rsync would skip this path: it or an ancestor dir is excluded."""
        if not self._rules:
            return False
        path = os.fsencode(relpath)
        slash = path.find(b"/")
        while slash >= 0:
            if self._dir_excluded(path[:slash]):
                return True
            slash = path.find(b"/", slash + 1)
        return self._level_excluded(path, is_dir)

    def decides(self, relpath: str, is_dir: bool) -> bool:
        """True if a rule (include or exclude) matches this path's own level: a
        rule placed after these on rsync's command line is never reached for it."""
        return bool(self._rules) and self._index.first(os.fsencode(relpath), is_dir) is not None

    def may_match_below(self, dirpath: str) -> bool:
        """Could an exclude rule in effect match anything strictly below dirpath?

        Conservative: False only when no path under the directory dirpath
        (relative to the transfer root, "/"-separated) can be excluded,
        whatever names and types it holds.  Renaming a directory for which
        this is True may carry excluded, node-local data to a place where it
        is no longer excluded, where rsync would then delete it.  "+ " rules
        are ignored: they protect nothing we could count on.  An unanchored
        rule can match below any directory.  An anchored one can unless an
        element of dirpath fails the rule's part at the same depth (up to a
        part holding "**", which matches across "/"); when the rule matches
        dirpath itself or an ancestor, everything below is excluded already.
        """
        elements = os.fsencode(dirpath).split(b"/") if dirpath else []
        for rule in self._rules:
            if rule.include:
                continue
            if rule.steps is None:
                return True
            # zip compares the common prefix only: a rule with more steps may
            # match below dirpath; one with as many or fewer matches dirpath or
            # an ancestor (or, ending at a "**", anything from there on).
            if all(step.fullmatch(element) for step, element in zip(rule.steps, elements)):
                return True
        return False

    def _level_excluded_dir(self, path: bytes) -> bool:
        return self._level_excluded(path, True)

    def _level_excluded(self, path: bytes, is_dir: bool) -> bool:
        if not path:
            return False  # rsync never filters the transfer root
        rule = self._index.first(path, is_dir)
        return rule is not None and not rule.include


def read_exclude_file(path: str) -> list[str]:
    """Read patterns the way rsync --exclude-from does.

    Lines end at "\\n" or "\\r" (so CRLF files work, and a lone "\\r" also
    splits), empty lines and lines starting with "#" or ";" are skipped, and
    nothing else is stripped: leading or trailing spaces belong to the
    pattern.  Rule prefixes ("- ", "+ ", "!") are left for Excludes to parse.
    OSError propagates unchanged.
    """
    data, _ = read_regular_file(path)  # a FIFO must not hang a start or reload
    patterns = []
    for line in re.split(rb"[\r\n]", data):
        line = line.split(b"\0", 1)[0]  # rsync handles lines as C strings
        if line and line[:1] not in (b"#", b";"):
            patterns.append(os.fsdecode(line))
    return patterns
