"""Excludes end to end: excluded changes cost nothing, and nodes still converge."""

from __future__ import annotations

import os
import stat

import pytest
from helpers import (
    RSYNC,
    inotify_watches,
    wait_converged,
    wait_until,
    watches_above,
    write_config,
)

pytestmark = pytest.mark.slow  # end to end: real processes

EXCLUDES = ["*.tmp", "/cache/", "build/", "logs/***", "[Tt]humbs.db", "**/secret/*.key"]


@pytest.fixture
def counted(tree, run_inosync, tmp_path):
    """inosync with an rsync wrapper that counts every rsync started."""
    counter = tmp_path / "rsync-runs"
    wrapper = tmp_path / "rsync-wrapper"
    wrapper.write_text(f'#!/bin/sh\necho run >> "{counter}"\nexec {RSYNC} "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    src, nodes = tree["src"], tree["nodes"]
    for d in ("cache/deep/er", "docs/build/obj", "logs/2026/11", "docs/secret"):
        (src / d).mkdir(parents=True)
    conf = write_config(tmp_path / "inosync.conf", wpath=str(src), rexcludes=EXCLUDES,
                        rnodes=[str(n) for n in nodes], edelay=0.2, rsync=str(wrapper))
    d = run_inosync(conf, "-v")
    wait_converged(src, nodes, excludes=tuple(EXCLUDES))
    d.wait_log("synced full sync", count=len(nodes))

    def runs() -> int:
        return len(counter.read_text().splitlines()) if counter.exists() else 0

    return d, src, nodes, runs


def test_excluded_directories_are_not_watched(counted):
    d, src, nodes, runs = counted
    # src, docs, docs/old, docs/secret: cache/*, docs/build/*, logs/* stay unwatched.
    assert inotify_watches(d.proc.pid) == 4 + watches_above(src)


def test_burst_in_excluded_paths_starts_no_rsync(counted):
    d, src, nodes, runs = counted
    before = runs()
    for i in range(200):
        (src / f"junk{i}.tmp").write_text("x")
        (src / "cache" / "deep" / "er" / f"c{i}").write_text("x")
        (src / "docs" / "build" / "obj" / f"o{i}.o").write_text("x")
        (src / "logs" / "2026" / "11" / f"l{i}").write_text("x")
    (src / "docs" / "Thumbs.db").write_text("x")
    (src / "docs" / "secret" / "id.key").write_text("x")
    os.mkdir(src / "docs" / "build2")  # not excluded: this one must sync
    wait_converged(src, nodes, excludes=tuple(EXCLUDES))
    d.wait_log("synced 1 path", count=len(nodes))
    assert runs() == before + len(nodes)
    assert not (nodes[0] / "docs" / "Thumbs.db").exists()
    assert not (nodes[0] / "docs" / "secret" / "id.key").exists()
    assert inotify_watches(d.proc.pid) == 5 + watches_above(src)  # + docs/build2


def test_rename_across_the_boundary(counted):
    d, src, nodes, runs = counted
    (src / "docs" / "draft.txt").write_text("draft\n")
    wait_converged(src, nodes, excludes=tuple(EXCLUDES))
    assert (nodes[1] / "docs" / "draft.txt").exists()
    # included -> excluded: the old name is deleted on the nodes
    (src / "docs" / "draft.txt").rename(src / "docs" / "draft.tmp")
    wait_until(lambda: not (nodes[1] / "docs" / "draft.txt").exists(), 20, "old name deleted")
    # excluded -> included: the new name appears, with its contents
    (src / "cache" / "deep").rename(src / "docs" / "from-cache")
    (src / "logs").rename(src / "docs" / "logs-2026")
    wait_converged(src, nodes, excludes=tuple(EXCLUDES))
    assert (nodes[0] / "docs" / "from-cache" / "er").is_dir()
    assert (nodes[0] / "docs" / "logs-2026" / "2026" / "11").is_dir()
    # the directories moved in get watches: later changes inside them sync
    (src / "docs" / "from-cache" / "er" / "new.txt").write_text("new\n")
    wait_converged(src, nodes, excludes=tuple(EXCLUDES))  # raises if new.txt never arrives


def test_rexcludes_from_file(tree, run_inosync, tmp_path):
    src, nodes = tree["src"], tree["nodes"]
    (tmp_path / "excludes.txt").write_text("# comment\n; also a comment\n\n*.bak\n/private/\n")
    conf = write_config(tmp_path / "inosync.conf", wpath=str(src),
                        rnodes=[str(n) for n in nodes], edelay=0.2,
                        rexcludes_from="excludes.txt")
    (src / "private").mkdir()
    (src / "private" / "p").write_text("p")
    (src / "x.bak").write_text("b")
    d = run_inosync(conf, "-v")
    wait_converged(src, nodes, excludes=("*.bak", "/private/"))
    assert not (nodes[0] / "private").exists() and not (nodes[0] / "x.bak").exists()
    assert "'--exclude=*.bak'" in d.log() and "--exclude=/private/" in d.log()
    assert d.stop() == 0
