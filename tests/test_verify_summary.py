"""--verify's first line (issue 17.3): one summary in the Nagios plugin form,
``STATE: text | perfdata``, and --nagios's exit codes; the pure parts."""

from __future__ import annotations

import re

import pytest

from inosync.cli import one_shot_conflict, parse_args
from inosync.verify import Drift, Result, exit_code, nagios_code, perfdata, summary_line

SAME = Result("/srv/a", Drift())
DIFFERS = Result("/srv/b", Drift(4, 0, [(">f+++++++++", b"x")]))
ONE = Result("/srv/d", Drift(1, 0, [("*deleting", b"y")]))
BROKEN = Result("root@c:/srv/www", error="rsync exit 255 (ssh connection failed): ssh: refused",
                reason="rsync exit 255 (ssh connection failed)")

# The plugin guidelines' perfdata: 'label'=value[UOM];[warn];[crit];[min];[max],
# space separated; a range is [@][start:][end] (start may be ~).
_NUMBER = r"-?[0-9]+(?:\.[0-9]+)?"
_RANGE = rf"(?:@?(?:(?:~|{_NUMBER}):)?(?:{_NUMBER})?)"
PERF = re.compile(rf"(?:[^'= ;]+|'[^'=]+')={_NUMBER}(?:[a-zA-Z%]+)?"
                  rf"(?:;{_RANGE}(?:;{_RANGE}(?:;(?:{_NUMBER})?(?:;(?:{_NUMBER})?)?)?)?)?")


def split(line: str) -> tuple[str, dict[str, str]]:
    text, bar, perf = line.partition(" | ")
    assert bar and "|" not in text and "\n" not in line
    for item in perf.split(" "):
        assert PERF.fullmatch(item), item
    return text, {k: v.split(";")[0] for k, v in (i.split("=") for i in perf.split(" "))}


def test_ok():
    text, perf = split(summary_line([SAME, SAME, SAME]))
    assert text == "OK: 3 nodes identical"
    assert perf == {"nodes": "3", "identical": "3", "differ": "0", "unknown": "0",
                    "paths_differ": "0"}
    assert split(summary_line([SAME]))[0] == "OK: 1 node identical"
    assert nagios_code([SAME, SAME]) == exit_code([SAME, SAME]) == 0


def test_critical():
    text, perf = split(summary_line([SAME, DIFFERS, SAME]))
    assert text == "CRITICAL: 1 of 3 nodes differ (node /srv/b: 4 paths)"
    assert perf == {"nodes": "3", "identical": "2", "differ": "1", "unknown": "0",
                    "paths_differ": "4"}
    assert nagios_code([SAME, DIFFERS]) == 2
    assert exit_code([SAME, DIFFERS]) == 1  # without --nagios: as in 0.4
    assert split(summary_line([ONE]))[0] == "CRITICAL: 1 of 1 node differs (node /srv/d: 1 path)"


def test_unknown():
    text, perf = split(summary_line([SAME, BROKEN]))
    assert text == ("UNKNOWN: 1 of 2 nodes not checked "
                    "(node root@c:/srv/www: rsync exit 255 (ssh connection failed))")
    assert perf["unknown"] == "1" and perf["identical"] == "1" and perf["differ"] == "0"
    assert nagios_code([SAME, BROKEN]) == 3
    assert exit_code([SAME, BROKEN]) == 2


def test_mixed_a_known_difference_is_critical_though_a_node_was_not_checked():
    """The plugin guidelines rank CRITICAL above UNKNOWN; the plain exit code
    keeps 0.4's "an error wins" (2)."""
    results = [BROKEN, DIFFERS, ONE, SAME]
    text, perf = split(summary_line(results))
    assert text == ("CRITICAL: 2 of 4 nodes differ (node /srv/b: 4 paths, node /srv/d: 1 path); "
                    "1 not checked (node root@c:/srv/www: rsync exit 255 (ssh connection failed))")
    assert perf == {"nodes": "4", "identical": "1", "differ": "2", "unknown": "1",
                    "paths_differ": "5"}
    assert nagios_code(results) == 2
    assert exit_code(results) == 2


def test_perfdata_thresholds_and_ranges():
    assert perfdata([SAME, DIFFERS, BROKEN]) == (
        "nodes=3;;;0 identical=1;;;0;3 differ=1;;0;0;3 unknown=1;;;0;3 paths_differ=4;;0;0")


def test_many_nodes_named_up_to_three():
    results = [Result(f"/srv/n{i}", Drift(i, 0, [])) for i in range(1, 6)]
    text, _ = split(summary_line(results))
    assert text == ("CRITICAL: 5 of 5 nodes differ (node /srv/n1: 1 path, node /srv/n2: 2 paths, "
                    "node /srv/n3: 3 paths, ...)")


def test_a_bar_or_newline_cannot_end_the_status_text():
    odd = Result("/srv/a|b\nc", Drift(2, 0, []))
    line = summary_line([odd, Result("h:/x", error="x | y\nz")])
    text, _ = split(line)
    assert text == ("CRITICAL: 1 of 2 nodes differ (node /srv/a\\x7cb\\nc: 2 paths); "
                    "1 not checked (node h:/x: x \\x7c y\\nz)")


@pytest.mark.parametrize("argv", [["--nagios"], ["--check", "--nagios"], ["-p", "--nagios"]])
def test_nagios_goes_with_verify_only(argv):
    assert one_shot_conflict(parse_args(argv)) == "usage: --nagios goes with --verify only"
    assert one_shot_conflict(parse_args(["--verify", "--nagios", "--checksum"])) is None
