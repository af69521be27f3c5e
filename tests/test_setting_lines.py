"""Issue 17.8: every error that comes from a setting names the file and the line
of that setting, whether config.load finds it or a start-up check (check.py)
does after the load. Both tables below are enumerated against the code, so a
new setting or check without a case fails here."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import inosync_argv

from inosync import check, config, keptstore
from inosync.config import ConfigError, load
from inosync.keptstore import KeptFile

# Lines before the setting under test, so that its line is not a guess.
PADDING = ["# inosync test config", "_helper = 1", ""]


def write(path: Path, settings: dict[str, object]) -> tuple[Path, dict[str, int]]:
    """A config of these settings, one a line after PADDING; and each one's line."""
    lines = [*PADDING, *(f"{name} = {value!r}" for name, value in settings.items())]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o644)
    return path, {name: len(PADDING) + i for i, name in enumerate(settings, 1)}


@pytest.fixture
def wdir(tmp_path: Path) -> Path:
    d = tmp_path / "www"
    d.mkdir()
    (d / "index.html").write_text("hello\n")
    return d


def base(tmp_path: Path, wdir: Path) -> dict[str, object]:
    return {"wpath": str(wdir), "rnodes": [str(tmp_path / "node")],
            "state_dir": str(tmp_path / "state")}


# ---- config.load: every setting it checks, given a value no checker takes


def checked_settings() -> list[str]:
    return sorted({*config._path_checks("/"), *config._CHECKS, "rexcludes_from"})


@pytest.mark.parametrize("name", checked_settings())
def test_a_bad_value_names_the_file_and_line_of_its_setting(tmp_path, wdir, name):
    settings = {**base(tmp_path, wdir), name: {"not": "valid"}}  # no setting takes a dict
    conf, lines = write(tmp_path / "c.conf", settings)
    with pytest.raises(ConfigError) as info:
        load(str(conf))
    assert str(info.value).startswith(f"{conf}:{lines[name]}: {name} "), str(info.value)


def test_a_bad_pattern_in_rexcludes_from_names_that_setting(tmp_path, wdir):
    """It named the line of rexcludes, or "?" when rexcludes was not set."""
    (tmp_path / "excludes").write_text("*.tmp\n- \n")
    for settings in ({}, {"rexcludes": ["*.o"]}):
        conf, lines = write(tmp_path / "c.conf", {**base(tmp_path, wdir), **settings,
                                                  "rexcludes_from": "excludes"})
        with pytest.raises(ConfigError) as info:
            load(str(conf))
        message = str(info.value)
        assert message.startswith(f"{conf}:{lines['rexcludes_from']}: rexcludes_from "
                                  f"{tmp_path / 'excludes'}: "), message
        assert "no pattern" in message


def test_a_problem_with_a_default_names_the_file_without_a_line(tmp_path, wdir):
    """A setting left at its default has no line; the file is named, no "?"."""
    conf, _ = write(tmp_path / "c.conf", {"wpath": str(wdir), "rnodes": ["h:/srv"],
                                          "state_dir": str(tmp_path / "state")})
    c = load(str(conf))
    assert c.where("ssh") == str(conf)
    assert c.where("rnodes") == f"{conf}:5"


# ---- the start-up checks: for each, a config that makes it fail, and its setting

Case = tuple[dict[str, object], str, Callable[[config.Config], None]]


def nothing(_: config.Config) -> None:
    pass


def startup_cases(tmp_path: Path, wdir: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Case]:
    """check name -> (settings, the setting to blame, what to do after the load)."""

    def wpath_gone(c: config.Config) -> None:  # removed between load and start
        Path(c.wpath).rename(tmp_path / "elsewhere")

    def damaged_record(c: config.Config) -> None:
        record = Path(KeptFile(c.state_dir).path(c.wpath))
        record.parent.mkdir(mode=0o700)
        record.write_bytes(b"/somewhere/else\0data\0")

    def fstab_not_mounted(c: config.Config) -> None:
        fstab = tmp_path / "fstab"
        fstab.write_text(f"/dev/sdz1 {c.wpath} ext4 defaults,nofail 0 2\n")
        monkeypatch.setattr(keptstore, "FSTAB", str(fstab))

    missing = tmp_path / "no" / "such"
    return {
        "_wpath_readable": ({}, "wpath", wpath_gone),
        "_ssh_program": ({"rnodes": ["h:/srv"], "ssh": ["/nonexistent/ssh"]}, "ssh", nothing),
        "_local_node_parents": ({"rnodes": [str(missing / "node")]}, "rnodes", nothing),
        "_daemon_file_folders": ({"logfile": str(missing / "log")}, "logfile", nothing),
        "_state_dir": ({"state_dir": str(tmp_path / "c.conf" / "state")}, "state_dir",
                       nothing),
        "_kept_record": ({}, "state_dir", damaged_record),
        "_wpath_disk_mounted": ({}, "wpath", fstab_not_mounted),
    }


def test_every_startup_check_has_a_case(tmp_path, wdir, monkeypatch):
    names = {c.__name__ for c in check.STARTUP_CHECKS}
    assert names == set(startup_cases(tmp_path, wdir, monkeypatch))


@pytest.mark.parametrize("name", [c.__name__ for c in check.STARTUP_CHECKS])
def test_a_failing_startup_check_names_the_file_and_line_of_its_setting(
        tmp_path, wdir, monkeypatch, name):
    settings, blamed, after_load = startup_cases(tmp_path, wdir, monkeypatch)[name]
    conf, lines = write(tmp_path / "c.conf", {**base(tmp_path, wdir), **settings})
    c = load(str(conf))
    after_load(c)
    failing = [f.__name__ for f in check.STARTUP_CHECKS if f(c)]
    assert failing[:1] == [name]  # the case makes this check fail, first
    problem = check.preflight(c) or ""
    assert problem.startswith(f"{conf}:{lines[blamed]}: "), problem
    assert "\n" not in problem


@pytest.mark.slow
def test_the_command_line_says_the_line_of_a_missing_parent_once(tmp_path, wdir):
    """The error of issue 17.8: one line on stderr, "inosync: FILE:LINE: ...", exit 2."""
    parent = tmp_path / "no" / "such"
    conf, lines = write(tmp_path / "c.conf", {**base(tmp_path, wdir),
                                              "rnodes": [str(parent / "node")]})
    for args in (["--check"], ["-p"]):
        done = subprocess.run([*inosync_argv(), "-c", str(conf), *args], capture_output=True,
                              text=True, timeout=30, stdin=subprocess.DEVNULL)
        assert done.returncode == 2, done
        assert done.stderr == (f"inosync: {conf}:{lines['rnodes']}: node {parent}/node: its "
                               f"parent directory {parent} does not exist (rsync makes only "
                               "the last directory); create it\n"), done.stderr


def test_verify_names_the_line_of_rsync_args(tmp_path, wdir):
    """--verify's own refusal (an option that makes its list lie) said no line."""
    from inosync import verify

    conf, lines = write(tmp_path / "c.conf", {**base(tmp_path, wdir), "rsync_args": ["-q"]})
    problem = verify.problem(load(str(conf))) or ""
    assert problem.startswith(f"{conf}:{lines['rsync_args']}: rsync_args holds '-q'"), problem
