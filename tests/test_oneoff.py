"""One-off mode, ``inosync SRC DEST [DEST...]`` (issue 17.7a): the command line
parsed, and the Config it builds, which must be the one a configuration file
with ``wpath = SRC`` and ``rnodes = [DEST, ...]`` gives, refused for the same
reasons, with messages that name the argument instead of a file's line."""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import write_config

from inosync import check, keptstore
from inosync.cli import one_shot_conflict, oneoff_conflict, parse_args
from inosync.config import Config, ConfigError, NotYet, from_args, load, oneoff_state_dir
from inosync.scheduler import Scheduler


@pytest.fixture
def wdir(tmp_path: Path) -> Path:
    d = tmp_path / "www"
    (d / "docs").mkdir(parents=True)
    (d / "index.html").write_text("hello\n")
    return d


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """This tree's command (not an inosync installed on PATH, which may be older)."""
    return subprocess.run([sys.executable, "-m", "inosync", *args], capture_output=True, text=True,
                          timeout=30, stdin=subprocess.DEVNULL, cwd=cwd)


# ---- the command line


def test_positional_arguments_are_src_and_dests():
    args = parse_args(["/srv/www", "n1", "web1:/srv/www"])
    assert (args.src, args.dests, args.config) == ("/srv/www", ["n1", "web1:/srv/www"], None)


def test_options_may_come_before_between_and_after_the_arguments():
    args = parse_args(["-v", "/srv/www", "-p", "n1", "n2", "--state-dir", "s"])
    assert (args.src, args.dests, args.verbose, args.pretend) == ("/srv/www", ["n1", "n2"],
                                                                  True, True)
    assert args.state_dir == "s"


def test_without_arguments_the_configuration_file_is_used():
    args = parse_args([])
    assert args.src is None and args.dests == [] and args.config is None
    assert parse_args(["-c", "x.conf"]).config == "x.conf"


def test_a_dest_after_double_dash_may_start_with_dash_and_is_then_refused(wdir):
    args = parse_args(["/srv/www", "--", "-n1"])
    assert args.dests == ["-n1"]
    with pytest.raises(ConfigError) as info:
        from_args(str(wdir), ["-n1"])
    assert str(info.value) == "DEST 1 '-n1': starts with '-' and would be taken as an option"


# ---- the Config: the one a configuration file gives, field by field


# Where the settings were given (the file and its lines, or the arguments), which
# its errors name (Config.where); not settings, so they differ.
GIVEN = ("path", "setting_lines", "arguments")


def same_config(from_file: Config, oneoff: Config) -> None:
    assert oneoff.path == ""  # no file: nothing to reload, messages name no file
    assert oneoff.setting_lines == {} and oneoff.arguments is not None
    for f in dataclasses.fields(Config):
        if f.name not in (*GIVEN, "excludes"):
            assert getattr(oneoff, f.name) == getattr(from_file, f.name), f.name
    assert oneoff.excludes.patterns == from_file.excludes.patterns
    assert dataclasses.replace(from_file, path="") == oneoff


@pytest.mark.parametrize("dests", [
    ["node1"],
    ["node1", "web1:/srv/www", "root@web2:~/www", "rsync://backup/www/site",
     "backup::www/site", "NODE/../node2/"],
])
def test_the_config_is_the_one_an_equivalent_file_gives(tmp_path, wdir, dests):
    (tmp_path / "NODE").mkdir()
    conf = tmp_path / "equivalent.conf"
    conf.write_text(f"wpath = 'www'\nrnodes = {dests!r}\nstate_dir = {oneoff_state_dir()!r}\n")
    from_file = load(str(conf), str(tmp_path))
    oneoff = from_args("www", dests, base_dir=str(tmp_path))
    same_config(from_file, oneoff)
    assert oneoff.wpath == str(wdir) and oneoff.rnodes[0] == str(tmp_path / "node1")


def test_relative_arguments_start_at_the_current_directory(tmp_path, wdir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = from_args("www/", ["copy"])
    assert (config.wpath, config.rnodes, config.base_dir) == (str(wdir), (str(tmp_path / "copy"),),
                                                               str(tmp_path))


def test_state_dir_is_the_services_for_root_and_a_private_one_for_others(tmp_path, wdir):
    """Root shares /var/lib/inosync with the service: the marks of nodes still to be
    compared by content, and the kept places of a tree, hold whichever runs next."""
    if os.getuid() == 0:
        assert oneoff_state_dir() == Config.state_dir == "/var/lib/inosync"
        assert from_args(str(wdir), [str(tmp_path / "n")]).state_dir == "/var/lib/inosync"
    else:
        assert oneoff_state_dir() == os.path.join(os.path.expanduser("~"), ".inosync-state")


def test_state_dir_given_is_checked_as_the_setting(tmp_path, wdir):
    state = tmp_path / "state"
    conf = write_config(tmp_path / "c.conf", wpath=str(wdir), rnodes=[str(tmp_path / "n")],
                        state_dir=str(state))
    oneoff = from_args(str(wdir), [str(tmp_path / "n")], state_dir=str(state))
    same_config(load(str(conf)), oneoff)
    # strict modes: a state_dir another user may change is refused
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(ConfigError) as info:
        from_args(str(wdir), [str(tmp_path / "n")], state_dir=str(shared / "state"))
    assert str(info.value).startswith(f"--state-dir {str(shared / 'state')!r}: state_dir ")
    assert "writable by" in str(info.value)


# ---- refusals: every one a config file gets, naming the argument


def file_error(tmp_path: Path, wpath: str, rnodes: list[str]) -> str:
    conf = tmp_path / "same.conf"
    conf.write_text(f"wpath = {wpath!r}\nrnodes = {rnodes!r}\n"
                    f"state_dir = {str(tmp_path / 'state')!r}\n")
    with pytest.raises(ConfigError) as info:
        load(str(conf), str(tmp_path))
    return str(info.value).removeprefix(f"{conf}:")


def oneoff_error(tmp_path: Path, src: str, dests: list[str]) -> tuple[str, type]:
    with pytest.raises(ConfigError) as info:
        from_args(src, dests, state_dir=str(tmp_path / "state"), base_dir=str(tmp_path))
    message = str(info.value)
    assert "\n" not in message and ".conf" not in message, message
    assert not re.search(r"\bline \d|:\d+: ", message), message  # no file, so no line
    return message, type(info.value)


@pytest.mark.parametrize("dest", [
    "web1:", "root@web1:", "web1:/", "web1:~", "web1:.", "web1:~root/www", "web1:/etc",
    "web1:/var/www/../..", "web1:/srv/*", "rsync://h/m/../x", "n1\n", " n1", "web1:/srv/w\tw",
])
def test_a_dangerous_ssh_or_rsync_dest_is_refused_as_in_a_config(tmp_path, wdir, dest):
    from_file = file_error(tmp_path, "www", ["ok", dest])
    assert from_file.startswith("2: rnodes entry "), from_file
    why = from_file.removeprefix(f"2: rnodes entry {dest!r}").removeprefix(":").lstrip()
    message, kind = oneoff_error(tmp_path, "www", ["ok", dest])
    assert (message, kind) == (f"DEST 2 {dest!r}: {why}", ConfigError)


def test_the_example_of_the_issue(tmp_path, wdir):
    message, _ = oneoff_error(tmp_path, "www", ["n1", "web1:"])
    assert message.startswith("DEST 2 'web1:': names no directory (inosync 0.4 synced it to "
                              "the root of web1, rsync reads it as the login directory)")


@pytest.mark.parametrize("dests, blamed", [
    (["/etc"], 1),  # a system directory
    (["n1", "www/docs"], 2),  # inside wpath
    (["n1", "."], 2),  # contains wpath
    (["www"], 1),  # wpath itself
    (["n1", "n2", "www/../n2/"], 3),  # twice
    (["n1", "state"], 2),  # it holds state_dir (as a file's state_dir setting is blamed)
])
def test_a_dangerous_local_dest_is_refused_as_in_a_config(tmp_path, wdir, dests, blamed):
    from_file = file_error(tmp_path, "www", dests)
    message, kind = oneoff_error(tmp_path, "www", dests)
    assert kind is ConfigError
    assert message.startswith(f"DEST {blamed} {dests[blamed - 1]!r}: "), message
    if "twice" in from_file:
        assert message.endswith(f"names {tmp_path / 'n2'} a second time (first as 'n2'); "
                                "list each node once"), message
    else:
        assert message.endswith(from_file.split(": ", 1)[1]), (message, from_file)


def test_two_local_dests_that_overlap_are_refused_naming_both(tmp_path, wdir):
    from_file = file_error(tmp_path, "www", ["n1", "n1/sub"])
    message, _ = oneoff_error(tmp_path, "www", ["n1", "n1/sub"])
    assert message == "DEST: " + from_file.split(": ", 1)[1]
    assert f"local nodes {tmp_path / 'n1'} and {tmp_path / 'n1' / 'sub'} overlap" in message


@pytest.mark.parametrize("make, temporary", [
    (lambda d: None, True),  # missing
    (lambda d: d.mkdir(), True),  # empty
    (lambda d: (d.mkdir(), (d / "lost+found").mkdir()), True),  # only lost+found
    (lambda d: d.write_text("x"), False),  # not a directory
])
def test_a_src_not_there_yet_is_temporary_as_in_a_config(tmp_path, make, temporary):
    make(tmp_path / "src")
    from_file = file_error(tmp_path, "src", ["n1"])
    message, kind = oneoff_error(tmp_path, "src", ["n1"])
    assert message.startswith(f"SRC 'src': {from_file.split(': ', 1)[1]}"), (message, from_file)
    assert (kind is NotYet) == temporary
    if "allow_empty_wpath" in message:  # a setting one-off mode cannot set: say where it goes
        assert message.endswith("; one-off mode has no settings: put wpath, rnodes and "
                                "allow_empty_wpath in a configuration file (-c FILE)")


def test_a_system_src_is_refused_as_in_a_config(tmp_path):
    from_file = file_error(tmp_path, "/var", ["n1"])
    message, kind = oneoff_error(tmp_path, "/var", ["n1"])
    assert message.startswith(f"SRC '/var': {from_file.split(': ', 1)[1]}")
    assert "allow_system_wpath" in message and "(-c FILE)" in message


def test_an_empty_src_is_refused(tmp_path):
    message, _ = oneoff_error(tmp_path, "", ["n1"])
    assert message == "SRC '': wpath must be a non-empty string, got ''"


def test_an_empty_state_dir_is_refused_not_taken_for_the_default(tmp_path, wdir):
    with pytest.raises(ConfigError) as info:
        from_args(str(wdir), [str(tmp_path / "n1")], state_dir="")
    assert str(info.value) == "--state-dir '': state_dir must be a non-empty string, got ''"


# ---- Config.where: the argument, as a file's error names the line


def test_where_names_the_argument_that_gave_the_setting(tmp_path, wdir):
    oneoff = from_args("www", ["n1"], base_dir=str(tmp_path))
    assert (oneoff.where("wpath"), oneoff.where("rnodes")) == ("SRC 'www'", "DEST")
    assert oneoff.where("state_dir") == oneoff.where("ssh") == "one-off mode"  # defaults
    given = from_args("www", ["n1"], state_dir="s", base_dir=str(tmp_path))
    assert given.where("state_dir") == "--state-dir 's'"


def oneoff_startup_cases(tmp_path: Path, wdir: Path,
                         monkeypatch: pytest.MonkeyPatch) -> dict[str, tuple]:
    """check name -> (DESTs, --state-dir, what to do after the build, the argument
    blamed), for each start-up check an argument can make fail (one-off mode sets
    no ssh, logfile, pidfile or statusfile)."""
    state = str(tmp_path / "state")

    def wpath_gone(c: Config) -> None:  # removed between the build and the start
        Path(c.wpath).rename(tmp_path / "elsewhere")

    def damaged_record(c: Config) -> None:
        record = Path(keptstore.KeptFile(c.state_dir).path(c.wpath))
        record.parent.mkdir(mode=0o700)
        record.write_bytes(b"/somewhere/else\0data\0")

    def fstab_not_mounted(c: Config) -> None:
        fstab = tmp_path / "fstab"
        fstab.write_text(f"/dev/sdz1 {c.wpath} ext4 defaults,nofail 0 2\n")
        monkeypatch.setattr(keptstore, "FSTAB", str(fstab))

    def nothing(_: Config) -> None:
        pass

    (tmp_path / "file").write_text("")
    return {
        "_wpath_readable": (["n1"], state, wpath_gone, "SRC 'www'"),
        "_local_node_parents": (["n1", "no/such/n2"], state, nothing, "DEST"),
        "_state_dir": (["n1"], "file/state", nothing, "--state-dir 'file/state'"),
        "_kept_record": (["n1"], state, damaged_record, f"--state-dir {state!r}"),
        "_wpath_disk_mounted": (["n1"], state, fstab_not_mounted, "SRC 'www'"),
    }


@pytest.mark.parametrize("name", ["_wpath_readable", "_local_node_parents", "_state_dir",
                                  "_kept_record", "_wpath_disk_mounted"])
def test_a_failing_startup_check_names_the_argument(tmp_path, wdir, monkeypatch, name):
    """check.preflight prefixes Config.where(setting): in one-off mode the argument
    (it said no more than the file's empty name)."""
    dests, state, after_build, blamed = oneoff_startup_cases(tmp_path, wdir, monkeypatch)[name]
    config = from_args("www", dests, state_dir=state, base_dir=str(tmp_path))
    after_build(config)
    assert [f.__name__ for f in check.STARTUP_CHECKS if f(config)][:1] == [name]
    problem = check.preflight(config) or ""
    assert problem.startswith(f"{blamed}: "), problem
    assert "\n" not in problem and ".conf" not in problem


def test_a_startup_check_on_the_command_line_names_the_argument(tmp_path, wdir):
    done = cli("--check", "www", "n1", "no/such/n2", "--state-dir", "s", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr == (f"inosync: DEST: node {tmp_path}/no/such/n2: its parent directory "
                           f"{tmp_path}/no/such does not exist (rsync makes only the last "
                           "directory); create it\n"), done.stderr


# ---- the command line refuses what does not go together, in one line, exit 2


@pytest.mark.parametrize("args, expected", [
    (["-c", "x.conf", "SRC", "n1"], "usage: -c FILE and SRC DEST cannot be combined"),
    (["SRC"], "usage: one-off mode needs SRC and at least one DEST"),
    (["-d", "SRC", "n1"], "usage: one-off mode (inosync SRC DEST) runs in the foreground "
                          "until Ctrl-C; it cannot be combined with -d"),
    (["--state-dir", "s"], "usage: --state-dir goes with one-off mode"),
    (["-d", "--pidfile", "x.pid", "SRC", "n1"], "usage: one-off mode (inosync SRC DEST)"),
])
def test_usage_errors(args, expected):
    assert (oneoff_conflict(parse_args(args)) or "").startswith(expected)


@pytest.mark.parametrize("args", [
    ["SRC", "n1"], ["-v", "-p", "SRC", "n1"], ["--pidfile", "x.pid", "SRC", "n1"],
    ["--check", "--state-dir", "s", "SRC", "n1"], ["--verify", "--checksum", "SRC", "n1", "n2"],
    ["--verify", "--nagios", "SRC", "n1"], ["-c", "x.conf", "-d"], [],
])
def test_what_goes_together(args):
    args_ = parse_args(args)
    assert one_shot_conflict(args_) is None and oneoff_conflict(args_) is None


def test_a_usage_error_on_the_command_line(tmp_path):
    done = cli("-d", "SRC", "n1", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("inosync: usage: one-off mode (inosync SRC DEST) runs in "
                                  "the foreground") and done.stderr.count("\n") == 1


def test_a_refused_dest_on_the_command_line(tmp_path, wdir):
    done = cli(str(wdir), str(tmp_path / "n1"), "web1:", "--state-dir", str(tmp_path / "s"))
    assert done.returncode == 2
    assert done.stderr.startswith("inosync: DEST 2 'web1:': names no directory ")
    assert done.stderr.count("\n") == 1


def test_an_empty_src_on_the_command_line_exits_75(tmp_path):
    (tmp_path / "src").mkdir()
    done = cli("src", "n1", "--state-dir", str(tmp_path / "s"), cwd=tmp_path)
    assert (done.returncode, done.stderr.count("\n")) == (75, 1), done.stderr
    assert done.stderr.startswith(f"inosync: SRC 'src': wpath {tmp_path / 'src'} is empty")


# ---- SIGHUP: no file to read again


def test_sighup_in_one_off_mode_reloads_nothing(caplog):
    s = Scheduler(Config(path="", wpath="/srv/www", configured_wpath="/srv/www",
                         rnodes=("a:/www",)))
    s.begin(0.0)
    with caplog.at_level("WARNING", logger="inosync"):
        assert s.signal(signal.SIGHUP, 1.0) == []
    assert "SIGHUP ignored: one-off mode (inosync SRC DEST) has no configuration file " \
           "to read again" in caplog.text
