"""The man page doc/inosync.8: committed, built from doc/inosync.8.rst, true to the code.

Unit tests: docutils renders the page in this process; no other program runs,
but lexgrog (man-db) where it is installed.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import re
import shlex
import shutil
import subprocess
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

from inosync import (
    __version__,
    cli,
    config,
    keptstore,
    pidfile,
    rsync,
    rsyncopts,
    scheduler,
    signals,
    treelock,
    unverified,
    verify,
)
from inosync.cli import parse_args

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "doc"


def build_man() -> ModuleType:
    """doc/build_man.py, the script that writes the page (doc/ is no package)."""
    spec = importlib.util.spec_from_file_location("build_man", DOC / "build_man.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_page_is_what_its_source_builds() -> None:
    committed = (DOC / "inosync.8").read_text(encoding="utf-8")
    rebuilt = build_man().render()
    assert rebuilt == committed, "doc/inosync.8 is stale: run python doc/build_man.py"


def test_page_carries_the_package_version() -> None:
    th = next(line for line in (DOC / "inosync.8").read_text().splitlines()
              if line.startswith(".TH "))
    _, title, section, _date, source, _manual = shlex.split(th)
    assert (title, section, source) == ("inosync", "8", f"inosync {__version__}")


def test_page_documents_every_option_the_parser_takes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse_args(["-h"])
    assert exit_.value.code == 0
    helped = set(re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", capsys.readouterr().out))
    source = (DOC / "inosync.8.rst").read_text()
    options = source.split("\nOPTIONS\n", 1)[1].split("\nCONFIGURATION\n", 1)[0]
    # An option list entry starts a line: "-c FILE", "-h, --help", "--check".
    documented = set(re.findall(r"^(--?[a-z][\w-]*)(?:, (--?[a-z][\w-]*))?", options, re.M))
    documented_flat = {opt for pair in documented for opt in pair if opt}
    assert {"-c", "-d", "-p", "-v", "--version", "-h"} <= helped
    assert helped - documented_flat == set()


@pytest.mark.parametrize("section", ["NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "CONFIGURATION",
                                     "SIGNALS", "EXIT STATUS", "FILES", "SEE ALSO"])
def test_page_has_section(section: str) -> None:
    page = (DOC / "inosync.8").read_text()
    headings = {line[4:].strip('"').upper() for line in page.splitlines()
                if line.startswith(".SH ")}
    assert section in headings


# ---- issue 17.11: the man page is the reference (a wheel ships no README)


def man_settings() -> ModuleType:
    """doc/man_settings.py, which makes the page's list of settings from the code."""
    spec = importlib.util.spec_from_file_location("man_settings", DOC / "man_settings.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def section(name: str, text: str | None = None) -> str:
    """One section of the page's source, from its heading to the next one."""
    text = text if text is not None else (DOC / "inosync.8.rst").read_text(encoding="utf-8")
    heading = f"\n{name}\n{'=' * len(name)}\n"
    body = text.split(heading, 1)[1]
    return re.split(r"\n[A-Z][A-Z ]+\n=+\n", body, maxsplit=1)[0]


def setting_entries() -> dict[str, dict[str, str]]:
    """{setting: {"Type": ..., "Accepts": ..., "Default": ...}} as the page's source says."""
    text = section("CONFIGURATION")
    found = {}
    for name, block in re.findall(r"^\*\*(\w+)\*\*\n((?:    \|.*\n)+)", text, re.M):
        fields: dict[str, str] = {}
        label = ""
        for line in block.splitlines():
            body = line[len("    | "):]
            if body.startswith("    "):  # a wrapped line goes on with the last field
                fields[label] += " " + body.strip()
            else:
                label, _, value = body.partition(": ")
                fields[label] = value
        found[name] = fields
    return found


def test_name_section_is_NAME_as_man_pages_7_has_it() -> None:
    lines = (DOC / "inosync.8").read_text().splitlines()
    th = next(i for i, line in enumerate(lines) if line.startswith(".TH "))
    assert lines[th + 1] == ".SH NAME", "rst2man writes '.SH Name': build_man.py must fix it"
    assert re.fullmatch(r"inosync \\- keep copies of .+", lines[th + 2])


@pytest.mark.skipif(shutil.which("lexgrog") is None, reason="man-db's lexgrog not installed")
def test_lexgrog_reads_the_name_line_as_whatis_will() -> None:
    out = subprocess.run(["lexgrog", str(DOC / "inosync.8")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split(": ", 1)[1].strip() == \
        '"inosync - keep copies of a directory tree in sync with inotify and rsync"'


def test_committed_source_holds_the_lists_the_code_makes() -> None:
    committed = (DOC / "inosync.8.rst").read_text(encoding="utf-8")
    assert build_man().source_text() == committed, \
        "doc/inosync.8.rst is stale: run python doc/build_man.py"


def test_every_setting_of_the_code_has_an_entry_and_no_other() -> None:
    assert set(setting_entries()) == config.KNOWN
    assert set(setting_entries()) >= {"wpath", "rnodes", "rpath", "rexcludes_from", "state_dir"}


def test_every_default_in_the_page_is_the_codes() -> None:
    fields = {f.name: f for f in dataclasses.fields(config.Config)}
    entries = setting_entries()
    for name in config.KNOWN:
        shown = entries[name]["Default"]
        f = fields.get(name)
        if f is None:  # rpath, rexcludes_from: folded in, no default
            assert shown == "unset", name
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            assert shown == "none (required)", name
        elif name in config.SHOWN_DEFAULTS:  # sized for the machine: the rule is shown
            assert shown == config.SHOWN_DEFAULTS[name], name
        else:
            code = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            value = ast.literal_eval(shown)
            assert value == (list(code) if isinstance(code, tuple) else code), name


def test_every_range_in_the_page_is_what_the_checker_accepts() -> None:
    entries = setting_entries()
    numbers = {n: c for n, c in config._CHECKS.items() if isinstance(c, config.Number)}
    assert {"edelay", "timeout", "resync_interval", "rspeed"} <= set(numbers)
    for name, check in numbers.items():
        accepts = entries[name]["Accepts"]
        low, high = re.fullmatch(r"(?:0 \(never\), or )?([\d.,]+) to ([\d.,]+)", accepts).groups()
        kind = int if check.integer else float
        low_, high_ = (kind(x.replace(",", "")) for x in (low, high))
        assert check(low_) == low_ and check(high_) == high_, name
        step = 1 if check.integer else 0.001
        for outside in (low_ - step, high_ + step):
            if outside == 0 and accepts.startswith("0 (never)"):
                continue
            with pytest.raises(ValueError):
                check(outside)
        assert entries[name]["Type"].startswith("integer" if check.integer else "number"), name
        assert accepts.startswith("0 (never)") == check.never, name
    for name in (n for n, c in config._CHECKS.items() if c is config._bool):
        assert entries[name]["Type"] == "boolean" and entries[name]["Accepts"] == "True or False"


def test_a_setting_added_to_the_code_without_words_stops_the_build(
        monkeypatch: pytest.MonkeyPatch) -> None:
    generator = man_settings()
    monkeypatch.setattr(generator.config, "KNOWN", config.KNOWN | {"brand_new"})
    with pytest.raises(ValueError, match="no entry in DOCS for the setting.* brand_new"):
        generator.entries()


def test_a_number_added_to_the_code_gets_its_range_from_its_checker(
        monkeypatch: pytest.MonkeyPatch) -> None:
    generator = man_settings()
    monkeypatch.setattr(generator.config, "KNOWN", config.KNOWN | {"brand_new"})
    monkeypatch.setitem(generator.config._CHECKS, "brand_new", config.Number(2, 7, integer=True))
    monkeypatch.setitem(generator.DOCS, "brand_new", generator.Doc("New.", unit="paths"))
    entry = next(e for e in generator.entries() if e.name == "brand_new")
    assert (entry.kind, entry.accepts, entry.default) == ("integer (paths)", "2 to 7", "unset")


def test_every_rsync_option_of_the_allowlist_is_in_the_page() -> None:
    text = section("RSYNC OPTIONS")
    for spelling in [*rsyncopts.LONG, *(f"-{letter}" for letter in rsyncopts.SHORT)]:
        assert f"**{spelling}" in text, spelling


def test_exit_statuses_are_the_codes() -> None:
    text = section("EXIT STATUS")
    daemon = set(map(int, re.findall(r"^(\d+)\n    ", text, re.M)))
    assert daemon == {cli.EXIT_OK, cli.EXIT_RUNTIME, cli.EXIT_USAGE, cli.EXIT_NOT_YET} \
        == {0, 1, 2, 75}
    one_line = " ".join(text.split())
    assert (f"**--verify**: {verify.EXIT_IDENTICAL} every node is identical to *wpath*; "
            f"{verify.EXIT_DIFFERS} some node differs; {verify.EXIT_ERROR} an error") in one_line
    assert (f"**--verify --nagios**: {verify.NAGIOS_OK} OK (every node identical); "
            f"{verify.NAGIOS_CRITICAL} CRITICAL (some node differs); {verify.NAGIOS_UNKNOWN} "
            "UNKNOWN") in one_line


def test_signals_are_those_the_daemon_handles() -> None:
    text = section("SIGNALS")
    documented = set()
    for names in re.findall(r"^([A-Z0-9]+(?:, [A-Z0-9]+)*)\n    ", text, re.M):
        documented |= set(names.split(", "))
    handled = {s.name[3:] for s in signals.CAUGHT} - {"CHLD"}  # CHLD: the loop's own
    assert documented == handled == {"HUP", "USR1", "TERM", "INT"}
    assert f"get {scheduler.GRACE:.0f} seconds to finish" in " ".join(text.split())


def test_files_are_those_the_code_uses() -> None:
    text = " ".join(section("FILES").split())
    for path in (config.DEFAULT_PATH, pidfile.DEFAULT_PATH, treelock.ROOT_DIR,
                 config.Config.state_dir, "/run/inosync.replay", "~/.inosync-replay",
                 f"~/{treelock.USER_DIR}", keptstore.FSTAB, "inosync-ssh-",
                 "/proc/sys/fs/inotify/max_user_watches"):
        assert path in text, path
    assert f"*{keptstore.PREFIX}*\\ \\*\\ *{keptstore.SUFFIX}*" in text
    assert f"\\*\\ *{unverified.SUFFIX}*" in text
    for unit in sorted((ROOT / "contrib").iterdir()):
        assert f"*contrib/{unit.name}*" in text, unit.name


def test_environment_names_what_rsync_is_not_given() -> None:
    text = section("ENVIRONMENT")
    for name in rsync.OPTION_VARIABLES:
        assert name in text, name


def test_the_example_configuration_loads(tmp_path: Path) -> None:
    text = section("EXAMPLES")
    example = text.split("::\n\n", 1)[1].split("\n\n", 1)[0]
    source = textwrap.dedent(example)
    assert 'wpath = "/srv/www"' in source and "rnodes = [" in source
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "index.html").write_text("hello\n")
    (tmp_path / "backup").mkdir()
    conf = tmp_path / "inosync.conf"
    conf.write_text(source.replace('"/srv/www"', f'"{tmp_path}/www"')
                    .replace('"/backup/www"', f'"{tmp_path}/backup/www"')
                    .replace('"/var/log/inosync.log"', f'"{tmp_path}/inosync.log"')
                    + f'\nstate_dir = "{tmp_path}/state"\n')
    loaded = config.load(str(conf))
    assert loaded.rnodes[:2] == ("www1.example.com:/srv/www", "www2.example.com:/srv/www")
    assert loaded.excludes.patterns == ("/cache/",)
    for command in ("--check", "--verify", "-p -v", "-d"):
        assert f"inosync -c /etc/inosync.conf {command}\n" in text, command
