"""rsync's temporary file names (tempnames.py), checked against what the real
rsync writes: every name's temporary file is caught with real inotify while
rsync copies it, and must be recognised for exactly that final name."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from helpers import RSYNC

from inosync.tempnames import MAXPATHLEN, looks_temporary, stem, temporary_for
from inosync.watch import IN_CREATE, IN_MOVED_FROM, IN_MOVED_TO, _WatchManager, parse_events

NAMES = [
    b"plain.txt",
    b".htaccess",  # its own leading dot is not doubled
    b"ends.with.dot.",  # one trailing dot goes before the suffix
    b"a" * 250 + b".html",  # 255 bytes: cut to 246
    b"b" * 245 + b"." + b"c" * 9,  # cut right after a dot: that dot goes too
    b"caf\xe9.txt",  # not UTF-8
    b"ab" + "é".encode() * 126,  # cut inside a two-byte character: all of them go
    "é".encode() * 127,  # nothing left but the suffix: ".XXXXXX"
    b"new\nline *?[x]",
]


def landed(src: Path, dst: Path, watch: str = "") -> dict[bytes, bytes]:
    """Copy src into dst with real rsync; final name -> the temporary name it had
    (in dst, or in the directory watch, relative to the working directory)."""
    wm = _WatchManager()
    try:
        wm.watch(watch or str(dst), IN_CREATE | IN_MOVED_FROM | IN_MOVED_TO)
        subprocess.run([RSYNC, "-a", f"{src}/", f"{dst}/"], check=True, capture_output=True)
        names: dict[int, str] = {}
        found: dict[bytes, bytes] = {}
        for _, mask, cookie, name in parse_events(os.read(wm.get_fd(), 1 << 20)):
            if mask & IN_MOVED_FROM:
                names[cookie] = name
            elif mask & IN_MOVED_TO:
                found[os.fsencode(name)] = os.fsencode(names.pop(cookie))
        return found
    finally:
        wm.close()


def write(path: Path, data: bytes = b"x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_every_temporary_name_rsync_writes_is_recognised(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    dst.mkdir()
    for name in NAMES:
        write(Path(os.fsdecode(bytes(src) + b"/" + name)))
    found = landed(src, dst)
    assert set(found) == set(NAMES)
    for final, tmp in found.items():
        t, f = os.fsdecode(tmp), os.fsdecode(final)
        assert temporary_for(t, f), (tmp, final)
        assert tmp[:-7] == stem(final, 247)  # exactly the bytes, not just a likeness
        assert looks_temporary(t) == (tmp[:-7] != b""), tmp  # ".XXXXXX" alone is not held
        assert not temporary_for(t, "x" + f)
        assert temporary_for(t, f + "x") is (len(final) >= 247)  # a cut name fits both


def test_a_replaced_symlink_lands_from_a_counter_name(tmp_path):
    """rsync replaces an existing symlink (device, hard link) through
    ``.NAME.<counter>``: recognised, though not held (it lands at once)."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    (src / "link").symlink_to("one")
    subprocess.run([RSYNC, "-a", f"{src}/", f"{dst}/"], check=True)
    (src / "link").unlink()
    (src / "link").symlink_to("two")
    tmp = landed(src, dst)[b"link"]
    assert tmp[:6] == b".link." and tmp[6:].isdigit()
    assert temporary_for(os.fsdecode(tmp), "link") and not looks_temporary(os.fsdecode(tmp))


def deep_dir(top: Path, parts: list[str]) -> int:
    """top/parts..., made one level at a time (the whole path is too long for
    one system call); an fd of the last one."""
    fd = os.open(top, os.O_DIRECTORY)
    for part in parts:
        try:
            os.mkdir(part, dir_fd=fd)
        except FileExistsError:
            pass
        inner = os.open(part, os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = inner
    return fd


def test_deep_directories_cut_names_shorter(tmp_path, monkeypatch):
    """Past about 3,800 bytes of directories, MAXPATHLEN cuts the name shorter."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    parts = ["d" * 240] * 16  # 3,855 bytes of directories
    final = "n" * 234  # the relative path: 4,090 bytes, rsync's limit is 4,095
    fd = deep_dir(src, parts)
    os.close(os.open(final, os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd))
    os.close(fd)
    fd = deep_dir(dst, parts)
    monkeypatch.chdir(tmp_path)
    os.fchdir(fd)  # the watch is added by a relative path
    os.close(fd)
    tmp = os.fsdecode(landed(src, dst, ".")[os.fsencode(final)])
    dir_len = len("/".join(parts)) + 1
    assert len(tmp) - 8 < len(final)  # cut, where NAME_MAX alone would not cut it
    assert temporary_for(tmp, final, dir_len)
    assert not temporary_for(tmp, final, 0)  # the cut is exact, not a likeness
    assert MAXPATHLEN - (dir_len + 1) - 7 - 1 == len(tmp) - 1 - 7


@pytest.mark.parametrize("name,shaped", [
    (".page.html.AbC123", True),
    (".x.000000", True),
    (os.fsdecode(b".caf\xe9.Ab12Cd"), True),
    (".a\nb.Ab12Cd", True),
    ("page.html.AbC123", False),  # no leading dot
    (".page.html.AbC12", False),  # five
    (".page.html.AbC-12", False),
    (".config", False),  # a dotfile of six letters: not ".X.XXXXXX"
    (".AbC123", False),
    (".x.y", False),
])
def test_the_shape_held_back(name, shaped):
    assert looks_temporary(name) is shaped


@pytest.mark.parametrize("tmp,final,yes", [
    (".page.AbC123", "page", True),
    (".page.123", "page", True),
    (".page.1234567", "page", False),  # the counter has six digits at most
    ("..htaccess.AbC123", ".htaccess", True),  # rsync 3.0 and 3.1
    (".htaccess.AbC123", ".htaccess", True),
    (".page.AbC123", "pag", False),
    (".page.AbC123", "pages", False),
    (".page.AbC123", ".page.AbC123", False),
    ("page.AbC123", "page", False),
])
def test_which_final_name_a_temporary_name_is_for(tmp, final, yes):
    assert temporary_for(tmp, final) is yes
