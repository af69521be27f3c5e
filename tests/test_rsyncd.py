"""An rsync:// node: our own rsync daemon on 127.0.0.1."""

from __future__ import annotations

import os
import subprocess

import pytest
from helpers import RSYNC, free_port, wait_converged, wait_until, write_config

from inosync.rsync import Outcome, classify

pytestmark = pytest.mark.slow  # end to end: real processes


@pytest.mark.parametrize("module", ["no-such-module", "secret"])
def test_a_module_the_daemon_does_not_have_is_retried_slowly(tmp_path, module):
    """Issue 17.9: exit 5 after "@ERROR: Unknown module" (a configuration error on
    the far side) was retried with the fast back-off, as if the network failed."""
    (tmp_path / "module").mkdir()
    (tmp_path / "src").mkdir()
    port = free_port()
    conf = tmp_path / "rsyncd.conf"
    secrets = tmp_path / "rsyncd.secrets"
    secrets.write_text("bob:right\n")
    secrets.chmod(0o600)
    conf.write_text(f"use chroot = no\npid file = {tmp_path / 'rsyncd.pid'}\n"
                    f"[www]\npath = {tmp_path / 'module'}\nread only = no\n"
                    f"[secret]\npath = {tmp_path / 'module'}\nread only = no\n"
                    f"auth users = bob\nsecrets file = {secrets}\n")
    daemon = subprocess.Popen([RSYNC, "--daemon", "--no-detach", f"--config={conf}",
                               f"--port={port}", "--address=127.0.0.1"],
                              stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: subprocess.run([RSYNC, f"rsync://127.0.0.1:{port}/"],
                                          capture_output=True).returncode == 0,
                   10, "rsync daemon")
        done = subprocess.run([RSYNC, "-a", f"{tmp_path / 'src'}/",
                               f"rsync://bob@127.0.0.1:{port}/{module}/"],
                              capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              env={**os.environ, "RSYNC_PASSWORD": "wrong"})
    finally:
        daemon.terminate()
        daemon.wait(10)
    assert done.returncode == 5, done.stderr
    assert classify(done.returncode, done.stderr) is Outcome.BROKEN, done.stderr


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
