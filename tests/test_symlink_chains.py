"""Symlinks another user controls on the way to wpath or to a local node (issue 16,
rule 3): the whole chain a path resolves through is checked (the links it names
and the links those lead through), with the same walk at start, on reload and
on a swap (paths.resolve). The stranger is uid 65534 (nobody); os.lchown gives
a symlink its owner."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import wait_converged, write_config

from inosync.config import ConfigError, load
from inosync.paths import resolve

NOBODY = 65534
REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")


def tree(where: Path, text: str) -> Path:
    where.mkdir(parents=True)
    (where / "index.html").write_text(text)
    return where


def link(path: Path, target: str | Path, owner: int = 0) -> Path:
    path.symlink_to(target)
    os.lchown(path, owner, owner)
    return path


def strangers_chain(tmp_path: Path, how: str, target: Path) -> tuple[Path, Path]:
    """A path that leads to target through a link nobody controls: (path, culprit)."""
    srv = tmp_path / "srv"
    if how == "in a stranger's directory":  # the link is root's; nobody may replace it
        srv.mkdir()
        os.chown(srv, NOBODY, NOBODY)
        return link(srv / "site", target), srv
    srv.mkdir()
    if how == "direct":  # /srv/site -> /data/site, the link nobody's
        return link(srv / "site", target, NOBODY), srv / "site"
    # "behind ours": /srv/site -> /hop is root's, /hop -> /data/site is nobody's
    hop = link(tmp_path / "hop", target, NOBODY)
    return link(srv / "site", hop), hop


def error_of(conf: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load(str(conf))
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{conf}:1: "), message
    return message


HOWS = ["direct", "behind ours", "in a stranger's directory"]


@pytest.mark.parametrize("how", HOWS)
def test_wpath_through_a_strangers_symlink_is_refused_at_start(tmp_path, how):
    site = tree(tmp_path / "data" / "site", "site")
    wpath, culprit = strangers_chain(tmp_path, how, site)
    conf = write_config(tmp_path / "c.conf", wpath=str(wpath), rnodes=["h:/srv/www/"])
    message = error_of(conf)
    assert f"wpath {wpath}: it leads through" in message and str(culprit) in message
    if how == "in a stranger's directory":
        assert f"{culprit} belongs to uid {NOBODY}" in message
    else:
        assert f"owned by uid {NOBODY} (nobody)" in message
        assert f"chown -h root {culprit}" in message


def test_a_link_in_a_directory_others_may_write_is_refused(tmp_path):
    """Not sticky: anyone may rename our link away and put theirs (or a directory
    of theirs) at its name."""
    site = tree(tmp_path / "data" / "site", "site")
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    conf = write_config(tmp_path / "c.conf", wpath=str(link(shared / "site", site)),
                        rnodes=["h:/srv/www/"])
    assert (f"but {shared} is writable by others (mode 0777): another user could replace "
            f"the link (fix: chmod go-w {shared}") in error_of(conf)


def test_the_command_line_says_it_in_one_line_and_exits_2(tmp_path):
    site = tree(tmp_path / "data" / "site", "site")
    wpath, culprit = strangers_chain(tmp_path, "behind ours", site)
    conf = write_config(tmp_path / "c.conf", wpath=str(wpath), rnodes=[str(tmp_path / "n")])
    done = subprocess.run([sys.executable, "-m", "inosync", "-c", str(conf), "--check"],
                          capture_output=True, text=True, timeout=30, cwd=REPO)
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert f"a symlink owned by uid {NOBODY}" in done.stderr and str(culprit) in done.stderr


@pytest.mark.parametrize("how", HOWS)
def test_a_local_node_through_a_strangers_symlink_is_refused_at_start(tmp_path, how):
    """rsync --delete and the move replay would work in the tree the stranger names."""
    wpath = tree(tmp_path / "www", "site")
    other = tree(tmp_path / "other" / "node", "another root-owned tree").parent
    up, culprit = strangers_chain(tmp_path, how, other)
    conf = write_config(tmp_path / "c.conf", rnodes=[str(up / "node")], wpath=str(wpath))
    message = error_of(conf)
    assert f"{conf}:1: local node {up / 'node'}: it leads through" in message  # rnodes
    assert str(culprit) in message


def test_root_owned_chains_are_followed(tmp_path):
    """/var/run -> /run, a deploy's current -> releases/2: ours, in our directories."""
    site = tree(tmp_path / "data" / "site", "site")
    (tmp_path / "srv").mkdir()
    link(tmp_path / "hop", "data")
    link(tmp_path / "srv" / "site", "../hop/site")
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)  # /tmp: no one else may rename our link in it
    link(sticky / "node", tmp_path / "hop")
    conf = write_config(tmp_path / "c.conf", wpath=str(tmp_path / "srv" / "site"),
                        rnodes=[str(sticky / "node" / "copy")])
    assert load(str(conf)).wpath == str(site)


def test_resolve_is_realpath_when_every_link_is_trusted(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    link(tmp_path / "abs", tmp_path / "a")
    link(tmp_path / "a" / "rel", "b/../..")
    link(tmp_path / "a" / "b" / "file", "/etc/hostname")
    for spelling in ["abs/rel/abs/b", "abs/rel/a/../a/b/missing/../x", "abs/b/file",
                     "abs/b/file/below", "a/rel/abs/rel", "/var/run", ""]:
        path = os.path.join(tmp_path, spelling)
        assert resolve(path) == (os.path.realpath(path), None), spelling


def test_a_symlink_loop_is_refused(tmp_path):
    link(tmp_path / "one", "two")
    link(tmp_path / "two", "one")
    problem = resolve(str(tmp_path / "one" / "x")).problem
    assert problem is not None and "more than 40 symlinks" in problem


# ---------------------------------------------------------------- a running daemon


@pytest.mark.slow
@pytest.mark.parametrize("how", ["direct", "behind ours"])
def test_a_reload_onto_a_strangers_symlink_is_refused(tmp_path, run_inosync, how):
    """The config now names a wpath through nobody's link: HUP keeps the old config
    (and its tree), and nothing of the tree the link leads to is synced."""
    old = tree(tmp_path / "old", "old tree")
    new = tree(tmp_path / "data" / "site", "new tree")
    (new / "only-in-new.txt").write_text("the stranger's choice\n")
    node = tmp_path / "node"
    node.mkdir()
    settings = dict(rnodes=[str(node)], edelay=0.2)
    conf = write_config(tmp_path / "c.conf", wpath=str(old), **settings)
    d = run_inosync(conf, "-v")
    wait_converged(old, [node])
    wpath, culprit = strangers_chain(tmp_path, how, new)
    write_config(conf, wpath=str(wpath), **settings)
    d.signal(signal.SIGHUP)
    d.wait_log("reloaded|reload failed")
    (old / "later.txt").write_text("still watched\n")
    wait_converged(old, [node])
    assert d.proc.poll() is None
    assert not (node / "only-in-new.txt").exists()
    assert (node / "index.html").read_text() == "old tree"
    assert re.search("reload failed, keeping the old configuration: .*a symlink owned by uid",
                     d.log())
    assert d.stop() == 0
