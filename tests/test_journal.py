"""journal.py: is stderr the journal ($JOURNAL_STREAM = its dev:ino), and the
"<N>" priority prefix sd-daemon(3) asks for."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from inosync.journal import JournalFormatter, is_journal, priority


def stream_id(path: Path) -> str:
    st = os.stat(path)
    return f"{st.st_dev}:{st.st_ino}"


def test_is_journal_compares_device_and_inode(tmp_path: Path) -> None:
    mine, other = tmp_path / "stderr", tmp_path / "other"
    mine.write_text("")
    other.write_text("")
    with open(mine, "w") as stream:
        assert is_journal(stream, {"JOURNAL_STREAM": stream_id(mine)})
        assert not is_journal(stream, {"JOURNAL_STREAM": stream_id(other)})
        assert not is_journal(stream, {})
        assert not is_journal(stream, {"JOURNAL_STREAM": ""})
        assert not is_journal(stream, {"JOURNAL_STREAM": "garbage"})
        assert not is_journal(stream, {"JOURNAL_STREAM": "1:x"})
    assert not is_journal(stream, {"JOURNAL_STREAM": stream_id(mine)})  # closed


def test_priorities() -> None:
    assert [priority(level) for level in (logging.CRITICAL, logging.ERROR, logging.WARNING,
                                          logging.INFO, logging.DEBUG)] == [2, 3, 4, 6, 7]


def record(level: int, message: str) -> logging.LogRecord:
    return logging.LogRecord("inosync", level, __file__, 1, message, None, None)


def test_formatter_prefixes_every_line_and_drops_the_time() -> None:
    f = JournalFormatter()
    assert f.format(record(logging.ERROR, "node1: rsync failed")) == \
        "<3>ERROR node1: rsync failed"
    assert f.format(record(logging.WARNING, "w")) == "<4>WARNING w"
    assert f.format(record(logging.INFO, "i")) == "<6>INFO i"
    assert f.format(record(logging.DEBUG, "d")) == "<7>DEBUG d"
    # A message is one line, whatever names it holds (issue 16, rule 3) ...
    assert f.format(record(logging.ERROR, "two\nlines")) == "<3>ERROR two\\nlines"
    # ... and every line of a traceback still gets the prefix.
    try:
        raise ValueError("boom")
    except ValueError:
        r = logging.LogRecord("inosync", logging.ERROR, __file__, 1, "failed", None,
                              sys.exc_info())
    lines = f.format(r).split("\n")
    assert len(lines) > 2 and all(line.startswith("<3>") for line in lines)
    assert lines[0] == "<3>ERROR failed" and lines[-1] == "<3>ValueError: boom"
