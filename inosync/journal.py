"""Log lines for the systemd journal: "<3>" in front says "error".

When a service's stderr is connected to the journal, systemd sets
$JOURNAL_STREAM to "<device>:<inode>" of that stream (systemd.exec(5)). A
line that starts with "<N>" is then stored with syslog priority N
(sd-daemon(3)), so `journalctl -p err` finds our errors; the journal stamps
each line itself, so our timestamp is left out.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TextIO

from .escape import EscapingFormatter

# syslog priorities (sd-daemon.h: SD_ERR and friends)
CRIT, ERR, WARNING, INFO, DEBUG = 2, 3, 4, 6, 7


def is_journal(stream: TextIO, environ: Mapping[str, str] = os.environ) -> bool:
    """Whether stream is the journal stream $JOURNAL_STREAM names.

    Compared by device and inode: a child whose stderr was redirected
    elsewhere inherits the variable, but not the stream.
    """
    dev, sep, ino = environ.get("JOURNAL_STREAM", "").partition(":")
    if not sep:
        return False
    try:
        st = os.fstat(stream.fileno())
        return (st.st_dev, st.st_ino) == (int(dev), int(ino))
    except (OSError, ValueError, AttributeError):  # closed, not a real file, garbage
        return False


def priority(levelno: int) -> int:
    if levelno >= logging.CRITICAL:
        return CRIT
    if levelno >= logging.ERROR:
        return ERR
    if levelno >= logging.WARNING:
        return WARNING
    if levelno >= logging.INFO:
        return INFO
    return DEBUG


class JournalFormatter(EscapingFormatter):
    """ "<3>ERROR message": no time (the journal adds it); every line of a
    multi-line message (a traceback: the message itself is escaped to one
    line) gets the prefix, as the journal stores each line apart."""

    def __init__(self) -> None:
        super().__init__("%(levelname)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).split("\n"))
