"""Rule 3 of issue 16: what a stranger names never changes what root says.

A path in a log line, STATUS= or the live line is escaped: one event, one
line, and no terminal codes. Real loggers and handlers, no mocks.
"""

from __future__ import annotations

import io
import logging
import os

import pytest

from inosync.cli import Logs
from inosync.escape import EscapingFormatter, printable
from inosync.liveline import LiveLine
from inosync.notify import one_line

EVIL = "\nid > pwned #\r\x1b[31m\t\\x"


@pytest.mark.parametrize(("raw", "shown"), [
    ("plain/path é 名", "plain/path é 名"),
    ("a\nb", "a\\nb"),
    ("a\rb\tc", "a\\rb\\tc"),
    ("\x1b[31m", "\\x1b[31m"),
    ("\x00\x7f", "\\x00\\x7f"),
    ("back\\slash", "back\\\\slash"),  # so "\\n" in a name never reads as a newline
    ("\u0085\u2028\u202e\u200b", "\\u0085\\u2028\\u202e\\u200b"),  # NEL, LS, RLO, ZWSP
    (os.fsdecode(b"caf\xe9"), "caf\\xe9"),  # a byte that is not UTF-8
])
def test_printable_escapes_everything_that_could_split_or_hide_a_line(raw, shown):
    assert printable(raw) == shown
    assert printable(raw).isprintable()


def test_formatter_escapes_the_message_not_the_traceback():
    f = EscapingFormatter("%(levelname)s %(message)s")
    rec = logging.LogRecord("inosync", logging.WARNING, __file__, 1, "cannot watch %s: %s",
                            (f"/srv{EVIL}", "File name too long"), None)
    line = f.format(rec)
    assert "\n" not in line and "\r" not in line and "\x1b" not in line
    assert line == ("WARNING cannot watch /srv\\nid > pwned #\\r\\x1b[31m\\t\\\\x: "
                    "File name too long")
    assert rec.getMessage().startswith("cannot watch /srv\n")  # the record is left alone


def test_every_handler_inosync_logs_through_escapes(tmp_path):
    """The foreground handler (stderr), the log file and syslog: each formats with
    an escaping formatter, so no message can start a line of its own."""
    from inosync.config import Config

    log = logging.getLogger("inosync")
    saved = log.level, log.propagate  # Logs sets both for the process
    logs = Logs(verbose=False)
    logs.foreground()
    handlers = [logs.handler]
    logs.background(Config(path="x", wpath="/srv", configured_wpath="/srv", rnodes=(),
                           logfile=str(tmp_path / "log")))
    handlers.append(logs.handler)
    logs.background(Config(path="x", wpath="/srv", configured_wpath="/srv", rnodes=()))
    handlers.append(logs.handler)
    try:
        for h in handlers:
            assert h is not None and isinstance(h.formatter, EscapingFormatter), h
        rec = logging.LogRecord("inosync", logging.ERROR, __file__, 1, "x%sy", (EVIL,), None)
        assert all("\n" not in h.format(rec) for h in handlers if h is not None)
    finally:
        assert logs.handler is not None
        log.removeHandler(logs.handler)
        logs.handler.close()
        log.setLevel(saved[0])
        log.propagate = saved[1]


def test_status_and_live_line_stay_one_line():
    status = one_line(f"1 node failing: www{EVIL}: exit 23")
    assert status.isprintable() and "\\x1b[31m" in status
    out = io.StringIO()
    live = LiveLine(out)
    live.show(f"watching /srv{EVIL}")
    shown = out.getvalue().removeprefix("\r\x1b[K")
    assert shown.isprintable() and "\\n" in shown
