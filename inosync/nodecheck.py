"""Before a node starts from its checkpoint: does it still hold the tree's top level?

A checkpoint says what reached a node, not that the node kept it: a host
reinstalled, a disk replaced, an old backup restored there while inosync was
stopped hold none of it, and a start from the checkpoint would send only what
changed since. The check is cheap and catches a node that lost its data: one
dry run of the top level of wpath (no recursion) per node, all at once. wpath's
own entries did not change since the checkpoint (or its start would be a full
sync anyway), so the node must hold every name there and nothing else: a name
rsync would create or delete means the node is not what the checkpoint says.
A node that cannot be asked gets a full sync, as every start did before
checkpoints. Deeper losses (one subdirectory wiped) are not seen: --full.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import time
from collections.abc import Mapping

from .rsync import Options, _common, child_environment, with_slash

DEADLINE = 30.0  # seconds for all the checks together


def top_level_argv(opts: Options, wpath: str, dest: str) -> list[str]:
    """A dry run of wpath's top level to dest that names what it would change."""
    opts = dataclasses.replace(opts, extra=(*opts.extra, "--no-recursive", "--dirs", "--dry-run",
                                            "--itemize-changes", "--out-format=%i %n"))
    return [*_common(opts, dest), with_slash(wpath), with_slash(dest)]


def verdict(returncode: int | None, stdout: str) -> str | None:
    """Why the node does not hold wpath's top level, or None: it does."""
    if returncode is None:
        return f"it did not answer within {DEADLINE:.0f} s whether it holds the tree"
    if returncode != 0:
        return f"asking whether it holds the tree failed (rsync exit {returncode})"
    for line in stdout.splitlines():
        if line.startswith("*deleting") or "+++++++" in line[:11]:
            name = line.split(" ", 1)[-1].strip()
            what = "it has" if line.startswith("*deleting") else "it lacks"
            return (f"the node does not hold the tree's top level ({what} {name!r}): its data "
                    "was lost or replaced since the checkpoint")
    return None


def check(argvs: Mapping[str, list[str]], deadline: float = DEADLINE) -> dict[str, str | None]:
    """Run every node's check at once; each node's verdict."""
    procs: dict[str, subprocess.Popen[bytes]] = {}
    found: dict[str, str | None] = {}
    for dest, argv in argvs.items():
        try:
            procs[dest] = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                           stderr=subprocess.DEVNULL, env=child_environment(),
                                           close_fds=True)
        except OSError as e:
            found[dest] = f"cannot ask whether it holds the tree ({e.strerror})"
    end = time.monotonic() + deadline
    for dest, proc in procs.items():
        try:
            out, _ = proc.communicate(timeout=max(0.0, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            found[dest] = verdict(None, "")
            continue
        found[dest] = verdict(proc.returncode, os.fsdecode(out))
    return found
