"""README's list of rsync options is the list the code checks against."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from inosync import rsyncopts

ROOT = Path(__file__).resolve().parent.parent


def test_readme_holds_the_allowlist_table_as_doc_rsync_options_prints_it():
    table = subprocess.run([sys.executable, str(ROOT / "doc" / "rsync_options.py")],
                           capture_output=True, text=True, check=True).stdout
    readme = (ROOT / "README.rst").read_text(encoding="utf-8")
    assert table in readme, "README is out of date: python doc/rsync_options.py"


def test_every_spelling_of_the_list_is_in_readmes_table():
    readme = (ROOT / "README.rst").read_text(encoding="utf-8")
    section = readme[readme.index("rsync options\n-------------\n"):
                     readme.index("While running\n-------------\n")]
    for spelling in [*rsyncopts.LONG, *(f"-{letter}" for letter in rsyncopts.SHORT)]:
        assert f"``{spelling}" in section, spelling
