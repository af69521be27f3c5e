"""Signals, caught from the first instant and handled by the loop.

The handlers do almost nothing: they note the signal and let
``signal.set_wakeup_fd`` write a byte into a pipe the loop polls. Installed
before the configuration is even read, so a HUP or USR1 sent while a big
tree is being watched is handled once the loop runs, instead of killing the
daemon with the default action (which systemd would take for a clean exit).

TERM and INT are never lost; repeated HUPs and USR1s merge into one (a
second reload right after the first would read the same file).
"""

from __future__ import annotations

import os
import signal

STOP = (signal.SIGTERM, signal.SIGINT)
CAUGHT = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGCHLD)


class StopDuringStartup(BaseException):
    """TERM or INT arrived before the loop ran: stop at once, nothing to wind down.

    A BaseException, like KeyboardInterrupt, so that no handler for ordinary
    errors (the one around the configuration file's code, say) swallows it.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Signals:
    def __init__(self) -> None:
        self.queue: list[int] = []
        # Until the loop runs there are no children and nothing to flush: a
        # stop request interrupts start-up right away (a big tree can take
        # minutes to watch).
        self.starting = True
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        for signum in CAUGHT:
            signal.signal(signum, self._caught)

    def _caught(self, signum: int, frame: object) -> None:
        if signum == signal.SIGCHLD:
            return  # the wake-up byte is all the loop needs: it reaps every child
        if signum in STOP:
            if self.starting:
                raise StopDuringStartup(signum)
            # Two are worth keeping: the second one means "do not wait".
            if sum(s in STOP for s in self.queue) < 2:
                self.queue.append(signum)
        elif signum not in self.queue:
            self.queue.append(signum)

    def fds(self) -> list[int]:
        """File descriptors to keep open across the fork into the background."""
        return [self.wake_r, self.wake_w]

    def drain(self) -> None:
        """Empty the wake-up pipe (the bytes only served to end poll())."""
        try:
            while os.read(self.wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def take(self) -> list[int]:
        """The signals caught since the last call, oldest first."""
        taken, self.queue = self.queue, []
        return taken

    def close(self) -> None:
        signal.set_wakeup_fd(-1)
        for signum in CAUGHT:
            signal.signal(signum, signal.SIG_DFL)
        os.close(self.wake_r)
        os.close(self.wake_w)
