"""Real test hosts: network namespaces joined to us by veth pairs, each with its own sshd.

Each host lives on its own /30 of a private range, or, plugged into a Lan,
on that Lan's /24 with its other hosts; the addresses exist only inside
this machine (the namespaces and the bridge we made); traffic never leaves it.
The namespace shares our filesystem, so a node directory on a host is a
plain local directory for the test to compare against.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from helpers import Sshd

SUBNET = "10.231"  # 10.231.<n>.0/30: .1 is our end, .2 the host's
# Each pytest-xdist worker (gw0, gw1, ...) numbers its hosts from its own block
# of /30s: two veths with one subnet would steal each other's route.
BLOCK = 32


def subnet_index(index: int) -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    return index + BLOCK * int(worker or 0)


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def can_make_namespaces() -> str | None:
    """None if we can, else the reason we cannot."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"inosync-probe-{os.getpid()}"
    done = ip("netns", "add", probe, check=False)
    if done.returncode:
        return f"cannot create a network namespace: {done.stderr.strip()}"
    ip("netns", "del", probe, check=False)
    return None


class Lan:
    """A switch for several hosts (a relay and its edges): a bridge in our
    namespace holding {SUBNET}.<index>.1/24, each host's veth one of its ports.
    The hosts reach each other directly, with no routing (no ip_forward), and
    each host's veth still counts and shapes that host's own traffic."""

    def __init__(self, index: int) -> None:
        self.bridge = f"ib{os.getpid() % 10000}{index}"
        self.prefix = f"{SUBNET}.{index}"

    def create(self) -> Lan:
        ip("link", "add", "name", self.bridge, "type", "bridge")
        ip("addr", "add", f"{self.prefix}.1/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")
        return self

    def destroy(self) -> None:
        ip("link", "del", self.bridge, check=False)


class TestHost:
    __test__ = False  # not a pytest class

    def __init__(self, index: int, workdir: Path, client_key: Path | None = None,
                 lan: Lan | None = None) -> None:
        tag = f"{os.getpid() % 10000}{index}"
        self.netns = f"inosync-t{tag}"
        self.veth = f"vi{tag}"  # our end; interface names are at most 15 bytes
        self.peer = f"vp{tag}"
        self.sink = f"vs{tag}"  # where drop_connection() sends packets to vanish
        self.lan = lan
        net, host, self.prefixlen = (f"{SUBNET}.{subnet_index(index)}", 2, 30) if lan is None \
            else (lan.prefix, index + 1, 24)  # on a Lan, index 1..253: .1 is the bridge's
        self.address, self.local = f"{net}.{host}", f"{net}.1"
        self.workdir = workdir
        self.client_key = client_key  # one key for all hosts: one ssh command
        self.sshd: Sshd | None = None

    def create(self) -> TestHost:
        ip("netns", "add", self.netns)
        ip("link", "add", self.veth, "type", "veth", "peer", "name", self.peer)
        ip("link", "set", self.peer, "netns", self.netns)
        if self.lan is None:
            ip("addr", "add", f"{self.local}/30", "dev", self.veth)
        else:
            ip("link", "set", self.veth, "master", self.lan.bridge)
        ip("link", "set", self.veth, "up")
        inside = ["netns", "exec", self.netns, "ip"]
        ip(*inside, "addr", "add", f"{self.address}/{self.prefixlen}", "dev", self.peer)
        ip(*inside, "link", "set", self.peer, "up")
        ip(*inside, "link", "set", "lo", "up")
        self.sshd = Sshd(self.workdir / "sshd", self.address, netns=self.netns,
                         client_key=self.client_key).start()
        return self

    def dest(self, directory: Path) -> str:
        return f"root@{self.address}:{directory}"

    def shape(self, mbit: int) -> None:
        """Limit the link to mbit Mbit/s each way (tc tbf; netem, for delay, is not
        in this kernel: delayproxy.py adds latency on the ssh path instead)."""
        for prefix in ([], ["netns", "exec", self.netns]):
            dev = self.peer if prefix else self.veth
            subprocess.run([*(["ip", *prefix] if prefix else []), "tc", "qdisc", "replace",
                            "dev", dev, "root", "tbf", "rate", f"{mbit}mbit", "burst", "32kbit",
                            "latency", "400ms"], check=True, capture_output=True)

    def slow_ssh(self, ssh: list[str], delay_ms: int) -> list[str]:
        """ssh through delayproxy.py: delay_ms each way, so twice that of round trip."""
        proxy = f"{sys.executable} {Path(__file__).parent / 'delayproxy.py'} %h %p {delay_ms}"
        return [*ssh, "-o", f"ProxyCommand={proxy}"]

    def link(self, up: bool) -> None:
        ip("link", "set", self.veth, "up" if up else "down")

    def drop_connection(self, local_port: int) -> None:
        """Drop every packet of our TCP connection from local_port to this host, both
        ways, and tell neither end: a firewall or NAT on the path that lost its
        state. New connections pass.

        Each packet is dropped where it arrives (ingress), so neither sending
        kernel sees a local drop, which TCP would count and give up on. This
        kernel has no tc action that drops (no gact): the packets are
        redirected (mirred) to a veth left down, where they vanish.
        """
        ours, theirs = (([], self.veth, "dport"), (["-n", self.netns], self.peer, "sport"))
        for side, dev, field in (ours, theirs):
            if ip(*side, "link", "show", self.sink, check=False).returncode:
                ip(*side, "link", "add", self.sink, "type", "veth", "peer", "name",
                   f"{self.sink}p")
                subprocess.run(["tc", *side, "qdisc", "add", "dev", dev, "clsact"], check=True,
                               capture_output=True)
            subprocess.run(["tc", *side, "filter", "add", "dev", dev, "ingress", "protocol", "ip",
                            "u32", "match", "ip", "protocol", "6", "0xff",
                            "match", "ip", field, str(local_port), "0xffff",
                            "action", "mirred", "egress", "redirect", "dev", self.sink],
                           check=True, capture_output=True)

    def pass_all(self) -> None:
        """Undo drop_connection(): every packet passes again."""
        for side, dev in (([], self.veth), (["-n", self.netns], self.peer)):
            subprocess.run(["tc", *side, "qdisc", "del", "dev", dev, "clsact"],
                           capture_output=True)
            ip(*side, "link", "del", self.sink, check=False)

    def destroy(self) -> None:
        if self.sshd is not None:
            self.sshd.stop()
        # Sessions sshd forked outlive it (a shared connection, say): stop them
        # too, or they wait forever on a link that is about to vanish.
        pids = ip("netns", "pids", self.netns, check=False).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        ip("link", "del", self.veth, check=False)  # removes the peer too
        ip("link", "del", self.sink, check=False)
        ip("netns", "del", self.netns, check=False)
