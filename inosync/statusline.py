"""The daemon's state in one line, for systemd's STATUS= (`systemctl status`).

Made from the rows of Scheduler.status(), so the scheduler stays pure and
the line says what the statusfile says, only shorter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .batch import plural

ERROR_MAX = 100


def summary(rows: Sequence[Mapping[str, object]], stopping: bool = False) -> str:
    """E.g. "initial sync to 3 nodes", "idle; 3 nodes in sync", "syncing 2 paths
    to 1 node", "1 node failing: www1:/var/www/: exit 255 (...)"."""
    running = [r for r in rows if r["state"] == "running"]
    if stopping:
        return f"stopping; {plural(len(running), 'rsync')} still running" if running \
            else "stopping"
    failing = [r for r in rows if r["failures"]]
    if failing:
        first = failing[0]
        error = str(first["last_error"] or "failed")
        if len(error) > ERROR_MAX:
            error = error[:ERROR_MAX - 3] + "..."
        return f"{plural(len(failing), 'node')} failing: {first['node']}: {error}"
    busy = [r for r in rows
            if r["state"] == "running" or r["pending_paths"] or r["pending_full"]]
    if not busy:
        return f"idle; {plural(len(rows), 'node')} in sync"
    initial = [r for r in busy if r["last_ok"] is None]
    if initial:
        return f"initial sync to {plural(len(initial), 'node')}{_queued(rows)}"
    if all(r["state"] != "running" and r["pending_paths"] == r.get("waiting_paths")
           and not r["pending_full"] for r in busy):
        return f"{busy[0]['pending']} ({plural(len(busy), 'node')})"  # during edelay
    if all(r["pending_full"] for r in busy):
        return f"full sync to {plural(len(busy), 'node')}{_queued(rows)}"
    what = {str(r["pending"]) for r in busy}
    changes = what.pop() if len(what) == 1 else "changes"
    return f"syncing {changes} to {plural(len(busy), 'node')}{_queued(rows)}"


def _queued(rows: Sequence[Mapping[str, object]]) -> str:
    """How many nodes wait for a run slot (max_parallel), if any."""
    queued = sum(1 for r in rows if r["state"] == "queued")
    return f" ({queued} waiting for a run slot)" if queued else ""
