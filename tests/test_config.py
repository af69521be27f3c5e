"""Unit tests for inosync.config.load(), and the command line's handling of bad configs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import inosync
from inosync.config import DEFAULT_EMASK, Config, ConfigError, load

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def wdir(tmp_path: Path) -> Path:
    """A non-empty directory to watch."""
    d = tmp_path / "www"
    d.mkdir()
    (d / "index.html").write_text("hello")
    return d


@pytest.fixture
def write(tmp_path: Path, wdir: Path):
    """write(*lines) -> path of a config file holding exactly these lines (line 1 first)."""
    counter = iter(range(1000))

    def _write(*lines: str) -> str:
        path = tmp_path / f"inosync-{next(counter)}.conf"
        path.write_text("".join(line + "\n" for line in lines))
        return str(path)

    return _write


def base_lines(wdir: Path) -> list[str]:
    """A valid config: line 1 wpath, line 2 rnodes."""
    return [f"wpath = {str(wdir)!r}", 'rnodes = ["backup.example.com:/var/www/"]']


def error_of(path: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(path)
    message = str(info.value)
    assert "\n" not in message, f"message is not one line: {message!r}"
    assert path in message, f"message does not name the file: {message!r}"
    return message


def assert_line(message: str, path: str, line: int) -> None:
    assert message.startswith(f"{path}:{line}: "), message


# ---------------------------------------------------------------- valid files and defaults


def test_minimal_config_defaults_match_inosync_02(write, wdir):
    path = write(*base_lines(wdir))
    config = load(path)
    assert isinstance(config, Config)
    assert config.path == path
    assert config.wpath == str(wdir)
    assert config.rnodes == ("backup.example.com:/var/www/",)
    # inosync 0.2 defaults
    assert config.edelay == 10
    assert isinstance(config.edelay, float)
    assert config.rspeed == 0
    assert config.rsync == "/usr/bin/rsync"
    assert config.rexcludes == ()
    for event in ("IN_CLOSE_WRITE", "IN_CREATE", "IN_DELETE", "IN_MOVED_FROM", "IN_MOVED_TO"):
        assert event in config.emask
    # chmod must replicate, truncate and writes through open files too
    assert "IN_ATTRIB" in config.emask
    assert "IN_MODIFY" in config.emask
    assert config.emask == DEFAULT_EMASK
    assert config.allow_empty_wpath is False
    assert config.retry_min <= config.retry_max


def test_example_style_config(write, wdir):
    path = write(
        "# comment",
        f"wpath = {str(wdir) + '/'!r}",
        'rexcludes = ["/localhost", "*.swp"]',
        'rpath = "/var/www/"',
        "rnodes = [",
        '    "www1.example.com:" + rpath,',
        '    "www2.example.com:" + rpath,',
        "]",
        "rspeed = 500",
        'emask = ["IN_CLOSE_WRITE", "IN_CREATE", "IN_DELETE", "IN_MOVED_FROM", "IN_MOVED_TO"]',
        "edelay = 2.5",
        'rsync = "/usr/bin/rsync"',
        'rsync_args = ["--hard-links"]',
    )
    config = load(path)
    assert config.wpath == str(wdir)  # trailing slash normalised away
    assert config.rnodes == ("www1.example.com:/var/www/", "www2.example.com:/var/www/")
    assert config.rexcludes == ("/localhost", "*.swp")
    assert config.rspeed == 500
    assert config.edelay == 2.5
    assert config.emask == (
        "IN_CLOSE_WRITE",
        "IN_CREATE",
        "IN_DELETE",
        "IN_MOVED_FROM",
        "IN_MOVED_TO",
    )
    opts = config.rsync_options()
    assert opts.bwlimit == 500
    assert list(opts.excludes) == ["/localhost", "*.swp"]
    assert list(opts.extra) == ["--hard-links"]


def test_helper_variables_accepted(write, wdir):
    path = write(
        "import os",
        'base = "/x"',
        'rpath = "/var/www/"',
        'hosts = ["a", "b"]',
        "_private = 1",
        f"wpath = {str(wdir)!r}",
        'rnodes = [h + ":" + base + rpath for h in hosts]',
    )
    config = load(path)
    assert config.rnodes == ("a:/x/var/www/", "b:/x/var/www/")


def test_wpath_symlink_resolved(write, wdir, tmp_path):
    link = tmp_path / "link"
    link.symlink_to(wdir)
    config = load(write(f"wpath = {str(link)!r}", 'rnodes = ["/srv/copy"]'))
    assert config.wpath == str(wdir)


def test_edelay_zero_and_int_accepted(write, wdir):
    assert load(write(*base_lines(wdir), "edelay = 0")).edelay == 0.0
    assert load(write(*base_lines(wdir), "edelay = 3")).edelay == 3.0


def test_last_assignment_wins(write, wdir):
    assert load(write(*base_lines(wdir), "edelay = -1", "edelay = 4")).edelay == 4.0


def test_rnodes_tuple_accepted(write, wdir):
    path = write(f"wpath = {str(wdir)!r}", 'rnodes = ("/srv/a", "h:/b", "rsync://h/m/")')
    assert load(path).rnodes == ("/srv/a", "h:/b", "rsync://h/m/")


def test_rexcludes_from_relative_to_config(write, wdir, tmp_path):
    (tmp_path / "excl.txt").write_text("# comment\n*.tmp\n/cache/\n")
    config = load(write(*base_lines(wdir), 'rexcludes = ["/a"]', 'rexcludes_from = "excl.txt"'))
    assert list(config.excludes.patterns) == ["/a", "*.tmp", "/cache/"]


def test_rexcludes_from_missing_file(write, wdir):
    path = write(*base_lines(wdir), 'rexcludes_from = "nope.txt"')
    message = error_of(path)
    assert_line(message, path, 3)
    assert "nope.txt" in message


def test_empty_wpath_allowed_when_asked(write, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    path = write(f"wpath = {str(empty)!r}", 'rnodes = ["/srv/copy"]', "allow_empty_wpath = True")
    config = load(path)
    assert config.allow_empty_wpath is True
    assert config.wpath == str(empty)


# ---------------------------------------------------------------- errors: reading and parsing


def test_missing_file(tmp_path):
    path = str(tmp_path / "does-not-exist.conf")
    message = error_of(path)
    assert "No such file" in message


def test_not_utf8(tmp_path):
    p = tmp_path / "latin1.conf"
    p.write_bytes(b'wpath = "/caf\xe9"\n')
    error_of(str(p))


def test_syntax_error_line(write, wdir):
    path = write(*base_lines(wdir), "edelay = = 5")
    message = error_of(path)
    assert_line(message, path, 3)
    assert "syntax" in message.lower()


def test_syntax_error_unclosed_bracket(write, wdir):
    path = write(f"wpath = {str(wdir)!r}", 'rnodes = ["a:/b"', "edelay = 3")
    message = error_of(path)
    assert re.match(re.escape(path) + r":[0-9]+: ", message), message


def test_exception_at_exec_time(write, wdir):
    path = write(*base_lines(wdir), "x = 1/0", "edelay = 3")
    message = error_of(path)
    assert_line(message, path, 3)
    assert "ZeroDivisionError" in message


def test_exception_inside_config_function(write, wdir):
    path = write(
        "def nodes_for(h):",
        "    return [h + ':/p', undefined_name]",
        *base_lines(wdir),
        "extra = nodes_for('x')",
    )
    message = error_of(path)
    assert_line(message, path, 2)  # the innermost line of the config itself
    assert "NameError" in message


def test_exception_from_library_points_at_config_line(write, wdir, tmp_path):
    missing = str(tmp_path / "nonexistent")
    path = write(*base_lines(wdir), "import os", f"entries = os.listdir({missing!r})")
    message = error_of(path)
    assert_line(message, path, 4)
    assert "FileNotFoundError" in message


def test_exception_deep_in_python_library_points_at_config_line(write, wdir):
    # the innermost frames are in json's own code; the line must be the config's
    path = write(*base_lines(wdir), "import json", "", 'data = json.loads("{broken")')
    message = error_of(path)
    assert_line(message, path, 5)
    assert "JSONDecodeError" in message


# ---------------------------------------------------------------- errors: settings


def test_missing_wpath(write):
    path = write('rnodes = ["/srv/copy"]')
    message = error_of(path)
    assert "wpath" in message
    assert "not set" in message


def test_missing_rnodes(write, wdir):
    path = write(f"wpath = {str(wdir)!r}")
    message = error_of(path)
    assert "rnodes" in message
    assert "not set" in message


def test_wpath_not_a_directory(write, wdir, tmp_path):
    f = tmp_path / "a-file"
    f.write_text("x")
    for target in (f, tmp_path / "missing"):
        path = write("# watched dir", f"wpath = {str(target)!r}", 'rnodes = ["/srv/copy"]')
        message = error_of(path)
        assert_line(message, path, 2)
        assert "not a directory" in message


def test_wpath_wrong_type(write):
    path = write('rnodes = ["/srv/copy"]', "wpath = 42")
    assert_line(error_of(path), path, 2)


def test_empty_rnodes(write, wdir):
    path = write(f"wpath = {str(wdir)!r}", "", "rnodes = []")
    message = error_of(path)
    assert_line(message, path, 3)
    assert "rnodes" in message and "empty" in message


def test_rnodes_string_instead_of_list(write, wdir):
    path = write(f"wpath = {str(wdir)!r}", 'rnodes = "host:/var/www/"')
    message = error_of(path)
    assert_line(message, path, 2)
    assert "list" in message


def test_rnodes_entry_not_string(write, wdir):
    path = write(f"wpath = {str(wdir)!r}", 'rnodes = ["h:/a", None]')
    assert_line(error_of(path), path, 2)


def test_rnodes_duplicate(write, wdir):
    path = write(f"wpath = {str(wdir)!r}", 'rnodes = ["h:/a", "h:/a"]')
    message = error_of(path)
    assert_line(message, path, 2)
    assert "twice" in message


@pytest.mark.parametrize("bad", ["-e sh", "--rsync-path=evil", "-"])
def test_rnode_starting_with_dash(write, wdir, bad):
    path = write(f"wpath = {str(wdir)!r}", f'rnodes = ["/srv/ok", {bad!r}]')
    message = error_of(path)
    assert_line(message, path, 2)
    assert repr(bad) in message
    assert "'-'" in message


def test_negative_edelay(write, wdir):
    path = write(*base_lines(wdir), "edelay = -1")
    message = error_of(path)
    assert_line(message, path, 3)
    assert "edelay" in message


@pytest.mark.parametrize("value", ['"10"', "None", "True", "[10]"])
def test_edelay_not_a_number(write, wdir, value):
    path = write(*base_lines(wdir), f"edelay = {value}")
    message = error_of(path)
    assert_line(message, path, 3)
    assert "edelay" in message and "number" in message


@pytest.mark.parametrize("value", ["1.5", "-1", '"100"', "True"])
def test_bad_rspeed(write, wdir, value):
    path = write(*base_lines(wdir), "# speed", f"rspeed = {value}")
    message = error_of(path)
    assert_line(message, path, 4)
    assert "rspeed" in message


def test_rsync_not_executable(write, wdir, tmp_path):
    plain = tmp_path / "rsync-plain"
    plain.write_text("#!/bin/sh\n")
    plain.chmod(0o644)
    for target in (plain, tmp_path, tmp_path / "missing-rsync"):
        path = write(*base_lines(wdir), f"rsync = {str(target)!r}")
        message = error_of(path)
        assert_line(message, path, 3)
        assert "executable" in message


def test_rsync_executable_accepted(write, wdir, tmp_path):
    exe = tmp_path / "my-rsync"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    assert load(write(*base_lines(wdir), f"rsync = {str(exe)!r}")).rsync == str(exe)


def test_unknown_event_with_suggestion(write, wdir):
    path = write(*base_lines(wdir), 'emask = ["IN_CREATE", "IN_CLOSE_WRTE"]')
    message = error_of(path)
    assert_line(message, path, 3)
    assert "'IN_CLOSE_WRTE'" in message
    assert "did you mean 'IN_CLOSE_WRITE'" in message


def test_unknown_event_without_suggestion(write, wdir):
    path = write(*base_lines(wdir), 'emask = ["BANANA"]')
    message = error_of(path)
    assert_line(message, path, 3)
    assert "'BANANA'" in message


def test_empty_emask(write, wdir):
    path = write(*base_lines(wdir), "emask = []")
    assert_line(error_of(path), path, 3)


@pytest.mark.parametrize(
    ("assignment", "suggestion"),
    [
        ("edleay = 5", "edelay"),
        ('rnode = ["/srv/copy"]', "rnodes"),
        ("rspped = 100", "rspeed"),
        ('rexclude = ["x"]', "rexcludes"),
        ('WPATH = "/x"', "wpath"),
    ],
)
def test_misspelt_setting(write, wdir, assignment, suggestion):
    path = write(*base_lines(wdir), "", assignment)
    message = error_of(path)
    assert_line(message, path, 4)
    assert f"did you mean {suggestion!r}" in message


def test_misspelt_rnodes_reported_before_missing_rnodes(write, wdir):
    path = write(f"wpath = {str(wdir)!r}", 'rnode = ["/srv/copy"]')
    message = error_of(path)
    assert_line(message, path, 2)
    assert "did you mean 'rnodes'" in message


def test_empty_wpath_refused(write, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    path = write('rnodes = ["/srv/copy"]', f"wpath = {str(empty)!r}")
    message = error_of(path)
    assert_line(message, path, 2)
    assert "empty" in message
    assert "allow_empty_wpath" in message


def test_allow_empty_wpath_must_be_bool(write, wdir):
    path = write(*base_lines(wdir), "allow_empty_wpath = 1")
    assert_line(error_of(path), path, 3)


@pytest.mark.parametrize(
    "line",
    [
        'rsync_args = "--hard-links"',
        "ssh = []",
        'ssh = "ssh -p 22"',
        "timeout = 0",
        "retry_min = 0",
        'pidfile = ""',
        'rexcludes = "/tmp"',
    ],
)
def test_other_bad_values(write, wdir, line):
    path = write(*base_lines(wdir), line)
    assert_line(error_of(path), path, 3)


def test_retry_min_above_retry_max(write, wdir):
    path = write(*base_lines(wdir), "retry_min = 30", "retry_max = 10")
    message = error_of(path)
    assert_line(message, path, 3)


# ---------------------------------------------------------------- settings in blocks, odd errors


def test_line_number_of_setting_assigned_in_a_block(write, wdir):
    path = write(*base_lines(wdir), "if True:", "    edelay = -1")
    assert_line(error_of(path), path, 4)


def test_misspelt_setting_in_a_block(write, wdir):
    path = write(*base_lines(wdir), "try:", "    edleay = 5", "except Exception:", "    pass")
    assert "did you mean 'edelay'" in error_of(path)


def test_retry_max_below_default_retry_min(write, wdir):
    path = write(*base_lines(wdir), "retry_max = 0.5")
    assert_line(error_of(path), path, 3)


def test_exec_error_message_is_one_line(write, wdir):
    path = write(*base_lines(wdir), 'raise ValueError("first\\nsecond")')
    error_of(path)


# ---------------------------------------------------------------- command line


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "inosync", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=30,
    )


def assert_cli_config_error(proc: subprocess.CompletedProcess, path: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert path in lines[0]
    assert proc.stdout == ""
    return lines[0]


def test_cli_missing_config_file(tmp_path):
    path = str(tmp_path / "absent.conf")
    line = assert_cli_config_error(run_cli("-c", path), path)
    assert "No such file" in line


@pytest.mark.parametrize(
    ("lines", "lineno", "needle"),
    [
        (["{base}", "x = 1/0"], 3, "ZeroDivisionError"),
        (["{base}", "edelay = = 1"], 3, "syntax"),
        (["{base}", "edleay = 5"], 3, "did you mean 'edelay'"),
        (["{base}", 'emask = ["IN_NOPE"]'], 3, "IN_NOPE"),
        (['rnodes = ["/srv/copy"]', 'wpath = "{missing}"'], 2, "not a directory"),
    ],
)
def test_cli_bad_config(write, wdir, tmp_path, lines, lineno, needle):
    expanded: list[str] = []
    for line in lines:
        if line == "{base}":
            expanded += base_lines(wdir)
        else:
            expanded.append(line.replace("{missing}", str(tmp_path / "missing-dir")))
    path = write(*expanded)
    line = assert_cli_config_error(run_cli("-c", path), path)
    assert f"{path}:{lineno}:" in line
    assert needle in line


def test_cli_help():
    proc = run_cli("-h")
    assert proc.returncode == 0
    assert "usage:" in proc.stdout
    assert "-c FILE" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_cli_version():
    proc = run_cli("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"inosync {inosync.__version__}"
    assert re.fullmatch(r"\d+\.\d+\.\d+", inosync.__version__)


def test_cli_unknown_option_is_usage_error():
    proc = run_cli("--no-such-option")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr


def test_version_matches_pyproject():
    text = (REPO / "pyproject.toml").read_text()
    m = re.search(r'^version = "([^"]+)"', text, re.M)
    assert m is not None
    assert m.group(1) == inosync.__version__


# ---------------------------------------------------------------- hardening


@pytest.mark.parametrize("mode", [0o664, 0o646, 0o666])
def test_config_writable_by_others_is_refused(tmp_path, mode):
    wdir = tmp_path / "w"
    wdir.mkdir()
    (wdir / "f").write_text("x")
    path = tmp_path / "c.conf"
    path.write_text(f"wpath = {str(wdir)!r}\nrnodes = ['/tmp/x']\n")
    path.chmod(mode)
    with pytest.raises(ConfigError, match=r"writable by group or others.*chmod go-w"):
        load(str(path))


def test_config_owned_by_someone_else_is_refused(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("chown needs root")
    wdir = tmp_path / "w"
    wdir.mkdir()
    (wdir / "f").write_text("x")
    path = tmp_path / "c.conf"
    path.write_text(f"wpath = {str(wdir)!r}\nrnodes = ['/tmp/x']\n")
    path.chmod(0o644)
    os.chown(path, 4242, 0)
    with pytest.raises(ConfigError, match=r"owned by uid 4242.*chown root"):
        load(str(path))
    done = subprocess.run([sys.executable, "-m", "inosync", "-c", str(path)],
                          capture_output=True, text=True, timeout=30, cwd=REPO)
    assert done.returncode == 2 and "owned by uid 4242" in done.stderr
