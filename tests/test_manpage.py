"""The man page doc/inosync.8: committed, built from doc/inosync.8.rst, true to the code.

Unit tests: docutils renders the page in this process, no other program runs.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path
from types import ModuleType

import pytest

from inosync import __version__
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
