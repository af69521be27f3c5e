"""Build the man page doc/inosync.8 from its source doc/inosync.8.rst.

    python doc/build_man.py          (needs docutils: pip install -e '.[test]')

The same as `rst2man doc/inosync.8.rst doc/inosync.8`, with settings fixed
so that a rebuild gives the committed file byte for byte: the date comes
from the source's :Date: field, never from the clock.
tests/test_manpage.py checks that the committed page is up to date.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "inosync.8.rst"
PAGE = HERE / "inosync.8"


def render(source: Path = SOURCE) -> str:
    """The man page (roff) for the reStructuredText in `source`."""
    from docutils.core import publish_string
    from docutils.writers import manpage

    out = publish_string(
        source.read_text(encoding="utf-8"),
        source_path=str(source),
        writer=manpage.Writer(),
        settings_overrides={
            "output_encoding": "utf-8",
            "report_level": 2,  # warnings are shown ...
            "halt_level": 2,  # ... and stop the build: no half-broken page
            "_disable_config": True,  # no ~/.docutils.conf changing the output
        },
    )
    return out.decode("utf-8") if isinstance(out, bytes) else out


def main() -> int:
    PAGE.write_text(render(), encoding="utf-8")
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
