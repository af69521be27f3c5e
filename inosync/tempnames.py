"""The names rsync's receiver gives the files it is writing: ``.NAME.XXXXXX``.

On a relay (a node of another inosync that runs its own inosync on that copy,
see README "Relay tiers") the upstream's rsync writes each file to a
temporary name in the file's directory, then renames it to NAME. Shipping
those temporary files downstream, or replaying their renames there, is work
for nothing. This module says which names have that shape; the watcher and the
scheduler decide what to do with them (watch.py, temphold.py).

rsync's receiver.c ``get_tmpname`` (3.2 and later, without ``--temp-dir``)
builds the name from the final one, in bytes:

* a ``.``, then the name without its own leading dot (one, if any);
* cut to fit: at most ``min(MAXPATHLEN - len(dir/) - 1 - 7, NAME_MAX - 1 - 7) - 1``
  bytes (246 in any directory less than about 3,800 bytes deep); if the cut
  split a byte with the high bit set, every such byte before the cut goes
  too (a multibyte character is never left half); then one trailing ``.``
  goes (so that no ``..`` comes before the suffix) - and if nothing was
  left, the leading dot goes with it;
* the suffix: ``.XXXXXX`` made unique by mkstemp (letters and digits), or,
  for a symlink, device or hard link that replaces an existing entry,
  ``.`` and a counter of up to six digits.

rsync 3.0 and 3.1 kept the name's leading dot and trimmed nothing: both forms
are accepted. Taking a rename for "a temporary file landing" is always safe,
whatever the names: the rename is then handled as what it also is, a deletion
of the old name and a change of the new one (only not replayed).
"""

from __future__ import annotations

import os
import re

MAXPATHLEN = 4096
NAME_MAX = 255
_SUFFIX_LEN = 7  # ".XXXXXX"

# A name that may be a file rsync is still writing: a dot, at least one byte, a
# dot and mkstemp's six letters or digits. (The counter form is for entries made
# and renamed at once: never worth holding back.)
_WRITING = re.compile(rb"\..+\.[A-Za-z0-9]{6}", re.DOTALL)
_MKSTEMP = re.compile(rb"\.[A-Za-z0-9]{6}")
_COUNTER = re.compile(rb"\.[0-9]{1,6}")


def looks_temporary(name: str) -> bool:
    """True if name (one path component) has the shape of a file rsync's receiver
    is writing, for some final name: ``.NAME.XXXXXX``. A user's file may look so
    too (``.notes.draft1``): callers only delay such a name, never drop it."""
    return name[:1] == "." and _WRITING.fullmatch(os.fsencode(name)) is not None


def _max_name(dir_len: int) -> int:
    """get_tmpname's maxname (a buffer size: room for the '\\0') for a file whose
    directory part ("a/b/") is dir_len bytes long, relative to the receiver's root."""
    return min(MAXPATHLEN - (dir_len + 1) - _SUFFIX_LEN, NAME_MAX - 1 - _SUFFIX_LEN)


def stem(final: bytes, max_name: int) -> bytes | None:
    """What get_tmpname puts before the suffix for the final name; None if rsync
    cannot make a temporary name there (its "temporary filename too long")."""
    if max_name < 0:
        return None
    f = final[1:] if final[:1] == b"." else final
    if max_name == 0:
        return b""  # the suffix's dot takes the place of the leading one
    added = min(len(f), max_name - 1)
    piece = f[:added]
    if added < len(f) and f[added] & 0x80:
        piece = piece.rstrip(bytes(range(0x80, 0x100)))
    if not piece:
        return b""  # "trim one trailing dot" takes the leading one
    return b"." + (piece[:-1] if piece.endswith(b".") else piece)


def _legacy_stem(final: bytes, max_name: int) -> bytes | None:
    """The same for rsync 3.0 and 3.1: the name kept whole, only cut."""
    return None if max_name < 1 else b"." + final[:max_name - 1]


def _suffix_ok(suffix: bytes) -> bool:
    return _MKSTEMP.fullmatch(suffix) is not None or _COUNTER.fullmatch(suffix) is not None


def temporary_for(tmp: str, final: str, dir_len: int = 0) -> bool:
    """True if tmp is a name rsync's receiver writes final under before renaming
    it into place, in a directory whose relative path (with its "/") is dir_len
    bytes long. Exact for a relay whose root is the upstream's destination (the
    cut depends on the path's length only past about 3,800 bytes)."""
    t, f = os.fsencode(tmp), os.fsencode(final)
    if t[:1] != b"." or t == f:
        return False
    most = _max_name(dir_len)
    stems = (stem(f, most), _legacy_stem(f, most))
    return any(t[:-n] in stems and _suffix_ok(t[-n:])
               for n in range(2, _SUFFIX_LEN + 1) if len(t) >= n)
