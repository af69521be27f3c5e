"""Rule 3 of issue 16: pseudo filesystems (proc, sysfs, devpts...) inside wpath.

A chroot with /proc mounted inside wpath was accepted: rsync copied the
kernel's view of this machine to every node. Refused at start (unless
excluded); one mounted while inosync runs is left out of every run, with a
warning. Real mounts (tests run as root), always unmounted.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers import inosync_argv, wait_converged, write_config

from inosync.excludes import Excludes


@contextmanager
def mounted(fstype: str, where: Path) -> Iterator[None]:
    done = subprocess.run(["mount", "-t", fstype, fstype, str(where)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot mount {fstype}: {done.stderr.decode().strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


def test_mountinfo_is_parsed_with_its_escapes():
    from inosync.mounts import Mount, parse_mountinfo

    data = (b"22 1 0:21 / /proc rw,nosuid shared:12 - proc proc rw\n"
            b"43 27 0:39 / /srv/www/a\\040b\\012c\\134 rw,relatime - proc proc rw\n"
            b"44 27 8:1 / /srv/www/data rw master:1 propagate_from:2 - ext4 /dev/sda1 rw\n"
            b"garbage\n")
    assert parse_mountinfo(data) == [Mount("/proc", "proc", "0:21", "/", "proc"),
                                     Mount("/srv/www/a b\nc\\", "proc", "0:39", "/", "proc"),
                                     Mount("/srv/www/data", "ext4", "8:1", "/", "/dev/sda1")]


def test_only_pseudo_filesystems_inside_wpath_and_not_excluded_are_a_problem():
    from inosync.mounts import Mount, problem

    mounts = [Mount("/proc", "proc"), Mount("/srv/www/data", "ext4"),
              Mount("/srv/www/tmp", "tmpfs"), Mount("/srv/www/jail/proc", "proc"),
              Mount("/srv/wwwx/proc", "proc")]
    why = problem("/srv/www", mounts, Excludes(()))
    assert why == ("a proc filesystem is mounted at /srv/www/jail/proc, inside wpath /srv/www: "
                   "it is no data to copy; exclude it in rexcludes ('/jail/proc/') or unmount it")
    assert problem("/srv/www", mounts, Excludes(("/jail/proc/",))) is None
    assert problem("/srv/www", mounts, Excludes(("jail",))) is None  # a directory above
    assert problem("/srv/www/jail/proc", mounts, Excludes(())) == \
        "wpath /srv/www/jail/proc is a proc filesystem, not data to copy"


def test_start_is_refused_with_proc_mounted_inside_wpath(tmp_path):
    src, node = tmp_path / "src", tmp_path / "node"
    (src / "jail" / "proc").mkdir(parents=True)
    (src / "index.html").write_text("hi\n")
    node.mkdir()
    cfg = write_config(tmp_path / "inosync.conf", wpath=str(src), rnodes=[str(node)])
    with mounted("proc", src / "jail" / "proc"):
        for args in ((), ("--check",)):
            done = subprocess.run([*inosync_argv(), "-c", str(cfg), *args],
                                  capture_output=True, text=True, timeout=30)
            assert done.returncode == 2, done.stderr
            lines = done.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].endswith(
                f"a proc filesystem is mounted at {src}/jail/proc, inside wpath {src}: it is "
                "no data to copy; exclude it in rexcludes ('/jail/proc/') or unmount it"), lines
        # Excluded, it is never read nor watched: fine.
        cfg = write_config(cfg, wpath=str(src), rnodes=[str(node)], rexcludes=["/jail/proc/"])
        done = subprocess.run([*inosync_argv(), "-c", str(cfg), "--check"],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
    assert not list(node.iterdir())


@pytest.mark.slow
def test_pseudo_filesystem_mounted_while_running_is_left_out(tmp_path, run_inosync):
    """devpts, mounted later, holds ptmx (a device root's rsync -a copies)."""
    src, node = tmp_path / "src", tmp_path / "node"
    (src / "jail" / "pts").mkdir(parents=True)
    (src / "index.html").write_text("hi\n")
    node.mkdir()
    cfg = write_config(tmp_path / "inosync.conf", wpath=str(src), rnodes=[str(node)],
                       edelay=0.2, resync_interval=1)
    d = run_inosync(cfg)
    d.wait_log(r"synced full sync")
    wait_converged(src, [node])
    with mounted("devpts", src / "jail" / "pts"):
        (src / "jail").chmod(0o750)  # a batch that lists jail, recursively
        d.wait_log(r"synced 1 path")
        d.wait_log(r"synced full sync", count=3)  # and whole-tree runs (the periodic resync)
        assert list((node / "jail" / "pts").iterdir()) == []
        assert (node / "jail").stat().st_mode & 0o777 == 0o750
        d.signal(1)  # a reload checks as a start does
        d.wait_log(r"reload failed, keeping the old configuration: .* a devpts filesystem")
        said = [line for line in d.log().splitlines() if "leaving it out of every" in line]
        assert len(said) == 1 and "WARNING" in said[0], d.log()
        assert said[0].endswith(f"a devpts filesystem is mounted at {src}/jail/pts, inside "
                                "wpath: leaving it out of every sync (exclude it in rexcludes, "
                                "or unmount it; a restart refuses it)")
    assert d.stop() == 0
