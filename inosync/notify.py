"""Tell systemd how the daemon is doing, as sd_notify(3) does (Type=notify).

One datagram per message to the AF_UNIX socket named by $NOTIFY_SOCKET (a
leading '@' means the abstract namespace); nothing at all when it is unset.
$NOTIFY_SOCKET is taken out of the environment at once, as
sd_notify(unset_environment=1) does, so rsync and ssh never see it. The
socket is only created at the first message: behind -d that is in the
daemon process, the pid that stays.

Notification is a courtesy: a failed send never reaches the daemon. It is
logged once, at debug, and the next messages are still tried.
"""

from __future__ import annotations

import logging
import os
import socket
import time

from .escape import printable

log = logging.getLogger("inosync")

SEND_TIMEOUT = 2.0  # seconds; systemd reads its socket at once, a full queue must not hang us
STATUS_MAX = 200  # characters of STATUS=: one line for `systemctl status`


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, as RELOADING=1 wants it in MONOTONIC_USEC."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def socket_address(value: str | None) -> str | None:
    """$NOTIFY_SOCKET as an address for sendto(), or None if it names no AF_UNIX socket."""
    if not value:
        return None
    if value.startswith("@"):
        return "\0" + value[1:]  # the abstract namespace
    if value.startswith("/"):
        return value
    return None  # vsock:... and the like: not spoken here


def one_line(text: str) -> str:
    """STATUS= is a single field: no newline may split the message, nothing a
    stranger named may drive the terminal of `systemctl status`."""
    flat = printable(" ".join(text.split()))
    return flat if len(flat) <= STATUS_MAX else flat[:STATUS_MAX - 3] + "..."


class Notifier:
    def __init__(self, notify_socket: str | None) -> None:
        self.given = notify_socket
        self.address = socket_address(notify_socket)
        self._sock: socket.socket | None = None
        self._complained = False
        self._status: str | None = None
        self._stopping = False
        if notify_socket and self.address is None:
            self._failed(f"NOTIFY_SOCKET={notify_socket!r} is not an AF_UNIX socket address")

    @classmethod
    def from_environ(cls) -> Notifier:
        """The notifier for $NOTIFY_SOCKET, which is removed from the environment."""
        return cls(os.environ.pop("NOTIFY_SOCKET", None))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """Send "KEY=value" fields as one message; True if it went out."""
        if self.address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.settimeout(SEND_TIMEOUT)
            self._sock.sendto("\n".join(fields).encode(errors="replace"), self.address)
            return True
        except (OSError, ValueError) as e:
            self._failed(f"cannot notify {self.given}: {e}")
            return False

    def ready(self) -> None:
        self.send("READY=1")

    def reloading(self) -> None:
        self.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec()}")

    def stopping(self) -> None:
        """STOPPING=1, once."""
        if not self._stopping:
            self._stopping = True
            self.send("STOPPING=1")

    def status(self, text: str) -> None:
        """STATUS=text, unless it is what systemd shows already."""
        text = one_line(text)
        if text != self._status and self.send(f"STATUS={text}"):
            self._status = text

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _failed(self, why: str) -> None:
        if not self._complained:
            self._complained = True
            log.debug("%s (systemd notification is best effort; not said again)", why)
