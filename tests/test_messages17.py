"""Issue 17.8: messages that say what is so."""

from __future__ import annotations

import pytest
from helpers import write_config

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
