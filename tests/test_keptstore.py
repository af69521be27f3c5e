"""The record of kept mount points (keptstore.py): its format, the decision
made at start, fstab's mount points; the file itself in a real state_dir."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import inosync_argv, write_config

from inosync import keptstore
from inosync.check import preflight
from inosync.config import load
from inosync.keptstore import (
    KeptError,
    KeptFile,
    Place,
    decide,
    decode,
    encode,
    fstab_inside,
    looker,
    parse_fstab,
    valid,
)

ROOT = "/srv/www"
EMPTY, FULL = Place(mounted=False, content=False), Place(mounted=False, content=True)
MOUNTED_EMPTY, MOUNTED = Place(mounted=True, content=False), Place(mounted=True, content=True)
MISSING = Place(mounted=False, content=False, exists=False)


def test_the_record_round_trips_any_name():
    kept = {"data", "a b/c", "new\nline", "x*y", "back\\slash", "\udcff-not-utf8"}
    assert decode(encode(ROOT, kept), ROOT) == kept
    assert decode(encode(ROOT, set()), ROOT) == set()


@pytest.mark.parametrize("data, why", [
    (b"/srv/www\0data", "cut short"),
    (b"/srv/other\0data\0", "written for wpath"),
    (b"/srv/www\0../etc\0", "not a path inside wpath"),
    (b"/srv/www\0\0", "not a path inside wpath"),  # "" would be the whole tree
    (b"/srv/www\0/etc\0", "not a path inside wpath"),
])
def test_a_damaged_record_is_refused(data, why):
    with pytest.raises(ValueError, match=why):
        decode(data, ROOT)


def test_valid():
    assert valid("a") and valid("a/b c") and valid("..a")
    assert not any(valid(p) for p in ("", ".", "a/..", "/a", "a//b", "a/", "a\0b"))


@pytest.mark.parametrize("place, kept", [
    (MISSING, True), (EMPTY, True), (FULL, True), (MOUNTED_EMPTY, True), (MOUNTED, False)])
def test_a_recorded_place_is_released_only_by_a_filesystem_with_data(place, kept):
    """Files written into the bare mount point do not release it (an application
    that did not notice the unmount), nor does an empty filesystem mounted there."""
    d = decide({"data"}, set(), lambda rel: place)
    assert (d.kept == {"data"}) is kept and (d.released == {"data"}) is not kept
    assert d.recorded == ({"data": place} if kept else {})


@pytest.mark.parametrize("place, kept", [
    (MISSING, True), (EMPTY, True), (FULL, True), (MOUNTED_EMPTY, True), (MOUNTED, False)])
def test_an_fstab_mount_point_is_kept_until_a_filesystem_with_data_is_mounted_there(
        place, kept):
    """As a recorded place: an empty filesystem mounted there (a bind mount of a
    failed disk's empty mount point, say) does not release it."""
    d = decide(set(), {"disk"}, lambda rel: place)
    assert (d.kept == set(d.fstab) == {"disk"}) is kept
    assert d.fstab == ({"disk": place} if kept else {})
    assert not d.recorded and not d.released


def test_a_place_both_recorded_and_in_fstab_is_said_once():
    d = decide({"disk"}, {"disk"}, lambda rel: EMPTY)
    assert d.kept == {"disk"} and set(d.recorded) == {"disk"} and not d.fstab
    d = decide({"disk"}, {"disk"}, lambda rel: MOUNTED)
    assert d.released == {"disk"} and not d.kept


def test_parse_fstab():
    data = (b"# <fs> <dir> <type>\n\n  UUID=1 / ext4 defaults 0 1\n"
            b"/dev/sdb1\t/srv/www/my\\040disk ext4 nofail 0 2\n"
            b"/dev/sdc1 /srv/www/tab\\011x//  xfs defaults\n"
            b"/swapfile none swap sw 0 0\nproc /proc proc defaults\n#/dev/x /srv/www/old\n"
            b"lonely\n")
    assert parse_fstab(data) == ["/", "/srv/www/my disk", "/srv/www/tab\tx", "/proc"]


def test_fstab_inside():
    points = ["/", "/srv", "/srv/www", "/srv/www/disk", "/srv/www2/x", "/data/www/a/b"]
    assert fstab_inside(points, ["/srv/www"]) == {"disk"}
    # wpath configured through a symlink: fstab may name either path
    assert fstab_inside(points, ["/srv/www", "/data/www"]) == {"disk", "a/b"}


def test_fstab_above():
    points = ["/", "/srv", "/srv/www", "/srv/www/disk", "/srv/www2", "/data"]
    assert keptstore.fstab_above(points, "/srv/www") == "/srv/www"  # wpath itself
    assert keptstore.fstab_above(points, "/srv/www/site/a") == "/srv/www"  # the nearest one
    assert keptstore.fstab_above(points, "/srv/other") == "/srv"
    assert keptstore.fstab_above(points, "/srv/www2x") == "/srv"  # a prefix is no parent
    assert keptstore.fstab_above(points, "/home/www") is None  # "/" is never one
    assert keptstore.fstab_above([], "/srv/www") is None


def test_the_record_in_state_dir(tmp_path):
    state = tmp_path / "state"
    f = KeptFile(str(state))
    assert f.load(ROOT) == set()  # no state_dir yet: nothing recorded
    assert f.save(ROOT, {"data", "new\nline"})
    path = Path(f.path(ROOT))
    assert f.load(ROOT) == {"data", "new\nline"}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert f.load("/srv/other") == set()  # one file per tree
    assert f.save(ROOT, set()) and not path.exists()  # nothing kept: no file
    assert f.save(ROOT, set())
    assert [p.name for p in state.iterdir()] == []  # no temporary file left


def test_a_record_that_cannot_be_read_stops_the_start(tmp_path):
    f = KeptFile(str(tmp_path))
    path = Path(f.path(ROOT))
    path.write_bytes(b"/srv/www\0da")
    with pytest.raises(KeptError, match=r"is damaged: not ended by a NUL .*remove it only if"):
        f.load(ROOT)
    path.unlink()
    path.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(KeptError, match="cannot read"):
        f.load(ROOT)
    path.unlink()
    path.mkdir()
    with pytest.raises(KeptError, match="not a regular file"):
        f.load(ROOT)


def test_a_record_that_cannot_be_written_is_said_once(tmp_path, caplog):
    caplog.set_level(logging.INFO, "inosync")
    state = tmp_path / "state"
    state.mkdir(mode=0o777)
    state.chmod(0o777)  # not private: refused (someone else could remove the record)
    f = KeptFile(str(state))
    assert not f.save(ROOT, {"data"}) and not f.save(ROOT, {"data"})
    assert caplog.text.count("a restart now would delete their copies") == 1
    state.chmod(0o700)
    assert f.save(ROOT, {"data"}) and "can be written again" in caplog.text


def test_looker_sees_mounts_and_content(tmp_path):
    root = tmp_path / "src"
    for name in ("empty", "full", "mnt"):
        (root / name).mkdir(parents=True)
    (root / "full" / "x").write_text("x")
    (root / "file").write_text("a file where a mount point was")
    look = looker(str(root))
    assert look("empty") == EMPTY and look("full") == FULL and look("gone") == MISSING
    assert look("file") == FULL
    if os.geteuid() != 0:
        return
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(root / "mnt")],
                   check=True)
    try:
        assert looker(str(root))("mnt") == MOUNTED_EMPTY
        (root / "mnt" / "lost+found").mkdir()  # a fresh filesystem: still no data
        assert looker(str(root))("mnt") == MOUNTED_EMPTY
        (root / "mnt" / "db").write_text("data")
        assert looker(str(root))("mnt") == MOUNTED
    finally:
        subprocess.run(["umount", str(root / "mnt")], check=True)


def test_read_fstab_missing_or_unreadable(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(keptstore, "FSTAB", str(tmp_path / "none"))
    assert keptstore.read_fstab() == []
    monkeypatch.setattr(keptstore, "FSTAB", str(tmp_path))  # a directory
    assert keptstore.read_fstab() == [] and "cannot read" in caplog.text


def test_check_and_a_start_refuse_a_damaged_record(tree, tmp_path):
    """It may name a copy the start's full sync would delete: one line, exit 2."""
    conf = write_config(tmp_path / "inosync.conf", wpath=str(tree["src"]),
                        rnodes=[str(n) for n in tree["nodes"]])
    config = load(str(conf))
    record = Path(KeptFile(config.state_dir).path(config.wpath))
    record.parent.mkdir(mode=0o700)
    record.write_bytes(b"/somewhere/else\0data\0")
    assert "is damaged: written for wpath '/somewhere/else'" in (preflight(config) or "")
    for args in (["--check"], []):
        done = subprocess.run([*inosync_argv(), "-c", str(conf), *args], capture_output=True,
                              text=True, timeout=30)
        assert done.returncode == 2, done
        assert done.stderr.count("\n") == 1 and "is damaged" in done.stderr, done.stderr
    assert not any((n / "index.html").exists() for n in tree["nodes"])  # nothing synced


# inosync's main, with its fstab elsewhere than /etc/fstab (a module constant).
LAUNCH = """
import sys
import inosync.keptstore
inosync.keptstore.FSTAB = sys.argv.pop(1)
from inosync.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_check_and_a_start_refuse_wpath_on_an_fstab_mount_point_not_mounted(
        tree, tmp_path, monkeypatch):
    """A boot where wpath's disk did not mount: syncing the bare mount point (an
    application may have written a file there) would delete the nodes' copy."""
    src, nodes = tree["src"], tree["nodes"]
    fstab = tmp_path / "fstab"
    fstab.write_text(f"UUID=1 / ext4 defaults 0 1\n/dev/sdz1 {src} ext4 defaults,nofail 0 2\n")
    monkeypatch.setattr(keptstore, "FSTAB", str(fstab))
    conf = write_config(tmp_path / "inosync.conf", wpath=str(src / "docs"),
                        rnodes=[str(n) for n in nodes])
    config = load(str(conf))
    why = (f"wpath {src}/docs: {src} is a mount point in {fstab}, but nothing is mounted "
           "there (the disk did not mount?)")
    assert why in (preflight(config) or "")
    for args in (["--check"], []):
        done = subprocess.run([sys.executable, "-c", LAUNCH, str(fstab), "-c", str(conf),
                               *args], capture_output=True, text=True, timeout=30)
        assert done.returncode == 75, done  # issue 17.1: a late mount is retried (EX_TEMPFAIL)
        assert done.stderr.count("\n") == 1 and why in done.stderr, done.stderr
    assert not any((n / "a.txt").exists() for n in nodes)  # nothing synced
    if os.geteuid() != 0:
        return
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(src)], check=True)
    try:
        (src / "docs").mkdir()
        (src / "docs" / "a.txt").write_text("on the disk\n")
        assert preflight(load(str(conf))) is None  # mounted: fine
    finally:
        subprocess.run(["umount", str(src)], check=True)
