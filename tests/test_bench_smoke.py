"""Smoke tests of the benchmarks: `python bench/bench.py --quick` runs and reports
numbers (needs root and a tmpfs mount: the benchmark mounts its own), and
bench/restart.py on a tiny tree and bench/tiers.py on a tiny farm (need root
and network namespaces); skipped otherwise.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from helpers import wait_until
from hosts import can_make_namespaces

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


RESTART = ROOT / "bench" / "restart.py"


@pytest.mark.slow
def test_restart_benchmark_on_a_tiny_tree(tmp_path: Path) -> None:
    """bench/restart.py end to end on 250 directories: every mode runs, does what
    it says (checkpoint: no full sync; --full: one per node), ends with every node
    equal to the source (rsync -anc), and the report has its numbers."""
    why = can_make_namespaces()
    if why:
        pytest.skip(why)
    out = tmp_path / "restart.json"
    done = subprocess.run([sys.executable, str(RESTART), "--dirs", "250", "--files", "1000",
                           "--changes", "20", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout + done.stderr
    data = json.loads(out.read_text())
    figures = data["figures"]
    assert data["tree"] == {"directories": 253, "leaf_directories": 250, "files": 1000}
    assert sum(data["changes"].values()) == 20 and data["changes"]["renamed"] == 1
    expected = {"checkpoint": "3 from checkpoint, 0 full syncs",
                "full": "0 from checkpoint, 3 full syncs"}
    if shutil.which("lsyncd"):
        expected["lsyncd"] = "3 start-up rsyncs"
    assert {m: f["how"] for m, f in figures.items()} == expected, done.stdout
    for mode, figure in figures.items():
        assert figure["equal"] and figure["left"] == [], (mode, figure)
        assert 0 < figure["seconds"] < 60 and figure["megabytes"] > 0, (mode, figure)
    assert data["ratios"]["time checkpoint/full"] > 0
    hup = data["hup_adds_node"]
    assert hup["equal"] and "reloaded" in hup["how"] and hup["seconds"] > 0, hup
    assert "restart until in sync (s)" in done.stdout and "targets:" in done.stdout


FANOUT = ROOT / "bench" / "fanout.py"


@pytest.mark.slow
def test_fanout_benchmark_on_a_few_nodes(tmp_path: Path) -> None:
    """bench/fanout.py on 6 local nodes and 3 ssh hosts with max_parallel = 2:
    every case converges (rsync -anc), inosync never ran more than 2 rsyncs at
    once, and the report has its numbers."""
    why = can_make_namespaces()
    if why:
        pytest.skip(why)
    if not can_mount_tmpfs():
        pytest.skip("cannot mount a tmpfs here")
    out = tmp_path / "fanout.json"
    done = subprocess.run([sys.executable, str(FANOUT), "--local", "6", "--ssh", "3",
                           "--files", "50", "--burst", "100", "--max-parallel", "2",
                           "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout + done.stderr
    figures = {(f["case"], f["tool"]): f for f in json.loads(out.read_text())}
    expected = {("local", "inosync"), ("local", "inosync-unlimited"), ("ssh", "inosync")}
    if shutil.which("lsyncd"):
        expected.add(("local", "lsyncd"))
    assert set(figures) == expected
    for key, f in figures.items():
        assert f["equal"] and f["left"] == [], (key, f)
        assert 0 < f["initial_s"] < 60 and 0 < f["burst_s"] < 60, (key, f)
        assert f["cpu_s"] > 0 and f["daemon_peak_rss_mb"] > 0, (key, f)
    assert 0 < figures["local", "inosync"]["peak_rsyncs"] <= 2
    assert 0 < figures["ssh", "inosync"]["peak_rsyncs"] <= 2
    assert "| local (6 nodes) | inosync | 2 |" in done.stdout


TIERS = ROOT / "bench" / "tiers.py"
TINY = ["--relays", "2", "--fanout", "2", "--files", "40", "--megabytes", "1",
        "--changes", "5", "--edelay", "0.2", "--limit", "20"]


def left_behind(made: dict[str, object]) -> list[str]:
    """What of a tiers.py run is still there: namespaces, links, its tmpfs, its
    processes (sshd, inosync, rsync: their command lines name its directory)."""
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    names = {line.split()[0] for line in netns.splitlines() if line.strip()}
    devs = {line.split(":")[1].strip().split("@")[0] for line in links.splitlines()}
    left = [n for n in made["namespaces"] if n in names]  # type: ignore[attr-defined]
    left += [d for d in [*made["veths"], made["bridge"]] if d in devs]  # type: ignore[misc]
    left += [line for line in Path("/proc/mounts").read_text().splitlines()
             if str(made["work"]) in line]  # its tmpfs
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(made["work"]).encode() in cmdline.read_bytes():
                left.append(f"process {cmdline.parent.name}")
        except OSError:
            pass  # it ended meanwhile
    return left


@pytest.mark.slow
def test_tiers_benchmark_on_a_tiny_farm(tmp_path: Path) -> None:
    """bench/tiers.py end to end on 7 machines (1 -> 2 relays -> 4 edges against
    1 -> 6 edges) and a 1 MB burst: every phase ends with every machine equal
    to the source (the probe, then rsync -anc), relays before their edges, the
    source sends less in T than in D, and no namespace, veth, bridge or
    daemon is left."""
    why = can_make_namespaces()
    if why:
        pytest.skip(why)
    out = tmp_path / "tiers.json"
    done = subprocess.run([sys.executable, str(TIERS), *TINY, "--json", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=40, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout + done.stderr
    data = json.loads(out.read_text())
    assert left_behind(data["made"]) == []
    for layout in ("T", "D"):
        for phase in data["results"][layout]["phases"]:
            assert phase["left"] == [] and None not in phase["seconds"].values(), phase
    assert [r["phase"] for r in data["rows"]] == ["burst: 1 MB in 40 files",
                                                  "rename a directory", "5 small changes"]
    for row in data["rows"]:
        assert 0 < row["T relays s"] < row["T edges s"] and row["D edges s"] > 0, row
    burst = data["rows"][0]
    # 1 MB to 2 relays against 6 edges; the relays send it on to 4 edges
    assert 2.0 < burst["T source MB"] < 2.6 and 6.0 < burst["D source MB"] < 7.5, burst
    assert 4.0 < burst["T relays sent MB"] < 5.0, burst
    assert 0.3 < data["targets"]["source bytes T/D"] < 0.4
    assert "target source bytes T <= 0.3 x D" in done.stdout


@pytest.mark.slow
def test_tiers_benchmark_cleans_up_when_stopped(tmp_path: Path) -> None:
    """SIGTERM while the daemons run: tiers.py takes every namespace, veth,
    bridge, sshd and daemon down and says it was stopped, not a traceback."""
    why = can_make_namespaces()
    if why:
        pytest.skip(why)
    proc = subprocess.Popen([sys.executable, str(TIERS), *TINY, "--layouts", "T",
                             "--json", str(tmp_path / "t.json")], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
        assert first.startswith("machines up: "), first
        made = json.loads(first.split(": ", 1)[1])
        run = Path(made["work"]) / "run-T" / "source" / "inosync.log"
        wait_until(lambda: run.exists() and "synced" in run.read_text(), 20, "the daemons")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "stopped by signal" in err and "Traceback" not in err, err
    assert left_behind(made) == []
    assert not Path(made["work"]).exists()
