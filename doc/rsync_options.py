"""Print README's table of the rsync options rsync_args may hold.

    python doc/rsync_options.py

The table is made from inosync.rsyncopts.TABLE, the list inosync itself
checks rsync_args against; tests/test_readme.py checks that README.rst holds
this very text, so the documented list can never drift from the real one.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inosync.rsyncopts import OFF, TABLE, Allowed  # noqa: E402


def spellings(option: Allowed) -> str:
    """Every spelling of one option, as rsync_args may write it."""
    value = "=V" if option.value else ""
    words = [f"``-{option.short}``"] if option.short else []
    words += [f"``{name}{value}``" for name in option.long]
    words += [f"``{name}``" for name in option.no]
    return ", ".join(words)


def table() -> str:
    """The rst table, one row per option of TABLE, in TABLE's order."""
    lines = [".. list-table::", "   :header-rows: 1", "   :widths: 35 65", "",
             "   * - Option (every spelling)", "     - Why it is safe; what inosync does with it"]
    for option in TABLE:
        why = option.why + (" *Replay off.*" if OFF in (option.replay, option.no_replay) else "")
        lines += [f"   * - {spellings(option)}", f"     - {why[0].upper()}{why[1:]}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(table())
