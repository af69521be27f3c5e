"""Renames and small changes over an emulated slow link: inosync (move replay
on and off) beside lsyncd (default.rsync and default.rsyncssh), same run.

A network-namespace host with its own sshd (tests/hosts.py) behind a veth
limited to 20 Mbit/s each way (tc tbf) and 25 ms of delay each way on the
ssh path (tests/delayproxy.py as ProxyCommand: this kernel has no netem),
so 50 ms of round trip. One ssh node, a delay of 1 s (``edelay``, lsyncd's
``delay``). Every tool reaches the host through the same ssh settings (an
ssh_config file and a wrapper named ``ssh`` first on PATH, so lsyncd's
hard-coded ``--rsh=ssh`` takes it too); each keeps its own defaults beyond
that (inosync shares one ssh connection per node, lsyncd connects anew).

For each tool, on a fresh node: the initial sync of a 78 MB tree, then
renaming a directory of 40 files of 1 MB, renaming one 30 MB file, and
changing one small file. Each figure is the time from the change until the
node equals the source, and the bytes on the veth (both directions) in that
time. "Equal" is first seen by a cheap probe of the changed paths (polled
every 10 ms), then confirmed with ``rsync -anc --delete`` over the whole
tree (data, names, modes, times); if that still differs, polling goes on
with the full comparison, and a tool that never gets there within
``--limit`` seconds gets "not equal" and what was still different.

Needs root, iproute2, sshd; lsyncd if installed (``apt-get install lsyncd``).

    python bench/slowlink.py [--tools inosync,inosync-noreplay,lsyncd-rsync,lsyncd-rsyncssh]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # a script: the test hosts live there
from helpers import inosync_argv, private_tmp_root, tree_diff, write_config  # noqa: E402
from hosts import TestHost  # noqa: E402

DELAY = 1
ONE_WAY_MS = 25
MBIT = 20
TOOLS = ("inosync", "inosync-noreplay", "lsyncd-rsync", "lsyncd-rsyncssh")
LSYNCD = shutil.which("lsyncd")


def wire_bytes(dev: str) -> int:
    stats = Path(f"/sys/class/net/{dev}/statistics")
    return int((stats / "tx_bytes").read_text()) + int((stats / "rx_bytes").read_text())


@dataclass
class Figure:
    seconds: float | None  # None: never equal within the limit
    megabytes: float
    left: list[str]  # what still differed when it gave up

    def cell(self) -> str:
        if self.seconds is None:
            return f"not equal, {self.megabytes:.3f} MB"
        return f"{self.seconds:.2f} s, {self.megabytes:.3f} MB"


def until_equal(src: Path, node: Path, since: float, probe: Callable[[], bool],
                limit: float) -> tuple[float | None, list[str]]:
    """Seconds from since until node equals src; (None, differences) after limit."""
    while not probe():
        if time.monotonic() - since > limit:
            return None, ["(the changed paths never arrived)"]
        time.sleep(0.01)
    seen = time.monotonic() - since
    left = tree_diff(src, node)
    while left:
        if time.monotonic() - since > limit:
            return None, left
        time.sleep(0.05)
        left = tree_diff(src, node)
        seen = time.monotonic() - since
    return seen, []


def make_tree(src: Path) -> None:
    (src / "album").mkdir(parents=True)
    for i in range(40):
        (src / "album" / f"t{i}.bin").write_bytes(os.urandom(1 << 20))
    (src / "big.bin").write_bytes(os.urandom(30 << 20))
    (src / "small.txt").write_text("x")


def reset_tree(src: Path) -> None:
    (src / "album2").rename(src / "album")
    (src / "big2.bin").rename(src / "big.bin")
    (src / "small.txt").write_text("x")


def has(path: Path, size: int | None = None, content: bytes | None = None) -> bool:
    try:
        if content is not None:
            return path.read_bytes() == content
        return size is None or path.stat().st_size == size
    except OSError:
        return False


def changes(src: Path, node: Path) -> dict[str, tuple[Callable[[], object], Callable[[], bool]]]:
    """Each change, and a cheap probe that it has reached the node."""
    return {
        "rename a directory of 40 x 1 MB": (
            lambda: (src / "album").rename(src / "album2"),
            lambda: not (node / "album").exists()
            and all(has(node / "album2" / f"t{i}.bin", 1 << 20) for i in range(40))),
        "rename one 30 MB file": (
            lambda: (src / "big.bin").rename(src / "big2.bin"),
            lambda: not (node / "big.bin").exists() and has(node / "big2.bin", 30 << 20)),
        "change one small file": (
            lambda: (src / "small.txt").write_text("changed"),
            lambda: has(node / "small.txt", content=b"changed")),
    }


class Link:
    """The host (or hosts: indices, one key for all), and one ssh setup every tool
    uses to reach them. mbit None: links not shaped; one_way_ms 0: no delay."""

    def __init__(self, work: Path, index: int = 9, indices: list[int] | None = None,
                 mbit: int | None = MBIT, one_way_ms: int = ONE_WAY_MS) -> None:
        self.work = work
        numbers = indices or [index]
        self.hosts = [TestHost(n, work / ("host" if len(numbers) == 1 else f"host{n}"))
                      for n in numbers]
        self.host = self.hosts[0]
        self.mbit, self.one_way_ms = mbit, one_way_ms
        self.bin = work / "bin"

    def __enter__(self) -> Link:
        try:
            for host in self.hosts:
                host.client_key = self.host.sshd.client_key if self.host.sshd else None
                host.create()
                if self.mbit:
                    host.shape(self.mbit)
        except BaseException:
            self.__exit__()
            raise
        sshd = self.host.sshd
        assert sshd is not None
        proxy = f"{sys.executable} {REPO / 'tests' / 'delayproxy.py'} %h %p {self.one_way_ms}"
        config = self.work / "ssh_config"
        config.write_text(
            "Host *\n"
            f"  IdentityFile {sshd.client_key}\n  Port {sshd.port}\n"
            "  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n"
            "  BatchMode yes\n  LogLevel ERROR\n"
            + (f"  ProxyCommand {proxy}\n" if self.one_way_ms else ""))
        self.bin.mkdir()
        wrapper = self.bin / "ssh"
        wrapper.write_text(f'#!/bin/sh\nexec /usr/bin/ssh -F {config} "$@"\n')
        wrapper.chmod(0o755)
        return self

    def __exit__(self, *exc: object) -> None:
        for host in self.hosts:
            host.destroy()

    @property
    def ssh(self) -> str:
        return str(self.bin / "ssh")

    def env(self) -> dict[str, str]:
        return {**os.environ, "PATH": f"{self.bin}:{os.environ['PATH']}"}


def inosync_daemon(link: Link, src: Path, node: Path, replay: bool) -> list[str]:
    conf = write_config(link.work / "inosync.conf", wpath=str(src), rnodes=[link.host.dest(node)],
                        ssh=[link.ssh], edelay=DELAY, replay_moves=replay)
    return [*inosync_argv(), "-c", str(conf)]


def lsyncd_daemon(link: Link, src: Path, node: Path, mode: str) -> list[str]:
    assert LSYNCD is not None
    if mode == "rsync":
        sync = (f"default.rsync, target = {json.dumps(link.host.dest(node))}, "
                f"rsync = {{ archive = true, rsh = {json.dumps(link.ssh)} }}")
    else:
        sync = (f"default.rsyncssh, host = {json.dumps('root@' + link.host.address)}, "
                f"targetdir = {json.dumps(str(node))}, "
                f"ssh = {{ binary = {json.dumps(link.ssh)} }}, rsync = {{ archive = true }}")
    conf = link.work / f"lsyncd-{mode}.lua"
    conf.write_text(f"settings {{ nodaemon = true }}\n"
                    f"sync {{ {sync}, source = {json.dumps(str(src))}, delay = {DELAY} }}\n")
    return [LSYNCD, str(conf)]


def run(link: Link, src: Path, tool: str, limit: float) -> dict[str, Figure]:
    node = link.work / "node"
    shutil.rmtree(node, ignore_errors=True)
    node.mkdir()
    if tool.startswith("inosync"):
        argv = inosync_daemon(link, src, node, replay=tool == "inosync")
    else:
        argv = lsyncd_daemon(link, src, node, tool.split("-", 1)[1])
    veth = link.host.veth
    figures: dict[str, Figure] = {}
    with open(link.work / f"{tool}.log", "wb") as log:
        started, b0 = time.monotonic(), wire_bytes(veth)
        daemon = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=link.env())
        try:
            took, left = until_equal(src, node, started, lambda: has(node / "small.txt"), limit)
            figures["initial sync (78 MB)"] = Figure(took, (wire_bytes(veth) - b0) / 1e6, left)
            for name, (change, probe) in changes(src, node).items():
                time.sleep(2)
                b0, since = wire_bytes(veth), time.monotonic()
                change()
                took, left = until_equal(src, node, since, probe, limit)
                figures[name] = Figure(took, (wire_bytes(veth) - b0) / 1e6, left)
        finally:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(30)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
            reset_tree(src)
    return figures


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tools", default=",".join(TOOLS), help="comma-separated, from "
                   + ",".join(TOOLS))
    p.add_argument("--limit", type=float, default=60,
                   help="seconds each change may take before it counts as not equal")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = p.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces, tc)", file=sys.stderr)
        return 2
    tools = [t for t in args.tools.split(",") if t]
    if not LSYNCD and any(t.startswith("lsyncd") for t in tools):
        print("lsyncd is not installed (apt-get install lsyncd): its columns are left out",
              file=sys.stderr)
        tools = [t for t in tools if not t.startswith("lsyncd")]
    work = Path(tempfile.mkdtemp(prefix="inosync-slowlink-", dir=private_tmp_root()))
    rows: dict[str, dict[str, Figure]] = {}
    try:
        with Link(work) as link:
            src = work / "src"
            make_tree(src)
            for tool in tools:
                rows[tool] = run(link, src, tool, args.limit)
                print(f"{tool}: done", file=sys.stderr)
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"20 Mbit/s, {2 * ONE_WAY_MS} ms round trip, delay {DELAY} s; "
          "seconds from the change until the node equals the source, MB on the wire")
    print(f"{'':32}" + "".join(f"{t:>24}" for t in tools))
    for name in rows[tools[0]]:
        print(f"{name:32}" + "".join(f"{rows[t][name].cell():>24}" for t in tools))
    for tool in tools:
        for name, figure in rows[tool].items():
            if figure.left:
                print(f"{tool}, {name}: still different: {figure.left[:5]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
