"""Reading rsync's --info=progress2 output (pure), and a real rsync's output read back."""

from __future__ import annotations

import subprocess

import pytest

from inosync.progress import Progress, human_bytes, parse

# As rsync 3.5 writes it: records separated by carriage returns, the last one
# ending with a newline once the run is over.
REAL = (b"\r          32,768   0%    0.00kB/s    0:00:00  "
        b"\r         200,000   0%  159.48MB/s    0:00:00 (xfr#1, to-chk=299/301)"
        b"\r      59,800,000  99%   29.61MB/s    0:00:01 (xfr#299, ir-chk=1/301)"
        b"\r      60,000,000 100%   29.69MB/s    0:00:01 (xfr#300, to-chk=0/301)\n")


def test_the_last_whole_record_wins():
    assert parse(REAL) == Progress(sent=60_000_000, percent=100, rate="29.69MB/s", files=300,
                                   left=0, total=301, scanning=False)


def test_a_record_cut_at_the_end_is_skipped():
    cut = REAL[:-30]  # rsync is writing the last record as we read
    p = parse(cut)
    assert p is not None and (p.sent, p.files, p.scanning) == (59_800_000, 299, True)


def test_a_record_before_the_first_file_has_no_counts():
    p = parse(b"\r          32,768   0%    0.00kB/s    0:00:00  \r   ")
    assert p is not None and (p.sent, p.files, p.left, p.total) == (32_768, 0, None, None)
    assert p.describe() == "0% (32.8 kB sent, 0 files, 0.00kB/s)"


def test_other_output_is_ignored():
    assert parse(b"") is None
    assert parse(b"sending incremental file list\nsome/file\n") is None
    assert parse(b"garbage\rmore garbage") is None


def test_describe_says_when_rsync_is_still_scanning():
    p = parse(b"\r   1,200,000   2%  371.05MB/s    0:00:00 (xfr#6, ir-chk=1023/2345)\r")
    assert p is not None
    assert p.describe() == ("still scanning the tree (1.2 MB sent, 6 files, 2,345 found so "
                            "far, 371.05MB/s)")
    done = parse(REAL)
    assert done is not None
    assert done.describe() == ("100% (60.0 MB sent, 300 files, 0 of 301 left to check, "
                               "29.69MB/s)")


def test_human_bytes():
    assert [human_bytes(n) for n in (0, 999, 1000, 3_200_000_000, 5e15)] == [
        "0 B", "999 B", "1.0 kB", "3.2 GB", "5000.0 TB"]


@pytest.mark.parametrize("human", [[], ["-h"], ["-hh"]])
def test_real_rsync_output_parses_with_human_readable_numbers(tmp_path, human):
    src = tmp_path / "src"
    src.mkdir()
    (src / "big").write_bytes(b"x" * 3_000_000)
    out = subprocess.run(["rsync", "-a", *human, "--info=progress2", f"{src}/",
                          f"{tmp_path / 'dst'}/"], capture_output=True, check=True).stdout
    p = parse(out)
    assert p is not None and (p.percent, p.files, p.left) == (100, 1, 0)
    assert 2_800_000 <= p.sent <= 3_000_000  # -hh counts in 1024s (2.86M), read as 1000s


def test_real_rsync_output_parses(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(20):
        (src / f"f{i}").write_bytes(b"x" * 10_000)
    out = subprocess.run(["rsync", "-a", "--info=progress2", f"{src}/", f"{tmp_path / 'dst'}/"],
                         capture_output=True, check=True).stdout
    p = parse(out)
    assert p is not None and (p.sent, p.percent, p.files, p.left) == (200_000, 100, 20, 0)
