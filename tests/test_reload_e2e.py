"""Issue 18.4 with a real daemon: a SIGHUP re-syncs only what the new
configuration changes. A file planted only on a node is what a full sync
(--delete) would remove: it survives every reload that must not sync."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from helpers import RSYNC, Inosync, tree_diff, wait_converged, wait_until, write_config

from inosync.checkpoint import MARGIN
from inosync.config import DEFAULT_EMASK

pytestmark = pytest.mark.slow

PLANTED = "docs/old/only-on-node.txt"


def start(tree: dict, run_inosync, nodes: list[Path], **settings: object
          ) -> tuple[Inosync, Path, dict[str, object]]:
    settings = {"wpath": str(tree["src"]), "rnodes": [str(n) for n in nodes], "edelay": 0.2,
                "retry_min": 0.2, "retry_max": 1, **settings}
    conf = write_config(tree["dir"] / "inosync.conf", **settings)
    d = run_inosync(conf, "-v")
    wait_converged(tree["src"], nodes)
    for n in nodes:
        d.wait_log(f"{n}: synced full sync")
    return d, conf, settings


def reload(d: Inosync, conf: Path, settings: dict[str, object], **changes: object) -> None:
    settings.update(changes)
    write_config(conf, **settings)
    before = d.log().count("reloaded")
    d.signal(signal.SIGHUP)
    d.wait_log("reloaded", count=before + 1)


def plant(nodes: list[Path]) -> None:
    for n in nodes:
        (n / PLANTED).write_text("only on this node\n")


def still_planted(nodes: list[Path]) -> bool:
    return all((n / PLANTED).exists() for n in nodes)


def then_a_change_arrives(d: Inosync, src: Path, nodes: list[Path], name: str) -> None:
    """The daemon still sends what changes (a list run, which leaves the planted file)."""
    (src / "docs" / name).write_text(f"{name}\n")
    wait_until(lambda: all((n / "docs" / name).exists() for n in nodes), 20, name)


def test_a_hup_that_changes_only_edelay_runs_no_rsync(tree, run_inosync):
    src, nodes = tree["src"], tree["nodes"]
    d, conf, settings = start(tree, run_inosync, nodes)
    plant(nodes)
    fulls = d.log().count("synced full sync")
    reload(d, conf, settings, edelay=0.3)
    d.wait_log(r"reload: unchanged nodes: no sync")
    d.wait_log(r"reloaded; no sync")
    then_a_change_arrives(d, src, nodes, "after-reload.txt")
    assert still_planted(nodes), d.log()
    assert d.log().count("synced full sync") == fulls
    assert "reload: full sync to" not in d.log()
    for n in nodes:  # and apart from it (and docs/old's time, which planting it set) equal
        (n / PLANTED).unlink()
        assert tree_diff(src, n, excludes=(PLANTED,)) == [], n
    assert d.stop() == 0


def test_a_hup_adding_a_node_full_syncs_only_that_node(tree, run_inosync, tmp_path):
    src, (first, _) = tree["src"], tree["nodes"]
    d, conf, settings = start(tree, run_inosync, [first])
    plant([first])
    added = tmp_path / "added"
    added.mkdir()
    (added / "stale.txt").write_text("a full sync deletes me\n")
    reload(d, conf, settings, rnodes=[str(first), str(added)])
    d.wait_log(rf"reload: full sync to {added}: new node")
    d.wait_log(rf"reload: unchanged nodes: no sync \({first}\)")
    d.wait_log(rf"{added}: synced full sync")
    wait_converged(src, [added])
    then_a_change_arrives(d, src, [first, added], "after-reload.txt")
    assert still_planted([first]), d.log()
    assert d.log().count(f"{first}: synced full sync") == 1
    assert d.stop() == 0


def test_a_hup_changing_excludes_full_syncs_the_nodes(tree, run_inosync):
    src, nodes = tree["src"], tree["nodes"]
    d, conf, settings = start(tree, run_inosync, nodes)
    plant(nodes)
    reload(d, conf, settings, rexcludes=["*.tmp"])
    for n in nodes:
        d.wait_log(rf"reload: full sync to {n}: excludes")
        d.wait_log(rf"{n}: synced full sync", count=2)
    wait_converged(src, nodes)  # the planted file is gone: a full sync with --delete
    assert not any((n / PLANTED).exists() for n in nodes)
    assert d.stop() == 0


def test_a_hup_while_a_node_fails_keeps_its_batch(tree, run_inosync, tmp_path):
    """A node that fails (the directory above it gone) keeps what is pending across a
    reload that does not concern it, and gets it at its retry; no full sync."""
    src, second = tree["src"], tree["nodes"][1]
    host = tmp_path / "host"
    first = host / "www"
    first.mkdir(parents=True)
    d, conf, settings = start(tree, run_inosync, [first, second], retry_min=3, retry_max=3)
    plant([first])
    host.rename(tmp_path / "away")  # rsync makes the last directory only: it fails
    (src / "docs" / "while-down.txt").write_text("pending\n")
    d.wait_log(rf"{first}: rsync failed")
    (tmp_path / "away").rename(host)  # back, and the reload's check finds it
    reload(d, conf, settings, edelay=0.3)  # while it waits for its retry
    d.wait_log(r"reloaded; no sync")
    assert not (first / "docs" / "while-down.txt").exists()  # its retry is still to come
    wait_until(lambda: (first / "docs" / "while-down.txt").exists(), 20, "the pending batch")
    d.wait_log(rf"{first}: recovered")
    assert still_planted([first]), d.log()
    assert d.log().count(f"{first}: synced full sync") == 1
    assert d.stop() == 0


def test_a_new_watcher_on_the_same_tree_loses_nothing_the_old_one_had_not_read(tree,
                                                                                run_inosync):
    """A reload that changes emask watches the tree anew, without a full sync: a
    change made while the configuration is read (here by the configuration itself,
    after the loop's last read) is in the old watcher only, and is still sent."""
    src, nodes = tree["src"], tree["nodes"]
    d, conf, settings = start(tree, run_inosync, nodes)
    made = src / "made-by-config.txt"
    writes = ("import time as _time\n"
              f"with open({str(made)!r}, 'w') as _f:\n"
              "    _f.write(repr(_time.time()))\n")
    plant(nodes)
    settings["emask"] = [*DEFAULT_EMASK, "IN_MOVE_SELF"]
    write_config(conf, **settings)
    conf.write_text(conf.read_text() + writes)
    d.signal(signal.SIGHUP)
    d.wait_log(r"reloaded; no sync")
    wait_until(lambda: all((n / made.name).exists()
                           and (n / made.name).read_text() == made.read_text() for n in nodes),
               20, "what the configuration wrote, on every node")
    assert still_planted(nodes), d.log()
    assert d.stop() == 0


def test_a_node_given_a_full_sync_by_a_reload_loses_its_checkpoint(tree, run_inosync,
                                                                   tmp_path):
    """The rsync program is not in the checkpoint's fingerprint: the record written
    under the old one must not spare the node its full sync at the next start."""
    node = tree["nodes"][0]
    time.sleep(MARGIN + 0.5)  # the tree's ctimes: older than the checkpoint's margin
    d, conf, settings = start(tree, run_inosync, [node])
    assert d.stop() == 0  # a clean stop records the checkpoint
    d = run_inosync(conf, "-v")
    d.wait_log(rf"{node}: starting from its checkpoint")
    failing = tmp_path / "failing-rsync"
    failing.write_text(f'#!/bin/sh\ncase "$*" in *--version*) exec {RSYNC} "$@";; esac\n'
                       "exit 12\n")
    failing.chmod(0o755)
    reload(d, conf, settings, rsync=str(failing))
    d.wait_log(rf"reload: full sync to {node}: rsync changed")
    d.wait_log(rf"{node}: rsync failed")
    assert d.stop() == 0
    d = run_inosync(conf, "-v")
    d.wait_log(rf"{node}: full sync: no checkpoint in state_dir")
    assert d.stop() == 0
