"""Marks of replays no run has confirmed yet, kept in state_dir across restarts."""

from __future__ import annotations

import logging
import os

from inosync.unverified import Marks


def test_a_mark_lasts_until_cleared(tmp_path):
    marks = Marks(str(tmp_path / "state"))
    assert marks.mark("h:/srv") and marks.mark("/local/node")
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700
    again = Marks(str(tmp_path / "state"))  # a restart
    assert again.marked(["h:/srv", "/local/node", "other:/x"]) == {"h:/srv", "/local/node"}
    again.clear("h:/srv")
    again.clear("h:/srv")  # twice: no error
    assert again.marked(["h:/srv", "/local/node"]) == {"/local/node"}


def test_no_mark_in_a_directory_others_may_write_and_said_once(tmp_path, caplog):
    state = tmp_path / "state"
    state.mkdir(mode=0o777)
    state.chmod(0o777)
    marks = Marks(str(state))
    with caplog.at_level(logging.WARNING, logger="inosync"):
        assert not marks.mark("h:/srv") and not marks.mark("h:/srv")
    assert caplog.text.count("renames are sent as data") == 1
    assert "mode 0777" in caplog.text
    state.chmod(0o700)
    with caplog.at_level(logging.INFO, logger="inosync"):
        assert marks.mark("h:/srv")
    assert "can be written again" in caplog.text


def test_a_symlink_planted_for_the_mark_is_not_followed(tmp_path):
    marks = Marks(str(tmp_path / "state"))
    assert marks.mark("h:/srv")
    marks.clear("h:/srv")
    victim = tmp_path / "victim"
    victim.write_text("keep")
    os.symlink(victim, marks.path("h:/srv"))
    assert not marks.mark("h:/srv")
    assert victim.read_text() == "keep"
    assert marks.marked(["h:/srv"]) == set()  # a symlink is no mark either
