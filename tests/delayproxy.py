"""An ssh ProxyCommand that adds latency: each byte is passed on DELAY ms late.

This kernel has tc's tbf (rate) but not netem (delay), so a slow link is a
rate-limited veth (hosts.TestHost.shape) plus this relay on the ssh path:
``-o ProxyCommand="python3 delayproxy.py HOST PORT 25"`` gives 50 ms of
round trip. Data is pipelined (a timestamped queue per direction), so the
rate limit, not the relay, bounds the throughput.

    python3 delayproxy.py HOST PORT DELAY_MS
"""

from __future__ import annotations

import os
import queue
import socket
import sys
import threading
import time
from collections.abc import Callable


def pump(read: Callable[[], bytes], write: Callable[[bytes], None], delay: float) -> None:
    pending: queue.Queue[tuple[float, bytes]] = queue.Queue()

    def reader() -> None:
        while True:
            data = read()
            pending.put((time.monotonic() + delay, data))
            if not data:
                return

    threading.Thread(target=reader, daemon=True).start()
    while True:
        due, data = pending.get()
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        if not data:
            return
        write(data)


def main() -> int:
    host, port, delay_ms = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    delay = delay_ms / 1000
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def to_stdout(data: bytes) -> None:
        os.write(1, data)

    def from_stdin() -> bytes:
        return os.read(0, 65536)

    def to_socket(data: bytes) -> None:
        sock.sendall(data)

    def close_write() -> None:
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    upstream = threading.Thread(target=lambda: (pump(from_stdin, to_socket, delay),
                                                close_write()), daemon=True)
    upstream.start()
    pump(lambda: sock.recv(65536), to_stdout, delay)
    return 0


if __name__ == "__main__":
    sys.exit(main())
