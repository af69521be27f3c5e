"""Files that may be rsync's temporary files, held back from the nodes for a while.

On a relay, the upstream's rsync writes each file as ``.NAME.XXXXXX`` and then
renames it to NAME (tempnames.py). Sent downstream, such a file is work for
nothing at best (a partial copy, deleted again at the next batch). So a file
of that shape is *held*: no run lists it, and every run leaves it out by an
exact, anchored exclude (so a listed directory above it does not carry it
either; an exclude also keeps a node's copy from deletion, which is why a
held file that vanishes is deleted downstream whenever a node may have it).

It is let go, as any changed path, once it has been quiet for ``quiet``
seconds or seen for ``cap`` seconds since it first showed up: a user's file
that merely looks like a temporary one (``.notes.draft1``) is sent too,
later; one written without pause is not held for ever. From then on it is
an ordinary path until it vanishes.

When a held file vanishes (renamed to its final name, or removed by an
aborted transfer), nothing is sent for it if no node can have it: it was
first seen while no run was in flight, nor had one run since the read
before (a run that began before it existed may have read it), no change at it
or at a directory above it was still owed to a node (a directory of that
name deleted in the same batch: the exclude keeps the node's old entry too),
and every run since left it out. Otherwise its name goes to the nodes as deleted. Files a
walk finds (the start's, a rewatch's, a directory moved in) and those of a
restart's or a rescan's scan count as possibly sent. A file one of the
user's rules decides is never held: their rules come first on rsync's
command line and win, so no exclude of ours would keep it out (the
scheduler's _holdable). So the nodes end as plain rsync would leave them,
only without the detours.

Pure: times are passed in (monotonic ``now``; ``since``, a wall-clock bound
for checkpoints, as PathSet.since).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .rsync import protect_rule
from .tempnames import MAXPATHLEN

QUIET = 60.0  # seconds without an event before a held file is let go
CAP = 900.0  # seconds since first seen before it is let go anyway
RULES_MAX = 100  # excludes per run (each one an argument); past this, all held are exposed


@dataclass
class Held:
    first: float  # monotonic: first seen
    last: float  # monotonic: last event
    since: float  # wall clock: no later than its first change (for checkpoints)
    exposed: bool  # a run may have copied it to a node


class TempHold:
    def __init__(self, quiet: float = QUIET, cap: float = CAP, limit: int = 100_000) -> None:
        self.quiet = quiet
        self.cap = cap
        self.limit = limit
        self.held: dict[str, Held] = {}
        # Let go: ordinary paths until they vanish, the newest limit of them (one
        # whose directory left the tree never says it vanished; one forgotten
        # is held again at its next event: later, never lost, see forgot).
        # Oldest first.
        self.released: dict[str, None] = {}
        # Whether one was forgotten: one of them held again may be on the nodes
        # (it went out when let go), so from then on every file held counts as
        # possibly sent: its vanishing goes out as a deletion (a wasted one at
        # worst), never lost.
        self.forgot = False
        # Held files that vanished less than quiet ago -> (first, when gone): one
        # made again at that path keeps its first, so that a file removed and
        # written again all along still goes out at the cap.
        self.gone: dict[str, tuple[float, float]] = {}

    def __len__(self) -> int:
        return len(self.held)

    def seen(self, path: str, gone: bool, now: float, since: float, exposed: bool) -> bool:
        """An event for a file of temporary shape: True if the path must go to the
        nodes now (as any changed path), False if it is held or needs nothing."""
        if path in self.released:
            if gone:
                del self.released[path]
            return True
        held = self.held.get(path)
        if gone:
            if held is None:
                return True  # never seen made: a node may have it (a full sync, say)
            del self.held[path]
            if len(self.gone) < self.limit:
                self.gone[path] = (held.first, now)
            return held.exposed
        if held is None:
            if len(self.held) >= self.limit:
                return True  # bounded memory: sent as any path
            first, gone_at = self.gone.pop(path, (now, now))
            self.held[path] = Held(first if now < gone_at + self.quiet else now, now, since,
                                   exposed or self.forgot)
        else:
            held.last = now
            held.exposed |= exposed  # (a walk finding it again after lost events)
        return False

    def expose_all(self) -> None:
        """A node's content is not known (a node added, a reload's full sync): the
        exclude of each held file keeps whatever it holds at that path, so each
        one's vanishing is sent as a deletion."""
        for held in self.held.values():
            held.exposed = True

    def forget(self, path: str) -> None:
        """An ordinary change at a held path (a directory made there): it is no
        longer held, and goes out with the rest of the batch."""
        self.held.pop(path, None)

    def due(self, now: float) -> list[tuple[str, float]]:
        """The held files to let go now, each with its since."""
        out = [(p, h.since) for p, h in self.held.items()
               if now >= h.last + self.quiet or now >= h.first + self.cap]
        for path, _ in out:
            del self.held[path]
            self.released.pop(path, None)  # (to the end: the newest)
            self.released[path] = None
            if len(self.released) > self.limit:
                del self.released[next(iter(self.released))]
                self.forgot = True
        while self.gone:  # oldest first (in the order they vanished)
            path, (_, gone_at) = next(iter(self.gone.items()))
            if now < gone_at + self.quiet:
                break
            del self.gone[path]
        return sorted(out)

    def next_due(self) -> float | None:
        """When due() has something to let go next, or None."""
        if not self.held:
            return None
        return min(min(h.last + self.quiet, h.first + self.cap) for h in self.held.values())

    def since(self) -> float | None:
        """The oldest since of what is held: no checkpoint may pass it (the nodes
        do not have those files yet, if they are real ones)."""
        return min((h.since for h in self.held.values()), default=None)

    def rules(self) -> tuple[str, ...]:
        """The paths every run started now must leave out. Past RULES_MAX only the
        newest are, and a path too long for a rule is not: what may be copied
        counts as exposed."""
        fits = [p for p in self.held if len(os.fsencode(protect_rule(p))) < MAXPATHLEN]
        if len(fits) < len(self.held):
            for path in set(self.held).difference(fits):
                self.held[path].exposed = True
        if len(fits) <= RULES_MAX:
            return tuple(sorted(fits))
        for held in self.held.values():
            held.exposed = True
        newest = sorted(fits, key=lambda p: self.held[p].first)[-RULES_MAX:]
        return tuple(sorted(newest))
