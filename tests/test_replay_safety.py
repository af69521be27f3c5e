"""The move replay never makes a node different from what plain rsync makes of it,
and never gets it stuck (issue 15), end to end with real daemons, over a local
node and, where it applies, an ssh node. Each test failed on 0.4.0."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
from helpers import RSYNC, Sshd, tree_diff, wait_converged, wait_until, write_config

pytestmark = pytest.mark.slow  # end to end: real processes


@pytest.fixture
def daemon(tree, run_inosync, sshd, tmp_path):
    """start(kind, **settings): a daemon syncing tree["src"] to one node of that kind,
    started once the node is in sync; returns (daemon, node directory)."""
    src = tree["src"]

    def start(kind: str = "local", ssh: Sshd | None = None, env: dict[str, str] | None = None,
              node: Path | None = None, dest: str | None = None, **settings: object):
        node = node or tmp_path / "node"
        node.mkdir(exist_ok=True)
        server = ssh or sshd
        if dest is None:
            dest = str(node) if kind == "local" else f"root@127.0.0.1:{node}"
        conf = write_config(tmp_path / "inosync.conf", wpath=str(src), rnodes=[dest],
                            ssh=server.ssh_command(), edelay=0.3, retry_min=0.3, retry_max=1,
                            **settings)
        d = run_inosync(conf, "-v", env=env)
        d.wait_log("synced full sync")
        return d

    return start


def synced_after(d, change, count: int = 1) -> None:
    """Make a change and wait for the batch that carries it."""
    runs = d.log().count("synced ")
    change()
    wait_until(lambda: d.log().count("synced ") >= runs + count, 30, "the batch")


KINDS = pytest.mark.parametrize("kind", ["local", "ssh"])


@KINDS
@pytest.mark.parametrize("excludes, local", [
    (["/site/uploads"], "uploads/photo.jpg"),
    (["config.local.php"], "config.local.php"),
])
def test_a_deploy_by_directory_swap_keeps_the_nodes_excluded_data(daemon, tree, kind,
                                                                   excludes, local):
    """Issue 15.2: mv site site.old; mv site.new site carried the node's excluded
    site/uploads (or site/config.local.php) to site.old, where rsync deleted it."""
    src = tree["src"]
    for name in ("site", "site.new"):
        (src / name).mkdir()
        (src / name / "index.html").write_text(f"{name}\n" * 1000)
    d = daemon(kind, rexcludes=excludes)
    node = tree["dir"] / "node"
    (node / "site" / local).parent.mkdir(parents=True, exist_ok=True)
    (node / "site" / local).write_text("the node's own")

    def deploy() -> None:
        (src / "site").rename(src / "site.old")
        (src / "site.new").rename(src / "site")

    synced_after(d, deploy)
    wait_converged(src, [node], excludes=tuple(excludes))
    assert (node / "site" / local).read_text() == "the node's own"
    assert (node / "site" / "index.html").read_text() == "site.new\n" * 1000


@KINDS
def test_max_delete_turns_the_replay_off(daemon, tree, tmp_path, kind):
    """Issue 15.3: a replayed mv a b replaced the node's old b, which rsync would keep
    (then with --backup, refused at load since issue 16; then --inplace, refused
    since its review: an interrupted run leaves a half-written file). With
    --max-delete a replayed rename over b would delete it uncounted: off."""
    src, node = tree["src"], tmp_path / "node"
    (src / "a").write_text("the new content of b\n")
    (src / "b").write_text("old content\n")
    d = daemon(kind, rsync_args=["--max-delete=1000"])
    assert "renames sent as data, not replayed: rsync_args has --max-delete=1000" in d.log()
    synced_after(d, lambda: (src / "a").rename(src / "b"))
    wait_converged(src, [node])
    assert (node / "b").read_text() == "the new content of b\n"
    assert "replaying" not in d.log()


def test_parents_are_what_rsync_makes_with_no_perms(daemon, tree, tmp_path):
    """Issue 15.4: the replay made missing parents 0700, which --no-perms never fixes."""
    src = tree["src"]
    (src / "docs").chmod(0o750)
    d = daemon(rsync_args=["--no-perms"])
    node = tmp_path / "node"
    subprocess.run(["rm", "-rf", str(node / "docs")], check=True)  # drifted: docs gone
    synced_after(d, lambda: (src / "index.html").rename(src / "docs" / "index.html"))
    plain = tmp_path / "plain"
    subprocess.run([RSYNC, "-a", "--no-perms", f"{src}/", f"{plain}/"], check=True)
    assert stat.S_IMODE((node / "docs").stat().st_mode) == \
        stat.S_IMODE((plain / "docs").stat().st_mode)
    assert (node / "docs" / "index.html").exists()


def test_no_perl_here_sends_the_data_and_says_so_once(daemon, tree, tmp_path):
    """Issue 15.7: without perl every run failed "cannot run perl", forever."""
    src = tree["src"]
    empty = tmp_path / "bin"
    empty.mkdir()
    d = daemon(env={"PATH": str(empty)})
    synced_after(d, lambda: (src / "index.html").rename(src / "home.html"))
    synced_after(d, lambda: (src / "home.html").rename(src / "index.html"))
    wait_converged(src, [tmp_path / "node"])
    assert d.log().count("no perl on this machine") == 1
    assert "rsync failed" not in d.log()


def test_no_perl_on_an_ssh_node_is_said_once(daemon, tree, tmp_path, own_sshd):
    """Issue 15.8: the fallback worked, but nothing said so at normal verbosity."""
    src, bin_dir = tree["src"], tmp_path / "nodebin"
    bin_dir.mkdir()
    (bin_dir / "rsync").symlink_to(RSYNC)
    server = own_sshd(PATH=str(bin_dir))
    d = daemon("ssh", ssh=server)
    synced_after(d, lambda: (src / "index.html").rename(src / "home.html"))
    synced_after(d, lambda: (src / "home.html").rename(src / "index.html"))
    wait_converged(src, [tmp_path / "node"])
    assert d.log().count("no perl there: renames to this node are sent as data") == 1
    assert "WARNING" in d.log().split("no perl there")[0].rsplit("\n", 1)[-1]


def test_a_replay_that_never_returns_is_cut_short_and_retried(daemon, tree, tmp_path):
    """Issue 15.9: a replay had no time limit: the node stayed "running" forever."""
    src, bin_dir = tree["src"], tmp_path / "bin"
    bin_dir.mkdir()
    hung = bin_dir / "perl"
    hung.write_text("#!/bin/sh\nexec sleep 1000\n")
    hung.chmod(0o755)
    d = daemon(env={"PATH": f"{bin_dir}:{os.environ['PATH']}"}, timeout=2)
    (src / "index.html").rename(src / "home.html")
    d.wait_log("the move replay did not end in time")
    wait_converged(src, [tmp_path / "node"], timeout=20)
    d.wait_log("recovered after")
    assert d.log().count("did not end in time") == 1  # logged once; the retry has no replay


def test_tilde_in_an_ssh_node_means_the_home_directory(daemon, tree, tmp_path, own_sshd):
    """Issue 15.6: rsync let the remote shell expand ~/site, the replay took it
    literally ($HOME/~/site) and silently never worked."""
    src, home = tree["src"], tmp_path / "home"
    (home / "site").mkdir(parents=True)
    server = own_sshd(HOME=str(home))
    (src / "big").write_bytes(os.urandom(100_000))
    d = daemon("ssh", ssh=server, node=home / "site", dest="root@127.0.0.1:~/site")
    node = home / "site"
    kept = tmp_path / "kept"
    os.link(node / "big", kept)
    synced_after(d, lambda: (src / "big").rename(src / "big2"))
    assert os.path.samefile(node / "big2", kept)  # renamed there, not sent again
    assert not (home / "~").exists() and tree_diff(src, node) == []
