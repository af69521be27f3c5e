"""Renames and small changes over an emulated slow link, with and without move replay.

A network-namespace host with its own sshd (tests/hosts.py) behind a veth
limited to 20 Mbit/s each way (tc tbf) and 25 ms of delay each way on the
ssh path (tests/delayproxy.py as ProxyCommand: this kernel has no netem),
so 50 ms of round trip. One ssh node, ``edelay = 1``. For each of
``replay_moves = True`` and ``False``, it measures the initial sync, then:
renaming a directory of 40 files of 1 MB, renaming one 30 MB file, and
changing one small file. Each figure is the time from the change until
the node equals the source (polled with ``rsync -anc``, which adds up to
about 0.1 s) and the bytes on the veth (both directions) meanwhile.

Not yet here: lsyncd (default.rsync and default.rsyncssh) on the same
link, side by side. Needs root, iproute2, sshd.

    python bench/slowlink.py
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # a script: the test hosts live there
from helpers import inosync_argv, tree_diff, write_config  # noqa: E402
from hosts import TestHost  # noqa: E402


def wire_bytes(dev: str) -> int:
    stats = Path(f"/sys/class/net/{dev}/statistics")
    return int((stats / "tx_bytes").read_text()) + int((stats / "rx_bytes").read_text())


def until_equal(src: Path, node: Path, since: float, limit: float = 300) -> float:
    while tree_diff(src, node):
        if time.monotonic() - since > limit:
            raise SystemExit(f"no convergence within {limit} s")
        time.sleep(0.05)
    return time.monotonic() - since


def make_tree(src: Path) -> None:
    (src / "album").mkdir(parents=True)
    for i in range(40):
        (src / "album" / f"t{i}.bin").write_bytes(os.urandom(1 << 20))
    (src / "big.bin").write_bytes(os.urandom(30 << 20))
    (src / "small.txt").write_text("x")


def run(host: TestHost, work: Path, src: Path, replay: bool) -> dict[str, tuple[float, float]]:
    node = work / "node"
    shutil.rmtree(node, ignore_errors=True)
    node.mkdir()
    assert host.sshd is not None
    conf = write_config(work / "inosync.conf", wpath=str(src), rnodes=[host.dest(node)],
                        ssh=host.slow_ssh(host.sshd.ssh_command(), 25), edelay=1,
                        replay_moves=replay)
    figures: dict[str, tuple[float, float]] = {}
    with open(work / f"inosync-replay-{replay}.log", "wb") as log:
        started, b0 = time.monotonic(), wire_bytes(host.veth)
        daemon = subprocess.Popen([*inosync_argv(), "-c", str(conf)], stdout=log,
                                  stderr=subprocess.STDOUT)
        try:
            figures["initial sync"] = (until_equal(src, node, started),
                                       (wire_bytes(host.veth) - b0) / 1e6)
            changes: dict[str, Callable[[], object]] = {
                "rename a directory of 40 x 1 MB": lambda: (src / "album").rename(
                    src / "album2"),
                "rename one 30 MB file": lambda: (src / "big.bin").rename(src / "big2.bin"),
                "change one small file": lambda: (src / "small.txt").write_text("changed"),
            }
            for name, change in changes.items():
                time.sleep(2)
                b0, since = wire_bytes(host.veth), time.monotonic()
                change()
                figures[name] = (until_equal(src, node, since),
                                 (wire_bytes(host.veth) - b0) / 1e6)
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(30)
    (src / "album2").rename(src / "album")
    (src / "big2.bin").rename(src / "big.bin")
    (src / "small.txt").write_text("x")
    return figures


def main() -> int:
    if os.geteuid() != 0:
        print("needs root (network namespaces, tc)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="inosync-slowlink-"))
    host = TestHost(9, work / "host")
    try:
        host.create()
        host.shape(20)
        src = work / "src"
        make_tree(src)
        rows = {replay: run(host, work, src, replay) for replay in (True, False)}
    finally:
        host.destroy()
        shutil.rmtree(work, ignore_errors=True)
    print("20 Mbit/s, 50 ms round trip, edelay 1 s; seconds until equal / MB on the wire")
    print(f"{'':34}{'replay on':>18}{'replay off':>18}")
    for name in rows[True]:
        cells = [f"{rows[r][name][0]:7.2f} s {rows[r][name][1]:7.3f} MB" for r in (True, False)]
        print(f"{name:34}{cells[0]:>18}{cells[1]:>18}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
