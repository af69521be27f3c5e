"""Review 18, second round: restarts, reloads and overflows attacked again.
Each test is a way a node ended other than a plain `rsync -a --delete` of the
tree (with its settings) would leave it, on the code before its fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import tree_diff, write_config
from test_checkpoint_restart import first_run
from test_review18 import restart_and_settle

pytestmark = pytest.mark.slow  # end to end: real daemons, real rsync


def release(root: Path, text: str) -> Path:
    """A release tree: the same names as every other release, other contents."""
    (root / "docs").mkdir(parents=True)
    (root / "index.html").write_text(f"<h1>{text}</h1>\n")
    (root / "docs" / "a.txt").write_text(f"{text}\n")
    return root


def test_a_node_that_held_another_tree_since_its_checkpoint_gets_a_full_sync(tree, run_inosync):
    """A rollback: wpath is release v1, then v2 (config edited, restart: its full
    sync puts v2 on the node), then v1 again. v1's record, written before the
    node got v2, still matched (same wpath, directory, settings), so the start
    resumed from it: nothing changed in v1 since, nothing was sent, and the node
    kept serving v2 (the top-level check sees the same names). Failed before the
    fix: index.html on the node said v2."""
    v1, v2 = release(tree["dir"] / "v1", "v1"), release(tree["dir"] / "v2", "v2")
    nodes = tree["nodes"][:1]
    conf = tree["dir"] / "inosync.conf"
    settings = dict(rnodes=[str(n) for n in nodes], edelay=0.2)
    write_config(conf, wpath=str(v1), **settings)
    first_run(run_inosync, conf, v1, nodes)

    write_config(conf, wpath=str(v2), **settings)
    d = restart_and_settle(run_inosync, conf, nodes)
    assert tree_diff(v2, nodes[0]) == [], d.log()
    assert d.stop() == 0

    write_config(conf, wpath=str(v1), **settings)  # rolled back
    d = restart_and_settle(run_inosync, conf, nodes)
    assert tree_diff(v1, nodes[0]) == [], d.log()
    assert d.stop() == 0
