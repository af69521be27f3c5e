"""Build the man page doc/inosync.8 from its source doc/inosync.8.rst.

    python doc/build_man.py          (needs docutils: pip install -e '.[test]')

The same as `rst2man doc/inosync.8.rst doc/inosync.8`, with settings fixed
so that a rebuild gives the committed file byte for byte: the date comes
from the source's :Date: field, never from the clock. First it makes the
source's list of settings and of rsync options anew from the code
(doc/man_settings.py) and writes the source back if they changed.
The NAME heading is written as man-pages(7) has it (rst2man writes "Name").
tests/test_manpage.py checks that the committed page is up to date.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "inosync.8.rst"
PAGE = HERE / "inosync.8"
sys.path.insert(0, str(HERE))

import man_settings  # noqa: E402  (doc/ is no package)


def source_text(source: Path = SOURCE) -> str:
    """The rst of the page, its generated lists made anew from the code."""
    return man_settings.splice(source.read_text(encoding="utf-8"))


def render(source: Path = SOURCE) -> str:
    """The man page (roff) for the reStructuredText in `source`."""
    from docutils.core import publish_string
    from docutils.writers import manpage

    class Translator(manpage.Translator):  # type: ignore[misc]  # docutils is untyped
        def header(self) -> str:
            # man-pages(7), lexgrog and whatis know the section as NAME.
            text: str = super().header()
            fixed = text.replace("\n.SH Name\n", "\n.SH NAME\n", 1)
            if fixed == text:
                raise RuntimeError("docutils no longer writes '.SH Name': check build_man.py")
            return fixed

    writer = manpage.Writer()
    writer.translator_class = Translator
    out = publish_string(
        source_text(source),
        source_path=str(source),
        writer=writer,
        settings_overrides={
            "output_encoding": "utf-8",
            "report_level": 2,  # warnings are shown ...
            "halt_level": 2,  # ... and stop the build: no half-broken page
            "_disable_config": True,  # no ~/.docutils.conf changing the output
        },
    )
    return out.decode("utf-8") if isinstance(out, bytes) else out


def main() -> int:
    try:
        text, page = source_text(), render()  # a page that does not build changes no file
    except ValueError as e:  # a setting without words: one line, not a traceback
        print(f"build_man: {e}", file=sys.stderr)
        return 2
    if text != SOURCE.read_text(encoding="utf-8"):
        SOURCE.write_text(text, encoding="utf-8")
        print(f"wrote {SOURCE} (its lists made from the code)")
    PAGE.write_text(page, encoding="utf-8")
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
