"""Smoke test of the benchmark: `python bench/bench.py --quick` runs and reports numbers.

Needs root and a tmpfs mount (the benchmark mounts its own); skipped otherwise.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # end to end: real processes

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench" / "bench.py"
TIMEOUT = 85.0  # the whole test must stay under 90 s
NUMBER = re.compile(r"^-?\d+(\.\d+)?\b")


def can_mount_tmpfs() -> bool:
    if sys.platform != "linux" or os.geteuid() != 0 or not shutil.which("mount"):
        return False
    probe = tempfile.mkdtemp(prefix="inosync-bench-probe-")
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "probe", probe],
                              capture_output=True, timeout=20)
        if done.returncode != 0:
            return False
        subprocess.run(["umount", probe], capture_output=True, timeout=20)
        return True
    except (OSError, subprocess.TimeoutExpired):
        return False
    finally:
        try:
            os.rmdir(probe)
        except OSError:
            pass


def table_rows(report: str) -> list[list[str]]:
    rows = []
    for line in report.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


@pytest.mark.slow
def test_quick_benchmark(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the benchmark needs root")
    if not can_mount_tmpfs():
        pytest.skip("cannot mount a tmpfs here")
    out = tmp_path / "bench.md"
    proc = subprocess.Popen([sys.executable, str(BENCH), "--quick", "--out", str(out)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    try:
        output, _ = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # lets it stop its daemons and unmount
        try:
            output, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
        pytest.fail(f"bench.py --quick took over {TIMEOUT:.0f} s:\n"
                    f"{output.decode(errors='replace')[-3000:]}")
    text = output.decode(errors="replace")
    assert proc.returncode == 0, text[-3000:]
    report = out.read_text()
    rows = table_rows(report)
    header = rows[0]
    col = {name: header.index(name) for name in ("scenario", "inosync", "floor")}
    for scenario in ("burst", "latency", "idle"):
        mine = [r for r in rows[1:] if r[col["scenario"]] == scenario]
        assert mine, f"no {scenario} row in:\n{report}"
        assert any(NUMBER.match(r[col["inosync"]]) and NUMBER.match(r[col["floor"]])
                   for r in mine), f"{scenario}: no numbers for inosync and floor in:\n{report}"
    assert not [line for line in report.splitlines() if line.startswith("- error:")], report
