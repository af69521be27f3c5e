"""What inosync says (log lines, STATUS=, the live line) stays one line per event.

A path comes from whoever named it: a directory called "\\nid > pwned #"
would start a log line of its own, and "\\x1b[" would drive the terminal of
whoever reads the log. So every message is escaped at the edge, in the
formatter every log handler uses, whatever the message holds.

The escaping keeps what str.isprintable() allows (letters of any script,
punctuation, space) and spells everything else like C and ``ls -b``:
``\\n``, ``\\r``, ``\\t``, ``\\\\`` for a backslash (so the escaping can be read
back without doubt), ``\\xNN`` for other ASCII controls and DEL, ``\\xNN`` too
for a byte that is not UTF-8 (its surrogate escape, as os.fsdecode makes
it), and ``\\uNNNN`` for other unprintable characters (C1 controls, line
separators, bidi overrides, zero-width characters).
"""

from __future__ import annotations

import logging

_NAMED = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(c: str) -> str:
    if c in _NAMED:
        return _NAMED[c]
    if c.isprintable():
        return c
    code = ord(c)
    if 0xDC80 <= code <= 0xDCFF:  # a byte os.fsdecode could not decode
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x80:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def printable(text: str) -> str:
    """text with every character that could split or hide a line escaped."""
    if text.isprintable() and "\\" not in text:
        return text  # the common case, at the cost of one scan
    return "".join(_escape(c) for c in text)


class EscapingFormatter(logging.Formatter):
    """A Formatter whose message part is escaped with printable().

    Only the message: the prefix is ours, and a traceback (exc_info) stays as
    Python wrote it, several lines on purpose.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        message = record.message
        record.message = printable(message)
        try:
            return super().formatMessage(record)
        finally:
            record.message = message
