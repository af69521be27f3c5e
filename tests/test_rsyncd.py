"""An rsync:// node: our own rsync daemon on 127.0.0.1."""

from __future__ import annotations

import subprocess

import pytest
from helpers import RSYNC, free_port, wait_converged, wait_until, write_config

pytestmark = pytest.mark.slow  # end to end: real processes


def test_sync_to_rsync_daemon(tree, run_inosync, tmp_path):
    module_dir = tmp_path / "module"
    module_dir.mkdir()
    port = free_port()
    conf = tmp_path / "rsyncd.conf"
    conf.write_text(f"use chroot = no\npid file = {tmp_path / 'rsyncd.pid'}\n"
                    f"[www]\npath = {module_dir}\nread only = no\nuid = root\ngid = root\n")
    daemon = subprocess.Popen([RSYNC, "--daemon", "--no-detach", f"--config={conf}",
                               f"--port={port}", "--address=127.0.0.1"],
                              stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: subprocess.run([RSYNC, f"rsync://127.0.0.1:{port}/"],
                                          capture_output=True).returncode == 0,
                   10, "rsync daemon")
        src = tree["src"]
        config = write_config(tmp_path / "inosync.conf", wpath=str(src), edelay=0.2,
                              rnodes=[f"rsync://127.0.0.1:{port}/www/site"])
        (module_dir / "site").mkdir()
        d = run_inosync(config, "-v")
        wait_converged(src, [module_dir / "site"])
        (src / "docs" / "new.txt").write_text("over rsync://\n")
        (src / "index.html").unlink()
        wait_converged(src, [module_dir / "site"])
        assert "--contimeout=10" in d.log()
        assert d.stop() == 0
    finally:
        daemon.terminate()
        daemon.wait(10)
