"""Unit tests for inosync.batch: change sets and the rsync file list."""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inosync.batch import (
    ROOT,
    PathSet,
    collapse,
    encode_list,
    files_list,
    is_real_dir,
    sendable,
)
from inosync.replay import Move

# ---------------------------------------------------------------- PathSet


def test_new_pathset_is_empty():
    s = PathSet()
    assert not s
    assert len(s) == 0
    assert not s.full
    assert s.describe() == "0 paths"


def test_add_collects_distinct_paths():
    s = PathSet()
    s.add("a")
    s.add("a/b")
    s.add("a")
    assert s
    assert len(s) == 2
    assert s.paths == {"a", "a/b"}
    assert not s.full
    assert s.describe() == "2 paths"


def test_add_root_means_full_sync_and_drops_paths():
    s = PathSet()
    s.add("a")
    s.add(ROOT)
    assert s.full
    assert s
    assert s.paths == set()
    assert len(s) == 0
    assert s.describe() == "full sync"


def test_add_after_full_is_ignored():
    s = PathSet()
    s.set_full()
    s.add("a")
    assert s.full
    assert s.paths == set()


def test_limit_is_inclusive_then_collapses_to_full():
    s = PathSet(limit=3)
    for p in ("a", "b", "c"):
        s.add(p)
    assert not s.full
    assert len(s) == 3
    s.add("c")  # a duplicate does not grow the set
    assert not s.full
    s.add("d")
    assert s.full
    assert s.paths == set()  # memory is released
    assert s.describe() == "full sync"


def test_update_merges_paths():
    a, b = PathSet(), PathSet()
    a.add("x")
    b.add("y")
    b.add("x")
    a.update(b)
    assert a.paths == {"x", "y"}
    assert not a.full
    assert b.paths == {"x", "y"}  # the argument is left alone


def test_update_with_full_makes_full():
    a, b = PathSet(), PathSet()
    a.add("x")
    b.set_full()
    a.update(b)
    assert a.full
    assert a.paths == set()


def test_update_of_full_stays_full():
    a, b = PathSet(), PathSet()
    a.set_full()
    b.add("x")
    a.update(b)
    assert a.full
    assert a.paths == set()


def test_update_past_limit_collapses_to_full():
    a, b = PathSet(limit=3), PathSet()
    a.add("1")
    a.add("2")
    b.add("3")
    a.update(b)
    assert not a.full  # exactly at the limit
    b.add("4")
    a.update(b)
    assert a.full
    assert a.paths == set()


def test_update_uses_own_limit_not_others():
    a, b = PathSet(limit=2), PathSet(limit=100)
    for p in "abc":
        b.add(p)
    a.update(b)
    assert a.full


def test_take_moves_contents_and_empties():
    s = PathSet(limit=7)
    s.add("a")
    s.add("b")
    t = s.take()
    assert t.paths == {"a", "b"}
    assert not t.full
    assert t.limit == 7
    assert not s
    assert s.paths == set()
    # the two sets are independent afterwards
    s.add("c")
    assert t.paths == {"a", "b"}
    t.add("d")
    assert s.paths == {"c"}


def test_take_of_full_set():
    s = PathSet()
    s.set_full()
    t = s.take()
    assert t.full
    assert not s.full
    assert not s
    s.add("a")  # the emptied set accepts paths again
    assert s.paths == {"a"}


def test_take_of_empty_set():
    t = PathSet().take()
    assert not t
    assert not t.full


# ---------------------------------------------------------------- collapse


def test_collapse_drops_descendants():
    assert collapse(["a", "a/b", "a/b/c", "b/c", "b"]) == ["a", "b"]


def test_collapse_keeps_unrelated_paths():
    assert collapse(["x/y", "x/z", "w"]) == ["w", "x/y", "x/z"]


def test_collapse_removes_duplicates():
    assert collapse(["a/b", "a/b", "c"]) == ["a/b", "c"]


def test_collapse_empty():
    assert collapse([]) == []


def test_collapse_accepts_any_iterable():
    assert collapse(p for p in ("a/b", "a")) == ["a"]


@pytest.mark.parametrize("sibling", ["a-b", "a.b", "a b", "a!", "a0", "a/b-c", "a/b.c", "a/b c"])
def test_collapse_siblings_with_shared_prefix_are_not_descendants(sibling):
    # In plain string order "a-b" etc. sort between "a/b" and its children
    # (or between "a" and "a/b"), which a naive prefix scan gets wrong.
    paths = ["a/b", "a/b/c", sibling, "a/b/d/e"]
    assert sorted(collapse(paths)) == sorted(["a/b", sibling])


def test_collapse_sibling_between_ancestor_and_descendant():
    # '-' (0x2d) and '.' (0x2e) sort before '/' (0x2f): string order would be
    # a, a-b, a.b, a/b -- and a/b must still be dropped under a.
    got = collapse(["a/b", "a-b", "a.b", "a b", "a", "a/b-c"])
    assert sorted(got) == sorted(["a", "a-b", "a.b", "a b"])


def test_collapse_prefix_of_name_is_not_ancestor():
    assert sorted(collapse(["ab", "a", "abc/d", "a/x"])) == ["a", "ab", "abc/d"]


def test_collapse_order_independent():
    paths = ["a/b", "a-b", "a.b/c", "a b", "a/b/c", "a", "z/y", "z/y-1", "z/y/x", "a-b/c"]
    want = collapse(paths)
    rng = random.Random(1234)
    for _ in range(50):
        shuffled = paths[:]
        rng.shuffle(shuffled)
        assert collapse(shuffled) == want
    assert sorted(want) == sorted(["a", "a-b", "a.b/c", "a b", "z/y", "z/y-1"])


_name = st.sampled_from(["a", "b", "a-b", "a.b", "a b", "a!", "ab", "-", "\n", "é", "a\u00e9"])
_path = st.lists(_name, min_size=1, max_size=4).map("/".join)


def _is_ancestor(a: str, b: str) -> bool:
    return b.startswith(a + "/")


@settings(max_examples=300, deadline=None)
@given(st.lists(_path, max_size=12), st.randoms(use_true_random=False))
def test_collapse_properties(paths, rnd):
    got = collapse(paths)
    # subset of the input, no duplicates
    assert set(got) <= set(paths)
    assert len(got) == len(set(got))
    # nothing kept lies below anything else kept
    for x in got:
        for y in got:
            assert not _is_ancestor(x, y)
    # every input is covered by something kept
    for p in paths:
        assert any(p == k or _is_ancestor(k, p) for k in got)
    # order of the input does not matter
    shuffled = list(paths)
    rnd.shuffle(shuffled)
    assert collapse(shuffled) == got


# ---------------------------------------------------------------- sendable


def _dirs(*names: str):
    existing = set(names)
    asked: list[str] = []

    def parent_is_dir(rel: str) -> bool:
        asked.append(rel)
        return rel in existing

    return parent_is_dir, asked


def test_sendable_all_parents_dirs_gives_path():
    is_dir, asked = _dirs("a", "a/b")
    assert sendable("a/b/c", is_dir) == "a/b/c"
    assert asked == ["a", "a/b"]  # the path itself is never asked about


def test_sendable_top_level_path_never_asks():
    is_dir, asked = _dirs()
    assert sendable("file", is_dir) == "file"
    assert asked == []


def test_sendable_root():
    is_dir, _ = _dirs()
    assert sendable(ROOT, is_dir) == ROOT


def test_sendable_first_non_dir_ancestor():
    is_dir, _ = _dirs("a")
    assert sendable("a/b/c/d", is_dir) == "a/b"


def test_sendable_top_ancestor_missing():
    is_dir, asked = _dirs()
    assert sendable("a/b/c", is_dir) == "a"
    assert asked == ["a"]  # stops at the first non-directory


def test_sendable_does_not_confuse_similar_names():
    is_dir, _ = _dirs("a-b", "a")
    assert sendable("a/b/c", is_dir) == "a/b"


# ---------------------------------------------------------------- is_real_dir / files_list


def test_is_real_dir(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "f").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "d")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    assert is_real_dir(str(tmp_path / "d"))
    assert not is_real_dir(str(tmp_path / "f"))
    assert not is_real_dir(str(tmp_path / "link"))
    assert not is_real_dir(str(tmp_path / "dangling"))
    assert not is_real_dir(str(tmp_path / "missing"))
    assert not is_real_dir(str(tmp_path / "f" / "below-a-file"))


def test_files_list_plain_paths(tmp_path):
    (tmp_path / "d" / "e").mkdir(parents=True)
    (tmp_path / "d" / "e" / "f").write_text("x")
    (tmp_path / "top").write_text("x")
    got = files_list(["d/e/f", "top", "d/e/missing"], str(tmp_path))
    assert got == ["d/e/f", "d/e/missing", "top"]


def test_files_list_file_replaced_by_dir(tmp_path):
    # "a" was a file; now it is a directory with contents
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x").write_text("x")
    assert files_list(["a", "a/x"], str(tmp_path)) == ["a"]
    # only the child reported: its parent is a real dir, so the child goes
    assert files_list(["a/x"], str(tmp_path)) == ["a/x"]


def test_files_list_dir_replaced_by_file(tmp_path):
    # "d" was a directory with d/x and d/sub/y; now "d" is a plain file
    (tmp_path / "d").write_text("now a file")
    got = files_list(["d/x", "d/sub/y", "other"], str(tmp_path))
    assert got == ["d", "other"]


def test_files_list_deleted_parent_goes_to_first_missing_component(tmp_path):
    # a exists; a/b (with b/c/d inside) was deleted
    (tmp_path / "a").mkdir()
    got = files_list(["a/b/c/d", "a/b/c"], str(tmp_path))
    assert got == ["a/b"]


def test_files_list_deleted_top_dir(tmp_path):
    got = files_list(["gone/x/y", "gone/z"], str(tmp_path))
    assert got == ["gone"]


def test_files_list_symlink_to_dir_parent_is_not_a_dir(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "f").write_text("x")
    (tmp_path / "link").symlink_to("real")
    # rsync must not be handed a path through a symlink: send the link itself
    assert files_list(["link/f"], str(tmp_path)) == ["link"]
    assert files_list(["real/f"], str(tmp_path)) == ["real/f"]


def test_files_list_symlink_deeper_in_path(tmp_path):
    (tmp_path / "a" / "real").mkdir(parents=True)
    (tmp_path / "a" / "link").symlink_to("real")
    assert files_list(["a/link/x/y"], str(tmp_path)) == ["a/link"]


def test_files_list_collapses_after_sendable(tmp_path):
    # "d/x" becomes "d" (d is a file now), which covers "d" itself too
    (tmp_path / "d").write_text("file")
    (tmp_path / "e").mkdir()
    got = files_list(["d", "d/x", "e/1", "e/2"], str(tmp_path))
    assert got == ["d", "e/1", "e/2"]


def test_files_list_similar_names_not_collapsed(tmp_path):
    for name in ("a", "a-b", "a.b", "a b"):
        (tmp_path / name).mkdir()
    got = files_list(["a/b", "a-b/c", "a.b/c", "a b/c", "a/b/c"], str(tmp_path))
    assert sorted(got) == sorted(["a/b", "a-b/c", "a.b/c", "a b/c"])


def test_files_list_non_utf8_names(tmp_path):
    bad_dir = os.fsdecode(b"dir\xfe")
    os.mkdir(os.path.join(os.fsencode(tmp_path), b"dir\xfe"))
    got = files_list([bad_dir + "/x", os.fsdecode(b"gone\xff") + "/y"], str(tmp_path))
    assert sorted(got) == sorted([bad_dir + "/x", os.fsdecode(b"gone\xff")])


# ---------------------------------------------------------------- encode_list


WEIRD = [
    os.fsdecode(b"bad\xff"),
    os.fsdecode(b"dir\xc3/inner\x80name"),
    "new\nline",
    "back\\slash",
    "-leading-dash",
    "--delete",
    " space ",
    "tab\there",
    "caf\u00e9",
    "quote'\"",
    "*glob?[x]",
]


def test_encode_list_exact_bytes():
    assert encode_list(["a", "b/c"]) == b"./a\0./b/c\0"
    assert encode_list([".", "#x", ";y/z"]) == b".\0./#x\0./;y/z\0"  # never a comment line
    assert encode_list([]) == b""


def test_encode_list_non_utf8_bytes_survive():
    assert encode_list([os.fsdecode(b"bad\xff")]) == b"./bad\xff\0"


def test_encode_list_round_trip():
    data = encode_list(WEIRD)
    assert data.endswith(b"\0")
    assert data.count(b"\0") == len(WEIRD)
    back = [os.fsdecode(x.removeprefix(b"./")) for x in data.split(b"\0")[:-1]]
    assert back == WEIRD


def test_encode_list_utf8_names_are_utf8():
    assert encode_list(["caf\u00e9"]) == "./caf\u00e9\0".encode()


# ---------------------------------------------------------------- renames carried by a batch


def test_moves_keep_their_order_across_merges():
    pending, newer = PathSet(), PathSet()
    pending.add_moves([Move("a", "b")])
    newer.add_moves([Move("b", "c"), Move("c", "d", True)])
    pending.update(newer)
    assert pending.moves == [Move("a", "b"), Move("b", "c"), Move("c", "d", True)]
    taken = pending.take()
    assert taken.moves[-1] == Move("c", "d", True) and pending.moves == []


def test_a_requeued_batch_carries_its_paths_only_and_drops_the_renames_since():
    """Issue 15.1: a retry replaying the renames again undid a swap (x t, y x, t y)."""
    pending, flight = PathSet(), PathSet()
    flight.add("x"), flight.add("y"), flight.add("t")
    flight.add_moves([Move("x", "t"), Move("y", "x"), Move("t", "y")])
    pending.add_moves([Move("y", "z")])  # arrived meanwhile: assumed the batch was through
    pending.requeue(flight)  # the run failed after its replay
    assert pending.moves == [] and pending.paths == {"x", "y", "t"}
    assert pending.checksum  # what the replay moved is compared by content
    later = PathSet()
    later.add_moves([Move("z", "w")])
    pending.update(later)
    assert pending.moves == []  # the chain broke: no more until taken
    taken = pending.take()
    assert taken.checksum and not pending.checksum and not pending.moves_dropped
    pending.add_moves([Move("w", "v")])
    assert pending.moves == [Move("w", "v")]  # after the retry, a new chain


def test_a_requeued_batch_without_renames_needs_no_checksum():
    pending, flight = PathSet(), PathSet()
    flight.add("a")
    pending.requeue(flight)
    assert not pending.checksum


def test_moves_are_dropped_past_the_limit_and_kept_when_full():
    s = PathSet(limit=2)
    s.add_moves([Move("a", "b"), Move("b", "c")])
    s.set_full()
    assert s.moves == [Move("a", "b"), Move("b", "c")]
    s.add_moves([Move("c", "d")])
    assert s.moves == []  # past the limit: rsync sends the data, memory stays bounded
    s.add_moves([Move("d", "e")])
    assert s.moves == []  # and no later one: it would not start where the node is
