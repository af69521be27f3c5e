"""Issue 17.1 on a real systemd: the unit as shipped, at a boot where wpath's
disk is not mounted yet, fails with 75, is restarted every 15 s, and syncs once
the disk appears; the final statusfile outlives the stop."""

from __future__ import annotations

import configparser
import json

import pytest
import sdboot
from helpers import ROOT, inosync_argv, tree_diff, wait_until, write_config

# alone: its namespace holds a copy of every filesystem mounted at its start
pytestmark = [pytest.mark.slow, pytest.mark.alone,
              pytest.mark.skipif(sdboot.why_not() is not None, reason=str(sdboot.why_not()))]


def shipped_unit_with(execstart: str) -> str:
    """contrib/inosync.service as installed, with a drop-in's two changes:
    this checkout's inosync, and its output in a file (no journald here)."""
    text = (ROOT / "contrib" / "inosync.service").read_text()
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read_string(text)
    assert parser["Service"]["ExecStart"].endswith("-c /etc/inosync.conf")
    return text.replace(parser["Service"]["ExecStart"], execstart) + (
        "\n[Service]\nStandardOutput=append:/run/boottest/inosync.log\nStandardError=inherit\n")


@pytest.fixture
def boot(tmp_path):
    disk, replica, etc = tmp_path / "disk", tmp_path / "replica", tmp_path / "etc"
    for d in (disk, replica, etc):
        d.mkdir()
    (disk / "index.html").write_text("hello\n")
    (disk / "sub").mkdir()
    (disk / "sub" / "a.txt").write_text("a\n")
    write_config(etc / "inosync.conf", wpath="/srv/www", rnodes=["/srv/replica"], edelay=1,
                 statusfile="/run/inosync/status.json", state_dir="/var/lib/inosync")
    execstart = " ".join([*inosync_argv(), "-c", "/run/boottest/inosync.conf"])
    units = {"inosync.service": shipped_unit_with(execstart),
             "boot.target": "[Unit]\nWants=inosync.service\n"}
    machine = sdboot.Boot(tmp_path, units, {etc: "/run/boottest", replica: "/srv/replica"},
                          "boot.target", dirs=("/srv/www",))  # the empty mount point
    machine.disk = disk
    machine.replica = replica
    try:
        yield machine
    finally:
        machine.close()


def test_a_boot_before_the_disk_is_mounted_syncs_once_it_is(boot):
    service = "inosync.service"
    wait_until(lambda: boot.show(service, "SubState").get("SubState") == "auto-restart", 20,
               "inosync to exit and wait for its restart")
    first = boot.show(service, "ExecMainStatus", "ActiveState", "SubState", "Result")
    assert first["ExecMainStatus"] == "75", first  # EX_TEMPFAIL: not a config error (2)
    assert first["Result"] == "exit-code" and first["ActiveState"] != "failed", first
    print(boot.inside("systemctl", "status", service, "--no-pager").stdout)
    assert not any(boot.replica.iterdir())
    wait_until(lambda: int(boot.show(service, "NRestarts")["NRestarts"]) >= 1, 30,
               "systemd to restart inosync")

    done = boot.inside("mount", "--bind", str(boot.disk), "/srv/www")  # the late disk
    assert done.returncode == 0, done.stderr
    wait_until(lambda: boot.show(service, "SubState")["SubState"] == "running", 40,
               "inosync to be running after the disk appeared")
    wait_until(lambda: not tree_diff(boot.disk, boot.replica), 30, "the node to be synced")

    after = boot.show(service, "NRestarts", "ExecMainStatus", "ActiveState")
    assert after["ActiveState"] == "active" and int(after["NRestarts"]) >= 1, after
    log = boot.inside("cat", "/run/boottest/inosync.log").stdout
    assert "wpath /srv/www is empty" in log and "synced full sync" in log
    print(log)

    done = boot.inside("systemctl", "stop", service, timeout=60)
    assert done.returncode == 0, done.stderr
    assert boot.show(service, "ActiveState")["ActiveState"] == "inactive"
    # RuntimeDirectoryPreserve=yes: the final statusfile outlives the stop (17.9)
    status = json.loads(boot.inside("cat", "/run/inosync/status.json").stdout)
    assert status["state"] == "stopped", status
