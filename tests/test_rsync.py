"""Unit tests for inosync.rsync: command lines and exit codes, plus real rsync runs."""

from __future__ import annotations

import errno
import fcntl
import os
import shlex
import shutil
import struct
import subprocess
import termios
import time
from pathlib import Path

import pytest

from inosync import rsyncopts
from inosync.batch import encode_list, files_list
from inosync.rsync import (
    Kind,
    Options,
    Outcome,
    batch_argv,
    check_extra_args,
    classify,
    describe,
    full_argv,
    node_kind,
    options,
    ssh_host,
    ssh_parts,
    with_slash,
)

RSYNC = "/usr/bin/rsync"

# ---------------------------------------------------------------- node_kind


@pytest.mark.parametrize(
    "dest",
    [
        "/srv/x",
        "/srv/x/",
        "/srv/a:b",
        "/srv/a::b",
        "./a:b",
        "./a::b",
        "rel/dir",
        "rel/dir:with:colons",
        "dir",
        ".",
    ],
)
def test_node_kind_local(dest):
    assert node_kind(dest) is Kind.LOCAL


@pytest.mark.parametrize(
    "dest",
    [
        "host:/p",
        "user@host:p",
        "host:",
        "host.example.com:/var/www/",
        "user@host:/p:q",
        "a:b",
    ],
)
def test_node_kind_ssh(dest):
    assert node_kind(dest) is Kind.SSH


@pytest.mark.parametrize(
    "dest",
    [
        "rsync://h/m/p",
        "rsync://user@h:873/m/",
        "h::m/p",
        "user@h::m",
        "h::",
    ],
)
def test_node_kind_daemon(dest):
    assert node_kind(dest) is Kind.DAEMON


@pytest.mark.parametrize("dest", ["[::1]:/p", "user@[fe80::1]:/var/www/"])
def test_node_kind_ipv6_literal_is_ssh(dest):
    assert node_kind(dest) is Kind.SSH


@pytest.mark.parametrize(("dest", "host"), [
    ("root@[::1]:/srv", "root@::1"),
    ("[::1]:/srv", "::1"),
    ("user@[fe80::1%eth0]:www/", "user@fe80::1%eth0"),
    ("host:/srv", "host"),
    ("user@host.example.com:", "user@host.example.com"),
    ("user@10.0.0.1:/p:q", "user@10.0.0.1"),
])
def test_ssh_host_is_what_ssh_takes(dest, host):
    assert ssh_host(dest) == host
    assert ssh_parts(dest)[0].replace("[", "").replace("]", "") == host  # rsync's spelling


def test_with_slash():
    assert with_slash("/a") == "/a/"
    assert with_slash("/a/") == "/a/"
    assert with_slash("h:") == "h:./"  # the login directory, never the remote root (issue 16)


# ---------------------------------------------------------------- command lines


def _opts(**kw) -> Options:
    return Options(**kw)


def _common_checks(argv: list[str], rsync: str = "/usr/bin/rsync") -> None:
    assert argv[0] == rsync
    assert "-a" in argv
    assert "-r" in argv  # -a does not imply -r with --files-from
    assert "--delete" in argv
    assert all(isinstance(a, str) for a in argv)


def _options_part(argv: list[str]) -> list[str]:
    return argv[1:-2]


@pytest.mark.parametrize("make", ["full", "batch"])
def test_local_argv(make):
    opts = _opts()
    if make == "full":
        argv = full_argv(opts, "/w", "/srv/copy")
    else:
        argv = batch_argv(opts, "/w", "/srv/copy", "/tmp/list")
    _common_checks(argv)
    assert argv[-2:] == ["/w/", "/srv/copy/"]
    assert "-e" not in argv
    assert not any(a.startswith("--contimeout") for a in argv)
    assert not any(a.startswith("--bwlimit") for a in argv)
    assert "--timeout=60" in argv


def test_full_argv_has_no_file_list_options():
    argv = full_argv(_opts(), "/w/", "host:/d/")
    assert "--delete-missing-args" not in argv
    assert "--from0" not in argv
    assert not any(a.startswith("--files-from") for a in argv)
    assert argv[-2:] == ["/w/", "host:/d/"]


def test_batch_argv_file_list_options():
    argv = batch_argv(_opts(), "/w", "host:/d", "/run/x y.list")
    _common_checks(argv)
    assert "--delete-missing-args" in argv
    assert "--from0" in argv
    assert "--files-from=/run/x y.list" in argv
    assert argv[-2:] == ["/w/", "host:/d/"]
    # options come before the two operands
    assert argv.index("--files-from=/run/x y.list") < len(argv) - 2


def test_ssh_node_gets_e_joined_with_shlex():
    ssh = ("ssh", "-o", "BatchMode=yes", "-i", "/root/my key", "-o", "ProxyCommand=nc %h 22")
    for argv in (
        full_argv(_opts(ssh=ssh), "/w", "user@host:/d"),
        batch_argv(_opts(ssh=ssh), "/w", "user@host:/d", "/l"),
    ):
        i = argv.index("-e")
        assert argv[i + 1] == shlex.join(ssh)
        assert shlex.split(argv[i + 1]) == list(ssh)
        assert argv.count("-e") == 1
        assert not any(a.startswith("--contimeout") for a in argv)


def test_ssh_default_is_plain_ssh():
    argv = full_argv(_opts(), "/w", "host:")
    assert argv[argv.index("-e") + 1] == "ssh"
    assert argv[-1] == "host:./"  # the login directory, as rsync reads "host:" (issue 16)


@pytest.mark.parametrize("dest", ["rsync://h/m/p", "h::m/p"])
def test_daemon_node_gets_contimeout_not_e(dest):
    for argv in (
        full_argv(_opts(contimeout=7), "/w", dest),
        batch_argv(_opts(contimeout=7), "/w", dest, "/l"),
    ):
        assert "--contimeout=7" in argv
        assert "-e" not in argv
        assert argv[-1] == dest + "/"


def test_timeout_option():
    assert "--timeout=5" in full_argv(_opts(timeout=5), "/w", "/d")


def test_bwlimit_only_when_positive():
    assert "--bwlimit=250" in full_argv(_opts(bwlimit=250), "/w", "/d")
    assert "--bwlimit=250" in batch_argv(_opts(bwlimit=250), "/w", "/d", "/l")
    assert not any(a.startswith("--bwlimit") for a in full_argv(_opts(bwlimit=0), "/w", "/d"))


def test_excludes_one_argument_each():
    pats = ["/localhost", "*.tmp", "dir with space/", "-x", "--delete"]
    argv = batch_argv(_opts(excludes=pats), "/w", "/d", "/l")
    opts_part = _options_part(argv)
    for p in pats:
        assert f"--exclude={p}" in opts_part
    # the dangerous-looking patterns never appear as options of their own
    assert opts_part.count("--delete") == 1
    assert "-x" not in opts_part
    ex = [a for a in argv if a.startswith("--exclude")]
    assert ex == [f"--exclude={p}" for p in pats]  # order kept


def test_extra_args_passed_verbatim_before_operands():
    extra = ["--hard-links", "--acls", "--chmod=D755"]
    argv = full_argv(_opts(extra=extra), "/w", "/d")
    opts_part = _options_part(argv)
    assert opts_part[-3:] == extra
    argv = batch_argv(_opts(extra=extra), "/w", "/d", "/l")
    for e in extra:
        assert e in _options_part(argv)


def test_custom_rsync_binary():
    argv = full_argv(_opts(rsync="/opt/bin/rsync"), "/w", "/d")
    assert argv[0] == "/opt/bin/rsync"


def test_source_and_dest_end_with_slash_once():
    argv = batch_argv(_opts(), "/w/", "h:/d/", "/l")
    assert argv[-2:] == ["/w/", "h:/d/"]
    argv = full_argv(_opts(), "/w", "h::m")
    assert argv[-2:] == ["/w/", "h::m/"]


# ---------------------------------------------------------------- exit codes

# rsync(1) EXIT VALUES (3.x man pages, union over versions)
MAN_PAGE_CODES = [1, 2, 3, 4, 5, 6, 10, 11, 12, 13, 14, 15, 16, 19, 20, 21, 22, 23, 24, 25, 30, 35]
BROKEN_CODES = {1, 2, 3, 4, 6, 25, 126, 127}


def test_classify_ok():
    assert classify(0) is Outcome.OK


def test_classify_vanished():
    assert classify(24) is Outcome.VANISHED


@pytest.mark.parametrize("code", MAN_PAGE_CODES)
def test_classify_each_man_page_code(code):
    if code == 24:
        want = Outcome.VANISHED
    elif code in BROKEN_CODES:
        want = Outcome.BROKEN
    else:
        want = Outcome.RETRY
    assert classify(code) is want


@pytest.mark.parametrize("code", [126, 127])
def test_classify_remote_rsync_missing_is_broken(code):
    assert classify(code) is Outcome.BROKEN


def test_classify_ssh_failure_is_retry():
    assert classify(255) is Outcome.RETRY


@pytest.mark.parametrize("code", [-1, -2, -9, -15])
def test_classify_signals_are_retry(code):
    assert classify(code) is Outcome.RETRY


@pytest.mark.parametrize("code", [7, 17, 99, 128, 200, 254, 1000])
def test_classify_unknown_codes_are_retry(code):
    assert classify(code) is Outcome.RETRY


def test_classify_is_total():
    for code in range(-64, 300):
        assert isinstance(classify(code), Outcome)


def test_describe_known_codes():
    assert describe(23) == "exit 23 (partial transfer due to error)"
    assert describe(255) == "exit 255 (ssh connection failed)"
    assert describe(1) == "exit 1 (syntax or usage error)"
    assert describe(127) == "exit 127 (remote rsync not found)"
    assert "vanished" in describe(24)
    assert describe(24).startswith("exit 24 ")


def test_describe_signals():
    assert describe(-9) == "killed by signal 9"
    assert describe(-15) == "killed by signal 15"


def test_describe_unknown():
    assert describe(99) == "exit 99 (unknown error)"


@pytest.mark.parametrize("code", [c for c in MAN_PAGE_CODES if c not in (15, 16, 19)])
def test_describe_man_page_codes_have_a_reason(code):
    text = describe(code)
    assert text.startswith(f"exit {code} (")
    assert "unknown" not in text
    assert "\n" not in text


@pytest.mark.parametrize("code", [15, 16, 19])
def test_describe_newer_man_page_codes(code):
    assert "unknown" not in describe(code)


# ---------------------------------------------------------------- real rsync


needs_rsync = pytest.mark.skipif(not os.access(RSYNC, os.X_OK), reason="needs /usr/bin/rsync")


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _run_batch(tmp_path: Path, src: Path, dst: Path, changed: list[str],
               extra: tuple[str, ...] = ()) -> list[str]:
    paths = files_list(changed, str(src))
    list_file = tmp_path / "list"
    list_file.write_bytes(encode_list(paths))
    argv = batch_argv(Options(rsync=RSYNC, extra=extra), str(src), str(dst), str(list_file))
    proc = subprocess.run(argv, capture_output=True, timeout=30)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return paths


def _differences(src: Path, dst: Path) -> bytes:
    proc = subprocess.run(
        [RSYNC, "-anc", "--delete", "--itemize-changes", f"{src}/", f"{dst}/"],
        capture_output=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@needs_rsync
@pytest.mark.parametrize("extra", [
    (), ("--delete-before",), ("--delete-during",), ("--del",), ("--delete-delay",),
    ("--delete-after",), ("--force", "--delete-after"),
])
def test_real_rsync_batch_replicates_changes(tmp_path, extra):
    """Also with each --delete-* of the allowlist: a batch's --delete-missing-args
    deletes the same paths whenever rsync deletes."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    _write(src / "f1", "one")
    _write(src / "keep" / "k", "keep me")
    _write(src / "keep" / "stays", "unchanged")
    _write(src / "d1" / "sub" / "x", "x")
    _write(src / "d1" / "y", "y")
    _write(src / "d2" / "z", "z")
    _write(src / "repl" / "r", "r")
    _write(src / "tofile" / "t", "t")
    _write(src / "todir", "was a file")
    (src / "mode").write_text("m")
    os.chmod(src / "mode", 0o644)
    subprocess.run([RSYNC, "-a", f"{src}/", f"{dst}/"], check=True, timeout=30)
    assert _differences(src, dst) == b""

    # the changes, as the watcher would report them
    (src / "f1").unlink()  # delete a file
    (src / "keep" / "k").unlink()  # delete a file in a dir that stays
    shutil.rmtree(src / "d1")  # delete a dir with contents
    shutil.rmtree(src / "repl")  # replace a dir by a file
    (src / "repl").write_text("now a file")
    shutil.rmtree(src / "tofile")  # replace a dir by a file; only the child is reported
    (src / "tofile").write_text("file too")
    (src / "todir").unlink()  # replace a file by a dir
    _write(src / "todir" / "inside", "in")
    _write(src / "new" / "deep" / "n", "n")  # add a new dir with files
    _write(src / "new" / "m", "m")
    os.chmod(src / "mode", 0o600)  # chmod only
    os.chmod(src / "d2", 0o700)
    (src / "d2" / "z").write_text("zz")  # modify
    changed = [
        "f1",
        "keep/k",
        "d1",
        "d1/sub/x",
        "d1/y",
        "repl",
        "repl/r",
        "tofile/t",
        "todir",
        "todir/inside",
        "new",
        "new/deep/n",
        "new/m",
        "mode",
        "d2",
        "d2/z",
        "ghost",  # created and deleted again before the batch: gone on both sides
        "ghost-dir/a/b",
    ]
    assert _differences(src, dst) != b""  # the check below can see a difference

    paths = _run_batch(tmp_path, src, dst, changed, extra)

    assert "tofile" in paths and "tofile/t" not in paths
    assert "ghost-dir" in paths
    assert _differences(src, dst) == b""
    assert (dst / "keep" / "stays").read_text() == "unchanged"
    assert (dst / "mode").stat().st_mode & 0o777 == 0o600


@needs_rsync
def test_real_rsync_batch_weird_names(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    bsrc = os.fsencode(src)
    src.mkdir()
    (src / "plain").write_text("p")
    with open(os.path.join(bsrc, b"old\xfe"), "w") as f:
        f.write("to delete")
    subprocess.run([RSYNC, "-a", f"{src}/", f"{dst}/"], check=True, timeout=30)

    names = [
        os.fsdecode(b"bad\xff"),
        "new\nline",
        "back\\slash",
        "-leading-dash",
        "--delete",
        "sp ace",
    ]
    for name in names:
        with open(os.path.join(bsrc, os.fsencode(name)), "wb") as f:
            f.write(os.fsencode(name))
    os.unlink(os.path.join(bsrc, b"old\xfe"))
    changed = [*names, os.fsdecode(b"old\xfe")]

    _run_batch(tmp_path, src, dst, changed)

    assert _differences(src, dst) == b""
    got = sorted(os.listdir(os.fsencode(dst)))
    want = sorted([b"plain", *(os.fsencode(n) for n in names)])
    assert got == want


# ---------------------------------------------------------------- exit 23: churn or failure

CHURN_23 = [
    'file has vanished: "/w/a"\nrsync error: some files/attrs were not transferred (see '
    "previous errors) (code 23) at main.c(1394) [sender=3.5.0]\n",
    'rsync: [sender] read errors mapping "/w/big": No data available (61)\n'
    'WARNING: big failed verification -- update discarded (will try again).\n'
    'rsync: [sender] read errors mapping "/w/big": No data available (61)\n'
    "ERROR: big failed verification -- update discarded.\n"
    "rsync error: some files/attrs were not transferred (see previous errors) (code 23)\n",
    'rsync: [sender] opendir "/w/d" failed: No such file or directory (2)\n'
    "IO error encountered -- skipping file deletion\n"
    'rsync: [sender] change_dir "/w/./e" failed: No such file or directory (2)\n',
    # a listed path whose parent became a file meanwhile
    'rsync: [sender] link_stat "/w/./d/x" failed: Not a directory (20)\n'
    "rsync error: some files/attrs were not transferred (see previous errors) (code 23)\n",
    # rsync 3.5.0's own words (test_real_rsync_churn_lines below makes them):
    # a listed file's directory became a file between listing and sending
    'rsync: [sender] send_files failed to open "/w/d/x": Not a directory (20)\n'
    "rsync error: some files/attrs were not transferred (see previous errors) (code 23) "
    "at main.c(1394) [sender=3.5.0]\n",
    # the same, seen when rsync stats d/x again to send d's own list
    'rsync: [sender] readlink_stat("/w/d/x") failed: Not a directory (20)\n'
    "rsync error: some files/attrs were not transferred (see previous errors) (code 23) "
    "at main.c(1394) [sender=3.5.0]\n",
    # a listed file became a directory between listing and sending
    'rsync: [sender] read errors mapping "/w/x": Is a directory (21)\n'
    'rsync: [sender] read errors mapping "/w/x": Is a directory (21)\n'
    "ERROR: x failed verification -- update discarded.\n"
    "rsync error: some files/attrs were not transferred (see previous errors) (code 23) "
    "at main.c(1394) [sender=3.5.0]\n",
]
FAILURE_23 = [
    "",  # nothing said: not provably churn
    'rsync: [receiver] mkstemp "/d/.x.Ab12" failed: Permission denied (13)\n'
    "rsync error: some files/attrs were not transferred (see previous errors) (code 23)\n",
    'rsync: [sender] opendir "/w/d" failed: Permission denied (13)\n'
    "IO error encountered -- skipping file deletion\n",
    # a checksum failure without the file shrinking first is corruption
    "ERROR: big failed verification -- update discarded.\n",
    'file has vanished: "/w/a"\nrsync: [generator] failed to set times on "/d/x": '
    "Operation not permitted (1)\n",
    # the same messages as the churn above, but for real I/O errors
    'rsync: [sender] send_files failed to open "/w/d/x": Permission denied (13)\n'
    "rsync error: some files/attrs were not transferred (see previous errors) (code 23)\n",
    'rsync: [sender] readlink_stat("/w/d/x") failed: Permission denied (13)\n'
    "rsync error: some files/attrs were not transferred (see previous errors) (code 23)\n",
    'rsync: [sender] read errors mapping "/w/x": Input/output error (5)\n'
    "ERROR: x failed verification -- update discarded.\n"
    "rsync error: some files/attrs were not transferred (see previous errors) (code 23)\n",
]


@pytest.mark.parametrize("stderr", CHURN_23)
def test_exit_23_from_a_changing_source_is_not_a_failure(stderr):
    assert classify(23, stderr) is Outcome.SOURCE_CHANGED


@pytest.mark.parametrize("stderr", FAILURE_23)
def test_exit_23_with_any_other_error_is_a_failure(stderr):
    assert classify(23, stderr) is Outcome.RETRY


def test_churn_messages_do_not_excuse_other_exit_codes():
    assert classify(12, CHURN_23[0]) is Outcome.RETRY
    assert classify(3, CHURN_23[2]) is Outcome.BROKEN


# ---------------------------------------------------------------- exit 23: churn from real rsync


def _until(done, what: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 10
    while not done():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"rsync never {what}: {proc.communicate()[1]!r}")
        time.sleep(0.001)


def _unread(fd: int) -> int:
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0]


def _to_dir(src: Path) -> None:
    (src / "x").unlink()
    _write(src / "x" / "in", "i")  # not empty: an empty directory may have size 0


def _parent_to_file(src: Path) -> None:
    shutil.rmtree(src / "d")
    (src / "d").write_text("now a file")


@needs_rsync
@pytest.mark.slow
@pytest.mark.parametrize("listed, change, extra, line", [
    ("x", _to_dir, [], 'rsync: [sender] read errors mapping "{src}/x": Is a directory (21)'),
    ("d/x", _parent_to_file, ["--no-inc-recursive"],
     'rsync: [sender] send_files failed to open "{src}/d/x": Not a directory (20)'),
    # with incremental recursion (inosync's way) rsync stats d/x again when it
    # sends d's own list, after the list file ended
    ("d/x", _parent_to_file, [],
     'rsync: [sender] readlink_stat("{src}/d/x") failed: Not a directory (20)'),
])
def test_real_rsync_churn_lines(tmp_path, listed, change, extra, line):
    """The source changes after rsync listed a path and before it sends it: the
    list comes through a fifo, and the change is made once rsync has read the
    name after the listed one (so it has looked at the listed path), before
    the end of the list (so it has not sent anything yet)."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    _write(src / listed, "data " * 1000)
    _write(src / "y", "y")
    dst.mkdir()
    fifo = tmp_path / "list"
    os.mkfifo(fifo)
    argv = batch_argv(Options(rsync=RSYNC, extra=extra), str(src), str(dst), str(fifo))
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    fd = -1

    def opened() -> bool:
        nonlocal fd
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as e:  # ENXIO: rsync has not opened the list yet
            if e.errno != errno.ENXIO:
                raise
        return fd >= 0

    try:
        _until(opened, "opened the list", proc)
        for part in (os.fsencode(listed) + b"\0", b"y"):
            os.write(fd, part)
            _until(lambda: _unread(fd) == 0, "read the list", proc)
        change(src)
        os.write(fd, b"\0")
    finally:
        if fd >= 0:
            os.close(fd)
    _, stderr = proc.communicate(timeout=30)

    assert proc.returncode == 23, stderr
    assert line.format(src=src) in stderr.splitlines(), stderr
    assert classify(proc.returncode, stderr) is Outcome.SOURCE_CHANGED


# ---------------------------------------------------------------- rsync_args: the allowlist
# Issue 16, rule 1. rsync_args is read as rsync 3.5.0 (libpopt) reads it.

# A value rsync takes for each allowed option that needs one.
SAMPLE = {
    "--out-format": "%n", "--log-format": "%n", "--info": "stats2", "--compress-choice": "zlib",
    "--zc": "zlib", "--compress-level": "1", "--zl": "1", "--compress-threads": "1",
    "--zt": "1", "--skip-compress": "gz/jpg", "--block-size": "2048", "-B": "2048",
    "--checksum-choice": "md5", "--cc": "md5", "--max-alloc": "1G", "--chmod": "D755,Fgo-w",
    "--max-delete": "1000", "--rsync-path": "rsync", "--confine-root": "/",
}


def _spellings() -> list[str]:
    return sorted(rsyncopts.LONG) + [f"-{letter}" for letter in sorted(rsyncopts.SHORT)]


def _words(spelling: str) -> list[str]:
    """The spelling as rsync_args would give it, with a value if it takes one."""
    spell = rsyncopts.LONG.get(spelling) or rsyncopts.SHORT[spelling[1:]]
    return [spelling, SAMPLE[spelling]] if spell.value else [spelling]


@pytest.mark.parametrize(("args", "parsed"), [
    (["-zH"], [("-zH", "-z", None), ("-zH", "-H", None)]),
    (["-B=1024"], [("-B=1024", "-B", "1024")]),  # popt skips one "=" after a letter
    (["-zB=", "--stats"], [("-zB=", "-z", None), ("-zB=", "-B", ""), ("--stats", "--stats", None)]),
    (["-zB", "-n"], [("-zB", "-z", None), ("-zB", "-B", "-n")]),
    (["--zl", "--dry-run"], [("--zl", "--zl", "--dry-run")]),
    (["-z=n"], [("-z=n", "-z", "n")]),  # rsync: "-z=n: option does not take an argument"
    (["--stats=1"], [("--stats=1", "--stats", "1")]),
])
def test_options_reads_values_as_rsync_does(args, parsed):
    """Checked against rsync 3.5.0: -B=1024 sets 1024 (12ee4f1 read "=1024"),
    -zB= gives -B an empty value and --stats stays an option, -z=n is a usage
    error (12ee4f1 read -n, a dry run, as an option of its own)."""
    assert list(options(args)) == parsed


@pytest.mark.slow  # some 300 runs of rsync
@needs_rsync
def test_the_allowlist_is_what_rsync_accepts(tmp_path):
    """Each allowed spelling is an option of this rsync, taking a value exactly
    when the table says so; rsync takes no abbreviation of any (--compr,
    --no-fro are unknown to it), so the exact names are all there is."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    _write(src / "f", "f")
    wrong = []

    def says(*args: str) -> tuple[int, str]:
        done = subprocess.run([RSYNC, "-a", *args, f"{src}/", f"{dst}/"], capture_output=True,
                              text=True, timeout=30)
        return done.returncode, done.stderr

    for spelling in _spellings():
        spell = rsyncopts.LONG.get(spelling) or rsyncopts.SHORT[spelling[1:]]
        in_grammar = spelling in rsyncopts.LONG_WITH_VALUE or (
            len(spelling) == 2 and spelling[1] in rsyncopts.SHORT_WITH_VALUE)
        if spell.value != in_grammar:
            wrong.append(f"{spelling}: table and LONG_WITH_VALUE disagree")
        rc, err = says(*_words(spelling))
        if rc != 0:
            wrong.append(f"{spelling}: exit {rc}: {err}")
        if not spell.value:  # a value refused: "option does not take an argument"
            rc, err = says(f"{spelling}=1")
            if "does not take an argument" not in err:
                wrong.append(f"{spelling}=1: exit {rc}: {err}")
        if spelling.startswith("--") and spelling[:-1] not in rsyncopts.LONG:
            rc, err = says(spelling[:-1], *_words(spelling)[1:])
            if "unknown option" not in err:
                wrong.append(f"{spelling[:-1]} is an abbreviation rsync takes: {err}")
    assert wrong == []


def _setuid_tree(src: Path) -> None:
    """Files of nobody's (uid/gid 65534) that are setuid and setgid, and a directory."""
    for name, mode in (("suid", 0o4755), ("sgid", 0o2755), ("both", 0o6755)):
        _write(src / "d" / name, "#!/bin/sh\nid\n")
        os.chown(src / "d" / name, 65534, 65534)
        os.chmod(src / "d" / name, mode)
    os.chown(src / "d", 65534, 65534)


def _foreign_setid(src: Path, dst: Path) -> list[str]:
    """Files on dst that are setuid or setgid for an owner they do not have on src."""
    found = []
    for name in ("suid", "sgid", "both"):
        s, d = os.lstat(src / "d" / name), os.lstat(dst / "d" / name)
        if (d.st_mode & 0o4000 and d.st_uid != s.st_uid) or \
                (d.st_mode & 0o2000 and d.st_gid != s.st_gid):
            found.append(f"{name} {oct(d.st_mode)} {d.st_uid}:{d.st_gid}")
    return found


@pytest.mark.slow  # some 100 runs of rsync
@needs_rsync
@pytest.mark.skipif(os.geteuid() != 0, reason="rsync keeps owners as root only")
def test_no_allowed_option_makes_a_file_setuid_for_another_owner(tmp_path):
    """Real rsync as root, inosync's own argv, each allowed option in turn: a
    setuid or setgid file of nobody's stays nobody's or loses the bit. The
    owner-changing options are refused at load, and this is why: with each of
    them, rsync as root leaves the file setuid or setgid root (12ee4f1
    accepted them all)."""
    src = tmp_path / "src"
    _setuid_tree(src)

    def run(extra: list[str], n: int) -> list[str]:
        dst = tmp_path / f"dst{n}"
        argv = full_argv(Options(rsync=RSYNC, extra=extra), str(src), str(dst))
        subprocess.run(argv, check=True, capture_output=True, timeout=30)
        return _foreign_setid(src, dst)

    bad = {s: found for n, s in enumerate(_spellings()) if (found := run(_words(s), n))}
    assert bad == {}
    owners = [["--no-o", "--no-g"], ["--no-owner", "--no-group"], ["--chown=root:root"],
              ["--usermap=*:root", "--groupmap=*:root"]]
    for n, extra in enumerate(owners, 1000):
        assert run(extra, n), f"{extra} leaves no setuid file of another owner: test broken?"
        with pytest.raises(ValueError, match="not on inosync's list"):
            check_extra_args(extra)


def test_a_daemon_busy_for_now_is_retried_fast():
    """Issue 17.9: only answers that retrying cannot change are slow (test_rsyncd)."""
    stderr = ("@ERROR: max connections (2) reached -- try again later\n"
              "rsync error: error starting client-server protocol (code 5)\n")
    assert classify(5, stderr) is Outcome.RETRY
    assert classify(5, "@ERROR: Unknown module 'x'\n") is Outcome.BROKEN
