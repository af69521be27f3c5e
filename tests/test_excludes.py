"""Tests for inosync.excludes; the real rsync binary is the oracle where present."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inosync.excludes import Excludes, ExcludeSyntaxError, read_exclude_file

RSYNC = shutil.which("rsync")
needs_rsync = pytest.mark.skipif(RSYNC is None, reason="rsync is not installed")

# A tree maps a name to None (a file) or to a subtree (a directory).
Tree = dict[str, "Tree | None"]


def fs(raw: bytes) -> str:
    """A file name as inosync sees it: bytes decoded with os.fsdecode."""
    return os.fsdecode(raw)


# ---------------------------------------------------------------------------
# helpers shared by the rsync oracle tests


def make_tree(root: Path, tree: Tree) -> None:
    root.mkdir()
    for name, sub in tree.items():
        if sub is None:
            (root / name).touch()
        else:
            make_tree(root / name, sub)


def walk(tree: Tree, prefix: str = "") -> Iterator[tuple[str, bool]]:
    for name, sub in tree.items():
        path = prefix + name
        yield path, sub is not None
        if sub is not None:
            yield from walk(sub, path + "/")


def _unescape(line: bytes) -> bytes:
    # rsync prints unprintable bytes (and a backslash before '#') as \#ooo.
    return re.sub(rb"\\#([0-7]{3})", lambda m: bytes([int(m[1], 8)]), line)


def run_rsync(src: Path, filter_args: list[str]) -> subprocess.CompletedProcess[bytes]:
    """Dry-run `rsync -a` from src into an empty dir, listing what it would send."""
    dst = src.parent / "dst"
    dst.mkdir(exist_ok=True)
    assert RSYNC is not None
    argv = [RSYNC, "-an", "--out-format=%n", *filter_args, f"{src}/", f"{dst}/"]
    env = {**os.environ, "LC_ALL": "C"}  # ASCII output, escapes for the rest
    return subprocess.run(argv, capture_output=True, env=env, check=False)


def rsync_kept(src: Path, filter_args: list[str]) -> set[str]:
    """Paths (relative to src) that `rsync -a` would transfer."""
    proc = run_rsync(src, filter_args)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    lines = (_unescape(line) for line in proc.stdout.splitlines())
    return {fs(line).removesuffix("/") for line in lines if line and line != b"./"}


def our_kept(tree: Tree, excludes: Excludes) -> set[str]:
    return {path for path, is_dir in walk(tree) if not excludes.excluded(path, is_dir)}


def assert_agrees_with_rsync(tmp: Path, tree: Tree, patterns: list[str]) -> None:
    make_tree(tmp / "src", tree)
    args = [f"--exclude={p}" for p in patterns]
    try:
        excludes = Excludes(patterns)
    except ExcludeSyntaxError:
        # Then rsync must refuse them too (exit code 1: syntax or usage error).
        assert run_rsync(tmp / "src", args).returncode == 1, patterns
        return
    assert our_kept(tree, excludes) == rsync_kept(tmp / "src", args), patterns


# ---------------------------------------------------------------------------
# 1. hand-written examples of each rule

# (patterns, relpath, is_dir, expected result of excluded())
CASES: list[tuple[list[str], str, bool, bool]] = [
    # a slash-free pattern matches the final component at any depth
    (["*.o"], "a.o", False, True),
    (["*.o"], "src/deep/a.o", False, True),
    (["*.o"], "a.o.c", False, False),
    (["core"], "x/core", True, True),
    (["core"], "x/core2", False, False),
    # "*" and "?" stay within a component; "?" is one byte
    (["a*"], "abc", False, True),
    (["/a*"], "a/b", False, True),  # via the excluded ancestor "a"
    (["/a*c"], "ab/c", False, False),
    (["?"], "x", False, True),
    (["?"], "xy", False, False),
    (["?"], fs("é".encode()), False, False),  # two bytes in UTF-8
    (["??"], fs("é".encode()), False, True),
    (["a?b"], "a\nb", False, True),
    # character classes
    (["[ab]x"], "bx", False, True),
    (["[ab]x"], "cx", False, False),
    (["[!a]x"], "bx", False, True),
    (["[!a]x"], "ax", False, False),
    (["[^a]x"], "bx", False, True),
    (["[a-c]"], "b", False, True),
    (["[c-a]"], "b", False, False),  # reversed range matches nothing
    (["[]a]"], "]", False, True),  # a leading "]" is a member
    (["[!]]"], "x", False, True),
    (["[a-]"], "-", False, True),
    (["[[:digit:]]*"], "7up", False, True),
    (["[[:alpha:]]*"], "7up", False, False),
    (["[[:punct:]]"], "*", False, True),
    (["[[:space:]]"], "\n", False, True),
    (["[[:upper:][:digit:]]"], "Q", False, True),
    (["[[:x]"], ":", False, True),  # no ":]", so "[" and ":" and "x" are members
    (["[\\]]"], "]", False, True),
    (["a[!x]b"], "a/b", False, False),  # no class matches "/"
    # malformed: rsync silently matches nothing
    (["[ab"], "[ab", False, False),
    (["[ab"], "a", False, False),
    (["[[:bogus:]]"], "b", False, False),
    (["*\\"], "x\\", False, False),  # trailing backslash in a wildcard pattern
    # backslash escapes only when the pattern has a wildcard
    (["a\\b"], "a\\b", False, True),  # literal: the backslash is a character
    (["a\\b"], "ab", False, False),
    (["x\\"], "x\\", False, True),
    (["a\\b*"], "abc", False, True),  # wildcard: "\b" is just "b"
    (["a\\b*"], "a\\bc", False, False),
    (["a\\*"], "a*", False, True),
    (["a\\*"], "ab", False, False),
    (["\\[ab]"], "[ab]", False, True),
    (["\\[ab]"], "a", False, False),
    (["[ab]"], "[ab]", False, False),
    # leading "/" anchors at the transfer root
    (["/top"], "top", False, True),
    (["/top"], "d/top", False, False),
    (["/d/top"], "d/top", False, True),
    (["/"], "x", False, False),
    # trailing "/" matches directories only
    (["build/"], "build", True, True),
    (["build/"], "build", False, False),
    (["build/"], "x/build/y.c", False, True),
    (["*/"], "f", False, False),
    (["*/"], "d", True, True),
    # an inner "/" matches the last N+1 elements of the path
    (["a/b"], "a/b", False, True),
    (["a/b"], "x/a/b", False, True),
    (["a/b"], "xa/b", False, False),
    (["a/b"], "b", False, False),
    (["a/*/c"], "x/a/q/c", False, True),
    (["a/*/c"], "a/q/r/c", False, False),
    (["a/b/"], "x/a/b", True, True),
    (["a[/x]b"], "axb", False, False),  # the "/" in the class still counts
    (["a[/x]b"], "d/axb", False, False),
    # "**" crosses "/"; it may start at the root or after any "/"
    (["a/**"], "a/x/y", False, True),
    (["a/**"], "a", True, False),
    (["a/**/b"], "a/b", False, False),  # "**" does not collapse "/**/"
    (["a/**/b"], "q/a/x/y/b", False, True),
    (["a**"], "ab/c", False, True),
    (["a**"], "x/ab", False, True),
    (["a**"], "xa/c", False, False),
    (["**/x"], "x", False, True),  # a leading "**" may match nothing
    (["**/x"], "d/e/x", False, True),
    (["**x"], "d/ex", False, True),
    (["/**/x"], "x", False, False),
    (["/**/x"], "d/x", False, True),
    # "dir/***" is the dir itself plus everything below
    (["dir/***"], "dir", True, True),
    (["dir/***"], "dir", False, False),
    (["dir/***"], "q/dir/f", False, True),
    (["/dir/***"], "q/dir", True, False),
    (["a\\***"], "a*x", True, True),  # "\*" then "**"; dirs get a "/" appended
    (["d***"], "d", True, True),
    # rule prefixes, first match wins
    (["- x"], "x", False, True),
    (["- - x"], "- x", False, True),
    (["+ keep.o", "*.o"], "keep.o", False, False),
    (["+ keep.o", "*.o"], "other.o", False, True),
    (["*.o", "+ keep.o"], "keep.o", False, True),
    (["+ d/", "d/keep"], "d/keep", False, True),
    (["+ d/keep", "d/"], "d/keep", False, True),  # the dir is excluded first
    (["*.o", "!", "*.c"], "a.o", False, False),  # "!" clears earlier rules
    (["*.o", "!", "*.c"], "a.c", False, True),
    (["!x"], "!x", False, True),  # only a lone "!" is special
    (["+x"], "+x", False, True),
    # whitespace is part of the pattern
    (["foo "], "foo", False, False),
    (["foo "], "foo ", False, True),
    ([" foo"], "foo", False, False),
    # odd names
    (["-rf"], "-rf", False, True),
    (["*"], "a\nb", False, True),
    (["*.o"], fs(b"\xff\xfe.o"), False, True),
    ([fs(b"\xff*")], fs(b"\xffz"), False, True),
    ([fs(b"\xff*")], fs(b"\xfez"), False, False),
    ([fs(b"[\x80-\xff]")], fs(b"\xe9"), False, True),
]


@pytest.mark.parametrize(("patterns", "relpath", "is_dir", "expected"), CASES)
def test_examples(patterns: list[str], relpath: str, is_dir: bool, expected: bool) -> None:
    assert Excludes(patterns).excluded(relpath, is_dir) is expected


def test_matches_ignores_ancestors() -> None:
    ex = Excludes(["build/", "*.tmp"])
    assert ex.matches("build", True)
    assert not ex.matches("build/x.c", False)
    assert ex.excluded("build/x.c", False)
    assert ex.matches("a/b.tmp", False)
    assert not ex.matches("a.tmp/b", False)
    assert ex.excluded("a.tmp/b", False)


def test_matches_reports_the_first_matching_rule() -> None:
    ex = Excludes(["+ keep.o", "*.o"])
    assert not ex.matches("keep.o", False)
    assert ex.matches("x.o", False)


def test_nothing_excluded_without_rules() -> None:
    for patterns in ([], ["+ *"], ["*", "!"]):
        ex = Excludes(patterns)
        assert not ex.excluded("a/b/c", False)
        assert not ex.matches("a", True)


def test_attributes() -> None:
    assert Excludes(["a", "+ b"]).patterns == ("a", "+ b")
    assert Excludes(("a",)).patterns == ("a",)
    assert Excludes(["a"])
    assert not Excludes([])
    assert "'a'" in repr(Excludes(["a"]))


def test_repeated_calls_use_the_dir_cache_consistently() -> None:
    ex = Excludes(["/a/b/"])
    for _ in range(3):
        assert ex.excluded("a/b/c/d", False)
        assert not ex.excluded("a/c/b/d", False)


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("", "empty"),
        ("- ", "no pattern"),
        ("+ ", "no pattern"),
        ("a\0b", "NUL"),
        ("x" * 4096, "4096"),
        ("\ud800", "encoded"),  # a lone surrogate that fsencode cannot map
    ],
)
def test_rejected_patterns(pattern: str, message: str) -> None:
    with pytest.raises(ExcludeSyntaxError, match=message) as info:
        Excludes(["ok", pattern])
    assert isinstance(info.value, ValueError)
    assert repr(pattern[:10])[:-1] in str(info.value)


def test_longest_accepted_pattern() -> None:
    assert Excludes(["- " + "x" * 4095]).excluded("x" * 4095, False)


@pytest.mark.parametrize("bad", ["*.o", b"*.o", [b"*.o"], [None]])
def test_type_errors(bad: object) -> None:
    with pytest.raises(TypeError):
        Excludes(bad)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# 1b. the quirks above, confirmed against the real rsync

QUIRK_TREE: Tree = {
    "a": {"b": None, "ab": None, "x": {"b": None}},
    "axb": None,
    "x": {"a": {"b": None}, "axb": None, "dir": None},
    "a\\b": None,
    "ab": None,
    "a*": None,
    "a*x": {"y": None},
    "x\\": None,
    "dir": {"f": None, "sub": {"g": None}},
    "foo": None,
    "foo ": None,
    "!x": None,
    "- x": None,
    "[ab]": None,
    "é": None,
    "ee": {fs(b"\xff"): None, "-rf": None},
}

QUIRK_PATTERNS: list[list[str]] = [
    ["a[/x]b"],
    ["a\\b"],
    ["a\\b*"],
    ["x\\"],
    ["*\\"],
    ["a\\***"],
    ["\\[ab]"],
    ["[ab]"],
    ["[ab"],
    ["[[:bogus:]]"],
    ["[]ab]"],
    ["[!]]*"],
    ["[[:x]*"],
    ["dir/***"],
    ["dir/**"],
    ["dir/*"],
    ["**/b"],
    ["a**"],
    ["/a/**"],
    ["**b"],
    ["a/**/b"],
    ["x/"],
    ["/"],
    ["//"],
    ["?"],
    ["??"],
    ["foo "],
    ["!x"],
    ["- x"],
    ["- - x"],
    ["+ ab", "a*"],
    ["a*", "+ ab"],
    ["+ a/ab", "a/"],
    ["*", "!", "*b"],
    [fs(b"[\x80-\xff]")],
    ["-rf"],
    ["ok", "- "],  # rejected by both
    ["+ "],
]


@needs_rsync
@pytest.mark.parametrize("patterns", QUIRK_PATTERNS, ids=repr)
def test_quirks_agree_with_rsync(tmp_path: Path, patterns: list[str]) -> None:
    assert_agrees_with_rsync(tmp_path, QUIRK_TREE, patterns)


# ---------------------------------------------------------------------------
# 2. property test: random trees and patterns, rsync decides

NAME_CHARS = "ab*?[]\\ .-"
names = st.text(NAME_CHARS, min_size=1, max_size=3).filter(lambda n: n not in (".", ".."))


def trees(depth: int, min_size: int = 0) -> st.SearchStrategy[Tree]:
    """Dicts of up to 4 entries; dirs nest so paths have at most depth+1 levels."""
    if depth == 0:
        return st.dictionaries(names, st.none(), min_size=min_size, max_size=4)
    child = st.one_of(st.none(), st.deferred(lambda: trees(depth - 1)))
    return st.dictionaries(names, child, min_size=min_size, max_size=4)


# Free-form patterns built from every construct, matching or not.
LITERALS = ["a", "b", "ab", ".", "-", " ", "!"]
WILDCARDS = ["*", "**", "***", "?", "\\*", "\\?", "\\[", "\\]", "\\\\", "\\a", "\\"]
CLASSES = ["[ab]", "[!a]", "[^a]", "[a-c]", "[]a]", "[!]]", "[*?]", "[\\]]", "[a-]"]
CLASSES += ["[[:alpha:]]", "[[:punct:]]", "[[:bogus:]]", "[", "]", "[/a]"]
atoms = st.one_of(st.sampled_from(LITERALS), st.sampled_from(WILDCARDS), st.sampled_from(CLASSES))
components = st.lists(atoms, min_size=1, max_size=3).map("".join)
HEADS = st.sampled_from(["", "", "", "/", "**/", "- ", "+ "])
TAILS = st.sampled_from(["", "", "", "/", "/***", "/**", "*"])
free_patterns = st.builds(
    lambda head, parts, tail: head + "/".join(parts) + tail,
    HEADS,
    st.lists(components, min_size=1, max_size=3),
    TAILS,
)


def char_variants(ch: str) -> list[str]:
    """Ways a pattern may spell (or fail to spell) one character of a name."""
    return [ch] * 6 + ["\\" + ch, "?", "*", f"[{ch}]", f"[!{ch}]", "[[:punct:]]", ""]


@st.composite
def path_patterns(draw: st.DrawFn, paths: list[str]) -> str:
    """A pattern derived from a path in the tree, so that it often matches."""
    parts = draw(st.sampled_from(paths)).split("/")
    keep = draw(st.integers(1, len(parts)))
    spelled = ("".join(draw(st.sampled_from(char_variants(c))) for c in p) for p in parts[-keep:])
    body = "/".join(draw(st.sampled_from([p] * 6 + ["*", "**"])) for p in spelled)
    return draw(HEADS) + (body or "*") + draw(TAILS)


RULE_KINDS = ["derived"] * 7 + ["free"] * 2 + ["clear"]


@st.composite
def trees_and_rules(draw: st.DrawFn) -> tuple[Tree, list[str]]:
    tree = draw(trees(2, min_size=2))
    kinds = {
        "derived": path_patterns([path for path, _ in walk(tree)]),
        "free": free_patterns,
        "clear": st.just("!"),
    }
    count = draw(st.integers(1, 3))
    return tree, [draw(kinds[draw(st.sampled_from(RULE_KINDS))]) for _ in range(count)]


@pytest.mark.slow  # 300 real rsync runs
@needs_rsync
@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(case=trees_and_rules())
def test_agrees_with_rsync(case: tuple[Tree, list[str]]) -> None:
    tree, pattern_list = case
    with tempfile.TemporaryDirectory() as tmp:
        assert_agrees_with_rsync(Path(tmp), tree, pattern_list)


# ---------------------------------------------------------------------------
# 3. read_exclude_file


def write(tmp_path: Path, data: bytes | str) -> str:
    path = tmp_path / "excludes"
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return str(path)


def test_read_skips_comments_and_blank_lines(tmp_path: Path) -> None:
    text = "# comment\n*.o\n\n; also a comment\n  #not a comment\nfoo#bar\n"
    assert read_exclude_file(write(tmp_path, text)) == ["*.o", "  #not a comment", "foo#bar"]


def test_read_line_endings(tmp_path: Path) -> None:
    data = b"a\r\nb\rc\n\r\nd"  # CR ends a line just like LF; no final newline
    assert read_exclude_file(write(tmp_path, data)) == ["a", "b", "c", "d"]


def test_read_keeps_whitespace_and_prefixes(tmp_path: Path) -> None:
    text = "foo \n\tbar\n- x\n+ y\n!\n"
    assert read_exclude_file(write(tmp_path, text)) == ["foo ", "\tbar", "- x", "+ y", "!"]


def test_read_undecodable_bytes(tmp_path: Path) -> None:
    assert read_exclude_file(write(tmp_path, b"\xff*\n")) == [fs(b"\xff*")]


def test_read_stops_a_line_at_nul(tmp_path: Path) -> None:
    assert read_exclude_file(write(tmp_path, b"ab\0cd\n\0x\n")) == ["ab"]


def test_read_empty_file(tmp_path: Path) -> None:
    assert read_exclude_file(write(tmp_path, b"")) == []


def test_read_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_exclude_file(str(tmp_path / "nope"))


def test_read_directory(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        read_exclude_file(str(tmp_path))


@needs_rsync
def test_exclude_from_agrees_with_rsync(tmp_path: Path) -> None:
    data = b"# c\r\n; c\r\n\r\n+ ab\r*b\n- a*\n!x\nfoo \n dir\n\\[ab]"
    path = write(tmp_path, data)
    make_tree(tmp_path / "src", QUIRK_TREE)
    expected = rsync_kept(tmp_path / "src", [f"--exclude-from={path}"])
    assert our_kept(QUIRK_TREE, Excludes(read_exclude_file(path))) == expected


# ---------------------------------------------------------------- 5. the index changes no answer

PIECES = ["a", "b", "ab", ".o", "x.o", "*", "?", "[ab]", "**", "\\*", "/", "***"]


def _linear_excluded(ex: Excludes, path: str, is_dir: bool) -> bool:
    """rsync's own loop: every rule in order, the first match decides (ancestors too)."""
    data = os.fsencode(path)
    levels = [data[:i] for i, ch in enumerate(data) if ch == ord("/")] + [data]
    for level in levels:
        level_is_dir = is_dir if level == data else True
        for rule in ex._rules:
            if rule.matches(level, level_is_dir):
                if not rule.include:
                    return True
                break
    return False


@settings(max_examples=400, deadline=None, derandomize=True, database=None)
@given(
    patterns=st.lists(
        st.builds(lambda lead, parts, trail, sign: sign + lead + "".join(parts) + trail,
                  st.sampled_from(["", "/", "*", "**/"]),
                  st.lists(st.sampled_from(PIECES), min_size=1, max_size=3),
                  st.sampled_from(["", "/", "*"]),
                  st.sampled_from(["", "", "+ ", "- "])),
        min_size=1, max_size=25),
    paths=st.lists(st.tuples(
        st.lists(st.sampled_from(["a", "b", "ab", "x.o", "a.o", "ax.o", "bab", "ba", "*", "[ab]"]),
                 min_size=1, max_size=4).map("/".join),
        st.booleans()), min_size=1, max_size=20),
)
def test_index_agrees_with_trying_every_rule_in_order(patterns, paths):
    try:
        ex = Excludes(patterns)
    except ExcludeSyntaxError:
        return
    for path, is_dir in paths:
        assert ex.excluded(path, is_dir) == _linear_excluded(ex, path, is_dir), (path, is_dir)


def test_ten_thousand_literal_names_and_suffixes_cost_little():
    patterns = [f"name{i}.tmp" for i in range(5000)] + [f"*.ext{i}" for i in range(5000)]
    ex = Excludes([*patterns, "/top/", "cache*/"])
    assert ex._index.tried == []  # every one of these is looked up, none is tried
    assert ex.excluded("d/name4999.tmp", False) and ex.excluded("d/e/f.ext77", False)
    assert ex.excluded("top/x", False) and ex.excluded("a/cache1/x", False)
    assert not ex.excluded("d/name5000.tmp", False) and not ex.excluded("d/top", True)


@pytest.mark.parametrize("patterns", [
    ["ba*"], ["*x.o"], ["a*/"], ["+ ab*", "*.o"], ["*", "+ b"], ["b*", "+ *a", "ab"],
    ["*b", "ba*", "/a/ba", "a/bab"], ["ab/"], ["a/b*"], ["*"],
    ["a?"], ["ba[ab]"], ["b?b", "+ a*", "a"], ["ab.[o]", "*.o"],  # gates: the regex decides
])
def test_index_agrees_on_prefixes_suffixes_and_tails(patterns):
    ex = Excludes(patterns)
    for path in ["bab", "ba", "b", "a/bab", "ab.o", "x.o", "ax.o", "a/ba", "a", "ab", "c/a/bab"]:
        for is_dir in (False, True):
            assert ex.excluded(path, is_dir) == _linear_excluded(ex, path, is_dir), (path, is_dir)


# ---------------------------------------------------------------------------
# 4. may_match_below: could a rename of a directory move excluded paths?


MAY_MATCH_BELOW = [
    # (patterns, dirpath, expected)
    ([], "site", False),
    (["/site/uploads"], "site", True),
    (["/site/uploads"], "site.old", False),
    (["/site/uploads"], "other", False),
    (["/site/uploads"], "site/uploads", True),  # dirpath itself is excluded
    (["/site/uploads"], "site/uploads/x", True),  # so is an ancestor of it
    (["/site/uploads"], "site/css", False),
    (["/site/uploads"], "x/site", False),  # anchored: only at the root
    (["/s*/cache/"], "site", True),
    (["/s*/cache/"], "www", False),
    (["/s*/cache/"], "site/cache", True),
    (["/s*/cache/"], "site/other", False),
    (["/*/***"], "a", True),
    (["/*/***"], "a/b/c", True),
    (["/a/"], "a", True),
    (["/a/"], "b", False),
    (["/[ab]?/c"], "ax", True),
    (["/[ab]?/c"], "cx", False),
    (["/[ab]?/c"], "axy", False),
    (["/a[[:digit:]]/x"], "a1", True),
    (["/a[[:digit:]]/x"], "ab", False),
    (["/?/x"], fs(b"\xff"), True),  # "?" is one byte...
    (["/??/x"], fs(b"\xc3\xa9"), True),  # ...so two for a UTF-8 "é"
    # Unanchored rules can match below any directory.
    (["config.local.php"], "zzz", True),
    (["*.swp"], "zzz", True),
    (["cache/"], "zzz", True),
    (["a/b"], "zzz", True),
    (["**/x"], "zzz", True),
    (["- *.swp"], "zzz", True),
    # "**" crosses "/": the elements from its part on no longer line up.
    (["/a/**/b"], "a", True),
    (["/a/**/b"], "a/x/y", True),
    (["/a/**/b"], "b", False),
    (["/**/b"], "x/y", True),
    (["/si**"], "site", True),  # the text before "**" must still fit
    (["/si**"], "si", True),
    (["/si**"], "www", False),
    (["/x/a**b"], "x/bab", False),
    (["/a\\**"], "a*x", True),  # "\\*" is a literal star, the "*" after it single
    (["/a\\**"], "ab", False),
    # A "/" inside a class belongs to one element; an escaped one separates.
    (["/a[x/]b/c"], "axb", True),
    (["/a[x/]b/c"], "a", False),
    (["/a\\/b*"], "a", True),
    (["/a\\/b*"], "a\\", False),
    (["/a\\/b"], "a\\", True),  # literal pattern: the backslash is a plain byte
    (["/a\\/b"], "a", False),
    # Include rules protect nothing; "!" drops the rules before it.
    (["+ /site/uploads"], "site", False),
    (["+ *.swp"], "zzz", False),
    (["+ /site", "/site/uploads"], "site", True),
    (["/site/uploads", "!"], "site", False),
    (["*.swp", "!", "/a/x"], "b", False),
    (["*.swp", "!", "/a/x"], "a", True),
    # Rules that match nothing: "/" (rsync never filters the root), "//",
    # an empty element, malformed classes and a trailing backslash.
    (["/"], "a", False),
    (["//"], "a", False),
    (["/a//b"], "a/b", False),
    (["/a[", "[b", "x*\\", "/[[:bogus:]]"], "a", False),
]


@pytest.mark.parametrize(("patterns", "dirpath", "expected"), MAY_MATCH_BELOW)
def test_may_match_below(patterns: list[str], dirpath: str, expected: bool) -> None:
    assert Excludes(patterns).may_match_below(dirpath) is expected


BELOW_ATOMS = ["a", "b", "ab", "*", "**", "***", "?", "[ab]", "[!a]", "[a/]", "\\a", "\\*", "\\/"]
BELOW_NAMES = ["a", "b", "ab", "ba", "*", "\\a"]  # pattern literals among them
below_patterns = st.builds(
    lambda sign, head, parts, tail: sign + head + "/".join(parts) + tail,
    st.sampled_from(["", "", "- ", "+ "]),
    st.sampled_from(["/", "/", "", "**/"]),
    st.lists(st.lists(st.sampled_from(BELOW_ATOMS), min_size=1, max_size=3).map("".join),
             min_size=1, max_size=3),
    st.sampled_from(["", "", "/", "/***"]),
)


def _paths_below(dirpath: str) -> Iterator[str]:
    """Every path 1 to 3 elements below dirpath with names from BELOW_NAMES."""
    level = [dirpath]
    for _ in range(3):
        level = [f"{parent}/{name}" for parent in level for name in BELOW_NAMES]
        yield from level


@st.composite
def below_cases(draw: st.DrawFn) -> tuple[list[str], str]:
    """A directory and rules, some spelt from a path through it so they often match."""
    elements = draw(st.lists(st.sampled_from(["a", "b", "ab", "ba", "*"]), min_size=1, max_size=3))
    target = elements + draw(st.lists(st.sampled_from(BELOW_NAMES), max_size=2))

    def spell(element: str) -> str:
        chars = "".join(draw(st.sampled_from([*char_variants(c), f"[{c}/]"])) for c in element)
        return draw(st.sampled_from([chars] * 4 + ["*", "**", "a**"]))

    def derived() -> str:
        keep = draw(st.integers(1, len(target)))
        anchored = draw(st.booleans())
        parts = target[:keep] if anchored else target[-keep:]
        body = spell(parts[0])
        for part in parts[1:]:  # an escaped "\\/" is a separator too
            body += draw(st.sampled_from(["/", "/", "\\/"])) + spell(part)
        sign = draw(st.sampled_from(["", "- ", "+ "]))
        return sign + ("/" if anchored else "") + body + draw(st.sampled_from(["", "/", "/***"]))

    patterns = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["derived"] * 3 + ["free", "clear"]))
        patterns.append(derived() if kind == "derived" else "!" if kind == "clear"
                        else draw(below_patterns))
    return patterns, "/".join(elements)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(case=below_cases())
def test_may_match_below_never_misses(case: tuple[list[str], str]) -> None:
    """If some concrete path below dirpath is excluded, may_match_below says so."""
    patterns, dirpath = case
    try:
        ex = Excludes(patterns)
    except ExcludeSyntaxError:
        return
    if ex.may_match_below(dirpath):
        return
    exclude_rules = [rule for rule in ex._rules if not rule.include]
    for path in _paths_below(dirpath):
        data = os.fsencode(path)
        for is_dir in (False, True):
            # Either oracle: rsync's first-match verdict (ancestors included),
            # or any exclude rule at all, as includes must protect nothing.
            assert not ex.excluded(path, is_dir), (patterns, path, is_dir)
            assert not any(rule.matches(data, is_dir) for rule in exclude_rules), (path, is_dir)
