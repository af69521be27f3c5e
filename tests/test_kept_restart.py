"""A kept mount point stays kept across a crash or a restart, until its
filesystem is mounted there again; an fstab mount point inside wpath that is
not mounted at start is kept too (a boot where the disk did not mount).
End to end: real tmpfs mounts, real rsync, a real daemon killed with -9."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import helpers
import pytest
from helpers import Inosync, wait_converged, write_config
from test_kept import copies, mounted, tmpfs

pytestmark = pytest.mark.slow  # end to end: real processes


def full_sync_went(d: Inosync, nodes: list[Path]) -> None:
    """The start's full sync has ended on every node."""
    d.wait_log(r"synced full sync", count=len(nodes))


@pytest.mark.alone  # waits for IN_UNMOUNT: see alone.py
def test_a_crash_and_restart_keep_the_copy_until_the_filesystem_is_mounted_again(
        tree, run_inosync):
    src, nodes = tree["src"], tree["nodes"]
    data = src / "data"
    data.mkdir()  # empty underneath: an unmounted disk leaves nothing
    conf = write_config(tree["dir"] / "inosync.conf", wpath=str(src),
                        rnodes=[str(n) for n in nodes], edelay=0.2)
    scratch = tree["dir"] / "scratch"  # the killed daemon cannot remove its own: not /tmp
    scratch.mkdir(mode=0o700)
    with tmpfs(data):
        d = run_inosync(conf, "-v", env={"TMPDIR": str(scratch)})
        wait_converged(src, nodes)
        assert copies(nodes, "data") == [True, True]
        subprocess.run(["umount", str(data)], check=True)
        d.wait_log("lost its watch .unmounted.. and is empty now")
    d.proc.kill()  # a crash: no clean stop; systemd's Restart=on-failure starts it again
    d.proc.wait()
    (src / "marker").write_text("while it was down\n")
    d = run_inosync(conf, "-v")
    full_sync_went(d, nodes)
    assert all((n / "marker").is_file() for n in nodes)  # the full sync did run
    assert copies(nodes, "data") == [True, True], d.log()
    d.wait_log("is kept from before the restart")
    assert d.stop() == 0

    # A clean stop and start keep it too; then its filesystem comes back, with
    # other data than the nodes hold: released at the next start, and synced.
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(data)], check=True)
    try:
        (data / "fresh.txt").write_text("on the filesystem mounted again\n")
        d = run_inosync(conf, "-v")
        wait_converged(src, nodes)
        assert copies(nodes, "data") == [False, False]
        assert all((n / "data" / "fresh.txt").is_file() for n in nodes)
        d.wait_log("is mounted again")
        assert d.stop() == 0
    finally:
        if mounted(data):
            subprocess.run(["umount", "-l", str(data)], check=False)


# The daemon, with its fstab elsewhere than /etc/fstab (a module constant).
LAUNCH = """
import sys
fstab = sys.argv.pop(1)
try:
    import inosync.keptstore
    inosync.keptstore.FSTAB = fstab
except ImportError:
    pass
from inosync.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_an_fstab_mount_point_not_mounted_at_start_keeps_the_copy(tree, run_inosync,
                                                                   monkeypatch):
    """A boot where the disk did not mount (nofail): its empty mount point
    must not empty the nodes' copy in the start's full sync."""
    src, nodes = tree["src"], tree["nodes"]
    disk = src / "my disk"  # a space: \\040 in fstab
    disk.mkdir()
    for n in nodes:  # what an earlier run sent while the disk was mounted
        (n / "my disk" / "sub").mkdir(parents=True)
        (n / "my disk" / "db").write_text("precious\n")
    fstab = tree["dir"] / "fstab"
    where = str(disk).replace(" ", "\\040")
    fstab.write_text(f"# a comment\nUUID=abc / ext4 defaults 0 1\n"
                     f"/dev/sdz1\t{where}  ext4 defaults,nofail 0 2\nnone swap swap sw 0 0\n")
    monkeypatch.setattr(helpers, "inosync_argv",
                        lambda: [sys.executable, "-c", LAUNCH, str(fstab)])
    conf = write_config(tree["dir"] / "inosync.conf", wpath=str(src),
                        rnodes=[str(n) for n in nodes], edelay=0.2)
    d = run_inosync(conf, "-v")
    full_sync_went(d, nodes)
    assert all((n / "index.html").is_file() for n in nodes)
    assert all((n / "my disk" / "db").is_file() for n in nodes), d.log()
    d.wait_log(r"is a mount point in .*fstab, but nothing is mounted there")
    assert d.stop() == 0


def test_an_fstab_mount_point_with_an_empty_filesystem_at_start_keeps_the_copy(
        tree, run_inosync, monkeypatch):
    """A boot where the disk failed but a bind mount of its empty mount point
    onto the one inside wpath succeeded (fstab: `/dev/sdb1 R/disk ... nofail`,
    `R/disk R/www/data none bind,nofail`): something is mounted there, but it
    holds nothing. The start's full sync must not empty the nodes' copy."""
    if os.geteuid() != 0:
        pytest.skip("mounting needs root")
    src, nodes = tree["src"], tree["nodes"]
    data = src / "data"
    data.mkdir()
    for n in nodes:  # what an earlier run sent while the disk was mounted
        (n / "data").mkdir()
        (n / "data" / "db").write_text("precious\n")
    fstab = tree["dir"] / "fstab"
    fstab.write_text(f"/dev/sdz1 {data} ext4 nofail 0 2\n")
    monkeypatch.setattr(helpers, "inosync_argv",
                        lambda: [sys.executable, "-c", LAUNCH, str(fstab)])
    conf = write_config(tree["dir"] / "inosync.conf", wpath=str(src),
                        rnodes=[str(n) for n in nodes], edelay=0.2)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(data)], check=True)
    try:
        d = run_inosync(conf, "-v")
        full_sync_went(d, nodes)
        assert all((n / "index.html").is_file() for n in nodes)
        assert all((n / "data" / "db").is_file() for n in nodes), d.log()
        d.wait_log(r"is a mount point in .*fstab, but the filesystem mounted there is empty")
        assert d.stop() == 0
    finally:
        subprocess.run(["umount", "-l", str(data)], check=False)
