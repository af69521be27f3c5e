"""Log lines on a terminal, with one line of progress kept under them.

In the foreground on a terminal, long work (watching a big tree, a full
sync) shows a live line rewritten in place every second; log lines still
scroll above it as usual. Anywhere else (a file, a pipe, the journal, -d)
this is not used: progress goes to the log every progress_interval instead.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

from .escape import printable

CLEAR = "\r\x1b[K"  # back to the start of the line, erase it


class LiveLine(logging.StreamHandler):
    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self.text = ""

    def show(self, text: str) -> None:
        """Put text on the live line ("" removes it)."""
        try:  # the width of the terminal we write to (stdout may go elsewhere)
            width = os.get_terminal_size(self.stream.fileno()).columns - 1
        except (OSError, ValueError):
            width = 79
        if width < 20:  # 0 columns: a terminal that does not say (a fresh pty, a serial line)
            width = 79
        # A wrapped line cannot be erased with one CLEAR: keep it on one row
        # (escaped: a name's newline or terminal codes would break that).
        text = printable(text)
        text = text if len(text) <= width else text[:max(0, width - 3)] + "..."
        self.acquire()
        try:
            self.stream.write(CLEAR + text)
            self.stream.flush()
            self.text = text
        except (OSError, ValueError):
            self._gone()
        finally:
            self.release()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if self.text:
                self.stream.write(CLEAR)
            super().emit(record)
            if self.text:
                self.stream.write(self.text)
                self.stream.flush()
        except (OSError, ValueError):
            self._gone()

    def handleError(self, record: logging.LogRecord) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            self._gone()
        else:
            super().handleError(record)

    def _gone(self) -> None:
        """The terminal went away (EIO once an ssh session or tmux is gone): the
        daemon goes on, and what it would write there goes to /dev/null. Else
        every write raised into the loop (the daemon died mid-sync), and the
        flush at exit would fail too (exit status 120)."""
        self.text = ""
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, self.stream.fileno())
            finally:
                os.close(devnull)
        except (OSError, ValueError):
            pass
