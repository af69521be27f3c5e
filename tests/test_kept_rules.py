"""The rules that keep an unmounted filesystem's copy on the nodes: checked with
real rsync on small trees (fast), and the pure functions of kept.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from helpers import RSYNC

from inosync.excludes import Excludes
from inosync.kept import at_or_below, before_renames, touches
from inosync.replay import Move, kinds
from inosync.rsync import Options, batch_argv, full_argv, kept_pattern

NAMES = ["mnt", "a b", "x*y", "we[ir]d", "back\\slash", "new\nline", "#hash", "- dash",
         "+ plus", "q?"]


def node_with_copy(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """A source whose data/NAME is empty (unmounted), a node holding its copy, and
    beside it on the node a look-alike the kept rule must not protect."""
    src, node = tmp_path / "src", tmp_path / "node"
    (src / "data" / name).mkdir(parents=True)
    (node / "data" / name / "sub").mkdir(parents=True)
    (node / "data" / name / "precious").write_text("kept\n")
    (node / "data" / name / "sub" / "deep").write_text("kept\n")
    (node / "data" / (name + "2")).mkdir()
    (node / "data" / (name + "2") / "stale").write_text("not in the source\n")
    return src, node


def run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("user", [(), ("+ /data/***", "*"), ("+ data/", "- *")])
def test_a_whole_tree_run_keeps_the_copy_whatever_the_user_rules(tmp_path, name, user):
    src, node = node_with_copy(tmp_path, name)
    opts = Options(rsync=RSYNC, excludes=user, kept=(f"data/{name}",))
    run(full_argv(opts, str(src), str(node)))
    assert (node / "data" / name / "precious").is_file()
    assert (node / "data" / name / "sub" / "deep").is_file()
    if not user:  # the look-alike is not kept: deleted as any stale path
        assert not (node / "data" / (name + "2")).exists()


@pytest.mark.parametrize("listed", ["data", "data/mnt", "data/mnt/precious", "data/mnt/sub",
                                    "gone"])
def test_a_batch_keeps_the_copy_whatever_it_lists(tmp_path, listed):
    """The mount point listed, a directory above it (recursive), paths below it
    gone from the source (--delete-missing-args), its parent gone too."""
    src, node = node_with_copy(tmp_path, "mnt")
    if listed == "gone":  # the whole directory above it removed from the source
        subprocess.run(["rm", "-r", str(src / "data")], check=True)
        listed = "data"
    files = tmp_path / "list"
    files.write_bytes(b"./" + listed.encode() + b"\0")
    opts = Options(rsync=RSYNC, excludes=("+ /data/***",), kept=("data/mnt",))
    run(batch_argv(opts, str(src), str(node), str(files)))
    assert (node / "data" / "mnt" / "precious").is_file()
    assert (node / "data" / "mnt" / "sub" / "deep").is_file()


def test_the_kept_rule_comes_before_the_user_rules():
    argv = full_argv(Options(excludes=("+ /data/***",), kept=("data/m*",)), "/src", "/node")
    assert argv.index("--exclude=/data/m\\*/***") < argv.index("--exclude=+ /data/***")
    assert kept_pattern("a\\b") == "/a\\\\b/***"  # '***' makes '\' an escape: escaped


def test_at_or_below_and_touches():
    kept = {"data/mnt"}
    assert at_or_below("data/mnt", kept) and at_or_below("data/mnt/x/y", kept)
    assert not at_or_below("data/mnt2", kept) and not at_or_below("data", kept)
    assert touches("data", kept) and touches("data/mnt/x", kept)
    assert not touches("dat", kept) and not touches("data/mnt2", kept)


def test_before_renames_follows_the_chain_back():
    moves = [("a", "b"), ("b/m", "b/n"), ("b", "c")]  # oldest first
    assert before_renames({"c/n"}, moves) == {"c/n", "b/n", "b/m", "a/m"}
    assert before_renames({"x"}, moves) == {"x"}


def test_renames_touching_a_kept_mount_point_are_not_replayed():
    kept = {"data/mnt"}
    moves = [Move("data", "data2", True), Move("data/mnt/f", "f"), Move("g", "data/mnt/g"),
             Move("data/mnt", "m", True), Move("other", "other2", True), Move("h", "i")]
    assert [k for k, _, _ in kinds(moves, Excludes(()), kept)] == ["-", "-", "-", "-", "d", "f"]
