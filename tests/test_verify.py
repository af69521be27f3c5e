"""--verify's pure parts: its argv is always a dry run, rsync's itemized lines are
counted right (odd names included), the report line and the exit code."""

from __future__ import annotations

import pytest
from helpers import write_config

from inosync.cli import one_shot_conflict, parse_args
from inosync.config import load
from inosync.rsync import full_argv
from inosync.verify import (
    MARKER,
    Drift,
    Result,
    UnsafeArgv,
    check_dry_run,
    exit_code,
    parse_itemized,
    problem,
    quiet_option,
    report_line,
    shown,
    unescape,
    verify_argv,
)


@pytest.fixture
def config(tree, tmp_path):
    def make(**settings):
        nodes = [str(n) for n in tree["nodes"]] + ["root@db1:/srv/www", "rsync://h/mod"]
        settings = {"wpath": str(tree["src"]), "rnodes": nodes, **settings}
        return load(str(write_config(tmp_path / "inosync.conf", **settings)))
    return make


def lines(*items: bytes) -> list[bytes]:
    return [MARKER + item + b"\n" for item in items]


def test_argv_is_a_full_sync_made_a_dry_run(config):
    c = config(rexcludes=["*.tmp"], rsync_args=["-H", "--no-i", "--out-format=%n"])
    for dest in c.rnodes:
        argv = verify_argv(c, dest)
        full = full_argv(c.rsync_options(), c.wpath, dest)
        # every word of the full sync, in order, then ours just before SRC DEST
        assert argv[: len(full) - 2] == full[:-2] and argv[-2:] == full[-2:]
        assert argv[-3] == "--dry-run" and "--itemize-changes" in argv
        assert "--checksum" not in argv
    assert "--checksum" in verify_argv(c, c.rnodes[0], checksum=True)[-5:]
    ssh_argv = verify_argv(c, "root@db1:/srv/www")
    assert ssh_argv[ssh_argv.index("-e") + 1].startswith("ssh -o BatchMode=yes")


def test_an_argv_that_is_no_dry_run_is_refused(config):
    c = config()
    full = full_argv(c.rsync_options(), c.wpath, c.rnodes[0])
    with pytest.raises(UnsafeArgv):
        check_dry_run(full)
    with pytest.raises(UnsafeArgv):  # --dry-run taken as the value of an option
        check_dry_run([*full[:-2], "--out-format", "--dry-run", *full[-2:]])
    with pytest.raises(UnsafeArgv):  # not the last option
        check_dry_run([*full[:-2], "--itemize-changes", "--dry-run", "--no-dry-run",
                       *full[-2:]])
    check_dry_run(verify_argv(c, c.rnodes[0]))  # ours passes


@pytest.mark.parametrize(("args", "found"), [
    (["-q"], "-q"), (["-aqz"], "-aqz"), (["--quiet"], "--quiet"), (["-H", "-vq"], "-vq"),
    (["-v"], None), (["--info=name0"], None), (["-B", "q"], None), (["-Bq"], None),
    (["--suffix", "-q"], None), (["--suffix=-q"], None), (["--chmod=Dq"], None),
])
def test_quiet_is_found_in_rsync_args(args, found):
    assert quiet_option(args) == found


def test_verify_refuses_a_quiet_config(config):
    assert problem(config()) is None
    message = problem(config(rsync_args=["-q"]))
    assert message and "'-q'" in message and "\n" not in message


def test_parse_counts_every_kind_of_change():
    out = lines(b"*deleting  @extra", b".d..t......@./", b">f+++++++++@new",
                b">f.st......@changed", b".f...p.....@mode", b"cd+++++++++@dir/",
                b"cL+++++++++@link -> target", b"hf         @hard => new",
                b">fc........@sum", b".L..t......@oldlink")
    drift = parse_itemized(out, keep=3)
    assert drift.count == 10 and drift.dir_times == 1
    assert drift.sample == [("*deleting", b"extra"), (".d..t......", b"./"),
                            (">f+++++++++", b"new")]


def test_parse_skips_unchanged_items_and_other_output():
    out = [b"sending incremental file list\n",  # -v
           *lines(b".f          @same", b".d          @./", b".d..........@dir/"),
           b"\n", b"Number of files: 7 (reg: 5, dir: 2)\n",  # --stats
           b"sent 194 bytes  received 54 bytes  496.00 bytes/sec\n",
           b">f+++++++++ not ours: no marker\n"]
    assert parse_itemized(out) == Drift()


def test_parse_unescapes_names():
    # as rsync prints them: control characters, non-UTF-8 and "\#ddd" escaped
    out = lines(b">f+++++++++@new\\#012line", b">f+++++++++@back\\#134#123",
                b">f+++++++++@\\#377\\#376", b">f+++++++++@tab\tand space",
                b">f+++++++++@\xc3\xbcn\xc3\xafc\xc3\xb6d\xc3\xa9", b">f+++++++++@at@sign")
    drift = parse_itemized(out, keep=10)
    assert [name for _, name in drift.sample] == [
        b"new\nline", b"back\\#123", b"\xff\xfe", b"tab\tand space",
        "ünïcödé".encode(), b"at@sign"]


def test_unescape_and_shown_round_trip():
    for name in [b"new\nline", b"back\\#123", b"a\\b", b"\xff\xfe", b"plain", b"\x7f\x01",
                 "ünïcödé".encode()]:
        assert "\n" not in shown(name)
        assert unescape(shown(name).encode()) == name
    assert shown(b"new\nline") == "new\\#012line"


def test_report_lines():
    assert report_line(Result("n1", Drift())) == "n1: identical"
    assert report_line(Result("h:/x", error="rsync exit 255 (ssh connection failed): no")) \
        == "h:/x: error: rsync exit 255 (ssh connection failed): no"
    one = Drift(1, 0, [(">f+++++++++", b"a")])
    assert report_line(Result("n1", one)) == "n1: 1 path differs (e.g. >f+++++++++ a)"
    many = Drift(7, 2, [("*deleting", b"x\ny"), (".d..t......", b"d/")])
    assert report_line(Result("n1", many)) == (
        "n1: 7 paths differ; 2 only in directory mtime "
        "(e.g. *deleting x\\#012y, .d..t...... d/, ...)")


def test_exit_code_error_wins_over_drift():
    same, differs = Result("a", Drift()), Result("b", Drift(1, 0, [(">f", b"x")]))
    broken = Result("c", error="rsync exit 255")
    assert exit_code([same, same]) == 0
    assert exit_code([same, differs]) == 1
    assert exit_code([differs, broken]) == 2
    assert exit_code([broken, same]) == 2


@pytest.mark.parametrize(("argv", "wrong"), [
    (["--check", "--verify"], "cannot be combined"),
    (["--verify", "-d"], "-d, -p"), (["--verify", "-p"], "-d, -p"),
    (["--check", "-d"], "-d, -p"), (["--check", "-p"], "-d, -p"),
    (["--check", "--pidfile", "/x.pid"], "--pidfile"),
    (["--verify", "--pidfile", "/x.pid"], "--pidfile"),
    (["--checksum"], "--checksum goes with --verify"),
    (["--check", "--checksum"], "--checksum goes with --verify"),
    (["-d", "-p"], "-p is a dry run"),  # it writes nothing: no pidfile, no log file
    (["-p", "--pidfile", "/x.pid"], "-p is a dry run"),
])
def test_one_shot_conflicts(argv, wrong):
    message = one_shot_conflict(parse_args(argv))
    assert message and wrong in message


@pytest.mark.parametrize("argv", [["--check"], ["--verify"], ["--verify", "--checksum"],
                                  ["-p", "-v"], ["-v", "--verify"]])
def test_one_shot_fine(argv):
    assert one_shot_conflict(parse_args(argv)) is None


def test_with_excludes_a_directory_mtime_alone_is_allowed_drift():
    """An excluded entry made or removed changes its directory's mtime, which the
    daemon by design does not send until the next full sync: with excludes such
    a directory is allowed drift (OK), not a difference (review17a finding 1)."""
    from inosync.verify import Result, nagios_code, report_line, summary_line

    out = [b".d..t......@./", b".d..t......@d/"]
    kept = parse_itemized(lines(*out), excludes=True)
    assert (kept.count, kept.dir_times) == (0, 2)
    result = Result("/srv/n", kept)
    assert nagios_code([result]) == 0 and exit_code([result]) == 0
    assert report_line(result) == ("/srv/n: identical; 2 directory mtimes differ, allowed: "
                                   "changes of excluded entries (the next full sync sets them)")
    assert summary_line([result]).startswith("OK: 1 node identical |")
    # without excludes, or with anything else different, it is a difference as before
    plain = parse_itemized(lines(*out))
    assert (plain.count, plain.dir_times) == (2, 2) and exit_code([Result("n", plain)]) == 1
    mixed = parse_itemized(lines(*out, b">f.st......@changed"), excludes=True)
    assert (mixed.count, mixed.dir_times) == (1, 2)
