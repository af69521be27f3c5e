"""Issue 17.8: messages that say what is so."""

from __future__ import annotations

import subprocess

import pytest
from helpers import inosync_argv, write_config

from inosync.config import ConfigError, load


def test_a_plain_subdirectory_node_is_not_said_to_be_a_bind_mount(tmp_path):
    wdir = tmp_path / "www"
    (wdir / "copy").mkdir(parents=True)
    (wdir / "index.html").write_text("x\n")
    conf = write_config(tmp_path / "c.conf", wpath=str(wdir), rnodes=[str(wdir / "copy")])
    with pytest.raises(ConfigError) as info:
        load(str(conf))
    assert f"local node {wdir / 'copy'} lies inside wpath {wdir}" in str(info.value)
    assert "bind mount" not in str(info.value)


def test_a_missing_wpath_is_said_to_be_missing(tmp_path):
    conf = write_config(tmp_path / "c.conf", wpath=str(tmp_path / "gone"),
                        rnodes=[str(tmp_path / "node")])
    with pytest.raises(ConfigError) as info:
        load(str(conf))
    assert f"wpath {tmp_path / 'gone'} does not exist" in str(info.value)


@pytest.mark.parametrize("args", [["--check"], [], ["-p"], ["--verify"]])
def test_an_error_on_the_command_line_has_no_log_timestamp(tmp_path, args):
    """Errors on the command line carried log timestamps ("2026-... ERROR ...")."""
    conf = write_config(tmp_path / "c.conf", wpath=str(tmp_path / "gone"),
                        rnodes=[str(tmp_path / "node")])
    done = subprocess.run([*inosync_argv(), "-c", str(conf), *args], capture_output=True,
                          text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert done.returncode == 75  # not there yet (issue 17.1): the units retry it
    assert done.stderr == (f"inosync: {conf}:1: wpath {tmp_path / 'gone'} does not exist "
                           "(not mounted yet, or a typo?); exit 75: a later start may find it\n")


def test_check_points_at_verify_as_the_preview_of_the_first_sync(tmp_path):
    """Issue 17.6: the first full sync deletes whatever a node holds that the source
    lacks; --check said nothing of how to see that first."""
    from inosync.check import summary

    wdir = tmp_path / "www"
    wdir.mkdir()
    (wdir / "index.html").write_text("x\n")
    conf = write_config(tmp_path / "c.conf", wpath=str(wdir),
                        rnodes=[str(tmp_path / "n"), "web1:/srv/www"])
    lines = summary(load(str(conf)))
    assert f"before the first start: inosync -c {conf} --verify lists what the first full " \
           "sync would change on each node (*deleting: what it would delete)" in lines
    assert "ssh nodes: accept each host key first (ssh -o BatchMode=no -o BatchMode=yes " \
           "-o ConnectTimeout=10 -o ServerAliveInterval=10 -o ServerAliveCountMax=3 web1 true, " \
           "as the daemon's user): " \
           "with BatchMode=yes an unknown key fails every run" in lines
