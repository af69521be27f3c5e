"""One real ssh node: our own sshd on 127.0.0.1, throw-away keys, root@127.0.0.1:DIR."""

from __future__ import annotations

import os

import pytest
from helpers import wait_converged, write_config
from randomops import ODD_NAMES

pytestmark = pytest.mark.slow  # end to end: real processes


def test_sync_over_ssh(tree, run_inosync, sshd, tmp_path):
    src = tree["src"]
    remote = tmp_path / "remote"
    remote.mkdir()
    local = tree["nodes"][0]
    conf = write_config(tmp_path / "inosync.conf", wpath=str(src), edelay=0.2,
                        rnodes=[f"root@127.0.0.1:{remote}", str(local)],
                        ssh=sshd.ssh_command())
    d = run_inosync(conf, "-v")
    wait_converged(src, [remote, local])
    for name in ODD_NAMES:
        (src / "docs" / name).write_text(repr(name))
    (src / "docs" / "old").rename(src / "moved")
    os.symlink("moved/b.txt", src / "link")
    wait_converged(src, [remote, local])
    (src / "index.html").unlink()
    wait_converged(src, [remote, local])
    assert "-e 'ssh -i " in d.log()  # the configured ssh command was used
    assert d.stop() == 0
